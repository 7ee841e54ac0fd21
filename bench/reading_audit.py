"""A by-eye audit of a model's wrong numbers: how many could a person read at all?

    python bench/reading_audit.py --data DATA --split valid --pred P/pred.csv --out AUDIT
    python bench/reading_audit.py --data DATA --split valid --pred P/pred.csv \
        --verdicts bench/reading_audit_seed5_valid.json

The first form writes AUDIT/sheet_NN.png: every picture whose number the model got wrong,
enlarged, 12 to a sheet, captioned with its id, the true number and what was read. A person
looks at them and writes a verdicts file: the ids of pictures whose number cannot be read by
eye (``"unreadable"``) and of those whose label a reader would dispute (``"disputable"``: a
digit cut at the edge that the label leaves out, a letter drawn like a digit), each a list of
ids or a dict of reason -> ids.

``--right N`` also writes AUDIT/right_NN.png: N random pictures the model read right (seed 0),
captioned with their id only, so a person reads them blind and then compares with the truth:
the numbers a person misreads among those are unreadable ones the model read anyway, which
the tally below cannot see.

A verdicts file may say what came of that (``"blind_right": {"n": N, "misread": {id: note}}``).

The second form tallies the verdicts against the same predictions: the model's errors split
into unreadable, disputable and readable, and the **reading ceiling** of the split, the share
of its numbers left once those a reader cannot read or would read otherwise are taken out. It
is an upper bound on what a model can be expected to score there, and a generous one: only
the pictures the audited model got wrong were looked at, so unreadable pictures it guessed
right are not counted. Verdicts for an id the predictions read right are reported, not used.
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from PIL import Image

from digitdet.data.coco import load_coco_digits, split_paths
from digitdet.io import read_pred_csv
from digitdet.score.metrics import gt_numbers
from digitdet.viz.draw import draw_boxes, image_grid, save_png_atomic

PER_SHEET, COLS, CELL = 12, 2, (460, 180)


def wrong_numbers(data: str, split: str, pred_csv: str) -> tuple[dict, list[tuple[int, str, str]], Path]:
    """(truth {id: number}, [(id, true, read)] of the wrong ones by id, images folder)."""
    images_dir, ann = split_paths(data, split)
    if ann is None:
        raise ValueError(f"{data}: split {split!r} has no annotations to audit against")
    coco, _ = load_coco_digits(ann, images_dir, check_images=False)
    truth = gt_numbers(coco)
    read = read_pred_csv(pred_csv)
    missing = sorted(set(truth) - set(read))
    if missing:
        raise ValueError(f"{pred_csv}: no prediction for {len(missing)} image(s) of {ann}, e.g. id {missing[0]}")
    wrong = [(i, truth[i], read[i]) for i in sorted(truth) if read[i] != truth[i]]
    return truth, wrong, images_dir


def _sheets(captions: list[tuple[int, str]], images_dir: Path, out: Path, prefix: str) -> list[Path]:
    """OUT/PREFIX_NN.png: the pictures (id, caption), enlarged to their cell, 12 to a sheet."""
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for s in range(0, len(captions), PER_SHEET):
        cells = []
        for i, text in captions[s:s + PER_SHEET]:
            with Image.open(images_dir / f"{i}.png") as im:
                cells.append(draw_boxes(im, [], [], number_text=text, min_side=144))
        path = out / f"{prefix}_{s // PER_SHEET:02d}.png"
        save_png_atomic(image_grid(cells, COLS, CELL), path)
        files.append(path)
    return files


def write_sheets(wrong, images_dir: Path, out: Path) -> list[Path]:
    """Sheets of the wrong pictures, each captioned 'id: true X, read Y'."""
    return _sheets([(i, f"id {i}: true {true}, read {read}") for i, true, read in wrong], images_dir, out, "sheet")


def write_blind_sheets(truth: dict, wrong, images_dir: Path, out: Path, n: int) -> list[Path]:
    """Sheets of ``n`` random pictures read right (seed 0), captioned with their id only."""
    wrong_ids = {i for i, _, _ in wrong}
    right = sorted(i for i in truth if i not in wrong_ids)
    sample = sorted(random.Random(0).sample(right, min(n, len(right))))
    return _sheets([(i, f"id {i}") for i in sample], images_dir, out, "right")


def _ids(entry) -> dict[str, list[int]]:
    """A verdict entry (list of ids, or reason -> ids) as reason -> ids."""
    return {"": [int(i) for i in entry]} if isinstance(entry, list) else {k: [int(i) for i in v] for k, v in entry.items()}


def tally(truth: dict, wrong, verdicts: dict) -> dict:
    """Counts of the verdicts among the wrong numbers, and the reading ceiling."""
    wrong_ids = {i for i, _, _ in wrong}
    out, judged = {"images": len(truth), "wrong": len(wrong)}, set()
    for kind in ("unreadable", "disputable"):
        groups = _ids(verdicts.get(kind, []))
        ids = {i for v in groups.values() for i in v}
        unknown = sorted(ids - set(truth))
        if unknown:
            raise ValueError(f"verdicts: {kind} id {unknown[0]} is not an image of the split")
        out[kind] = len(ids & wrong_ids)
        out[f"{kind}_by_reason"] = {k or kind: len(set(v) & wrong_ids) for k, v in groups.items()}
        out[f"{kind}_read_right_now"] = len(ids - wrong_ids)
        judged |= ids & wrong_ids
    out["readable_wrong"] = len(wrong_ids - judged)
    out["accuracy"] = 1 - len(wrong) / len(truth)
    out["reading_ceiling"] = 1 - len(judged) / len(truth)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="valid")
    p.add_argument("--pred", required=True, help="the model's pred.csv on that split")
    p.add_argument("--out", help="folder for the sheets of wrong pictures")
    p.add_argument("--verdicts", help="JSON of by-eye verdicts to tally")
    p.add_argument("--right", type=int, default=0, metavar="N",
                   help="with --out: also N random pictures read right, captioned blind")
    args = p.parse_args()
    if not args.out and not args.verdicts:
        p.error("give --out (write sheets) and/or --verdicts (tally them)")
    truth, wrong, images_dir = wrong_numbers(args.data, args.split, args.pred)
    print(f"{len(wrong)} of {len(truth)} numbers read wrong (accuracy {1 - len(wrong) / len(truth):.3f})")
    if args.out:
        files = write_sheets(wrong, images_dir, Path(args.out))
        if args.right:
            files += write_blind_sheets(truth, wrong, images_dir, Path(args.out), args.right)
        print(f"wrote {len(files)} sheets to {args.out}")
    if args.verdicts:
        t = tally(truth, wrong, json.loads(Path(args.verdicts).read_text()))
        for kind in ("unreadable", "disputable"):
            reasons = "".join(f"\n  {v:4d}  {k}" for k, v in t[f"{kind}_by_reason"].items() if k != kind)
            print(f"{kind}: {t[kind]} of the wrong; {t[f'{kind}_read_right_now']} judged so are read right{reasons}")
        print(f"readable and read wrong: {t['readable_wrong']}")
        print(f"reading ceiling: {t['reading_ceiling']:.3f} (the model: {t['accuracy']:.3f})")
        blind = json.loads(Path(args.verdicts).read_text()).get("blind_right")
        if blind:
            m, n, right = len(blind["misread"]), blind["n"], len(truth) - len(wrong)
            more = m / n * right
            print(f"read blind, a person misread {m} of {n} numbers the model read right: about {more:.0f} "
                  f"more of the {right}, a ceiling of about {t['reading_ceiling'] - more / len(truth):.3f}")


if __name__ == "__main__":
    main()
