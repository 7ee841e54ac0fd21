"""Scores of the two graded tasks: COCO mAP (Task 1) and whole-number accuracy (Task 2).

Task 1 is scored with faster-coco-eval, a maintained C++ port of pycocotools that gives
the same numbers (``tests/test_metrics.py`` checks it against pycocotools). Task 2 is exact
match of the number string; its truth is derived from the GT boxes by :func:`gt_numbers`.

Ground truth ``gt`` is a COCO dataset dict: ``images`` (``id``, optionally ``width``/
``height``), ``annotations`` (``id``, ``image_id``, ``bbox`` COCO xywh in pixels of that
image, ``category_id`` 1..10), ``categories`` (ignored: the category set is always
:func:`digitdet.labels.coco_categories`). Numbers are strings, ``"-1"`` for no digit.
"""
from __future__ import annotations

from collections import Counter

import numpy as np
from faster_coco_eval import COCO, COCOeval_faster

from digitdet.labels import CATEGORY_IDS, NO_NUMBER, category_to_digit, coco_categories

SUMMARY_KEYS = ("map", "ap50", "ap75", "aps", "apm", "apl")  # order of COCOeval.stats[:6]
ERROR_KINDS = ("correct", "nothing_found", "missed_digit", "extra_digit", "wrong_digit", "wrong_order",
               "other")


def quiet(*args, **kwargs) -> None:
    """print_function for faster-coco-eval: a library does not print."""


def _annotations_by_image(gt: dict) -> dict[int, list[dict]]:
    """``{image_id: [annotation, ...]}`` for every image of ``gt`` (annotation order kept)."""
    if not isinstance(gt, dict) or not isinstance(gt.get("images"), list):
        raise ValueError("gt must be a COCO dataset dict with an 'images' list")
    by_image: dict[int, list[dict]] = {int(img["id"]): [] for img in gt["images"]}
    for ann in gt.get("annotations", []):
        image_id = int(ann["image_id"])
        if image_id not in by_image:
            raise ValueError(f"annotation {ann.get('id')} refers to image_id {image_id}, "
                             f"which is not in gt['images']")
        by_image[image_id].append(ann)
    return by_image


def evaluable_gt(gt: dict) -> dict:
    """A fresh copy of ``gt`` that both COCO tools accept (they mutate what they are given).

    Fills ``area`` = w * h and ``iscrowd`` = 0 when missing: COCO's small/medium/large split
    reads ``area``, and digit annotations rarely carry it. Annotation ids are renumbered
    1..N: pycocotools uses id 0 to mean "unmatched", so a GT with id 0 could never match.
    """
    by_image = _annotations_by_image(gt)
    anns = []
    for n, ann in enumerate(a for image_anns in by_image.values() for a in image_anns):
        x, y, w, h = (float(v) for v in ann["bbox"])
        anns.append({"id": n + 1, "image_id": int(ann["image_id"]),
                     "bbox": [x, y, w, h], "category_id": int(ann["category_id"]),
                     "area": float(ann.get("area", w * h)), "iscrowd": int(ann.get("iscrowd", 0))})
    images = [{k: v for k, v in img.items() if k in ("id", "width", "height", "file_name")}
              for img in gt["images"]]
    return {"images": images, "annotations": anns, "categories": coco_categories()}


def _mean_defined(precision: np.ndarray) -> float:
    """COCO's averaging: mean over entries > -1; -1.0 when none is defined."""
    defined = precision[precision > -1]
    return float(defined.mean()) if defined.size else -1.0


def coco_map(gt: dict, results: list[dict]) -> dict:
    """COCO bbox AP of ``results`` (COCO result records, xywh) against ``gt``.

    Only images of ``gt`` are evaluated; records for other images are ignored (so a
    validation subset can be scored from a prediction file of more images).

    Returns ``{"map" (AP@[.5:.95]), "ap50", "ap75", "aps", "apm", "apl", "ap_per_digit":
    {"0": AP, ..., "9": AP}}`` as floats. As in pycocotools, a value that is undefined (no GT
    box of that size range or that digit) is -1.0. Empty ``results`` give 0.0 for every
    defined value.
    """
    coco_gt_dict = evaluable_gt(gt)
    image_ids = {img["id"] for img in coco_gt_dict["images"]}
    if not image_ids:
        raise ValueError("gt has no images to evaluate")
    # Copies with only the result keys: loadRes adds id/area/segmentation to what it gets.
    records = [{"image_id": int(r["image_id"]), "bbox": [float(v) for v in r["bbox"]],
                "score": float(r["score"]), "category_id": int(r["category_id"])}
               for r in results if int(r["image_id"]) in image_ids]

    coco_gt = COCO(coco_gt_dict, print_function=quiet)
    coco_dt = coco_gt.loadRes(records)
    ev = COCOeval_faster(coco_gt, coco_dt, iouType="bbox", print_function=quiet)
    ev.params.imgIds = sorted(image_ids)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()

    out = {key: float(ev.stats[i]) for i, key in enumerate(SUMMARY_KEYS)}
    # precision: [iou thresholds, recall points, categories, area ranges, max dets];
    # area index 0 = "all", max-dets index -1 = 100, as COCO's headline AP.
    precision = np.asarray(ev.eval["precision"])
    cat_index = {c: k for k, c in enumerate(ev.params.catIds)}
    out["ap_per_digit"] = {str(category_to_digit(c)): _mean_defined(precision[:, :, cat_index[c], 0, -1])
                           for c in CATEGORY_IDS}
    return out


def gt_numbers(gt: dict) -> dict[int, str]:
    """``{image_id: number}`` for every image of ``gt``: its GT digits ordered left to right.

    Ordered by box centre x (x + w / 2 of the COCO xywh bbox); equal centres keep annotation
    order. ``"-1"`` for an image without boxes. This is how Task 2's truth is derived.
    """
    numbers = {}
    for image_id, anns in _annotations_by_image(gt).items():
        if not anns:
            numbers[image_id] = NO_NUMBER
            continue
        ordered = sorted(anns, key=lambda a: float(a["bbox"][0]) + float(a["bbox"][2]) / 2)
        numbers[image_id] = "".join(str(category_to_digit(a["category_id"])) for a in ordered)
    return numbers


def sequence_accuracy(pred: dict[int, str], truth: dict[int, str]) -> float:
    """Exact-match accuracy of number strings over ``truth``'s images (Task 2's score).

    An image missing from ``pred`` counts as wrong; extra images in ``pred`` are ignored.
    Compared as strings, so ``"07"`` != ``"7"``.
    """
    if not truth:
        raise ValueError("sequence_accuracy: truth is empty, nothing to score")
    return sum(pred.get(i) == t for i, t in truth.items()) / len(truth)


def _is_subsequence(short: str, long: str) -> bool:
    """True when ``short`` is ``long`` with some characters removed (order kept)."""
    it = iter(long)
    return all(ch in it for ch in short)


def classify_error(pred: str | None, truth: str) -> str:
    """Which of :data:`ERROR_KINDS` one prediction is (None = missing); rules in :func:`number_errors`."""
    if pred is None:
        return "nothing_found"
    p = "" if pred == NO_NUMBER else pred
    t = "" if truth == NO_NUMBER else truth
    if p == t:
        return "correct"
    if not p:
        return "nothing_found"
    if len(p) < len(t) and _is_subsequence(p, t):
        return "missed_digit"
    if len(p) > len(t) and _is_subsequence(t, p):
        return "extra_digit"
    if len(p) == len(t):
        return "wrong_order" if sorted(p) == sorted(t) else "wrong_digit"
    return "other"


def number_errors(pred: dict[int, str], truth: dict[int, str]) -> dict[str, int]:
    """Count Task 2 outcomes over ``truth``'s images, one kind per image (counts sum to len(truth)).

    Rules, first match wins ("-1" is treated as the empty number):
      correct        pred == truth
      nothing_found  pred is "-1" while truth is not, or the image is missing from pred
                     (always, so that correct / len(truth) == sequence_accuracy)
      missed_digit   pred is truth with one or more digits removed ("17" for "117")
      extra_digit    truth is pred with digits removed ("1117" for "117"; any digit when truth is "-1")
      wrong_order    same length, same digits, different order ("71" for "17")
      wrong_digit    same length, not a permutation ("18" for "17")
      other          anything else (different length and digits, e.g. "28" for "117")
    """
    counts = Counter(classify_error(pred.get(i), t) for i, t in truth.items())
    return {kind: counts.get(kind, 0) for kind in ERROR_KINDS}


def digit_misreads(pred: dict[int, str], truth: dict[int, str]) -> Counter:
    """Counter of (true digit, digit read in its place) over the ``wrong_digit`` numbers of
    :func:`number_errors` (same length, position by position): which digits a model confuses."""
    misreads = Counter()
    for i, t in truth.items():
        p = pred.get(i)
        if classify_error(p, t) == "wrong_digit":
            misreads.update((a, b) for a, b in zip(t, p) if a != b)
    return misreads


def _fmt(value) -> str:
    """Three decimals; "n/a" for COCO's -1 (undefined) and for None."""
    return "n/a" if value is None or value < 0 else f"{value:.3f}"


def summarize(metrics: dict) -> str:
    """Multi-line human summary of a metrics dict; keys that are absent are skipped.

    Reads ``map ap50 ap75 aps apm apl`` and ``ap_per_digit`` (from :func:`coco_map`),
    ``accuracy`` (from :func:`sequence_accuracy`), ``decode_score_thresh`` (or ``score_thresh``)
    and ``decode_line_thresh`` (decoder thresholds used) and ``errors`` (from :func:`number_errors`).
    """
    lines = []
    if "map" in metrics:
        lines.append(f"COCO mAP@[.5:.95] {_fmt(metrics['map'])}   AP50 {_fmt(metrics.get('ap50'))}"
                     f"   AP75 {_fmt(metrics.get('ap75'))}")
    if any(k in metrics for k in ("aps", "apm", "apl")):
        lines.append(f"AP small {_fmt(metrics.get('aps'))}   medium {_fmt(metrics.get('apm'))}"
                     f"   large {_fmt(metrics.get('apl'))}")
    if "ap_per_digit" in metrics:
        per = metrics["ap_per_digit"]
        lines.append("AP per digit: " + "  ".join(f"{d}:{_fmt(per.get(d))}" for d in sorted(per)))
    if "accuracy" in metrics:
        thresh = metrics.get("decode_score_thresh", metrics.get("score_thresh"))
        line = metrics.get("decode_line_thresh", 0.0)
        on_line = f", >= {line:.2f} beside one on its line" if thresh is not None and 0 < line < thresh else ""
        at = f" (digits with score >= {thresh:.2f}{on_line})" if thresh is not None else ""
        lines.append(f"number accuracy {metrics['accuracy']:.4f}{at}")
    if "errors" in metrics:
        errors = metrics["errors"]
        total = sum(errors.values()) or 1
        lines.append("numbers: " + ", ".join(f"{k} {v} ({v / total:.1%})" for k, v in errors.items()))
    if not lines:
        raise ValueError(f"summarize: no known metric in keys {sorted(metrics)}; expected some of "
                         f"{list(SUMMARY_KEYS) + ['ap_per_digit', 'accuracy', 'errors']}")
    return "\n".join(lines)
