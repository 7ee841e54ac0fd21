"""RoI heads with a choice of box regression loss (smooth L1 with any beta, or GIoU).

torchvision's ``RoIHeads`` hard-codes smooth L1 with beta 1/9 in ``fastrcnn_loss``; this
subclass only replaces the training loss. Inference is torchvision's, unchanged.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops import generalized_box_iou_loss

BOX_LOSSES = ("smooth_l1", "giou")


class DigitRoIHeads(RoIHeads):
    def __init__(self, *args, box_loss: str = "smooth_l1", smooth_l1_beta: float = 1.0 / 9, **kwargs):
        super().__init__(*args, **kwargs)
        if box_loss not in BOX_LOSSES:
            raise ValueError(f"unknown box_loss {box_loss!r}; choose one of {BOX_LOSSES}")
        self.box_loss, self.smooth_l1_beta = box_loss, smooth_l1_beta

    @classmethod
    def from_torchvision(cls, heads: RoIHeads, box_loss: str, smooth_l1_beta: float) -> "DigitRoIHeads":
        """Same modules and settings as ``heads``, with our loss."""
        return cls(heads.box_roi_pool, heads.box_head, heads.box_predictor,
                   heads.proposal_matcher.high_threshold, heads.proposal_matcher.low_threshold,
                   heads.fg_bg_sampler.batch_size_per_image, heads.fg_bg_sampler.positive_fraction,
                   heads.box_coder.weights, heads.score_thresh, heads.nms_thresh, heads.detections_per_img,
                   box_loss=box_loss, smooth_l1_beta=smooth_l1_beta)

    def forward(self, features, proposals, image_shapes, targets=None):
        if not self.training:
            return super().forward(features, proposals, image_shapes, targets)
        proposals, _, labels, regression_targets = self.select_training_samples(proposals, targets)
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_features)
        labels = torch.cat(labels)
        loss_classifier = F.cross_entropy(class_logits, labels)
        loss_box_reg = self._box_loss(box_regression, labels, torch.cat(regression_targets),
                                      torch.cat(proposals))
        return [], {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg}

    def _box_loss(self, box_regression, labels, regression_targets, proposals):
        """Loss over positive RoIs, normalised by the number of sampled RoIs (torchvision's)."""
        n = labels.numel()
        pos = torch.where(labels > 0)[0]
        deltas = box_regression.reshape(n, -1, 4)[pos, labels[pos]]
        if self.box_loss == "smooth_l1":
            loss = F.smooth_l1_loss(deltas, regression_targets[pos], beta=self.smooth_l1_beta, reduction="sum")
            return loss / max(n, 1)
        # GIoU works on boxes: decode predicted and target deltas against their proposals.
        pred = self.box_coder.decode_single(deltas, proposals[pos])
        gt = self.box_coder.decode_single(regression_targets[pos], proposals[pos])
        return generalized_box_iou_loss(pred, gt, reduction="sum") / max(n, 1)
