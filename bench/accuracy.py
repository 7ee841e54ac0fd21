"""Accuracy for a fixed CPU budget: digitdet recipes vs the seeds' setup vs ultralytics yolov8n.

    python bench/accuracy.py --data DATA --minutes 25 --threads 2
    python bench/accuracy.py --data DATA --minutes 25 --models default,yolov8n --out runs/bench_acc

Every model trains from scratch (no downloaded weights) on DATA/train for the same wall-clock
budget on the same threads, then is scored the same way: detections on DATA/valid pick the
number-reading threshold (digitdet.tune.tune_decoder), and the figures reported are on
DATA/test (its truth in test_gt.json, as `digitdet synth` writes it): COCO mAP, AP50 and
whole-number accuracy from digitdet.score.metrics, for every model. With ``--tune-scale`` a digitdet
recipe's input scale is chosen on DATA/valid too (as `digitdet tune --scale`).
``--eval-only`` scores the runs already in ``--out`` without training.

* digitdet recipes (configs/*.yaml): `fit` with ``time_budget_min`` (what is left of the budget
  after the recipe's backbone pre-training, ``pretrain_epochs``), which plans the learning-rate
  schedule from the measured time per step so that it ends within the budget.
  ``--procs P`` trains with P processes of ``--threads`` threads each (`torchrun`, gloo), the
  fastest way to use several CPU cores: a detector's small tensors keep one thread per process
  far busier than P threads in one process.
* yolov8n: ultralytics built from ``yolov8n.yaml`` (nc=10, no weights), its default recipe
  (mosaic, EMA, warm-up) with ``time=`` the budget, imgsz 160, batch 32, no per-epoch
  validation; needs the ``bench`` extra. The optimizer is the one ultralytics' ``auto`` picks
  for runs under 10k iterations (AdamW at its fitted lr): with ``time=`` it plans 100 epochs
  and so picks MuSGD, whose Newton-Schulz step made each batch ~7x slower on 2 CPU cores
  (9.5 s vs 1.4 s per batch of 32), which no user training on a CPU would keep.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from digitdet.config import load_config
from digitdet.data.coco import load_coco_digits, split_paths
from digitdet.read.decode import gt_sizes, no_start_ids
from digitdet.read.detect import predict_batches
from digitdet.read.detector import load_detector
from digitdet.read.zoom import reading_detector
from digitdet.score.evaluation import score_detections
from digitdet.score.metrics import gt_numbers
from digitdet.tune import SCALE_FACTORS, tune_decoder, tune_reading


def run_digitdet(recipe: str, data: Path, out: Path, minutes: float, workers: int, epochs: int = 0,
                 procs: int = 1, threads: int = 1, train_images: int = 0, overrides=()) -> Path:
    """Train a digitdet recipe within ``minutes``, its backbone pre-training included (an
    ``out/backbone.pt`` already there is reused, and its time is then not counted). By default
    passes over all the training images until fit's time-budget plan ends the schedule;
    ``epochs`` > 0 caps the passes (of ``train_images`` images each, 0: all). ``procs`` > 1 trains
    under torchrun with ``threads`` threads per process; pre-training then uses procs x threads
    threads in this process. ``overrides`` (key=value) change the recipe's settings."""
    from digitdet.train.fit import fit
    from digitdet.train.pretrain import pretrain_for_run

    cfg = load_config(recipe, [*overrides, f"workers={workers}", "eval_every=0", "save_every_steps=0"])
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    if cfg.pretrain_epochs and cfg.pretrained == "none":
        torch.set_num_threads(procs * threads)
        cfg.pretrained, cfg.pretrain_epochs = pretrain_for_run(cfg, data, out), 0
        torch.set_num_threads(threads)
    n_train = len(load_coco_digits(*reversed(split_paths(data, "train")), check_images=False)[0]["images"])
    budget = minutes - (time.perf_counter() - t0) / 60  # pre-training counts too
    cfg.epochs = epochs or 1000  # fit plans the schedule's length from its speed (time_budget_min)
    cfg.max_train_images = train_images or n_train
    cfg.time_budget_min = budget
    print(f"{recipe}: at most {cfg.epochs} epochs of {cfg.max_train_images} images in {budget:.1f} min, "
          f"{procs} process(es) x {threads} thread(s)", flush=True)
    if procs == 1:
        fit(cfg, data, out, progress=False)
    else:  # the same fit() in every process; config.yaml of the run records what ran
        (out / "bench_config.yaml").write_text(cfg.dumps())
        subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}",
                        "-m", "digitdet", "train", "--data", str(data), "--out", str(out), "--device", "cpu",
                        "--threads", str(threads), "--quiet", "--config", str(out / "bench_config.yaml")],
                       check=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    return out / "best.pt"


def digitdet_detections(weights: Path, data: Path, split: str, workers: int, limit: int = 0, overrides=()):
    """Detections on a split (its first ``limit`` images when > 0) and the model's config."""
    from digitdet.data.coco import ImageFolderDataset
    from digitdet.data.loaders import inference_loader
    from digitdet.data.transforms import build_transforms

    model, cfg, _ = load_detector(weights, torch.device("cpu"), list(overrides))
    images_dir, _ = split_paths(data, split)
    ds = ImageFolderDataset(images_dir, build_transforms("none", train=False))
    ds.items = ds.items[: limit or None]
    loader = inference_loader(ds, None, 8, workers)
    detect = reading_detector(model, cfg, torch.device("cpu"))
    return predict_batches(model, loader, torch.device("cpu"), progress=False, detect=detect)["detections"], cfg


# ultralytics' own 'auto' choice below 10k iterations: AdamW, lr0 = 0.002 * 5 / (4 + nc), nc = 10
YOLO_ADAMW_LR = round(0.002 * 5 / (4 + 10), 6)


def run_yolo(data: Path, out: Path, minutes: float, workers: int):
    from ultralytics import YOLO

    from digitdet.data.yolo import coco_to_yolo

    root = out / "yolo_data"
    for split in ("train", "valid"):
        images_dir, ann = split_paths(data, split)
        # ultralytics finds labels by replacing /images/ in each image's resolved path, so the
        # images must really live under images/ (hard links: no copy on the same file system).
        img_dir = root / "images" / split
        img_dir.mkdir(parents=True, exist_ok=True)
        for f in images_dir.glob("*.png"):
            if not (img_dir / f.name).exists():
                try:
                    os.link(f, img_dir / f.name)
                except OSError:
                    shutil.copy2(f, img_dir / f.name)
        coco_to_yolo(ann, images_dir, root / "labels" / split)
    yaml_path = root / "data.yaml"
    yaml_path.write_text(f"path: {root.resolve()}\ntrain: images/train\nval: images/valid\n"
                         f"names: {{{', '.join(f'{d}: {chr(39)}{d}{chr(39)}' for d in range(10))}}}\n")
    model = YOLO("yolov8n.yaml")
    model.train(data=str(yaml_path), imgsz=160, batch=32, time=minutes / 60, epochs=100, device="cpu",
                workers=workers, plots=False, val=False, amp=False, project=str(out.resolve()), name="yolo",
                exist_ok=True, verbose=False, seed=0, deterministic=False,
                optimizer="AdamW", lr0=YOLO_ADAMW_LR)
    return model


def yolo_detections(model, data: Path, split: str):
    images_dir, _ = split_paths(data, split)
    dets = {}
    paths = sorted(images_dir.glob("*.png"), key=lambda p: int(p.stem))
    for i in range(0, len(paths), 64):
        for p, r in zip(paths[i:i + 64], model.predict([str(q) for q in paths[i:i + 64]], imgsz=160,
                                                        conf=0.001, iou=0.7, max_det=30, device="cpu",
                                                        verbose=False)):
            b = r.boxes
            dets[int(p.stem)] = (b.xyxy.numpy(), b.cls.numpy().astype(np.int64) + 1, b.conf.numpy())
    return dets


def score(dets_valid, dets_test, data: Path, cfg, limit: int = 0) -> dict:
    """Threshold tuned on valid, figures on test (their first ``limit`` images when > 0)."""
    def gt(split):
        coco, _ = load_coco_digits(*reversed(split_paths(data, split)), check_images=False)
        keep = {im["id"] for im in sorted(coco["images"], key=lambda im: im["id"])[: limit or None]}
        return {**coco, "images": [im for im in coco["images"] if im["id"] in keep],
                "annotations": [a for a in coco["annotations"] if a["image_id"] in keep]}

    tuned = tune_decoder(dets_valid, gt_numbers(gt("valid")), iou_thresh=cfg.decode_iou_thresh,
                         no_start=no_start_ids(gt_sizes(gt("valid")), cfg.decoder()["line_start_side"]))
    m = score_detections(dets_test, gt("test"), cfg, decoder=tuned)
    return {"map": m["map"], "ap50": m["ap50"], "accuracy": m["accuracy"], "decode_thresh": tuned["score_thresh"],
            "decode_line": tuned["line_thresh"], "test_images": len(gt("test")["images"])}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--out", default="runs/bench_accuracy", type=Path)
    p.add_argument("--minutes", type=float, default=25.0, help="training budget per model (wall clock)")
    p.add_argument("--models", default="default,seed_r50v2,yolov8n")
    p.add_argument("--seed-minutes", type=float, default=None,
                   help="budget for seed_r50v2 (default: --minutes); it sees ~0.06 img/s on 2 cores")
    p.add_argument("--seed-eval-images", type=int, default=50,
                   help="seed_r50v2 is scored on the first N valid/test images only (0.15 img/s inference)")
    p.add_argument("--epochs", type=int, default=0,
                   help="digitdet recipes: at most this many passes (default: as many as the budget holds)")
    p.add_argument("--train-images", type=int, default=0,
                   help="with --epochs: training images per pass (default: all)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (per process with --procs)")
    p.add_argument("--procs", type=int, default=1,
                   help="digitdet recipes: train with this many processes (torchrun, gloo) of --threads each")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--tune-scale", action="store_true",
                   help="digitdet recipes: choose the input scale on valid (%s x the training min_size)"
                        % "/".join(f"{f:g}" for f in SCALE_FACTORS))
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="digitdet recipes: config overrides, e.g. train_scales=[0.75,1,1.25] (use --out to keep runs apart)")
    p.add_argument("--eval-only", action="store_true", help="digitdet recipes: score OUT/NAME/best.pt, no training")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    rows = []
    for name in args.models.split(","):
        out = args.out / name
        t0 = time.perf_counter()
        if name == "yolov8n":
            model = run_yolo(args.data, out, args.minutes, args.workers)
            cfg = load_config("default")
            dv, dt = yolo_detections(model, args.data, "valid"), yolo_detections(model, args.data, "test")
        else:
            minutes = args.seed_minutes if name == "seed_r50v2" and args.seed_minutes else args.minutes
            weights = out / "best.pt"
            if args.eval_only and not weights.exists():
                raise FileNotFoundError(f"--eval-only: no {weights}; train it first (without --eval-only)")
            if not args.eval_only:
                weights = run_digitdet(name, args.data, out, minutes, args.workers, args.epochs, args.procs,
                                       args.threads, args.train_images, args.set)
            limit = args.seed_eval_images if name == "seed_r50v2" else 0
            if args.tune_scale and not limit:  # valid's detections at the chosen scale come with the choice
                images_dir, ann = split_paths(args.data, "valid")
                best = tune_reading(weights, images_dir, load_coco_digits(ann, images_dir)[0], torch.device("cpu"),
                                    SCALE_FACTORS, batch_size=8, workers=args.workers)
                dv, cfg = best["detections"], best["cfg"]
                dt, _ = digitdet_detections(weights, args.data, "test", args.workers, 0,
                                            [f"min_size={cfg.min_size}", f"max_size={cfg.max_size}"])
            else:
                dv, cfg = digitdet_detections(weights, args.data, "valid", args.workers, limit)
                dt, _ = digitdet_detections(weights, args.data, "test", args.workers, limit)
        row = {"model": name, "train_minutes": None if args.eval_only and name != "yolov8n" else
               round((time.perf_counter() - t0) / 60, 1), "min_size": None if name == "yolov8n" else cfg.min_size,
               **score(dv, dt, args.data, cfg, limit if name == "seed_r50v2" else 0)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\n{'model':<22}{'minutes':>9}{'min_size':>9}{'mAP':>8}{'AP50':>8}{'accuracy':>10}{'test images':>13}")
    for r in rows:
        print(f"{r['model']:<22}{r['train_minutes'] or '-':>9}{r['min_size'] or '-':>9}{r['map']:>8.3f}{r['ap50']:>8.3f}"
              f"{r['accuracy']:>10.3f}{r['test_images']:>13}")


if __name__ == "__main__":
    main()
