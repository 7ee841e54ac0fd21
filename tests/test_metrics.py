"""digitdet.score.metrics: COCO mAP (checked against pycocotools), number truth, accuracy, errors."""
import contextlib
import copy
import io as stdio

import numpy as np
import pytest

from digitdet.labels import coco_categories, digit_to_category
from digitdet.score.metrics import ERROR_KINDS, coco_map, digit_misreads, gt_numbers, number_errors, sequence_accuracy, summarize


def _gt(images: dict[int, list[tuple]]) -> dict:
    """images: {image_id: [(x, y, w, h, digit), ...]} -> COCO dataset dict."""
    anns, n = [], 0
    for image_id, boxes in images.items():
        for x, y, w, h, d in boxes:
            n += 1
            anns.append({"id": n, "image_id": image_id, "bbox": [x, y, w, h], "category_id": digit_to_category(d)})
    return {"images": [{"id": i, "width": 400, "height": 400} for i in images],
            "annotations": anns, "categories": coco_categories()}


def _perfect(gt: dict) -> list[dict]:
    return [{"image_id": a["image_id"], "bbox": a["bbox"], "score": 1.0, "category_id": a["category_id"]}
            for a in gt["annotations"]]


def _all_sizes_all_digits() -> dict:
    # Every digit, and small (< 32^2), medium and large (> 96^2) boxes, so nothing is undefined.
    return _gt({1: [(10 + 20 * d, 10, 10, 20, d) for d in range(10)],
                2: [(10, 10, 40, 60, 3), (60, 10, 40, 60, 0)],
                3: [(0, 0, 120, 200, 9)],
                4: []})


def test_perfect_predictions_score_one():
    gt = _all_sizes_all_digits()
    m = coco_map(gt, _perfect(gt))
    for key in ("map", "ap50", "ap75", "aps", "apm", "apl"):
        assert m[key] == pytest.approx(1.0), key
    assert m["ap_per_digit"] == {str(d): pytest.approx(1.0) for d in range(10)}
    truth = gt_numbers(gt)
    assert sequence_accuracy(dict(truth), truth) == 1.0


def test_empty_results_score_zero():
    gt = _all_sizes_all_digits()
    m = coco_map(gt, [])
    assert {k: m[k] for k in ("map", "ap50", "ap75", "aps", "apm", "apl")} == dict.fromkeys(
        ("map", "ap50", "ap75", "aps", "apm", "apl"), 0.0)
    assert set(m["ap_per_digit"].values()) == {0.0}


def test_results_for_images_outside_gt_are_ignored():
    gt = _all_sizes_all_digits()
    extra = [{"image_id": 999, "bbox": [0, 0, 5, 5], "score": 0.99, "category_id": 1}]
    assert coco_map(gt, _perfect(gt) + extra)["map"] == pytest.approx(1.0)


def test_undefined_values_are_minus_one_like_pycocotools():
    gt = _gt({1: [(0, 0, 10, 20, 5)]})  # only a small "5"
    m = coco_map(gt, _perfect(gt))
    assert m["apm"] == m["apl"] == -1.0 and m["ap_per_digit"]["0"] == -1.0 and m["ap_per_digit"]["5"] == 1.0


def _random_case(seed: int) -> tuple[dict, list[dict]]:
    """GT with digits of all sizes; results = jittered GT (some relabelled) + false positives."""
    rng = np.random.default_rng(seed)
    images = {}
    for image_id in range(1, 9):
        boxes = []
        for _ in range(rng.integers(0, 6)):
            w, h = rng.uniform(6, 150, 2)
            boxes.append((*rng.uniform(0, 200, 2), w, h, int(rng.integers(0, 10))))
        images[image_id] = boxes
    gt = _gt(images)
    results = []
    for a in gt["annotations"]:
        x, y, w, h = a["bbox"]
        for _ in range(rng.integers(0, 3)):
            j = rng.normal(0, 0.1, 4) * [w, h, w, h]
            cat = a["category_id"] if rng.random() < 0.8 else int(rng.integers(1, 11))
            results.append({"image_id": a["image_id"], "bbox": [x + j[0], y + j[1], abs(w + j[2]), abs(h + j[3])],
                            "score": float(rng.random()), "category_id": cat})
    for _ in range(15):
        results.append({"image_id": int(rng.integers(1, 9)), "bbox": [*rng.uniform(0, 200, 2), *rng.uniform(5, 100, 2)],
                        "score": float(rng.random()), "category_id": int(rng.integers(1, 11))})
    return gt, results


def _pycocotools_map(gt: dict, results: list[dict]) -> tuple[np.ndarray, dict]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = copy.deepcopy(gt)
    for a in gt["annotations"]:
        a.setdefault("area", a["bbox"][2] * a["bbox"][3])
        a.setdefault("iscrowd", 0)
    with contextlib.redirect_stdout(stdio.StringIO()):  # pycocotools prints
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(results)), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    per = {}
    for k, c in enumerate(ev.params.catIds):
        p = ev.eval["precision"][:, :, k, 0, -1]
        per[str(c - 1)] = float(p[p > -1].mean()) if (p > -1).any() else -1.0
    return ev.stats[:6], per


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_faster_coco_eval_equals_pycocotools(seed):
    gt, results = _random_case(seed)
    ours = coco_map(gt, results)
    stats, per_digit = _pycocotools_map(gt, results)
    assert [ours[k] for k in ("map", "ap50", "ap75", "aps", "apm", "apl")] == pytest.approx(list(stats), abs=1e-9)
    assert ours["ap_per_digit"] == pytest.approx(per_digit, abs=1e-9)
    assert 0.0 < ours["map"] < 1.0  # a non-trivial case


def test_gt_numbers_orders_by_box_centre_x():
    # Given right to left; a wide "4" starting left of the "1" but centred right of it.
    gt = _gt({5: [(50, 0, 10, 20, 3), (0, 0, 10, 20, 0), (20, 0, 10, 20, 7)],
              6: [(0, 0, 60, 20, 4), (10, 0, 10, 20, 1)],
              7: []})
    assert gt_numbers(gt) == {5: "073", 6: "14", 7: "-1"}


def test_sequence_accuracy_missing_counts_wrong_and_strings_compare_exactly():
    truth = {1: "07", 2: "117", 3: "-1", 4: "5"}
    pred = {1: "7", 2: "117", 3: "-1", 99: "5"}
    assert sequence_accuracy(pred, truth) == 2 / 4
    with pytest.raises(ValueError, match="empty"):
        sequence_accuracy(pred, {})


def test_number_errors_categories():
    truth = {1: "117", 2: "117", 3: "117", 4: "17", 5: "17", 6: "17", 7: "117", 8: "17", 9: "-1", 10: "5"}
    pred = {1: "117", 2: "17", 3: "1117", 4: "71", 5: "18", 6: "-1", 7: "28", 9: "3"}  # 8, 10 missing
    errors = number_errors(pred, truth)
    assert list(errors) == list(ERROR_KINDS)
    assert errors == {"correct": 1, "missed_digit": 1, "extra_digit": 2, "wrong_order": 1,
                      "wrong_digit": 1, "nothing_found": 3, "other": 1}
    assert errors["correct"] / len(truth) == sequence_accuracy(pred, truth)


def test_digit_misreads_count_same_length_wrong_digits_only():
    truth = {1: "17", 2: "71", 3: "117", 4: "17", 5: "51", 6: "17"}
    pred = {1: "14", 2: "21", 3: "17", 4: "71", 5: "-1", 6: "44"}  # 3 missed, 4 reordered, 5 nothing
    assert digit_misreads(pred, truth) == {("7", "4"): 2, ("7", "2"): 1, ("1", "4"): 1}


def test_summarize_mentions_every_part():
    gt = _all_sizes_all_digits()
    m = coco_map(gt, _perfect(gt))
    m.update(accuracy=0.75, score_thresh=0.5, errors={"correct": 3, "nothing_found": 1})
    text = summarize(m)
    for part in ("mAP", "AP50", "AP75", "small", "per digit", "accuracy 0.7500", "nothing_found 1"):
        assert part in text
    with pytest.raises(ValueError, match="no known metric"):
        summarize({"loss": 1.0})
