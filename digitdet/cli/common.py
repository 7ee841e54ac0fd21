"""Arguments and set-up shared by several subcommands.

torch is imported by the functions that need it, not here: `digitdet read` and `predict` with
the onnxruntime backend run without it.
"""
from __future__ import annotations

import argparse
import logging


def add_device(p) -> None:
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default: cuda when available)")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads (default: the cores this process may use)")
    p.add_argument("--workers", type=int, default=None, help="DataLoader worker processes")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def setup(args, torch_threads: bool = True) -> None:
    """Logging to stderr as plain lines; torch's CPU thread count (``torch_threads``: see :func:`set_torch_threads`)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if torch_threads:
        set_torch_threads(getattr(args, "threads", 0))


def set_torch_threads(threads: int = 0) -> None:
    """torch's intra-op threads: ``threads``, or every core this process may use."""
    import torch

    from digitdet.read.onnx import default_threads

    torch.set_num_threads(threads or default_threads())


def resolve_device(name: str = "auto"):
    """The torch.device ``--device`` names (auto: cuda when torch sees a GPU)."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA GPU is visible to torch here; use --device cpu")
    return torch.device(name)


def load_split_gt(data, split: str, quiet: bool = False):
    """(images folder, COCO dict) of an annotated split of dataset ``data``, its load report logged;
    ``quiet``: no progress bar while its photos are checked."""
    from digitdet.data.coco import load_coco_digits, split_paths

    images_dir, ann = split_paths(data, split)
    if ann is None:
        raise FileNotFoundError(f"no annotations for split {split!r} in {data} (expected {split}.json)")
    gt, report = load_coco_digits(ann, images_dir, progress=False if quiet else None)
    logging.getLogger("digitdet").info(report.summary(str(ann)))
    return images_dir, gt


def add_data(p, what: str = "dataset folder") -> None:
    """The dataset as ``--data DATA``, as every subcommand names it (a bare DATA is still taken)."""
    p.add_argument("data_positional", nargs="?", metavar="DATA", help=argparse.SUPPRESS)
    p.add_argument("--data", help=what)


def data_of(args) -> str:
    """The dataset given by ``--data`` (or as a bare argument); ValueError when neither."""
    data = args.data or args.data_positional
    if not data:
        raise ValueError("give the dataset with --data DATA")
    return data


def add_overrides(p, example: str = "decode_score_thresh=0.6") -> None:
    """The ``key=value`` config overrides every model-running subcommand takes."""
    p.add_argument("overrides", nargs="*", metavar="key=value", help=f"config settings, e.g. {example}")
