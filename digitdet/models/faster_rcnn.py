"""``build_model(cfg)``: torchvision Faster R-CNN configured for digits.

The model takes a list of float images (3, H, W) in [0, 1], any sizes, and (training) targets
in torchvision's schema; it normalises and resizes internally (min_size/max_size) and returns
boxes in pixels of each input image (xyxy), labels 1..10 (category ids), scores.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN, fasterrcnn_resnet50_fpn_v2
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.poolers import initLevelMapper

from digitdet import labels as L
from digitdet.distributed import group_norm_error, group_norm_layer
from digitdet.models.backbones import (
    MOBILENETS,
    RESNETS,
    build_mobilenet_fpn,
    build_resnet_fpn,
    freeze_resnet,
    load_backbone_file,
    load_weights_file,
    num_feature_maps,
    saved_norm,
)
from digitdet.models.roi_align import TrainingRoIAlign
from digitdet.models.roi_heads import DigitRoIHeads
from digitdet.models.transform import DigitTransform

# The model shipped with the package: what `predict` reads with when no weights are given, and
# the start `pretrained=bundled` fine-tunes from (the default recipe, trained on the renderer).
BUNDLED_WEIGHTS = Path(__file__).resolve().parents[1] / "assets" / "digitdet_synth.pt"

BACKBONES = sorted([*RESNETS, *MOBILENETS, "resnet50_fpn_v2"])


# torchvision's own values, which no recipe changes: the RPN's NMS and anchor matching, the box
# head's per-class NMS, and smooth L1's beta in the box loss.
TORCHVISION_SETTINGS = {"rpn_nms_thresh": 0.7, "rpn_fg_iou_thresh": 0.7, "rpn_bg_iou_thresh": 0.3, "box_nms_thresh": 0.5}
SMOOTH_L1_BETA = 1.0 / 9


def _model_kwargs(cfg) -> dict:
    """Settings shared by every backbone (input scale, RPN and RoI heads)."""
    return dict(
        min_size=cfg.min_size, max_size=cfg.max_size,
        rpn_pre_nms_top_n_train=cfg.rpn_pre_nms_top_n_train, rpn_post_nms_top_n_train=cfg.rpn_post_nms_top_n_train,
        rpn_pre_nms_top_n_test=cfg.rpn_pre_nms_top_n_test, rpn_post_nms_top_n_test=cfg.rpn_post_nms_top_n_test,
        **TORCHVISION_SETTINGS, rpn_batch_size_per_image=cfg.rpn_batch_size_per_image,
        box_batch_size_per_image=cfg.box_batch_size_per_image, box_positive_fraction=cfg.box_positive_fraction,
        box_fg_iou_thresh=cfg.box_fg_iou_thresh, box_bg_iou_thresh=cfg.box_bg_iou_thresh,
        box_score_thresh=cfg.box_score_thresh,
        box_detections_per_img=cfg.box_detections_per_img,
    )


def anchor_generator(cfg, n_maps: int) -> AnchorGenerator:
    """One size tuple per feature map; ratios are HEIGHT/WIDTH (torchvision's convention)."""
    sizes = [tuple(s) if isinstance(s, (list, tuple)) else (s,) for s in cfg.anchor_sizes]
    if len(sizes) != n_maps:
        raise ValueError(f"anchor_sizes has {len(sizes)} levels but the backbone gives {n_maps} feature maps "
                         f"(returned_layers={cfg.returned_layers}): "
                         f"give one list of sizes per level")
    return AnchorGenerator(tuple(sizes), (tuple(float(r) for r in cfg.aspect_ratios),) * n_maps)


def fixed_scale_roi_pool(names: list[str], cfg) -> MultiScaleRoIAlign:
    """RoIAlign over the FPN maps with their strides set from the config.

    torchvision's pooler infers the strides on its first call from that batch's padded size and
    keeps them; a first batch of short, wide photos (30x250 -> 38x320) makes it infer
    [1/4, 1/8] instead of [1/8, 1/16] for the rest of the run. Stage k has stride 2**(k+1).
    Training with one sample per bin pools with a faster backward (models/roi_align.py).
    """
    pool = TrainingRoIAlign(featmap_names=names, output_size=7, sampling_ratio=cfg.roi_sampling_ratio)
    return _fix_strides(pool, [k + 1 for k in cfg.returned_layers])


def _fix_strides(pool: MultiScaleRoIAlign, levels: list[int]) -> MultiScaleRoIAlign:
    """Set the pooler's scales from the maps' log2 strides ``levels`` (see fixed_scale_roi_pool)."""
    pool.scales = [2.0 ** -lv for lv in levels]
    pool.map_levels = initLevelMapper(levels[0], levels[-1])
    return pool


def build_model(cfg, load_weights: bool = True) -> nn.Module:
    """Faster R-CNN for ``cfg.backbone`` with every setting of ``cfg``; see module docstring.

    ``load_weights=False`` skips reading (or downloading) ``cfg.pretrained`` but freezes the
    same layers: a resumed run gets every weight from its checkpoint and must train the same
    parameters its optimizer state belongs to."""
    if cfg.backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {cfg.backbone!r}; choose one of {BACKBONES}")
    if cfg.backbone == "resnet50_fpn_v2":
        model = _build_r50v2(cfg, load_weights)
    else:
        build = build_resnet_fpn if cfg.backbone in RESNETS else build_mobilenet_fpn
        backbone = build(cfg, load_weights)
        n_maps = num_feature_maps(cfg)
        names = [str(i) for i in range(len(cfg.returned_layers))]
        rpn_head = RPNHead(cfg.fpn_channels, len(cfg.aspect_ratios) * len(cfg.anchor_sizes[0]))
        roi_pool = fixed_scale_roi_pool(names, cfg)
        model = FasterRCNN(backbone, num_classes=None, rpn_anchor_generator=anchor_generator(cfg, n_maps),
                           rpn_head=rpn_head, box_roi_pool=roi_pool,
                           box_head=TwoMLPHead(cfg.fpn_channels * 7 * 7, cfg.representation_size),
                           box_predictor=FastRCNNPredictor(cfg.representation_size, L.num_classes(cfg.letter_class)),
                           **_model_kwargs(cfg))
    model.roi_heads = DigitRoIHeads.from_torchvision(model.roi_heads, cfg.box_loss, SMOOTH_L1_BETA,
                                                     drop_label=L.LETTER if cfg.letter_class else None,
                                                     refine_steps=cfg.box_refine)
    model.transform = DigitTransform.from_torchvision(model.transform, cfg.train_scales, cfg.channels_last,
                                                      size_divisible=cfg.size_divisible)
    if load_weights and cfg.pretrained not in ("none", "torchvision"):
        load_pretrained_file(model, cfg.pretrained)
    if cfg.channels_last:  # after loading: load_state_dict copies into the parameters' own layout
        model = model.to(memory_format=torch.channels_last)
    return model


def _build_r50v2(cfg, load_weights: bool) -> nn.Module:
    """The seeds' model: torchvision's fasterrcnn_resnet50_fpn_v2 (its own FPN, heads, anchors
    unless the config's anchors fit its 5 feature maps)."""
    from torchvision.models.detection import FasterRCNN_ResNet50_FPN_V2_Weights

    kwargs = _model_kwargs(cfg)
    if len(cfg.anchor_sizes) == 5:
        kwargs["rpn_anchor_generator"] = anchor_generator(cfg, 5)
        kwargs["rpn_head"] = RPNHead(256, len(cfg.aspect_ratios) * len(cfg.anchor_sizes[0]), conv_depth=2)
    if cfg.pretrained == "torchvision" and load_weights:
        model = fasterrcnn_resnet50_fpn_v2(weights=FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1,
                                           trainable_backbone_layers=cfg.trainable_layers, **kwargs)
        model.roi_heads.box_predictor = FastRCNNPredictor(1024, L.num_classes(cfg.letter_class))
    else:
        model = fasterrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=L.num_classes(cfg.letter_class),
                                           trainable_backbone_layers=None, **kwargs)
        if cfg.pretrained != "none":  # a weights file, or a resumed run: freeze as torchvision does
            freeze_resnet(model.backbone.body, cfg.trainable_layers)
    _fix_strides(model.roi_heads.box_roi_pool, [2, 3, 4, 5])  # its maps "0".."3": strides 4..32
    return model


def _load_weights_file(p: Path, name: str):
    """``torch.load(weights_only=True)`` of a pretrained= file; one clear ValueError when it is
    truncated, not a torch file, or holds objects that only a full unpickle would build."""
    try:
        return load_weights_file(p)
    except Exception as e:  # noqa: BLE001 - a malformed file fails anywhere in the unpickler
        # torch words it "Unsupported global: GLOBAL x" or "... unsupported GLOBAL x whose module ... is blocked"
        kind = "holds objects other than tensors (loading it could run code)" if "unsupported global" in str(e).lower() \
            else "is not a readable torch weights file (truncated, or another format?)"
        raise ValueError(f"pretrained={name}: {p} {kind}") from None


def starts_from_detector(pretrained: str) -> bool:
    """Whether ``pretrained`` names a whole detector (``bundled``, or a file with box-head
    weights): training from it is fine-tuning, not training from a backbone."""
    if pretrained in ("none", "torchvision"):
        return False
    p = BUNDLED_WEIGHTS if pretrained == "bundled" else Path(pretrained)
    if not p.is_file():
        return pretrained == "bundled"  # a missing file is build_model's error to report
    state = _load_weights_file(p, pretrained)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    return isinstance(state, dict) and any(str(k).startswith("roi_heads.") for k in state)


def load_pretrained_file(model: nn.Module, path: str) -> None:
    """Initialise from a local .pth: a whole detector's state dict (or digitdet checkpoint),
    or a backbone/classifier state dict; ``bundled`` is the model shipped with the package.
    Tensors whose shapes differ are skipped; a file whose backbone has GroupNorm layers (digitdet
    before 0.2, norm=gn) is a ValueError, not BatchNorm layers without their statistics."""
    p = BUNDLED_WEIGHTS if path == "bundled" else Path(path)
    if not p.exists():
        what = "the bundled model is missing from this install" if path == "bundled" else "file not found"
        raise FileNotFoundError(f"pretrained={path}: {what} ({p}; use none, torchvision, bundled or a .pth path)")
    state = _load_weights_file(p, path)
    if saved_norm(state) == "gn":
        raise group_norm_error(f"pretrained={path}", "its saved config says norm: gn")
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise ValueError(f"pretrained={path}: holds a {type(state).__name__}, not a state dict of weights")
    if not any(str(k).startswith("backbone.") for k in state):
        load_backbone_file(model.backbone, str(p), f"pretrained={path}")
        return
    own = model.state_dict()
    layer = group_norm_layer(own, state)
    if layer is not None:
        raise group_norm_error(f"pretrained={path}", f"{layer} has a weight but no running_mean/running_var")
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not fitting:
        raise ValueError(f"{path}: no tensor matches this model ({type(model).__name__}, backbone settings differ?)")
    fitting.update(_grown_predictor(own, state))
    model.load_state_dict(fitting, strict=False)


def _grown_predictor(own: dict, state: dict) -> dict:
    """Box predictor tensors of a detector with another number of classes (``letter_class``
    on one side only): the classes both have (background and digits, the first rows) are
    copied; a class only this model has keeps its fresh initialisation, one it lacks is left out."""
    grown = {}
    for k, v in state.items():
        if not k.startswith("roi_heads.box_predictor.") or k not in own:
            continue
        mine = own[k]
        if mine.shape[1:] == v.shape[1:] and mine.shape[0] != v.shape[0]:
            n = min(mine.shape[0], v.shape[0])
            grown[k] = torch.cat([v[:n].to(mine.dtype), mine[n:]])
    return grown
