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

# The subcommands, in the order --help lists them: name -> module of digitdet.cli. Imported when the
# command line is parsed, not when digitdet.cli is: `digitdet --version` needs none of them (nor torch).
COMMAND_NAMES = ("read", "serve", "train", "evaluate", "tune", "predict", "convert", "stats", "browse", "export",
                 "ensemble", "synth", "visualize", "pretrain")


def commands() -> dict:
    """``{name: module}`` of every subcommand (each with ``add_parser`` and ``run``)."""
    return {name: importlib.import_module(f"digitdet.cli.{name}") for name in COMMAND_NAMES}


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="digitdet", description="Find every digit in a photo (class + box) and read the whole number.")
    parser.add_argument("--version", action="version", version=f"digitdet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in commands().items():
        p = module.add_parser(sub, name)
        if p is not None and not p.epilog and name in EXAMPLES:
            p.epilog = f"example: {EXAMPLES[name]}"
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv == ["--version"]:  # at once: no subcommand, no torch
        print(f"digitdet {__version__}")
        return 0
    args = build_parser().parse_args(argv)
    from digitdet.train.step import TrainingDiverged  # torch is imported by now, with the subcommands

    try:
        return int(commands()[args.command].run(args) or 0)
    except (*USER_ERRORS, TrainingDiverged) as e:
        print(f"digitdet {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `digitdet read photos/ | head`: the reader of our output left
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        done = ("checkpoints written so far are intact; go on with --resume" if args.command == "train" else
                "files already written are intact; outputs are written whole or not at all")
        print(f"digitdet {args.command}: interrupted ({done})", file=sys.stderr)
        return 130
