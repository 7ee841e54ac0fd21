"""Training images/s of one process, and where a training step's time goes.

    python bench/train_step.py --data DATA --threads 1 pretrained=RUN/backbone.pt
    python bench/train_step.py --data DATA --threads 1 --profile pretrained=RUN/backbone.pt trainable_layers=5

Times ``model(images, targets)``, backward and the recipe's optimizer step
(optim.build_optimizer) on batches of the first training images of DATA (the recipe's
training augmentation, decoded once, so data loading is not counted; batched as training
batches them, in pools of ``group_batches`` sorted by aspect ratio), after a few warm-up
steps. ``--profile`` then prints torch.profiler's busiest operators over 10 more steps.
key=value overrides the recipe, e.g. ``trainable_layers=5`` (frozen stages need
``pretrained=``: a backbone.pt from `digitdet pretrain`, or a run's best.pt).
"""
from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from digitdet.config import load_config
from digitdet.data.loaders import aspect_sorted_batches
from digitdet.models.faster_rcnn import build_model
from digitdet.train.fit import load_split
from digitdet.train.optim import build_optimizer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--config", default="default")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=27, help="timed steps (after 5 warm-up steps)")
    p.add_argument("--profile", action="store_true", help="then profile 10 steps")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = load_config(args.config, args.overrides)
    model = build_model(cfg).train()
    # batches as training makes them: pools of group_batches batches sorted by aspect ratio
    pool = cfg.batch_size * max(cfg.group_batches, 1)
    n_batches = 5 + args.steps + (10 if args.profile else 0)
    ds, _ = load_split(args.data, "train", cfg, True, max_images=-(-n_batches * cfg.batch_size // pool) * pool)
    items = [ds[i] for i in range(len(ds))]
    batches = [b for i in range(0, len(items), pool) for b in aspect_sorted_batches(items[i:i + pool], cfg.batch_size, True)]
    opt = build_optimizer(model, cfg)

    def step(batch):
        losses = model([im for im, _ in batch], [t for _, t in batch])
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()

    for b in batches[:5]:
        step(b)
    timed = batches[5:5 + args.steps]
    t0 = time.perf_counter()
    for b in timed:
        step(b)
    dt = time.perf_counter() - t0
    frozen = sum(q.numel() for q in model.parameters() if not q.requires_grad)
    print(f"{args.config} {' '.join(args.overrides)}: {len(timed) * cfg.batch_size / dt:.2f} training images/s "
          f"({len(timed)} steps of {cfg.batch_size}, {args.threads} thread(s), {frozen / 1e6:.2f} M frozen parameters)")
    if args.profile:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for b in batches[5 + args.steps:]:
                step(b)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


if __name__ == "__main__":
    main()
