"""Typefaces for the synthetic house-number renderer: discovery and cached glyph masks.

Faces come from five places, best first; the renderer works with whatever subset exists:

1. Debian ``fonts-*`` packages (installed by ``make fonts`` as root; optional), under
   ``/usr/share/fonts``: Helvetica/Times/Century/Bookman clones, condensed faces,
   handwriting-like faces.
2. PyPI packages that ship TTF/OTF files (``font-fjallaone``, ``font-amatic-sc``, ...,
   pinned in ``pyproject.toml``).
3. matplotlib's bundled fonts (DejaVu, Computer Modern, STIX): always present, so even a
   bare CI machine gets a dozen faces.
4. Marker handwriting drawn stroke by stroke (``synth_strokes``, keys ``hand:K``): always present.
5. Real pen handwriting (``synth_pen``, keys ``pen:K``): present once ``make pen`` has made its
   bank of MNIST digits (optional, like the Debian fonts).

Only the curated file names below are used: a random system font may lack digits or draw
symbols instead. Each found font is also checked to draw ten distinct digit glyphs.

Glyph masks are cached per process (``functools.lru_cache``): a mask is a uint8 array,
255 = ink, tight around the glyph's visible pixels, with its top offset from the line top
so digits of one font sit on a common baseline.
"""
from __future__ import annotations

import functools
import glob
import importlib.util
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from digitdet.synth.pen import is_pen_key, pen_glyph_mask, pen_keys
from digitdet.synth.strokes import is_stroke_key, stroke_glyph_mask, stroke_keys, tight_mask

# (file name, style tag). Style tags only steer sampling weights and the fonts report.
SYSTEM_FONTS = {
    "NimbusSans-Regular.otf": "sans", "NimbusSans-Bold.otf": "bold",
    "NimbusSansNarrow-Bold.otf": "condensed", "NimbusSansNarrow-Regular.otf": "condensed",
    "C059-Roman.otf": "serif", "C059-Bold.otf": "serif-bold", "P052-Roman.otf": "serif",
    "URWBookman-Demi.otf": "serif-bold", "URWGothic-Demi.otf": "sans", "NimbusRoman-Regular.otf": "serif",
    "NimbusMonoPS-Bold.otf": "mono",
    "LiberationSans-Regular.ttf": "sans", "LiberationSans-Bold.ttf": "bold",
    "LiberationSerif-Bold.ttf": "serif-bold", "LiberationMono-Regular.ttf": "mono",
    "FreeSans.ttf": "sans", "FreeSerifBold.ttf": "serif-bold", "FreeSansBoldOblique.ttf": "italic",
    "BebasNeue-Regular.otf": "condensed", "BebasNeue-Bold.otf": "condensed",
    "LeagueSpartan-Bold.otf": "bold", "LeagueSpartan-Black.otf": "bold",
    "ComicNeue-Bold.otf": "handwritten", "ComicNeue-Regular.otf": "handwritten",
    "Humor-Sans.ttf": "handwritten", "Domestic_Manners.ttf": "handwritten", "Dustismo_Roman.ttf": "serif",
    "Cantarell-Bold.otf": "sans", "OpenSans-CondBold.ttf": "condensed", "OpenSans-Regular.ttf": "sans",
    "OpenSans-ExtraBold.ttf": "bold",
    "DejaVuSansCondensed-Bold.ttf": "condensed", "DejaVuSerifCondensed.ttf": "serif",
    "OpenSans-Light.ttf": "sans", "Cantarell-Light.otf": "sans", "BebasNeue-Light.otf": "condensed",
    "OpenSans-CondLight.ttf": "condensed", "URWGothic-Book.otf": "sans",
}
SYSTEM_FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts")

# PyPI font packages: import name -> {file name: style}.
PYPI_FONTS = {
    "font_fjallaone": {"FjallaOne-Regular.ttf": "condensed"},
    "font_amatic_sc": {"AmaticSC-Bold.ttf": "handwritten"},
    "font_intuitive": {"Intuitive.ttf": "handwritten"},
    "font_fredoka_one": {"FredokaOne-Regular.ttf": "bold"},
    "font_caladea": {"Caladea-Bold.ttf": "serif-bold", "Caladea-Regular.ttf": "serif"},
    "font_hanken_grotesk": {"HankenGrotesk-Regular.otf": "sans", "HankenGrotesk-Bold.otf": "bold",
                            "HankenGrotesk-Light.otf": "sans"},
}

MATPLOTLIB_FONTS = {
    "DejaVuSans.ttf": "sans", "DejaVuSans-Bold.ttf": "bold", "DejaVuSans-Oblique.ttf": "italic",
    "DejaVuSerif.ttf": "serif", "DejaVuSerif-Bold.ttf": "serif-bold", "DejaVuSansMono.ttf": "mono",
    "DejaVuSansMono-Bold.ttf": "mono", "cmr10.ttf": "serif", "cmss10.ttf": "sans", "cmtt10.ttf": "mono",
    "cmb10.ttf": "serif-bold", "STIXGeneral.ttf": "serif", "STIXGeneralBol.ttf": "serif-bold",
}

# Font size (pixels per em) used to draw glyphs; the renderer picks the smallest size whose
# digits are tall enough, so the cache holds few sizes.
FONT_SIZES = (20, 24, 28, 34, 40, 48, 56, 67, 80, 95, 112, 134, 160)


@dataclass(frozen=True)
class FontInfo:
    """One usable typeface: absolute ``path``, ``style`` tag, ``source`` (apt/pypi/matplotlib)."""
    path: str
    style: str
    source: str


def system_font_files() -> list[str]:
    """Every .ttf/.otf under SYSTEM_FONT_DIRS, in a fixed order (directory, then path)."""
    return [path for root in SYSTEM_FONT_DIRS
            for path in sorted(glob.glob(os.path.join(root, "**", "*.[ot]tf"), recursive=True))]


def _system_candidates() -> list[FontInfo]:
    found = {}
    for path in system_font_files():
        name = os.path.basename(path)
        if name in SYSTEM_FONTS and name not in found:
            found[name] = FontInfo(path, SYSTEM_FONTS[name], "apt")
    return list(found.values())


def _pypi_candidates() -> list[FontInfo]:
    out = []
    for module, files in PYPI_FONTS.items():
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            continue
        folder = os.path.join(list(spec.submodule_search_locations)[0], "files")
        out += [FontInfo(os.path.join(folder, f), s, "pypi") for f, s in files.items()
                if os.path.isfile(os.path.join(folder, f))]
    return out


def _matplotlib_candidates() -> list[FontInfo]:
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or not spec.submodule_search_locations:
        return []
    folder = os.path.join(list(spec.submodule_search_locations)[0], "mpl-data", "fonts", "ttf")
    return [FontInfo(os.path.join(folder, f), s, "matplotlib") for f, s in MATPLOTLIB_FONTS.items()
            if os.path.isfile(os.path.join(folder, f))]


def draws_digits(path: str) -> bool:
    """True when the font draws ten distinct, non-empty digit glyphs (no .notdef boxes)."""
    try:
        masks = [glyph_mask(path, FONT_SIZES[0], str(d))[0] for d in range(10)]
    except (OSError, ValueError):
        return False
    if any(m.size == 0 or m.max() == 0 for m in masks):
        return False
    keys = {(m.shape, m.tobytes()) for m in masks}
    return len(keys) == 10


@functools.lru_cache(maxsize=1)
def available_fonts() -> tuple[FontInfo, ...]:
    """Every usable font on this machine, in a fixed order (apt, pypi, matplotlib; by name).

    The order is deterministic for a given set of installed fonts, so a seed picks the same
    font on every run; a machine with other fonts renders other (equally valid) images.
    Raises RuntimeError when none is found (matplotlib missing too): the fix is
    ``pip install matplotlib``.
    """
    fonts = [f for f in _system_candidates() + _pypi_candidates() + _matplotlib_candidates()
             if draws_digits(f.path)]
    if not fonts:
        raise RuntimeError("no usable font found: install matplotlib (it ships DejaVu) or `make fonts`")
    return (tuple(fonts) + tuple(FontInfo(key, style, "strokes") for key, style in stroke_keys())
            + tuple(FontInfo(key, style, "pen") for key, style in pen_keys()))


def is_pseudo_font(path: str) -> bool:
    """True for the digit-only typefaces that are not font files (stroke writers, pens)."""
    return is_stroke_key(path) or is_pen_key(path)


@functools.lru_cache(maxsize=1)
def fallback_font_path() -> str:
    """The outline font that draws what stroke fonts do not (letters, small text): the first found."""
    return next(f.path for f in available_fonts() if not is_pseudo_font(f.path))


def fonts_report() -> str:
    """One line per source: how many fonts it gave, with their file names (for logs and docs)."""
    by_source: dict[str, list[str]] = {}
    for f in available_fonts():
        by_source.setdefault(f.source, []).append(os.path.basename(f.path))
    lines = [f"{len(available_fonts())} fonts"]
    # pseudo-fonts are numbered keys (hand:0 ... pen:1023): their first and last say it all
    lines += [f"  {src} ({len(names)}): " + (f"{names[0]} ... {names[-1]}" if is_pseudo_font(names[0]) else ", ".join(names))
              for src, names in by_source.items()]
    return "\n".join(lines)


@functools.lru_cache(maxsize=1024)
def font(path: str, size: int) -> ImageFont.FreeTypeFont:
    """The FreeType face at ``path`` at ``size`` px per em, loaded once per process (for a
    pseudo-font: the fallback outline font)."""
    return ImageFont.truetype(fallback_font_path() if is_pseudo_font(path) else path, size)


@functools.lru_cache(maxsize=8192)
def glyph_mask(path: str, size: int, char: str) -> tuple[np.ndarray, int]:
    """Ink mask of one character: (uint8 array (h, w), 255 = ink, tight; top offset in px).

    The top offset is the mask's first row measured from the font's ascender line, so
    masks of one font and size placed at ``line_top + offset`` share a baseline.
    The returned array is shared by the cache: callers must not modify it. A pseudo-font
    (``synth_strokes``, ``synth_pen``) draws its digits; its other characters come from the
    fallback font.
    """
    if is_stroke_key(path) and char.isdigit():
        mask, top = stroke_glyph_mask(path, size, char)
    elif is_pen_key(path) and char.isdigit():
        mask, top = pen_glyph_mask(path, size, char)
    else:
        face = font(path, size)  # a pseudo-font's letters: the fallback font's
        ascent, descent = face.getmetrics()
        pad = size // 2
        canvas = Image.new("L", (2 * size + 2 * pad, ascent + descent + 2 * pad), 0)
        ImageDraw.Draw(canvas).text((pad, pad), char, font=face, fill=255)
        mask, top = tight_mask(np.asarray(canvas), pad)
    mask.setflags(write=False)
    return mask, top


def digit_height(path: str, size: int) -> int:
    """Ink height in px of the digit '0' drawn at ``size`` (a font's figure height)."""
    return glyph_mask(path, size, "0")[0].shape[0]


def size_for_height(path: str, height: float) -> int:
    """Smallest size in FONT_SIZES whose figures are at least ``height`` px tall (else the largest)."""
    for size in FONT_SIZES:
        if digit_height(path, size) >= height:
            return size
    return FONT_SIZES[-1]
