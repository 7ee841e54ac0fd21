"""Real SVHN photos: how any weights read them, and a picture of every failure.

    python bench/real.py                                   # the bundled model on ../shared/data/svhn_real_dev
    python bench/real.py --weights runs/x/best.pt --out runs/real_x [key=value ...]
    python bench/real.py --exclude-ids train_ids.json      # report only on photos a model was not trained on
    python bench/real.py --backend torch                   # the bundled model read by torch (default: onnxruntime)

Runs ``digitdet predict`` once as a user would (a fresh process: start-up, model load and
reading all timed together), then scores its pred.json / pred.csv against the split's SVHN
boxes. Prints accuracy, mAP, AP50, AP75, the error breakdown and whole-process images/s, and
writes ``OUT/failures.png`` (every photo read wrong: what was read, with its boxes, beside the
truth) and ``OUT/summary.json``. ``key=value`` settings go to predict (e.g.
``pred_box_pad=0.06 pred_box_same_height=true``). Without the data folder (a user's clone has
no ../shared) it says so and exits 0.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from digitdet.data.coco import load_coco_digits, split_paths
from digitdet.data.images import load_rgb
from digitdet.io import read_json, read_pred_csv, read_pred_json, write_json
from digitdet.read.decode import empty_detections, group_by_image
from digitdet.read.submission import config_of_predictions
from digitdet.score.metrics import classify_error, coco_map, gt_numbers, number_errors, sequence_accuracy
from digitdet.viz.draw import image_grid, save_png_atomic
from digitdet.viz.report import prediction_panel

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "svhn_real_dev"


def predict(images_dir: Path, out: Path, weights: str | None, overrides: list[str],
            backend: str = "auto") -> tuple[dict, float]:
    """One ``digitdet predict`` process over ``images_dir``; (its printed summary, wall seconds)."""
    cmd = [sys.executable, "-m", "digitdet", "predict", "--images", str(images_dir), "--out", str(out), "--quiet",
           "--backend", backend, *(["--weights", weights] if weights else []), *overrides]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"digitdet predict failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1]), seconds


def keep_images(gt: dict, exclude: set[int]) -> dict:
    """``gt`` without the images of ``exclude`` (and their boxes)."""
    images = [im for im in gt["images"] if int(im["id"]) not in exclude]
    keep = {int(im["id"]) for im in images}
    return {**gt, "images": images, "annotations": [a for a in gt["annotations"] if int(a["image_id"]) in keep]}


def failures_picture(failures: list[int], numbers: dict, truth: dict, dets: dict, gt: dict, images_dir: Path, cfg):
    """Every failure as a panel: the photo with the boxes read (left) and the truth's (right)."""
    files = {int(im["id"]): im["file_name"] for im in gt["images"]}
    panels = []
    for i in failures:
        anns = [a for a in gt["annotations"] if int(a["image_id"]) == i]
        kind = classify_error(numbers.get(i, "-1"), truth[i]).replace("_", " ")
        panels.append(prediction_panel(
            load_rgb(images_dir / files[i]), dets.get(i, empty_detections()), cfg.decode_score_thresh,
            cfg.decode_iou_thresh, [a["bbox"] for a in anns], [a["category_id"] for a in anns],
            caption=f"{files[i]} ({kind}): ", line_thresh=cfg.decode_line_thresh,
            line_start_side=cfg.decoder()["line_start_side"]))
    return image_grid(panels, cols=max(1, round((len(panels) / 2) ** 0.5)), cell_size=(512, 256))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", help="checkpoint or .onnx (default: the bundled model)")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="COCO dataset folder of real photos")
    p.add_argument("--split", default="valid")
    p.add_argument("--out", default="runs/real", help="folder for pred.*, failures.png and summary.json")
    p.add_argument("--exclude-ids", help="JSON list of image ids to leave out of the scores (e.g. trained on)")
    p.add_argument("--backend", default="auto", help="predict's --backend: auto, torch or onnxruntime")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="settings for predict")
    args = p.parse_args(argv)
    images_dir, ann = split_paths(args.data, args.split) if Path(args.data).is_dir() else (None, None)
    if ann is None or not images_dir.is_dir():
        print(f"bench/real.py: no real photos at {args.data} (split {args.split}); nothing to measure")
        return 0
    out = Path(args.out)
    summary, seconds = predict(images_dir, out / "pred", args.weights, args.overrides, args.backend)
    gt, _ = load_coco_digits(ann, images_dir)
    if args.exclude_ids:
        gt = keep_images(gt, {int(i) for i in read_json(args.exclude_ids, "excluded image ids")})
    truth, numbers = gt_numbers(gt), read_pred_csv(out / "pred" / "pred.csv")
    records = [r for r in read_pred_json(out / "pred" / "pred.json") if int(r["image_id"]) in truth]
    scores = coco_map(gt, records)
    result = {"weights": args.weights or "bundled", "backend": summary.get("backend", args.backend), "photos": len(truth),
              "accuracy": sequence_accuracy(numbers, truth),
              "map": scores["map"], "ap50": scores["ap50"], "ap75": scores["ap75"],
              "errors": number_errors(numbers, truth), "whole_process_s": round(seconds, 2),
              "whole_process_images_per_s": round(summary["images"] / seconds, 1),
              "reading_images_per_s": summary["images_per_s"], "overrides": args.overrides}
    failures = sorted(i for i in truth if numbers.get(i) != truth[i])
    if failures:
        cfg = config_of_predictions(out / "pred" / "pred.json")
        save_png_atomic(failures_picture(failures, numbers, truth, group_by_image(records), gt, images_dir, cfg),
                        out / "failures.png")
        result["failures_png"] = str(out / "failures.png")
    write_json(out / "summary.json", result)
    errors = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in result["errors"].items() if k != "correct" and v)
    print(f"{result['photos']} photos of {args.data}, {result['weights']}: accuracy {result['accuracy']:.4f} "
          f"({result['errors']['correct']} read right), mAP {result['map']:.4f}, AP50 {result['ap50']:.4f}, "
          f"AP75 {result['ap75']:.4f}")
    print(f"wrong: {errors or 'none'}")
    print(f"whole process: {seconds:.1f} s for {summary['images']} photos = {result['whole_process_images_per_s']} "
          f"images/s (start-up included; reading alone {summary['images_per_s']} images/s)")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
