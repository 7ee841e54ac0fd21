"""digitdet train: fit a detector on a COCO digit dataset."""
from __future__ import annotations

import json
import logging

import torch

from digitdet import distributed
from digitdet.cli.common import add_device, add_overrides, resolve_device, setup
from digitdet.config import load_config
from digitdet.train.fit import fit

log = logging.getLogger("digitdet")


def add_parser(sub, name):
    p = sub.add_parser(name, description="Train on DATA/train (+ train.json), validating on DATA/valid every epoch.")
    p.add_argument("--data", required=True, help="dataset folder: train/, valid/, train.json, valid.json")
    p.add_argument("--out", required=True, help="run folder for checkpoints and logs")
    p.add_argument("--config", default="default", help="recipe name (default, cpu_fast, seed_r50v2, ...) or YAML file")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    add_device(p)
    add_overrides(p, "lr=0.01 backbone=resnet34_fpn")
    return p


def run(args) -> int:
    setup(args)
    extra = list(args.overrides)
    for key, value in (("epochs", args.epochs), ("batch_size", args.batch_size), ("workers", args.workers)):
        if value is not None:
            extra.append(f"{key}={value}")
    cfg = load_config(args.config, extra)
    device = distributed.init(resolve_device(args.device))  # torchrun: DDP, one process per GPU (or CPU share)
    threads = torch.get_num_threads()
    if device.type == "cpu" and not distributed.launched_by_torchrun() and threads > 1 and not args.resume:
        # measured on 2 cores (README "Multi-GPU, multi-node and CPU training"): 15.4 vs 10.8 images/s
        log.info("tip: on a CPU, processes of one thread each train faster than one process of %d threads "
                 "(1.4x with 2 processes on 2 cores): torchrun --standalone --nproc_per_node %d -m digitdet "
                 "train ... --threads 1", threads, threads)
    result = fit(cfg, args.data, args.out, device=str(device), resume=args.resume, progress=not args.quiet)
    if distributed.is_main():
        print(json.dumps({k: v for k, v in result.items() if k != "history"}))
    return 0
