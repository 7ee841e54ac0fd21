"""The course's submission files: ``pred.json`` (Task 1), ``pred.csv`` (Task 2) and the config they were read with.

``pred.json`` keeps every detection down to ``cfg.pred_score_thresh`` (mAP rewards recall);
``pred.csv`` reads numbers with the decoder settings stored with the weights (``digitdet tune``),
one row per image of the folder, sorted by id.
"""
from __future__ import annotations

import json
from pathlib import Path

from digitdet.config import DECODER_FIELDS, Config
from digitdet.io import atomic_write_bytes, read_json, write_json, write_pred_csv, write_pred_json
from digitdet.read.decode import decode_all, digits_read, empty_detections, pred_results

PRED_CONFIG = "pred_config.json"


def write_submission(out_dir, detections: dict, image_ids: list[int], cfg: Config,
                     sizes: dict | None = None, numbers: dict | None = None) -> tuple[Path, Path]:
    """Write ``out_dir/pred.json``, ``out_dir/pred.csv`` and ``out_dir/pred_config.json`` (the
    resolved config, incl. the decoder settings pred.csv was read with); returns the first two.
    ``sizes`` (``{image_id: (width, height)}``) marks the photos too large for line reading's
    start rule (:func:`digitdet.read.decode.decode_all`); ``numbers`` (``{image_id: number}``), when
    given, are the numbers already read so."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if numbers is None:
        numbers = decode_all(detections, image_ids, cfg.decoder(), sizes)
    write_pred_json(out_dir / "pred.json", pred_results(detections, cfg))
    write_pred_csv(out_dir / "pred.csv", numbers)
    write_json(out_dir / PRED_CONFIG, cfg.to_dict())
    return out_dir / "pred.json", out_dir / "pred.csv"


RESULTS = "results.jsonl"


def write_results(out_dir, detections: dict, files: dict, cfg: Config, sizes: dict | None = None) -> Path:
    """``out_dir/results.jsonl``: one line a photo, sorted by id: ``{"image_id", "file", "number"
    (null when none), "digits": [{"digit" 0-9, "box" [x, y, w, h] px, "score"}] left to right}``,
    the digits pred.csv's number was read from. ``files``: ``{image_id: path}``."""
    decoder, sizes = cfg.decoder(), sizes or {}
    lines = []
    for image_id in sorted(files):
        digits = digits_read(detections.get(image_id, empty_detections()), decoder, sizes.get(image_id))
        lines.append(json.dumps({"image_id": image_id, "file": Path(files[image_id]).name,
                                 "number": "".join(str(d) for d, _, _ in digits) or None,
                                 "digits": [{"digit": d, "box": b, "score": s} for d, b, s in digits]}))
    path = Path(out_dir) / RESULTS
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
    return path


def config_of_predictions(pred_json) -> Config | None:
    """The config ``write_submission`` wrote beside ``pred_json`` (its pred_config.json), or
    None when there is none (e.g. a pred.json from another tool)."""
    path = Path(pred_json).with_name(PRED_CONFIG)
    if not path.exists():
        return None
    saved = read_json(path, "prediction config")
    try:
        return Config.from_dict(saved, source=str(path), saved=True)
    except ValueError:  # written by another version: its reading settings are what is needed here
        keys = set(DECODER_FIELDS.values()) | {"min_size", "decode_line_start_below"}
        return Config.from_dict({k: v for k, v in saved.items() if k in keys}, source=str(path), saved=True)


def decoder_of_predictions(pred_json) -> dict | None:
    """``Config.decoder()`` settings that ``write_submission`` read the numbers beside
    ``pred_json`` with (from its pred_config.json), or None when there is none."""
    cfg = config_of_predictions(pred_json)
    return None if cfg is None else cfg.decoder()
