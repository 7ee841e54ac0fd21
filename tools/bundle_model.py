"""Make the model bundled with the package from a trained checkpoint.

    python tools/bundle_model.py runs/x/best.pt --data DATA --tune-scale   # tuned on DATA/valid
    python tools/bundle_model.py runs/x/best.pt --data DATA --factors 1.25  # read at 1.25 x min_size
    python tools/bundle_model.py ... --set box_refine=1   # a reading setting kept in the bundle's config

Keeps only what prediction needs (weights stored as float16 to halve the file, config with
pretrained=none, tuned decoder, the metrics it was selected on, and how it was made) and
writes digitdet/assets/digitdet_synth.pt atomically, and beside it the same model exported to
ONNX (digitdet_synth.onnx, read by the default onnxruntime backend; its metadata names the .pt's
sha256, which a test checks). Weights are cast back to float32 on load.
The reading threshold, and with ``--tune-scale`` the input scale, are chosen on DATA/valid as
`digitdet tune [--scale]` does; the config keeps the training scale.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from digitdet.config import Config
from digitdet.data.coco import load_coco_digits, split_paths
from digitdet.io import load_checkpoint, save_checkpoint
from digitdet.models.faster_rcnn import BUNDLED_WEIGHTS
from digitdet.read.detector import load_detector
from digitdet.read.export import export_onnx
from digitdet.tune import SCALE_FACTORS, tune_reading


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("weights", type=Path)
    p.add_argument("--data", required=True, type=Path, help="dataset whose valid split tunes the decoder")
    p.add_argument("--made-by", default="", help="the command that trained it, stored in the file")
    p.add_argument("--out", type=Path, default=BUNDLED_WEIGHTS)
    p.add_argument("--tune-scale", action="store_true",
                   help="also choose the input scale (%s x the training min_size)" % "/".join(f"{f:g}" for f in SCALE_FACTORS))
    p.add_argument("--factors", type=lambda v: tuple(float(f) for f in v.split(",")), default=None,
                   help="read only at these factors x the training min_size, e.g. 1.25 (overrides --tune-scale): "
                        "to keep a scale whose valid accuracy ties the best one and whose mAP is higher")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="config settings stored in the bundle (e.g. box_refine=1) and used while tuning")
    args = p.parse_args(argv)
    state = load_checkpoint(args.weights)
    config = Config.from_dict(state["config"], source=str(args.weights), saved=True).override(args.set).to_dict()
    images_dir, ann = split_paths(args.data, "valid")
    gt, _ = load_coco_digits(ann, images_dir)
    tuned = tune_reading(args.weights, images_dir, gt, torch.device("cpu"),
                         args.factors or (SCALE_FACTORS if args.tune_scale else (1.0,)), workers=1,
                         overrides=args.set)
    for size, thresh, line, acc in tuned["table"]:
        print(f"min_size {size}: valid accuracy {acc:.4f} at threshold {thresh:.2f}, line threshold {line:.2f}")
    save_checkpoint(args.out, {
        "model": {k: (v.half() if v.is_floating_point() else v) for k, v in state["model"].items()},
        "config": {**config, "pretrained": "none"}, "metrics": state.get("metrics", {}),
        "decoder": {**{k: tuned[k] for k in ("score_thresh", "iou_thresh", "line_thresh", "box_pad",
                                             "box_same_height", "min_size", "max_size", "accuracy")},
                    "tuned_on": f"{args.data.name}/valid"},
        "made_by": args.made_by})
    model, cfg, decoder = load_detector(args.out, torch.device("cpu"))
    graph = export_onnx(model, cfg, decoder, args.out.with_suffix(".onnx"), source=args.out)
    print(f"wrote {graph} ({graph.stat().st_size / 2**20:.1f} MiB)")
    print(f"wrote {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB); min_size {tuned['min_size']}, "
          f"decoder threshold {tuned['score_thresh']:.2f}, line threshold {tuned['line_thresh']:.2f}, "
          f"valid accuracy {tuned['accuracy']:.4f}")


if __name__ == "__main__":
    main()
