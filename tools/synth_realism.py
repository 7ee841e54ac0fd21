"""Synthetic vs real SVHN: box statistics table and a histogram figure.

    python tools/synth_realism.py --n 2000 --figure docs/synth_vs_real.png

Renders ``--n`` samples in memory (seed ``--seed``), or reads a synthetic COCO file with
``--coco DATA/train.json``, and compares them with the real SVHN test boxes
(``--real``, default ``../shared/data/svhn_test_boxes.json`` from the repo root).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from calibration import (  # tools/calibration.py, beside this script
    MEASURES,
    box_statistics,
    comparison_table,
    count_distribution,
    load_coco_boxes,
    load_svhn_boxes,
)

from digitdet.synth.fonts import fonts_report
from digitdet.synth.render import render_sample

ROOT = Path(__file__).resolve().parents[1]
# clip the long tails so the histograms stay readable
RANGES = {"height": (0, 100), "hw": (0.5, 5), "hw_not1": (0.5, 4), "gap": (-0.5, 0.6), "dy": (-0.6, 0.6),
          "slant": (-45, 45), "left": (0, 10), "top": (0, 5), "right_px": (0, 400), "bottom_px": (0, 200)}


def synthetic_images(n: int, seed: int):
    """``n`` rendered samples' boxes as calibration images (digit, xyxy)."""
    rng = np.random.default_rng(seed)
    return [[(a["digit"], a["bbox"]) for a in render_sample(rng)[1]] for _ in range(n)]


def save_figure(real: dict, synth: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(MEASURES)
    fig, axes = plt.subplots(3, 4, figsize=(13, 7.5), dpi=70)
    axes = axes.ravel()
    x = np.arange(1, 6)
    axes[0].bar(x - 0.2, count_distribution(real), 0.4, label="real SVHN test")
    axes[0].bar(x + 0.2, count_distribution(synth), 0.4, label="synthetic")
    axes[0].set_title("digits per image", fontsize=9)
    axes[0].legend(fontsize=7)
    for ax, name in zip(axes[1:], names):
        lo, hi = RANGES[name]
        bins = np.linspace(lo, hi, 41)
        for stats, label in ((real, "real"), (synth, "synthetic")):
            ax.hist(np.clip(stats[name], lo, hi), bins=bins, density=True, histtype="step", label=label)
        what, unit = MEASURES[name]
        ax.set_title(f"{what} [{unit}]" if unit else what, fontsize=8)
        ax.tick_params(labelsize=7)
    axes[-1].axis("off")
    fig.tight_layout()
    fig.savefig(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", default=str(ROOT.parent / "shared/data/svhn_test_boxes.json"))
    parser.add_argument("--coco", help="synthetic COCO file to read instead of rendering")
    parser.add_argument("--n", type=int, default=2000, help="samples to render (without --coco)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--figure", help="where to save the histogram figure (PNG)")
    args = parser.parse_args(argv)
    if not Path(args.real).is_file():
        print(f"real boxes not found: {args.real}", file=sys.stderr)
        return 2
    real = box_statistics(load_svhn_boxes(args.real))
    images = load_coco_boxes(args.coco) if args.coco else synthetic_images(args.n, args.seed)
    synth = box_statistics(images)
    print(fonts_report())
    print(f"real: {len(real['count'])} images; synthetic: {len(synth['count'])} images")
    print(comparison_table(real, synth))
    if args.figure:
        save_figure(real, synth, args.figure)
        print(f"figure: {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
