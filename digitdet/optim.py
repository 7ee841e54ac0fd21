"""Optimizer and learning-rate schedule from the config.

The schedule is per optimizer step: a linear warm-up over ``warmup_iters`` steps from
``lr * warmup_factor`` to ``lr``, then cosine to 0, step decay at ``lr_steps`` epochs, or a
one-cycle (cosine up then down) shape. A plain LambdaLR, so its state_dict resumes exactly.
"""
from __future__ import annotations

import math

import torch


def build_optimizer(model: torch.nn.Module, cfg) -> torch.optim.Optimizer:
    """SGD (momentum) or AdamW over trainable parameters; no weight decay on norms and biases."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; choose sgd or adamw")


def lr_factor(step: int, total_steps: int, steps_per_epoch: int, cfg) -> float:
    """Multiplier of cfg.lr at optimizer step ``step`` (0-based) of ``total_steps``."""
    warm = min(cfg.warmup_iters, max(total_steps - 1, 0))
    if step < warm:
        a = step / warm
        return cfg.warmup_factor * (1 - a) + a
    if cfg.scheduler == "cosine":
        t = (step - warm) / max(total_steps - warm, 1)
        return 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
    if cfg.scheduler == "step":
        epoch = step // max(steps_per_epoch, 1)
        return cfg.lr_gamma ** sum(epoch >= m for m in cfg.lr_steps)
    if cfg.scheduler == "onecycle":
        # Rise for the first 30% of training (after warm-up), then anneal to 0.
        t = (step - warm) / max(total_steps - warm, 1)
        if t < 0.3:
            return 0.1 + 0.9 * 0.5 * (1 - math.cos(math.pi * t / 0.3))
        return 0.5 * (1 + math.cos(math.pi * (t - 0.3) / 0.7))
    raise ValueError(f"unknown scheduler {cfg.scheduler!r}; choose cosine, step or onecycle")


def build_scheduler(optimizer, total_steps: int, steps_per_epoch: int, cfg):
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, steps_per_epoch, cfg))
