"""Optimizer, learning-rate schedule and weight averaging (EMA) from the config.

The schedule is per optimizer step: a linear warm-up over ``warmup_iters`` steps from
``lr * WARMUP_FACTOR`` to ``lr``, then cosine to 0. A plain LambdaLR, so its state_dict resumes
exactly. With a time budget, train/budget.py sets the schedule's length to the steps that fit it.

``build_ema`` keeps an exponential moving average of the weights (and BatchNorm statistics)
with torch's own ``AveragedModel``; validation, best.pt and predictions use the average.
"""
from __future__ import annotations

import math

import torch

SGD_MOMENTUM = 0.9
WARMUP_FACTOR = 0.001  # the warm-up starts at lr x this


def build_optimizer(model: torch.nn.Module, cfg) -> torch.optim.Optimizer:
    """SGD (momentum) or AdamW over trainable parameters; no weight decay on norms and biases."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=SGD_MOMENTUM)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; choose sgd or adamw")


def lr_factor(step: int, total_steps: int, steps_per_epoch: int, cfg) -> float:
    """Multiplier of cfg.lr at optimizer step ``step`` (0-based) of ``total_steps``."""
    warm = min(cfg.warmup_iters, max(total_steps - 1, 0))
    if step < warm:
        a = step / warm
        return WARMUP_FACTOR * (1 - a) + a
    t = (step - warm) / max(total_steps - warm, 1)
    return 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


def build_scheduler(optimizer, total_steps, steps_per_epoch: int, cfg):
    """LambdaLR of :func:`lr_factor`. ``total_steps()`` returns the schedule's length; it is read
    at every step, so a time-budgeted run can re-plan the length while it trains."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps(), steps_per_epoch, cfg))


def ema_decay_at(n_averaged: int, decay: float) -> float:
    """EMA decay after ``n_averaged`` updates: ``min(decay, (1 + n) / (10 + n))``.

    The ramp (timm's and TensorFlow's warm-up of the decay) averages over roughly the last
    tenth of the steps so far, so early random weights leave the average quickly and short
    runs (the 4-minute demo, a few hundred steps) still get an average of their last steps.
    """
    return min(decay, (1.0 + n_averaged) / (10.0 + n_averaged))


def build_ema(model: torch.nn.Module, decay: float):
    """An ``AveragedModel`` of ``model`` (parameters and buffers) with :func:`ema_decay_at`, or
    None when ``decay`` is 0. Call ``ema.update_parameters(model)`` after each optimizer step;
    ``ema.module`` is the averaged detector. Integer buffers (BatchNorm's batch counters) are
    copied, not averaged."""
    if decay == 0:
        return None
    if not 0 < decay < 1:
        raise ValueError(f"ema_decay={decay}: choose 0 (off) or a value in (0, 1), e.g. 0.9995")
    from torch.optim.swa_utils import AveragedModel

    def update(averaged: list, current: list, n_averaged: torch.Tensor) -> None:
        if averaged[0].is_floating_point():
            torch._foreach_lerp_(averaged, current, 1.0 - ema_decay_at(int(n_averaged), decay))
        else:
            for a, c in zip(averaged, current):
                a.copy_(c)

    return AveragedModel(model, multi_avg_fn=update, use_buffers=True)
