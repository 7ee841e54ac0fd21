"""Whole-number accuracy on numbers drawn by other code than the renderer: OpenCV's Hershey fonts.

    python bench/other_means.py                          # the bundled model, 240 numbers
    python bench/other_means.py --weights runs/x/best.pt --n 480 --seed 4 --out /tmp/hershey

``cv2.putText`` draws each number in one of OpenCV's eight Hershey stroke fonts (a fifth of them
italic), at scale 0.8-2.0 and thickness 1-4, in a random colour on a random plain background
(half of them with sensor noise, half blurred), the canvas cropped 4-30 px around the text:
the kind of test image a user writes in ten lines. No training image was drawn this way. Colours
are drawn uniformly from RGB, so many pairs differ in colour but hardly in luminance (purple
on green); accuracy is printed by font and by the luminance contrast of ink and background
(Rec. 709, 0..1). ``--out`` also writes the images and ``readings.json`` (per image: truth, reading,
font, contrast; not COCO, so not named test_gt.json, which means a split's COCO truth here).
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import torch
from torchvision.transforms.functional import to_tensor

from digitdet.data.synth_style import luminance
from digitdet.decode import decode_number
from digitdet.inference import load_detector
from digitdet.zoom import reading_detector

FONTS = {"simplex": cv2.FONT_HERSHEY_SIMPLEX, "plain": cv2.FONT_HERSHEY_PLAIN, "duplex": cv2.FONT_HERSHEY_DUPLEX,
         "complex": cv2.FONT_HERSHEY_COMPLEX, "triplex": cv2.FONT_HERSHEY_TRIPLEX,
         "complex_small": cv2.FONT_HERSHEY_COMPLEX_SMALL, "script_simplex": cv2.FONT_HERSHEY_SCRIPT_SIMPLEX,
         "script_complex": cv2.FONT_HERSHEY_SCRIPT_COMPLEX}
CONTRAST_BANDS = (0.0, 0.1, 0.2, 0.3, 0.45, 1.01)


def draw(rng: np.random.Generator, index: int) -> tuple[np.ndarray, str, str, float]:
    """(RGB image, number, font name, luminance contrast) of test image ``index``."""
    n_digits = 1 + int(rng.choice(4, p=[0.2, 0.6, 0.17, 0.03]))
    number = str(int(rng.integers(1, 10))) + "".join(str(int(rng.integers(0, 10))) for _ in range(n_digits - 1))
    name = list(FONTS)[index % len(FONTS)]
    font = FONTS[name] | (cv2.FONT_ITALIC if rng.random() < 0.2 else 0)
    scale, thickness = float(rng.uniform(0.8, 2.0)), int(rng.integers(1, 5))
    (w, h), baseline = cv2.getTextSize(number, font, scale, thickness)
    mx, my = int(rng.integers(4, 30)), int(rng.integers(4, 20))
    bg = rng.integers(0, 256, 3)
    fg = 255 - bg if rng.random() < 0.5 else rng.integers(0, 256, 3)
    while np.abs(fg - bg).sum() < 150:  # visible to a person: 150 of 765 summed over the channels
        fg = rng.integers(0, 256, 3)
    image = np.empty((h + baseline + 2 * my, w + 2 * mx, 3), np.uint8)
    image[:] = bg
    if rng.random() < 0.5:
        image = np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)
    cv2.putText(image, number, (mx, my + h), font, scale, tuple(int(c) for c in fg), thickness, cv2.LINE_AA)
    if rng.random() < 0.5:
        image = cv2.GaussianBlur(image, (0, 0), float(rng.uniform(0.5, 1.5)))
    return image, number, name, abs(luminance(fg.astype(float)) - luminance(bg.astype(float)))


def band(contrast: float) -> str:
    for lo, hi in zip(CONTRAST_BANDS, CONTRAST_BANDS[1:]):
        if lo <= contrast < hi:
            return f"{lo:.2f}-{min(hi, 1.0):.2f}"
    raise ValueError(contrast)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default=None, help="checkpoint; default: the bundled model")
    p.add_argument("--n", type=int, default=240, help="numbers to draw")
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=None, help="also write the images and readings.json here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, cfg, _ = load_detector(args.weights, torch.device("cpu"))
    detect = reading_detector(model, cfg, torch.device("cpu"))
    rng = np.random.default_rng(args.seed)
    by_font, by_band = defaultdict(lambda: [0, 0]), defaultdict(lambda: [0, 0])
    records = []
    if args.out:
        (args.out / "test").mkdir(parents=True, exist_ok=True)
    with torch.inference_mode():
        for i in range(1, args.n + 1):
            image, number, font, contrast = draw(rng, i)
            boxes, labels, scores = detect([to_tensor(image)])[0]
            read = decode_number(boxes, labels, scores, score_thresh=cfg.decode_score_thresh,
                                 iou_thresh=cfg.decode_iou_thresh, line_thresh=cfg.decode_line_thresh)
            for tally in (by_font[font], by_band[band(contrast)]):
                tally[0] += read == number
                tally[1] += 1
            records.append({"image_id": i, "number": number, "read": read, "font": font,
                            "contrast": round(contrast, 3)})
            if args.out:
                cv2.imwrite(str(args.out / "test" / f"{i}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if args.out:
        (args.out / "readings.json").write_text(json.dumps(records, indent=1))
    total = sum(c for c, _ in by_font.values())
    print(f"Hershey numbers read exactly: {total}/{args.n} = {total / args.n:.3f} "
          f"(threshold {cfg.decode_score_thresh}, seed {args.seed})")
    for title, table in (("font", by_font), ("luminance contrast", by_band)):
        print(f"{title:<20} {'images':>7} {'accuracy':>9}")
        for key in (FONTS if table is by_font else sorted(table)):
            if key in table:
                c, t = table[key]
                print(f"{key:<20} {t:>7} {c / t:>9.3f}")


if __name__ == "__main__":
    main()
