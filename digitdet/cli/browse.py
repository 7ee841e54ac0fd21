"""``digitdet browse``: a grid of random images of a split with their true boxes.

    digitdet browse DATA --split train --out grid.png [--n 36] [--seed 0]

A split without annotations (test) is shown without boxes.
"""
from __future__ import annotations

from digitdet.cli.common import add_data, data_of
from digitdet.data.coco import load_coco_digits, split_paths
from digitdet.viz.draw import dataset_grid, save_png_atomic


def add_parser(sub, name):
    p = sub.add_parser(name, description=__doc__.splitlines()[0])
    add_data(p, "dataset folder (DATA/train/, DATA/train.json, ...)")
    p.add_argument("--split", default="train", help="train | valid | test (default: train)")
    p.add_argument("--png", "--out", dest="out", required=True, metavar="PNG", help="picture file to write")
    p.add_argument("--n", type=int, default=36, help="number of images (default: 36)")
    p.add_argument("--seed", type=int, default=0, help="which random images (default: 0)")
    p.add_argument("--cell", type=int, default=256, help="grid cell size in px (default: 256)")
    return p


def run(args):
    if args.n < 1:
        raise ValueError(f"--n must be >= 1, got {args.n}")
    images_dir, ann_file = split_paths(data_of(args), args.split)
    coco = None if ann_file is None else load_coco_digits(ann_file, images_dir, check_images=False)[0]
    grid = dataset_grid(coco, images_dir, n=args.n, seed=args.seed, cell_size=args.cell)
    save_png_atomic(grid, args.out)
    print(f"wrote {args.out}: random images of {images_dir} (seed {args.seed})"
          + ("" if coco else ", no annotations: images only"))
    return 0
