"""digitdet evaluate: score a model (or any prediction file) on an annotated split."""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from digitdet.cli.common import add_device, add_overrides, load_split_gt, resolve_device, setup
from digitdet.config import Config
from digitdet.io import read_pred_csv, read_pred_json
from digitdet.read.decode import group_by_image
from digitdet.read.detect import predict_batches
from digitdet.read.detector import load_detector
from digitdet.read.pipeline import folder_loader
from digitdet.read.submission import config_of_predictions
from digitdet.read.tta import requested_views, tta_detector
from digitdet.read.zoom import reading_detector
from digitdet.score.evaluation import score_detections
from digitdet.score.metrics import gt_numbers, number_errors, sequence_accuracy, summarize
from digitdet.viz.report import write_evaluation_pictures

log = logging.getLogger("digitdet")


def add_parser(sub, name):
    p = sub.add_parser(name)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--weights", help="checkpoint (best.pt / last.pt); default: the bundled model")
    src.add_argument("--pred", help="score this pred.json instead of running a model; numbers are read with the "
                                    "decoder `digitdet predict` used (its pred_config.json beside it), else plainly "
                                    "at 0.5; key=value overrides either")
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument("--split", default="valid", help="valid (default), train, or test when test_gt.json exists")
    # moved to `digitdet tune`, which says it writes the weights; kept to point there
    p.add_argument("--tune-decoder", "--tune-scale", dest="moved_tune", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--csv", help="score the numbers of this pred.csv (e.g. an ensemble's) instead of decoding boxes")
    p.add_argument("--tta", action="store_true", help="test-time augmentation (see `predict --tta`)")
    p.add_argument("--tta-scales", metavar="S[,S...]",
                   help="test-time augmentation at these factors of the input scale only (see `predict --tta-scales`)")
    p.add_argument("--plots", help="write PR curves, confusion matrix and worst numbers here "
                                   "(default with --weights: WEIGHTS_FOLDER/eval_SPLIT; off otherwise)")
    add_device(p)
    add_overrides(p)
    return p


def run(args) -> int:
    setup(args)
    args.views = requested_views(args.tta, args.tta_scales)
    if args.moved_tune:
        raise ValueError("evaluate never writes weights: tuning moved to `digitdet tune --weights W --data D "
                         "--split valid` (--tune-scale is its --scale)")
    images_dir, gt = load_split_gt(args.data, args.split, args.quiet)
    if args.pred:
        # read the numbers as predict read pred.csv (tuned threshold, line reading), unless overridden
        cfg = config_of_predictions(args.pred) or Config()
        # the file's boxes already carry predict's box style (an override may add one)
        cfg.pred_box_pad, cfg.pred_box_same_height = 0.0, False
        cfg = cfg.override(args.overrides)
        dets = group_by_image(read_pred_json(args.pred))
        metrics = score_detections(dets, gt, cfg)
        metrics["source"] = str(args.pred)
    else:
        metrics, dets, cfg = _run_model(args, images_dir)
        metrics = {**metrics, **score_detections(dets, gt, cfg)}
    if args.csv:  # Task 2 from the file itself: an ensemble's vote has no boxes to decode
        numbers, truth = read_pred_csv(args.csv), gt_numbers(gt)
        metrics.update(accuracy=sequence_accuracy(numbers, truth), errors=number_errors(numbers, truth),
                       numbers_source=str(args.csv))
        metrics.pop("decode_score_thresh", None)
        metrics.pop("decode_line_thresh", None)
    plots = args.plots or (Path(args.weights).parent / f"eval_{args.split}" if args.weights else None)
    if plots:
        log.info("pictures: %s", ", ".join(map(str, write_evaluation_pictures(plots, dets, gt, images_dir, cfg))))
    metrics.update(split=args.split, images=len(gt["images"]))
    print(summarize(metrics))
    print(json.dumps(metrics, default=float))
    return 0


def _run_model(args, images_dir):
    device = resolve_device(args.device)
    model, cfg, _ = load_detector(args.weights, device, args.overrides)
    _, loader, _ = folder_loader(images_dir, cfg, args.batch_size, args.workers if args.workers is not None else cfg.workers)
    detect = reading_detector(model, cfg, device, tta_detector(model, device, args.views) if args.views else None)
    out = predict_batches(model, loader, device, progress=not args.quiet, desc="evaluate", detect=detect)
    metrics = {"source": str(args.weights or "bundled model"), "images_per_s": out["images_per_s"]}
    return metrics, out["detections"], cfg
