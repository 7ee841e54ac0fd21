"""Detector speed on a CPU: inference and training images/s on the same digit photos.

    python bench/speed.py                          # cpu_fast, default, seed_r50v2, yolov8n
    python bench/speed.py --onnx --seconds 5       # + the default model under ONNX Runtime
    python bench/speed.py --models default,seed_r50v2 --threads 2
    python bench/speed.py --models default,default:channels_last=false --threads 1   # a recipe variant

Every model gets the same synthetic SVHN-size photos (1-5 digits, ~30-60 px tall, 60-250 px
wide; from ``digitdet.synth.render.render_sample`` when it works, else a plain Pillow
drawing) in the same shape-grouped batches. Weights are random: speed does not depend on
them, except that a detector's post-processing cost depends on how many boxes pass its
score threshold (noted per model). Figures on a shared machine are noisy: each one is the
fastest of 3 time windows; compare rows of one run, and look at the load average printed.
On a busy machine (load average above the core count) run with ``OMP_WAIT_POLICY=PASSIVE``:
torch's OpenMP threads otherwise spin-wait for descheduled peers and run several times slower.

* inference: ``torch.inference_mode``, batch ``--batch-size`` (8), the model's own
  resize/normalise/NMS included, data loading excluded.
* training: one optimizer step (forward with targets + loss + backward + SGD step) per batch.
* seed_r50v2 (torchvision's fasterrcnn_resnet50_fpn_v2 at 800 px, the course seeds' setup)
  is ~100x slower, so it runs one photo once, without warm-up.
* yolov8n (ultralytics, from ``yolov8n.yaml``, nc=10, no weights) sees each photo letterboxed
  into 96x256; inference includes its NMS, training its own loss (``DetectionModel.loss``).
  Needs the ``bench`` extra (``pip install -e .[bench]``); skipped when missing.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from digitdet import labels as L
from digitdet.config import load_config
from digitdet.data.loaders import shape_grouped_batches
from digitdet.models.faster_rcnn import build_model

SEED_BATCH = 1  # seed_r50v2 takes seconds per image: time a single photo
YOLO_SHAPE = (96, 256)  # letterbox (height, width) for yolov8n: digit-photo scale, multiple of 32


# ---- photos ----------------------------------------------------------------------------------

def _drawn_photo(rng: np.random.Generator):
    """A plain house-number photo drawn with Pillow: (PIL image, [(digit, [x1, y1, x2, y2])])."""
    height = int(rng.integers(30, 61))
    number = "".join(str(d) for d in rng.integers(0, 10, int(rng.integers(1, 6))))
    font = ImageFont.load_default(size=int(height * 0.7))
    x = int(rng.integers(4, 30))
    width = x + len(number) * int(height * 0.5) + int(rng.integers(12, 60))
    im = Image.new("RGB", (width, height), tuple(int(c) for c in rng.integers(0, 100, 3)))
    draw, boxes = ImageDraw.Draw(im), []
    for ch in number:
        draw.text((x, height * 0.1), ch, font=font, fill=tuple(int(c) for c in rng.integers(160, 256, 3)))
        x1, y1, x2, y2 = draw.textbbox((x, height * 0.1), ch, font=font)
        boxes.append((int(ch), [x1, y1, x2, y2]))
        x = x2 + int(rng.integers(2, 6))
    return im, boxes


def _svhn_size(im: Image.Image, digits, rng: np.random.Generator):
    """Scale a rendered photo to SVHN test-photo size (30-60 px tall, at most 250 wide)."""
    s = min(int(rng.integers(30, 61)) / im.height, 250 / im.width)
    w, h = max(8, round(im.width * s)), max(8, round(im.height * s))
    sx, sy = w / im.width, h / im.height
    return im.resize((w, h), Image.BILINEAR), [(d, [b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy]) for d, b in digits]


def make_photos(n: int, seed: int = 0) -> tuple[list[tuple[torch.Tensor, dict]], str]:
    """n (image float (3, H, W) in [0, 1], target in torchvision's schema) pairs, and their source."""
    rng = np.random.default_rng(seed)
    try:
        from digitdet.synth.render import render_sample
        rendered = [render_sample(rng) for _ in range(n)]
        pairs = [_svhn_size(im, [(a["digit"], a["bbox"]) for a in anns], rng) for im, anns in rendered]
        source = "digitdet.synth.render.render_sample"
    except Exception as e:  # the renderer is optional here: any failure falls back to plain drawings
        pairs = [_drawn_photo(rng) for _ in range(n)]
        source = f"Pillow drawings (render_sample unavailable: {type(e).__name__})"
    photos = []
    for im, digits in pairs:
        image = torch.from_numpy(np.asarray(im.convert("RGB"), np.float32) / 255).permute(2, 0, 1).contiguous()
        target = {"boxes": torch.tensor([b for _, b in digits], dtype=torch.float32).reshape(-1, 4),
                  "labels": torch.tensor([L.digit_to_category(d) for d, _ in digits], dtype=torch.int64)}
        photos.append((image, target))
    return photos, source


def make_batches(photos, batch_size: int) -> list[list[tuple[torch.Tensor, dict]]]:
    """Shape-grouped batches, as `digitdet predict` makes them."""
    ratios = [im.shape[2] / im.shape[1] for im, _ in photos]
    return [[photos[i] for i in idx] for idx in shape_grouped_batches(ratios, batch_size)]


# ---- timing ----------------------------------------------------------------------------------

def measure(step, batches, seconds: float, warmup: bool = True, windows: int = 3) -> float:
    """Images/s of ``step(batch)`` cycling over ``batches`` for about ``seconds``.

    The time is split into ``windows`` windows of at least one batch each and the fastest
    window counts (as ``timeit`` takes the minimum): on a shared machine the other jobs only
    ever slow a window down, so the fastest is the best estimate of the model's own speed.
    """
    if warmup:
        step(batches[0])
    best, i = 0.0, 0
    for _ in range(windows):
        n, t0 = 0, time.perf_counter()
        while True:
            batch = batches[i % len(batches)]
            step(batch)
            n, i = n + len(batch), i + 1
            if time.perf_counter() - t0 >= seconds / windows:
                break
        best = max(best, n / (time.perf_counter() - t0))
        if n == len(batch) and time.perf_counter() - t0 > seconds:
            break  # one batch took longer than the whole budget (seed_r50v2): one window is enough
    return best


# ---- models: each returns (infer(batch), train(batch), input scale, note) ---------------------

def digitdet_steps(name: str):
    """(infer, train, input scale, note, model, cfg) for the packaged recipe ``name``, which may
    carry overrides after colons: ``default:channels_last=false``."""
    recipe, *overrides = name.split(":")
    cfg = load_config(recipe, overrides)
    torch.manual_seed(0)
    model = build_model(cfg)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)

    @torch.inference_mode()
    def infer(batch):
        model.eval()
        model([im for im, _ in batch])

    def train(batch):
        model.train()
        losses = model([im for im, _ in batch], [t for _, t in batch])
        opt.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        opt.step()

    scale = f"{cfg.min_size}/{cfg.max_size}"
    note = (f"{cfg.backbone}, {cfg.rpn_post_nms_top_n_test} proposals, "
            f"box head {cfg.representation_size if cfg.backbone != 'resnet50_fpn_v2' else 1024}")
    return infer, train, scale, note, model, cfg


def letterbox(batch, shape=YOLO_SHAPE):
    """(images (B, 3, h, w) in [0, 1], YOLO targets: batch_idx, cls, normalised cxcywh)."""
    h, w = shape
    out = torch.full((len(batch), 3, h, w), 114 / 255)
    idx, cls, boxes = [], [], []
    for i, (im, t) in enumerate(batch):
        s = min(h / im.shape[1], w / im.shape[2])
        nh, nw = max(1, round(im.shape[1] * s)), max(1, round(im.shape[2] * s))
        out[i, :, :nh, :nw] = F.interpolate(im[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
        b = t["boxes"] * s
        boxes.append(torch.stack([(b[:, 0] + b[:, 2]) / 2 / w, (b[:, 1] + b[:, 3]) / 2 / h,
                                  (b[:, 2] - b[:, 0]) / w, (b[:, 3] - b[:, 1]) / h], 1))
        cls.append((t["labels"] - 1).float()[:, None])  # YOLO classes are 0-based
        idx.append(torch.full((len(b),), float(i)))
    return out, {"batch_idx": torch.cat(idx), "cls": torch.cat(cls), "bboxes": torch.cat(boxes)}


def yolo_steps():
    """(infer, train, input scale, note) for ultralytics yolov8n built from its yaml (ImportError if absent)."""
    os.environ.setdefault("YOLO_OFFLINE", "1")  # never reach out to the network
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel
    from ultralytics.utils import DEFAULT_CFG
    from ultralytics.utils.nms import non_max_suppression

    torch.manual_seed(0)
    model = DetectionModel("yolov8n.yaml", nc=10, verbose=False)
    model.args = get_cfg(DEFAULT_CFG)  # loss gains (box, cls, dfl) used by DetectionModel.loss
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    @torch.inference_mode()
    def infer(batch):
        model.eval()
        x, _ = letterbox(batch)
        non_max_suppression(model(x), conf_thres=0.01, iou_thres=0.5, max_det=30)

    def train(batch):
        model.train()
        x, targets = letterbox(batch)
        loss, _ = model.loss({"img": x, **targets})
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()

    return infer, train, f"{YOLO_SHAPE[0]}x{YOLO_SHAPE[1]} letterbox", "ultralytics yolov8n, own loss + NMS"


def onnx_steps(model, cfg, threads: int, folder: Path):
    """(infer(batch), note) for ``model`` exported to ONNX and run by ONNX Runtime."""
    from digitdet.read.export import export_onnx
    from digitdet.read.onnx import OnnxDetector

    path = export_onnx(model, cfg, {}, folder / "default.onnx")
    detector = OnnxDetector(path, threads)
    return ((lambda batch: detector([im for im, _ in batch])),
            "exported graph, 1 image per run() call on one thread (predict reads --threads photos at a time)")


# ---- main ------------------------------------------------------------------------------------

def run_models(args, batches, seed_batches) -> list[dict]:
    rows = []
    for name in args.models.split(","):
        if name == "yolov8n":
            try:
                infer, train, scale, note = yolo_steps()
            except ImportError as e:
                print(f"yolov8n skipped: {e} (pip install -e '.[bench]')")
                continue
            model = cfg = None
        else:
            infer, train, scale, note, model, cfg = digitdet_steps(name)
        seed = name == "seed_r50v2"
        use, warm = (seed_batches, False) if seed else (batches, True)
        row = {"model": name, "scale": scale, "note": note}
        row["infer"] = measure(infer, use, args.seconds, warm)
        row["train"] = measure(train, use, args.seconds, warm)
        print(f"  {name}: {row['infer']:.2f} img/s inference, {row['train']:.2f} img/s training", flush=True)
        rows.append(row)
        if args.onnx and name == "default":  # the plain recipe, not a variant
            rows.extend(onnx_rows(args, model, cfg, infer, batches))
    return rows


def onnx_rows(args, model, cfg, torch_infer, batches) -> list[dict]:
    """Rows for the default model run one image per call by torch and by ONNX Runtime."""
    singles = [[p] for b in batches for p in b]
    torch1 = {"model": "default, torch, batch 1", "scale": f"{cfg.min_size}/{cfg.max_size}",
              "note": "same weights, one image per call", "infer": measure(torch_infer, singles, args.seconds)}
    with tempfile.TemporaryDirectory() as tmp:
        ort_infer, note = onnx_steps(model, cfg, args.threads, Path(tmp))
        ort = {"model": "default, onnxruntime", "scale": torch1["scale"], "note": note,
               "infer": measure(ort_infer, batches, args.seconds)}
    for r in (torch1, ort):
        print(f"  {r['model']}: {r['infer']:.2f} img/s inference", flush=True)
    return [torch1, ort]


def print_table(rows: list[dict]) -> None:
    seed = next((r for r in rows if r["model"] == "seed_r50v2"), None)
    ratio = lambda r, k: f"{r[k] / seed[k]:.0f}x" if seed and r.get(k) else "-"  # noqa: E731
    print("\n| model | input | infer img/s | vs seed | train img/s | vs seed | notes |")
    print("|---|---|---:|---:|---:|---:|---|")
    for r in rows:
        train = f"{r['train']:.2f}" if r.get("train") else "-"
        print(f"| {r['model']} | {r['scale']} | {r['infer']:.2f} | {ratio(r, 'infer')} | {train} "
              f"| {ratio(r, 'train')} | {r['note']} |")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="cpu_fast,default,seed_r50v2,yolov8n",
                   help="comma-separated: digitdet recipe names (configs/*.yaml), each with optional "
                        "overrides after colons (default:channels_last=false), and/or yolov8n")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch / onnxruntime CPU threads")
    p.add_argument("--seconds", type=float, default=3.0, help="time per measurement (after one warm-up batch)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--images", type=int, default=48, help="distinct photos cycled through")
    p.add_argument("--onnx", action="store_true", help="also time the default model under ONNX Runtime")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    photos, source = make_photos(args.images)
    sizes = np.array([im.shape[1:] for im, _ in photos])
    print(f"{len(photos)} photos from {source}: height {sizes[:, 0].min()}-{sizes[:, 0].max()}, "
          f"width {sizes[:, 1].min()}-{sizes[:, 1].max()} px; {args.threads} threads; "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}", flush=True)
    batches = make_batches(photos, args.batch_size)
    rows = run_models(args, batches, make_batches(photos[:SEED_BATCH], SEED_BATCH))
    print_table(rows)
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end; seed_r50v2: one photo, "
          f"no warm-up; yolov8n and onnxruntime rows need the bench / onnx extras")


if __name__ == "__main__":
    main()
