"""digitdet's input transform: torchvision's, with exact input sizes and multi-scale training.

Exact sizes: torchvision scales an image by ``min(min_size / short side, max_size / long side)``
and lets ``interpolate`` floor ``side * factor``. In eager PyTorch that product is computed in
double precision and often lands a hair under the integer (94 x 96/94 = 95.999...), so the
short side comes out at 95 instead of 96; an exported ONNX graph computes it in float32 and
gets 96. One pixel moves the whole feature grid: scores of the bundled model moved by up to
0.34 between torch and ONNX Runtime on 5 of 100 test photos. The factor is nudged up by one part
in a million, far less than a pixel, so both give the intended size.

Multi-scale training: torchvision's ``GeneralizedRCNNTransform`` can train multi-scale (a tuple
``min_size``), but it draws the size per image and then pads the batch to its largest image, so
a batch costs what its largest scale costs, and its evaluation scale is the tuple's last entry.
Here one factor is drawn per batch (torch's RNG: reproducible under ``seed``), multiplies
``min_size`` and ``max_size``, and inference stays at the configured scale.

Channels-last: the padded batch can leave in NHWC memory, so a model whose conv weights are
channels-last (config ``channels_last``) runs every feature map in that layout.
"""
from __future__ import annotations

import torch
from torchvision.models.detection.transform import GeneralizedRCNNTransform

# Relative nudge of the resize factor: > float32 rounding error (~1e-7), < 1 px at any size.
SIZE_NUDGE = 1.0 + 1e-6


class DigitTransform(GeneralizedRCNNTransform):
    def __init__(self, *args, train_scales: tuple[float, ...] = (), channels_last: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        if self.size_divisible < 1:
            raise ValueError(f"size_divisible must be a positive number of pixels, got {self.size_divisible}")
        self.channels_last = channels_last
        if any(f <= 0 for f in train_scales):
            raise ValueError(f"train_scales must be positive factors of min_size, got {list(train_scales)}")
        self.train_scales = tuple(float(f) for f in train_scales)

    @classmethod
    def from_torchvision(cls, t: GeneralizedRCNNTransform, train_scales=(), channels_last: bool = False,
                         size_divisible: int | None = None) -> "DigitTransform":
        """Same normalisation and scale as ``t``; training batches at ``train_scales`` x that scale;
        the padded batch in channels-last memory if ``channels_last``, its sides multiples of
        ``size_divisible`` (None: ``t``'s)."""
        return cls(t.min_size[-1], t.max_size, t.image_mean, t.image_std,
                   size_divisible=t.size_divisible if size_divisible is None else size_divisible,
                   fixed_size=t.fixed_size, _skip_resize=t._skip_resize, train_scales=train_scales,
                   channels_last=channels_last)

    def forward(self, images, targets=None):
        factor = 1.0
        if self.training and self.train_scales:
            factor = self.train_scales[int(torch.randint(len(self.train_scales), ()).item())]
        base = self.min_size, self.max_size
        self.min_size = (round(base[0][-1] * factor) * SIZE_NUDGE,)
        self.max_size = round(base[1] * factor) * SIZE_NUDGE
        try:
            image_list, targets = super().forward(images, targets)
        finally:
            self.min_size, self.max_size = base
        if self.channels_last:
            image_list.tensors = image_list.tensors.contiguous(memory_format=torch.channels_last)
        return image_list, targets
