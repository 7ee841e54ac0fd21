"""A run folder's state: last.pt / best.pt / metrics.csv written, and a run started or resumed from them."""
from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import torch

from digitdet.config import Config
from digitdet.distributed import is_main, load_model_state, main_only, unwrap, world_size
from digitdet.io import load_checkpoint, remove_stale_temps, save_checkpoint

log = logging.getLogger("digitdet")


def model_state(model) -> dict:
    """State dict without a DistributedDataParallel wrapper's "module." prefix."""
    return unwrap(model).state_dict()


class Checkpointer:
    """Writes last.pt / best.pt and the metrics log of one run folder (rank 0 only; a no-op elsewhere)."""

    def __init__(self, out_dir: Path, cfg: Config):
        self.out, self.cfg = out_dir, cfg
        self.csv_path = out_dir / "metrics.csv"

    @main_only
    def save_last(self, model, optimizer, scheduler, scaler, progress: dict, ema=None) -> None:
        save_checkpoint(self.out / "last.pt", {
            "model": model_state(model), "config": self.cfg.to_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else {},
            "ema": ema.state_dict() if ema is not None else {},
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
            "progress": progress})

    @main_only
    def save_best(self, model, metrics: dict, epoch: int) -> None:
        save_checkpoint(self.out / "best.pt", {
            "model": model_state(model), "config": self.cfg.to_dict(), "epoch": epoch,
            "metrics": plain_metrics(metrics),
            "decoder": self.cfg.decoder()})

    @main_only
    def log_epoch(self, row: dict) -> None:
        new = not self.csv_path.exists()
        with open(self.csv_path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row))
            if new:
                w.writeheader()
            w.writerow(row)


def plain_metrics(metrics: dict) -> dict:
    """Metrics as plain Python values (checkpoints load with weights_only=True)."""
    return {k: (plain_metrics(v) if isinstance(v, dict) else (float(v) if isinstance(v, (np.floating, float)) else v))
            for k, v in metrics.items()}


def restore(state: dict, model, optimizer, scheduler, scaler, ema) -> dict:
    load_model_state(model, state["model"], "last.pt")
    if ema is not None:
        if not state.get("ema"):
            raise ValueError("last.pt has no weight average (ema) to resume; it was saved with ema_decay=0")
        ema.load_state_dict(state["ema"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"]["torch"])
    if torch.cuda.is_available() and state["rng"].get("cuda"):
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return dict(state["progress"])


def scaled_lr(cfg: Config) -> float:
    """The lr this run uses: ``cfg.lr``, times the world size when ``cfg.lr_scale`` is linear."""
    if cfg.lr_scale not in ("none", "linear"):
        raise ValueError(f"lr_scale={cfg.lr_scale!r}: choose none or linear")
    return cfg.lr * (world_size() if cfg.lr_scale == "linear" else 1)


def adapt_to_world(prog: dict, cfg: Config, optimizer, scheduler, steps_per_epoch: int) -> None:
    """Continue a run saved with another number of processes (e.g. 1 GPU, resumed on 4).

    Rank r reads every world-th sample of one permutation, so the samples an epoch has used are
    its first step_in_epoch x batch_size x world, whatever the world: keep that position
    (rounded down to a whole batch of every rank, so up to world - 1 samples are seen twice)
    and put the lr schedule, whose length in steps depends on the world, at the same step of
    the epoch, with this world's base lr. Same world: nothing to do (exact resume).
    """
    old, new = prog.get("world_size", 1), world_size()
    if old == new:
        return
    seen = prog["step_in_epoch"] * cfg.batch_size * old
    prog.update(step_in_epoch=seen // (cfg.batch_size * new), world_size=new,
                total_steps=min(cfg.epochs * steps_per_epoch, round(prog["total_steps"] * old / new)))
    step, base = prog["epoch"] * steps_per_epoch + prog["step_in_epoch"] // cfg.grad_accum, scaled_lr(cfg)
    scheduler.base_lrs, scheduler.last_epoch = [base] * len(optimizer.param_groups), step
    for group, factor in zip(optimizer.param_groups, scheduler.lr_lambdas):
        group["initial_lr"], group["lr"] = base, base * factor(step)
    if is_main():
        log.warning("resuming a %d-process run with %d processes: epoch %d continues at batch %d, lr step %d",
                    old, new, prog["epoch"], prog["step_in_epoch"], step)


def start_run(cfg: Config, out_dir: Path, resume: bool) -> tuple[Config, dict | None]:
    """The config to run with and, when resuming, the last checkpoint (a kill during a save
    left its temp file: removed)."""
    for stale in remove_stale_temps(out_dir):
        log.info("removed %s, left by a run killed while saving", stale)
    if not resume:
        if (out_dir / "last.pt").exists():
            raise ValueError(f"{out_dir}: already holds a run (last.pt); pass --resume to continue it "
                             f"or choose another --out")
        return cfg, None
    last = out_dir / "last.pt"
    if not last.exists():
        raise FileNotFoundError(f"{last}: nothing to resume (no last.pt in {out_dir})")
    state = load_checkpoint(last)
    return Config.from_dict(state["config"], source=str(last), saved=True, resuming=True), state
