"""Where a detector goes wrong: per-digit precision-recall, digit confusions, worst numbers read.

Inputs are the usual contracts: ``dets = {image_id: (boxes xyxy (N, 4) in pixels of the
original image, labels (N,) category ids 1..10, scores (N,))}`` and ``gt``, a COCO digit dict
(``bbox`` xywh in pixels of each image). Pure functions returning arrays and dicts; the
pictures are drawn by :mod:`digitdet.viz.figures` and written by :mod:`digitdet.viz.report`.
"""
from __future__ import annotations

import difflib

import numpy as np
from faster_coco_eval import COCO, COCOeval_faster

from digitdet.boxes import iou_xyxy, xywh_to_xyxy
from digitdet.labels import NUM_DIGITS, category_to_digit
from digitdet.read.decode import decode_number, detections_to_results, empty_detections, gt_sizes, no_start_ids, read_digits
from digitdet.score.metrics import classify_error, evaluable_gt, gt_numbers, quiet

CONFUSION_ROWS = [str(d) for d in range(NUM_DIGITS)] + ["none"]  # true digit; "none": box on no digit
CONFUSION_COLS = [str(d) for d in range(NUM_DIGITS)] + ["missed"]  # digit read; "missed": nothing read there


def pr_curves(dets: dict, gt: dict, iou: float = 0.5) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """COCO's interpolated precision-recall curve of every digit at IoU ``iou`` (0.5, ..., 0.95).

    Computed by faster-coco-eval exactly as COCO AP is (101 recall points, all areas, 100
    detections per image), so the area under a curve is that digit's AP at ``iou``.
    Returns ``{"0": (recall (101,), precision (101,)), ...}``; precision is NaN where COCO
    leaves it undefined (recall never reached, or no GT box of that digit).
    """
    coco_gt = COCO(evaluable_gt(gt), print_function=quiet)
    image_ids = {im["id"] for im in coco_gt.dataset["images"]}
    records = [r for r in detections_to_results(dets, 0.0, 100) if r["image_id"] in image_ids]
    ev = COCOeval_faster(coco_gt, coco_gt.loadRes(records), iouType="bbox", print_function=quiet)
    ev.params.imgIds = sorted(image_ids)
    ev.evaluate()
    ev.accumulate()
    thresholds = np.asarray(ev.params.iouThrs)
    t = int(np.argmin(np.abs(thresholds - iou)))
    if not np.isclose(thresholds[t], iou):
        raise ValueError(f"pr_curves: iou must be one of COCO's thresholds {thresholds.round(2).tolist()}, got {iou}")
    precision = np.asarray(ev.eval["precision"], dtype=np.float64)  # [T, R, K, A, M]
    recall = np.asarray(ev.params.recThrs, dtype=np.float64)
    out = {}
    for k, c in enumerate(ev.params.catIds):
        p = precision[t, :, k, 0, -1].copy()
        p[p < 0] = np.nan
        out[str(category_to_digit(c))] = (recall, p)
    return out


def _gt_by_image(gt: dict) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """``{image_id: (boxes xyxy (N, 4), category ids (N,))}`` for every image of ``gt``."""
    out = {int(im["id"]): ([], []) for im in gt["images"]}
    for a in gt.get("annotations", []):
        out[int(a["image_id"])][0].append(a["bbox"])
        out[int(a["image_id"])][1].append(int(a["category_id"]))
    return {i: (xywh_to_xyxy(b), np.asarray(c, dtype=np.int64)) for i, (b, c) in out.items()}


def read_boxes(det, score_thresh: float, decode_iou: float = 0.5, line_thresh: float = 0.0,
               start: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The boxes :func:`decode_number` reads from one image's detections (score >= threshold,
    class-agnostic duplicates removed, line reading with ``line_thresh`` > 0, its start rule
    with ``start``), highest score first: (boxes xyxy, labels, scores)."""
    return read_digits(*det, score_thresh=score_thresh, iou_thresh=decode_iou, line_thresh=line_thresh,
                       line_start=start)



def confusion_matrix(dets: dict, gt: dict, score_thresh: float = 0.5, iou: float = 0.5,
                     decode_iou: float = 0.5, line_thresh: float = 0.0, line_start_side: int = 0) -> np.ndarray:
    """(11, 11) int counts: rows :data:`CONFUSION_ROWS` (true digit, then "none"), columns
    :data:`CONFUSION_COLS` (digit read, then "missed").

    Per image of ``gt``, the boxes the decoder reads (:func:`read_boxes`) are matched to GT
    boxes greedily, highest score first, each to the unmatched GT box of highest IoU, if
    that IoU >= ``iou`` (class-agnostic: a wrong digit on the right ink is a confusion, not
    a miss). Unmatched reads count in row "none" (phantom digits), unmatched GT boxes in
    column "missed". Written by hand: COCO matching is per class, so it has no confusions.
    ``line_start_side``: as ``Config.decoder()``'s, with the photo sizes ``gt`` states.
    """
    m = np.zeros((NUM_DIGITS + 1, NUM_DIGITS + 1), dtype=np.int64)
    no_start = no_start_ids(gt_sizes(gt), line_start_side)
    for image_id, (gt_boxes, gt_labels) in _gt_by_image(gt).items():
        boxes, labels, _ = read_boxes(dets.get(image_id, empty_detections()), score_thresh, decode_iou, line_thresh,
                                      image_id not in no_start)
        ious = iou_xyxy(boxes, gt_boxes)
        free = np.ones(len(gt_boxes), dtype=bool)
        for j in range(len(boxes)):  # read_boxes returns highest score first
            cand = np.where(free, ious[j], -1.0)
            g = int(np.argmax(cand)) if len(cand) else -1
            if g >= 0 and cand[g] >= iou:
                free[g] = False
                m[category_to_digit(gt_labels[g]), category_to_digit(labels[j])] += 1
            else:
                m[NUM_DIGITS, category_to_digit(labels[j])] += 1
        for g in np.flatnonzero(free):
            m[category_to_digit(gt_labels[g]), NUM_DIGITS] += 1
    return m


def worst_number_errors(dets: dict, gt: dict, score_thresh: float = 0.5, decode_iou: float = 0.5,
                        n: int = 24, line_thresh: float = 0.0, line_start_side: int = 0) -> list[dict]:
    """The ``n`` worst wrongly read numbers of ``gt``'s images, worst first.

    "Worst" = least similar to the truth (``difflib`` ratio of the two strings), then most
    confident (mean score of the digits read): a confidently wrong number is the most
    instructive. Each item: ``{"image_id", "read", "truth", "kind" (metrics.classify_error),
    "confidence"}``. ``line_start_side`` as for :func:`confusion_matrix`.
    """
    truth = gt_numbers(gt)
    no_start = no_start_ids(gt_sizes(gt), line_start_side)
    items = []
    for image_id, true_number in truth.items():
        det = dets.get(image_id, empty_detections())
        start = image_id not in no_start
        read = decode_number(*det, score_thresh=score_thresh, iou_thresh=decode_iou, line_thresh=line_thresh,
                             line_start=start)
        if read == true_number:
            continue
        scores = read_boxes(det, score_thresh, decode_iou, line_thresh, start)[2]
        items.append({"image_id": image_id, "read": read, "truth": true_number,
                      "kind": classify_error(read, true_number),
                      "confidence": float(scores.mean()) if len(scores) else 0.0})
    items.sort(key=lambda e: (difflib.SequenceMatcher(None, e["read"], e["truth"]).ratio(), -e["confidence"]))
    return items[:n]

