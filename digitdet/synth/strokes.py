"""Stroke-drawn digits: marker handwriting as glyph masks.

Real house numbers are often painted or written with a marker: a bare-stroke 1, a 7 with a
tick or a crossbar, a 4 open at the top with its bar high or low, one line of even width.
Outline fonts (synth_fonts) draw none of these, and a model trained on them alone reads a
hand-painted "174" as "171".

Each writer is a pseudo-font named ``hand:K`` (K = 0..N_HANDS-1), a path-like key that travels
through ``FontInfo.path`` and the glyph cache like a font file. Each digit is a skeleton of
polylines in a unit box (``SKELETONS``: several letterforms per digit); writer K deterministically
picks a form per digit, a pen width, a width/height ratio, a slant, its own proportions (each
stroke moved and stretched a little: where a 4's bar sits, how long a 7's bar or a 1's flag is)
and a per-point tremor, then the skeleton is stroked with OpenCV's anti-aliased round-capped
lines. 96 writers x 2-6 forms give every digit dozens of distinct shapes: with 24 writers and
no proportions of their own, each digit had at most 24, too few for a model to learn what
handwriting keeps and what it varies. Written by hand here:
no maintained library renders handwriting-like digits offline (OpenCV 5's ``FONT_HERSHEY_*`` are
now ordinary outline faces, no longer single-stroke fonts).

Contract, the same as ``synth_fonts.glyph_mask``: (uint8 mask, 255 = ink, tight; top offset of
the mask's first row from the line top), masks of one key and size share a baseline. Letters
(distractors) are not drawn by strokes: ``synth_fonts`` draws them in ``fallback_font_path()``.
"""
from __future__ import annotations

import zlib

import cv2
import numpy as np

N_HANDS = 96
FIGURE_HEIGHT = 0.7  # digit height / font size, like a typical outline font's figures
SHIFT = 4  # cv2 fixed-point bits: sub-pixel stroke positions


def _arc(cx, cy, rx, ry, a0, a1, n=14):
    """Points of an elliptic arc, angles in degrees (0 = right, 90 = down: image y grows down)."""
    t = np.radians(np.linspace(a0, a1, n))
    return list(zip(cx + rx * np.cos(t), cy + ry * np.sin(t)))


# Letterforms: digit -> list of forms; a form is a list of strokes; a stroke a list of (x, y)
# in a unit box (x right, y down; the figure spans y 0..1).
SKELETONS = {
    0: [[_arc(0.5, 0.5, 0.5, 0.5, -90, 270, 28)],
        [_arc(0.5, 0.5, 0.42, 0.5, -100, 262, 28)]],
    1: [[[(0.5, 0.0), (0.5, 1.0)]],                                      # bare stroke
        [[(0.45, 0.0), (0.53, 0.5), (0.5, 1.0)]],                        # bare, bowed
        [[(0.38, 0.08), (0.52, 0.0), (0.5, 1.0)]],                       # bare with a small hook
        [[(0.15, 0.25), (0.55, 0.0), (0.55, 1.0)]],                      # flag
        [[(0.3, 0.1), (0.55, 0.0), (0.55, 1.0)]],                        # short flag
        [[(0.2, 0.22), (0.5, 0.0), (0.5, 1.0)], [(0.15, 1.0), (0.85, 1.0)]]],  # flag and foot
    2: [[_arc(0.5, 0.28, 0.45, 0.28, 190, 360, 10) + [(0.92, 0.36), (0.02, 1.0), (1.0, 1.0)]],
        [[(0.05, 0.12), (0.5, 0.0), (0.95, 0.2), (0.85, 0.45), (0.05, 1.0), (1.0, 0.98)]]],
    3: [[_arc(0.5, 0.26, 0.45, 0.26, 200, 450, 12) + _arc(0.5, 0.74, 0.5, 0.26, -90, 160, 12)],
        [[(0.05, 0.0), (0.95, 0.0), (0.4, 0.42)] + _arc(0.45, 0.71, 0.5, 0.29, -80, 160, 12)]],
    4: [[[(0.7, 1.0), (0.7, 0.0), (0.0, 0.68), (1.0, 0.68)]],             # closed
        [[(0.12, 0.0), (0.05, 0.62), (1.0, 0.62)], [(0.75, 0.08), (0.75, 1.0)]],  # open top
        [[(0.2, 0.0), (0.1, 0.6), (0.95, 0.6)], [(0.7, 0.25), (0.7, 1.0)]],    # open, short stem
        [[(0.3, 0.12), (0.08, 0.58), (1.0, 0.55)], [(0.72, 0.0), (0.7, 1.0)]],  # open, short arm
        [[(0.2, 0.12), (0.06, 0.46), (0.95, 0.44)], [(0.72, 0.0), (0.72, 1.0)]],  # open, high bar, long stem
        [[(0.08, 0.1), (0.06, 0.3), (0.14, 0.43), (0.3, 0.48), (0.74, 0.46)],     # a "u" on a long stem
         [(0.74, 0.0), (0.72, 1.0)]]],
    5: [[[(0.95, 0.0), (0.15, 0.0), (0.1, 0.45)] + _arc(0.48, 0.7, 0.48, 0.3, -115, 160, 12)],
        [[(0.15, 0.0), (0.1, 0.45)] + _arc(0.48, 0.7, 0.48, 0.3, -115, 160, 12), [(0.15, 0.0), (0.95, 0.0)]]],
    6: [[_arc(0.85, 0.6, 0.8, 0.6, 250, 180, 8) + _arc(0.5, 0.7, 0.45, 0.3, 180, 540, 22)],
        [[(0.8, 0.0), (0.1, 0.62)] + _arc(0.5, 0.7, 0.42, 0.3, 180, 540, 22)]],
    7: [[[(0.0, 0.0), (1.0, 0.0), (0.3, 1.0)]],
        [[(0.0, 0.12), (0.02, 0.0), (1.0, 0.0), (0.35, 1.0)]],            # tick at the left end
        [[(0.0, 0.0), (1.0, 0.0), (0.3, 1.0)], [(0.3, 0.5), (0.85, 0.5)]],  # crossbar
        [[(0.05, 0.03), (0.95, 0.0), (0.62, 1.0)]],                      # steep stem (a painted 7)
        [[(0.0, 0.04), (0.8, 0.0), (0.62, 1.0)]],                        # short bar, near-vertical
        [[(0.1, 0.04), (0.95, 0.0)] + _arc(0.95, 1.0, 0.6, 1.0, -90, -180, 8)]],  # bowed stem
    8: [[_arc(0.5, 0.25, 0.38, 0.25, 90, 450, 20), _arc(0.5, 0.72, 0.48, 0.28, -90, 270, 22)],
        [_arc(0.5, 0.24, 0.4, 0.24, 120, 420, 18) + _arc(0.5, 0.72, 0.5, 0.28, -60, 240, 20)]],
    9: [[_arc(0.5, 0.3, 0.45, 0.3, 0, 360, 22) + [(0.95, 0.3), (0.9, 1.0)]],
        [_arc(0.5, 0.3, 0.45, 0.3, 0, 360, 22) + [(0.95, 0.3)] + _arc(0.15, 0.3, 0.8, 0.7, 0, 110, 8)]],
}


# A 7's top bar is its width: drawn as narrow as a narrow writer's 0 (0.32 x its height, minus
# the pen), a short sloping bar is a 1's flag, and the model learnt to read 7s as 1s (marker
# 7s were read as 1s; the real photo "478" was read "418").
MIN_ASPECT = {"7": 0.5}


def is_stroke_key(path: str) -> bool:
    return path.startswith("hand:")


def stroke_keys() -> list[tuple[str, str]]:
    """(key, style tag) of every stroke pseudo-font, in a fixed order."""
    return [(f"hand:{k}", "marker") for k in range(N_HANDS)]


def _writer(k: int, char: str) -> dict:
    """Writer k's letterform and pen for one digit: deterministic in (k, char)."""
    rng = np.random.default_rng(zlib.crc32(f"hand:{k}:{char}".encode()))
    pen = np.random.default_rng(k)  # the pen, width and slant are the writer's, shared by digits
    form = SKELETONS[int(char)][int(rng.integers(len(SKELETONS[int(char)])))]
    strokes = [_proportioned(stroke, rng) for stroke in form]  # draws in this order: seeds keep their glyphs
    width = pen.uniform(0.06, 0.17)
    aspect = pen.uniform(0.32, 0.68) * rng.uniform(0.92, 1.08)
    return {"form": strokes, "pen": width, "aspect": max(aspect, MIN_ASPECT.get(char, 0.0)),
            "slant": pen.uniform(-0.08, 0.28), "tremor": rng.normal(0, pen.uniform(0.01, 0.035), size=(64, 2))}


def _proportioned(stroke, rng: np.random.Generator) -> list[tuple[float, float]]:
    """One stroke as this writer draws it: stretched about its centre by 0.8-1.2 across and
    0.92-1.08 up-down, moved by up to 0.07 across and 0.04 up or down (figures keep about their
    height: the renderer sizes glyphs by it)."""
    pts = np.array(stroke, dtype=np.float64)
    centre = pts.mean(axis=0)
    scale = np.array([rng.uniform(0.8, 1.2), rng.uniform(0.92, 1.08)])
    shift = np.array([rng.uniform(-0.07, 0.07), rng.uniform(-0.04, 0.04)])
    return [tuple(p) for p in (pts - centre) * scale + centre + shift]


def _hand_mask(k: int, size: int, char: str) -> tuple[np.ndarray, int]:
    w = _writer(k, char)
    h = FIGURE_HEIGHT * size
    pen = max(1, int(round(w["pen"] * h)))
    pad = pen + int(0.4 * h) + 2
    canvas = np.zeros((int(h) + 2 * pad, int(h) + 2 * pad), np.uint8)
    tremor = iter(w["tremor"])
    for stroke in w["form"]:
        pts = []
        for x, y in stroke:
            dx, dy = next(tremor, (0.0, 0.0))
            # slant leans the top right: x moves by slant x (distance above the baseline)
            px = pad + (x + dx) * w["aspect"] * h + w["slant"] * (1.0 - y) * h
            pts.append((px, pad + (y + dy) * h))
        poly = np.round(np.array(pts) * (1 << SHIFT)).astype(np.int32)
        cv2.polylines(canvas, [poly], False, 255, pen, cv2.LINE_AA, SHIFT)
    return tight_mask(canvas, pad - pen // 2)


def tight_mask(canvas: np.ndarray, line_top: int) -> tuple[np.ndarray, int]:
    """(``canvas`` cropped to its pixels >= 128, a copy; its first row's offset from row
    ``line_top``): the tight glyph mask of every typeface, outline (synth_fonts) or stroked."""
    rows = np.flatnonzero(canvas.max(axis=1) >= 128)
    cols = np.flatnonzero(canvas.max(axis=0) >= 128)
    if rows.size == 0:
        return np.zeros((0, 0), np.uint8), 0
    return canvas[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].copy(), int(rows[0] - line_top)


def stroke_glyph_mask(key: str, size: int, char: str) -> tuple[np.ndarray, int]:
    """Mask of digit ``char`` for stroke pseudo-font ``key`` at ``size`` px per em (see module doc).

    Raises ValueError for a non-digit ``char`` or an unknown key."""
    if not (len(char) == 1 and char.isdigit()):
        raise ValueError(f"stroke font {key!r} draws digits only, not {char!r}")
    kind, _, rest = key.partition(":")
    if kind == "hand" and rest.isdigit() and int(rest) < N_HANDS:
        return _hand_mask(int(rest), size, char)
    raise ValueError(f"unknown stroke font {key!r}: expected hand:0..{N_HANDS - 1}")
