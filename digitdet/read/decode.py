"""Raw detections -> the house number (Task 2) and -> COCO result records (Task 1).

Inputs are one image's detections as torchvision returns them: ``boxes`` (N, 4) xyxy in
pixels of that image, ``labels`` (N,) model labels == COCO category ids 1..10 (digits 0..9,
mapping in :mod:`digitdet.labels`), ``scores`` (N,) in [0, 1]. numpy arrays, lists or torch
tensors (any device) are accepted. Everything here is a pure function.

The two tasks want different things from the same detections. COCO mAP rewards recall:
keep every box down to a low score (0.05), duplicates of other classes included, since a
second guess costs AP nothing. Reading the number punishes every extra digit, so
:func:`decode_number` keeps only confident boxes and removes duplicates *across classes*
(per-class NMS let a "1" and a "7" on the same digit turn "117" into "1117").

Line reading (``line_thresh`` > 0): house numbers are written on one line in digits of one
height, so a confident digit vouches for a weaker one beside it, and a fairly confident box
off the line (a fragment of the next door's number, a screw, a letter of the street name)
is left out. Digits scoring >= ``score_thresh`` are read; then any box scoring >= ``line_thresh``
joins them when it sits next to one of them on its line (:func:`_on_line`), and when no digit
reaches ``score_thresh`` the best box scoring >= ``line_thresh`` starts the line (every SVHN
photo holds a number; not in a photo too large to be such a crop, :func:`starts_lines`). Tuned on
valid with :func:`tune_decoder`, it read 1.7-3.3 points more numbers of three synthetic test
sets for the 60-minute model, 0.2-1.6 more of seven for the bundled one (docs/results.md, "Line reading").
"""
from __future__ import annotations

import numpy as np

from digitdet.boxes import area_xyxy, iou_xyxy, pad_xyxy, same_height_xyxy, xyxy_to_xywh
from digitdet.labels import NO_NUMBER, category_to_digit

# Line reading: a box joins the digits read when, against one of them, its height is within
# LINE_HEIGHT_RATIO of that digit's, its vertical centre within LINE_CENTRE_OFFSET of that
# digit's height, and the horizontal gap between the two at most LINE_GAP of that height
# (measured on synthetic numbers, docs/results.md "Line reading"). Against the nearest digit rather
# than the whole line's median, so a number stepped along a slope stays one line.
LINE_HEIGHT_RATIO = 1.3
LINE_CENTRE_OFFSET = 0.35
LINE_GAP = 0.6
# pred.json keeps at most this many boxes a photo (COCO evaluates 100; photos hold 1-5 digits)
PRED_MAX_PER_IMAGE = 30


def empty_detections() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's detections when there are none: boxes (0, 4), labels (0,), scores (0,)."""
    return np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0, np.float32)


def _as_numpy(x, dtype) -> np.ndarray:
    """numpy array from a numpy array, list or torch tensor (detached, moved to CPU)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu()
    return np.asarray(x, dtype=dtype)


def as_detections(boxes_xyxy, labels, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate one image's detections; return (boxes (N,4) f64, labels (N,) i64, scores (N,) f64)."""
    boxes = _as_numpy(boxes_xyxy, np.float64)
    labels = _as_numpy(labels, np.float64)
    scores = _as_numpy(scores, np.float64)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4) xyxy, got {boxes.shape}")
    n = len(boxes)
    if labels.reshape(-1).shape != (n,) or scores.reshape(-1).shape != (n,):
        raise ValueError(f"boxes, labels and scores must have the same length N; got boxes {boxes.shape}, "
                         f"labels {labels.shape}, scores {scores.shape}")
    labels, scores = labels.reshape(-1), scores.reshape(-1)
    if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
        raise ValueError("boxes and scores must be finite (NaN/inf found)")
    if np.any(labels != np.round(labels)):
        bad = labels[labels != np.round(labels)][:5]
        raise ValueError(f"labels must be integer category ids 1..10, got {bad}")
    return boxes, labels.astype(np.int64), scores


def suppress_duplicates(boxes_xyxy, scores, iou_thresh: float = 0.5,
                        contain_thresh: float = 0.8) -> np.ndarray:
    """Class-agnostic greedy suppression; returns kept indices, highest score first.

    A box is dropped when, against any already kept (higher-scoring) box, its IoU is
    > ``iou_thresh`` OR their intersection covers > ``contain_thresh`` of the smaller box.
    The containment test catches what IoU misses: a small box on one digit inside a big
    box spanning two digits has a low IoU but is the same ink. Boxes xyxy, one image.

    Written by hand because torchvision's ``nms`` has no containment rule.
    """
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    order = np.argsort(-scores, kind="stable")  # stable: equal scores keep input order
    iou = iou_xyxy(boxes, boxes)
    area = area_xyxy(boxes)
    lt = np.maximum(boxes[:, None, :2], boxes[None, :, :2])
    rb = np.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = (rb - lt).clip(0).prod(axis=2)
    smaller = np.minimum(area[:, None], area[None, :])
    # Containment is undefined for a zero-area box; 0 keeps a degenerate box from
    # suppressing every later box (its IoU with anything is 0 as well).
    contain = np.where(smaller > 0, inter / np.maximum(smaller, 1e-12), 0.0)
    keep: list[int] = []
    for i in order:
        if all(iou[i, k] <= iou_thresh and contain[i, k] <= contain_thresh for k in keep):
            keep.append(int(i))
    return np.asarray(keep, dtype=np.int64)


def starts_lines(size, side: int) -> bool:
    """Whether line reading's start rule (module docstring) reads a photo of ``size`` (width,
    height; None = unknown): only when its short side is under ``side`` px (0 = every photo).

    SVHN's photos are crops around their number, so one box over the line threshold is better
    read than nothing; a phone's photo of a house front, or of no house number at all, is
    several times larger, and there the start rule read bricks and leaves as a number in 36% of
    the photos without one (docs/results.md, "Large photos: the zoom scan")."""
    return not side or size is None or min(size) < side


def no_start_ids(sizes: dict | None, side: int) -> frozenset:
    """Ids of ``sizes`` (``{image_id: (width, height)}``) that :func:`starts_lines` reads without the start rule."""
    return frozenset(i for i, size in (sizes or {}).items() if not starts_lines(size, side))


def decode_number(boxes_xyxy, labels, scores, score_thresh: float = 0.5, iou_thresh: float = 0.5,
                  contain_thresh: float = 0.8, line_thresh: float = 0.0, line_start: bool = True) -> str:
    """Read the house number from one image's detections.

    Args:
        boxes_xyxy: (N, 4) xyxy, pixels of one image (any scale: only relative positions matter).
        labels: (N,) model labels == category ids 1..10 (digits 0..9).
        scores: (N,) confidences.
        score_thresh: detections with score >= this are read.
        iou_thresh, contain_thresh: duplicate rule of :func:`suppress_duplicates`.
        line_thresh: line reading (module docstring): boxes scoring >= this also join the
            digits read when they sit on their line; 0 (or >= ``score_thresh``) = off.
        line_start: with line reading, whether the best box scoring >= ``line_thresh`` starts
            the line when no digit reaches ``score_thresh`` (every SVHN photo holds a number;
            a large photo need not, see :func:`starts_lines`).

    Returns:
        The digits left to right as a string (leading zeros kept, e.g. ``"07"``), or
        ``"-1"`` when no detection survives.

    Steps: (1) keep score >= score_thresh (and with line reading, boxes >= line_thresh on
    the line); (2) class-agnostic duplicate suppression, the higher score wins; (3) order by
    box centre x; (4) map labels to digits via labels.py.
    """
    boxes, labels, _ = read_digits(boxes_xyxy, labels, scores, score_thresh, iou_thresh, contain_thresh, line_thresh,
                                   line_start)
    return read_left_to_right(boxes, labels)


def read_digits(boxes_xyxy, labels, scores, score_thresh: float = 0.5, iou_thresh: float = 0.5,
                contain_thresh: float = 0.8, line_thresh: float = 0.0,
                line_start: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The boxes :func:`decode_number` reads, highest score first: (boxes xyxy, labels, scores).
    Arguments as there."""
    boxes, labels, scores = as_detections(boxes_xyxy, labels, scores)
    # 1. Confident detections only: every extra digit makes the whole number wrong (with line
    # reading, weaker boxes are candidates too; suppression only ever lets a higher score
    # remove a lower one, so suppressing them all first changes nothing for the confident).
    low = line_thresh if 0 < line_thresh < score_thresh else score_thresh
    sel = scores >= low
    boxes, labels, scores = boxes[sel], labels[sel], scores[sel]
    # 2. One digit per piece of ink, whatever class each duplicate claims.
    keep = suppress_duplicates(boxes, scores, iou_thresh, contain_thresh)
    boxes, labels, scores = boxes[keep], labels[keep], scores[keep]
    read = reading_mask(boxes, scores, score_thresh, line_thresh, line_start)
    return boxes[read], labels[read], scores[read]


def digits_read(det, decoder: dict, size=None) -> list[tuple[int, list[float], float]]:
    """The digits one photo's number is read from, left to right: ``(digit 0-9, box [x, y, w, h]
    in pixels of the photo, score)`` each; ``det`` is (boxes xyxy, labels, scores), ``decoder``
    ``Config.decoder()``'s settings, ``size`` the photo's (width, height) (line reading's start rule)."""
    boxes, labels, scores = read_digits(*det, score_thresh=decoder["score_thresh"], iou_thresh=decoder["iou_thresh"],
                                        line_thresh=decoder.get("line_thresh", 0.0),
                                        line_start=starts_lines(size, decoder.get("line_start_side", 0)))
    order = np.argsort((boxes[:, 0] + boxes[:, 2]) / 2, kind="stable")  # as read_left_to_right orders them
    return [(category_to_digit(int(labels[k])),
             [round(float(v), 2) for v in (boxes[k, 0], boxes[k, 1], boxes[k, 2] - boxes[k, 0], boxes[k, 3] - boxes[k, 1])],
             round(float(scores[k]), 4)) for k in order]


def reading_mask(boxes: np.ndarray, scores: np.ndarray, score_thresh: float, line_thresh: float,
                  line_start: bool = True) -> np.ndarray:
    """Which of one image's boxes (duplicates removed, highest score first) are read: those
    scoring >= ``score_thresh``, and with line reading the candidates :func:`_line_mask` adds."""
    if not 0 < line_thresh < score_thresh:
        return scores >= score_thresh
    read = np.zeros(len(boxes), bool)
    cand = np.flatnonzero(scores >= line_thresh)
    read[cand] = _line_mask(boxes[cand], scores[cand], score_thresh, line_start)
    return read


def _line_mask(boxes: np.ndarray, scores: np.ndarray, score_thresh: float, line_start: bool = True) -> np.ndarray:
    """Which of one image's boxes (duplicates removed, highest score first, all candidates)
    line reading reads: those >= ``score_thresh`` (else, with ``line_start``, the best one),
    then, by falling score, every candidate :func:`_on_line` with a digit already read."""
    read = scores >= score_thresh
    if line_start and len(boxes) and not read.any():
        read[0] = True
    added = True
    while added:
        added = False
        for i in np.flatnonzero(~read):
            if _on_line(boxes[i], boxes[read]):
                read[i] = added = True
                break  # restart: the line has a new digit, and the highest candidate goes first
    return read


def _on_line(box: np.ndarray, line: np.ndarray) -> bool:
    """Whether ``box`` (xyxy) sits beside one of ``line``'s boxes (N, 4) as the next digit of
    the number would: similar height, same height on the page, a small horizontal gap."""
    h = box[3] - box[1]
    hs = line[:, 3] - line[:, 1]
    ratio_ok = (h <= LINE_HEIGHT_RATIO * hs) & (hs <= LINE_HEIGHT_RATIO * h)
    centre_ok = np.abs((box[1] + box[3]) - (line[:, 1] + line[:, 3])) / 2 <= LINE_CENTRE_OFFSET * hs
    gap = np.maximum(box[0] - line[:, 2], line[:, 0] - box[2])
    return bool(np.any(ratio_ok & centre_ok & (gap <= LINE_GAP * hs)))


def read_left_to_right(boxes: np.ndarray, labels: np.ndarray) -> str:
    """Steps 3-4 of :func:`decode_number` on already filtered boxes; "-1" when empty."""
    if len(boxes) == 0:
        return NO_NUMBER
    # 3. House numbers read left to right; stable so equal centres keep score order.
    centre_x = (boxes[:, 0] + boxes[:, 2]) / 2
    order = np.argsort(centre_x, kind="stable")
    # 4. Digits from THE mapping (raises ValueError for a label outside 1..10).
    return "".join(str(category_to_digit(c)) for c in labels[order])


def detections_to_coco(image_id: int, boxes_xyxy, labels, scores, score_thresh: float = 0.05,
                       max_dets: int = 100) -> list[dict]:
    """One image's detections -> COCO result records for ``pred.json`` (Task 1).

    ``boxes_xyxy`` must be in pixels of the ORIGINAL image the grader's annotations refer
    to (torchvision's detector already maps its outputs back to the size of the image it
    was given; rescale yourself if you resized before calling the model).

    Returns records ``{"image_id", "bbox": [x, y, w, h] floats (COCO xywh), "score",
    "category_id"}`` with score >= ``score_thresh``, highest score first, at most
    ``max_dets`` (COCO evaluates the top 100 per image). Keep ``score_thresh`` low: boxes
    below a high threshold are recall that mAP would have counted.
    """
    if isinstance(image_id, bool) or not isinstance(image_id, (int, np.integer)):
        raise ValueError(f"image_id must be an int, got {image_id!r}")
    boxes, labels, scores = as_detections(boxes_xyxy, labels, scores)
    order = np.argsort(-scores, kind="stable")
    order = order[scores[order] >= score_thresh][:max_dets]
    xywh = xyxy_to_xywh(boxes[order])
    out = []
    for box, label, score in zip(xywh, labels[order], scores[order]):
        category_to_digit(label)  # validates 1..10 with a clear message
        out.append({"image_id": int(image_id), "bbox": [float(v) for v in box],
                    "score": float(score), "category_id": int(label)})
    return out


def group_by_image(results: list[dict]) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """COCO result records -> ``{image_id: (boxes_xyxy (N,4) f64, labels (N,) i64, scores (N,) f64)}``.

    Boxes are converted from COCO xywh back to xyxy (same pixel space). Only images that
    have at least one record appear; look others up with ``.get`` and treat them as empty.
    Record order within an image is kept. Use it to score a ``pred.json`` for Task 2.
    """
    grouped: dict[int, list[dict]] = {}
    for i, rec in enumerate(results):
        try:
            grouped.setdefault(int(rec["image_id"]), []).append(rec)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"result record {i} has no valid image_id: {rec!r}") from e
    out = {}
    for image_id, recs in grouped.items():
        xywh = np.asarray([r["bbox"] for r in recs], dtype=np.float64).reshape(-1, 4)
        boxes = xywh.copy()
        boxes[:, 2:] += boxes[:, :2]
        out[image_id] = (boxes, np.asarray([r["category_id"] for r in recs], dtype=np.int64),
                         np.asarray([r["score"] for r in recs], dtype=np.float64))
    return out


def detections_to_results(dets: dict, score_thresh: float, max_dets: int, box_pad: float = 0.0,
                          same_height_from: float | None = None) -> list[dict]:
    """{image_id: (boxes xyxy, labels, scores)} -> COCO result records (Task 1 / pred.json).

    Boxes are styled like real SVHN's annotations when asked: with ``same_height_from`` (a
    score), an image's boxes take one height (:func:`digitdet.boxes.same_height_xyxy`); then each
    grows by ``box_pad`` x its height a side (:func:`digitdet.boxes.pad_xyxy`)."""
    out = []
    for image_id in sorted(dets):
        boxes, labels, scores = dets[image_id]
        if same_height_from is not None:
            boxes = same_height_xyxy(boxes, scores, same_height_from)
        out.extend(detections_to_coco(image_id, pad_xyxy(boxes, box_pad), labels, scores,
                                      score_thresh=score_thresh, max_dets=max_dets))
    return out


def pred_results(dets: dict, cfg, box_pad: float | None = None, same_height: bool | None = None) -> list[dict]:
    """pred.json's records of ``dets`` with ``cfg``'s settings (score threshold, count, box
    style; ``box_pad`` / ``same_height`` replace the config's)."""
    same = cfg.pred_box_same_height if same_height is None else same_height
    return detections_to_results(dets, cfg.pred_score_thresh, PRED_MAX_PER_IMAGE,
                                 cfg.pred_box_pad if box_pad is None else box_pad,
                                 cfg.decode_score_thresh if same else None)


def decode_all(dets: dict, image_ids, decoder: dict, sizes: dict | None = None) -> dict[int, str]:
    """The number read in every image of ``image_ids`` ("-1" for images without detections);
    ``decoder`` holds :func:`decode_number`'s settings as ``Config.decoder()`` gives them;
    ``sizes`` (``{image_id: (width, height)}``) tells which photos are too large for line
    reading's start rule (:func:`digitdet.read.decode.starts_lines`); without it every photo has it."""
    kw = {"score_thresh": decoder["score_thresh"], "iou_thresh": decoder["iou_thresh"],
          "line_thresh": decoder.get("line_thresh", 0.0)}
    no_start = no_start_ids(sizes, decoder.get("line_start_side", 0))
    return {i: decode_number(*dets.get(i, empty_detections()), **kw, line_start=i not in no_start) for i in image_ids}


def gt_sizes(gt: dict) -> dict[int, tuple[int, int]]:
    """``{image_id: (width, height)}`` of a COCO dict's images (those that state both)."""
    return {int(im["id"]): (im["width"], im["height"]) for im in gt["images"] if im.get("width") and im.get("height")}
