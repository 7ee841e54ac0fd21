"""Paired (image, target) transforms built on torchvision.transforms.v2, by named preset.

Input: a PIL RGB image and a target whose ``boxes`` are float (N, 4) xyxy in pixels of that
image. Output: a float32 tensor (3, H, W) in [0, 1] (NOT normalised: the model's
GeneralizedRCNNTransform normalises once) and the target with boxes moved along and boxes
that left the image removed with their labels. No preset ever flips: a mirrored 2 is not a 2.

Presets:
  none   - to tensor only (evaluation, prediction)
  light  - colour jitter and small scale/shift
  digits - the default for training: photometric distortion, colour inversion (light digits
           on dark plates and the reverse), grey, blur, zoom-out (small numbers in big photos),
           affine (small rotation, shear, scale, shift)
"""
from __future__ import annotations

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

PRESETS = ("none", "light", "digits")


def _augmentations(preset: str) -> list:
    if preset == "none":
        return []
    if preset == "light":
        return [v2.ColorJitter(0.3, 0.3, 0.3, 0.05),
                v2.RandomAffine(degrees=0, translate=(0.05, 0.05), scale=(0.85, 1.15))]
    if preset == "digits":
        return [
            v2.RandomPhotometricDistort(p=0.5),
            v2.RandomInvert(p=0.2),
            v2.RandomGrayscale(p=0.1),
            v2.RandomApply([v2.GaussianBlur(kernel_size=5, sigma=(0.1, 1.5))], p=0.2),
            v2.RandomZoomOut(fill=127, side_range=(1.0, 1.6), p=0.2),
            v2.RandomAffine(degrees=6, translate=(0.06, 0.06), scale=(0.8, 1.2), shear=(-10, 10, -3, 3),
                            fill=127),
        ]
    raise ValueError(f"unknown augmentation preset {preset!r}; choose one of {PRESETS}")


class PairedTransform:
    """Callable ``(PIL image, target) -> (tensor, target)``; see the module docstring."""

    def __init__(self, preset: str = "none"):
        self.preset = preset
        self.ops = v2.Compose([v2.ToImage(), *_augmentations(preset),
                               v2.ToDtype(torch.float32, scale=True),
                               v2.SanitizeBoundingBoxes(min_size=2.0)])

    def __call__(self, image, target: dict):
        w, h = image.size
        target = dict(target)
        target["boxes"] = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=(h, w))
        img, target = self.ops(image, target)
        target["boxes"] = target["boxes"].as_subclass(torch.Tensor)
        return img.as_subclass(torch.Tensor), target

    def __repr__(self) -> str:
        return f"PairedTransform({self.preset!r})"


def build_transforms(preset: str, train: bool) -> PairedTransform:
    """The training preset when ``train``, else to-tensor only."""
    return PairedTransform(preset if train else "none")
