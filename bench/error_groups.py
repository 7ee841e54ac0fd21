"""Where a model's wrong numbers come from on a synthetic split: accuracy by what the renderer drew.

    python bench/error_groups.py --data DATA --split test --seed 5              # the bundled model
    python bench/error_groups.py --data DATA --split valid --seed 5 --pred P/pred.csv

Every picture of ``digitdet synth --out DATA --seed S`` is drawn from its own random generator
(``synthetic.sample_rng(S, split, id)``), so the style the renderer chose for it can be drawn
again without the picture: typeface style, plate, ink, distractors (letter suffix, cut or
neighbouring digits, lines, text), blur, low resolution, JPEG, digit count and height. The
model reads the split as ``digitdet predict`` does (or ``--pred`` gives a pred.csv already
made), and accuracy is printed for every group with its share of all errors, largest first:
the groups to work on, in the renderer or in the model.

Refuses (ValueError) a split whose numbers are not the ones that seed draws: another seed, or
a renderer that has changed since DATA was made.
"""
from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from digitdet.data.coco import load_coco_digits, split_paths
from digitdet.data.images import folder_sizes
from digitdet.io import read_pred_csv
from digitdet.read.decode import decode_all
from digitdet.read.detector import load_detector
from digitdet.read.pipeline import predict_folder
from digitdet.score.metrics import gt_numbers
from digitdet.synth.render import sample_rng
from digitdet.synth.style import luminance, sample_style

MIN_GROUP = 10  # groups with fewer pictures are not printed


def groups(style) -> list[str]:
    """The groups one picture belongs to (besides "all"), from the renderer's style."""
    d, photo = style.distractors, style.photo_params
    out = [f"typeface {style.font.style}", f"plate {style.plate}", f"ink {style.ink}",
           f"{len(style.digits)} digit(s)", f"surface {style.surface}"]
    out += [f"letter suffix {d['letter']}"] * bool(d.get("letter"))
    out += [f"neighbour's fragment {d['fragment']}"] * bool(d.get("fragment"))
    out += [f"digit cut at the {d['cut']}"] * bool(d.get("cut"))
    out += ["lines across"] * bool(d.get("lines")) + ["small text"] * bool(d.get("text"))
    out += ["blur >= 1 px"] * (photo.get("blur", 0) >= 1.0) + ["low resolution"] * bool(photo.get("lowres"))
    out += ["JPEG quality < 40"] * (0 < photo.get("jpeg", 0) < 40)
    out += ["vivid colours (contrast in colour)"] * style.vivid
    out += ["ink/plate luminance contrast < 0.2"] * (abs(luminance(style.fg) - luminance(style.bg)) < 0.2)
    height = style.height_px
    out.append("digits " + ("< 16 px" if height < 16 else "16-24 px" if height < 24 else "24-40 px" if height < 40
                            else ">= 40 px"))
    return out


def read_split(args, images_dir: Path, image_ids) -> dict[int, str]:
    """{image_id: number read} from ``--pred`` or by reading the split with the model."""
    if args.pred:
        return read_pred_csv(args.pred)
    torch.set_num_threads(args.threads)
    model, cfg, _ = load_detector(args.weights, torch.device("cpu"))
    out = predict_folder(model, cfg, images_dir, torch.device("cpu"), workers=1, progress=True)
    return decode_all(out["detections"], image_ids, cfg.decoder(), folder_sizes(images_dir))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument("--seed", required=True, type=int, help="the --seed DATA was rendered with")
    p.add_argument("--weights", default=None, help="checkpoint (default: the bundled model)")
    p.add_argument("--pred", default=None, help="score this pred.csv instead of reading the split")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)

    images_dir, ann = split_paths(args.data, args.split)
    if ann is None:
        raise FileNotFoundError(f"{args.data}: no annotations for split {args.split!r}")
    truth = gt_numbers(load_coco_digits(ann, images_dir)[0])
    styles = {}
    for image_id, number in truth.items():
        style = sample_style(sample_rng(args.seed, args.split, image_id))
        drawn = "".join(map(str, style.digits))
        # a digit cut by the picture's edge is dropped from the truth when under half is visible
        may_be = {drawn, drawn[:-1] if style.distractors.get("cut") == "right" else drawn,
                  drawn[1:] if style.distractors.get("cut") == "left" else drawn}
        if number not in may_be:
            raise ValueError(f"{ann}: image {image_id} holds {number}, but --seed {args.seed} draws "
                             f"{drawn} for it: another seed, or DATA was rendered "
                             f"by another version of the renderer")
        styles[image_id] = style
    read = read_split(args, images_dir, list(truth))
    tally = defaultdict(lambda: [0, 0])  # group -> [pictures, errors]
    for image_id, number in truth.items():
        wrong = read.get(image_id) != number
        for g in ["all", *groups(styles[image_id])]:
            tally[g][0] += 1
            tally[g][1] += wrong
    errors = tally["all"][1]
    print(f"{args.data}/{args.split}: {tally['all'][0]} pictures, accuracy "
          f"{1 - errors / tally['all'][0]:.3f}, {errors} wrong")
    print(f"{'group':32s} {'pictures':>8s} {'accuracy':>8s} {'errors':>6s} {'of all':>6s}")
    rows = sorted(((g, n, e) for g, (n, e) in tally.items() if g != "all" and n >= MIN_GROUP),
                  key=lambda r: (-r[2], r[0]))
    for g, n, e in rows:
        print(f"{g:32s} {n:8d} {1 - e / n:8.3f} {e:6d} {e / max(errors, 1):6.0%}")
    share = np.mean([s.font.style == "marker" for s in styles.values()])
    print(f"(groups overlap; groups under {MIN_GROUP} pictures left out; marker writers drew {share:.0%})")


if __name__ == "__main__":
    main()
