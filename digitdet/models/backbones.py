"""Backbones with a Feature Pyramid Network, built from torchvision's classifiers.

Every builder returns a ``torchvision.models.detection.backbone_utils.BackboneWithFPN``
whose ``out_channels`` is ``cfg.fpn_channels`` and whose feature maps are named "0", "1",
... from the finest (smallest stride) up.
"""
from __future__ import annotations

import warnings

import torch
from torch import nn
from torchvision import models as tvm
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from digitdet.distributed import group_norm_error, group_norm_layer

RESNETS = {
    "resnet18_fpn": (tvm.resnet18, tvm.ResNet18_Weights.IMAGENET1K_V1),
    "resnet34_fpn": (tvm.resnet34, tvm.ResNet34_Weights.IMAGENET1K_V1),
    "resnet50_fpn": (tvm.resnet50, tvm.ResNet50_Weights.IMAGENET1K_V1),
    "resnet101_fpn": (tvm.resnet101, tvm.ResNet101_Weights.IMAGENET1K_V1),
}
MOBILENETS = {
    "mobilenet_v3_fpn": (tvm.mobilenet_v3_large, tvm.MobileNet_V3_Large_Weights.IMAGENET1K_V1),
}


# Trainable BatchNorm in every backbone: right from scratch, and for fine-tuning the bundle.
NORM_LAYER = nn.BatchNorm2d


def _imagenet_weights(cfg, default_weights, load_weights: bool):
    """ImageNet weights for the backbone when cfg.pretrained == 'torchvision' (downloads)."""
    return default_weights if cfg.pretrained == "torchvision" and load_weights else None


def _freeze(body: nn.Module, trainable_prefixes: list[str]) -> None:
    for name, p in body.named_parameters():
        if not any(name.startswith(t) for t in trainable_prefixes):
            p.requires_grad_(False)


def freeze_resnet(body: nn.Module, trainable_layers: int) -> None:
    """Freeze all but the last ``trainable_layers`` of conv1, layer1..layer4 (torchvision's rule)."""
    stages = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
    _freeze(body, stages + (["bn1"] if trainable_layers == 5 else []))


def build_resnet_fpn(cfg, load_weights: bool = True) -> BackboneWithFPN:
    """ResNet + FPN over stages ``cfg.returned_layers`` (1..4; stage k has stride 2**(k+1)).

    Stages are frozen per ``cfg.trainable_layers`` whenever ``cfg.pretrained`` names weights,
    even when ``load_weights`` is False (a resumed run loads them from its checkpoint)."""
    fn, weights = RESNETS[cfg.backbone]
    body = fn(weights=_imagenet_weights(cfg, weights, load_weights), norm_layer=NORM_LAYER)
    if cfg.pretrained != "none":
        # Only meaningful with weights: from scratch everything must train.
        freeze_resnet(body, cfg.trainable_layers)
    if not all(1 <= k <= 4 for k in cfg.returned_layers):
        raise ValueError(f"returned_layers must be among 1..4, got {cfg.returned_layers}")
    stage2_channels = body.inplanes // 8  # 64 for resnet18/34, 256 for resnet50+
    return_layers = {f"layer{k}": str(i) for i, k in enumerate(cfg.returned_layers)}
    in_channels = [stage2_channels * 2 ** (k - 1) for k in cfg.returned_layers]
    return _with_fpn(body, return_layers, in_channels, cfg)


def build_mobilenet_fpn(cfg, load_weights: bool = True) -> BackboneWithFPN:
    """MobileNetV3-Large + FPN over its last ``len(cfg.returned_layers)`` stages (frozen as in
    build_resnet_fpn)."""
    fn, weights = MOBILENETS[cfg.backbone]
    features = fn(weights=_imagenet_weights(cfg, weights, load_weights), norm_layer=NORM_LAYER).features
    # Stage boundaries are the blocks that reduce resolution (torchvision marks them _is_cn).
    stages = [0] + [i for i, b in enumerate(features) if getattr(b, "_is_cn", False)] + [len(features) - 1]
    n = len(cfg.returned_layers)
    picked = stages[-n:]
    if cfg.pretrained != "none" and cfg.trainable_layers < len(stages):
        first_trainable = stages[len(stages) - cfg.trainable_layers]
        for b in features[:first_trainable]:
            b.requires_grad_(False)
    return_layers = {str(idx): str(i) for i, idx in enumerate(picked)}
    in_channels = [features[idx].out_channels for idx in picked]
    return _with_fpn(features, return_layers, in_channels, cfg)


def _with_fpn(body, return_layers, in_channels, cfg) -> BackboneWithFPN:
    backbone = BackboneWithFPN(body, return_layers, in_channels, cfg.fpn_channels,
                               extra_blocks=LastLevelMaxPool())
    backbone.fpn.extra_blocks = None  # BackboneWithFPN always adds a pooled level; digits never need it
    return backbone


def num_feature_maps(cfg) -> int:
    return len(cfg.returned_layers)


def saved_norm(state) -> str | None:
    """The ``norm`` a digitdet file's saved config (or pre-training meta) names, if any."""
    config = state.get("config") if isinstance(state, dict) else None
    norm = config.get("norm") if isinstance(config, dict) else None
    return norm if isinstance(norm, str) else None


def load_weights_file(path) -> object:
    """``torch.load(weights_only=True)`` of a weights file, without torch's warning about a pickle
    protocol it did not write (a plain pickle's): the file is refused or read, and saying so is ours."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
        return torch.load(path, map_location="cpu", weights_only=True)


def load_backbone_file(backbone: nn.Module, path: str, source: str | None = None) -> None:
    """Load a local .pth state dict into the backbone body (keys of the classifier work).
    ValueError naming ``source`` (default: the path) when it holds GroupNorm layers (group_norm_layer)."""
    source = source or path
    state = load_weights_file(path)
    if saved_norm(state) == "gn":
        raise group_norm_error(source, "its saved config says norm: gn")
    state = state.get("model", state) if isinstance(state, dict) else state
    if not any(k in backbone.body.state_dict() for k in state):
        # A MobileNet classifier's keys start with "features."; the detector's body *is* features.
        state = {k.removeprefix("features."): v for k, v in state.items()}
    layer = group_norm_layer(backbone.body.state_dict(), state)
    if layer is not None:
        raise group_norm_error(source, f"{layer} has a weight but no running_mean/running_var")
    missing, unexpected = backbone.body.load_state_dict(state, strict=False)
    loaded = len(backbone.body.state_dict()) - len(missing)
    if loaded == 0:
        raise ValueError(f"{path}: no parameter matched the {type(backbone.body).__name__} backbone")
