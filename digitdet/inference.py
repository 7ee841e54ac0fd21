"""Prediction: a detector from a checkpoint, run over a folder, written as a submission.

``pred.json`` (Task 1) keeps every detection down to ``cfg.pred_score_thresh`` (mAP rewards
recall); ``pred.csv`` (Task 2) reads numbers with the decoder settings stored with the weights
(tuned by ``evaluate --tune-decoder``), one row per image of the folder, sorted by id.
The decoder settings may also carry the input scale to read at (``evaluate --tune-scale``).
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from digitdet.config import Config
from digitdet.data.coco import ImageFolderDataset
from digitdet.data.images import image_size
from digitdet.data.loaders import inference_loader
from digitdet.data.transforms import build_transforms
from digitdet.decode import NO_NUMBER, no_start_ids, tune_decoder
from digitdet.distributed import load_model_state, shard_batches
from digitdet.engine import predict_batches
from digitdet.evaluation import decode_all, gt_sizes, pred_results, tune_box_style
from digitdet.io import load_checkpoint, read_json, write_json, write_pred_csv, write_pred_json
from digitdet.metrics import gt_numbers
from digitdet.models.faster_rcnn import BUNDLED_WEIGHTS, build_model
from digitdet.zoom import reading_detector

log = logging.getLogger("digitdet")
# Input scales `evaluate --tune-scale` tries, as multiples of the training min_size: a model
# trained at 64 px misses digits that shrink below ~12 px there, and finds them when the image
# is enlarged a little (bundled model: valid accuracy 0.776 at x1, 0.840 at x1.5).
SCALE_FACTORS = (1.0, 1.25, 1.5, 1.75)


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA GPU is visible to torch here; use --device cpu")
    return torch.device(name)


def load_detector(weights: str | Path | None, device: torch.device, overrides: list[str] | None = None):
    """(model in eval mode on ``device``, Config, decoder dict) rebuilt from a checkpoint alone.

    ``weights`` None means the model bundled with the package. ``overrides`` (key=value) may
    change inference settings such as pred_score_thresh or decode_score_thresh.
    """
    path = _weights_path(weights)
    state = load_checkpoint(path)
    cfg = Config.from_dict(state["config"], source=str(path))
    cfg.pretrained = "none"  # the checkpoint has every weight; never download or read other files
    decoder = dict(state.get("decoder") or {})
    cfg.apply_decoder(decoder)
    if "min_size" in decoder:  # a tuned input scale (the config keeps the training one)
        cfg.min_size, cfg.max_size = int(decoder["min_size"]), int(decoder["max_size"])
    cfg = cfg.override(overrides or [])
    model = build_model(cfg)
    load_model_state(model, state["model"])  # also takes weights saved with DDP's "module." prefix
    return model.to(device).eval(), cfg, decoder


def _weights_path(weights) -> Path:
    path = Path(weights) if weights else BUNDLED_WEIGHTS
    if weights is None and not path.exists():
        raise FileNotFoundError(f"no --weights given and the bundled model {path} is missing from this install")
    return path


def tune_reading(weights, images_dir, gt: dict, device, factors=(1.0,), batch_size: int = 32,
                 workers: int | None = None, overrides: list[str] | None = None, progress: bool = False) -> dict:
    """Choose the input scale and the number-reading threshold with the best exact-match
    accuracy on an annotated split (tune on validation, never on what you report).

    For each factor f the model (``weights``: a checkpoint, None = the bundled one) reads
    ``images_dir`` with min_size = round(f x its training min_size, or the one in ``overrides``)
    and the long side capped at the same ratio; :func:`digitdet.decode.tune_decoder` picks the threshold. ``gt`` is the
    split's COCO dict; ``workers`` None = the config's. Returns the best scale (ties: the
    smaller, faster one) as ``{"min_size", "max_size", "score_thresh", "iou_thresh", "line_thresh",
    "box_pad", "box_same_height", "accuracy", "detections", "images_per_s", "cfg", "table":
    [(min_size, score_thresh, line_thresh, accuracy), ...], "box_table": [(box_pad, box_same_height,
    mAP), ...]}``; pred.json's box style is chosen last, for the best mAP at the chosen scale
    (:func:`digitdet.evaluation.tune_box_style`);
    ``cfg`` is the model's config with these settings, ``detections`` its raw detections there.
    """
    path = _weights_path(weights)
    # the training scale (or the one given in overrides) is the base, not a previously tuned one
    base = Config.from_dict(load_checkpoint(path)["config"], source=str(path)).override(overrides or [])
    truth, best, table = gt_numbers(gt), None, []
    for f in factors:
        size = round(f * base.min_size)
        max_size = round(size * base.max_size / base.min_size)
        model, cfg, _ = load_detector(weights, device, [*(overrides or []), f"min_size={size}", f"max_size={max_size}"])
        _, loader, _ = folder_loader(images_dir, cfg, batch_size, cfg.workers if workers is None else workers)
        out = predict_batches(model, loader, device, progress=progress, desc=f"read at min_size {size}",
                              detect=reading_detector(model, cfg, device))
        tuned = tune_decoder(out["detections"], truth, iou_thresh=cfg.decode_iou_thresh,
                             no_start=no_start_ids(gt_sizes(gt), cfg.decoder()["line_start_side"]))
        table.append((size, tuned["score_thresh"], tuned["line_thresh"], tuned["accuracy"]))
        log.info("min_size %d (max_size %d): accuracy %.4f at threshold %.2f, line threshold %.2f", size,
                 max_size, tuned["accuracy"], tuned["score_thresh"], tuned["line_thresh"])
        if best is None or tuned["accuracy"] > best["accuracy"]:
            cfg.apply_decoder(tuned)
            best = {"min_size": size, "max_size": max_size, **cfg.decoder(), "accuracy": tuned["accuracy"],
                    "detections": out["detections"], "images_per_s": out["images_per_s"], "cfg": cfg}
    style = tune_box_style(best["detections"], gt, best["cfg"])
    best["cfg"].pred_box_pad, best["cfg"].pred_box_same_height = style["box_pad"], style["box_same_height"]
    log.info("pred.json boxes: pad %.2f of the height a side, one height per photo %s (mAP by pad, "
             "own heights | one height: %s)", style["box_pad"], "on" if style["box_same_height"] else "off",
             ", ".join(f"{p:.2f}: {m:.4f}" for p, _, m in style["table"]))
    return {**best, "box_pad": style["box_pad"], "box_same_height": style["box_same_height"], "table": table,
            "box_table": style["table"]}


def folder_loader(images_dir, cfg: Config, batch_size: int, workers: int):
    """(ImageFolderDataset, loader batching images of similar shape, at most
    ``loaders.MAX_BATCH_PIXELS`` pixels a batch: a folder of phone photos reads one at a time,
    ``{image_id: (width, height)}`` of its readable images, upright, from the file headers).

    Under torchrun (an initialised process group) the loader holds only this rank's share of
    the batches (distributed.shard_batches) while the dataset lists every image; merge the
    ranks' predictions with distributed.gather_predictions. Single process: every batch.
    """
    ds = ImageFolderDataset(images_dir, build_transforms("none", train=False))
    sizes = {}
    for image_id, p in ds.items:
        try:
            sizes[image_id] = image_size(p)
        except ValueError:
            pass  # unreadable: reported by name when its batch runs
    shapes = [sizes.get(image_id, (1, 1)) for image_id, _ in ds.items]
    loader = inference_loader(ds, [w / h for w, h in shapes], batch_size, workers, [w * h for w, h in shapes])
    return ds, shard_batches(loader), sizes


def predict_folder(model, cfg: Config, images_dir, device, batch_size: int = 32, workers: int = 2,
                   progress: bool = True, detect=None) -> dict:
    """Detections for every image of a folder: ``{"detections", "errors", "image_ids", "images_per_s",
    "sizes"}`` (sizes as :func:`folder_loader` gives them, for :func:`write_submission`).

    ``detect`` replaces the plain model call (see :func:`digitdet.engine.predict_batches`); either
    is wrapped in zoom-in reading when ``cfg.zoom_read`` is on (:mod:`digitdet.zoom`).

    Under torchrun, detections and errors are this rank's share only (see :func:`folder_loader`).
    """
    ds, loader, sizes = folder_loader(images_dir, cfg, batch_size, workers)
    out = predict_batches(model, loader, device, progress=progress, detect=reading_detector(model, cfg, device, detect))
    for image_id, msg in sorted(out["errors"].items()):
        log.warning("skipped unreadable image (written as %s): %s", NO_NUMBER, msg)
    out["image_ids"] = [i for i, _ in ds.items]
    out["sizes"] = sizes
    return out


PRED_CONFIG = "pred_config.json"


def write_submission(out_dir, detections: dict, image_ids: list[int], cfg: Config,
                     sizes: dict | None = None) -> tuple[Path, Path]:
    """Write ``out_dir/pred.json``, ``out_dir/pred.csv`` and ``out_dir/pred_config.json`` (the
    resolved config, incl. the decoder settings pred.csv was read with); returns the first two.
    ``sizes`` (``{image_id: (width, height)}``) marks the photos too large for line reading's
    start rule (:func:`digitdet.evaluation.decode_all`)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    numbers = decode_all(detections, image_ids, cfg.decoder(), sizes)
    write_pred_json(out_dir / "pred.json", pred_results(detections, cfg))
    write_pred_csv(out_dir / "pred.csv", numbers)
    write_json(out_dir / PRED_CONFIG, cfg.to_dict())
    return out_dir / "pred.json", out_dir / "pred.csv"


def config_of_predictions(pred_json) -> Config | None:
    """The config ``write_submission`` wrote beside ``pred_json`` (its pred_config.json), or
    None when there is none (e.g. a pred.json from another tool)."""
    path = Path(pred_json).with_name(PRED_CONFIG)
    if not path.exists():
        return None
    return Config.from_dict(read_json(path, "prediction config"), source=str(path))


def decoder_of_predictions(pred_json) -> dict | None:
    """``Config.decoder()`` settings that ``write_submission`` read the numbers beside
    ``pred_json`` with (from its pred_config.json), or None when there is none."""
    cfg = config_of_predictions(pred_json)
    return None if cfg is None else cfg.decoder()
