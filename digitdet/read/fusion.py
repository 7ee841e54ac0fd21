"""Boxes of several members (models, or views of one photo) fused per image with ensemble-boxes.

``dets`` dicts map ``image_id -> (boxes xyxy (N, 4) in pixels of that image, labels int64
(N,) 1..10, scores (N,))``; boxes are normalised by the image's size for ensemble-boxes and
mapped back.
"""
from __future__ import annotations

import numpy as np
from ensemble_boxes import nms, non_maximum_weighted, soft_nms, weighted_boxes_fusion

from digitdet.read.decode import empty_detections

METHODS = ("wbf", "nms", "soft_nms", "nmw")


CONF_TYPES = ("avg", "max", "box_and_model_avg", "absent_model_aware_avg")


def check_weights(weights, n_members: int) -> np.ndarray:
    """(n_members,) float weights; None -> all 1. ValueError when the count or a sign is wrong."""
    if weights is None:
        return np.ones(n_members)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if len(w) != n_members:
        raise ValueError(f"got {len(w)} weights for {n_members} ensemble members; give one weight per member")
    if not np.all(np.isfinite(w)) or np.any(w <= 0):
        raise ValueError(f"ensemble weights must be positive numbers, got {w.tolist()}")
    return w


def _normalised(det, size) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One member's image detections -> boxes in [0, 1] (clipped, zero-area dropped), labels, scores.

    Clipping and dropping here keep ensemble-boxes from printing warnings (a library does not print).
    """
    w, h = (float(v) for v in size)
    if w <= 0 or h <= 0:
        raise ValueError(f"image size must be positive (width, height), got {size}")
    boxes = np.asarray(det[0], dtype=np.float64).reshape(-1, 4) / [w, h, w, h]
    labels = np.asarray(det[1], dtype=np.int64).reshape(-1)
    scores = np.asarray(det[2], dtype=np.float64).reshape(-1)
    if not len(boxes) == len(labels) == len(scores):
        raise ValueError(f"boxes, labels and scores differ in length: {len(boxes)}, {len(labels)}, {len(scores)}")
    boxes = boxes.clip(0.0, 1.0)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return boxes[keep], labels[keep], scores[keep]


def fuse_image(member_dets: list, size, weights=None, method: str = "wbf", iou: float = 0.55,
               skip_box_thr: float = 0.0, conf_type: str = "avg") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fuse one image's detections from several members.

    Args:
        member_dets: one ``(boxes xyxy (N, 4) px, labels (N,) 1..10, scores (N,))`` per member.
        size: ``(width, height)`` of the original image in pixels (boxes are normalised by it).
        weights: one positive weight per member (None: equal).
        method: one of :data:`METHODS`; ``iou`` is its matching / suppression IoU.
        skip_box_thr: member boxes scoring below this are ignored.
        conf_type: WBF's fused-score rule (:data:`CONF_TYPES`); ``"avg"`` scales a box's mean
            score by the share of the total weight that found it.

    Returns:
        ``(boxes xyxy float64 (M, 4) in pixels of the image, labels int64 (M,), scores float64 (M,))``,
        highest score first; scores are clipped to [0, 1].
    """
    if method not in METHODS:
        raise ValueError(f"unknown fusion method {method!r}; choose one of {METHODS}")
    if conf_type not in CONF_TYPES:
        raise ValueError(f"unknown conf_type {conf_type!r}; choose one of {CONF_TYPES}")
    w = check_weights(weights, len(member_dets))
    parts = [_normalised(d, size) for d in member_dets]
    parts = [(b[s >= skip_box_thr], l[s >= skip_box_thr], s[s >= skip_box_thr]) for b, l, s in parts]
    if sum(len(p[0]) for p in parts) == 0:
        return empty_detections()
    boxes_list = [p[0].tolist() for p in parts]
    labels_list = [p[1].tolist() for p in parts]
    scores_list = [p[2].tolist() for p in parts]
    # NMS-style methods divide every score by sum(weights) when weights are given; with equal
    # weights that only shrinks scores, so pass None then and keep the members' scores.
    nms_w = None if np.all(w == w[0]) else w.tolist()
    if method == "wbf":
        b, s, l = weighted_boxes_fusion(boxes_list, scores_list, labels_list, weights=w.tolist(), iou_thr=iou,
                                        skip_box_thr=skip_box_thr, conf_type=conf_type)
    elif method == "nmw":
        b, s, l = non_maximum_weighted(boxes_list, scores_list, labels_list, weights=w.tolist(), iou_thr=iou,
                                       skip_box_thr=skip_box_thr)
    else:
        fn = nms if method == "nms" else soft_nms
        b, s, l = fn([np.asarray(x).reshape(-1, 4) for x in boxes_list], [np.asarray(x) for x in scores_list],
                     [np.asarray(x) for x in labels_list], iou_thr=iou, weights=nms_w)
    wh = np.asarray(size, dtype=np.float64)
    boxes = np.asarray(b, dtype=np.float64).reshape(-1, 4) * np.concatenate([wh, wh])
    scores = np.asarray(s, dtype=np.float64).reshape(-1).clip(0.0, 1.0)
    order = np.argsort(-scores, kind="stable")
    return boxes[order], np.asarray(l).reshape(-1).round().astype(np.int64)[order], scores[order]


def fuse_detections(members: list[dict], sizes: dict, weights=None, method: str = "wbf", iou: float = 0.55,
                    skip_box_thr: float = 0.0, conf_type: str = "avg") -> dict:
    """Fuse whole prediction sets: ``members`` is a list of ``dets`` dicts (see module docstring).

    ``sizes``: ``{image_id: (width, height)}`` of the original images; every image that any
    member has detections for must be in it (ValueError otherwise). Returns ``dets`` for
    every image of ``sizes`` (empty arrays where nothing survives); see :func:`fuse_image`.
    """
    if not members:
        raise ValueError("fuse_detections needs at least one member")
    w = check_weights(weights, len(members))
    unknown = sorted(set().union(*members) - set(sizes))
    if unknown:
        raise ValueError(f"{len(unknown)} image id(s) with detections have no image size (first: {unknown[:5]}); "
                         f"are the prediction files for this image folder?")
    out = {}
    for image_id, size in sizes.items():
        per_member = [m.get(image_id, empty_detections()) for m in members]
        out[image_id] = fuse_image(per_member, size, w, method, iou, skip_box_thr, conf_type)
    return out
