"""pred.json's box pad: real SVHN's loose boxes against the renderer's tight ones."""
import json

import numpy as np
import pytest

from digitdet.boxes import pad_xyxy, xywh_to_xyxy
from digitdet.cli import main
from digitdet.config import Config
from digitdet.evaluation import BOX_PADS, score_detections, tune_box_pad
from digitdet.inference import write_submission
from digitdet.io import read_json, read_pred_csv, read_pred_json
from digitdet.labels import coco_categories, digit_to_category


def test_pad_grows_every_side_by_a_share_of_the_height_and_stops_at_the_corner():
    boxes = np.array([[10.0, 20.0, 22.0, 40.0], [1.0, 0.5, 9.0, 20.5]])
    np.testing.assert_allclose(pad_xyxy(boxes, 0.1), [[8, 18, 24, 42], [0, 0, 11, 22.5]])
    np.testing.assert_array_equal(pad_xyxy(boxes, 0.0), boxes)


def _scene(seed=0, n_images=40, loose=0.07):
    """(tight detections, COCO gt whose boxes are ``loose`` x the height looser a side)."""
    rng = np.random.default_rng(seed)
    dets, anns, images = {}, [], []
    for i in range(1, n_images + 1):
        h = rng.uniform(16, 60)
        digits = rng.integers(0, 10, rng.integers(1, 4))
        x, tight = 5.0, []
        for d in digits:
            w = h * rng.uniform(0.35, 0.7)
            tight.append([x, 30.0, x + w, 30.0 + h])
            x += w + 0.2 * h
        tight = np.array(tight)
        dets[i] = (tight, np.array([digit_to_category(int(d)) for d in digits]), np.full(len(digits), 0.9))
        for box, d in zip(pad_xyxy(tight, loose), digits):
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": digit_to_category(int(d)),
                         "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]], "iscrowd": 0,
                         "area": float((box[2] - box[0]) * (box[3] - box[1]))})
        images.append({"id": i, "file_name": f"{i}.png", "width": 400, "height": 200})
    return dets, {"images": images, "annotations": anns, "categories": coco_categories()}


def test_tuning_finds_the_looseness_of_the_annotations():
    dets, loose_gt = _scene(loose=0.07)
    pad, table = tune_box_pad(dets, loose_gt, Config())
    assert [p for p, _ in table] == list(BOX_PADS)
    maps = dict(table)
    assert pad in (0.06, 0.08) and maps[pad] > 0.9 and maps[0.0] < 0.6  # tight boxes miss IoU >= 0.75
    cfg = Config(pred_box_pad=pad)
    assert score_detections(dets, loose_gt, cfg)["map"] == pytest.approx(maps[pad])
    # tight annotations keep the boxes tight
    _, tight_gt = _scene(loose=0.0)
    assert tune_box_pad(dets, tight_gt, Config())[0] == 0.0


def test_predict_pads_pred_json_only_and_evaluate_pred_does_not_pad_twice(tiny_data, tmp_path, capsys):
    gt = read_json(tiny_data / "valid.json", "gt")
    dets = {}
    for img in gt["images"]:
        anns = [a for a in gt["annotations"] if a["image_id"] == img["id"]]
        dets[img["id"]] = (xywh_to_xyxy([a["bbox"] for a in anns]), np.array([a["category_id"] for a in anns]),
                           np.full(len(anns), 0.9))
    ids = [img["id"] for img in gt["images"]]
    tight, padded = tmp_path / "tight", tmp_path / "padded"
    write_submission(tight, dets, ids, Config())
    write_submission(padded, dets, ids, Config(pred_box_pad=0.1))
    assert read_pred_csv(tight / "pred.csv") == read_pred_csv(padded / "pred.csv")  # numbers: unpadded boxes
    assert json.loads((padded / "pred_config.json").read_text())["pred_box_pad"] == 0.1
    for a, b in zip(read_pred_json(tight / "pred.json"), read_pred_json(padded / "pred.json")):
        h = a["bbox"][3]
        assert b["bbox"][3] == pytest.approx(1.2 * h) and b["bbox"][2] == pytest.approx(a["bbox"][2] + 0.2 * h)

    def score(pred, *overrides):
        assert main(["evaluate", "--pred", str(pred / "pred.json"), "--data", str(tiny_data), "--quiet",
                     *overrides]) == 0
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])["map"]

    assert score(tight) == pytest.approx(1.0)
    assert score(padded) < 0.9  # scored as written: pred_config.json's pad is not added again
    assert score(tight, "pred_box_pad=0.1") == pytest.approx(score(padded))  # unless asked for
