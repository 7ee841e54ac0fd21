"""Whole-number accuracy of a model on synthetic numbers by typeface: marker writers, outline fonts, unseen fonts.

    python bench/style_accuracy.py                      # the bundled model, 300 images per pool
    python bench/style_accuracy.py --weights runs/x/best.pt --n 500 --seed 77

Renders fresh samples (never in a training set: their own seed) whose typeface is drawn only
from one pool, everything else as the renderer samples it, and reads them at the model's tuned
threshold. Pools: the marker writers (synth_strokes), the outline fonts the renderer uses, and
**unseen fonts**: every installed face the renderer never draws with (other weights and
italics of its families, old-style figures, decorative and stencil-like faces), so typefaces
no training image had. Tells whether a model that misreads hand-painted real numbers has
learned the hand-drawn letterforms at all, and how far it reads beyond the typefaces it saw.
"""
from __future__ import annotations

import argparse
import os
from collections import defaultdict
from contextlib import contextmanager

import torch
from torchvision.transforms.functional import to_tensor

import digitdet.synth.style as synth_style
from digitdet.read.decode import decode_number, starts_lines
from digitdet.read.detector import load_detector
from digitdet.read.zoom import reading_detector
from digitdet.synth.fonts import FontInfo, available_fonts, draws_digits, system_font_files
from digitdet.synth.render import render_sample, sample_rng

# Installed faces whose ten digit code points draw ten distinct symbols, not digits.
NOT_DIGIT_FACES = {"D050000L.otf", "D050000L.ttf"}


def unseen_fonts(used: list[FontInfo]) -> list[FontInfo]:
    """Installed .ttf/.otf faces that draw ten digits and that the renderer never uses."""
    seen, out = {os.path.basename(f.path) for f in used} | NOT_DIGIT_FACES, []
    for path in system_font_files():
        name = os.path.basename(path)
        if name not in seen:
            seen.add(name)
            if draws_digits(path):
                out.append(FontInfo(path, "unseen", "apt"))
    return out


@contextmanager
def only_fonts(pool, picked: list):
    """Make the renderer pick its typeface from ``pool`` only (restored on exit); log each pick."""
    original = synth_style._pick_font

    def pick(rng):
        picked.append(pool[int(rng.integers(len(pool)))])
        return picked[-1]

    synth_style._pick_font = pick
    try:
        yield
    finally:
        synth_style._pick_font = original


def accuracy(model, cfg, pool, n: int, seed: int) -> tuple[float, dict]:
    """(accuracy over n fresh numbers in ``pool``'s faces, {font file: [correct, images]})."""
    correct, per_font = 0, defaultdict(lambda: [0, 0])
    detect = reading_detector(model, cfg, torch.device("cpu"))
    for i in range(n):
        picked = []
        with only_fonts(pool, picked):
            image, anns = render_sample(sample_rng(seed, "test", i))
        boxes, labels, scores = detect([to_tensor(image)])[0]
        read = decode_number(boxes, labels, scores, score_thresh=cfg.decode_score_thresh,
                             iou_thresh=cfg.decode_iou_thresh, line_thresh=cfg.decode_line_thresh,
                             line_start=starts_lines(image.size, cfg.decoder()["line_start_side"]))
        hit = read == "".join(str(a["digit"]) for a in anns)
        correct += hit
        tally = per_font[os.path.basename(picked[0].path)]
        tally[0] += hit
        tally[1] += 1
    return correct / n, dict(per_font)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default=None, help="checkpoint; default: the bundled model")
    p.add_argument("--n", type=int, default=300, help="images per pool")
    p.add_argument("--seed", type=int, default=77)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--worst", type=int, default=8, help="list the unseen faces read worst (0: none)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, cfg, _ = load_detector(args.weights, torch.device("cpu"))
    fonts = available_fonts()
    pools = {"marker writers": [f for f in fonts if f.source == "strokes"],
             "outline fonts": [f for f in fonts if f.source != "strokes"],
             "unseen fonts": unseen_fonts(fonts)}
    print(f"{'typefaces':<16} {'count':>5} {'accuracy':>9}   (n={args.n} each, threshold {cfg.decode_score_thresh})")
    per_font = {}
    with torch.inference_mode():
        for name, pool in pools.items():
            if not pool:
                print(f"{name:<16} {0:>5}       n/a   (none installed)")
                continue
            acc, per_font[name] = accuracy(model, cfg, pool, args.n, args.seed)
            print(f"{name:<16} {len(pool):>5} {acc:>9.3f}")
    worst = sorted(per_font.get("unseen fonts", {}).items(), key=lambda kv: kv[1][0] / kv[1][1])[:args.worst]
    if worst:
        print("unseen faces read worst: " + ", ".join(f"{k} {c}/{t}" for k, (c, t) in worst))


if __name__ == "__main__":
    main()
