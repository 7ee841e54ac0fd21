"""digitdet pretrain: a backbone pre-trained as a digit classifier, for pretrained=FILE."""
from __future__ import annotations

import json

from digitdet.cli.common import resolve_device, setup
from digitdet.train.pretrain import pretrain_backbone


def add_parser(sub, name):
    p = sub.add_parser(name)
    p.add_argument("--data", required=True, help="dataset folder (train/ + train.json, valid/ + valid.json)")
    p.add_argument("--out", required=True, help="weights file to write, e.g. runs/backbone.pt")
    p.add_argument("--backbone", default="resnet18_fpn", help="the detector backbone it is for (resnet*/mobilenet)")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--stages", type=int, default=4,
                   help="ResNet residual stages to train (1-4). 4 (default): the whole classifier, whose deeper "
                        "stages the default detector drops but which teach its first two better; 2: only the "
                        "stages the default detector keeps, in about half the time (docs/results.md: a weaker start)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--max-images", type=int, default=0, help="use only the first N training images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default: cuda when available)")
    p.add_argument("--quiet", action="store_true")
    return p


def run(args) -> int:
    setup(args)
    result = pretrain_backbone(args.data, args.out, args.backbone, args.epochs, args.batch_size,
                               args.lr, args.workers, args.seed, args.max_images, progress=not args.quiet,
                               device=resolve_device(args.device), stages=args.stages)
    print(json.dumps({"weights": args.out, **{k: round(v, 4) for k, v in result.items()}}))
    return 0
