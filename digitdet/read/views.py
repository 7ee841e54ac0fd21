"""Views of a photo at another input scale or shifted against the anchor grid, read by the same model.

A view rescales the model's input (its ``min_size``/``max_size`` times ``scale``, set with
:func:`digitdet.read.detector.at_scale`) and/or shifts the image by cropping a few pixels off
its left and top edges, which moves every digit against the anchor grid and the feature
strides. Each view's boxes are mapped back to pixels of the original image (torchvision undoes
the resize; the crop offset is added back here). Test-time augmentation (:mod:`digitdet.read.tta`)
fuses several views; zoom-in reading's second look (:mod:`digitdet.read.zoom`) takes one.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from digitdet.read.detect import model_detections
from digitdet.read.detector import at_scale, input_scale


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
    base_min, base_max = input_scale(model)
    per_image: list[list[tuple]] = [[] for _ in images]
    for view in views:
        if view.scale <= 0:
            raise ValueError(f"TTA view scale must be > 0, got {view.scale}")
        min_size, max_size = round(base_min * view.scale), round(base_max * view.scale)
        crops, offsets = [], []
        for im in images:
            dx, dy = _crop_offset(im.shape[-2], im.shape[-1], view, min_size, max_size)
            crops.append(im[:, dy:, dx:].to(device, non_blocking=True))
            offsets.append(np.array([dx, dy, dx, dy], dtype=np.float64))
        with at_scale(model, min_size, max_size):
            dets = model_detections(model, crops, device)
        for k, ((boxes, labels, scores), off) in enumerate(zip(dets, offsets)):
            per_image[k].append((boxes.astype(np.float64) + off, labels, scores))
    return per_image
