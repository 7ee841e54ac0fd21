"""Make the model bundled with the package from a trained checkpoint.

    python bench/bundle_model.py runs/x/best.pt --data DATA     # tunes scale + decoder on DATA/valid

Keeps only what prediction needs (weights stored as float16 to halve the file, config with
pretrained=none, tuned decoder, the metrics it was selected on, and how it was made) and
writes digitdet/assets/digitdet_synth.pt atomically. Weights are cast back to float32 on load.

The inference scale is chosen on DATA/valid too: a model trained at min_size 64 reads small
digits better when the image is enlarged a little at inference (``--scales``: short sides to
try, long side capped at the same ratio as the training config's). The one with the best
valid accuracy after decoder tuning is stored in the bundle's config (ties: the smaller, faster).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from digitdet.data.coco import load_coco_digits, split_paths
from digitdet.decode import tune_decoder
from digitdet.engine import predict_batches
from digitdet.inference import BUNDLED_WEIGHTS, folder_loader, load_detector
from digitdet.io import load_checkpoint, save_checkpoint
from digitdet.metrics import gt_numbers


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("weights", type=Path)
    p.add_argument("--data", required=True, type=Path, help="dataset whose valid split tunes the decoder")
    p.add_argument("--made-by", default="", help="the command that trained it, stored in the file")
    p.add_argument("--out", type=Path, default=BUNDLED_WEIGHTS)
    p.add_argument("--scales", default="", help="inference min_size values to try, e.g. 64,80,96 "
                   "(default: only the training config's)")
    args = p.parse_args(argv)
    state = load_checkpoint(args.weights)
    train_min, train_max = state["config"]["min_size"], state["config"]["max_size"]
    scales = [int(s) for s in args.scales.split(",") if s.strip()] or [train_min]
    images_dir, ann = split_paths(args.data, "valid")
    gt, _ = load_coco_digits(ann, images_dir)
    best = None
    for size in scales:
        # 1. predict valid at this scale (long side capped at the training ratio); 2. tune the reader
        max_size = round(size * train_max / train_min)
        model, cfg, _ = load_detector(args.weights, torch.device("cpu"), [f"min_size={size}", f"max_size={max_size}"])
        _, loader = folder_loader(images_dir, cfg, 32, 1)
        dets = predict_batches(model, loader, torch.device("cpu"), progress=False)["detections"]
        tuned = tune_decoder(dets, gt_numbers(gt), iou_thresh=cfg.decode_iou_thresh)
        print(f"min_size {size} max_size {max_size}: valid accuracy {tuned['accuracy']:.4f} "
              f"at threshold {tuned['score_thresh']:.2f}", flush=True)
        if best is None or tuned["accuracy"] > best[2]["accuracy"]:
            best = (size, max_size, tuned)
    size, max_size, tuned = best
    config = {**state["config"], "pretrained": "none", "min_size": size, "max_size": max_size}
    save_checkpoint(args.out, {
        "model": {k: (v.half() if v.is_floating_point() else v) for k, v in state["model"].items()},
        "config": config, "metrics": state.get("metrics", {}),
        "decoder": {"score_thresh": tuned["score_thresh"], "iou_thresh": cfg.decode_iou_thresh,
                    "tuned_on": f"{args.data.name}/valid", "accuracy": tuned["accuracy"],
                    "trained_min_size": train_min, "trained_max_size": train_max},
        "made_by": args.made_by})
    print(f"wrote {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB); min_size {size}, decoder "
          f"threshold {tuned['score_thresh']:.2f}, valid accuracy {tuned['accuracy']:.4f}")


if __name__ == "__main__":
    main()
