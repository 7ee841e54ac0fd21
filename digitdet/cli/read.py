"""digitdet read: the number in each photo, one line a photo."""
from __future__ import annotations

import glob
import json
import re
import sys
from pathlib import Path

from digitdet.api import Reader, open_photo
from digitdet.cli.common import add_device, setup
from digitdet.data.images import list_images
from digitdet.read.onnx import BACKENDS

OVERRIDE = re.compile(r"^[a-z_]+=")


def add_parser(sub, name):
    p = sub.add_parser(name, description="Read the number in each photo with the bundled model (or --weights) and print "
                                   "one line a photo: its name, the number ('-' when none), each digit with its score.",
                       epilog="examples: digitdet read house.jpg | digitdet read photos/ 'more/*.png' --json | "
                              "digitdet read door.heic --save annotated/ decode_score_thresh=0.7")
    p.add_argument("photos", nargs="+", metavar="PHOTO", help="image files, folders of them, or glob patterns; "
                                                                "key=value arguments are reading settings")
    p.add_argument("--weights", help="checkpoint (.pt) or exported model (.onnx); default: the bundled model")
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="auto (default): onnxruntime for the bundled model on the CPU and for a .onnx "
                        "(no torch: starts in a fraction of a second), torch for a .pt or a GPU")
    p.add_argument("--json", action="store_true", help="one JSON object a photo: number, digits (digit, box, score)")
    p.add_argument("--save", metavar="DIR", help="also write each photo with its digits drawn, as DIR/<name>.png")
    p.add_argument("--batch-size", type=int, default=32)
    add_device(p)
    return p


def expand(args: list[str]) -> tuple[list[Path], list[str]]:
    """(photo paths in order, key=value settings) of the command line's PHOTO arguments."""
    photos, overrides = [], []
    for a in args:
        if OVERRIDE.match(a) and not Path(a).exists():
            overrides.append(a)
        elif Path(a).is_dir():
            photos.extend(path for _, path in list_images(a))
        elif Path(a).is_file():
            photos.append(Path(a))
        elif any(c in a for c in "*?["):
            found = sorted(Path(m) for m in glob.glob(a) if Path(m).is_file())
            if not found:
                raise FileNotFoundError(f"{a}: no file matches this pattern")
            photos.extend(found)
        else:
            raise FileNotFoundError(f"{a}: no such photo or folder")
    return photos, overrides


def line(name: str, result, width: int) -> str:
    digits = ", ".join(f"{d.digit} {d.score:.2f}" for d in result.digits)
    return f"{name:<{width}}  {result.number or '-'}" + (f"  ({digits})" if digits else "")


def run(args) -> int:
    setup(args, torch_threads=False)  # the Reader sets its backend's threads
    photos, overrides = expand(args.photos)
    if not photos:
        raise FileNotFoundError(f"{' '.join(args.photos)}: no photos found")
    reader = Reader(args.weights, args.device, args.threads or None, *overrides, backend=args.backend)
    opened, failed = [], 0
    for path in photos:
        try:
            opened.append(open_photo(path))
        except (ValueError, FileNotFoundError) as e:
            print(f"digitdet read: error: {e}", file=sys.stderr)
            failed += 1
    width = max((len(str(p)) for p in photos), default=0)
    saved: set[str] = set()
    for result in reader.read_opened(opened, args.batch_size):
        if args.json:
            print(json.dumps(result.to_dict()))
        else:
            print(line(result.source, result, width))
        if args.save:
            stem = Path(result.source).stem
            name = stem if stem not in saved else f"{stem}_{len(saved)}"
            saved.add(name)
            result.save(Path(args.save) / f"{name}.png")
    return 2 if failed else 0
