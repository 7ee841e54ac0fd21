"""``fit``: the whole training run — data, model, the step loop, validation, checkpoints, resume.

Run folder (``out_dir``): ``config.yaml`` (resolved config), ``last.pt`` (everything needed to
resume, written every ``cfg.save_every_steps`` batches and at each epoch end), ``best.pt``
(weights + config + decoder settings of the best validation score; with ``cfg.ema_decay`` the
averaged weights, which are also the ones validated), ``metrics.csv`` (one row per epoch),
``tb/`` (TensorBoard). All writes are atomic.

Under ``torchrun`` (see :mod:`digitdet.distributed`) the same function trains with
DistributedDataParallel: each process takes every world-th sample of the epoch's permutation
(``batch_size`` is per process; effective batch = batch_size x world_size x grad_accum; lr
per ``cfg.lr_scale``), validation is sharded and scored once on rank 0, and rank 0 alone
writes the run folder and makes the resume, best.pt and time-budget decisions for every rank.
"""
from __future__ import annotations

import dataclasses
import logging
import random
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from digitdet import labels as L
from digitdet.config import LOSS_NAMES, Config
from digitdet.data.coco import DigitDataset, load_coco_digits, split_paths
from digitdet.data.loaders import EpochSampler, inference_loader, train_loader
from digitdet.data.transforms import build_transforms
from digitdet.distributed import broadcast_buffers, is_main, on_main, rank, shard_batches, unwrap, world_size, wrap_model
from digitdet.io import load_checkpoint, writable_folder
from digitdet.models.faster_rcnn import BUNDLED_WEIGHTS, build_model, starts_from_detector
from digitdet.score.evaluation import evaluate
from digitdet.train import budget
from digitdet.train.checkpoint import Checkpointer, adapt_to_world, restore, scaled_lr, start_run
from digitdet.train.optim import build_ema, build_optimizer, build_scheduler
from digitdet.train.pretrain import pretrain_for_run
from digitdet.train.step import accumulate, train_step
from digitdet.viz.report import write_run_pictures

log = logging.getLogger("digitdet")
EVAL_BATCH_SIZE = 32  # validation photos a batch


def fit(cfg: Config, data_root, out_dir, device: str = "cpu", resume: bool = False,
        progress: bool = True, stop_after_steps: int = 0) -> dict:
    """Train ``cfg`` on ``data_root``'s train split, validating on valid; see module docstring.

    ``resume`` continues the run in ``out_dir`` from last.pt with its saved config, exactly:
    same samples, augmentations, RNG, optimizer, schedule and the epoch's running loss sums.
    ``stop_after_steps`` > 0 stops (after writing last.pt) once that many optimizer steps are
    done in this call, as a kill would. Returns ``{"stopped": reason or "", "best": value,
    "best_epoch", "epochs_done", "history"}``.
    """
    # 1. Config, output folder, seeds (the dataset's folders first: a wrong --data is said before any work).
    out_dir, progress = Path(out_dir), progress and is_main()
    for split in ("train", "valid"):
        split_paths(data_root, split)
    cfg, state, finetune = _prepare(cfg, data_root, out_dir, resume, device, progress)

    # 2. Data; each rank validates a share of valid, evaluate() gathers.
    checking = None if progress else False  # the photos' check: a bar on a terminal, none with --quiet
    train_ds, _ = load_split(data_root, "train", cfg, True, cfg.max_train_images, checking)
    valid_ds, valid_gt = load_split(data_root, "valid", cfg, False, cfg.max_valid_images, checking)
    valid_loader = inference_loader(valid_ds, valid_ds.aspect_ratios(), EVAL_BATCH_SIZE, cfg.workers)
    sampler = EpochSampler(len(train_ds), cfg.seed, num_replicas=world_size(), rank=rank())
    batches_per_epoch = max(-(-len(train_ds) // world_size()) // cfg.batch_size, 1)

    # 3. Model, optimisation, and the state of a resumed run.
    run = _build_run(cfg, state, torch.device(device), -(-batches_per_epoch // cfg.grad_accum), out_dir,
                     shard_batches(valid_loader), valid_gt)
    prog, per_epoch = run.prog, run.steps_per_epoch
    if finetune:  # the model fine-tuning starts from is scored first, and is best.pt until beaten
        _score_start(run, progress)

    # 4. The loop: an optimizer step, re-plan the schedule, save, stop?; validate at each epoch's end.
    t_start = time.perf_counter() - prog["elapsed_s"]
    steps, t_first, stop = 0, time.perf_counter(), ""  # this call's optimizer steps; when its first ended
    for epoch in range(prog["epoch"], cfg.epochs):
        prog["epoch"] = epoch
        sampler.set_epoch(epoch, skip=prog["step_in_epoch"] * cfg.batch_size)
        train_ds.set_epoch(epoch)
        loader = train_loader(train_ds, sampler, cfg.batch_size, cfg.workers, cfg.group_batches)
        bar = tqdm(loader, desc=f"epoch {epoch}", initial=prog["step_in_epoch"],
                   total=prog["step_in_epoch"] + len(loader), disable=not progress, leave=False, dynamic_ncols=True)
        run.model.train()
        sums, n_images, t_epoch = prog["epoch_sums"], 0, time.perf_counter()
        for batches in accumulate(bar, cfg.grad_accum):
            out = train_step(run.model, run.optimizer, run.scheduler, batches, run.dev, cfg, run.scaler, run.ema,
                             where=f"epoch {epoch}, batch {prog['step_in_epoch']}")
            for k in (*LOSS_NAMES, "loss", "batches"):
                sums[k] = sums.get(k, 0) + out[k]
            n_images += out["images"]
            prog["step_in_epoch"] += out["batches"]
            prog["elapsed_s"] = time.perf_counter() - t_start
            steps += 1
            if steps == 1:
                t_first = time.perf_counter()  # the first step also starts the loader's workers
            bar.set_postfix(loss=f"{sums['loss'] / sums['batches']:.3f}", lr=f"{run.optimizer.param_groups[0]['lr']:.2e}",
                            img_s=f"{n_images / (time.perf_counter() - t_epoch):.1f}")
            if cfg.time_budget_min and budget.replan_due(steps):
                budget.plan_schedule(prog, run.scheduler.last_epoch, _per_step(t_first, steps), cfg, per_epoch)
            if stop_after_steps and steps >= stop_after_steps:
                stop = "stop_after_steps"
            elif cfg.time_budget_min and budget.out_of_time(prog, run.scheduler.last_epoch, cfg, per_epoch):
                stop = "time_budget"  # the schedule planned for the budget is done, or time is up
            if stop or (cfg.save_every_steps and prog["step_in_epoch"] % cfg.save_every_steps == 0):
                _save_last(run)
            if stop:
                break
        bar.close()
        if stop == "stop_after_steps":
            return {"stopped": stop, **_result(prog)}
        stats = {**{k: sums.get(k, 0.0) / max(sums.get("batches", 0), 1) for k in (*LOSS_NAMES, "loss")},
                 "lr": run.optimizer.param_groups[0]["lr"],
                 "images_per_s": n_images / max(time.perf_counter() - t_epoch, 1e-9)}
        row = end_of_epoch(run, epoch, stats, final=bool(stop) or epoch == cfg.epochs - 1, progress=progress)
        prog.update(epoch=epoch + 1, step_in_epoch=0, elapsed_s=time.perf_counter() - t_start, epoch_sums={})
        prog["history"].append(row)
        if cfg.time_budget_min and not stop and steps:  # re-plan, validation time included
            budget.plan_schedule(prog, run.scheduler.last_epoch, _per_step(t_first, steps), cfg, per_epoch)
        _save_last(run)
        if stop:
            break

    # 5. Pictures of the finished run.
    if is_main():
        run.writer.close()
        _write_pictures(out_dir, _evaluated(run), valid_loader, run.dev, valid_gt,
                        split_paths(data_root, "valid")[0], cfg, progress)
    return {"stopped": stop, **_result(prog)}


def end_of_epoch(run: Run, epoch: int, stats: dict, final: bool, progress: bool) -> dict:
    """Validate when due (every ``cfg.eval_every`` epochs, and at the end), keep best.pt, log a row
    to metrics.csv and TensorBoard; returns the row. With a weight average, the trained weights
    themselves are validated too at the end and logged, so the log shows what the average gained."""
    cfg, prog, ckpt = run.cfg, run.prog, run.ckpt
    broadcast_buffers(run.model)  # rank 0's BatchNorm statistics: the model evaluated is the one saved
    if run.ema is not None:
        broadcast_buffers(run.ema.module)
    model = _evaluated(run)
    row = {"epoch": epoch + 1, **{k: round(float(v), 5) for k, v in stats.items()},
           "map": "", "ap50": "", "ap75": "", "accuracy": ""}
    if final or (cfg.eval_every and (epoch + 1) % cfg.eval_every == 0):
        metrics, _ = evaluate(model, run.eval_loader, run.dev, run.valid_gt, cfg, progress=progress)
        row.update({k: round(float(metrics[k]), 5) for k in ("map", "ap50", "ap75", "accuracy")})
        value = metrics[cfg.best_metric]
        if prog.get("start_value") is not None and value < prog["start_value"] and is_main():
            log.warning("validation %s %.4f is below the %.4f of the model fine-tuning started from: training is "
                        "making it worse (lower finetune_lr, or train on more photos); best.pt keeps the best so far",
                        cfg.best_metric, value, prog["start_value"])
        if value > prog["best_value"]:
            prog.update(best_value=float(value), best_epoch=epoch + 1, evals_since_best=0)
            ckpt.save_best(model, metrics, epoch + 1)
        else:
            prog["evals_since_best"] += 1
        log.info("epoch %d: loss %.4f  mAP %.4f  AP50 %.4f  accuracy %.4f  (best %s %.4f @ %d)", epoch + 1,
                 stats["loss"], metrics["map"], metrics["ap50"], metrics["accuracy"], cfg.best_metric,
                 prog["best_value"], prog["best_epoch"])
        if final and run.ema is not None:
            m, _ = evaluate(unwrap(run.model), run.eval_loader, run.dev, run.valid_gt, cfg, progress=progress)
            log.info("the same weights without averaging (ema_decay=0): mAP %.4f  AP50 %.4f  accuracy %.4f",
                     m["map"], m["ap50"], m["accuracy"])
    else:
        log.info("epoch %d: loss %.4f", epoch + 1, stats["loss"])
    if final and not (ckpt.out / "best.pt").exists():
        ckpt.save_best(model, {}, epoch + 1)
    ckpt.log_epoch(row)
    if run.writer is not None:  # rank 0 only
        for k, v in row.items():
            if k != "epoch" and v != "":
                run.writer.add_scalar(k, v, epoch + 1)
        run.writer.flush()
    return row


def _decoder_of(pretrained: str) -> dict | None:
    """The reading settings a detector checkpoint stores (``digitdet tune``'s), or None."""
    try:
        state = load_checkpoint(BUNDLED_WEIGHTS if pretrained == "bundled" else pretrained)
    except (ValueError, FileNotFoundError):  # a bare state dict: no reading settings
        return None
    return state.get("decoder") or None


def _score_start(run: Run, progress: bool) -> None:
    """Validate the model a fine-tuning run starts from: metrics.csv's epoch 0, and best.pt until
    an epoch beats it, so fine-tuning never hands back a model worse than it was given."""
    cfg, prog, model = run.cfg, run.prog, _evaluated(run)
    metrics, _ = evaluate(model, run.eval_loader, run.dev, run.valid_gt, cfg, progress=progress)
    value = float(metrics[cfg.best_metric])
    prog.update(best_value=value, best_epoch=0, start_value=value)
    run.ckpt.save_best(model, metrics, 0)
    row = {"epoch": 0, **{k: "" for k in (*LOSS_NAMES, "loss", "lr", "images_per_s")},
           **{k: round(float(metrics[k]), 5) for k in ("map", "ap50", "ap75", "accuracy")}}
    run.ckpt.log_epoch(row)
    prog["history"].append(row)
    log.info("the starting model (epoch 0): mAP %.4f  AP50 %.4f  accuracy %.4f", metrics["map"], metrics["ap50"],
             metrics["accuracy"])


def _per_step(t_first: float, steps: int) -> float:
    """Seconds per optimizer step since the end of this call's first (which also started the loader's workers)."""
    return (time.perf_counter() - t_first) / max(steps - 1, 1)


def _save_last(run: Run) -> None:
    run.ckpt.save_last(run.model, run.optimizer, run.scheduler, run.scaler, run.prog, run.ema)


def _evaluated(run: Run) -> torch.nn.Module:
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


# ---- set-up ---------------------------------------------------------------------------------

@dataclasses.dataclass
class Run:
    """What the loop of one run shares: model and optimisation state, progress, writers, validation data."""
    cfg: Config
    dev: torch.device
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: object  # torch.amp.GradScaler on CUDA with AMP, else None
    ema: object  # torch.optim.swa_utils.AveragedModel of the unwrapped model (cfg.ema_decay), else None
    # epoch, step_in_epoch (batches), best_value, best_epoch, evals_since_best, elapsed_s, history,
    # world_size, total_steps (the lr schedule's length), epoch_sums (the epoch's running loss sums),
    # start_value (a fine-tuning run: its starting model's validation score)
    prog: dict
    ckpt: Checkpointer
    writer: object  # TensorBoard SummaryWriter on rank 0, else None
    steps_per_epoch: int  # optimizer steps
    eval_loader: object  # this rank's share of the validation batches
    valid_gt: dict  # the validation split's COCO dict


def _prepare(cfg: Config, data_root, out_dir: Path, resume: bool, device: str,
             progress: bool = True) -> tuple[Config, dict | None, bool]:
    """Run folder, config (saved as config.yaml, backbone pre-trained first when asked: with a
    progress bar when ``progress``), seeds;
    returns the config to run with, when resuming the last checkpoint, and whether this is the
    start of a fine-tuning run (from a whole detector: lr = finetune_lr)."""
    on_main(writable_folder, out_dir)  # rank 0 checks; a failure stops every rank alike
    cfg, state = on_main(start_run, cfg, out_dir, resume)  # rank 0 reads last.pt: one decision for all ranks
    if state is None and cfg.pretrain_epochs and cfg.pretrained == "none":
        cfg.pretrained = on_main(pretrain_for_run, cfg, data_root, out_dir, device, progress)  # config.yaml records it
    finetune = state is None and on_main(starts_from_detector, cfg.pretrained)  # one answer for every rank
    if finetune and cfg.finetune_lr:
        log.info("fine-tuning the detector of pretrained=%s: lr %g (finetune_lr; lr=%g is for training from scratch)",
                 cfg.pretrained, cfg.finetune_lr, cfg.lr)
        cfg.lr = cfg.finetune_lr  # config.yaml and the checkpoints show the lr that ran
    start_decoder = on_main(_decoder_of, cfg.pretrained) if finetune else None
    if start_decoder:  # it is validated, and best.pt saved, reading as the model it starts from did
        cfg.apply_decoder(start_decoder)
        log.info("reading as pretrained=%s was tuned to: %s", cfg.pretrained,
                 {k: v for k, v in cfg.decoder().items() if k != "line_start_side"})
    if is_main():
        (out_dir / "config.yaml").write_text(cfg.dumps())
    log.info("resolved config:\n%s", cfg.dumps())
    log.info("effective batch %d (batch_size %d x world_size %d x grad_accum %d), lr %g (lr_scale=%s)",
             cfg.batch_size * world_size() * cfg.grad_accum, cfg.batch_size, world_size(), cfg.grad_accum,
             scaled_lr(cfg), cfg.lr_scale)
    seed_everything(cfg.seed)
    return cfg, state, finetune


def _build_run(cfg: Config, state: dict | None, dev: torch.device, steps_per_epoch: int, out_dir: Path,
               eval_loader, valid_gt: dict) -> Run:
    """Model, optimizer, schedule and progress: fresh, or exactly as last.pt left them."""
    from torch.utils.tensorboard import SummaryWriter  # tensorboard's import costs ~1 s: only when training

    # A resumed run's weights all come from last.pt: never re-read (or download) pretrained ones.
    model = build_model(cfg, load_weights=state is None).to(dev)
    optimizer = build_optimizer(model, dataclasses.replace(cfg, lr=scaled_lr(cfg)))
    # the schedule's length lives in prog (saved in last.pt): a time budget re-plans it (plan_schedule)
    prog = {"epoch": 0, "step_in_epoch": 0, "best_value": -1.0, "best_epoch": -1, "evals_since_best": 0,
            "elapsed_s": 0.0, "history": [], "world_size": world_size(), "total_steps": cfg.epochs * steps_per_epoch,
            "epoch_sums": {}, "start_value": None}
    scheduler = build_scheduler(optimizer, lambda: prog["total_steps"], steps_per_epoch, cfg)
    scaler = torch.amp.GradScaler("cuda") if cfg.amp and dev.type == "cuda" else None
    ema = build_ema(model, cfg.ema_decay)
    if state is not None:
        prog.update(restore(state, model, optimizer, scheduler, scaler, ema))  # in place: the schedule reads it
        adapt_to_world(prog, cfg, optimizer, scheduler, steps_per_epoch)
        log.info("resuming %s at epoch %d, batch %d", out_dir, prog["epoch"], prog["step_in_epoch"])
    model = wrap_model(model, dev, cfg.sync_bn)  # DDP under torchrun (after restoring: plain keys)
    writer = SummaryWriter(str(out_dir / "tb")) if is_main() else None
    return Run(cfg, dev, model, optimizer, scheduler, scaler, ema, prog, Checkpointer(out_dir, cfg), writer,
               steps_per_epoch, eval_loader, valid_gt)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_split(data_root, split: str, cfg: Config, train: bool, max_images: int = 0, progress: bool | None = None):
    """(DigitDataset, cleaned COCO dict restricted to the dataset's images) of an annotated split;
    ``progress`` as :func:`load_coco_digits` takes it."""
    images_dir, ann = split_paths(data_root, split)
    if ann is None:
        raise FileNotFoundError(f"{Path(data_root) / (split + '.json')}: annotations of split {split!r} not found")
    coco, report = load_coco_digits(ann, images_dir, progress=progress)
    log.info(report.summary(str(ann)))
    transform = build_transforms("digits", train, cfg.crop_digits_p)
    letter_label = L.LETTER if cfg.letter_class and train else None
    ds = DigitDataset(coco, images_dir, transform, seed=cfg.seed, max_images=max_images, letter_label=letter_label)
    if letter_label is not None:
        n = sum(len(im.get("letter_boxes", [])) for im in ds.images)
        (log.info if n else log.warning)(f"{ann}: {n} letter boxes (letter_class=true)"
                                         + ("" if n else ": the letter class has nothing to learn from"))
    keep = {im["id"] for im in ds.images}
    coco = {**coco, "images": ds.images, "annotations": [a for a in coco["annotations"] if a["image_id"] in keep]}
    return ds, coco


