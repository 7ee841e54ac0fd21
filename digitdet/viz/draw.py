"""Pictures: boxes drawn on images, grids of images, matplotlib figures written atomically.

Two families, kept generic so new plots (training curves, PR curves, confusion matrices)
reuse them:

* Pillow drawings (:func:`draw_boxes`, :func:`image_grid`, :func:`dataset_grid`) take and
  return ``PIL.Image`` in RGB; save them with :func:`save_png_atomic`.
* matplotlib figures come from :func:`new_figure` (a bare ``Figure`` on the Agg canvas, no
  pyplot global state, so it is safe in threads and on machines with no display) and are
  written with :func:`save_figure_atomic`.

Both writers go through ``io.atomic_write_bytes`` (temporary file + ``os.replace``), so a
reader never sees half a PNG.
Boxes are ``xyxy`` in pixels of the image they are drawn on; labels are digits 0..9 (not
COCO category ids: convert with ``labels.category_to_digit`` first).
"""
from __future__ import annotations

import io
import math
import random
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont

from digitdet.boxes import xywh_to_xyxy
from digitdet.data.cocobuild import image_files
from digitdet.data.images import load_rgb
from digitdet.io import atomic_write_bytes
from digitdet.labels import category_to_digit

# matplotlib's tab10 with its grey (invisible on grey walls) swapped for navy: one colour
# per digit, distinct and readable on photos.
DIGIT_COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
                (140, 86, 75), (227, 119, 194), (0, 0, 128), (188, 189, 34), (23, 190, 207)]


def _font(size: int) -> ImageFont.ImageFont:
    """Pillow's bundled font at ``size`` px (needs FreeType; falls back to the bitmap font)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def display_factor(size: tuple[int, int], min_side: int) -> int:
    """Integer upscale so the short side of ``size`` (w, h) reaches ``min_side`` (>= 1)."""
    return max(1, -(-min_side // max(1, min(size))))


def _label_text(digit: int, score) -> str:
    return str(digit) if score is None else f"{digit} {float(score):.2f}"


def draw_boxes(image: Image.Image, boxes_xyxy, labels_digits, scores=None, color=None,
               number_text: str | None = None, min_side: int = 256) -> Image.Image:
    """Draw digit boxes with their labels (and scores) on a copy of ``image``.

    ``boxes_xyxy``: (N, 4) in pixels of ``image``; ``labels_digits``: N digits 0..9;
    ``scores``: N floats or None. ``color``: one colour for every box (name or RGB), or
    None for one colour per digit (:data:`DIGIT_COLORS`). ``number_text`` (e.g. the number
    read, "gt 478 / pred 471") is written on a black strip added below the picture.

    SVHN photos are often 40-100 px high, too small to read a label on, so the picture is
    upscaled by an integer factor until its short side is at least ``min_side`` px; the
    returned image is ``factor`` times the input size (boxes are scaled with it), plus the
    caption strip when ``number_text`` is given, so box pixels are ``factor * xyxy``. Raises
    ValueError when lengths differ or a label is not a digit.
    """
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    labels = [int(d) for d in labels_digits]
    if len(labels) != len(boxes) or (scores is not None and len(scores) != len(boxes)):
        raise ValueError(f"draw_boxes: {len(boxes)} boxes but {len(labels)} labels"
                         + ("" if scores is None else f" and {len(scores)} scores"))
    if any(not 0 <= d <= 9 for d in labels):
        raise ValueError(f"draw_boxes: labels must be digits 0..9, got {labels}")
    factor = display_factor(image.size, min_side)
    canvas = image.convert("RGB").resize((image.width * factor, image.height * factor), Image.BICUBIC)
    draw = ImageDraw.Draw(canvas)
    font = _font(max(12, min(canvas.size) // 12))
    line = max(2, min(canvas.size) // 120)
    for i, (box, digit) in enumerate(zip(boxes * factor, labels)):
        fill = DIGIT_COLORS[digit] if color is None else color
        draw.rectangle(box.tolist(), outline=fill, width=line)
        text = _label_text(digit, None if scores is None else scores[i])
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        # Above the box when there is room, else inside its top edge.
        y = box[1] - (bottom - top) - 2 * line if box[1] >= (bottom - top) + 2 * line else box[1]
        draw.rectangle([box[0], y, box[0] + right + 2 * line, y + bottom + line], fill=fill)
        draw.text((box[0] + line, y), text, fill="white", font=font)
    if number_text:
        canvas = _add_caption(canvas, number_text, font, pad=line)
    return canvas


def _add_caption(image: Image.Image, text: str, font, pad: int) -> Image.Image:
    """``image`` with a black strip below it holding ``text`` (never hides a box label)."""
    left, top, right, bottom = ImageDraw.Draw(image).textbbox((0, 0), text, font=font)
    out = Image.new("RGB", (image.width, image.height + bottom + 2 * pad), (0, 0, 0))
    out.paste(image, (0, 0))
    ImageDraw.Draw(out).text((pad, image.height + pad), text, fill="white", font=font)
    return out


def image_grid(images: list[Image.Image], cols: int, cell_size=256,
               background=(24, 24, 24)) -> Image.Image:
    """Tile ``images`` row by row into one RGB picture, ``cols`` per row.

    ``cell_size`` is an int (square cells) or (width, height); each image is scaled to fit
    its cell keeping its aspect ratio and centred. Raises ValueError for no images or
    ``cols`` < 1.
    """
    if not images:
        raise ValueError("image_grid: no images to tile")
    if cols < 1:
        raise ValueError(f"image_grid: cols must be >= 1, got {cols}")
    cw, ch = (cell_size, cell_size) if isinstance(cell_size, int) else tuple(cell_size)
    cols = min(cols, len(images))
    rows = -(-len(images) // cols)
    grid = Image.new("RGB", (cols * cw, rows * ch), background)
    for i, im in enumerate(images):
        s = min(cw / im.width, ch / im.height)
        fitted = im.convert("RGB").resize((max(1, round(im.width * s)), max(1, round(im.height * s))),
                                          Image.BICUBIC)
        x = (i % cols) * cw + (cw - fitted.width) // 2
        y = (i // cols) * ch + (ch - fitted.height) // 2
        grid.paste(fitted, (x, y))
    return grid


def dataset_grid(coco: dict | None, images_dir, n: int = 36, seed: int = 0,
                 cell_size: int = 256) -> Image.Image:
    """A grid of ``n`` random images of a dataset (fixed ``seed``) with their true boxes.

    ``coco``: a COCO digit dict (bbox xywh in pixels of each image) or None to show the
    images of ``images_dir`` without boxes (a test split). Each image's caption shows its file name and the
    number read left to right (boxes sorted by centre x, SVHN's convention).
    """
    images_dir = Path(images_dir)
    if coco is None:
        records = [{"id": i, "file_name": p.name} for i, p in enumerate(image_files(images_dir))]
    else:
        records = list(coco["images"])
    if not records:
        raise ValueError(f"{images_dir}: no images to show")
    chosen = random.Random(seed).sample(records, min(n, len(records)))
    by_image: dict = {}
    for ann in [] if coco is None else coco["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    pictures = []
    for rec in chosen:
        path = images_dir / rec["file_name"]
        if not path.is_file():
            raise FileNotFoundError(f"{path}: image listed in the annotations is missing")
        anns = sorted(by_image.get(rec["id"], []), key=lambda a: a["bbox"][0] + a["bbox"][2] / 2)
        digits = [category_to_digit(a["category_id"]) for a in anns]
        pictures.append(draw_boxes(load_rgb(path), xywh_to_xyxy([a["bbox"] for a in anns]), digits,
                                   number_text=f"{rec['file_name']}: {''.join(map(str, digits))}"))
    return image_grid(pictures, cols=math.ceil(len(pictures) ** 0.5), cell_size=cell_size)


def save_png_atomic(image: Image.Image, path) -> None:
    """Write ``image`` as PNG to ``path`` atomically (``io.atomic_write_bytes``)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def new_figure(figsize=(8, 6), dpi: int = 100) -> Figure:
    """A matplotlib Figure on the Agg canvas, independent of pyplot (no display needed)."""
    return Figure(figsize=figsize, dpi=dpi, layout="constrained")


def save_figure_atomic(fig: Figure, path, fmt: str = "png") -> None:
    """Write a matplotlib figure to ``path`` atomically (``io.atomic_write_bytes``)."""
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt)
    atomic_write_bytes(path, buf.getvalue())
