"""digitdet tune: choose the reading settings on an annotated split and WRITE them into a checkpoint."""
from __future__ import annotations

import json
import logging
from pathlib import Path

from digitdet.cli.common import add_device, add_overrides, load_split_gt, resolve_device, setup
from digitdet.io import load_checkpoint, save_checkpoint
from digitdet.read.detector import weights_path
from digitdet.score.evaluation import score_detections
from digitdet.score.metrics import summarize
from digitdet.tune import SCALE_FACTORS, tune_reading

log = logging.getLogger("digitdet")

TUNED_KEYS = ("score_thresh", "iou_thresh", "line_thresh", "box_pad", "box_same_height", "min_size", "max_size",
              "accuracy")


def add_parser(sub, name):
    p = sub.add_parser(
        name, description="Choose the number-reading score and line thresholds (best accuracy) and the style of "
                    "pred.json's boxes (pad, one height per photo: best mAP) on an annotated split, and WRITE them "
                    "into the checkpoint's decoder settings, which predict and evaluate read with. Tune on "
                    "validation photos, never on those you report.",
        epilog="example: digitdet tune --weights runs/x/best.pt --data DATA --split valid --scale")
    p.add_argument("--weights", help="checkpoint to tune and rewrite (default: the bundled model, which needs --out)")
    p.add_argument("--out", help="write the tuned checkpoint here instead of rewriting --weights")
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument("--split", default="valid", help="annotated split to tune on (default: valid)")
    p.add_argument("--scale", action="store_true",
                   help="also try the input at %s x the training min_size and store the best (small digits are "
                        "found when the photo is enlarged)" % "/".join(f"{f:g}" for f in SCALE_FACTORS))
    p.add_argument("--batch-size", type=int, default=32)
    add_device(p)
    add_overrides(p, "zoom_read=false")
    return p


def run(args) -> int:
    setup(args)
    if args.weights is None and args.out is None:
        raise ValueError("tuning the bundled model needs --out (the packaged file is not rewritten)")
    target = Path(args.out or args.weights)
    if target.is_dir():
        raise IsADirectoryError(f"{target}: is a folder; the tuned checkpoint is a file (e.g. {target / 'best.pt'})")
    images_dir, gt = load_split_gt(args.data, args.split, args.quiet)
    best = tune_reading(args.weights, images_dir, gt, resolve_device(args.device),
                        SCALE_FACTORS if args.scale else (1.0,), args.batch_size, args.workers, args.overrides,
                        not args.quiet)
    metrics = {"source": str(args.weights or "bundled model"), "images_per_s": best["images_per_s"],
               **score_detections(best["detections"], gt, best["cfg"])}
    tuned = {k: best[k] for k in TUNED_KEYS}
    state = load_checkpoint(weights_path(args.weights))
    state["decoder"] = {**tuned, "tuned_on": f"{Path(args.data).name}/{args.split}"}
    save_checkpoint(target, state)
    log.info("wrote to %s: decoder score threshold %.2f, line threshold %.2f, input min_size %d (accuracy %.4f on "
             "%s), box pad %.2f, one height per photo %s", target, best["score_thresh"], best["line_thresh"],
             best["min_size"], best["accuracy"], args.split, best["box_pad"], best["box_same_height"])
    metrics.update(tuned_decoder={**tuned, "scales": best["table"], "box_styles": best["box_table"]},
                   written_to=str(target), split=args.split, images=len(gt["images"]))
    print(summarize(metrics))
    print(json.dumps(metrics, default=float))
    return 0
