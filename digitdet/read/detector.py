"""A detector rebuilt from a checkpoint alone (the bundled one by default), and its input scale."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch

from digitdet.config import Config
from digitdet.distributed import load_model_state
from digitdet.io import load_checkpoint
from digitdet.models.faster_rcnn import BUNDLED_WEIGHTS, build_model


def load_detector(weights: str | Path | None, device: torch.device, overrides: list[str] | None = None,
                  tuned_scale: bool = True):
    """(model in eval mode on ``device``, Config, decoder dict) rebuilt from a checkpoint alone.

    ``weights`` None means the model bundled with the package. ``overrides`` (key=value) may
    change inference settings such as pred_score_thresh or decode_score_thresh. The model reads
    at the input scale ``digitdet tune`` stored with the weights, or with ``tuned_scale=False``
    at its training scale.
    """
    path = weights_path(weights)
    state = load_checkpoint(path)
    cfg = Config.from_dict(state["config"], source=str(path), saved=True)
    cfg.pretrained = "none"  # the checkpoint has every weight; never download or read other files
    decoder = dict(state.get("decoder") or {})
    cfg.apply_decoder(decoder)
    if tuned_scale and "min_size" in decoder:  # a tuned input scale (the config keeps the training one)
        cfg.min_size, cfg.max_size = int(decoder["min_size"]), int(decoder["max_size"])
    cfg = cfg.override(overrides or [])
    model = build_model(cfg)
    load_model_state(model, state["model"], str(path))  # also takes weights saved with DDP's "module." prefix
    return model.to(device).eval(), cfg, decoder


def weights_path(weights) -> Path:
    """The checkpoint ``weights`` names; None: the bundled model."""
    path = Path(weights) if weights else BUNDLED_WEIGHTS
    if weights is None and not path.exists():
        raise FileNotFoundError(f"no --weights given and the bundled model {path} is missing from this install")
    return path


def input_scale(model) -> tuple[int, int]:
    """``(min_size, max_size)``: the short side a torch detector resizes photos to, and the cap on the long side."""
    t = model.transform
    return int(t.min_size[-1]), int(t.max_size)


@contextmanager
def at_scale(model, min_size: int, max_size: int):
    """Within the block, ``model`` (a torch detector, not DDP-wrapped) reads photos resized to
    short side ``min_size``, long side capped at ``max_size``; its own scale is restored after,
    even on error. The one setter of the input scale: views, zoom's looks and ``digitdet tune``
    use it."""
    t = model.transform
    base = t.min_size, t.max_size
    t.min_size, t.max_size = (int(min_size),), int(max_size)
    try:
        yield model
    finally:
        t.min_size, t.max_size = base
