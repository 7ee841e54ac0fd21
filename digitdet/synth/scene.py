"""The flat scene before the camera: glyphs laid out on a line, a plate, a wall, distractors.

Scene coordinates are pixels of an upright, unrotated drawing of the number (see
``synth_geometry`` for the pixel convention). ``layout_number`` places glyph masks;
``draw_scene`` paints a window of the scene into an RGB image. The camera (rotation,
perspective, crop, blur, ...) is applied afterwards by ``synthetic.render_sample``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from digitdet.synth.background import render_surface, smooth_noise
from digitdet.synth.fonts import digit_height, font, glyph_mask, size_for_height
from digitdet.synth.style import PALETTE, Style

# Glyphs are drawn about this many times larger than in the output, then shrunk (anti-aliasing).
SUPERSAMPLE = 1.0
MIN_SCENE_HEIGHT = 24
# Neighbouring glyphs keep their ink at least this many digit heights apart (in the output's
# aspect) on every row they share. The gaps are drawn from real SVHN's box gaps, and real boxes
# are loose (by about 0.06 of the height a side on the real sample), so tight boxes drawn at
# those gaps put ink closer than real numbers do: before this floor a ninth of neighbouring
# digits overlapped in some row, and two bare 1s could merge into one stroke labelled "11".
MIN_INK_GAP = 0.04


@dataclass
class Glyph:
    """One drawn character. ``mask`` (uint8, 255 = ink) is what the box is computed from
    (fill plus outline when there is one), ``fill`` what gets the ink colour; (x, y) is the
    mask's top-left corner in scene pixels. ``digit`` is None for unlabelled distractors
    (letters, fragments of neighbouring numbers)."""
    mask: np.ndarray
    fill: np.ndarray
    x: float
    y: float
    digit: int | None
    role: str = "digit"          # "digit", "fragment-left", "fragment-right", "letter"
    _local: np.ndarray | None = field(default=None, repr=False, compare=False)  # cached ink_points
    _rims: np.ndarray | None = field(default=None, repr=False, compare=False)  # cached rim_points
    _rows: tuple | None = field(default=None, repr=False, compare=False)  # cached row_extents

    def ink_points(self) -> np.ndarray:
        """(N, 2) scene coordinates of the centres of pixels at least half covered by ink."""
        if self._local is None:  # mask-relative centres, computed once
            ys, xs = np.nonzero(self.mask >= 128)
            self._local = np.stack([xs + 0.5, ys + 0.5], axis=1).astype(np.float64)
        return self._local + (self.x, self.y)

    def row_extents(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows, left, right): the mask rows with ink (at least half covered) and the first and
        last ink column in each (computed once: layout checks each glyph against both neighbours)."""
        if self._rows is None:
            ink = self.mask >= 128
            rows = np.flatnonzero(ink.any(axis=1))
            self._rows = rows, ink[rows].argmax(axis=1), ink.shape[1] - 1 - ink[rows, ::-1].argmax(axis=1)
        return self._rows

    def rim_points(self) -> np.ndarray:
        """The leftmost and rightmost of ``ink_points`` in each row: a few dozen points instead
        of thousands with the same convex hull (a hull corner is extreme in its row), so through
        any homography that keeps the glyph in front of the camera they give the same bounds."""
        if self._rims is None:
            rows, left, right = self.row_extents()
            xs, ys = np.concatenate([left, right]) + 0.5, np.concatenate([rows, rows]) + 0.5
            self._rims = np.stack([xs, ys], axis=1).astype(np.float64)
        return self._rims + (self.x, self.y)


def ink_clearance(left: Glyph, right: Glyph) -> float:
    """Smallest horizontal distance in px from ``left``'s ink to ``right``'s over the scene rows
    both have ink in (negative where they overlap; inf when they share no row)."""
    rows_l, _, last_l = left.row_extents()
    rows_r, first_r, _ = right.row_extents()
    _, il, ir = np.intersect1d(rows_l + int(left.y), rows_r + int(right.y), return_indices=True)
    if not len(il):
        return float("inf")
    return float(np.min((right.x + first_r[ir]) - (left.x + last_l[il] + 1)))


def _stencil(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Cut one or two thin horizontal bridges through a glyph, like a stencil."""
    out = mask.copy()
    h = out.shape[0]
    band = max(1, int(round(h * 0.07)))
    for centre in rng.uniform(0.3, 0.7, int(rng.integers(1, 3))):
        top = int(centre * h)
        out[top:top + band] = 0
    return out


def _outline(mask: np.ndarray, width: int) -> np.ndarray:
    """Mask grown by ``width`` px on every side (a painted outline around the glyph)."""
    padded = np.pad(mask, width)
    size = 2 * width + 1
    return np.asarray(Image.fromarray(padded).filter(ImageFilter.MaxFilter(size)))


def _embolden(mask: np.ndarray, weight: int) -> tuple[np.ndarray, int]:
    """Bolder strokes by ``weight`` px (a max filter); returns (mask, shift of its top-left
    corner) so the glyph stays centred. Thinning is not offered: eroding anti-aliased hairlines
    leaves fragments that vanish once shrunk, so thin looks come from light fonts instead."""
    if weight > 0:
        return _outline(mask, weight), -weight
    return mask, 0


def _wobble(mask: np.ndarray, rng: np.random.Generator, amount: float) -> tuple[np.ndarray, int, int]:
    """Hand-made look: bend the glyph by a smooth random displacement (``amount`` x height px)
    and tilt it a little. Returns (new tight mask, top shift, left shift); the box is later
    computed from this new mask, so it stays tight."""
    h, w = mask.shape
    pad = int(np.ceil(amount * h)) + 2
    m = np.pad(mask, pad)
    hh, ww = m.shape
    dx = (smooth_noise(rng, ww, hh, h / 2) - 0.5) * 2 * amount * h
    dy = (smooth_noise(rng, ww, hh, h / 2) - 0.5) * 2 * amount * h
    a = np.radians(rng.normal(0, 60 * amount))
    cx, cy = ww / 2, hh / 2
    xx = np.arange(ww, dtype=np.float32)[None, :] - cx
    yy = np.arange(hh, dtype=np.float32)[:, None] - cy
    xs = (cx + xx * np.cos(a) - yy * np.sin(a) + dx).astype(np.float32)
    ys = (cy + xx * np.sin(a) + yy * np.cos(a) + dy).astype(np.float32)
    # bilinear lookup at (xs, ys), pixel centres on integers (like scipy's map_coordinates)
    out = cv2.remap(m, xs, ys, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    rows, cols = np.flatnonzero(out.max(axis=1) >= 128), np.flatnonzero(out.max(axis=0) >= 128)
    if rows.size == 0:
        return mask, 0, 0
    return (out[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].copy(), int(rows[0]) - pad, int(cols[0]) - pad)


def plain_bar(mask: np.ndarray) -> np.ndarray:
    """A plain 1: a bar as tall as ``mask`` (a face's 1) and as wide as its stem, the median of
    the longest ink run in each row of its middle third (flag and foot left out)."""
    h = mask.shape[0]
    runs = []
    for row in mask[h // 3:max(h // 3 + 1, 2 * h // 3)] >= 128:
        edges = np.flatnonzero(np.diff(np.concatenate([[0], row.astype(np.int8), [0]])))
        runs.append(int(np.max(edges[1::2] - edges[::2])) if len(edges) else 0)
    return np.full((h, max(1, int(np.median(runs)))), 255, np.uint8)


def _glyph(style: Style, size: int, char: str, rng: np.random.Generator):
    """(box mask, fill mask, top offset, left shift) of one character in the sample's ink style."""
    mask, top = glyph_mask(style.font.path, size, char)
    if char == "1" and style.plain_one:
        mask = plain_bar(mask)
    shift = 0
    if style.wobble:
        mask, dtop, shift = _wobble(mask, rng, style.wobble)
        top += dtop
    mask, grow = _embolden(mask, int(round(style.weight * mask.shape[0] / 40)))
    top, shift = top + grow, shift + grow
    fill = _stencil(mask, rng) if style.ink == "stencil" else mask
    if style.ink == "outline":
        width = max(1, int(round(mask.shape[0] * 0.06)))
        return _outline(fill, width), np.pad(fill, width), top - width, shift - width
    return fill, fill, top, shift


def layout_number(rng: np.random.Generator, style: Style) -> tuple[list[Glyph], float]:
    """Glyphs of ``style.digits`` (plus distractor glyphs) on a line; returns (glyphs, H).

    H is the font's figure height in scene pixels. Steps: 1. pick a font size about
    SUPERSAMPLE times the output digit height; 2. advance a cursor by each tight glyph width
    plus the sampled gap (divided by x_scale, which the camera applies later); 3. offset each
    glyph vertically by the stepped part of the slant and by hand-mounting jitter.
    """
    target = max(MIN_SCENE_HEIGHT, style.height_px * SUPERSAMPLE)
    size = size_for_height(style.font.path, target)
    H = float(digit_height(style.font.path, size))
    chars = [(str(d), d, "digit") for d in style.digits]
    if style.distractors["fragment"] == "left":
        chars.insert(0, (str(int(rng.integers(10))), None, "fragment-left"))
    elif style.distractors["fragment"] == "right":
        chars.append((str(int(rng.integers(10))), None, "fragment-right"))
    if style.distractors["letter"]:
        # the suffix belongs to the number ("25D"), so it goes before a neighbour's fragment:
        # after it, the crop that shows the letter showed the whole fragment, an unlabelled digit
        at = len(chars) - 1 if chars[-1][2] == "fragment-right" else len(chars)
        chars.insert(at, (style.distractors["letter"], None, "letter"))
    step = np.tan(np.radians(style.slant_deg - style.rotation_deg))
    digit_gaps, jitter = iter(style.gaps), iter(style.jitter)
    glyphs, cursor = [], 0.0
    for i, (char, digit, role) in enumerate(chars):
        mask, fill, top, shift = _glyph(style, size, char, rng)
        y = top + (next(jitter) * H if role == "digit" else 0.0)
        glyphs.append(Glyph(mask, fill, round(cursor) + shift, y, digit, role))
        between_digits = role == "digit" and i + 1 < len(chars) and chars[i + 1][2] == "digit"
        gap = next(digit_gaps) if between_digits else float(np.clip(rng.normal(0.08, 0.05), 0.0, 0.3))
        cursor += mask.shape[1] + gap * H / style.x_scale
    x0 = glyphs[0].x + glyphs[0].mask.shape[1] / 2
    for g in glyphs:  # stepping: upright glyphs climb or descend along the slanted line
        g.y = round(g.y + step * (g.x + g.mask.shape[1] / 2 - x0) * style.x_scale)
    _keep_ink_apart(glyphs, MIN_INK_GAP * H / style.x_scale, step * style.x_scale)
    return glyphs, H


def _keep_ink_apart(glyphs: list[Glyph], floor: float, climb: float) -> None:
    """In place: move glyphs right (and ``climb`` px up or down per px, along the slanted line)
    until each one's ink is at least ``floor`` px from its left neighbour's on every shared row.
    A move shifts the rows the two share, so each pair is checked again, a few times at most."""
    for i in range(1, len(glyphs)):
        for _ in range(3):
            deficit = int(np.ceil(floor - ink_clearance(glyphs[i - 1], glyphs[i])))
            if deficit <= 0:
                break
            for g in glyphs[i:]:
                g.x += deficit
                g.y = round(g.y + climb * deficit)


ROLES = ("digit", "fragment-left", "fragment-right", "letter")


def ink_box(glyphs: list[Glyph], roles=("digit", "letter")) -> np.ndarray:
    """[x1, y1, x2, y2] scene box around the masks of the glyphs with the given roles."""
    boxes = np.array([[g.x, g.y, g.x + g.mask.shape[1], g.y + g.mask.shape[0]] for g in glyphs if g.role in roles])
    return np.concatenate([boxes[:, :2].min(axis=0), boxes[:, 2:].max(axis=0)])


def _paste(img: Image.Image, colour, alpha: Image.Image, opacity: float = 1.0, at=(0, 0)) -> None:
    """In place: paint ``colour`` (RGB) over ``img`` through the L mask ``alpha`` (x opacity),
    whose top-left corner is at pixel ``at`` of ``img``."""
    if opacity < 1.0:
        alpha = alpha.point((np.arange(256) * opacity).astype(int).tolist())
    x, y = at
    img.paste(tuple(int(c) for c in np.clip(colour, 0, 255)), (x, y, x + alpha.width, y + alpha.height), mask=alpha)


def _window(box, pad: float, size) -> tuple[int, int, int, int]:
    """Integer [x0, y0, x1, y1] around ``box`` grown by ``pad`` px, clipped to ``size`` (w, h).
    Layers are built over such a window, not the whole picture: the margins around the number
    are often most of the picture, and pixels cost time."""
    w, h = size
    x0, y0 = max(0, int(np.floor(box[0] - pad))), max(0, int(np.floor(box[1] - pad)))
    return x0, y0, max(x0 + 1, min(w, int(np.ceil(box[2] + pad)))), max(y0 + 1, min(h, int(np.ceil(box[3] + pad))))


def _plate_shape(style: Style, rect, H: float, size, width: int = 0) -> Image.Image:
    """L mask of the plate's outline ``rect`` (filled, or a ``width`` px line when given)."""
    mask = Image.new("L", size, 0)
    draw = ImageDraw.Draw(mask)
    radius = {"rounded": 0.3 * H, "tile": 0.05 * H}.get(style.plate, 0)
    paint = {"outline": 255, "width": width} if width else {"fill": 255}
    if style.plate == "oval":
        draw.ellipse(rect, **paint)
    else:
        draw.rounded_rectangle(rect, radius=radius, **paint)
    return mask


def _plate(rng, style: Style, img: Image.Image, box: np.ndarray, H: float, unit_scale: float) -> None:
    """Paint a plate (with shadow, border, screws) around scene box ``box`` (region coords)."""
    px, py = rng.uniform(0.25, 0.9) * H, rng.uniform(0.2, 0.6) * H
    rect = [box[0] - px, box[1] - py, box[2] + px, box[3] + py]
    # 1. every layer is drawn over a window around the plate (room for the shadow), in its coords
    x0, y0, x1, y1 = _window(rect, 0.25 * H + 2, img.size)
    local = [rect[0] - x0, rect[1] - y0, rect[2] - x0, rect[3] - y0]
    mask = _plate_shape(style, local, H, (x1 - x0, y1 - y0))
    if rng.random() < 0.5:  # 2. plate mounted proud of the wall casts a soft shadow
        off = H * rng.uniform(0.03, 0.12)
        shadow = mask.transform(mask.size, Image.AFFINE, (1, 0, -off, 0, 1, -off)).filter(ImageFilter.BoxBlur(off))
        _paste(img, (0, 0, 0), shadow, 0.5, at=(x0, y0))
    # 3. the plate's own surface
    surface = surface_image(rng, "metal" if style.plate == "tile" else "paint", x1 - x0, y1 - y0, style.bg, H, unit_scale)
    img.paste(surface, (x0, y0), mask=mask)
    if style.border:  # 4. a painted line inside the edge
        inset = rng.uniform(0.05, 0.2) * H
        bw = max(1, int(rng.uniform(0.03, 0.1) * H))
        inner = [local[0] + inset, local[1] + inset, local[2] - inset, local[3] - inset]
        _paste(img, style.fg, _plate_shape(style, inner, H, mask.size, width=bw), at=(x0, y0))
    if style.screws:
        r = max(1.5, 0.06 * H)
        draw = ImageDraw.Draw(img)
        for sx, sy in ((rect[0] + 2.5 * r, rect[1] + 2.5 * r), (rect[2] - 2.5 * r, rect[3] - 2.5 * r),
                       (rect[2] - 2.5 * r, rect[1] + 2.5 * r), (rect[0] + 2.5 * r, rect[3] - 2.5 * r)):
            draw.ellipse([sx - r, sy - r, sx + r, sy + r], fill=(150, 150, 140), outline=(70, 70, 70))


def _lines(rng, style: Style, img: Image.Image, box: np.ndarray, H: float) -> None:
    """Frames, pipes, gutters: straight bars that stay clear of the number."""
    w, h = img.size
    draw = ImageDraw.Draw(img)
    # house colours (white trim, dark frames, brick...), not arbitrary RGB: magenta pipes look fake
    colour = tuple(int(c) for c in (PALETTE[rng.integers(len(PALETTE))] if rng.random() < 0.6 else style.fg))
    for _ in range(style.distractors["lines"]):
        width = max(1, int(rng.uniform(0.05, 0.5) * H))
        if rng.random() < 0.5:  # vertical, left or right of the number
            x = box[0] - rng.uniform(0.4, 3) * H if rng.random() < 0.5 else box[2] + rng.uniform(0.4, 3) * H
            draw.line([(x, 0), (x, h)], fill=colour, width=width)
        else:
            y = box[1] - rng.uniform(0.4, 2) * H if rng.random() < 0.5 else box[3] + rng.uniform(0.4, 2) * H
            draw.line([(0, y), (w, y)], fill=colour, width=width)


def _small_text(rng, style: Style, img: Image.Image, box: np.ndarray, H: float) -> None:
    """A line of small letters (street name, 'No.'), above or below: text that is not a digit."""
    size = max(8, int(H * rng.uniform(0.35, 0.6)))
    text = "".join(rng.choice(list("ABCDEFGHIKLMNOPRSTUVWabcdeghilmnorstuvw "), int(rng.integers(3, 10))))
    y = box[1] - 1.6 * size if rng.random() < 0.5 else box[3] + 0.4 * size
    ImageDraw.Draw(img).text((box[0] + rng.uniform(-1, 1) * H, y), text, font=font(style.font.path, size),
                             fill=tuple(int(c) for c in style.fg))


def paste_max(layer: np.ndarray, m: np.ndarray, x: int, y: int) -> None:
    """In place: ``layer = max(layer, m)`` with mask ``m``'s top-left corner at (x, y), clipped."""
    (h, w), (gh, gw) = layer.shape, m.shape
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + gw, w), min(y + gh, h)
    if x1 > x0 and y1 > y0:
        sub = layer[y0:y1, x0:x1]
        np.maximum(sub, m[y0 - y:y1 - y, x0 - x:x1 - x], out=sub)


def _ink_layers(glyphs: list[Glyph], origin, size) -> tuple[np.ndarray, np.ndarray]:
    """(outer, fill) uint8 masks of all glyphs in region pixels (union by maximum)."""
    w, h = size
    outer = np.zeros((h, w), np.uint8)
    fill = np.zeros((h, w), np.uint8)
    for g in glyphs:
        x, y = int(g.x - origin[0]), int(g.y - origin[1])
        paste_max(outer, g.mask, x, y)
        paste_max(fill, g.fill, x, y)
    return outer, fill


def _ink(rng, style: Style, img: Image.Image, glyphs: list[Glyph], origin) -> None:
    """Composite every glyph (labelled or not) in the ink style onto ``img`` (region coords)."""
    Hs = max(g.mask.shape[0] for g in glyphs)
    # layers cover the glyphs plus room for the shadow (offset + blur <= 0.17 Hs), not the picture
    x0, y0, x1, y1 = _window(ink_box(glyphs, roles=ROLES) - np.tile(origin, 2), 0.2 * Hs + 2, img.size)
    w, h, at = x1 - x0, y1 - y0, (x0, y0)
    outer, fill = _ink_layers(glyphs, (origin[0] + x0, origin[1] + y0), (w, h))
    if style.ink == "shadow":  # raised digits: a soft offset shadow on the surface behind
        off = Hs * rng.uniform(0.03, 0.1)
        sh = Image.fromarray(outer).transform((w, h), Image.AFFINE, (1, 0, -off, 0, 1, -off * rng.uniform(0.3, 1.2)))
        _paste(img, (0, 0, 0), sh.filter(ImageFilter.BoxBlur(max(1, off / 2))), rng.uniform(0.3, 0.7), at)
    if style.ink == "outline":
        _paste(img, 255 - style.fg if rng.random() < 0.5 else style.bg * 0.5, Image.fromarray(outer), at=at)
    if style.ink == "metal":  # polished metal: brightness varies top to bottom of the picture
        grad = np.linspace(rng.uniform(0.6, 1.3), rng.uniform(0.6, 1.3), img.height, dtype=np.float32)[y0:y1, None, None]
        colour = np.clip(style.fg[None, None, :] * grad, 0, 255).astype(np.uint8)
        img.paste(Image.fromarray(np.ascontiguousarray(np.broadcast_to(colour, (h, w, 3)))), at, mask=Image.fromarray(fill))
        return
    if style.ink == "worn":  # peeling paint: ink partly missing in blotches
        keep = np.clip(0.4 + 1.2 * rng.random((h, w)) ** 0.3, 0, 1)
        fill = (fill * keep).astype(np.uint8)
    _paste(img, style.fg, Image.fromarray(fill), at=at)


def draw_scene(rng: np.random.Generator, style: Style, glyphs: list[Glyph], H: float,
               region: tuple[int, int, int, int], unit_scale: float = 1.0) -> Image.Image:
    """RGB picture of the scene window ``region`` = (x0, y0, width, height) in scene pixels.

    ``unit_scale`` (<= 1) lets smooth surfaces be drawn at that fraction of the resolution
    and upscaled: the camera shrinks the picture anyway. Layers, back to front: 1. wall
    surface, 2. plate, 3. frames/pipes, 4. small text, 5. ink of every glyph.
    """
    x0, y0, w, h = region
    wall_colour = style.bg if style.plate == "none" else style.wall
    img = surface_image(rng, style.surface, w, h, wall_colour, H, unit_scale)
    box = ink_box(glyphs) - np.array([x0, y0, x0, y0])
    if style.plate != "none":
        _plate(rng, style, img, box, H, unit_scale)
    if style.distractors["lines"]:
        _lines(rng, style, img, box, H)
    if style.distractors["text"]:
        _small_text(rng, style, img, box, H)
    _ink(rng, style, img, glyphs, (x0, y0))
    return img


def surface_image(rng, kind: str, w: int, h: int, colour, H: float, unit_scale: float) -> Image.Image:
    """A surface drawn at ``unit_scale`` of (w, h) and upscaled; textures sized by digit height H."""
    sw, sh = max(4, int(w * unit_scale)), max(4, int(h * unit_scale))
    small = render_surface(rng, kind, sw, sh, colour, unit=H * unit_scale)
    return Image.fromarray(small if (sw, sh) == (w, h) else cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR))
