"""RoI heads with a choice of box regression loss (smooth L1 with any beta, or GIoU), an
optional class that is learnt but never returned, and optional iterative box refinement.

torchvision's ``RoIHeads`` hard-codes smooth L1 with beta 1/9 in ``fastrcnn_loss``; this
subclass replaces the training loss. Inference is torchvision's, plus one step when
``drop_label`` is set (the letter class, ``labels.LETTER``): detections of that label remove
the lower-scoring detections that lie mostly inside them (more than ``DROP_INSIDE`` of their box:
the "0" found on a "D", or the "1" found on its straight side), then are removed themselves.
With ``refine_steps`` > 0 each returned box is pooled again and regressed once more by its own
class's regressor (iterative bounding-box regression, Gidaris & Komodakis 2015), that many
times: the first pass regresses from proposals, which are loose.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops import box_area, clip_boxes_to_image, generalized_box_iou_loss

BOX_LOSSES = ("smooth_l1", "giou")
# a dropped-class detection removes lower-scoring ones with this much of their box inside it
# (intersection over the removed box's area, not IoU: a thin "1" on a D's side has IoU 0.3)
DROP_INSIDE = 0.5


def _inside_share(boxes: torch.Tensor, containers: torch.Tensor) -> torch.Tensor:
    """(N, M): the share of each of ``boxes``' area (xyxy, N) that lies inside each container (M)."""
    lt = torch.maximum(boxes[:, None, :2], containers[None, :, :2])
    rb = torch.minimum(boxes[:, None, 2:], containers[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    return inter / box_area(boxes).clamp(min=1e-6)[:, None]


class DigitRoIHeads(RoIHeads):
    def __init__(self, *args, box_loss: str = "smooth_l1", smooth_l1_beta: float = 1.0 / 9,
                 drop_label: int | None = None, refine_steps: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        if box_loss not in BOX_LOSSES:
            raise ValueError(f"unknown box_loss {box_loss!r}; choose one of {BOX_LOSSES}")
        if refine_steps < 0:
            raise ValueError(f"box_refine must be 0 or more, got {refine_steps}")
        self.box_loss, self.smooth_l1_beta, self.drop_label = box_loss, smooth_l1_beta, drop_label
        self.refine_steps = refine_steps

    @classmethod
    def from_torchvision(cls, heads: RoIHeads, box_loss: str, smooth_l1_beta: float,
                         drop_label: int | None = None, refine_steps: int = 0) -> "DigitRoIHeads":
        """Same modules and settings as ``heads``, with our loss (and ``drop_label``, ``refine_steps``)."""
        return cls(heads.box_roi_pool, heads.box_head, heads.box_predictor,
                   heads.proposal_matcher.high_threshold, heads.proposal_matcher.low_threshold,
                   heads.fg_bg_sampler.batch_size_per_image, heads.fg_bg_sampler.positive_fraction,
                   heads.box_coder.weights, heads.score_thresh, heads.nms_thresh, heads.detections_per_img,
                   box_loss=box_loss, smooth_l1_beta=smooth_l1_beta, drop_label=drop_label,
                   refine_steps=refine_steps)

    def postprocess_detections(self, class_logits, box_regression, proposals, image_shapes):
        """torchvision's, then the ``drop_label`` step of the module docstring (no branches on
        data, so the ONNX export traces it)."""
        boxes, scores, labels = super().postprocess_detections(class_logits, box_regression, proposals, image_shapes)
        if self.drop_label is None:
            return boxes, scores, labels
        for i, (b, s, lab) in enumerate(zip(boxes, scores, labels)):
            dropped = lab == self.drop_label
            kept_b, kept_s, kept_l = b[~dropped], s[~dropped], lab[~dropped]
            covered = (_inside_share(kept_b, b[dropped]) > DROP_INSIDE) & (s[dropped][None, :] >= kept_s[:, None])
            keep = ~covered.any(dim=1)
            boxes[i], scores[i], labels[i] = kept_b[keep], kept_s[keep], kept_l[keep]
        return boxes, scores, labels

    def forward(self, features, proposals, image_shapes, targets=None):
        if not self.training:
            result, losses = super().forward(features, proposals, image_shapes, targets)
            for _ in range(self.refine_steps):
                result = [self._refine({k: v[i:i + 1] for k, v in features.items()}, r, shape)
                          for i, (r, shape) in enumerate(zip(result, image_shapes))]
            return result, losses
        proposals, _, labels, regression_targets = self.select_training_samples(proposals, targets)
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_features)
        labels = torch.cat(labels)
        loss_classifier = F.cross_entropy(class_logits, labels)
        loss_box_reg = self._box_loss(box_regression, labels, torch.cat(regression_targets),
                                      torch.cat(proposals))
        return [], {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg}

    def _refine(self, features, detections: dict, image_shape) -> dict:
        """One image's detections with each box regressed again from itself, by its label's
        regressor (labels and scores kept). Per image, so an ONNX trace has no baked-in split."""
        boxes, labels = detections["boxes"], detections["labels"]
        box_features = self.box_head(self.box_roi_pool(features, [boxes], [image_shape]))
        regression = self.box_predictor(box_features)[1]
        # the class count as a constant: ONNX Runtime cannot infer -1 next to a 0-row dimension
        regression = regression.reshape(-1, self.box_predictor.bbox_pred.out_features // 4, 4)
        deltas = regression[torch.arange(boxes.shape[0], device=boxes.device), labels]
        refined = self.box_coder.decode_single(deltas, boxes)
        return {**detections, "boxes": clip_boxes_to_image(refined, image_shape)}

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
