"""Box formats and geometry: pure functions over numpy arrays or lists.

Formats: ``xyxy`` = [x1, y1, x2, y2] (torchvision's), ``xywh`` = [x, y, w, h] (COCO's),
both in pixels of the image they belong to (origin top-left, x right, y down).
"""
from __future__ import annotations

import numpy as np


def xywh_to_xyxy(boxes) -> np.ndarray:
    """(N, 4) COCO [x, y, w, h] -> (N, 4) [x1, y1, x2, y2], float64."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    b[:, 2] += b[:, 0]
    b[:, 3] += b[:, 1]
    return b


def xyxy_to_xywh(boxes) -> np.ndarray:
    """(N, 4) [x1, y1, x2, y2] -> (N, 4) COCO [x, y, w, h], float64."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    b[:, 2] -= b[:, 0]
    b[:, 3] -= b[:, 1]
    return b


def clip_xyxy(boxes, width: float, height: float) -> np.ndarray:
    """Clip (N, 4) xyxy boxes to the image [0, width] x [0, height]."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    b[:, [0, 2]] = b[:, [0, 2]].clip(0, width)
    b[:, [1, 3]] = b[:, [1, 3]].clip(0, height)
    return b


def area_xyxy(boxes) -> np.ndarray:
    """(N,) areas of xyxy boxes; boxes with x2 < x1 or y2 < y1 have area 0."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)


def iou_xyxy(a, b) -> np.ndarray:
    """(N, M) intersection-over-union of xyxy boxes ``a`` (N, 4) and ``b`` (M, 4)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clip(0).prod(axis=2)
    union = area_xyxy(a)[:, None] + area_xyxy(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def scale_xyxy(boxes, sx: float, sy: float) -> np.ndarray:
    """Scale xyxy boxes from one image size to another (sx = new_w / old_w, sy likewise)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    b[:, [0, 2]] *= sx
    b[:, [1, 3]] *= sy
    return b


def pad_xyxy(boxes, pad: float) -> np.ndarray:
    """Grow xyxy boxes by ``pad`` x their height on every side, never past the image's top-left
    corner. Real SVHN annotators drew boxes about 0.06-0.08 of the digit height loose a side;
    a detector trained on tight boxes matches their style with pad ~0.07 (``pred_box_pad``)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    if pad:
        grow = pad * (b[:, 3] - b[:, 1]).clip(0)
        b += np.stack([-grow, -grow, grow, grow], axis=1)
        b[:, :2] = b[:, :2].clip(0)
    return b


def same_height_xyxy(boxes, scores, score_thresh: float, band: tuple[float, float] = (0.6, 1.6)) -> np.ndarray:
    """One image's xyxy boxes given one height, as real SVHN's annotators drew them (all digit
    boxes of a photo share one height in 10,581 of the test set's 10,585 photos with 2 or more
    digits). The height is the median of the boxes scoring >= ``score_thresh`` (the digits read);
    every box within ``band`` x that height takes it, centred where it was. Unchanged when no
    box scores that high."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    h = b[:, 3] - b[:, 1]
    read = h[np.asarray(scores).reshape(-1) >= score_thresh]
    if len(read):
        height = float(np.median(read))
        sel = (h >= band[0] * height) & (h <= band[1] * height)
        centre = (b[sel, 1] + b[sel, 3]) / 2
        b[sel, 1], b[sel, 3] = centre - height / 2, centre + height / 2
    return b
