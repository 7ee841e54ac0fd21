"""Whole-number accuracy of a model on synthetic numbers drawn by marker writers vs outline fonts.

    python bench/style_accuracy.py                      # the bundled model, 300 images per style
    python bench/style_accuracy.py --weights runs/x/best.pt --n 500 --seed 77

Renders fresh samples (never in a training set: their own seed) whose typeface is drawn only
from the marker writers (synth_strokes) or only from the outline fonts, everything else as the
renderer samples it, and reads them at the model's tuned threshold. Tells whether a model that
misreads hand-painted real numbers has learned the hand-drawn letterforms at all.
"""
from __future__ import annotations

import argparse
from contextlib import contextmanager

import torch
from torchvision.transforms.functional import to_tensor

import digitdet.data.synth_style as synth_style
from digitdet.data.synth_fonts import available_fonts
from digitdet.data.synthetic import render_sample, sample_rng
from digitdet.decode import decode_number
from digitdet.engine import model_detections
from digitdet.inference import load_detector


@contextmanager
def only_fonts(pool):
    """Make the renderer pick its typeface from ``pool`` only (restored on exit)."""
    original = synth_style._pick_font
    synth_style._pick_font = lambda rng: pool[int(rng.integers(len(pool)))]
    try:
        yield
    finally:
        synth_style._pick_font = original


def accuracy(model, cfg, n: int, seed: int) -> float:
    correct = 0
    for i in range(n):
        image, anns = render_sample(sample_rng(seed, "test", i))
        boxes, labels, scores = model_detections(model, [to_tensor(image)], torch.device("cpu"))[0]
        read = decode_number(boxes, labels, scores, score_thresh=cfg.decode_score_thresh,
                             iou_thresh=cfg.decode_iou_thresh)
        correct += read == "".join(str(a["digit"]) for a in anns)
    return correct / n


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default=None, help="checkpoint; default: the bundled model")
    p.add_argument("--n", type=int, default=300, help="images per style")
    p.add_argument("--seed", type=int, default=77)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, cfg, _ = load_detector(args.weights, torch.device("cpu"))
    fonts = available_fonts()
    pools = {"marker writers": [f for f in fonts if f.source == "strokes"],
             "outline fonts": [f for f in fonts if f.source != "strokes"]}
    print(f"{'typefaces':<16} {'count':>5} {'accuracy':>9}   (n={args.n} each, threshold {cfg.decode_score_thresh})")
    with torch.inference_mode():
        for name, pool in pools.items():
            with only_fonts(pool):
                print(f"{name:<16} {len(pool):>5} {accuracy(model, cfg, args.n, args.seed):>9.3f}")


if __name__ == "__main__":
    main()
