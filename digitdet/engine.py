"""The engine: plain functions that train one epoch and run inference, returning dicts.

Losses keep torchvision's names (loss_classifier, loss_box_reg, loss_objectness,
loss_rpn_box_reg); ``loss`` is their sum, the value that is optimised.
"""
from __future__ import annotations

import math
import time
from contextlib import nullcontext

import numpy as np
import torch
from tqdm import tqdm

from digitdet.config import LOSS_NAMES
from digitdet.distributed import unwrap


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def _autocast(device: torch.device, amp: bool):
    # fp16 autocast on CUDA only; CPU trains in fp32 (bf16 autocast on CPU is slower here).
    return torch.autocast("cuda", dtype=torch.float16) if amp and device.type == "cuda" else nullcontext()


def train_one_epoch(model, optimizer, scheduler, loader, device, epoch: int, cfg, scaler=None,
                    start_step: int = 0, on_step=None, progress: bool = True, ema=None) -> dict:
    """Train over ``loader`` (whose sampler already skips the ``start_step`` batches done).

    Steps the optimizer every ``cfg.grad_accum`` batches, clips gradients to ``cfg.clip_grad``,
    then updates ``ema`` (an ``AveragedModel`` of the unwrapped model, see optim.build_ema).
    ``on_step(step_in_epoch)`` is called after each optimizer step (checkpoints, time
    budget); it returns True to stop the epoch early. Returns the mean of each loss term,
    the last lr, images/s and ``steps`` (batches done in this epoch, counting start_step),
    and ``stopped`` (whether on_step asked to stop).
    """
    model.train()
    weights = cfg.loss_weights
    sums = {k: 0.0 for k in (*LOSS_NAMES, "loss")}
    n_batches, n_images, t0 = 0, 0, time.perf_counter()
    step, stopped = start_step, False
    bar = tqdm(loader, desc=f"epoch {epoch}", initial=start_step, total=start_step + len(loader),
               disable=not progress, leave=False, dynamic_ncols=True)
    optimizer.zero_grad(set_to_none=True)
    for images, targets in bar:
        images = [im.to(device, non_blocking=True) for im in images]
        targets = [{k: (v.to(device) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]
        boundary = (step + 1) % cfg.grad_accum == 0 or step + 1 == start_step + len(loader)
        # DistributedDataParallel: all-reduce gradients only on the batch that steps the optimizer
        with nullcontext() if boundary or not hasattr(model, "no_sync") else model.no_sync():
            with _autocast(device, cfg.amp):
                losses = model(images, targets)
            loss = sum(losses[k] * weights.get(k, 1.0) for k in LOSS_NAMES if k in losses)
            if not math.isfinite(loss.item()):
                raise TrainingDiverged(
                    f"epoch {epoch}, step {step}: loss is {loss.item()} "
                    f"({ {k: round(float(v.detach()), 4) for k, v in losses.items()} }); lower lr (now {cfg.lr}) "
                    f"or raise warmup_iters, or resume from the last checkpoint")
            _backward(loss / cfg.grad_accum, scaler)
        step += 1
        if boundary:
            _optimizer_step(model, optimizer, scaler, cfg.clip_grad)
            scheduler.step()
            if ema is not None:
                ema.update_parameters(unwrap(model))
        n_batches += 1
        n_images += len(images)
        for k in LOSS_NAMES:
            sums[k] += float(losses[k].detach()) if k in losses else 0.0
        sums["loss"] += float(loss.detach())
        lr = optimizer.param_groups[0]["lr"]
        bar.set_postfix(loss=f"{sums['loss'] / n_batches:.3f}", lr=f"{lr:.2e}",
                        img_s=f"{n_images / (time.perf_counter() - t0):.1f}")
        if on_step is not None and step % cfg.grad_accum == 0 and on_step(step):
            stopped = True
            break
    bar.close()
    out = {k: v / max(n_batches, 1) for k, v in sums.items()}
    out.update(lr=optimizer.param_groups[0]["lr"], steps=step, stopped=stopped,
               images_per_s=n_images / max(time.perf_counter() - t0, 1e-9))
    return out


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


@torch.inference_mode()
def predict_batches(model, loader, device, progress: bool = True, desc: str = "predict", detect=None) -> dict:
    """Run the model over ``loader`` of (images, targets-with-image_id) batches.

    ``detect(images) -> [(boxes, labels, scores), ...]`` replaces the plain model call (test-time
    augmentation passes its own). Returns ``{"detections": {image_id: (boxes xyxy float32 (N, 4)
    in pixels of the original image, labels int64 (N,) category ids 1..10, scores float32
    (N,))}, "errors": {image_id: message} for images that could not be read, "images_per_s"}``.
    """
    model.eval()
    detect = detect or plain_detector(model, device)
    dets, errors, n, t0 = {}, {}, 0, time.perf_counter()
    for images, targets in tqdm(loader, desc=desc, disable=not progress, leave=False, dynamic_ncols=True):
        ok = [i for i, im in enumerate(images) if im is not None]
        for i, t in enumerate(targets):
            if images[i] is None:
                errors[t["image_id"]] = t.get("error", "unreadable image")
        if not ok:
            continue
        for i, d in zip(ok, detect([images[i] for i in ok])):
            dets[int(targets[i]["image_id"])] = d
        n += len(ok)
    return {"detections": dets, "errors": errors, "images_per_s": n / max(time.perf_counter() - t0, 1e-9)}


def plain_detector(model, device):
    """``detect(images)``: one plain model call per batch (:func:`model_detections`)."""
    return lambda images: model_detections(model, images, device)


def model_detections(model, images: list, device) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """One model call on a list of (3, H, W) images -> per image (boxes xyxy, labels, scores) in numpy."""
    with _autocast(device, device.type == "cuda"):
        outs = model([im.to(device, non_blocking=True) for im in images])
    return [(o["boxes"].float().cpu().numpy(), o["labels"].cpu().numpy(), o["scores"].float().cpu().numpy())
            for o in outs]


def empty_detections() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0, np.float32)
