"""digitdet export: a checkpoint -> one self-contained ONNX file (config and decoder inside)."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from digitdet.cli.common import add_overrides, setup
from digitdet.read.detector import load_detector, weights_path
from digitdet.data.images import list_images
from digitdet.read.export import CALIBRATION_PHOTOS, DEFAULT_OPSET, export_onnx, quantize_int8


def add_parser(sub, name):
    p = sub.add_parser(name)
    p.add_argument("--weights", help="checkpoint; default: the small model bundled with digitdet")
    p.add_argument("--format", choices=["onnx"], default="onnx", help="export format (only onnx for now)")
    p.add_argument("--out", required=True, help="file to write, e.g. model.onnx")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset, >= 11 (default {DEFAULT_OPSET})")
    p.add_argument("--int8", action="store_true",
                   help="convolutions in int8 (ONNX Runtime static quantization): faster on the CPU; "
                        "needs --calibrate")
    p.add_argument("--calibrate", metavar="DIR",
                   help=f"photos that set the int8 activation ranges (the first {CALIBRATION_PHOTOS}), "
                        "e.g. DATA/valid")
    add_overrides(p, "box_score_thresh=0.05 rpn_post_nms_top_n_test=30")
    return p


def run(args) -> int:
    setup(args)
    if args.opset < 11:
        raise ValueError(f"--opset {args.opset}: torchvision's detector needs opset 11 or newer")
    if args.int8 != bool(args.calibrate):
        raise ValueError("--int8 and --calibrate DIR go together (the photos set the int8 ranges)")
    photos = [p for _, p in list_images(args.calibrate)] if args.calibrate else []
    model, cfg, decoder = load_detector(args.weights, torch.device("cpu"), args.overrides)
    out = Path(args.out)
    fp32 = out.with_name(f".{out.name}.fp32.tmp") if args.int8 else out  # --out is never left in fp32 for --int8
    try:
        path = export_onnx(model, cfg, decoder, fp32, opset=args.opset, source=weights_path(args.weights))
        if args.int8:
            path = quantize_int8(fp32, out, photos, cfg)
    finally:
        if args.int8:
            fp32.unlink(missing_ok=True)
    print(json.dumps({"onnx": str(path), "opset": args.opset, "int8": args.int8, "backbone": cfg.backbone,
                      "min_size": cfg.min_size, "max_size": cfg.max_size}))
    return 0
