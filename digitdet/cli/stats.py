"""``digitdet stats``: what a dataset split looks like, and anchors that fit it.

    digitdet stats DATA [--split train] [--out stats.png] [--min-size 96 --max-size 320]

DATA is a dataset folder (DATA/train.json, DATA/train/) or a COCO json file.
"""
from __future__ import annotations

from pathlib import Path

from digitdet.cli.common import add_data, data_of
from digitdet.config import Config, load_config
from digitdet.data.coco import load_coco_digits, split_paths
from digitdet.viz.stats import anchor_fit, box_stats, plot_stats, suggest_anchors


def add_parser(sub, name):
    p = sub.add_parser(name, description=__doc__.splitlines()[0])
    add_data(p, "dataset folder, or a COCO json file")
    p.add_argument("--split", default="train", help="split of a dataset folder (default: train)")
    p.add_argument("--png", "--out", dest="out", metavar="PNG", help="also draw the statistics to this PNG file")
    p.add_argument("--config", metavar="NAME", help="recipe whose input size and anchors to compare "
                   "(default: the built-in defaults)")
    p.add_argument("--min-size", type=int, help="model input short side (default: the config's)")
    p.add_argument("--max-size", type=int, help="model input long-side cap (default: the config's)")
    p.add_argument("--sizes-per-level", type=int, default=2, help="anchor sizes per FPN level")
    p.add_argument("--ratios", type=int, default=3, help="number of aspect ratios")
    return p


def load_annotations(data: str, split: str) -> dict:
    """COCO dict of a dataset split (folder layout) or of a json file (images not needed)."""
    path = Path(data)
    if path.is_file():
        coco, _ = load_coco_digits(path, path.parent, check_images=False)
        return coco
    images_dir, ann_file = split_paths(path, split)
    if ann_file is None:
        raise FileNotFoundError(f"{path}: no annotations for split {split!r} ({split}.json)")
    coco, _ = load_coco_digits(ann_file, images_dir, check_images=False)
    return coco


def _fmt(pct: dict | None) -> str:
    return "-" if pct is None else "  ".join(f"{k} {v:.3g}" for k, v in pct.items())


def run(args):
    cfg = load_config(args.config) if args.config else Config()
    min_size, max_size = args.min_size or cfg.min_size, args.max_size or cfg.max_size
    coco = load_annotations(data_of(args), args.split)
    st = box_stats(coco)
    print(f"{st['n_images']} images, {st['n_boxes']} digit boxes")
    print("digits per image:", "  ".join(f"{k}: {v}" for k, v in st["digits_per_image"].items()))
    print("digit classes:   ", "  ".join(f"{k}: {v}" for k, v in st["digit_counts"].items()))
    for key in ("box_height", "box_width", "hw_ratio", "image_width", "image_height"):
        print(f"{key + ':':17}{_fmt(st[key])}")
    print("image sizes:     ", "  ".join(f"{k}: {v}" for k, v in st["image_sizes"].items()))
    sug = suggest_anchors(coco, min_size, max_size, n_levels=len(cfg.anchor_sizes),
                          k=args.sizes_per_level, n_ratios=args.ratios)
    print(f"\nat model input (min_size={min_size}, max_size={max_size}):")
    print(f"  box height:    {_fmt(sug['scaled_height'])}")
    print(f"  box h/w ratio: {_fmt(sug['scaled_hw_ratio'])}")
    now = anchor_fit(coco, cfg.anchor_sizes, cfg.aspect_ratios, min_size, max_size)
    for name, sizes, ratios, fit in (("config", cfg.anchor_sizes, cfg.aspect_ratios, now),
                                     ("suggested", sug["anchor_sizes"], sug["aspect_ratios"], sug["fit"])):
        print(f"  {name + ':':11}anchor_sizes={sizes} aspect_ratios={ratios} (h/w)  "
              f"boxes with an anchor at IoU>=0.5: {fit['iou>=0.5']:.0%}, >=0.7: {fit['iou>=0.7']:.0%}")
    print(f"as config overrides: anchor_sizes='{sug['anchor_sizes']}' "
          f"aspect_ratios='{sug['aspect_ratios']}'")
    if args.out:
        plot_stats(st, args.out)
        print(f"wrote {args.out}")
    return 0
