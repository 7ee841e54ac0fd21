"""Scoring detections the way both tasks are graded (Task 1 mAP, Task 2 number accuracy)."""
from __future__ import annotations

from digitdet.boxes import pad_xyxy, same_height_xyxy
from digitdet.decode import decode_number, detections_to_coco, no_start_ids
from digitdet.distributed import gather_predictions, on_main
from digitdet.engine import empty_detections, predict_batches
from digitdet.metrics import coco_map, gt_numbers, number_errors, sequence_accuracy
from digitdet.zoom import reading_detector


def detections_to_results(dets: dict, score_thresh: float, max_dets: int, box_pad: float = 0.0,
                          same_height_from: float | None = None) -> list[dict]:
    """{image_id: (boxes xyxy, labels, scores)} -> COCO result records (Task 1 / pred.json).

    Boxes are styled like real SVHN's annotations when asked: with ``same_height_from`` (a
    score), an image's boxes take one height (:func:`digitdet.boxes.same_height_xyxy`); then each
    grows by ``box_pad`` x its height a side (:func:`digitdet.boxes.pad_xyxy`)."""
    out = []
    for image_id in sorted(dets):
        boxes, labels, scores = dets[image_id]
        if same_height_from is not None:
            boxes = same_height_xyxy(boxes, scores, same_height_from)
        out.extend(detections_to_coco(image_id, pad_xyxy(boxes, box_pad), labels, scores,
                                      score_thresh=score_thresh, max_dets=max_dets))
    return out


def pred_results(dets: dict, cfg, box_pad: float | None = None, same_height: bool | None = None) -> list[dict]:
    """pred.json's records of ``dets`` with ``cfg``'s settings (score threshold, count, box
    style; ``box_pad`` / ``same_height`` replace the config's)."""
    same = cfg.pred_box_same_height if same_height is None else same_height
    return detections_to_results(dets, cfg.pred_score_thresh, cfg.pred_max_per_image,
                                 cfg.pred_box_pad if box_pad is None else box_pad,
                                 cfg.decode_score_thresh if same else None)


def decode_all(dets: dict, image_ids, decoder: dict, sizes: dict | None = None) -> dict[int, str]:
    """The number read in every image of ``image_ids`` ("-1" for images without detections);
    ``decoder`` holds :func:`decode_number`'s settings as ``Config.decoder()`` gives them;
    ``sizes`` (``{image_id: (width, height)}``) tells which photos are too large for line
    reading's start rule (:func:`digitdet.decode.starts_lines`); without it every photo has it."""
    kw = {"score_thresh": decoder["score_thresh"], "iou_thresh": decoder["iou_thresh"],
          "line_thresh": decoder.get("line_thresh", 0.0)}
    no_start = no_start_ids(sizes, decoder.get("line_start_side", 0))
    return {i: decode_number(*dets.get(i, empty_detections()), **kw, line_start=i not in no_start) for i in image_ids}


def gt_sizes(gt: dict) -> dict[int, tuple[int, int]]:
    """``{image_id: (width, height)}`` of a COCO dict's images (those that state both)."""
    return {int(im["id"]): (im["width"], im["height"]) for im in gt["images"] if im.get("width") and im.get("height")}


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


# pred_box_pad values `evaluate --tune-decoder` tries (fractions of the box height a side)
BOX_PADS = (0.0, 0.02, 0.04, 0.06, 0.08, 0.10, 0.12, 0.14)


def tune_box_style(dets: dict, gt: dict, cfg, pads=BOX_PADS) -> dict:
    """The pred.json box style that scores the best mAP against ``gt``: ``{"box_pad",
    "box_same_height", "table": [(box_pad, box_same_height, mAP), ...]}`` over ``pads`` x
    (False, True); ties go to the plainer style (one height off, then the smaller pad). Tight
    annotations choose 0 and False; real SVHN's a pad near their looseness, and one height."""
    table = [(pad, same, coco_map(gt, pred_results(dets, cfg, pad, same))["map"])
             for same in (False, True) for pad in pads]
    pad, same, _ = max(table, key=lambda row: (row[2], -row[1], -row[0]))
    return {"box_pad": pad, "box_same_height": same, "table": table}


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
