"""Reading photos: any PNG/JPEG mode (grayscale, RGBA, palette, 16-bit) -> 8-bit RGB, upright.

A phone stores a photo taken in portrait as landscape pixels plus an EXIF orientation tag that
viewers apply. :func:`load_rgb` and :func:`image_size` apply it too (as Detectron2 and
Ultralytics do), so a house number is read upright and pred.json's boxes are in the frame of the
photo as a viewer shows it. Files without the tag (SVHN's PNGs) are read as stored.

iPhones save HEIC: read where the optional ``pillow-heif`` is installed (the ``heif`` extra),
which turns such photos upright itself; without it a HEIC file is an error that says so.
"""
from __future__ import annotations

import logging
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

log = logging.getLogger("digitdet")

try:
    from pillow_heif import register_heif_opener
except ImportError:  # the heif extra is not installed
    HEIF = False
else:
    register_heif_opener()
    HEIF = True

HEIF_SUFFIXES = (".heic", ".heif")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif", *HEIF_SUFFIXES)
# Pillow warns of a photo over Image.MAX_IMAGE_PIXELS (a possible decompression bomb) without
# naming the file; digitdet says it itself, by name (_say_if_huge), and refuses the ones twice that
# size as Pillow does (DecompressionBombError: read as an unreadable photo).
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
EXIF_ORIENTATION = 0x0112  # the EXIF tag; values 5-8 turn the photo a quarter, swapping width and height


def load_rgb(path: str | Path) -> Image.Image:
    """Open an image file as 8-bit RGB; raise ValueError naming the file if it cannot be read.

    16-bit grayscale ("I;16", "I") is scaled to 8 bits by its full range (not clipped, which
    would turn most 16-bit photos white); RGBA/LA are composited on white, not on black,
    so transparent backgrounds do not become black plates. An EXIF orientation is applied
    (module docstring).
    """
    path = _readable_kind(path)
    try:
        with Image.open(path) as im:
            _say_if_huge(path, im)
            return upright_rgb(im)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as e:
        raise ValueError(f"{path}: not a readable image ({e})") from None


# Photos are read for prediction with their long side at most this many pixels: the model never
# reads a photo at more than zoom_scan x max_size (1,792 px for the bundle), and a 12000 x 12000
# photo read whole took 6.3 GB. Boxes are mapped back to the photo's own pixels.
READ_SIDE_LIMIT = 6000


def load_rgb_within(path: str | Path, max_side: int = READ_SIDE_LIMIT) -> tuple[Image.Image, tuple[float, float]]:
    """:func:`load_rgb`, its long side reduced to at most ``max_side`` px (a JPEG is decoded
    reduced, so its full size never sits in memory); returns (image, (sx, sy)): multiply x, y in
    the image by these to get pixels of the photo."""
    path = _readable_kind(path)
    try:
        with Image.open(path) as im:
            _say_if_huge(path, im)
            turned, quarter = _orientation(im) != 1, _quarter_turned(im)
            w, h = im.size
            if max(w, h) > max_side:
                f = max_side / max(w, h)
                im.draft("RGB", (max(1, round(w * f)), max(1, round(h * f))))  # JPEG: decode at 1/2, 1/4, 1/8
            im.load()
            im = _to_rgb(ImageOps.exif_transpose(im) if turned else im)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as e:
        raise ValueError(f"{path}: not a readable image ({e})") from None
    full = (h, w) if quarter else (w, h)  # the photo's upright size
    if max(im.size) > max_side:
        f = max_side / max(im.size)
        im = im.resize((max(1, round(im.size[0] * f)), max(1, round(im.size[1] * f))), Image.Resampling.BOX)
    return im, (full[0] / im.size[0], full[1] / im.size[1])


def _say_if_huge(path: Path, im: Image.Image) -> None:
    """Warn, naming the file, of a photo larger than Pillow's decompression-bomb limit (read anyway)."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit and im.size[0] * im.size[1] > limit:
        log.warning("%s: a very large photo (%d x %d px, over Pillow's %d-pixel limit); read anyway",
                    path, im.size[0], im.size[1], limit)


def upright_rgb(im: Image.Image) -> Image.Image:
    """An opened image (a file's, or one in memory) as 8-bit RGB, its EXIF orientation applied,
    as :func:`load_rgb` reads files."""
    turned = _orientation(im) != 1  # as image_size sees it
    im.load()
    return _to_rgb(ImageOps.exif_transpose(im) if turned else im)


def _readable_kind(path: str | Path) -> Path:
    """``path`` as a Path; ValueError naming it when it is a HEIC photo and pillow-heif is missing."""
    path = Path(path)
    if path.suffix.lower() in HEIF_SUFFIXES and not HEIF:
        raise ValueError(f"{path}: a HEIC/HEIF photo; to read it install the heif extra "
                         "(pip install 'digitdet[heif]', which adds pillow-heif) or convert it to JPEG")
    return path


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode == "RGB":
        return im.copy()
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
        return Image.fromarray(a.round().astype(np.uint8)).convert("RGB")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) from the file header, without decoding pixels; upright, as
    :func:`load_rgb` returns the photo (its EXIF orientation applied)."""
    path = _readable_kind(path)
    try:
        with Image.open(path) as im:
            w, h = im.size
            return (h, w) if _quarter_turned(im) else (w, h)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise ValueError(f"{path}: not a readable image ({e})") from None


def decoded_size(path: str | Path) -> tuple[int, int]:
    """:func:`image_size`, after decoding every pixel: a truncated or corrupt file is found here
    (ValueError naming it), not when a training worker first reads it."""
    path = _readable_kind(path)
    try:
        with Image.open(path) as im:
            _say_if_huge(path, im)
            w, h = im.size
            turned = _quarter_turned(im)
            im.load()
            return (h, w) if turned else (w, h)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as e:
        raise ValueError(f"{path}: not a readable image ({e})") from None


def verified_sizes(paths: list[Path], what: str, progress: bool | None = None) -> list[tuple[int, int]]:
    """:func:`decoded_size` of every path, on every core (about 3,600 SVHN-size photos/s on 2),
    with a progress bar on a terminal; every unreadable photo is listed in one ValueError."""
    def one(p):
        try:
            return decoded_size(p)
        except (ValueError, FileNotFoundError) as e:
            return str(e)

    with ThreadPoolExecutor(max(os.cpu_count() or 1, 1)) as pool:
        out = list(tqdm(pool.map(one, paths, chunksize=64), total=len(paths), desc=f"checking {what}",
                        disable=None if progress is None else not progress, leave=False, dynamic_ncols=True))
    bad = [o for o in out if isinstance(o, str)]
    if bad:
        shown = "; ".join(bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise ValueError(f"{what}: {len(bad)} of {len(paths)} photos cannot be read: {shown}")
    return out


def _orientation(im: Image.Image) -> int:
    """An opened (not yet loaded) file's EXIF orientation, 1 = as stored. A PNG's is read only
    from an eXIf chunk before its pixels (where Pillow writes it): ``getexif`` would decode the
    whole picture to look behind them, and reading sizes must not cost a decode."""
    if im.format == "PNG":
        raw = im.info.get("exif")
        if not raw:
            return 1
        exif = Image.Exif()
        exif.load(raw)
        return exif.get(EXIF_ORIENTATION, 1)
    return im.getexif().get(EXIF_ORIENTATION, 1)


def _quarter_turned(im: Image.Image) -> bool:
    return _orientation(im) in (5, 6, 7, 8)


def exif_quarter_turned(path: str | Path) -> bool:
    """Whether the file's EXIF orientation turns the photo a quarter (its stored width is its upright height)."""
    with Image.open(path) as im:
        return _quarter_turned(im)


def image_ids(filenames: list[str], strict: bool = False) -> dict[str, int]:
    """Map file names (or paths) to image ids, one per name.

    A file whose stem is an integer (SVHN's ``17.png``) keeps that integer as its id, the
    dataset's own numbering and the test set's rule; other names get ids after the largest
    integer stem, in sorted order, so ids never collide. When two integer stems share an id
    ("007.png" and "7.png"), ``strict`` raises ValueError naming both; otherwise every file
    is numbered in sorted order instead (converters must not fail on such a folder).
    """
    ids: dict[str, int] = {}
    owner: dict[int, str] = {}  # id -> the first name that claimed it
    others = []
    for name in filenames:
        stem = Path(name).stem
        if not stem.isdigit():
            others.append(name)
            continue
        image_id = int(stem)
        if image_id in owner and strict:
            raise ValueError(f"{name}: image id {image_id} also used by {Path(owner[image_id]).name}")
        owner.setdefault(image_id, name)
        ids[name] = image_id
    if len(owner) != len(ids):
        ids, others = {}, list(filenames)
    next_id = max(ids.values(), default=0) + 1
    for offset, name in enumerate(sorted(others)):
        ids[name] = next_id + offset
    return ids


def list_images(folder: str | Path) -> list[tuple[int, Path]]:
    """Images of an unannotated folder (or one image file) as (image_id, path), sorted by id.

    The image id is the integer of the file stem (``17.png`` -> 17), as the assignment's
    test set defines it; files with other names (``house.jpg``) are numbered after the
    largest such id in name order (:func:`image_ids`), so any folder of photos can be read
    (one file so named is image 1). Two files with one id ("7.png", "7.jpg") are a ValueError.
    """
    folder = Path(folder)
    if folder.is_file():
        if folder.suffix.lower() not in IMAGE_SUFFIXES:
            raise ValueError(f"{folder}: not an image ({', '.join(IMAGE_SUFFIXES)}) nor a folder of images")
        return [(image_ids([str(folder)])[str(folder)], folder)]
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder}: no such folder of images (or image file)")
    entries = sorted(folder.iterdir())
    paths = [p for p in entries if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    _say_what_is_left_out(folder, [p for p in entries if p not in paths and not p.name.startswith(".")])
    if not paths:
        raise ValueError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    ids = image_ids([str(p) for p in paths], strict=True)
    return sorted((ids[str(p)], p) for p in paths)


def _say_what_is_left_out(folder: Path, others: list[Path]) -> None:
    """Warn, by name, of the files and subfolders of ``folder`` that are not read as photos."""
    subfolders = [p.name for p in others if p.is_dir()]
    files = [p.name for p in others if not p.is_dir()]
    if subfolders:
        log.warning("%s: %d subfolder(s) not read (%s): photos are read from the folder itself only",
                    folder, len(subfolders), ", ".join(subfolders[:5]) + (" ..." if len(subfolders) > 5 else ""))
    if files:
        log.warning("%s: %d file(s) left out, not photos by their suffix (%s)", folder, len(files),
                    ", ".join(files[:5]) + (" ..." if len(files) > 5 else ""))


def readable_sizes(items: list[tuple[int, Path]]) -> dict[int, tuple[int, int]]:
    """``{image_id: (width, height)}`` from the headers of the readable photos of ``items``
    ((image_id, path) as :func:`list_images` gives them); unreadable ones are left out, to be
    named when they are read."""
    sizes = {}
    for image_id, path in items:
        try:
            sizes[image_id] = image_size(path)
        except ValueError:
            pass
    return sizes


def folder_sizes(folder: str | Path) -> dict[int, tuple[int, int]]:
    """``{image_id: (width, height)}`` of every image of a folder (or one image file, as
    :func:`list_images` numbers them), read from the file headers; an unreadable image is a
    ValueError naming it."""
    return {image_id: image_size(path) for image_id, path in list_images(folder)}


def renamed_images(items: list[tuple[int, Path]]) -> dict[int, str]:
    """``{image_id: file name}`` for a folder's images (``items`` as :func:`list_images` gives them)
    when their names are not all ``<image_id>.<ext>``, so a pred.csv of such a folder can be
    traced back to its photos; ``{}`` when every name is its id."""
    if all(p.stem == str(i) for i, p in items):
        return {}
    return {i: p.name for i, p in items}
