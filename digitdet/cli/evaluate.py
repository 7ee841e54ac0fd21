"""digitdet evaluate: score a model (or any prediction file) on an annotated split."""
from __future__ import annotations

import json
import logging
from pathlib import Path

from digitdet.cli.common import add_device, resolve_device, setup
from digitdet.config import Config
from digitdet.data.coco import load_coco_digits, split_paths
from digitdet.io import load_checkpoint, read_pred_csv, read_pred_json, save_checkpoint
from digitdet.read.decode import group_by_image
from digitdet.read.detect import predict_batches
from digitdet.read.detector import load_detector
from digitdet.read.pipeline import folder_loader
from digitdet.read.submission import config_of_predictions
from digitdet.read.tta import requested_views, tta_detector
from digitdet.read.zoom import reading_detector
from digitdet.score.evaluation import score_detections
from digitdet.score.metrics import gt_numbers, number_errors, sequence_accuracy, summarize
from digitdet.tune import SCALE_FACTORS, tune_reading
from digitdet.viz.report import write_evaluation_pictures

log = logging.getLogger("digitdet")


def add_parser(sub, name):
    p = sub.add_parser(name, help="mAP, AP50, AP75, APs/m/l, number accuracy and error breakdown on a split")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--weights", help="checkpoint (best.pt / last.pt); default: the bundled model")
    src.add_argument("--pred", help="score this pred.json instead of running a model; numbers are read with the "
                                    "decoder `digitdet predict` used (its pred_config.json beside it), else plainly "
                                    "at 0.5; key=value overrides either")
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument("--split", default="valid", help="valid (default), train, or test when test_gt.json exists")
    p.add_argument("--tune-decoder", action="store_true",
                   help="pick the number-reading score threshold that maximises accuracy on this split, "
                        "and the style of pred.json's boxes (pad, one height per photo) that maximises mAP "
                        "(real SVHN's boxes are looser than the renderer's), and store them in the weights "
                        "file (predict uses them)")
    p.add_argument("--tune-scale", action="store_true",
                   help="with --tune-decoder: also try the input at %s x the training min_size and store "
                        "the best (small digits are found when the image is enlarged)"
                        % "/".join(f"{f:g}" for f in SCALE_FACTORS))
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--csv", help="score the numbers of this pred.csv (e.g. an ensemble's) instead of decoding boxes")
    p.add_argument("--tta", action="store_true", help="test-time augmentation (see `predict --tta`)")
    p.add_argument("--tta-scales", metavar="S[,S...]",
                   help="test-time augmentation at these factors of the input scale only (see `predict --tta-scales`)")
    p.add_argument("--plots", help="write PR curves, confusion matrix and worst numbers here "
                                   "(default with --weights: WEIGHTS_FOLDER/eval_SPLIT; off otherwise)")
    add_device(p)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="inference settings, e.g. decode_score_thresh=0.6")
    return p


def run(args) -> int:
    setup(args)
    args.views = requested_views(args.tta, args.tta_scales)
    images_dir, ann = split_paths(args.data, args.split)
    if ann is None:
        raise FileNotFoundError(f"no annotations for split {args.split!r} in {args.data}")
    gt, report = load_coco_digits(ann, images_dir)
    log.info(report.summary(str(ann)))
    if args.tune_scale and not args.tune_decoder:
        raise ValueError("--tune-scale goes with --tune-decoder (the threshold is chosen per scale)")
    if args.pred:
        if args.tune_decoder:
            raise ValueError("--tune-decoder needs --weights (it stores the threshold in the weights file)")
        # read the numbers as predict read pred.csv (tuned threshold, line reading), unless overridden
        cfg = config_of_predictions(args.pred) or Config()
        # the file's boxes already carry predict's box style (an override may add one)
        cfg.pred_box_pad, cfg.pred_box_same_height = 0.0, False
        cfg = cfg.override(args.overrides)
        dets = group_by_image(read_pred_json(args.pred))
        metrics = score_detections(dets, gt, cfg)
        metrics["source"] = str(args.pred)
    elif args.tune_decoder:
        metrics, dets, cfg = _tune(args, images_dir, gt)
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


def _tune(args, images_dir, gt):
    """Choose the reading threshold (and with --tune-scale the input scale) on this split, score
    with them, store them in the weights file's decoder settings; (metrics, detections, cfg)."""
    if args.views:
        raise ValueError("--tune-decoder with --tta or --tta-scales would store a TTA-tuned threshold "
                         "that plain predict then uses")
    best = tune_reading(args.weights, images_dir, gt, resolve_device(args.device),
                        SCALE_FACTORS if args.tune_scale else (1.0,), args.batch_size,
                        args.workers, args.overrides, not args.quiet)
    dets, cfg = best["detections"], best["cfg"]
    metrics = {"source": str(args.weights or "bundled model"), "images_per_s": best["images_per_s"],
               **score_detections(dets, gt, cfg)}
    tuned = {k: best[k] for k in ("score_thresh", "iou_thresh", "line_thresh", "box_pad", "box_same_height",
                                  "min_size", "max_size", "accuracy")}
    if args.weights:
        state = load_checkpoint(args.weights)
        state["decoder"] = {**tuned, "tuned_on": f"{Path(args.data).name}/{args.split}"}
        save_checkpoint(args.weights, state)
        log.info("decoder score threshold %.2f, line threshold %.2f, input min_size %d (accuracy %.4f on %s), "
                 "box pad %.2f, one height per photo %s saved in %s", best["score_thresh"], best["line_thresh"],
                 best["min_size"], best["accuracy"], args.split, best["box_pad"], best["box_same_height"], args.weights)
    metrics["tuned_decoder"] = {**tuned, "scales": best["table"], "box_styles": best["box_table"]}
    return metrics, dets, cfg
