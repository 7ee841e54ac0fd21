"""Test-time augmentation: run the detector on several views of each image and fuse the boxes.

A view rescales the model's input (its ``min_size``/``max_size`` times ``scale``) and/or
shifts the image by cropping a few pixels off its left and top edges, which moves every
digit against the anchor grid and the feature strides. Each view's boxes are mapped back
to pixels of the original image (torchvision undoes the resize; the crop offset is added
back here), then the views are fused like ensemble members with weighted boxes fusion
(:func:`digitdet.ensemble.fuse_image`), every view with weight 1.

With WBF's default ``conf_type="avg"`` a box found in k of V views scores its mean score
times k / V, so a digit seen at one scale only is kept for mAP but rarely read as a digit.

Output contract is that of :func:`digitdet.engine.predict_batches`: ``{image_id: (boxes
xyxy float (N, 4) in pixels of the original image, labels int64 (N,) 1..10, scores (N,))}``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from digitdet.ensemble import fuse_image
from digitdet.engine import model_detections, predict_batches
from digitdet.inference import predict_folder



@dataclass(frozen=True)
class View:
    """One test-time view. ``scale`` multiplies the model's input size; ``shift`` (dx, dy) is in
    pixels of the MODEL INPUT (so it moves digits by the same fraction of a feature stride
    whatever the photo's size) and is cropped off the image's left/top edges."""
    scale: float = 1.0
    shift: tuple[int, int] = (0, 0)


# Three scales around the training scale, plus a half-stride shift (stride 8 of the first FPN
# level) at the training scale: four forward passes per image.
DEFAULT_VIEWS = (View(0.8), View(1.0), View(1.25), View(1.0, (4, 4)))


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


def _resize_factor(height: int, width: int, min_size: int, max_size: int) -> float:
    """torchvision's resize factor for an image (short side -> min_size, long side capped at max_size)."""
    return min(min_size / min(height, width), max_size / max(height, width))


def _crop_offset(height: int, width: int, view: View, min_size: int, max_size: int) -> tuple[int, int]:
    """(dx, dy) in original pixels that moves the model input by ``view.shift`` model pixels."""
    if view.shift == (0, 0):
        return 0, 0
    f = _resize_factor(height, width, min_size, max_size)
    dx, dy = (max(1, round(s / f)) if s else 0 for s in view.shift)
    # Never crop more than a quarter of the image: a digit at the edge would be cut off.
    return min(dx, width // 4), min(dy, height // 4)


@torch.inference_mode()
def predict_views(model, images: list, device, views=DEFAULT_VIEWS) -> list[list[tuple]]:
    """Detections of every view for a batch of images (3, H, W) float tensors in [0, 1].

    Returns ``[per image: [per view: (boxes xyxy float64 (N, 4) in original pixels, labels, scores)]]``.
    The model's transform sizes are restored afterwards, even on error.
    """
    if not views:
        raise ValueError("predict_views needs at least one View")
    transform = model.transform
    base_min, base_max = transform.min_size, transform.max_size
    per_image: list[list[tuple]] = [[] for _ in images]
    try:
        for view in views:
            if view.scale <= 0:
                raise ValueError(f"TTA view scale must be > 0, got {view.scale}")
            min_size, max_size = round(base_min[-1] * view.scale), round(base_max * view.scale)
            transform.min_size, transform.max_size = (min_size,), max_size
            crops, offsets = [], []
            for im in images:
                dx, dy = _crop_offset(im.shape[-2], im.shape[-1], view, min_size, max_size)
                crops.append(im[:, dy:, dx:].to(device, non_blocking=True))
                offsets.append(np.array([dx, dy, dx, dy], dtype=np.float64))
            for k, ((boxes, labels, scores), off) in enumerate(zip(model_detections(model, crops, device), offsets)):
                per_image[k].append((boxes.astype(np.float64) + off, labels, scores))
    finally:
        transform.min_size, transform.max_size = base_min, base_max
    return per_image


def tta_detector(model, device, views=DEFAULT_VIEWS, method: str = "wbf", iou: float = 0.55,
                 conf_type: str = "avg"):
    """A ``detect(images)`` for :func:`digitdet.engine.predict_batches`: every view, fused per image
    with ``method``/``iou``/``conf_type`` (see :func:`digitdet.ensemble.fuse_image`)."""
    def detect(images: list) -> list[tuple]:
        per_image = predict_views(model, images, device, views)
        # (width, height) of each original image: WBF normalises boxes by it
        return [fuse_image(view_dets, (im.shape[-1], im.shape[-2]), None, method, iou, 0.0, conf_type)
                for im, view_dets in zip(images, per_image)]
    return detect


def predict_batches_tta(model, loader, device, views=DEFAULT_VIEWS, method: str = "wbf", iou: float = 0.55,
                        conf_type: str = "avg", progress: bool = True, desc: str = "predict (TTA)") -> dict:
    """:func:`digitdet.engine.predict_batches` with test-time augmentation; same return dict."""
    return predict_batches(model, loader, device, progress=progress, desc=desc,
                           detect=tta_detector(model, device, views, method, iou, conf_type))


def predict_folder_tta(model, cfg, images_dir, device, batch_size: int = 32, workers: int = 2,
                       progress: bool = True, views=DEFAULT_VIEWS) -> dict:
    """:func:`digitdet.inference.predict_folder` with test-time augmentation (same return dict)."""
    return predict_folder(model, cfg, images_dir, device, batch_size, workers, progress,
                          detect=tta_detector(model, device, views))
