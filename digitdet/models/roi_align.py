"""Multi-scale RoIAlign whose backward pass is fast on a CPU (training with one sample per bin).

torchvision's CPU ``roi_align`` backward scatters every output value into the feature map one
element at a time; at digit scale (512 RoIs of 128 channels on 8x20 maps) it took 20% of a
training step on one thread. With ``sampling_ratio=1`` every output bin is ONE bilinear sample,
i.e. a weighted sum of 4 feature-map pixels, so the whole pooling over all FPN levels is a
single ``F.embedding_bag`` (4 rows per bin, weights = bilinear weights) over the maps' pixels
stored as rows of C channels, and its backward is a vectorised row scatter.

The sample points, the out-of-map rule and the border clamping are those of torchvision's
kernel (``aligned=False``, as ``MultiScaleRoIAlign`` uses), so the output equals
``MultiScaleRoIAlign``'s up to float rounding (tested). Inference, ONNX export, GPUs (whose
backward is fast already) and any other sampling ratio use torchvision's op unchanged.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.poolers import _convert_to_roi_format, _filter_input


def _axis_samples(start: Tensor, size: Tensor, bins: int, length: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Pixel indices, bilinear weights and an in-map mask of one sample per bin along one axis.

    ``start``/``size`` (K,) in feature-map pixels, ``length`` (K,) each RoI's map size along the
    axis; returns (K, bins, 2) low/high indices, (K, bins, 2) weights and (K, bins) mask. Follows
    torchvision's ``bilinear_interpolate``: a sample outside [-1, length] reads 0, one in
    [-1, 0] is clamped to 0, one past the last pixel reads the last pixel.
    """
    centres = start[:, None] + (torch.arange(bins, device=start.device, dtype=start.dtype) + 0.5) * (size / bins)[:, None]
    last_pixel = (length - 1)[:, None]
    inside = (centres >= -1.0) & (centres <= length[:, None])
    pos = centres.clamp(min=0.0)
    low = torch.minimum(pos.floor().long(), last_pixel)
    past_end = low >= last_pixel
    high = torch.where(past_end, low, low + 1)
    frac = torch.where(past_end, torch.zeros_like(pos), pos - low.to(pos.dtype))
    return torch.stack([low, high], -1), torch.stack([1.0 - frac, frac], -1), inside


def roi_align_rows(features: list[Tensor], rois: Tensor, levels: Tensor, scales: list[float],
                   output_size: tuple[int, int]) -> Tensor:
    """RoIAlign (one sample per bin, ``aligned=False``) of ``rois`` (K, 5: batch index, x1, y1,
    x2, y2 in image pixels), RoI k read from map ``levels[k]`` at ``scales[levels[k]]``.

    Returns (K, C, PH, PW). Every map is (N, C, H_l, W_l) with the same N and C.
    """
    ph, pw = output_size
    c = features[0].shape[1]
    # one table of pixels as rows: level l's pixel (b, y, x) is row offset_l + (b * H_l + y) * W_l + x
    table = torch.cat([f.permute(0, 2, 3, 1).reshape(-1, c) for f in features])
    sizes = torch.tensor([[f.shape[2], f.shape[3]] for f in features], device=rois.device)
    offsets = torch.tensor([0] + [f.shape[0] * f.shape[2] * f.shape[3] for f in features[:-1]],
                           device=rois.device).cumsum(0)
    scale = torch.tensor(scales, dtype=rois.dtype, device=rois.device)[levels]
    height, width = sizes[levels, 0], sizes[levels, 1]
    box = rois[:, 1:] * scale[:, None]
    ys, wys, iny = _axis_samples(box[:, 1], (box[:, 3] - box[:, 1]).clamp(min=1.0), ph, height)
    xs, wxs, inx = _axis_samples(box[:, 0], (box[:, 2] - box[:, 0]).clamp(min=1.0), pw, width)
    base = offsets[levels] + rois[:, 0].long() * height * width
    # (K, PH, PW, 2, 2): the 4 corner pixels of every bin's sample and their weights
    rows = (base[:, None, None, None, None] + ys[:, :, None, :, None] * width[:, None, None, None, None]
            + xs[:, None, :, None, :])
    weights = wys[:, :, None, :, None] * wxs[:, None, :, None, :]
    weights = weights * (iny[:, :, None] & inx[:, None, :])[..., None, None].to(weights.dtype)
    out = F.embedding_bag(rows.reshape(-1, 4), table, per_sample_weights=weights.reshape(-1, 4).to(table.dtype),
                          mode="sum")
    return out.reshape(len(rois), ph, pw, c).permute(0, 3, 1, 2).contiguous()


class TrainingRoIAlign(MultiScaleRoIAlign):
    """``MultiScaleRoIAlign`` that pools with ``roi_align_rows`` while training with gradients
    and ``sampling_ratio == 1``; torchvision's op otherwise (see the module docstring)."""

    def forward(self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]) -> Tensor:
        features = _filter_input(x, self.featmap_names)
        if not (self.training and torch.is_grad_enabled() and self.sampling_ratio == 1
                and self.scales is not None and self.map_levels is not None
                and features[0].device.type == "cpu") or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export():
            return super().forward(x, boxes, image_shapes)
        rois = _convert_to_roi_format(boxes)
        if len(features) == 1:
            levels = torch.zeros(len(rois), dtype=torch.long, device=rois.device)
        else:
            levels = self.map_levels(boxes).long()
        return roi_align_rows(features, rois, levels, self.scales, self.output_size)
