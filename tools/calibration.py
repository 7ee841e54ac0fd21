"""Statistics of digit boxes, the same for real SVHN and synthetic data, to calibrate the renderer.

An *image* here is a list of ``(digit, [x1, y1, x2, y2])`` in pixels, left to right. Real
boxes come from an SVHN ``digitStruct.json``-style list (``load_svhn_boxes``), synthetic ones
from our COCO files (``load_coco_boxes``) or straight from ``render_sample``.

Only boxes are compared, never image sizes (the real file has none). Relative measures
divide by the image's mean digit height so they do not depend on resolution.
"""
from __future__ import annotations

import json
from collections import defaultdict

import numpy as np

from digitdet.boxes import xywh_to_xyxy
from digitdet.data.svhn import read_svhn_json
from digitdet.labels import category_to_digit, svhn_label_to_digit

PERCENTILES = (1, 10, 50, 90, 99)
# name -> (what it measures, unit) for tables and figures
MEASURES = {
    "height": ("digit box height", "px"),
    "hw": ("digit box height / width", ""),
    "hw_not1": ("height / width, digits other than 1", ""),
    "gap": ("gap to the next box / mean height", "h"),
    "dy": ("centre offset to the next box / mean height", "h"),
    "slant": ("slope of the line through centres", "deg"),
    "left": ("leftmost box x1 / mean height", "h"),
    "top": ("topmost box y1 / mean height", "h"),
    "right_px": ("rightmost box x2", "px"),
    "bottom_px": ("lowest box y2", "px"),
}


def load_svhn_boxes(path) -> list[list[tuple[int, list[float]]]]:
    """Images of a list like ``svhn_test_boxes.json`` (read by :func:`digitdet.data.svhn.read_svhn_json`,
    which raises ValueError on a malformed entry) as [(digit, [x1, y1, x2, y2]), ...], left to right."""
    images = []
    for rec in read_svhn_json(path):
        boxes = [(svhn_label_to_digit(b["label"]), [b["left"], b["top"], b["left"] + b["width"], b["top"] + b["height"]])
                 for b in rec["boxes"]]
        images.append(sorted(boxes, key=lambda b: b[1][0] + b[1][2]))
    return images


def load_coco_boxes(path) -> list[list[tuple[int, list[float]]]]:
    """Images of a COCO digit file (bbox [x, y, w, h], category_id 1..10), in image-id order."""
    with open(path) as f:
        coco = json.load(f)
    by_image = defaultdict(list)
    for ann in coco["annotations"]:
        by_image[ann["image_id"]].append((category_to_digit(ann["category_id"]),
                                          xywh_to_xyxy(ann["bbox"])[0].tolist()))
    return [sorted(by_image[img["id"]], key=lambda b: b[1][0] + b[1][2])
            for img in sorted(coco["images"], key=lambda im: im["id"])]


def _slant(boxes: np.ndarray) -> float | None:
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    if len(boxes) < 2 or np.ptp(cx) <= 0:
        return None
    return float(np.degrees(np.arctan(np.polyfit(cx, cy, 1)[0])))


def box_statistics(images) -> dict[str, np.ndarray]:
    """Every measure in MEASURES as a flat array, plus ``count`` (digits per image).

    Images without boxes are counted (count 0) and otherwise skipped.
    """
    out = defaultdict(list)
    for image in images:
        out["count"].append(len(image))
        if not image:
            continue
        digits = np.array([d for d, _ in image])
        b = np.asarray([box for _, box in image], dtype=np.float64)
        h, w = b[:, 3] - b[:, 1], b[:, 2] - b[:, 0]
        mh = float(h.mean())
        out["height"] += h.tolist()
        ok = w > 0
        out["hw"] += (h[ok] / w[ok]).tolist()
        out["hw_not1"] += (h[ok & (digits != 1)] / w[ok & (digits != 1)]).tolist()
        out["gap"] += ((b[1:, 0] - b[:-1, 2]) / mh).tolist()
        cy = (b[:, 1] + b[:, 3]) / 2
        out["dy"] += (np.diff(cy) / mh).tolist()
        slant = _slant(b)
        if slant is not None:
            out["slant"].append(slant)
        out["left"].append(b[:, 0].min() / mh)
        out["top"].append(b[:, 1].min() / mh)
        out["right_px"].append(b[:, 2].max())
        out["bottom_px"].append(b[:, 3].max())
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


def count_distribution(stats: dict, max_count: int = 5) -> np.ndarray:
    """Fraction of images with 1..max_count digits (index 0 = one digit)."""
    counts = stats["count"].astype(int)
    return np.array([(counts == n).mean() for n in range(1, max_count + 1)])


def percentiles(stats: dict, name: str) -> np.ndarray:
    """PERCENTILES of one measure (NaN when there is no value)."""
    values = stats.get(name, np.zeros(0))
    return np.percentile(values, PERCENTILES) if len(values) else np.full(len(PERCENTILES), np.nan)


def comparison_table(real: dict, synth: dict) -> str:
    """Plain-text table: each measure's percentiles, real above synthetic."""
    head = f"{'measure':<44}{'set':<7}" + "".join(f"{f'p{p}':>9}" for p in PERCENTILES)
    lines = [head, "-" * len(head)]
    real_c, synth_c = count_distribution(real), count_distribution(synth)
    lines.append(f"{'digits per image: share of 1/2/3/4/5':<44}{'real':<7}" + "".join(f"{v:>9.4f}" for v in real_c))
    lines.append(f"{'':<44}{'synth':<7}" + "".join(f"{v:>9.4f}" for v in synth_c))
    for name, (what, unit) in MEASURES.items():
        label = f"{what} [{unit}]" if unit else what
        lines.append(f"{label:<44}{'real':<7}" + "".join(f"{v:>9.2f}" for v in percentiles(real, name)))
        lines.append(f"{'':<44}{'synth':<7}" + "".join(f"{v:>9.2f}" for v in percentiles(synth, name)))
    return "\n".join(lines)
