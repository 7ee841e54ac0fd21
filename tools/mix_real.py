"""A training set that mixes real photos into a synthetic one (real photos repeated to weigh more).

    python tools/mix_real.py --synth DATA --real ../shared/data/svhn_real_dev --fold 0 --folds 2 \\
        --repeat 10 --out MIX
    # MIX/train = DATA/train + the real photos of every fold but 0 (x10); MIX/valid = DATA/valid;
    # MIX/heldout_ids.json = fold 0's ids: report on them only (bench/real.py --exclude-ids MIX/train_real_ids.json)

Photos are linked, not copied. Real image ids are offset past the synthetic ones (each repeat its
own id, same file), so the two sets never collide. The folds cut the real photos by sorted id,
every ``folds``-th one, so each fold is spread over the whole set.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from digitdet.data.coco import split_paths
from digitdet.io import read_json, write_json


def link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not dst.exists():
        os.symlink(src.resolve(), dst)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--synth", required=True, help="synthetic dataset folder (train/, train.json, valid/, valid.json)")
    p.add_argument("--real", required=True, help="real dataset folder whose valid split is mixed in")
    p.add_argument("--real-split", default="valid")
    p.add_argument("--fold", type=int, default=0, help="the real fold held out (never trained on)")
    p.add_argument("--folds", type=int, default=2)
    p.add_argument("--repeat", type=int, default=10, help="times each real training photo appears per epoch")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    out = Path(args.out)
    synth_dir, synth_ann = split_paths(args.synth, "train")
    real_dir, real_ann = split_paths(args.real, args.real_split)
    synth, real = read_json(synth_ann, "annotation file"), read_json(real_ann, "annotation file")
    ids = sorted(int(im["id"]) for im in real["images"])
    held = set(ids[args.fold::args.folds])
    train_real = [i for i in ids if i not in held]
    base = max(int(im["id"]) for im in synth["images"]) + 1
    images, anns = [], []
    for im in synth["images"]:
        link(synth_dir / im["file_name"], out / "train" / im["file_name"])
    by_image = {}
    for a in real["annotations"]:
        by_image.setdefault(int(a["image_id"]), []).append(a)
    next_ann = max((int(a["id"]) for a in synth["annotations"]), default=0) + 1
    real_images = {int(im["id"]): im for im in real["images"]}
    for r in range(args.repeat):
        for i in train_real:
            im = real_images[i]
            name = f"real_{i}{Path(im['file_name']).suffix}"
            link(real_dir / im["file_name"], out / "train" / name)
            new_id = base + r * (max(ids) + 1) + i
            images.append({**im, "id": new_id, "file_name": name})
            for a in by_image.get(i, []):
                anns.append({**a, "id": next_ann, "image_id": new_id})
                next_ann += 1
    write_json(out / "train.json", {**synth, "images": synth["images"] + images,
                                    "annotations": synth["annotations"] + anns})
    valid_dir, valid_ann = split_paths(args.synth, "valid")
    valid = read_json(valid_ann, "annotation file")
    for im in valid["images"]:
        link(valid_dir / im["file_name"], out / "valid" / im["file_name"])
    write_json(out / "valid.json", valid)
    write_json(out / "train_real_ids.json", train_real)
    write_json(out / "heldout_ids.json", sorted(held))
    print(f"{out}: train {len(synth['images'])} synthetic + {len(train_real)} real x {args.repeat}; "
          f"valid {len(valid['images'])} synthetic; {len(held)} real photos held out (fold {args.fold})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
