"""Ensembles: fuse the detections of several models (or TTA views), then read the numbers.

Box fusion is done by the maintained ``ensemble-boxes`` library (weighted boxes fusion,
NMS, soft-NMS, non-maximum weighted). It wants xyxy boxes normalised to [0, 1], so every
image's boxes are divided by that image's own (width, height) and multiplied back after.

Detections everywhere here: ``dets = {image_id: (boxes xyxy float (N, 4) in pixels of the
original image, labels int (N,) COCO category ids 1..10 = digits 0..9, scores (N,))}``.

Task 1 (pred.json) takes the fused boxes as they come. Task 2 (the number) needs more care:
a box that only one weak member found still gets a fused score, and one phantom digit makes
the whole number wrong. Two ways to read numbers from an ensemble (``number_fusion``):

* ``"vote"`` (default): each member reads its own number with :func:`decode_number`, with
  the decoder its own ``digitdet predict`` used (tuned threshold, line reading: the
  ``pred_config.json`` beside its pred.json) unless a threshold is given; the weighted
  plurality wins; ties go to the ``"boxes"`` reading.
* ``"boxes"``: decode the fused boxes with :func:`decode_number`, but only those that members
  holding more than ``min_agreement`` of the total weight found themselves (same digit,
  IoU >= ``iou`` with the fused box, member score >= the decode threshold). Agreement is
  counted per *model*, not per box, so a member's duplicate boxes do not vote twice, and it
  does not depend on WBF's ``conf_type`` rescaling.

Why "vote" is the default (``python bench/ensemble_number_fusion.py --images 400 --seeds 3``,
simulated members with shared and independent errors, number accuracy): 2 strong + 3 weak
members: best member 0.836, plain decode of WBF boxes 0.858 (conf_type avg) / 0.477 (max),
"boxes" 0.888, "vote" 0.901; 3 members 0.804 -> 0.887 / 0.887; strong + weak with weights
2 1: 0.804 -> 0.804 / 0.804. "vote" was never below "boxes" by more than 0.001 and never
below the best member, except with TWO EQUALLY weighted members, where every disagreement
is a tie and only digits both found are read (0.804 -> 0.531): weight the better one higher.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

import numpy as np
from ensemble_boxes import nms, non_maximum_weighted, soft_nms, weighted_boxes_fusion

from digitdet.boxes import iou_xyxy
from digitdet.data.images import folder_sizes
from digitdet.decode import NO_NUMBER, decode_number, group_by_image
from digitdet.evaluation import decode_all, detections_to_results
from digitdet.inference import decoder_of_predictions
from digitdet.io import read_pred_json, write_pred_csv, write_pred_json

log = logging.getLogger("digitdet")

METHODS = ("wbf", "nms", "soft_nms", "nmw")
NUMBER_FUSIONS = ("vote", "boxes")
CONF_TYPES = ("avg", "max", "box_and_model_avg", "absent_model_aware_avg")


def _empty() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.zeros((0, 4), np.float64), np.zeros(0, np.int64), np.zeros(0, np.float64)


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
        return _empty()
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
        per_member = [m.get(image_id, _empty()) for m in members]
        out[image_id] = fuse_image(per_member, size, w, method, iou, skip_box_thr, conf_type)
    return out


def member_support(fused_boxes, fused_labels, member_dets: list, weights, iou: float = 0.55,
                   score_thresh: float = 0.5) -> np.ndarray:
    """(M,) share of the total weight whose member found each fused box itself, in [0, 1].

    A member "found" fused box j when it has a box of the same label, score >= ``score_thresh``
    and IoU >= ``iou`` with box j (all xyxy in pixels of the same image). Each member counts
    once per box, whatever its number of duplicates. Hand-written: ensemble-boxes does not
    return which members formed a cluster.
    """
    w = check_weights(weights, len(member_dets))
    fused_boxes = np.asarray(fused_boxes, dtype=np.float64).reshape(-1, 4)
    fused_labels = np.asarray(fused_labels, dtype=np.int64).reshape(-1)
    support = np.zeros(len(fused_boxes))
    for weight, (boxes, labels, scores) in zip(w, member_dets):
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        confident = np.asarray(scores).reshape(-1) >= score_thresh
        same = fused_labels[:, None] == np.asarray(labels, dtype=np.int64).reshape(-1)[None, :]
        found = ((iou_xyxy(fused_boxes, boxes) >= iou) & same & confident[None, :]).any(axis=1)
        support += weight * found
    return support / w.sum()


def decode_agreed(fused, member_dets: list, weights, score_thresh: float = 0.5, iou: float = 0.55,
                  min_agreement: float = 0.5, decode_iou: float = 0.5) -> str:
    """The number read from one image's fused boxes that enough members agree on ("boxes" mode).

    A fused box is read when members holding more than ``min_agreement`` of the weight (a
    weighted majority by default) read it themselves at ``score_thresh`` (:func:`member_support`);
    the agreed boxes then go through :func:`decode_number`'s duplicate suppression (IoU
    ``decode_iou``, fused score order) and left-to-right reading. The fused score itself is
    not thresholded again: WBF already scaled it by agreement, and thresholding it twice
    dropped digits that a weighted majority had read. ``fused`` and ``member_dets`` are
    ``(boxes xyxy px, labels, scores)``.
    """
    boxes, labels, scores = (np.asarray(x) for x in fused)
    if len(boxes) == 0:
        return NO_NUMBER
    agreed = member_support(boxes, labels, member_dets, weights, iou, score_thresh) > min_agreement
    return decode_number(boxes[agreed], labels[agreed], scores[agreed], score_thresh=0.0, iou_thresh=decode_iou)


def vote_numbers(member_numbers: list[dict], weights=None, tie_break: dict | None = None) -> dict:
    """Weighted plurality vote over the members' numbers, image by image.

    Args:
        member_numbers: one ``{image_id: number string}`` per member (``"-1"`` = nothing read;
            an image missing from a member counts as its ``"-1"`` vote).
        weights: one positive weight per member (None: equal).
        tie_break: ``{image_id: number}`` used when several numbers share the top weight
            (e.g. the fused-boxes reading); without it the tied number of the earliest member wins.

    Returns:
        ``{image_id: number}`` for every image any member has.
    """
    if not member_numbers:
        raise ValueError("vote_numbers needs at least one member")
    w = check_weights(weights, len(member_numbers))
    image_ids = sorted(set().union(*member_numbers))
    out = {}
    for image_id in image_ids:
        totals: dict[str, float] = defaultdict(float)
        for weight, numbers in zip(w, member_numbers):
            totals[numbers.get(image_id, NO_NUMBER)] += weight
        best = max(totals.values())
        tied = [n for n, t in totals.items() if np.isclose(t, best)]  # dict order = first member's vote first
        if len(tied) == 1:
            out[image_id] = tied[0]
        elif tie_break is not None and image_id in tie_break:
            out[image_id] = tie_break[image_id]
        else:
            out[image_id] = tied[0]
    return out


def fuse_numbers(members: list[dict], fused: dict, image_ids, weights=None, mode: str = "vote",
                 score_thresh: float = 0.5, iou: float = 0.55, min_agreement: float = 0.5,
                 decode_iou: float = 0.5, member_decoders: list[dict | None] | None = None,
                 sizes: dict | None = None) -> dict:
    """The ensemble's number for every image of ``image_ids`` (Task 2); ``mode`` in :data:`NUMBER_FUSIONS`.

    ``members``: the members' ``dets``; ``fused``: their fusion (:func:`fuse_detections`).
    ``"boxes"`` -> :func:`decode_agreed` per image; ``"vote"`` -> :func:`vote_numbers` over each
    member's :func:`decode_number` reading, ties broken by the "boxes" reading. Member k reads
    with ``member_decoders[k]`` (``Config.decoder()`` settings) where given, else plainly at
    ``score_thresh`` / ``decode_iou``; ``sizes`` (``{image_id: (width, height)}``) as for
    :func:`digitdet.evaluation.decode_all`.
    """
    if mode not in NUMBER_FUSIONS:
        raise ValueError(f"unknown number fusion {mode!r}; choose one of {NUMBER_FUSIONS}")
    w = check_weights(weights, len(members))
    image_ids = list(image_ids)
    agreed = {i: decode_agreed(fused.get(i, _empty()), [m.get(i, _empty()) for m in members], w,
                               score_thresh, iou, min_agreement, decode_iou) for i in image_ids}
    if mode == "boxes":
        return agreed
    decoders = list(member_decoders or [None] * len(members))
    if len(decoders) != len(members):
        raise ValueError(f"{len(decoders)} member decoders for {len(members)} members")
    plain = {"score_thresh": score_thresh, "iou_thresh": decode_iou}
    readings = [decode_all(m, image_ids, d or plain, sizes) for m, d in zip(members, decoders)]
    return vote_numbers(readings, w, tie_break=agreed)


# ---- prediction files --------------------------------------------------------------------------

def ensemble_files(pred_paths: list, images_dir, out_dir, weights=None, method: str = "wbf", iou: float = 0.55,
                   skip_box_thr: float = 0.0, conf_type: str = "avg", number_fusion: str = "vote",
                   decode_thresh: float | None = None, min_agreement: float = 0.5, max_dets: int = 100) -> dict:
    """Fuse ``pred.json`` files of one image folder; write ``out_dir/pred.json`` and ``out_dir/pred.csv``.

    Boxes are normalised per image by that image's size (from ``images_dir``). pred.json
    keeps every fused box (up to ``max_dets`` per image, highest score first: mAP rewards
    recall); pred.csv has one row per image of the folder, read with ``number_fusion``
    (see the module docstring). ``decode_thresh`` None: in a vote each member reads as its
    ``digitdet predict`` did (its pred_config.json; 0.5 for files without one, e.g. from
    another tool), and fused boxes are read at 0.5; a number: everything is read plainly at
    it. Returns a small summary dict (paths, counts, settings).
    """
    if len(pred_paths) < 1:
        raise ValueError("ensemble needs at least one prediction file")
    members = [group_by_image(read_pred_json(p)) for p in pred_paths]
    w = check_weights(weights, len(members))
    if len(members) == 2 and w[0] == w[1]:
        log.warning("two equally weighted members: every disagreement is a tie, read as the digits both "
                    "found; give --weights (the better member higher) to let it decide")
    sizes = folder_sizes(images_dir)
    fused = fuse_detections(members, sizes, weights, method, iou, skip_box_thr, conf_type)
    decoders = [decoder_of_predictions(p) if decode_thresh is None else None for p in pred_paths]
    numbers = fuse_numbers(members, fused, sizes, weights, number_fusion, 0.5 if decode_thresh is None else decode_thresh,
                           iou, min_agreement, member_decoders=decoders, sizes=sizes)
    out_dir = Path(out_dir)
    write_pred_json(out_dir / "pred.json", detections_to_results(fused, 0.0, max_dets))
    write_pred_csv(out_dir / "pred.csv", numbers)
    return {"members": [str(p) for p in pred_paths], "images": len(sizes), "method": method,
            "number_fusion": number_fusion, "weights": check_weights(weights, len(members)).tolist(),
            "member_decoders": decoders,
            "pred_json": str(out_dir / "pred.json"), "pred_csv": str(out_dir / "pred.csv")}
