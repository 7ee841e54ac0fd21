"""Build COCO digit dicts from other annotation formats (SVHN digitStruct, YOLO txt).

Every COCO dict the converters produce has the same shape::

    {"info":        {"description": str},
     "images":      [{"id", "file_name", "width", "height"}],
     "annotations": [{"id", "image_id", "category_id", "bbox": [x, y, w, h], "area", "iscrowd"}],
     "categories":  labels.coco_categories()}

``bbox`` is COCO ``xywh`` in pixels of the image it belongs to; ``category_id`` is 1..10
for the digits 0..9 (``labels.py`` is the only place that mapping lives). Reading and
validating COCO files is ``data/coco.py``'s job; writing them is ``io.write_json``.
"""
from __future__ import annotations

from pathlib import Path

from digitdet.data.images import IMAGE_SUFFIXES
from digitdet.labels import coco_categories


def image_files(images_dir) -> list[Path]:
    """Image files directly in ``images_dir``, sorted by name, whatever their stems."""
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise NotADirectoryError(f"{images_dir}: image folder not found")
    return sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def annotation(ann_id: int, image_id: int, category_id: int, bbox_xywh) -> dict:
    """One COCO annotation; ``bbox_xywh`` is [x, y, w, h] in pixels of the image."""
    x, y, w, h = (float(v) for v in bbox_xywh)
    return {"id": ann_id, "image_id": image_id, "category_id": int(category_id),
            "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0}


def coco_dict(images: list[dict], annotations: list[dict], description: str = "") -> dict:
    """Assemble a digit COCO dict (categories from ``labels.coco_categories()``)."""
    return {"info": {"description": description}, "images": images,
            "annotations": annotations, "categories": coco_categories()}
