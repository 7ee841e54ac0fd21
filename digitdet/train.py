"""``fit``: the whole training run — data, model, epochs, validation, checkpoints, resume.

Run folder (``out_dir``): ``config.yaml`` (resolved config), ``last.pt`` (everything needed to
resume, written every ``cfg.save_every_steps`` optimizer steps and at each epoch end),
``best.pt`` (weights + config + decoder settings of the best validation score; with
``cfg.ema_decay`` the averaged weights, which are also the ones validated),
``metrics.csv`` (one row per epoch), ``tb/`` (TensorBoard). All writes are atomic.

Under ``torchrun`` (see :mod:`digitdet.distributed`) the same function trains with
DistributedDataParallel: each process takes every world-th sample of the epoch's permutation
(``batch_size`` is per process; effective batch = batch_size x world_size x grad_accum; lr
per ``cfg.lr_scale``), validation is sharded and scored once on rank 0, and rank 0 alone
writes the run folder and makes the resume / best / early-stop decisions for every rank.
"""
from __future__ import annotations

import csv
import dataclasses
import logging
import os
import random
import time
from pathlib import Path

import numpy as np
import torch

from digitdet import labels as L
from digitdet.config import Config
from digitdet.data.coco import DigitDataset, load_coco_digits, split_paths
from digitdet.data.loaders import EpochSampler, inference_loader, train_loader
from digitdet.data.transforms import build_transforms
from digitdet.distributed import (broadcast_buffers, broadcast_object, is_main, load_model_state, main_only, on_main,
                                  rank, shard_batches, unwrap, world_size, wrap_model)
from digitdet.engine import train_one_epoch
from digitdet.evaluation import evaluate
from digitdet.io import load_checkpoint, save_checkpoint
from digitdet.models.faster_rcnn import build_model
from digitdet.optim import build_ema, build_optimizer, build_scheduler, plan_total_steps
from digitdet.report import write_run_pictures

log = logging.getLogger("digitdet")


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def load_split(data_root, split: str, cfg: Config, train: bool, max_images: int = 0):
    """(DigitDataset, cleaned COCO dict restricted to the dataset's images) of an annotated split."""
    images_dir, ann = split_paths(data_root, split)
    if ann is None:
        raise FileNotFoundError(f"{Path(data_root) / (split + '.json')}: annotations of split {split!r} not found")
    coco, report = load_coco_digits(ann, images_dir)
    log.info(report.summary(str(ann)))
    transform = build_transforms(cfg.augment, train, cfg.crop_digits_p)
    letter_label = L.LETTER if cfg.letter_class and train else None
    ds = DigitDataset(coco, images_dir, transform, seed=cfg.seed, max_images=max_images, letter_label=letter_label)
    if letter_label is not None:
        n = sum(len(im.get("letter_boxes", [])) for im in ds.images)
        (log.info if n else log.warning)(f"{ann}: {n} letter boxes (letter_class=true)"
                                         + ("" if n else ": the letter class has nothing to learn from"))
    keep = {im["id"] for im in ds.images}
    coco = {**coco, "images": ds.images, "annotations": [a for a in coco["annotations"] if a["image_id"] in keep]}
    return ds, coco


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
            "metrics": _plain(metrics),
            "decoder": self.cfg.decoder()})

    @main_only
    def log_epoch(self, row: dict) -> None:
        new = not self.csv_path.exists()
        with open(self.csv_path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row))
            if new:
                w.writeheader()
            w.writerow(row)


def _plain(metrics: dict) -> dict:
    """Metrics as plain Python values (checkpoints load with weights_only=True)."""
    return {k: (_plain(v) if isinstance(v, dict) else (float(v) if isinstance(v, (np.floating, float)) else v))
            for k, v in metrics.items()}


def _restore(state: dict, model, optimizer, scheduler, scaler, ema) -> dict:
    load_model_state(model, state["model"])
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


def _scaled_lr(cfg: Config) -> float:
    """The lr this run uses: ``cfg.lr``, times the world size when ``cfg.lr_scale`` is linear."""
    if cfg.lr_scale not in ("none", "linear"):
        raise ValueError(f"lr_scale={cfg.lr_scale!r}: choose none or linear")
    return cfg.lr * (world_size() if cfg.lr_scale == "linear" else 1)


def _adapt_to_world(prog: dict, cfg: Config, optimizer, scheduler, steps_per_epoch: int) -> None:
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
    step, base = prog["epoch"] * steps_per_epoch + prog["step_in_epoch"] // cfg.grad_accum, _scaled_lr(cfg)
    scheduler.base_lrs, scheduler.last_epoch = [base] * len(optimizer.param_groups), step
    for group, factor in zip(optimizer.param_groups, scheduler.lr_lambdas):
        group["initial_lr"], group["lr"] = base, base * factor(step)
    if is_main():
        log.warning("resuming a %d-process run with %d processes: epoch %d continues at batch %d, lr step %d",
                    old, new, prog["epoch"], prog["step_in_epoch"], step)


def _pretrain(cfg: Config, data_root, out_dir: Path, device: str = "cpu") -> str:
    """Pre-train the backbone as a digit classifier (digitdet.pretrain) into out_dir/backbone.pt,
    on ``device`` (the training device: a GPU run pre-trains on its GPU).

    A finished backbone.pt (from a run killed later in its start) is reused, not redone.
    """
    from digitdet.pretrain import pretrain_backbone

    path = out_dir / "backbone.pt"
    if path.exists():
        log.info("using the pre-trained backbone %s", path)
        return str(path)
    log.info("pre-training the %s backbone as a digit classifier (%d epochs)", cfg.backbone, cfg.pretrain_epochs)
    # Under torchrun rank 0 pre-trains alone while this node's other ranks wait: on a CPU it takes
    # their threads too (2 processes of 1 thread on 2 cores: both cores, not one).
    threads, local_world = torch.get_num_threads(), int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    torch.set_num_threads(threads * local_world)
    try:
        result = pretrain_backbone(data_root, path, cfg.backbone, cfg.norm, epochs=cfg.pretrain_epochs,
                                   workers=cfg.workers, seed=cfg.seed, max_images=cfg.pretrain_max_images,
                                   progress=log.isEnabledFor(logging.INFO), device=device)
    finally:
        torch.set_num_threads(threads)
    log.info("backbone pre-trained in %.0f s: %.3f crop accuracy on valid", result["seconds"], result["valid_accuracy"])
    return str(path)


def _start(cfg: Config, out_dir: Path, resume: bool) -> tuple[Config, dict | None]:
    """The config to run with and, when resuming, the last checkpoint."""
    if not resume:
        if (out_dir / "last.pt").exists():
            raise ValueError(f"{out_dir}: already holds a run (last.pt); pass --resume to continue it "
                             f"or choose another --out")
        return cfg, None
    last = out_dir / "last.pt"
    if not last.exists():
        raise FileNotFoundError(f"{last}: nothing to resume (no last.pt in {out_dir})")
    state = load_checkpoint(last)
    # a run saved before group_batches existed made random batches: it resumes making them
    return Config.from_dict({"group_batches": 1, **state["config"]}, source=str(last)), state


@dataclasses.dataclass
class _Run:
    """What the epochs of one run share: model and optimisation state, progress, writers."""
    cfg: Config
    dev: torch.device
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: object  # torch.amp.GradScaler on CUDA with AMP, else None
    ema: object  # torch.optim.swa_utils.AveragedModel of the unwrapped model (cfg.ema_decay), else None
    prog: dict  # epoch, step_in_epoch, best_value, best_epoch, evals_since_best, elapsed_s, history, total_steps
    ckpt: Checkpointer
    writer: object  # TensorBoard SummaryWriter on rank 0, else None
    steps_per_epoch: int  # optimizer steps


def _prepare(cfg: Config, data_root, out_dir: Path, resume: bool, device: str) -> tuple[Config, dict | None]:
    """Run folder, config (saved as config.yaml, backbone pre-trained first when asked), seeds;
    returns the config to run with and, when resuming, the last checkpoint."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg, state = on_main(_start, cfg, out_dir, resume)  # rank 0 reads last.pt: one decision for all ranks
    if state is None and cfg.pretrain_epochs and cfg.pretrained == "none":
        cfg.pretrained = on_main(_pretrain, cfg, data_root, out_dir, device)  # before config.yaml: it records it
    if is_main():
        (out_dir / "config.yaml").write_text(cfg.dumps())
    log.info("resolved config:\n%s", cfg.dumps())
    log.info("effective batch %d (batch_size %d x world_size %d x grad_accum %d), lr %g (lr_scale=%s)",
             cfg.batch_size * world_size() * cfg.grad_accum, cfg.batch_size, world_size(), cfg.grad_accum,
             _scaled_lr(cfg), cfg.lr_scale)
    seed_everything(cfg.seed, cfg.deterministic)
    return cfg, state


def _build_run(cfg: Config, state: dict | None, dev: torch.device, steps_per_epoch: int, out_dir: Path) -> _Run:
    """Model, optimizer, schedule and progress: fresh, or exactly as last.pt left them."""
    from torch.utils.tensorboard import SummaryWriter

    # A resumed run's weights all come from last.pt: never re-read (or download) pretrained ones.
    model = build_model(cfg, load_weights=state is None).to(dev)
    optimizer = build_optimizer(model, dataclasses.replace(cfg, lr=_scaled_lr(cfg)))
    # the schedule's length lives in prog (saved in last.pt): a time budget re-plans it (_plan_schedule)
    prog = {"epoch": 0, "step_in_epoch": 0, "best_value": -1.0, "best_epoch": -1, "evals_since_best": 0,
            "elapsed_s": 0.0, "history": [], "world_size": world_size(), "total_steps": cfg.epochs * steps_per_epoch}
    scheduler = build_scheduler(optimizer, lambda: prog["total_steps"], steps_per_epoch, cfg)
    scaler = torch.amp.GradScaler("cuda") if cfg.amp and dev.type == "cuda" else None
    ema = build_ema(model, cfg.ema_decay)
    if state is not None:
        prog.update(_restore(state, model, optimizer, scheduler, scaler, ema))  # in place: the schedule reads it
        _adapt_to_world(prog, cfg, optimizer, scheduler, steps_per_epoch)
        log.info("resuming %s at epoch %d, batch %d", out_dir, prog["epoch"], prog["step_in_epoch"])
    model = wrap_model(model, dev, cfg.sync_bn)  # DDP under torchrun (after restoring: plain keys)
    writer = SummaryWriter(str(out_dir / "tb")) if is_main() else None
    return _Run(cfg, dev, model, optimizer, scheduler, scaler, ema, prog, Checkpointer(out_dir, cfg), writer,
                steps_per_epoch)


def fit(cfg: Config, data_root, out_dir, device: str = "cpu", resume: bool = False,
        progress: bool = True, stop_after_steps: int = 0) -> dict:
    """Train ``cfg`` on ``data_root``'s train split, validating on valid; see module docstring.

    ``resume`` continues the run in ``out_dir`` from last.pt with its saved config, exactly:
    same samples, augmentations, RNG, optimizer and schedule. ``stop_after_steps`` > 0 stops
    (after writing last.pt) once that many optimizer steps are done in this call, as a kill
    would. Returns ``{"stopped": reason or "", "best": value, "best_epoch", "epochs_done",
    "history"}``.
    """
    # 1. Config, output folder, seeds.
    out_dir, progress = Path(out_dir), progress and is_main()
    cfg, state = _prepare(cfg, data_root, out_dir, resume, device)

    # 2. Data.
    train_ds, _ = load_split(data_root, "train", cfg, True, cfg.max_train_images)
    valid_ds, valid_gt = load_split(data_root, "valid", cfg, False, cfg.max_valid_images)
    valid_loader = inference_loader(valid_ds, valid_ds.aspect_ratios(), cfg.eval_batch_size, cfg.workers)
    sampler = EpochSampler(len(train_ds), cfg.seed, num_replicas=world_size(), rank=rank())
    batches_per_epoch = max(-(-len(train_ds) // world_size()) // cfg.batch_size, 1)

    # 3. Model, optimisation, and the state of a resumed run.
    run = _build_run(cfg, state, torch.device(device), -(-batches_per_epoch // cfg.grad_accum), out_dir)

    # 4. Epochs; each rank validates a share of valid, evaluate() gathers.
    stop_reason = _epochs(run, train_ds, sampler, shard_batches(valid_loader), valid_gt, stop_after_steps, progress)
    if stop_reason == "stop_after_steps":
        return {"stopped": stop_reason, **_result(run.prog)}

    # 5. Pictures of the finished run.
    if is_main():
        run.writer.close()
        _write_pictures(out_dir, _evaluated(run), valid_loader, run.dev, valid_gt,
                        split_paths(data_root, "valid")[0], cfg, progress)
    return {"stopped": stop_reason, **_result(run.prog)}


def _epochs(run: _Run, train_ds, sampler, eval_loader, valid_gt, stop_after_steps: int, progress: bool) -> str:
    """Train from ``run.prog``'s position to the end; returns why it stopped early ("" when it did not)."""
    cfg, prog = run.cfg, run.prog
    t_call = time.perf_counter()
    t_start, steps_this_call, stop_reason = t_call - prog["elapsed_s"], [0], ""
    t_first = [t_call]  # when this call's first step ended
    for epoch in range(prog["epoch"], cfg.epochs):
        prog["epoch"] = epoch
        sampler.set_epoch(epoch, skip=prog["step_in_epoch"] * cfg.batch_size)
        train_ds.set_epoch(epoch)
        loader = train_loader(train_ds, sampler, cfg.batch_size, cfg.workers, cfg.group_batches)

        def on_step(step: int) -> bool:
            nonlocal stop_reason
            prog["step_in_epoch"], prog["elapsed_s"] = step, time.perf_counter() - t_start
            steps_this_call[0] += 1
            n = steps_this_call[0]
            if n == 1:
                t_first[0] = time.perf_counter()  # the first step also starts the loader's workers
            if cfg.time_budget_min and n >= PLAN_AFTER_STEPS and (n - PLAN_AFTER_STEPS) % REPLAN_EVERY_STEPS == 0:
                _plan_schedule(run, (time.perf_counter() - t_first[0]) / max(n - 1, 1))
            if stop_after_steps and steps_this_call[0] >= stop_after_steps:
                stop_reason = "stop_after_steps"
            elif cfg.time_budget_min and (_planned_end(run) or
                                          broadcast_object(prog["elapsed_s"] > cfg.time_budget_min * 60)):
                stop_reason = "time_budget"  # the schedule planned for the budget is done, or time is up
            if stop_reason or (cfg.save_every_steps and step % cfg.save_every_steps == 0):
                run.ckpt.save_last(run.model, run.optimizer, run.scheduler, run.scaler, prog, run.ema)
            return bool(stop_reason)

        stats = train_one_epoch(run.model, run.optimizer, run.scheduler, loader, run.dev, epoch, cfg, run.scaler,
                                start_step=prog["step_in_epoch"], on_step=on_step, progress=progress, ema=run.ema)
        if stop_reason == "stop_after_steps":
            return stop_reason
        broadcast_buffers(run.model)  # rank 0's BatchNorm statistics: the model evaluated is the one saved
        if run.ema is not None:
            broadcast_buffers(run.ema.module)
        row = _end_of_epoch(_evaluated(run), eval_loader, run.dev, valid_gt, cfg, epoch, stats, prog, run.ckpt,
                            run.writer, final=bool(stop_reason) or epoch == cfg.epochs - 1, progress=progress,
                            raw=unwrap(run.model) if run.ema is not None else None)
        prog.update(epoch=epoch + 1, step_in_epoch=0, elapsed_s=time.perf_counter() - t_start)
        prog["history"].append(row)
        if cfg.time_budget_min and not stop_reason and steps_this_call[0]:  # re-plan, validation time included
            _plan_schedule(run, (time.perf_counter() - t_first[0]) / max(steps_this_call[0] - 1, 1))
        run.ckpt.save_last(run.model, run.optimizer, run.scheduler, run.scaler, prog, run.ema)
        if stop_reason:
            return stop_reason
        if cfg.early_stop_patience and prog["evals_since_best"] >= cfg.early_stop_patience:
            log.info("early stop: %s did not improve in %d evaluations", cfg.best_metric, cfg.early_stop_patience)
            return "early_stop"
    return ""


PLAN_AFTER_STEPS = 20  # optimizer steps timed before a time-budgeted run first plans its schedule
# ... and it plans again every so many steps, timed from the end of the first step (which also
# starts the loader's workers): anything that slows the first 20 steps alone, such as another
# job on the machine, otherwise sets the whole schedule. A 45-minute run whose first 20 steps
# shared the CPU with a prediction job planned 1,838 steps where ~3,000 fitted, and only the
# end-of-epoch re-plan, 1,500 steps in, would have corrected it, raising the lr again from
# near zero.
REPLAN_EVERY_STEPS = 200


def _plan_schedule(run: _Run, seconds_per_step: float) -> None:
    """Time budget: give the lr schedule as many steps as fit the rest of the budget at
    ``seconds_per_step`` (rank 0's measurement, sent to every rank so all plan alike)."""
    cfg, prog = run.cfg, run.prog
    total = broadcast_object(plan_total_steps(run.scheduler.last_epoch, seconds_per_step, prog["elapsed_s"],
                                              cfg.time_budget_min * 60, cfg.epochs * run.steps_per_epoch))
    if total != prog["total_steps"]:
        log.info("time budget %.1f min at %.2f s/step: the lr schedule ends after %d optimizer steps "
                 "(%.2f epochs; %d done)", cfg.time_budget_min, seconds_per_step, total,
                 total / run.steps_per_epoch, run.scheduler.last_epoch)
    prog["total_steps"] = total


def _planned_end(run: _Run) -> bool:
    """The time budget shortened the schedule (to fewer steps than the epochs asked) and it is done."""
    total = run.prog["total_steps"]
    return total < run.cfg.epochs * run.steps_per_epoch and run.scheduler.last_epoch >= total


def _evaluated(run: _Run) -> torch.nn.Module:
    """The model that is validated, saved as best.pt and drawn: the weight average when there is one."""
    return run.ema.module if run.ema is not None else unwrap(run.model)


def _write_pictures(out_dir, model, valid_loader, dev, valid_gt, images_dir, cfg, progress: bool) -> None:
    """Training curves + best.pt's validation pictures (PR, confusions, worst numbers) in the run folder."""
    try:
        paths = write_run_pictures(out_dir, model, valid_loader, dev, valid_gt, images_dir, cfg, progress)
        log.info("pictures: %s", ", ".join(p.name for p in paths))
    except Exception as e:  # noqa: BLE001 - the run is finished and saved; a picture must not fail it
        log.warning("could not write the run's pictures (%s: %s); checkpoints and metrics.csv are complete",
                    type(e).__name__, e)


def _result(prog: dict) -> dict:
    return {"best": prog["best_value"], "best_epoch": prog["best_epoch"], "epochs_done": prog["epoch"],
            "history": prog["history"]}


def _end_of_epoch(model, valid_loader, dev, valid_gt, cfg, epoch, stats, prog, ckpt, writer,
                  final: bool, progress: bool, raw=None) -> dict:
    """Validate ``model`` when due, keep best.pt, log a row to CSV and TensorBoard; returns the row.

    ``raw``: the trained weights when ``model`` is their average; validated too at the end of the
    run and logged, so the log shows what the average gained."""
    row = {"epoch": epoch + 1, **{k: round(float(v), 5) for k, v in stats.items() if k not in ("stopped", "steps")},
           "map": "", "ap50": "", "ap75": "", "accuracy": ""}
    due = final or (cfg.eval_every and (epoch + 1) % cfg.eval_every == 0)
    if due:
        metrics, _ = evaluate(model, valid_loader, dev, valid_gt, cfg, progress=progress)
        row.update({k: round(float(metrics[k]), 5) for k in ("map", "ap50", "ap75", "accuracy")})
        value = metrics[cfg.best_metric]
        if value > prog["best_value"]:
            prog.update(best_value=float(value), best_epoch=epoch + 1, evals_since_best=0)
            ckpt.save_best(model, metrics, epoch + 1)
        else:
            prog["evals_since_best"] += 1
        log.info("epoch %d: loss %.4f  mAP %.4f  AP50 %.4f  accuracy %.4f  (best %s %.4f @ %d)", epoch + 1,
                 stats["loss"], metrics["map"], metrics["ap50"], metrics["accuracy"], cfg.best_metric,
                 prog["best_value"], prog["best_epoch"])
        if final and raw is not None:
            m, _ = evaluate(raw, valid_loader, dev, valid_gt, cfg, progress=progress)
            log.info("the same weights without averaging (ema_decay=0): mAP %.4f  AP50 %.4f  accuracy %.4f",
                     m["map"], m["ap50"], m["accuracy"])
    else:
        log.info("epoch %d: loss %.4f", epoch + 1, stats["loss"])
    if final and not (ckpt.out / "best.pt").exists():
        ckpt.save_best(model, {}, epoch + 1)
    ckpt.log_epoch(row)
    if writer is not None:  # rank 0 only
        for k, v in row.items():
            if k != "epoch" and v != "":
                writer.add_scalar(k, v, epoch + 1)
        writer.flush()
    return row
