"""digitdet predict: pred.json (Task 1) and pred.csv (Task 2) for a folder of images."""
from __future__ import annotations

import json

from digitdet.cli.common import add_device, setup
from digitdet.inference import load_detector, predict_folder, resolve_device, write_submission


def add_parser(sub, name):
    p = sub.add_parser(name, help="write OUT/pred.json and OUT/pred.csv for a folder of images")
    p.add_argument("--weights", help="checkpoint; default: the small model bundled with digitdet")
    p.add_argument("--images", required=True, help="folder of images named <image_id>.png")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--batch-size", type=int, default=32)
    add_device(p)
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="inference settings, e.g. pred_score_thresh=0.05 decode_score_thresh=0.6")
    return p


def run(args) -> int:
    setup(args)
    device = resolve_device(args.device)
    model, cfg, _ = load_detector(args.weights, device, args.overrides)
    workers = args.workers if args.workers is not None else cfg.workers
    out = predict_folder(model, cfg, args.images, device, args.batch_size, workers, progress=not args.quiet)
    json_path, csv_path = write_submission(args.out, out["detections"], out["image_ids"], cfg)
    print(json.dumps({"images": len(out["image_ids"]), "unreadable": len(out["errors"]),
                      "images_per_s": round(out["images_per_s"], 2), "pred_json": str(json_path),
                      "pred_csv": str(csv_path)}))
    return 0
