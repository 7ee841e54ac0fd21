"""Every picture of a run, written as PNG files (atomically) into a folder.

* :func:`write_training_plots` - ``training_curves.png`` from a run's ``metrics.csv``.
* :func:`write_evaluation_pictures` - ``pr_curves.png``, ``confusion_matrix.png`` and
  ``worst_numbers.png`` (a gallery of the worst numbers read, with what was read and what was
  true) for detections on an annotated split.
* :func:`write_prediction_pictures` - ``grid.png`` and ``images/<id>.png``: the boxes read,
  digits, scores and the number on each image, ground truth beside it (green) when given.
* :func:`write_run_pictures` - what ``fit`` writes at the end: curves + evaluation pictures of
  best.pt on the validation split.

Detections: ``{image_id: (boxes xyxy (N, 4) in pixels of the original image, labels 1..10, scores)}``;
``gt`` is a COCO digit dict (bbox xywh, pixels of each image).
"""
from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import numpy as np
from PIL import Image

from digitdet.boxes import xywh_to_xyxy
from digitdet.data.images import list_images, load_rgb
from digitdet.distributed import unwrap
from digitdet.io import load_checkpoint
from digitdet.labels import category_to_digit
from digitdet.read.decode import empty_detections, starts_lines
from digitdet.read.detect import predict_batches
from digitdet.read.zoom import reading_detector
from digitdet.score.diagnostics import (
    CONFUSION_COLS,
    CONFUSION_ROWS,
    confusion_matrix,
    pr_curves,
    read_boxes,
    worst_number_errors,
)
from digitdet.viz.draw import draw_boxes, image_grid, save_figure_atomic, save_png_atomic
from digitdet.viz.figures import confusion_figure, pr_curves_figure, read_metrics_csv, training_curves_figure

GT_COLOR = (0, 200, 0)  # ground truth is drawn in one colour, predictions in one colour per digit


def write_training_plots(run_dir) -> list[Path]:
    """``run_dir/training_curves.png`` from ``run_dir/metrics.csv``; returns the paths written."""
    run_dir = Path(run_dir)
    path = run_dir / "training_curves.png"
    save_figure_atomic(training_curves_figure(read_metrics_csv(run_dir / "metrics.csv"), title=run_dir.name), path)
    return [path]


def _side_by_side(left: Image.Image, right: Image.Image) -> Image.Image:
    out = Image.new("RGB", (left.width + right.width, max(left.height, right.height)), (0, 0, 0))
    out.paste(left, (0, 0))
    out.paste(right, (left.width, 0))
    return out


def prediction_panel(image: Image.Image, det, score_thresh: float = 0.5, decode_iou: float = 0.5,
                     gt_boxes_xywh=None, gt_labels=None, caption: str = "", line_thresh: float = 0.0,
                     line_start_side: int = 0) -> Image.Image:
    """One image with the boxes the decoder reads (digit + score) and the number read below.

    ``det``: (boxes xyxy px, labels 1..10, scores) of this image. With ``gt_boxes_xywh`` /
    ``gt_labels`` (COCO xywh px, category ids) the truth is drawn beside it in green with
    the true number. ``caption`` is put before the number read (e.g. the file name).
    ``line_start_side``: as ``Config.decoder()``'s (:func:`digitdet.read.decode.starts_lines`).
    """
    boxes, labels, scores = read_boxes(det, score_thresh, decode_iou, line_thresh,
                                       starts_lines(image.size, line_start_side))
    order = np.argsort((boxes[:, 0] + boxes[:, 2]) / 2, kind="stable")  # the number reads left to right
    digits = [category_to_digit(c) for c in labels[order]]
    read = "".join(map(str, digits)) or "-1"
    panel = draw_boxes(image, boxes[order], digits, scores[order], number_text=f"{caption}read {read}")
    if gt_boxes_xywh is None:
        return panel
    gt_xyxy = xywh_to_xyxy(gt_boxes_xywh)
    gt_order = np.argsort((gt_xyxy[:, 0] + gt_xyxy[:, 2]) / 2, kind="stable")
    gt_digits = [category_to_digit(c) for c in np.asarray(gt_labels, dtype=np.int64)[gt_order]]
    truth = draw_boxes(image, gt_xyxy[gt_order], gt_digits, color=GT_COLOR,
                       number_text=f"true {''.join(map(str, gt_digits)) or '-1'}")
    return _side_by_side(panel, truth)


def _gt_of(gt: dict | None, image_id: int):
    if gt is None:
        return None, None
    anns = [a for a in gt["annotations"] if int(a["image_id"]) == image_id]
    return [a["bbox"] for a in anns], [a["category_id"] for a in anns]


def write_prediction_pictures(dets: dict, images_dir, out_dir, gt: dict | None = None, n: int = 36,
                              score_thresh: float = 0.5, decode_iou: float = 0.5, seed: int = 0,
                              only: set[int] | None = None, line_thresh: float = 0.0,
                              line_start_side: int = 0) -> list[Path]:
    """``out_dir/grid.png`` of ``n`` images (a seeded sample of ``images_dir``, or of its images
    whose id is in ``only``; all when fewer) and ``out_dir/images/<id>.png`` for each. Image ids
    are ``data.images.list_images``'s (the file stem's integer, as predict numbers them)."""
    items = [it for it in list_images(images_dir) if only is None or it[0] in only]
    if not items:
        raise ValueError(f"{images_dir}: none of its images is among the {len(only or ())} chosen")
    if n < 1:
        raise ValueError(f"n must be >= 1 picture, got {n}")
    chosen = sorted(random.Random(seed).sample(items, min(n, len(items))))
    out_dir, paths, panels = Path(out_dir), [], []
    for image_id, path in chosen:
        gt_boxes, gt_labels = _gt_of(gt, image_id)
        panel = prediction_panel(load_rgb(path), dets.get(image_id, empty_detections()), score_thresh, decode_iou,
                                 gt_boxes, gt_labels, caption=f"{path.name}: ", line_thresh=line_thresh,
                                 line_start_side=line_start_side)
        save_png_atomic(panel, out_dir / "images" / f"{image_id}.png")
        paths.append(out_dir / "images" / f"{image_id}.png")
        panels.append(panel)
    grid = image_grid(panels, cols=max(1, round(len(panels) ** 0.5)), cell_size=(512 if gt else 256, 256))
    save_png_atomic(grid, out_dir / "grid.png")
    return [out_dir / "grid.png", *paths]


def worst_numbers_gallery(dets: dict, gt: dict, images_dir, score_thresh: float = 0.5, decode_iou: float = 0.5,
                          n: int = 24, line_thresh: float = 0.0, line_start_side: int = 0) -> Image.Image | None:
    """A grid of the ``n`` worst numbers read (:func:`diagnostics.worst_number_errors`), each with
    what was read (left) and the truth (right); None when every number is right."""
    errors = worst_number_errors(dets, gt, score_thresh, decode_iou, n, line_thresh, line_start_side)
    if not errors:
        return None
    files = {int(im["id"]): im["file_name"] for im in gt["images"]}
    panels = []
    for e in errors:
        gt_boxes, gt_labels = _gt_of(gt, e["image_id"])
        panels.append(prediction_panel(load_rgb(Path(images_dir) / files[e["image_id"]]),
                                       dets.get(e["image_id"], empty_detections()), score_thresh, decode_iou,
                                       gt_boxes, gt_labels, caption=f"{e['kind']}: ", line_thresh=line_thresh,
                                       line_start_side=line_start_side))
    return image_grid(panels, cols=max(1, round((len(panels) / 2) ** 0.5)), cell_size=(512, 256))


def write_evaluation_pictures(out_dir, dets: dict, gt: dict, images_dir, cfg) -> list[Path]:
    """Precision-recall per digit, digit confusion matrix and worst-numbers gallery of ``dets`` on ``gt``.

    Numbers are read with ``cfg``'s decoder settings (``cfg.decoder()``); ``images_dir``
    holds ``gt``'s images (``file_name``). Returns the paths written (no gallery when every
    number is right).
    """
    out_dir = Path(out_dir)
    thresh, iou, line = cfg.decode_score_thresh, cfg.decode_iou_thresh, cfg.decode_line_thresh
    side = cfg.decoder()["line_start_side"]
    written = [out_dir / "pr_curves.png", out_dir / "confusion_matrix.png"]
    save_figure_atomic(pr_curves_figure(pr_curves(dets, gt, 0.5)), written[0])
    on_line = f" (on the line: >= {line:.2f})" if 0 < line < thresh else ""
    title = f"digit confusions: boxes read at score >= {thresh:.2f}{on_line}, matched to truth at IoU >= 0.5"
    save_figure_atomic(confusion_figure(confusion_matrix(dets, gt, thresh, 0.5, iou, line, side), CONFUSION_ROWS,
                                        CONFUSION_COLS, title), written[1])
    gallery = worst_numbers_gallery(dets, gt, images_dir, thresh, iou, line_thresh=line, line_start_side=side)
    if gallery is not None:
        save_png_atomic(gallery, out_dir / "worst_numbers.png")
        written.append(out_dir / "worst_numbers.png")
    return written


def write_run_pictures(run_dir, model, loader, device, gt: dict, images_dir, cfg, progress: bool = True) -> list[Path]:
    """End of training: curves, then the evaluation pictures of ``run_dir/best.pt`` on the split
    ``loader`` / ``gt`` / ``images_dir`` describe (the weights of ``model`` are replaced by best.pt's).

    The decoder settings stored in best.pt are used, so the pictures show what ``predict`` would read.
    """
    run_dir = Path(run_dir)
    written = write_training_plots(run_dir)
    best = load_checkpoint(run_dir / "best.pt")
    unwrap(model).load_state_dict(best["model"])
    cfg = dataclasses.replace(cfg).apply_decoder(best.get("decoder"))
    dets = predict_batches(model, loader, device, progress=progress, desc="pictures (best.pt)",
                           detect=reading_detector(model, cfg, device))["detections"]
    return written + write_evaluation_pictures(run_dir, dets, gt, images_dir, cfg)

