"""Where a detector's inference time goes at digit scale, and what shape-grouped batches save.

    python bench/profile_stages.py --config default --threads 2

Prints (1) wall time per stage of torchvision's Faster R-CNN (transform, backbone body,
FPN, RPN, RoI pooling, box head, box predictor, RoI post-processing), measured with forward
hooks over shape-grouped batches; (2) torch.profiler's busiest operators; (3) the padding
that torchvision's batching adds (every image of a batch is padded to the batch's largest,
rounded up to a multiple of 32) for shape-grouped vs arbitrary order, and the images/s of
each. Same photos as bench/speed.py; random weights.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import make_batches, make_photos, measure  # noqa: E402  (bench/ is not a package)

from digitdet.config import load_config  # noqa: E402
from digitdet.models.faster_rcnn import build_model  # noqa: E402


def stage_modules(model) -> dict:
    """Stage name -> module, in the order they run."""
    rh = model.roi_heads
    return {"transform (normalise + resize + pad)": model.transform, "backbone body": model.backbone.body,
            "fpn": model.backbone.fpn, "rpn (head + anchors + proposal NMS)": model.rpn,
            "roi pool (MultiScaleRoIAlign)": rh.box_roi_pool, "box head (2 FC)": rh.box_head,
            "box predictor": rh.box_predictor, "roi_heads total": rh}


def stage_times(model, batches, repeats: int) -> dict[str, float]:
    """Seconds per image spent in each stage (forward hooks around each module)."""
    totals, starts, handles = defaultdict(float), {}, []
    for name, mod in stage_modules(model).items():
        handles.append(mod.register_forward_pre_hook(lambda m, a, n=name: starts.__setitem__(n, time.perf_counter())))
        handles.append(mod.register_forward_hook(
            lambda m, a, o, n=name: totals.__setitem__(n, totals[n] + time.perf_counter() - starts[n])))
    n_images, t0 = 0, time.perf_counter()
    with torch.inference_mode():
        for _ in range(repeats):
            for b in batches:
                model([im for im, _ in b])
                n_images += len(b)
    totals["whole model"] = time.perf_counter() - t0
    for h in handles:
        h.remove()
    rh = ("roi pool (MultiScaleRoIAlign)", "box head (2 FC)", "box predictor")
    totals["roi post-processing (decode + NMS)"] = totals.pop("roi_heads total") - sum(totals[k] for k in rh)
    return {k: v / n_images for k, v in totals.items()}


def padding_waste(batches, min_size: int, max_size: int) -> float:
    """Fraction of the pixels fed to the backbone that are padding (torchvision's resize + pad to 32)."""
    real = padded = 0
    for b in batches:
        sizes = []
        for im, _ in b:
            h, w = im.shape[1:]
            s = min(min_size / min(h, w), max_size / max(h, w))
            sizes.append((int(h * s), int(w * s)))
        H, W = (-(-max(x[i] for x in sizes) // 32) * 32 for i in (0, 1))
        real += sum(h * w for h, w in sizes)
        padded += len(b) * H * W
    return 1 - real / padded


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="default")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seconds", type=float, default=3.0, help="per images/s measurement")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    photos, source = make_photos(args.images)
    grouped = make_batches(photos, args.batch_size)
    print(f"{args.config}: {len(photos)} photos from {source}; {args.threads} threads; "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    with torch.inference_mode():
        model([im for im, _ in grouped[0]])  # warm-up (and the RoI pooler's scale inference)

    times = stage_times(model, grouped, repeats=1)
    whole = times.pop("whole model")
    print(f"\n1) stages, ms per image (whole model {1000 * whole:.1f} ms/img):")
    for k, v in times.items():
        print(f"   {k:40s} {1000 * v:7.2f}  {100 * v / whole:5.1f}%")

    with profile(activities=[ProfilerActivity.CPU]) as prof, torch.inference_mode():
        for b in grouped[:2]:
            model([im for im, _ in b])
    print("\n2) busiest operators (self CPU time):")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=40))

    rng = np.random.default_rng(0)
    order = rng.permutation(len(photos)).tolist()
    arbitrary = [[photos[i] for i in order[j:j + args.batch_size]] for j in range(0, len(order), args.batch_size)]
    infer = lambda b: model([im for im, _ in b])  # noqa: E731
    with torch.inference_mode():
        speeds = {"arbitrary": measure(infer, arbitrary, args.seconds), "grouped": measure(infer, grouped, args.seconds)}
    print("3) batching (padding = share of backbone pixels that are padding):")
    for name, bs in (("arbitrary order", arbitrary), ("shape-grouped", grouped)):
        key = name.split()[0].replace("shape-", "")
        print(f"   {name:16s} padding {100 * padding_waste(bs, cfg.min_size, cfg.max_size):5.1f}%   "
              f"{speeds[key]:.2f} img/s")
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
