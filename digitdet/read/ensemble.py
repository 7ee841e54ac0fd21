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

from digitdet.boxes import iou_xyxy
from digitdet.data.images import folder_sizes
from digitdet.io import read_pred_json, write_pred_csv, write_pred_json
from digitdet.labels import NO_NUMBER
from digitdet.read.decode import decode_all, decode_number, detections_to_results, empty_detections, group_by_image
from digitdet.read.fusion import check_weights, fuse_detections
from digitdet.read.submission import decoder_of_predictions

log = logging.getLogger("digitdet")

NUMBER_FUSIONS = ("vote", "boxes")


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
    :func:`digitdet.read.decode.decode_all`.
    """
    if mode not in NUMBER_FUSIONS:
        raise ValueError(f"unknown number fusion {mode!r}; choose one of {NUMBER_FUSIONS}")
    w = check_weights(weights, len(members))
    image_ids = list(image_ids)
    agreed = {i: decode_agreed(fused.get(i, empty_detections()), [m.get(i, empty_detections()) for m in members], w,
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
