"""digitdet predict: pred.json (Task 1) and pred.csv (Task 2) for a folder of images."""
from __future__ import annotations

import json

import torch

from digitdet import distributed
from digitdet.cli.common import add_device, add_overrides, resolve_device, setup
from digitdet.data.images import renamed_images
from digitdet.read.decode import decode_all
from digitdet.io import writable_folder, written_together, write_image_ids_csv
from digitdet.read.detector import load_detector
from digitdet.read.pipeline import predict_folder
from digitdet.read.submission import write_results, write_submission
from digitdet.read.tta import requested_views, tta_detector

SHOW_NUMBERS = 20  # folders of at most this many photos get their numbers in the printed summary


def add_parser(sub, name):
    p = sub.add_parser(name, help="write OUT/pred.json and OUT/pred.csv for a folder of images (or one image)")
    p.add_argument("--weights", help="checkpoint; default: the small model bundled with digitdet")
    p.add_argument("--images", required=True,
                   help="folder of images named <image_id>.png (or one image file); other names are numbered, "
                        "see OUT/image_ids.csv")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--backend", choices=["auto", "torch", "onnxruntime"], default="auto",
                   help="auto (default): onnxruntime for a .onnx --weights (from `digitdet export`), else torch")
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation: scales x0.8/1/1.25 + a half-stride shift, fused with WBF (4x slower)")
    p.add_argument("--tta-scales", metavar="S[,S...]",
                   help="test-time augmentation at these factors of the input scale only, e.g. 0.875,1 (implies --tta)")
    add_device(p)
    add_overrides(p, "pred_score_thresh=0.05 decode_score_thresh=0.6")
    return p


def run(args) -> int:
    setup(args)
    if distributed.is_main():  # before any work: a bad --out is found now, not after the whole folder is read
        writable_folder(args.out)
    device = distributed.init(resolve_device(args.device))  # torchrun: each process predicts a share
    views = requested_views(args.tta, args.tta_scales)
    if args.backend == "onnxruntime" or (args.backend == "auto" and str(args.weights).endswith(".onnx")):
        if views:
            raise ValueError("--tta and --tta-scales need the torch backend (they rescale the model's input); "
                             "drop them or use a .pt")
        from digitdet.read.onnx import load_onnx_detector  # optional dependency: the onnx extra
        model, cfg, _ = load_onnx_detector(args.weights, args.threads, args.overrides)
        device = torch.device("cpu")
    else:
        model, cfg, _ = load_detector(args.weights, device, args.overrides)
    workers = args.workers if args.workers is not None else cfg.workers
    progress = not args.quiet and distributed.is_main()
    detect = tta_detector(model, device, views) if views else None
    out = predict_folder(model, cfg, args.images, device, args.batch_size, workers, progress, detect=detect)
    out = distributed.gather_predictions(out)  # every rank's share; unchanged in a single process
    if not distributed.is_main():
        return 0  # rank 0 writes the one pred.json and pred.csv
    numbers = decode_all(out["detections"], out["image_ids"], cfg.decoder(), out["sizes"])
    with written_together():  # pred.json, pred.csv, pred_config.json and results.jsonl replace the old set at once
        json_path, csv_path = write_submission(args.out, out["detections"], out["image_ids"], cfg, out["sizes"],
                                               numbers)
        results = write_results(args.out, out["detections"], out["files"], cfg, out["sizes"])
    summary = {"images": len(out["image_ids"]), "unreadable": len(out["errors"]),
               "images_per_s": round(out["images_per_s"], 2), "pred_json": str(json_path),
               "pred_csv": str(csv_path), "results": str(results)}
    names, ids_csv = renamed_images(list(out["files"].items())), csv_path.with_name("image_ids.csv")
    if names:  # photos not named <image_id>.png: say which row is which photo
        write_image_ids_csv(ids_csv, names)
        summary["image_ids_csv"] = str(ids_csv)
    else:
        ids_csv.unlink(missing_ok=True)  # an earlier run's, for other photos
    if len(out["image_ids"]) <= SHOW_NUMBERS:  # a few photos: the numbers read, by file name, right here
        summary["read"] = {out["files"][i].name: number for i, number in sorted(numbers.items())}
    print(json.dumps(summary))
    return 0
