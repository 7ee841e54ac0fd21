"""Scoring detections the way both tasks are graded (Task 1 mAP, Task 2 number accuracy)."""
from __future__ import annotations

from digitdet.boxes import pad_xyxy
from digitdet.decode import decode_number, detections_to_coco
from digitdet.distributed import gather_predictions, on_main
from digitdet.engine import empty_detections, predict_batches
from digitdet.metrics import coco_map, gt_numbers, number_errors, sequence_accuracy
from digitdet.zoom import reading_detector


def detections_to_results(dets: dict, score_thresh: float, max_dets: int, box_pad: float = 0.0) -> list[dict]:
    """{image_id: (boxes xyxy, labels, scores)} -> COCO result records (Task 1 / pred.json),
    each box grown by ``box_pad`` x its height a side (:func:`digitdet.boxes.pad_xyxy`)."""
    out = []
    for image_id in sorted(dets):
        boxes, labels, scores = dets[image_id]
        out.extend(detections_to_coco(image_id, pad_xyxy(boxes, box_pad), labels, scores,
                                      score_thresh=score_thresh, max_dets=max_dets))
    return out


def decode_all(dets: dict, image_ids, decoder: dict) -> dict[int, str]:
    """The number read in every image of ``image_ids`` ("-1" for images without detections);
    ``decoder`` holds :func:`decode_number`'s settings as ``Config.decoder()`` gives them."""
    kw = {"score_thresh": decoder["score_thresh"], "iou_thresh": decoder["iou_thresh"],
          "line_thresh": decoder.get("line_thresh", 0.0)}
    return {i: decode_number(*dets.get(i, empty_detections()), **kw) for i in image_ids}


def score_detections(dets: dict, gt: dict, cfg, decoder: dict | None = None) -> dict:
    """mAP family + whole-number accuracy + error breakdown of ``dets`` against COCO dict ``gt``;
    numbers read with ``cfg``'s decoder settings, or those of ``decoder`` where it has them."""
    decoder = {**cfg.decoder(), **(decoder or {})}
    results = detections_to_results(dets, cfg.pred_score_thresh, cfg.pred_max_per_image, cfg.pred_box_pad)
    metrics = coco_map(gt, results)
    truth = gt_numbers(gt)
    pred = decode_all(dets, truth.keys(), decoder)
    metrics["accuracy"] = sequence_accuracy(pred, truth)
    metrics["errors"] = number_errors(pred, truth)
    metrics["decode_score_thresh"] = decoder["score_thresh"]
    metrics["decode_line_thresh"] = decoder["line_thresh"]
    return metrics


# pred_box_pad values `evaluate --tune-decoder` tries (fractions of the box height a side)
BOX_PADS = (0.0, 0.02, 0.04, 0.06, 0.08, 0.10, 0.12, 0.14)


def tune_box_pad(dets: dict, gt: dict, cfg, pads=BOX_PADS) -> tuple[float, list[tuple[float, float]]]:
    """The ``pred_box_pad`` of ``pads`` whose pred.json scores the best mAP against ``gt`` (ties:
    the smaller pad), and the table ``[(pad, mAP), ...]``. Tight annotations choose 0; real
    SVHN's loose ones a pad near their looseness."""
    table = [(pad, coco_map(gt, detections_to_results(dets, cfg.pred_score_thresh, cfg.pred_max_per_image,
                                                       pad))["map"]) for pad in pads]
    return max(table, key=lambda row: (row[1], -row[0]))[0], table


def evaluate(model, loader, device, gt: dict, cfg, progress: bool = True) -> tuple[dict, dict]:
    """Run the model on an annotated split and score it; returns (metrics, detections).

    Under torchrun each rank passes its share of the batches (distributed.shard_batches) and a
    plain, not DDP-wrapped, model; every rank gets back the detections of the whole split and
    the metrics rank 0 computed from them, so all ranks take the same best/early-stop decisions.
    """
    out = gather_predictions(predict_batches(model, loader, device, progress=progress, desc="evaluate",
                                             detect=reading_detector(model, cfg, device)))
    metrics = on_main(score_detections, out["detections"], gt, cfg)
    metrics["images_per_s"] = out["images_per_s"]
    return metrics, out["detections"]
