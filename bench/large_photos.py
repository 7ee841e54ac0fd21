"""Whole-number accuracy when the number is small in a large photo, as in a phone's picture of a
house front: each picture of a dataset split (with its truth) is pasted, enlarged, into a larger
photo at a chosen digit height, a share of that photo's height.

    python bench/large_photos.py --data DATA --split test --n 200 --fractions 0.4,0.2,0.1,0.05,0.03
    python bench/large_photos.py --data DATA --weights runs/x/best.pt --set zoom_scan=0   # key=value: reading settings

The backgrounds are scikit-image's sample photos (coffee, chelsea, astronaut, ...), cropped and
resized at random to ``--size`` (default 1024x768); the picture's median digit becomes
``fraction x`` the photo's height tall, at a random place; fraction 0 gives the photos without
the number, where reading right means reading none ("-1"). SVHN's own photos are crops where the
digits fill about half the height (fraction ~0.4); the model reads at a 64-px short side, so a
number at fraction 0.05 reaches it 3 px tall unless the reader searches at larger scales
(``zoom_scan``, digitdet/read/zoom.py). Prints accuracy and reading time by fraction.
"""
from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import torch
from torchvision.transforms.functional import to_tensor

from digitdet.data.coco import load_coco_digits, split_paths
from digitdet.read.decode import decode_number, starts_lines
from digitdet.read.detector import load_detector
from digitdet.read.zoom import reading_detector
from digitdet.score.metrics import gt_numbers

# scikit-image sample photos without digits or letters in them
BACKGROUNDS = ("coffee", "chelsea", "astronaut", "rocket", "immunohistochemistry", "hubble_deep_field", "retina",
               "colorwheel", "brick", "grass", "gravel", "camera")


def backgrounds() -> list[np.ndarray]:
    """RGB uint8 photos of scikit-image's data module (grey ones stacked to three channels)."""
    from skimage import data

    out = []
    for name in BACKGROUNDS:
        im = getattr(data, name)()
        out.append(np.repeat(im[..., None], 3, axis=2) if im.ndim == 2 else im[..., :3])
    return out


def compose(rng, picture: np.ndarray, boxes: np.ndarray, fraction: float, size: tuple[int, int],
            bank: list[np.ndarray]) -> np.ndarray:
    """``picture`` (RGB) pasted into a ``size`` (w, h) photo so its digits (``boxes``, xywh in the
    picture's pixels) have a median height of ``fraction`` x the photo's height; a picture that
    would not fit is cut to the photo's size around its digits."""
    w, h = size
    scale = (fraction or 0.05) * h / float(np.median(boxes[:, 3]))
    pic = cv2.resize(picture, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    x1, y1 = (boxes[:, :2].min(0) * scale).astype(int)
    x2, y2 = ((boxes[:, :2] + boxes[:, 2:]).max(0) * scale).astype(int)
    # a window of at most the photo's size that holds the digits, placed at random around them
    cw, ch = min(pic.shape[1], w), min(pic.shape[0], h)
    cx = int(rng.integers(max(0, x2 - cw), max(0, min(x1, pic.shape[1] - cw)) + 1))
    cy = int(rng.integers(max(0, y2 - ch), max(0, min(y1, pic.shape[0] - ch)) + 1))
    pic = pic[cy:cy + ch, cx:cx + cw]
    bg = bank[int(rng.integers(len(bank)))]
    crop = rng.uniform(0.5, 1.0)
    bh, bw = int(bg.shape[0] * crop), int(bg.shape[1] * crop)
    y0, x0 = int(rng.integers(0, bg.shape[0] - bh + 1)), int(rng.integers(0, bg.shape[1] - bw + 1))
    photo = cv2.resize(np.ascontiguousarray(bg[y0:y0 + bh, x0:x0 + bw]), (w, h), interpolation=cv2.INTER_CUBIC)
    x, y = int(rng.integers(0, w - pic.shape[1] + 1)), int(rng.integers(0, h - pic.shape[0] + 1))
    if fraction > 0:  # 0: the photo alone, a house front without its number
        photo[y:y + pic.shape[0], x:x + pic.shape[1]] = pic
    return photo


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="dataset whose split gives the pictures")
    p.add_argument("--split", default="test")
    p.add_argument("--weights", default=None, help="checkpoint; default: the bundled model")
    p.add_argument("--n", type=int, default=200, help="pictures of the split, from its first")
    p.add_argument("--fractions", default="0.4,0.2,0.1,0.05,0.03",
                   type=lambda v: [float(f) for f in v.split(",")], help="digit height / photo height")
    p.add_argument("--size", default="1024x768", type=lambda v: tuple(int(s) for s in v.split("x")),
                   help="photo width x height")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="reading settings, e.g. zoom_scan=0")
    p.add_argument("--out", type=Path, default=None, help="also write the photos here (FRACTION/ID.png)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    images_dir, ann = split_paths(args.data, args.split)
    gt, _ = load_coco_digits(ann, images_dir)
    truth = gt_numbers(gt)
    digit_boxes = defaultdict(list)
    for a in gt["annotations"]:
        digit_boxes[a["image_id"]].append(a["bbox"])
    images = [im for im in sorted(gt["images"], key=lambda im: im["id"]) if im["id"] in digit_boxes][:args.n]
    model, cfg, _ = load_detector(args.weights, torch.device("cpu"), args.set)
    detect = reading_detector(model, cfg, torch.device("cpu"))
    bank = backgrounds()
    print(f"{'fraction':>8} {'photos':>7} {'accuracy':>9} {'photos/s':>9}")
    for fraction in args.fractions:
        rng = np.random.default_rng([args.seed, int(fraction * 1000)])
        right, seconds = 0, 0.0
        for im in images:
            picture = cv2.cvtColor(cv2.imread(str(images_dir / im["file_name"])), cv2.COLOR_BGR2RGB)
            photo = compose(rng, picture, np.array(digit_boxes[im["id"]], dtype=np.float64), fraction, args.size, bank)
            if args.out:
                (args.out / f"{fraction:g}").mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(args.out / f"{fraction:g}" / f"{im['id']}.png"), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
            start = time.perf_counter()
            with torch.inference_mode():
                boxes, labels, scores = detect([to_tensor(photo)])[0]
            seconds += time.perf_counter() - start
            read = decode_number(boxes, labels, scores, score_thresh=cfg.decode_score_thresh,
                                 iou_thresh=cfg.decode_iou_thresh, line_thresh=cfg.decode_line_thresh,
                                 line_start=starts_lines((photo.shape[1], photo.shape[0]), cfg.decoder()["line_start_side"]))
            right += read == (truth[im["id"]] if fraction > 0 else "-1")
        print(f"{fraction:>8g} {len(images):>7} {right / len(images):>9.3f} {len(images) / seconds:>9.1f}")


if __name__ == "__main__":
    main()
