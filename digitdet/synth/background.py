"""Surfaces a house number is painted or mounted on: procedural textures and bundled photos.

``render_surface(rng, kind, width, height, colour, unit)`` returns a uint8 (height, width, 3)
array; ``unit`` is the digit height in pixels of that array, so bricks, boards and grain keep
their real size relative to the number (a brick is about half a house digit tall).
Procedural kinds are built from cheap smooth noise (a small random grid upsampled bicubically)
so a surface costs about a millisecond. ``photo`` crops one of the natural images that
scikit-image ships inside its wheel (no download: only the names in PHOTOS, all checked to
load offline), tinted towards the wall colour.
"""
from __future__ import annotations

import functools

import cv2
import numpy as np

SURFACES = ("paint", "stucco", "brick", "wood", "siding", "foliage", "noise", "photo", "metal")
# skimage.data images bundled in the wheel (others need a network download).
PHOTOS = ("brick", "grass", "gravel", "moon", "camera", "chelsea", "coffee", "rocket", "page", "text",
          "coins", "clock", "astronaut")


def smooth_noise(rng: np.random.Generator, width: int, height: int, cell: float) -> np.ndarray:
    """(height, width) float32 noise in about [0, 1], smooth over ``cell`` pixels."""
    gw, gh = max(2, int(width / cell) + 2), max(2, int(height / cell) + 2)
    # OpenCV's bicubic upsampling of float32 directly: no uint8 round trip, ~3x Pillow's speed
    return cv2.resize(rng.random((gh, gw), dtype=np.float32), (width, height), interpolation=cv2.INTER_CUBIC)


def _tone(colour: np.ndarray, shade: np.ndarray) -> np.ndarray:
    """Colour (3,) times a shade map (h, w) -> float32 (h, w, 3)."""
    return shade.astype(np.float32, copy=False)[..., None] * np.asarray(colour, np.float32)[None, None, :]


def _paint(rng, w, h, colour, rough, unit):
    grain = rng.random((h, w), dtype=np.float32) - 0.5
    shade = 1.0 + rough * (smooth_noise(rng, w, h, 1.5 * unit) - 0.5) + rough * 0.5 * grain
    return _tone(colour, shade)


def _brick(rng, w, h, colour, unit):
    bh = max(3.0, unit * rng.uniform(0.35, 0.8))
    bw = bh * rng.uniform(2.2, 3.2)
    mortar = np.asarray(colour) * 0.3 + 170 * 0.7
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    row = np.floor(ys / bh)
    shift = (row % 2) * bw / 2
    col = np.floor((xs + shift) / bw)
    # one random shade per brick, looked up by a hash of its (row, col)
    table = rng.uniform(0.75, 1.2, 997).astype(np.float32)
    shade = table[((row * 31 + col * 17) % 997).astype(np.int64)]
    shade = shade * (1 + 0.25 * (smooth_noise(rng, w, h, bh / 3) - 0.5))
    line = max(1.0, bh * 0.12)
    is_mortar = ((ys % bh) < line) | (((xs + shift) % bw) < line)
    img = _tone(colour, shade)
    img[is_mortar] = mortar
    return img


def _wood(rng, w, h, colour, unit):
    ys = np.arange(h, dtype=np.float32)[:, None]
    warp = smooth_noise(rng, w, h, 2 * unit) * unit * rng.uniform(0.1, 0.4)
    freq = 2 * np.pi / max(2.0, unit * rng.uniform(0.06, 0.2))
    grain = 0.5 + 0.5 * np.sin((ys + warp) * freq + 3 * smooth_noise(rng, w, h, unit))
    shade = 0.8 + 0.3 * grain + 0.1 * (smooth_noise(rng, w, h, max(1.0, unit / 8)) - 0.5)
    return _tone(colour, shade)


def _siding(rng, w, h, colour, unit):
    """Clapboards or vertical panels: regular boards with a dark edge line."""
    board = max(4.0, unit * rng.uniform(0.5, 1.6))
    vertical = rng.random() < 0.35
    coord = np.arange(w if vertical else h, dtype=np.float32)
    t = coord % board / board
    t = np.broadcast_to(t[None, :] if vertical else t[:, None], (h, w))
    shade = 0.85 + 0.2 * t - 0.35 * (t < 0.08)
    shade = shade + 0.06 * (smooth_noise(rng, w, h, unit) - 0.5)
    return _tone(colour, shade)


def _foliage(rng, w, h, colour, unit):
    leaves = np.array([60, 110, 40], np.float32) * rng.uniform(0.5, 1.3)
    a = smooth_noise(rng, w, h, max(1.5, unit * rng.uniform(0.08, 0.25)))
    b = smooth_noise(rng, w, h, unit)
    shade = 0.3 + 1.2 * (a * 0.7 + b * 0.3)
    img = _tone(leaves, shade)
    mix = (smooth_noise(rng, w, h, 3 * unit) > 0.6)[..., None]  # patches of wall show through
    return np.where(mix, _tone(colour, np.ones((h, w), np.float32)), img)


def _noise(rng, w, h, colour, unit):
    fine = max(1.0, unit * rng.uniform(0.05, 0.4))
    shade = 0.7 + 0.3 * smooth_noise(rng, w, h, fine) + 0.3 * smooth_noise(rng, w, h, 3 * unit)
    return _tone(colour, shade)


def _metal(rng, w, h, colour, unit):
    xs = np.linspace(0, 1, w, dtype=np.float32)[None, :]
    streak = smooth_noise(rng, w, h, 1) * 0.08
    shade = 0.75 + 0.35 * np.abs(np.sin(xs * rng.uniform(1, 4) + rng.uniform(0, 3))) + streak
    return _tone(colour, shade)


@functools.lru_cache(maxsize=len(PHOTOS))
def _photo(name: str) -> np.ndarray:
    import skimage.data  # imported lazily: only photo surfaces need it

    img = np.asarray(getattr(skimage.data, name)())
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., :3])


def _photo_crop(rng, w, h, colour, unit):
    src = _photo(PHOTOS[int(rng.integers(len(PHOTOS)))])
    sh, sw = src.shape[:2]
    scale = rng.uniform(0.15, 1.0)
    cw, ch = max(8, int(sw * scale)), max(8, int(sh * scale))
    x0, y0 = int(rng.integers(0, sw - cw + 1)), int(rng.integers(0, sh - ch + 1))
    shrink = cw > w or ch > h  # area averaging when shrinking (no aliasing), bilinear when growing
    crop = cv2.resize(src[y0:y0 + ch, x0:x0 + cw], (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    img = crop.astype(np.float32)
    tint = rng.uniform(0.3, 0.8)  # pull towards the sampled colour so plates still stand out
    return img * (1 - tint) + tint * (img.mean(axis=2, keepdims=True) / 128.0) * np.asarray(colour, np.float32)


def render_surface(rng: np.random.Generator, kind: str, width: int, height: int, colour,
                   unit: float = 32.0) -> np.ndarray:
    """A (height, width, 3) uint8 surface of ``kind`` (one of SURFACES) around base ``colour``;
    ``unit`` = digit height in pixels of this array (sets the texture's scale).

    Raises ValueError for an unknown kind or a non-positive size.
    """
    if width <= 0 or height <= 0 or unit <= 0:
        raise ValueError(f"surface size and unit must be positive, got {width}x{height}, unit {unit}")
    colour = np.asarray(colour, np.float32)
    if kind in ("paint", "stucco"):
        img = _paint(rng, width, height, colour, 0.06 if kind == "paint" else 0.3, unit)
    elif kind in _DRAWERS:
        img = _DRAWERS[kind](rng, width, height, colour, unit)
    else:
        raise ValueError(f"unknown surface {kind!r}; expected one of {SURFACES}")
    return np.clip(img, 0, 255).astype(np.uint8)


_DRAWERS = {"brick": _brick, "wood": _wood, "siding": _siding, "foliage": _foliage, "noise": _noise,
            "metal": _metal, "photo": _photo_crop}
