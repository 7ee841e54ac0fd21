"""Scoring detections the way both tasks are graded (Task 1 mAP, Task 2 number accuracy)."""
from __future__ import annotations

from digitdet.distributed import gather_predictions, on_main
from digitdet.read.decode import decode_all, gt_sizes, pred_results
from digitdet.read.detect import predict_batches
from digitdet.read.zoom import reading_detector
from digitdet.score.metrics import coco_map, gt_numbers, number_errors, sequence_accuracy


def score_detections(dets: dict, gt: dict, cfg, decoder: dict | None = None) -> dict:
    """mAP family + whole-number accuracy + error breakdown of ``dets`` against COCO dict ``gt``;
    numbers read with ``cfg``'s decoder settings, or those of ``decoder`` where it has them."""
    decoder = {**cfg.decoder(), **(decoder or {})}
    metrics = coco_map(gt, pred_results(dets, cfg))
    truth = gt_numbers(gt)
    pred = decode_all(dets, truth.keys(), decoder, gt_sizes(gt))
    metrics["accuracy"] = sequence_accuracy(pred, truth)
    metrics["errors"] = number_errors(pred, truth)
    metrics["decode_score_thresh"] = decoder["score_thresh"]
    metrics["decode_line_thresh"] = decoder["line_thresh"]
    return metrics


def evaluate(model, loader, device, gt: dict, cfg, progress: bool = True) -> tuple[dict, dict]:
    """Run the model on an annotated split and score it; returns (metrics, detections).

    Under torchrun each rank passes its share of the batches (distributed.shard_batches) and a
    plain, not DDP-wrapped, model; every rank gets back the detections of the whole split and
    the metrics rank 0 computed from them, so all ranks take the same best.pt decisions.
    """
    out = gather_predictions(predict_batches(model, loader, device, progress=progress, desc="evaluate",
                                             detect=reading_detector(model, cfg, device)))
    metrics = on_main(score_detections, out["detections"], gt, cfg)
    metrics["images_per_s"] = out["images_per_s"]
    return metrics, out["detections"]
