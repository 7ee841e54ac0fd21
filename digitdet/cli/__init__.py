"""``digitdet`` command line: thin subcommands that parse, build and call the library.

Each subcommand lives in its own module with ``add_parser(subparsers)`` and ``run(args)``;
COMMANDS below is the one plain list of them. Errors a user can fix (bad file, bad
value) surface as one line ``digitdet: error: ...`` and exit status 2, no traceback.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from digitdet import __version__

# The subcommands, in the order --help lists them, with their one-line help. A command's module is
# imported only when it runs (or shows its own --help): `digitdet --version`, `--help` and `read`
# with the onnxruntime backend import no torch.
COMMANDS = {
    "read": "print the number read in each photo (files, folders, globs)",
    "serve": "serve POST /v1/read and a page to try it in a browser (offline)",
    "train": "train a detector (writes last.pt, best.pt, metrics.csv, config.yaml)",
    "evaluate": "mAP, AP50, AP75, APs/m/l, number accuracy and error breakdown on a split",
    "tune": "choose the number-reading thresholds and pred.json's box style on a split, and write them "
            "into the weights file (predict then reads with them)",
    "predict": "write OUT/pred.json and OUT/pred.csv for a folder of images (or one image)",
    "convert": "convert annotations: SVHN digitStruct -> COCO, COCO <-> YOLO txt",
    "stats": "dataset statistics and suggested anchors",
    "browse": "draw random images of a split with their boxes into one PNG",
    "export": "export a checkpoint to ONNX, read by the onnxruntime backend (no torch)",
    "ensemble": "fuse pred.json files (WBF, NMS, ...) into OUT/pred.json and OUT/pred.csv",
    "synth": "render the synthetic house-number dataset",
    "visualize": "pictures of predictions: OUT/grid.png and OUT/images/<id>.png",
    "pretrain": "pre-train a backbone as a digit classifier on crops of the training boxes (minutes on a CPU); "
                "then: digitdet train ... pretrained=FILE",
}
COMMAND_NAMES = tuple(COMMANDS)


def commands() -> dict:
    """``{name: module}`` of every subcommand (each with ``add_parser`` and ``run``)."""
    return {name: command(name) for name in COMMAND_NAMES}


def command(name: str):
    """The module of subcommand ``name`` (``add_parser(sub, name)`` and ``run(args)``)."""
    return importlib.import_module(f"digitdet.cli.{name}")


# Errors a user can act on: printed as one line (no traceback), exit status 2 (TrainingDiverged too).
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


# One example a subcommand, shown under its --help (subcommands may give their own).
EXAMPLES = {
    "train": "digitdet train --data DATA --out runs/x --config cpu_fast   (go on after a kill: ... --resume)",
    "evaluate": "digitdet evaluate --weights runs/x/best.pt --data DATA --split valid   (any file: --pred out/pred.json)",
    "predict": "digitdet predict --images DATA/test --out out/   (one photo: --images door.jpg)",
    "convert": "digitdet convert svhn --mat train/digitStruct.mat --images train --out DATA/train.json",
    "stats": "digitdet stats --data DATA --split train --png stats.png",
    "browse": "digitdet browse --data DATA --split train --png grid.png",
    "export": "digitdet export --weights runs/x/best.pt --out model.onnx   (then predict --weights model.onnx)",
    "ensemble": "digitdet ensemble a/pred.json b/pred.json --images DATA/test --out ens/ --member-weights 2 1",
    "synth": "digitdet synth --out DATA --train 20000 --valid 2000 --test 2000 --seed 0 --workers 2",
    "visualize": "digitdet visualize --pred out/pred.json --images DATA/valid --gt DATA/valid.json --out pics/",
    "pretrain": "digitdet pretrain --data DATA --out backbone.pt   (then train ... pretrained=backbone.pt)",
}


class _Helped:
    """The subparsers action as a command's ``add_parser`` sees it: its help line comes from COMMANDS."""

    def __init__(self, sub, help: str):
        self.sub, self.help = sub, help

    def add_parser(self, name: str, **kwargs):
        return self.sub.add_parser(name, help=self.help, **kwargs)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command line; with ``only`` the name of a command, only that command's module is
    imported (the others are listed with their help line); ``only=""``: none is."""
    parser = argparse.ArgumentParser(
        prog="digitdet", description="Find every digit in a photo (class + box) and read the whole number.")
    parser.add_argument("--version", action="version", version=f"digitdet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help in COMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=help, add_help=False)
            continue
        p = command(name).add_parser(_Helped(sub, help), name)
        if p is not None and not p.epilog and name in EXAMPLES:
            p.epilog = f"example: {EXAMPLES[name]}"
    return parser


def _is_user_error(e: BaseException) -> bool:
    """An error a user can act on: USER_ERRORS, and a training run's TrainingDiverged."""
    step = sys.modules.get("digitdet.train.step")  # loaded by the commands that train
    return isinstance(e, USER_ERRORS) or (step is not None and isinstance(e, step.TrainingDiverged))


# torch's OpenMP threads spin-wait for each other by default: on a busy small machine (more
# runnable processes than cores) a 2-thread predict of 253 photos took 56.7 s against 8.8 s with
# --threads 1; sleeping instead (PASSIVE) took 7.4 s there and costs nothing on a quiet machine
# (6.2 s against 6.1 s). Set before torch is imported; a value the user set is kept.
OMP_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}


def main(argv: list[str] | None = None) -> int:
    for key, value in OMP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv == ["--version"]:  # at once: no subcommand, no torch
        print(f"digitdet {__version__}")
        return 0
    named = next((a for a in argv if not a.startswith("-")), "")
    args = build_parser(named if named in COMMANDS else "").parse_args(argv)
    try:
        return int(command(args.command).run(args) or 0)
    except BrokenPipeError:  # e.g. `digitdet read photos/ | head`: the reader of our output left (first:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # it is an Exception too)
        return 0
    except Exception as e:
        if not _is_user_error(e):
            raise
        print(f"digitdet {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        done = ("checkpoints written so far are intact; go on with --resume" if args.command == "train" else
                "files already written are intact; outputs are written whole or not at all")
        print(f"digitdet {args.command}: interrupted ({done})", file=sys.stderr)
        return 130
