"""Which ensemble number fusion keeps Task 2 accuracy at or above the best member? (prints a table)

A controlled small case, no training needed: house numbers with known truth, and simulated
members whose failure modes are the ones seen in practice: missed digits, wrong digits,
low-score clutter, and *phantom digits* (confident boxes on background), strong members
rarely, weak members often. Errors are partly shared between members (hard digits and
confusing background objects every member tends to get wrong), as real models' are.

For each scenario it prints COCO mAP and number accuracy of every member and of the fused
ensemble read four ways: plain decode of the WBF boxes (conf_type avg and max), and
``digitdet.read.ensemble.fuse_numbers`` modes "boxes" and "vote".

    python bench/ensemble_number_fusion.py [--images 400] [--seeds 3]
"""
from __future__ import annotations

import argparse

import numpy as np

from digitdet.labels import digit_to_category
from digitdet.read.decode import decode_all, detections_to_results
from digitdet.read.ensemble import fuse_numbers
from digitdet.read.fusion import fuse_detections
from digitdet.score.metrics import coco_map, gt_numbers, sequence_accuracy

PLAIN = {"score_thresh": 0.5, "iou_thresh": 0.5}  # plain reading at 0.5, no line reading

# name: (recall, wrong-label rate, phantoms per image, phantom score range)
STRONG = (0.97, 0.02, 0.04, (0.3, 0.8))
MEDIUM = (0.94, 0.04, 0.12, (0.4, 0.9))
WEAK = (0.90, 0.07, 0.30, (0.5, 0.95))
SCENARIOS = {
    "5 members, 2 strong + 3 weak": ([STRONG, STRONG, WEAK, WEAK, WEAK], None),
    "5 members, weights 2 2 1 1 1": ([STRONG, STRONG, WEAK, WEAK, WEAK], [2, 2, 1, 1, 1]),
    "3 members, strong + 2 medium": ([STRONG, MEDIUM, MEDIUM], None),
    "3 similar medium members": ([MEDIUM, MEDIUM, MEDIUM], None),
    "2 members, strong + weak": ([STRONG, WEAK], None),
    "2 members, weights 2 1": ([STRONG, WEAK], [2, 1]),
}


def make_truth(n: int, rng) -> dict:
    """A COCO digit dict of ``n`` house numbers (1-4 digits, side by side), sizes vary."""
    images, anns = [], []
    for i in range(1, n + 1):
        h = int(rng.integers(32, 120))
        dw, dh = h * 0.4, h * 0.75
        k = int(rng.integers(1, 5))
        x, y = float(rng.uniform(2, h * 0.3)), h * 0.12
        for _ in range(k):
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": digit_to_category(int(rng.integers(0, 10))),
                         "bbox": [x, y, dw, dh]})
            x += dw * float(rng.uniform(1.05, 1.3))
        images.append({"id": i, "width": int(x + h * 0.3), "height": h})
    return {"images": images, "annotations": anns, "categories": []}


def _box(x, y, w, h, rng, jitter=0.06):
    j = rng.normal(0, jitter, 4) * [w, h, w, h]
    return [x + j[0], y + j[1], x + w + j[2], y + h + j[3]]


def simulate(gt: dict, profile, shared: dict, rng) -> dict:
    """One member's ``dets`` on ``gt``'s images; ``shared`` holds the errors all members share."""
    recall, wrong, phantoms, (plo, phi) = profile
    per_image: dict = {im["id"]: ([], [], []) for im in gt["images"]}
    for a in gt["annotations"]:
        b, l, s = per_image[a["image_id"]]
        x, y, w, h = a["bbox"]
        r = 0.4 if shared["hard"][a["id"]] else recall  # hard digits are missed by everyone
        if rng.random() < r:
            label = a["category_id"] if rng.random() > wrong else int(rng.integers(1, 11))
            b.append(_box(x, y, w, h, rng)); l.append(label); s.append(float(np.clip(rng.normal(0.85, 0.1), 0.5, 1)))
        elif rng.random() < 0.5:  # a miss is often a low-score detection
            b.append(_box(x, y, w, h, rng)); l.append(a["category_id"]); s.append(float(rng.uniform(0.05, 0.45)))
        if rng.random() < 0.3:  # a second, lower guess of another class on the same ink
            b.append(_box(x, y, w, h, rng)); l.append(int(rng.integers(1, 11))); s.append(float(rng.uniform(0.05, 0.4)))
    for im in gt["images"]:
        b, l, s = per_image[im["id"]]
        W, H = im["width"], im["height"]
        spots = [(float(rng.uniform(0, W * 0.8)), rng.integers(1, 11)) for _ in range(rng.poisson(phantoms))]
        if shared["object"].get(im["id"]) is not None and rng.random() < 0.5:  # confusing object, shared
            spots.append(shared["object"][im["id"]])
        for x, label in spots:
            b.append(_box(x, H * 0.12, H * 0.4, H * 0.75, rng)); l.append(int(label)); s.append(float(rng.uniform(plo, phi)))
        for _ in range(rng.poisson(2)):  # low-score clutter
            b.append(_box(float(rng.uniform(0, W * 0.8)), H * 0.1, H * 0.4, H * 0.7, rng))
            l.append(int(rng.integers(1, 11))); s.append(float(rng.uniform(0.05, 0.3)))
    sizes = {im["id"]: [im["width"], im["height"]] * 2 for im in gt["images"]}
    return {i: (np.clip(np.asarray(b, float).reshape(-1, 4), 0, sizes[i]), np.asarray(l, np.int64),
                np.asarray(s, float)) for i, (b, l, s) in per_image.items()}


def run_scenario(profiles, weights, n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    gt = make_truth(n, rng)
    shared = {"hard": {a["id"]: rng.random() < 0.04 for a in gt["annotations"]},
              "object": {im["id"]: (float(rng.uniform(0, im["width"] * 0.8)), int(rng.integers(1, 11)))
                         for im in gt["images"] if rng.random() < 0.05}}
    members = [simulate(gt, p, shared, rng) for p in profiles]
    sizes = {im["id"]: (im["width"], im["height"]) for im in gt["images"]}
    truth = gt_numbers(gt)

    def acc(numbers):
        return sequence_accuracy(numbers, truth)

    row = {"members_acc": [acc(decode_all(m, truth, PLAIN)) for m in members],
           "members_map": [coco_map(gt, detections_to_results(m, 0.0, 100))["map"] for m in members]}
    for conf in ("avg", "max"):
        fused = fuse_detections(members, sizes, weights, "wbf", 0.55, 0.0, conf)
        row[f"wbf_{conf}_plain"] = acc(decode_all(fused, truth, PLAIN))
        if conf == "avg":
            row["wbf_map"] = coco_map(gt, detections_to_results(fused, 0.0, 100))["map"]
            for mode in ("boxes", "vote"):
                row[mode] = acc(fuse_numbers(members, fused, truth, weights, mode, 0.5))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=400)
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    cols = ("best_member", "wbf_avg_plain", "wbf_max_plain", "boxes", "vote")
    print(f"{'scenario':32s} {'mAP best/fused':>15s}  " + "  ".join(f"{c:>13s}" for c in cols))
    for name, (profiles, weights) in SCENARIOS.items():
        rows = [run_scenario(profiles, weights, args.images, seed) for seed in range(args.seeds)]
        mean = {c: np.mean([max(r["members_acc"]) if c == "best_member" else r[c] for r in rows]) for c in cols}
        maps = (np.mean([max(r["members_map"]) for r in rows]), np.mean([r["wbf_map"] for r in rows]))
        print(f"{name:32s} {maps[0]:6.3f}/{maps[1]:6.3f}   " + "  ".join(f"{mean[c]:13.3f}" for c in cols))


if __name__ == "__main__":
    main()
