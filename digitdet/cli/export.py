"""digitdet export: a checkpoint -> one self-contained ONNX file (config and decoder inside)."""
from __future__ import annotations

import json

import torch

from digitdet.cli.common import add_overrides, setup
from digitdet.read.detector import load_detector, weights_path
from digitdet.read.export import DEFAULT_OPSET, export_onnx


def add_parser(sub, name):
    p = sub.add_parser(name)
    p.add_argument("--weights", help="checkpoint; default: the small model bundled with digitdet")
    p.add_argument("--format", choices=["onnx"], default="onnx", help="export format (only onnx for now)")
    p.add_argument("--out", required=True, help="file to write, e.g. model.onnx")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset, >= 11 (default {DEFAULT_OPSET})")
    add_overrides(p, "box_score_thresh=0.05 rpn_post_nms_top_n_test=30")
    return p


def run(args) -> int:
    setup(args)
    if args.opset < 11:
        raise ValueError(f"--opset {args.opset}: torchvision's detector needs opset 11 or newer")
    model, cfg, decoder = load_detector(args.weights, torch.device("cpu"), args.overrides)
    path = export_onnx(model, cfg, decoder, args.out, opset=args.opset, source=weights_path(args.weights))
    print(json.dumps({"onnx": str(path), "opset": args.opset, "backbone": cfg.backbone,
                      "min_size": cfg.min_size, "max_size": cfg.max_size}))
    return 0
