"""Zoom-in reading: a second look at digits that are small in their photo, cropped and enlarged.

The detector reads a photo at one input scale (its short side resized to ``min_size``), so a
number that fills a small part of a large photo reaches the model a few pixels tall. With the
bundled model on 1,000 synthetic test photos, numbers whose digits were under 15% of the
photo's short side were read 35% of the time, against 95% at 30-45% (docs/results.md, "Zoom-in reading").

1. Pass 1 runs the detector on the whole photo.
2. Where it finds digits (score >= ``ZOOM_SCORE``) whose median height is under ``ZOOM_BELOW``
   x the photo's short side, :func:`zoom_region` takes the box around them grown by
   ``ZOOM_MARGIN`` digit heights on every side (clipped to the photo).
3. Pass 2 runs the same detector on those crops; the model's own transform enlarges each to its
   input scale, so the digits come out at about 1 / (1 + 2 x margin) of its height.
4. Pass 2's detections, moved back to pixels of the photo, replace pass 1's for that photo.
   Photos with no such digits keep pass 1's detections (and cost one pass).
5. Second look: a photo where pass 1 finds no digit scoring >= ``ZOOM_SCORE`` at all is read
   again whole at ``zoom_empty_scale`` x the input scale (:func:`enlarged_detector`; numbers
   too small to be found at the input scale), and the look with the more confident best
   digit is kept. (An ONNX graph takes the scale as an input; one of format 1, written by an
   older ``digitdet export``, has it frozen and reads without steps 5-6.)
6. Scan: a large photo, whose short side holds at least 4 input scales, where no look so far
   found a digit scoring the reading threshold (``decode_score_thresh``), is read whole at twice
   the second look's scale, then twice that, up to ``zoom_scan`` x the input scale, while its
   short side holds that many input scales. The number of a phone's picture of a house front, a
   few percent of its height, reaches the model a few pixels tall at the input scale, where
   bricks and leaves score 0.3-0.8 as digits; at the scale that suits it, it scores ~1. A
   scan's look is taken only when its best digit scores ``ZOOM_SCAN_SCORE`` (at 4-8x, photos
   without a number had no digit over ~0.95, photos with one nearly always one over 0.98) and
   more than the look before; a photo whose digits came from the scan is read again on a crop
   around those scoring the reading threshold, as in steps 2-4. Photos of SVHN's size never
   reach this step (bench/large_photos.py).

Output contract is that of :func:`digitdet.read.detect.predict_batches`'s ``detect``: per image
``(boxes xyxy (N, 4) in pixels of the original image, labels int64 (N,) 1..10, scores (N,))``.
"""
from __future__ import annotations

import math

import numpy as np

from digitdet.read.onnx import OnnxDetector

# Steps 2-5 (module docstring): digits scoring ZOOM_SCORE count as found; a photo whose digits'
# median height is under ZOOM_BELOW x its short side is read again on a crop ZOOM_MARGIN digit
# heights beyond them; a scan's look counts when its best digit scores ZOOM_SCAN_SCORE.
ZOOM_SCORE = 0.3
ZOOM_BELOW = 0.45
ZOOM_MARGIN = 0.75
ZOOM_SCAN_SCORE = 0.98


def zoom_region(boxes_xyxy, scores, height: int, width: int, score: float = 0.3, below: float = 0.45,
                margin: float = 0.75) -> tuple[int, int, int, int] | None:
    """The crop ``(x1, y1, x2, y2)`` (integer pixels of the photo, x2/y2 exclusive) to read again,
    or None when no digit scores ``>= score`` or their median height is already ``>= below`` x
    the photo's short side. ``boxes_xyxy`` (N, 4) and ``scores`` (N,) are pass 1's detections
    in pixels of the (height, width) photo."""
    _check(below, margin)
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)[np.asarray(scores) >= score]
    if len(boxes) == 0:
        return None
    digit_h = float(np.median(boxes[:, 3] - boxes[:, 1]))
    if digit_h >= below * min(height, width):
        return None
    m = margin * digit_h
    x1, y1 = max(0, math.floor(boxes[:, 0].min() - m)), max(0, math.floor(boxes[:, 1].min() - m))
    x2, y2 = min(width, math.ceil(boxes[:, 2].max() + m)), min(height, math.ceil(boxes[:, 3].max() + m))
    if x2 - x1 < 2 or y2 - y1 < 2:  # degenerate boxes (e.g. all outside the photo): keep pass 1
        return None
    return x1, y1, x2, y2


def _check(below: float, margin: float, empty_scale: float = 0.0, scan: float = 0.0) -> None:
    if not (empty_scale == 0 or empty_scale > 1):
        raise ValueError(f"zoom_empty_scale must be 0 (off) or more than 1 (times the input scale), got {empty_scale}")
    if not scan >= 0:
        raise ValueError(f"zoom_scan must be 0 (off) or the largest factor of the input scale to search at, got {scan}")
    if not below > 0:
        raise ValueError(f"zoom_below must be > 0 (a fraction of the photo's short side), got {below}")
    if not margin >= 0:
        raise ValueError(f"zoom_margin must be >= 0 (digit heights around the digits), got {margin}")


def zoom_detector(detect, score: float = 0.3, below: float = 0.45, margin: float = 0.75, empty_detect=None,
                  scan=(), sure: float = 0.5, scan_score: float = 0.98):
    """Wrap ``detect(images) -> [(boxes, labels, scores), ...]`` (images: (3, H, W) tensors or arrays) so
    that photos with small digits are read again on a crop around them, photos with no digit
    scoring ``>= score`` again by ``empty_detect`` when given, and photos whose best digit so
    far scores under ``sure`` by each ``(min_side, look)`` of ``scan`` in turn, where their short
    side is at least ``min_side`` px; a scan's look counts only when its best digit scores
    ``scan_score`` (module docstring, steps 5-6). Bad settings raise ValueError here, before
    any photo is read."""
    _check(below, margin)

    def found(dets: tuple) -> bool:
        return bool((np.asarray(dets[2]) >= score).any())

    def read_crops(images: list, dets: list, ks, least: float) -> None:
        """Steps 2-4 for photos ``ks``: their small digits (scoring ``least``) read again on a crop, in place."""
        crops, where = [], []
        for k in ks:
            region = zoom_region(dets[k][0], dets[k][2], images[k].shape[-2], images[k].shape[-1], least, below, margin)
            if region is not None:
                x1, y1, x2, y2 = region
                crops.append(images[k][:, y1:y2, x1:x2])
                where.append((k, np.array([x1, y1, x1, y1], dtype=np.float32)))
        if crops:
            for (k, offset), (boxes, labels, scores) in zip(where, detect(crops)):
                dets[k] = ((boxes + offset).astype(np.float32), labels, scores)

    def zoomed(images: list) -> list[tuple]:
        first = list(detect(images))
        empty = [k for k, dets in enumerate(first) if empty_detect is not None and not found(dets)]
        read_crops(images, first, sorted(set(range(len(images))) - set(empty)), score)
        if empty:
            for k, again in zip(empty, empty_detect([images[k] for k in empty])):
                if _best(again[2]) > _best(first[k][2]):
                    first[k] = again
        scanned = set()
        for min_side, look in scan:
            for k, im in enumerate(images):
                if _best(first[k][2]) < sure and min(im.shape[-2:]) >= min_side:
                    again = look([im])[0]  # one photo a call: a batch of large photos at 8x is GBs
                    if _best(again[2]) >= scan_score and _best(again[2]) > _best(first[k][2]):
                        first[k] = again
                        scanned.add(k)
        # around the digits the scan is sure of: at 4-8x a large photo's bricks and leaves still
        # score 0.3-0.8, and a crop around them too would leave the number small again
        read_crops(images, first, sorted(scanned), sure)
        return first
    return zoomed


def _best(scores) -> float:
    return float(np.max(scores)) if len(scores) else -1.0


def enlarged_detector(model, device, factor: float):
    """``detect(images)`` that reads each photo with the model's input scale multiplied by
    ``factor``: for an :class:`OnnxDetector` ``model.at(factor)``; for a torch detector one
    test-time view of :func:`digitdet.read.views.predict_views`, which swaps the transform's
    sizes and restores them; boxes in pixels of the photo."""
    if isinstance(model, OnnxDetector):
        return model.at(factor)
    from digitdet.distributed import unwrap  # torch: imported only for a torch detector
    from digitdet.read.views import View, predict_views

    view = View(scale=factor)

    def detect(images: list) -> list[tuple]:
        return [(views[0][0].astype(np.float32), *views[0][1:])
                for views in predict_views(unwrap(model), images, device, (view,))]
    return detect


def _rescalable(model) -> bool:
    """True when ``model`` can read at another input scale than its own."""
    if isinstance(model, OnnxDetector):
        return model.scalable
    return hasattr(getattr(model, "module", model), "transform")  # a torch detector, maybe DDP-wrapped


def scan_factors(empty_scale: float, scan: float) -> list[float]:
    """The scales of step 6 (module docstring): ``empty_scale`` doubled, and doubled again, up to
    ``scan`` (factors of the input scale); none when either is 0."""
    factors, f = [], 2 * empty_scale
    while empty_scale and scan and f <= scan * (1 + 1e-9):
        factors.append(f)
        f *= 2
    return factors


def reading_detector(model, cfg, device, detect=None):
    """The ``detect`` that reads photos as ``cfg`` says: ``detect`` (default: one plain model
    call per batch), wrapped in :func:`zoom_detector` when ``cfg.zoom_read`` is on, with the
    second look at ``cfg.zoom_empty_scale`` and the scan up to ``cfg.zoom_scan`` when ``model``
    can read at another scale (a torch detector, or an ONNX graph that takes its scale)."""
    _check(ZOOM_BELOW, ZOOM_MARGIN, cfg.zoom_empty_scale, cfg.zoom_scan)
    if detect is None and isinstance(model, OnnxDetector):
        detect = model
    elif detect is None:
        from digitdet.read.detect import plain_detector  # torch: imported only for a torch detector

        detect = plain_detector(model, device)
    if not cfg.zoom_read:
        return detect
    empty, scan = None, []
    if cfg.zoom_empty_scale and model is not None and _rescalable(model):
        empty = enlarged_detector(model, device, cfg.zoom_empty_scale)
        scan = [(f * cfg.min_size, enlarged_detector(model, device, f))
                for f in scan_factors(cfg.zoom_empty_scale, cfg.zoom_scan)]
    return zoom_detector(detect, ZOOM_SCORE, ZOOM_BELOW, ZOOM_MARGIN, empty, scan, cfg.decode_score_thresh,
                         ZOOM_SCAN_SCORE)
