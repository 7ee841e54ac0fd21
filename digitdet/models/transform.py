"""Multi-scale training: each training batch resized to one of several input scales.

torchvision's ``GeneralizedRCNNTransform`` can train multi-scale (a tuple ``min_size``), but it
draws the size per image and then pads the batch to its largest image, so a batch costs what
its largest scale costs, and its evaluation scale is the tuple's last entry. This subclass
draws one factor per batch (torch's RNG: reproducible under ``seed``), multiplies ``min_size``
and ``max_size`` by it, and leaves inference at the configured scale.
"""
from __future__ import annotations

import torch
from torchvision.models.detection.transform import GeneralizedRCNNTransform


class BatchScaleTransform(GeneralizedRCNNTransform):
    def __init__(self, *args, train_scales: tuple[float, ...] = (), **kwargs):
        super().__init__(*args, **kwargs)
        if any(f <= 0 for f in train_scales):
            raise ValueError(f"train_scales must be positive factors of min_size, got {list(train_scales)}")
        self.train_scales = tuple(float(f) for f in train_scales)

    @classmethod
    def from_torchvision(cls, t: GeneralizedRCNNTransform, train_scales) -> "BatchScaleTransform":
        """Same normalisation and scale as ``t``; training batches at ``train_scales`` x that scale."""
        return cls(t.min_size[-1], t.max_size, t.image_mean, t.image_std, size_divisible=t.size_divisible,
                   fixed_size=t.fixed_size, _skip_resize=t._skip_resize, train_scales=train_scales)

    def forward(self, images, targets=None):
        if not (self.training and self.train_scales):
            return super().forward(images, targets)
        f = self.train_scales[int(torch.randint(len(self.train_scales), ()).item())]
        base = self.min_size, self.max_size
        self.min_size, self.max_size = (round(base[0][-1] * f),), round(base[1] * f)
        try:
            return super().forward(images, targets)
        finally:
            self.min_size, self.max_size = base
