"""Paired (image, target) transforms built on torchvision.transforms.v2, by named preset.

Input: a PIL RGB image and a target whose ``boxes`` are float (N, 4) xyxy in pixels of that
image. Output: a float32 tensor (3, H, W) in [0, 1] (NOT normalised: the model's
GeneralizedRCNNTransform normalises once) and the target with boxes moved along and boxes
that left the image removed with their labels. No preset ever flips: a mirrored 2 is not a 2.

Presets:
  none   - to tensor only (evaluation, prediction)
  digits - the default for training: photometric distortion, colour inversion (light digits
           on dark plates and the reverse), grey (only where the digits stay visible), blur,
           zoom-out (small numbers in big photos), affine (small rotation, shear, scale, shift)

Any preset can start with :class:`CropAroundDigits` (``build_transforms(..., crop_digits_p=p)``,
config ``crop_digits_p``): the view of a photo that zoom-in reading (digitdet/read/zoom.py) gives the
model in its second pass.
"""
from __future__ import annotations

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

PRESETS = ("none", "digits")


def _augmentations(preset: str) -> list:
    if preset == "none":
        return []
    if preset == "digits":
        return [
            v2.RandomPhotometricDistort(p=0.5),
            v2.RandomInvert(p=0.2),
            GreyKeepingDigits(p=0.1),
            v2.RandomApply([v2.GaussianBlur(kernel_size=5, sigma=(0.1, 1.5))], p=0.2),
            v2.RandomZoomOut(fill=127, side_range=(1.0, 1.6), p=0.2),
            v2.RandomAffine(degrees=6, translate=(0.06, 0.06), scale=(0.8, 1.2), shear=(-10, 10, -3, 3),
                            fill=127),
        ]
    raise ValueError(f"unknown augmentation preset {preset!r}; choose one of {PRESETS}")


class GreyKeepingDigits(torch.nn.Module):
    """With probability ``p``, the photo in grey (ITU-R 601 luminance, as ``v2.Grayscale``) when
    every digit keeps at least ``keep`` of its contrast there; else left in colour.

    A digit whose ink and plate differ in colour only (purple on green: the renderer draws such
    pairs, ``synth_style.VIVID_P``) vanishes in grey, and a plain ``RandomGrayscale`` trained the
    model on boxes round nothing. Contrast is measured in each box as the spread (standard
    deviation) of the luminance over that of the colour channels (their root mean variance):
    1 for grey ink on a grey plate, about 0.2 for purple on green. A ``v2`` transform of
    ``(image, target)`` (uint8 or float image tensor, ``target["boxes"]`` xyxy); draws from
    torch's RNG once per call, as ``RandomGrayscale`` does.
    """

    def __init__(self, p: float, keep: float = 0.5):
        super().__init__()
        if not 0 <= p <= 1 or not 0 <= keep <= 1:
            raise ValueError(f"GreyKeepingDigits needs 0 <= p <= 1 and 0 <= keep <= 1, got {p}, {keep}")
        self.p, self.keep = p, keep
        self.weights = torch.tensor([0.2989, 0.587, 0.114])[:, None]  # luminance, as v2.Grayscale

    def keeps_digits(self, image: torch.Tensor, boxes: torch.Tensor) -> bool:
        """True when every box of ``boxes`` (xyxy) keeps ``keep`` of its contrast in grey."""
        height, width = image.shape[-2:]
        for x1, y1, x2, y2 in boxes.round().int().tolist():
            patch = image[:3, max(0, y1):min(height, y2), max(0, x1):min(width, x2)].float().flatten(1)
            if patch.shape[1] < 4:
                continue
            colour = patch.var(dim=1).mean().sqrt()
            grey = (self.weights * patch).sum(0).std()
            if colour > 0 and grey < self.keep * colour:
                return False
        return True

    def forward(self, image, target):
        if float(torch.rand(())) >= self.p or not self.keeps_digits(image, target["boxes"]):
            return image, target
        return v2.functional.rgb_to_grayscale(image, num_output_channels=3), target


class CropAroundDigits(torch.nn.Module):
    """With probability ``p``, crop a photo to the box around all its digits grown by a random
    ``margin`` (low, high) digit heights on each side, drawn per side, clipped to the photo.

    Zoom-in reading crops a photo whose digits are small to 0.75 digit heights around them
    (digits at ~0.4 of the crop's height); training on such crops shows the model that view.
    Takes and returns ``(image, target)`` as torchvision.transforms.v2 transforms do, with
    ``target["boxes"]`` a ``tv_tensors.BoundingBoxes`` (xyxy); draws from torch's RNG.
    """

    def __init__(self, p: float, margin: tuple[float, float] = (0.4, 1.2)):
        super().__init__()
        if not 0 <= p <= 1 or not 0 <= margin[0] <= margin[1]:
            raise ValueError(f"CropAroundDigits needs 0 <= p <= 1 and 0 <= low <= high margins, got {p}, {margin}")
        self.p, self.margin = p, margin

    def forward(self, image, target):
        boxes = target["boxes"]
        if len(boxes) == 0 or float(torch.rand(())) >= self.p:
            return image, target
        height, width = boxes.canvas_size
        digit_h = float((boxes[:, 3] - boxes[:, 1]).median())
        lo, hi = self.margin
        m = (lo + (hi - lo) * torch.rand(4)) * digit_h  # left, top, right, bottom
        x1 = max(0, int(float(boxes[:, 0].min() - m[0])))
        y1 = max(0, int(float(boxes[:, 1].min() - m[1])))
        x2 = min(width, int(float(boxes[:, 2].max() + m[2])) + 1)
        y2 = min(height, int(float(boxes[:, 3].max() + m[3])) + 1)
        if x2 - x1 < 2 or y2 - y1 < 2:
            return image, target
        target = {**target, "boxes": v2.functional.crop(boxes, y1, x1, y2 - y1, x2 - x1)}
        return v2.functional.crop(image, y1, x1, y2 - y1, x2 - x1), target


class PairedTransform:
    """Callable ``(PIL image, target) -> (tensor, target)``; see the module docstring."""

    def __init__(self, preset: str = "none", crop_digits_p: float = 0.0):
        self.preset = preset
        crop = [CropAroundDigits(crop_digits_p)] if crop_digits_p > 0 else []
        self.ops = v2.Compose([v2.ToImage(), *crop, *_augmentations(preset),
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


def build_transforms(preset: str, train: bool, crop_digits_p: float = 0.0) -> PairedTransform:
    """The training preset (after :class:`CropAroundDigits` with probability ``crop_digits_p``)
    when ``train``, else to-tensor only."""
    return PairedTransform(preset, crop_digits_p) if train else PairedTransform("none")
