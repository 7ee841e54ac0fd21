"""Arguments and set-up shared by several subcommands."""
from __future__ import annotations

import logging
import os

import torch


def add_device(p) -> None:
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default: cuda when available)")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads for torch (default: all cores)")
    p.add_argument("--workers", type=int, default=None, help="DataLoader worker processes")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def setup(args) -> None:
    """Logging to stderr as plain lines; CPU thread count."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if getattr(args, "threads", 0):
        torch.set_num_threads(args.threads)
    elif os.cpu_count():
        torch.set_num_threads(os.cpu_count())


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA GPU is visible to torch here; use --device cpu")
    return torch.device(name)
