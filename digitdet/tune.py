"""Every tuner of reading settings, in one place: what ``digitdet tune`` chooses on an annotated
split and writes into a checkpoint's ``"decoder"`` dict.

1. :func:`tune_decoder`: the number-reading threshold and line-reading threshold with the best
   exact-match accuracy, from detections.
2. :func:`tune_box_style`: pred.json's box padding and one-height rule with the best mAP.
3. :func:`tune_reading`: both, at each of several input scales of one model; the best scale wins.

Tune on validation, never on the photos you report.
"""
from __future__ import annotations

import dataclasses
import logging

import numpy as np

from digitdet.read.decode import (
    as_detections,
    empty_detections,
    gt_sizes,
    no_start_ids,
    pred_results,
    read_left_to_right,
    reading_mask,
    suppress_duplicates,
)
from digitdet.read.detect import predict_batches
from digitdet.read.detector import at_scale, load_detector
from digitdet.read.pipeline import folder_loader
from digitdet.read.zoom import reading_detector
from digitdet.score.metrics import coco_map, gt_numbers

log = logging.getLogger("digitdet")


# pred_box_pad values `digitdet tune` tries (fractions of the box height a side)
BOX_PADS = (0.0, 0.02, 0.04, 0.06, 0.08, 0.10, 0.12, 0.14)


def tune_box_style(dets: dict, gt: dict, cfg, pads=BOX_PADS) -> dict:
    """The pred.json box style that scores the best mAP against ``gt``: ``{"box_pad",
    "box_same_height", "table": [(box_pad, box_same_height, mAP), ...]}`` over ``pads`` x
    (False, True); ties go to the plainer style (one height off, then the smaller pad). Tight
    annotations choose 0 and False; real SVHN's a pad near their looseness, and one height."""
    table = [(pad, same, coco_map(gt, pred_results(dets, cfg, pad, same))["map"])
             for same in (False, True) for pad in pads]
    pad, same, _ = max(table, key=lambda row: (row[2], -row[1], -row[0]))
    return {"box_pad": pad, "box_same_height": same, "table": table}


# Input scales `digitdet tune --scale` tries, as multiples of the training min_size: a model
# trained at 64 px misses digits that shrink below ~12 px there, and finds them when the image
# is enlarged a little (bundled model: valid accuracy 0.776 at x1, 0.840 at x1.5).
SCALE_FACTORS = (1.0, 1.25, 1.5, 1.75)


def tune_reading(weights, images_dir, gt: dict, device, factors=(1.0,), batch_size: int = 32,
                 workers: int | None = None, overrides: list[str] | None = None, progress: bool = False) -> dict:
    """Choose the input scale and the number-reading threshold with the best exact-match
    accuracy on an annotated split (tune on validation, never on what you report).

    For each factor f the model (``weights``: a checkpoint, None = the bundled one) reads
    ``images_dir`` with min_size = round(f x its training min_size, or the one in ``overrides``)
    and the long side capped at the same ratio; :func:`digitdet.tune.tune_decoder` picks the threshold. ``gt`` is the
    split's COCO dict; ``workers`` None = the config's. Returns the best scale (ties: the
    smaller, faster one) as ``{"min_size", "max_size", "score_thresh", "iou_thresh", "line_thresh",
    "box_pad", "box_same_height", "accuracy", "detections", "images_per_s", "cfg", "table":
    [(min_size, score_thresh, line_thresh, accuracy), ...], "box_table": [(box_pad, box_same_height,
    mAP), ...]}``; pred.json's box style is chosen last, for the best mAP at the chosen scale
    (:func:`digitdet.tune.tune_box_style`);
    ``cfg`` is the model's config with these settings, ``detections`` its raw detections there.
    """
    # the training scale (or the one given in overrides) is the base, not a previously tuned one
    model, base, _ = load_detector(weights, device, overrides, tuned_scale=False)
    truth, best, table = gt_numbers(gt), None, []
    for f in factors:
        size = round(f * base.min_size)
        max_size = round(size * base.max_size / base.min_size)
        cfg = dataclasses.replace(base, min_size=size, max_size=max_size)
        _, loader, _ = folder_loader(images_dir, cfg, batch_size, cfg.workers if workers is None else workers)
        with at_scale(model, size, max_size):
            out = predict_batches(model, loader, device, progress=progress, desc=f"read at min_size {size}",
                                  detect=reading_detector(model, cfg, device))
        tuned = tune_decoder(out["detections"], truth, iou_thresh=cfg.decode_iou_thresh,
                             no_start=no_start_ids(gt_sizes(gt), cfg.decoder()["line_start_side"]))
        table.append((size, tuned["score_thresh"], tuned["line_thresh"], tuned["accuracy"]))
        log.info("min_size %d (max_size %d): accuracy %.4f at threshold %.2f, line threshold %.2f", size,
                 max_size, tuned["accuracy"], tuned["score_thresh"], tuned["line_thresh"])
        if best is None or tuned["accuracy"] > best["accuracy"]:
            cfg.apply_decoder(tuned)
            best = {"min_size": size, "max_size": max_size, **cfg.decoder(), "accuracy": tuned["accuracy"],
                    "detections": out["detections"], "images_per_s": out["images_per_s"], "cfg": cfg}
    style = tune_box_style(best["detections"], gt, best["cfg"])
    best["cfg"].pred_box_pad, best["cfg"].pred_box_same_height = style["box_pad"], style["box_same_height"]
    log.info("pred.json boxes: pad %.2f of the height a side, one height per photo %s (mAP by pad, "
             "own heights | one height: %s)", style["box_pad"], "on" if style["box_same_height"] else "off",
             ", ".join(f"{p:.2f}: {m:.4f}" for p, _, m in style["table"]))
    return {**best, "box_pad": style["box_pad"], "box_same_height": style["box_same_height"], "table": table,
            "box_table": style["table"]}


def _best_threshold(curve: list[tuple[float, float]]) -> tuple[float, float]:
    """Centre of the longest run of consecutive thresholds reaching the best accuracy.

    On a plateau any threshold scores the same on the tuning set, but one at the plateau's
    edge sits next to a cliff; a small shift of the score distribution on new images
    (another checkpoint, other photos) pushes it over. The centre has the most margin on
    both sides, so it generalises best. Even-length runs take the lower middle: a slightly
    lower threshold keeps recall.
    """
    best = max(acc for _, acc in curve)
    runs, start = [], None
    for i, (_, acc) in enumerate(curve + [(None, -1.0)]):
        if acc == best and start is None:
            start = i
        elif acc != best and start is not None:
            runs.append((start, i - 1))
            start = None
    lo, hi = max(runs, key=lambda r: r[1] - r[0])  # max() keeps the first (lowest) of equal runs
    return curve[(lo + hi) // 2][0], best


# line_thresh candidates of tune_decoder: 0 = plain reading, first so that it wins ties
LINE_THRESHOLDS = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def tune_decoder(dets: dict, gt_numbers: dict[int, str], thresholds=None, iou_thresh: float = 0.5,
                 contain_thresh: float = 0.8, line_thresholds=LINE_THRESHOLDS, no_start=frozenset()) -> dict:
    """Pick ``decode_number``'s score threshold and line-reading threshold that maximise
    exact-match accuracy.

    Args:
        dets: ``{image_id: (boxes_xyxy, labels, scores)}`` (e.g. from :func:`group_by_image`);
            an image of ``gt_numbers`` missing here reads as ``"-1"``.
        gt_numbers: ``{image_id: number string}`` truth, e.g. ``metrics.gt_numbers(gt)``.
        thresholds: score_thresh candidates, ascending; default ``np.arange(0.05, 0.96, 0.05)``.
        iou_thresh, contain_thresh: duplicate rule, as in :func:`decode_number`.
        line_thresholds: line_thresh candidates (0 = off); ``(0,)`` tunes plain reading only.
            Each is tried with every score threshold above it.
        no_start: ids of images read without line reading's start rule (:func:`no_start_ids`).

    Returns:
        ``{"score_thresh", "line_thresh", "accuracy", "curve": [(score_thresh, accuracy), ...]
        at the chosen line_thresh, "line_curve": [(line_thresh, best score_thresh, accuracy),
        ...]}``. Per line_thresh, ties of score_thresh are broken by :func:`_best_threshold`
        (centre of the widest best plateau); a line_thresh must beat the ones before it in
        ``line_thresholds`` (plain reading first). Tune on a validation split, never on the
        images you report accuracy for.
    """
    if not gt_numbers:
        raise ValueError("tune_decoder needs at least one image in gt_numbers")
    if thresholds is None:
        thresholds = np.arange(0.05, 0.96, 0.05)
    thresholds = sorted(round(float(t), 6) for t in thresholds)  # round: arange gives 0.15000000000000002
    if not thresholds:
        raise ValueError("tune_decoder needs at least one threshold")
    # Greedy suppression visits boxes by falling score and a box is only ever suppressed by
    # higher-scoring ones, so raising the threshold just cuts the tail: the survivors at
    # threshold t are the survivors of one run over all boxes that score >= t. One
    # suppression per image instead of one per threshold; same answers as decode_number.
    survivors = {}
    for image_id in gt_numbers:
        boxes, labels, scores = as_detections(*dets.get(image_id, empty_detections()))
        keep = suppress_duplicates(boxes, scores, iou_thresh, contain_thresh)
        survivors[image_id] = (boxes[keep], labels[keep], scores[keep])

    def read(b, l, s, t, line, start):
        mask = reading_mask(b, s, t, line, start)
        return read_left_to_right(b[mask], l[mask])

    best, line_curve = None, []
    for line in line_thresholds:
        line = round(float(line), 6)
        ts = [t for t in thresholds if line <= 0 or t > line]
        if not ts:
            continue
        curve = [(t, sum(read(b, l, s, t, line, i not in no_start) == gt_numbers[i]
                         for i, (b, l, s) in survivors.items()) / len(gt_numbers)) for t in ts]
        score_thresh, accuracy = _best_threshold(curve)
        line_curve.append((line, score_thresh, accuracy))
        if best is None or accuracy > best["accuracy"]:
            best = {"score_thresh": score_thresh, "line_thresh": line, "accuracy": accuracy, "curve": curve}
    if best is None:
        raise ValueError(f"no score threshold {thresholds} lies above a line threshold {list(line_thresholds)}")
    return {**best, "line_curve": line_curve}
