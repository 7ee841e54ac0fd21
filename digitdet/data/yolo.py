"""COCO digit dict <-> YOLO txt labels, both ways.

YOLO (darknet / ultralytics) format: one ``<image stem>.txt`` per image, one line per box::

    class cx cy w h

``class`` is the digit 0..9 itself (YOLO classes start at 0 and have no background, so
digit == class; the mapping to COCO category_id goes through ``labels.py``). ``cx cy w h``
is the box centre and size divided by the image width/height (normalised xywh-centre,
0..1). An image with no digits has an empty file. ``data.yaml`` and ``classes.txt`` name
the classes "0".."9".

Values are written with 10 significant digits, so COCO -> YOLO -> COCO returns the same
boxes up to float rounding (~1e-6 px for images under 10,000 px).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from digitdet.data.coco import load_coco_digits
from digitdet.data.cocobuild import annotation, coco_dict, image_files
from digitdet.data.images import image_ids, image_size
from digitdet.labels import NUM_DIGITS, category_to_digit, digit_to_category

CLASS_NAMES = [str(d) for d in range(NUM_DIGITS)]


def coco_to_yolo(coco_json, images_dir, out_dir) -> dict:
    """Write YOLO labels for a COCO digit file.

    ``coco_json`` is a path (read and validated by ``data.coco.load_coco_digits``) or a
    loaded COCO dict (bbox xywh in pixels of each image).
    Each image's size is read from ``images_dir`` with Pillow and must match the COCO
    ``width``/``height`` (a mismatch means the wrong folder: ValueError naming the file).
    Images absent from ``images_dir`` are skipped and counted. Writes ``out_dir/<stem>.txt``
    for every present image, ``out_dir/classes.txt`` and ``out_dir/data.yaml``.

    Returns a report: ``images``, ``boxes``, ``skipped_missing_images``,
    ``missing_examples`` (up to 5), ``out_dir``.
    """
    images_dir, out_dir = Path(images_dir), Path(out_dir)
    if not images_dir.is_dir():
        raise NotADirectoryError(f"{images_dir}: image folder not found")
    if isinstance(coco_json, dict):
        coco, source = coco_json, "COCO dict"
    else:
        # Validated, boxes clipped to their image; missing images are skipped below instead.
        coco, _ = load_coco_digits(coco_json, images_dir, check_images=False)
        source = str(coco_json)
    by_image: dict = {img["id"]: [] for img in coco["images"]}
    for ann in coco["annotations"]:
        if ann["image_id"] not in by_image:
            raise ValueError(f"{source}: annotation {ann.get('id')} refers to unknown "
                             f"image_id {ann['image_id']}")
        by_image[ann["image_id"]].append(ann)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {"images": 0, "boxes": 0, "skipped_missing_images": 0, "missing_examples": [],
              "out_dir": str(out_dir)}
    for img in coco["images"]:
        path = images_dir / img["file_name"]
        if not path.is_file():
            report["skipped_missing_images"] += 1
            report["missing_examples"] = (report["missing_examples"] + [img["file_name"]])[:5]
            continue
        size = image_size(path)
        if size != (img["width"], img["height"]):
            raise ValueError(f"{path}: image is {size[0]}x{size[1]} but {source} says "
                             f"{img['width']}x{img['height']}; wrong --images folder?")
        lines = [_yolo_line(ann, *size) for ann in by_image[img["id"]]]
        (out_dir / f"{Path(img['file_name']).stem}.txt").write_text("".join(lines))
        report["images"] += 1
        report["boxes"] += len(lines)
    _write_class_files(out_dir, images_dir)
    return report


def _yolo_line(ann: dict, width: int, height: int) -> str:
    """COCO annotation (xywh px) -> ``"digit cx cy w h\\n"`` normalised by the image size."""
    x, y, w, h = (float(v) for v in ann["bbox"])
    digit = category_to_digit(ann["category_id"])
    values = ((x + w / 2) / width, (y + h / 2) / height, w / width, h / height)
    return f"{digit} " + " ".join(f"{v:.10g}" for v in values) + "\n"


def _write_class_files(out_dir: Path, images_dir: Path) -> None:
    """``classes.txt`` (one name a line) and a ``data.yaml`` naming the classes "0".."9"."""
    (out_dir / "classes.txt").write_text("\n".join(CLASS_NAMES) + "\n")
    data = {"images": str(images_dir.resolve()), "labels": str(out_dir.resolve()),
            "nc": NUM_DIGITS, "names": {i: name for i, name in enumerate(CLASS_NAMES)}}
    header = "# digitdet YOLO labels: class = digit 0..9; boxes 'class cx cy w h' normalised\n"
    (out_dir / "data.yaml").write_text(header + yaml.safe_dump(data, sort_keys=False))


def yolo_to_coco(labels_dir, images_dir) -> dict:
    """Read YOLO labels back into a COCO digit dict.

    Every image in ``images_dir`` becomes a COCO image (size read with Pillow); its boxes
    come from ``labels_dir/<stem>.txt`` (no file = no digits, the YOLO convention). Boxes
    are converted to COCO xywh in pixels of that image; class 0..9 -> category_id through
    ``labels.py``. Image ids: integer stems kept (``data.images.image_ids``).

    Raises ValueError naming the file and line for a malformed line, a class outside
    0..9 or a value outside [0, 1]; and when no label file matches any image (wrong
    folder) or a label file has no image.
    """
    labels_dir = Path(labels_dir)
    if not labels_dir.is_dir():
        raise NotADirectoryError(f"{labels_dir}: label folder not found")
    paths = image_files(images_dir)
    label_files = {p.stem: p for p in labels_dir.glob("*.txt") if p.name != "classes.txt"}
    stems = {p.stem for p in paths}
    orphans = sorted(set(label_files) - stems)
    if orphans:
        raise ValueError(f"{labels_dir}: label files without an image in {images_dir}: "
                         f"{[label_files[s].name for s in orphans[:5]]}")
    if paths and label_files and not stems & set(label_files):
        raise ValueError(f"{labels_dir}: no label file matches an image in {images_dir}")
    ids = image_ids([p.name for p in paths])
    images, annotations = [], []
    for path in paths:
        width, height = image_size(path)
        images.append({"id": ids[path.name], "file_name": path.name, "width": width, "height": height})
        if path.stem not in label_files:
            continue
        for digit, xywh in _read_label_file(label_files[path.stem], width, height):
            annotations.append(annotation(len(annotations) + 1, ids[path.name],
                                          digit_to_category(digit), xywh))
    return coco_dict(images, annotations, description=f"converted from YOLO labels in {labels_dir}")


def _read_label_file(path: Path, width: int, height: int) -> list[tuple[int, list[float]]]:
    """(digit, [x, y, w, h] px) for each line of one YOLO label file."""
    out = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            if len(parts) != 5:
                raise ValueError(f"expected 'class cx cy w h', got {len(parts)} fields")
            cls, values = float(parts[0]), np.array([float(v) for v in parts[1:]])
            if cls != int(cls) or not 0 <= cls < NUM_DIGITS:
                raise ValueError(f"class must be a digit 0..9, got {parts[0]}")
            if (values < 0).any() or (values > 1).any():
                raise ValueError(f"values must be normalised to [0, 1], got {parts[1:]}")
        except ValueError as e:
            raise ValueError(f"{path}:{n}: {e}") from e
        cx, cy, w, h = values * [width, height, width, height]
        out.append((int(cls), [cx - w / 2, cy - h / 2, w, h]))
    return out
