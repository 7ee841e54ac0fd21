"""What one synthetic house number looks like: every random choice of the renderer, drawn once.

``sample_style(rng)`` returns a :class:`Style`; the renderer (``synthetic.py``) only executes
it, so all the distributions live here, next to the real statistics they are calibrated on.

Calibration source: the 26,032 digit boxes of the 13,068 real SVHN test images
(``shared/data/svhn_test_boxes.json``, measured by ``tools/calibration.py``). Quantile
tables below are (probability, value) pairs of those measurements; the 0 and 1 ends are our
own guesses at the extremes. Sampling from them is inverse-CDF interpolation.
"""
from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, field

import numpy as np

from digitdet.synth.fonts import FontInfo, available_fonts
from digitdet.synth.pen import N_PENS
from digitdet.synth.strokes import N_HANDS

# Digits per image, real: 1: 19.0%, 2: 63.9%, 3: 15.9%, 4: 1.12%, 5: 0.015%.
DIGIT_COUNT_P = np.array([0.190, 0.639, 0.159, 0.0112, 0.0002])
# First digit of the number (real); 0 only as a lone "0" (leading zeros are almost never real).
FIRST_DIGIT_P = np.array([0.001, 0.283, 0.203, 0.124, 0.095, 0.081, 0.066, 0.057, 0.048, 0.043])
OTHER_DIGIT_P = np.array([0.133, 0.108, 0.115, 0.097, 0.099, 0.103, 0.086, 0.098, 0.080, 0.080])

# Digit height in output pixels; real 1/10/50/90/99th percentiles 13/16/24/44/78 (log-interpolated).
HEIGHT_Q = ((0.0, 0.01, 0.10, 0.50, 0.90, 0.99, 1.0), (10.0, 13.0, 16.0, 24.0, 44.0, 78.0, 110.0))
# Margins from the number to the image edge, in digit heights. Real data gives only left and
# top (no image sizes): left 1/10/50/90/99 = 0.55/1.19/2.0/4.84/9.26, top 0.04/0.18/0.46/1.73/4.2.
# Right and bottom are ASSUMED to follow the same laws (the crops look centred in the samples).
SIDE_MARGIN_Q = ((0.0, 0.01, 0.10, 0.50, 0.90, 0.99, 1.0), (0.25, 0.55, 1.19, 2.0, 4.84, 9.26, 11.0))
TOPBOT_MARGIN_Q = ((0.0, 0.01, 0.10, 0.50, 0.90, 0.99, 1.0), (0.0, 0.04, 0.18, 0.46, 1.73, 4.2, 5.5))
# Real left and top margins are strongly tied (Spearman 0.82: a loose crop is loose all round).
MARGIN_CORRELATION = 0.83
# Gap between neighbouring tight boxes / digit height. Real (loose) boxes: 1/10/50/90/99 =
# -0.32/-0.135/0/0.11/0.29; tight boxes overlap less without ink collisions, so the low tail is cut.
GAP_Q = ((0.0, 0.01, 0.10, 0.50, 0.90, 0.99, 1.0), (-0.15, -0.10, -0.03, 0.04, 0.15, 0.32, 0.5))
# |Slant| of the line through digit centres, degrees; real: 23% < 1, 30% < 3, 46% < 5,
# 71% < 10, 90% < 20.
SLANT_Q = ((0.0, 0.231, 0.297, 0.455, 0.713, 0.899, 0.99, 1.0), (0.0, 1.0, 3.0, 5.0, 10.0, 20.0, 38.0, 45.0))

# (name, weight) of each surface the number is on; see synth_background.SURFACES.
SURFACE_P = {"paint": 0.24, "stucco": 0.14, "brick": 0.1, "wood": 0.1, "siding": 0.1,
             "foliage": 0.04, "noise": 0.08, "photo": 0.14, "metal": 0.06}
PLATE_P = {"none": 0.45, "rect": 0.22, "rounded": 0.2, "oval": 0.06, "tile": 0.07}
INK_P = {"flat": 0.45, "shadow": 0.2, "outline": 0.08, "metal": 0.12, "worn": 0.1, "stencil": 0.05}
# Weight of each face of a style: faces of these styles are what house numbers mostly use;
# handwriting and mono are rarer. "marker" is the weight of all the stroke-drawn writers of
# synth_strokes together, shared among them: about 16% of samples with all fonts installed (14% beside the pens)
# (hand-painted numbers are a minority of SVHN, but the ones models read worst and the ones
# outline fonts miss).
STYLE_WEIGHT = {"sans": 1.0, "bold": 1.0, "condensed": 1.0, "serif": 0.7, "serif-bold": 0.9,
                "italic": 0.4, "mono": 0.3, "handwritten": 0.6}
MARKER_WEIGHT = 9.0
# "pen" is the weight of all real pen writers of synth_pen together (about 12% of samples when
# its MNIST bank is installed, none without it): stroke skeletons alone left handwriting read at
# 0.65 (docs/results.md, "Numbers drawn by other means").
PEN_WEIGHT = 8.0
HAND_STYLES = ("handwritten", "marker", "pen")

# Wall/plate colours (RGB) seen on houses; jittered per sample.
PALETTE = np.array([
    [235, 235, 230], [250, 248, 240], [210, 205, 190], [190, 190, 190], [120, 120, 120],
    [60, 60, 62], [20, 20, 22], [150, 60, 45], [170, 90, 60], [110, 70, 45], [200, 170, 120],
    [40, 70, 120], [30, 50, 90], [30, 90, 60], [120, 150, 100], [230, 210, 150], [180, 40, 40],
    [200, 200, 215], [90, 100, 110], [240, 230, 200], [70, 40, 30], [160, 140, 110],
], dtype=np.float64)
# Share of samples (metal ink aside) whose ink and plate are vivid colours that may share their
# luminance (vivid_colours), at least this far apart in RGB (0-441), photographed saturated.
VIVID_P = 0.12
VIVID_MIN_DISTANCE = 120.0
# Share of pictures seen out of focus or from far away and enlarged: the digits keep only
# SOFT_HEIGHT px of detail (their height after a detour through a lower resolution), whatever
# their size in the photo. Blur and `lowres` alone keep a 40-px digit sharp to ~16 px; an
# upscaled phone crop or a focus miss does not, and a model trained without them reads such
# pictures worse (docs/renderer.md).
SOFT_P = 0.1
# Share of pictures (any face but MNIST's pens, which have their own) whose 1s are painted as a
# plain bar of the face's stem width: house numbers often have them, fonts seldom do, and a model
# that never saw them misses such 1s when large in the picture (bench/other_means.py --means strokes).
PLAIN_ONE_P = 0.25
SOFT_HEIGHT = (8.0, 14.0)
METALS = np.array([[190, 150, 70], [200, 200, 205], [150, 110, 60], [60, 60, 60]], dtype=np.float64)


@dataclass
class Style:
    """Every random choice for one sample. Lengths are in digit heights unless named ``_px``."""
    digits: list[int]
    font: FontInfo
    height_px: float                 # target digit height in the output image
    x_scale: float                   # horizontal stretch of the glyphs (condensed < 1)
    weight: float                    # extra stroke width, px per 40 px of glyph height (bolder)
    wobble: float                    # hand-made bending of each glyph, x its height (0 = none)
    gaps: list[float]                # tight-box gap after each digit but the last
    slant_deg: float                 # slope of the line through digit centres
    rotation_deg: float              # part of the slant made by rotating the whole picture
    jitter: list[float]              # per-digit vertical offsets (hand-mounted digits)
    margins: tuple[float, float, float, float]   # left, top, right, bottom
    shear: float
    yaw: float                       # perspective strength left-right (foreshortening)
    pitch: float                     # perspective strength up-down
    surface: str
    plate: str
    ink: str
    fg: np.ndarray                   # ink colour, RGB float
    bg: np.ndarray                   # plate (or wall when no plate) colour
    wall: np.ndarray                 # wall colour around a plate
    border: bool
    screws: bool
    photo_params: dict = field(default_factory=dict)
    distractors: dict = field(default_factory=dict)
    vivid: bool = False              # fg/bg from vivid_colours: contrast in colour, maybe not in luminance
    plain_one: bool = False          # 1s drawn as a plain bar of the face's stem width (PLAIN_ONE_P)


def from_quantiles(rng: np.random.Generator, table, log: bool = False, u: float | None = None) -> float:
    """One draw from the piecewise-linear inverse CDF through (probabilities, values)
    (in log space when ``log``); ``u`` in [0, 1] replaces the uniform draw when given."""
    probs, values = table
    values = np.log(values) if log else np.asarray(values)
    x = float(np.interp(rng.random() if u is None else u, probs, values))
    return float(np.exp(x)) if log else x


def correlated_uniforms(rng: np.random.Generator, n: int, rho: float) -> np.ndarray:
    """``n`` uniforms on [0, 1] with pairwise correlation about ``rho`` (a Gaussian copula:
    one shared normal factor plus independent ones)."""
    z = np.sqrt(rho) * rng.normal() + np.sqrt(1 - rho) * rng.normal(size=n)
    return np.array([0.5 * (1 + math.erf(v / math.sqrt(2))) for v in z])


def draw_index(rng: np.random.Generator, weights) -> int:
    """An index drawn with probability proportional to ``weights`` (one uniform draw; much
    cheaper than ``rng.choice(p=...)``, which validates ``p`` on every call)."""
    return draw_cumulative(rng, np.cumsum(weights))


def draw_cumulative(rng: np.random.Generator, cum: np.ndarray) -> int:
    """``draw_index`` for weights given as their cumulative sums ``cum`` (the same draw)."""
    return min(int(np.searchsorted(cum, rng.random() * cum[-1], side="right")), len(cum) - 1)


def weighted_choice(rng: np.random.Generator, weights: dict) -> str:
    """A key of ``weights`` drawn with probability proportional to its value."""
    keys = list(weights)
    return keys[draw_index(rng, [weights[k] for k in keys])]


def sample_digits(rng: np.random.Generator) -> list[int]:
    """A house number as digits, length and digit frequencies as in real SVHN."""
    n = 1 + draw_index(rng, DIGIT_COUNT_P)
    first_p = FIRST_DIGIT_P.copy()
    if n > 1:
        first_p[0] = 0.0  # "07" style leading zeros: 8 of 10,580 real multi-digit numbers
    return [draw_index(rng, first_p)] + [draw_index(rng, OTHER_DIGIT_P) for _ in range(n - 1)]


def luminance(rgb: np.ndarray) -> float:
    """Relative luminance 0..1 of an RGB colour 0..255 (Rec. 709 weights, no gamma)."""
    return float(np.dot(rgb, [0.2126, 0.7152, 0.0722]) / 255.0)


def _jitter(rng, colour, amount=18.0):
    return np.clip(colour + rng.normal(0, amount, 3), 0, 255)


def sample_colours(rng: np.random.Generator, ink: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ink, plate-or-wall, wall) colours. Contrast is mostly clear but ~10% is low (faded paint)."""
    bg = _jitter(rng, PALETTE[rng.integers(len(PALETTE))])
    wall = _jitter(rng, PALETTE[rng.integers(len(PALETTE))])
    min_contrast = rng.uniform(0.06, 0.2) if rng.random() < 0.1 else rng.uniform(0.3, 0.6)
    for _ in range(20):
        if ink == "metal":
            fg = _jitter(rng, METALS[rng.integers(len(METALS))], 10)
        elif rng.random() < 0.6:   # black/white-ish ink is the common case
            fg = _jitter(rng, np.full(3, 15.0 if luminance(bg) > 0.45 else 240.0), 12)
        else:
            fg = _jitter(rng, PALETTE[rng.integers(len(PALETTE))], 25)
        if abs(luminance(fg) - luminance(bg)) >= min_contrast:
            return fg, bg, wall
        bg = _jitter(rng, PALETTE[rng.integers(len(PALETTE))])
    return fg, bg, wall


def vivid_colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(ink, plate) in saturated colours far apart in RGB but not necessarily in luminance:
    purple on green, orange on blue. ``sample_colours`` always keeps luminance contrast, and a
    model trained on that alone missed numbers whose contrast is in colour only (README)."""
    def hsv() -> np.ndarray:
        return 255.0 * np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.4, 1.0), rng.uniform(0.35, 1.0)))
    fg, bg = hsv(), hsv()
    for _ in range(50):
        if np.linalg.norm(fg - bg) >= VIVID_MIN_DISTANCE:
            break
        fg, bg = hsv(), hsv()
    return fg, bg


def _sample_photometric(rng: np.random.Generator) -> dict:
    """Camera and light: every value is a strength, 0 meaning 'not applied'."""
    return {
        "light_gain": (rng.uniform(0.55, 1.15), rng.uniform(-0.35, 0.35), rng.uniform(-0.35, 0.35)),
        "shadow": rng.uniform(0.35, 0.75) if rng.random() < 0.2 else 0.0,
        "cast": rng.uniform(0.85, 1.15, 3),
        "saturation": rng.uniform(0.35, 1.0),
        "blur": rng.uniform(0.2, 1.6) if rng.random() < 0.65 else 0.0,        # in output px
        "lowres": rng.uniform(0.4, 0.85) if rng.random() < 0.25 else 0.0,    # down-up resample
        "noise": rng.uniform(1.0, 9.0) if rng.random() < 0.7 else 0.0,       # grey levels
        "jpeg": int(rng.integers(20, 92)) if rng.random() < 0.6 else 0,
    }


def _sample_geometry(rng: np.random.Generator, n_digits: int) -> tuple[float, float, list[float], float, float, float]:
    """(slant, rotation, jitter, shear, yaw, pitch). Slant is split between rotating the
    picture (small, camera roll) and stepping upright digits along a sloped line (big, how
    hand-mounted numbers often go)."""
    # perspective and per-digit jitter add their own few degrees of slope: take them off the
    # sampled slant (up to 4 degrees) so the measured slant matches the real one
    slant = from_quantiles(rng, SLANT_Q)
    slant = (slant - 0.2 * min(slant, 20.0)) * (1 if rng.random() < 0.5 else -1) if n_digits > 1 else 0.0
    rotation = float(np.clip(slant * rng.uniform(0.3, 1.0), -12, 12)) if n_digits > 1 else rng.normal(0, 3)
    mounted = rng.random() < 0.2
    jitter = list(rng.normal(0, 0.05 if mounted else 0.012, n_digits))
    shear = rng.normal(0, 0.08)
    yaw = rng.normal(0, 0.25) if rng.random() < 0.6 else 0.0
    pitch = rng.normal(0, 0.12) if rng.random() < 0.4 else 0.0
    return slant, rotation, jitter, shear, yaw, pitch


_FONT_WEIGHTS: list = [None, None]  # (the font tuple, its cumulative weights) of the last pick


def _pick_font(rng: np.random.Generator) -> FontInfo:
    fonts = available_fonts()
    if _FONT_WEIGHTS[0] is not fonts:  # once per font list: with 1,000 pens, per sample it cost 0.2 ms
        share = {"marker": MARKER_WEIGHT / N_HANDS, "pen": PEN_WEIGHT / N_PENS}
        _FONT_WEIGHTS[:] = [fonts, np.cumsum([share.get(f.style, STYLE_WEIGHT.get(f.style, 0.5)) for f in fonts])]
    return fonts[draw_cumulative(rng, _FONT_WEIGHTS[1])]


def sample_style(rng: np.random.Generator) -> Style:
    """Draw every random choice of one sample (the only place the renderer draws layout/look)."""
    digits = sample_digits(rng)
    font = _pick_font(rng)
    ink = weighted_choice(rng, INK_P)
    fg, bg, wall = sample_colours(rng, ink)
    slant, rotation, jitter, shear, yaw, pitch = _sample_geometry(rng, len(digits))
    u = correlated_uniforms(rng, 4, MARGIN_CORRELATION)
    margins = (from_quantiles(rng, SIDE_MARGIN_Q, log=True, u=u[0]), from_quantiles(rng, TOPBOT_MARGIN_Q, u=u[1]),
               from_quantiles(rng, SIDE_MARGIN_Q, log=True, u=u[2]), from_quantiles(rng, TOPBOT_MARGIN_Q, u=u[3]))
    plate = weighted_choice(rng, PLATE_P)
    style = Style(
        digits=digits, font=font, height_px=from_quantiles(rng, HEIGHT_Q, log=True),
        x_scale=float(np.clip(rng.normal(0.86, 0.12), 0.6, 1.2)),
        weight=(0.0, 0.8, 1.6)[draw_index(rng, (0.75, 0.15, 0.1))],
        # painted and hand-mounted numbers are rarely typographically perfect
        wobble=rng.uniform(0.015, 0.06) if rng.random() < (0.7 if font.style in HAND_STYLES else 0.3) else 0.0,
        gaps=[from_quantiles(rng, GAP_Q) for _ in digits[1:]],
        slant_deg=slant, rotation_deg=rotation, jitter=jitter, margins=margins,
        shear=shear, yaw=yaw, pitch=pitch,
        surface=weighted_choice(rng, SURFACE_P), plate=plate, ink=ink, fg=fg, bg=bg, wall=wall,
        border=plate != "none" and rng.random() < 0.45, screws=plate in ("rect", "rounded") and rng.random() < 0.35,
        photo_params=_sample_photometric(rng),
        distractors={
            "fragment": ("left", "right")[int(rng.integers(2))] if rng.random() < 0.05 else "",
            "cut": ("left", "right")[int(rng.integers(2))] if rng.random() < 0.015 else "",
            "letter": "ABCD"[int(rng.integers(4))] if rng.random() < 0.04 else "",
            "lines": int(rng.integers(1, 4)) if rng.random() < 0.25 else 0,
            "text": rng.random() < 0.06,
        },
    )
    if style.surface == "foliage" and style.plate == "none":
        # nobody paints a number on ivy: on a foliage wall it hangs on a plate. Painted on the
        # leaves, dark ink on dark leaves was invisible, yet labelled. (Set after the draws, so
        # every other sample keeps its random choices.)
        style.plate = "rect"
    # Colour-only contrast, drawn from a generator of its own (a child of the sample's seed), so
    # that every other sample keeps all its random choices, as above.
    # (Children 0-2 of the seed: child 0 is the one vivid colours always drew from, child 1 soft
    # focus's; child 2, plain 1s, came last, so the first two are the same children as before.)
    side, soft, plain = (np.random.default_rng(s) for s in rng.bit_generator.seed_seq.spawn(3))
    if style.ink != "metal" and side.random() < VIVID_P:
        style.fg, style.bg = vivid_colours(side)
        style.vivid = True
        style.photo_params["saturation"] = side.uniform(0.8, 1.0)
    if soft.random() < SOFT_P:  # another child, so soft focus and vivid colours do not depend on each other
        style.photo_params["soft"] = soft.uniform(*SOFT_HEIGHT)
    style.plain_one = style.font.style != "pen" and plain.random() < PLAIN_ONE_P
    return style
