"""One optimizer step: forward and backward over a group of batches, then clip, step, schedule, average.

Losses keep torchvision's names (loss_classifier, loss_box_reg, loss_objectness,
loss_rpn_box_reg); ``loss`` is their weighted sum (``cfg.loss_weights``), the value that is optimised.
"""
from __future__ import annotations

import math
from contextlib import nullcontext
from itertools import islice

import torch

from digitdet.config import LOSS_NAMES
from digitdet.distributed import unwrap
from digitdet.read.detect import autocast


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def accumulate(batches, n: int):
    """Groups of ``n`` consecutive batches of the iterable ``batches`` (the last group may be
    shorter): one group per optimizer step, ``n`` = ``cfg.grad_accum``."""
    it = iter(batches)
    while group := list(islice(it, n)):
        yield group


def train_step(model, optimizer, scheduler, batches: list, device, cfg, scaler=None, ema=None,
               where: str = "") -> dict:
    """One optimizer step over ``batches`` (a list of ``(images, targets)``, see :func:`accumulate`).

    Each batch's loss is back-propagated divided by ``cfg.grad_accum``; under DDP the gradients
    are all-reduced only on the last batch. Then gradients are clipped to ``cfg.clip_grad``, the
    optimizer and ``scheduler`` step, and ``ema`` (an ``AveragedModel`` of the unwrapped model,
    see optim.build_ema) is updated. ``where`` (e.g. "epoch 2, batch 40") names the step in the
    error a non-finite loss raises. Returns each loss term and ``loss`` summed over the batches,
    with ``batches`` and ``images`` counted.
    """
    sums = {k: 0.0 for k in (*LOSS_NAMES, "loss")}
    n_images = 0
    for k, (images, targets) in enumerate(batches):
        images = [im.to(device, non_blocking=True) for im in images]
        targets = [{key: (v.to(device) if torch.is_tensor(v) else v) for key, v in t.items()} for t in targets]
        last = k == len(batches) - 1
        # DistributedDataParallel: all-reduce gradients only on the batch that steps the optimizer
        with nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync():
            with autocast(device, cfg.amp):
                losses = model(images, targets)
            loss = sum(losses[name] * cfg.loss_weights.get(name, 1.0) for name in LOSS_NAMES if name in losses)
            if not math.isfinite(loss.item()):
                raise TrainingDiverged(
                    f"{where}: loss is {loss.item()} "
                    f"({ {name: round(float(v.detach()), 4) for name, v in losses.items()} }); lower lr (now {cfg.lr}) "
                    f"or raise warmup_iters, or resume from the last checkpoint")
            _backward(loss / cfg.grad_accum, scaler)
        for name in LOSS_NAMES:
            sums[name] += float(losses[name].detach()) if name in losses else 0.0
        sums["loss"] += float(loss.detach())
        n_images += len(images)
    _optimizer_step(model, optimizer, scaler, cfg.clip_grad)
    scheduler.step()
    if ema is not None:
        ema.update_parameters(unwrap(model))
    return {**sums, "batches": len(batches), "images": n_images}


def _backward(loss, scaler) -> None:
    if scaler is not None:
        scaler.scale(loss).backward()
    else:
        loss.backward()


def _optimizer_step(model, optimizer, scaler, clip_grad: float) -> None:
    if scaler is not None:
        scaler.unscale_(optimizer)
    if clip_grad > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
