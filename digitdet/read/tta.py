"""Test-time augmentation: run the detector on several views of each image and fuse the boxes.

The views (:mod:`digitdet.read.views`) are fused like ensemble members with weighted boxes
fusion (:func:`digitdet.read.fusion.fuse_image`), every view with weight 1.

With WBF's default ``conf_type="avg"`` a box found in k of V views scores its mean score
times k / V, so a digit seen at one scale only is kept for mAP but rarely read as a digit.

Output contract is that of :func:`digitdet.read.detect.predict_batches`: ``{image_id: (boxes
xyxy float (N, 4) in pixels of the original image, labels int64 (N,) 1..10, scores (N,))}``.
"""
from __future__ import annotations

from digitdet.read.fusion import fuse_image
from digitdet.read.views import DEFAULT_VIEWS, View, predict_views


def views_from_scales(text: str) -> tuple[View, ...]:
    """Views for ``--tta-scales``: comma-separated factors of the model's input scale, e.g.
    ``"0.875,1"`` (no shift). Raises ValueError naming the bad entry."""
    views = []
    for part in text.split(","):
        try:
            scale = float(part)
        except ValueError:
            raise ValueError(f"--tta-scales: {part.strip()!r} is not a number (expected e.g. 0.875,1)") from None
        if not 0.25 <= scale <= 4.0:
            raise ValueError(f"--tta-scales: {scale:g} is outside 0.25-4 times the input scale")
        views.append(View(scale))
    return tuple(views)


def requested_views(tta: bool, scales: str | None) -> tuple[View, ...] | None:
    """The views ``--tta`` (DEFAULT_VIEWS) or ``--tta-scales S,...`` ask for; None: plain reading."""
    if scales:
        return views_from_scales(scales)
    return DEFAULT_VIEWS if tta else None


def tta_detector(model, device, views=DEFAULT_VIEWS, method: str = "wbf", iou: float = 0.55,
                 conf_type: str = "avg"):
    """A ``detect(images)`` for :func:`digitdet.read.detect.predict_batches`: every view, fused per image
    with ``method``/``iou``/``conf_type`` (see :func:`digitdet.read.fusion.fuse_image`)."""
    def detect(images: list) -> list[tuple]:
        per_image = predict_views(model, images, device, views)
        # (width, height) of each original image: WBF normalises boxes by it
        return [fuse_image(view_dets, (im.shape[-1], im.shape[-2]), None, method, iou, 0.0, conf_type)
                for im, view_dets in zip(images, per_image)]
    return detect


