"""``digitdet synth``: render the embedded synthetic house-number dataset (COCO format)."""
from __future__ import annotations

import json


def add_parser(sub, name):
    p = sub.add_parser(name, description="Render realistic synthetic house numbers: DATA/{train,valid,test}/<id>.png, "
                                   "DATA/train.json, DATA/valid.json, DATA/test_gt.json (COCO).")
    p.add_argument("--out", required=True, metavar="DATA", help="output folder")
    p.add_argument("--train", type=int, default=3000, metavar="N",
                   help="training images (default 3000; 0 leaves the split in DATA as it is)")
    p.add_argument("--valid", type=int, default=300, metavar="N", help="validation images (default 300; 0: as --train)")
    p.add_argument("--test", type=int, default=300, metavar="N", help="test images (default 300; 0: as --train)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="same seed, same files (default 0)")
    p.add_argument("--workers", type=int, default=1, metavar="W", help="processes (default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def run(args):
    from digitdet.synth.fonts import fonts_report
    from digitdet.synth.render import render_dataset

    if not args.quiet:
        print(fonts_report())
    summary = render_dataset(args.out, args.train, args.valid, args.test, seed=args.seed,
                             workers=args.workers, progress=not args.quiet)
    print(json.dumps(summary))
    return 0
