"""digitdet predict: pred.json (Task 1) and pred.csv (Task 2) for a folder of images."""
from __future__ import annotations

import json
import os

from digitdet.cli.common import add_device, add_overrides, setup
from digitdet.data.images import renamed_images
from digitdet.io import writable_folder, write_image_ids_csv, written_together
from digitdet.read.decode import decode_all
from digitdet.read.onnx import BACKENDS, choose_backend, load_onnx_detector
from digitdet.read.stream import read_folder
from digitdet.read.submission import write_results, write_submission

SHOW_NUMBERS = 20  # folders of at most this many photos get their numbers in the printed summary


def add_parser(sub, name):
    p = sub.add_parser(name)
    p.add_argument("--weights", help="checkpoint (.pt) or exported model (.onnx); default: the small model "
                                     "bundled with digitdet")
    p.add_argument("--images", required=True,
                   help="folder of images named <image_id>.png (or one image file); other names are numbered, "
                        "see OUT/image_ids.csv")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="auto (default): onnxruntime (no torch) for the bundled model on the CPU and for a .onnx "
                        "(from `digitdet export`); torch for a .pt, a GPU, --tta and torchrun")
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation: scales x0.8/1/1.25 + a half-stride shift, fused with WBF (4x slower)")
    p.add_argument("--tta-scales", metavar="S[,S...]",
                   help="test-time augmentation at these factors of the input scale only, e.g. 0.875,1 (implies --tta)")
    add_device(p)
    add_overrides(p, "pred_score_thresh=0.05 decode_score_thresh=0.6")
    return p


def run(args) -> int:
    torchrun = int(os.environ.get("WORLD_SIZE", "1")) > 1
    tta = bool(args.tta or args.tta_scales)
    backend = args.backend
    if backend == "auto" and not str(args.weights or "").endswith(".onnx") and (tta or torchrun):
        backend = "torch"  # test-time views rescale a torch model's input; torchrun shares work between torch processes
    backend = choose_backend(backend, args.weights, args.device)
    setup(args, torch_threads=backend == "torch")
    if backend == "torch":
        out, cfg = _predict_torch(args)
        if out is None:
            return 0  # not rank 0 under torchrun: rank 0 writes the one pred.json and pred.csv
    else:
        if tta:
            raise ValueError("--tta and --tta-scales need the torch backend (they rescale the model's input); "
                             "drop them, or give --backend torch")
        if torchrun:
            raise ValueError("the onnxruntime backend reads in one process; under torchrun give --backend torch "
                             "and a .pt (each process then reads a share)")
        if args.device not in ("auto", "cpu"):
            raise ValueError(f"--device {args.device}: the onnxruntime backend runs on the CPU; "
                             f"give --backend torch and a .pt")
        writable_folder(args.out)  # before any work: a bad --out is found now, not after the whole folder is read
        model, cfg, _ = load_onnx_detector(args.weights, args.threads, args.overrides)
        out = read_folder(model, cfg, args.images, progress=not args.quiet)
    return _write(args, out, cfg, backend)


def _predict_torch(args):
    """(predict_folder's output, Config) with torch, each torchrun process reading a share;
    (None, cfg) on every process but rank 0 once the shares are gathered."""
    from digitdet import distributed
    from digitdet.cli.common import resolve_device
    from digitdet.read.detector import load_detector
    from digitdet.read.pipeline import predict_folder
    from digitdet.read.tta import requested_views, tta_detector

    if distributed.is_main():  # before any work: a bad --out is found now, not after the whole folder is read
        writable_folder(args.out)
    device = distributed.init(resolve_device(args.device))  # torchrun: each process predicts a share
    views = requested_views(args.tta, args.tta_scales)
    model, cfg, _ = load_detector(args.weights, device, args.overrides)
    workers = args.workers if args.workers is not None else cfg.workers
    progress = not args.quiet and distributed.is_main()
    detect = tta_detector(model, device, views) if views else None
    out = predict_folder(model, cfg, args.images, device, args.batch_size, workers, progress, detect=detect)
    out = distributed.gather_predictions(out)  # every rank's share; unchanged in a single process
    return (out if distributed.is_main() else None), cfg


def _write(args, out: dict, cfg, backend: str) -> int:
    """pred.json, pred.csv, pred_config.json and results.jsonl (one set), image_ids.csv; the summary printed."""
    numbers = decode_all(out["detections"], out["image_ids"], cfg.decoder(), out["sizes"])
    with written_together():  # pred.json, pred.csv, pred_config.json and results.jsonl replace the old set at once
        json_path, csv_path = write_submission(args.out, out["detections"], out["image_ids"], cfg, out["sizes"],
                                               numbers)
        results = write_results(args.out, out["detections"], out["files"], cfg, out["sizes"])
    summary = {"images": len(out["image_ids"]), "unreadable": len(out["errors"]), "backend": backend,
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
