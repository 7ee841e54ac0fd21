"""pred.json's box style: real SVHN's loose boxes of one height against the renderer's tight ones."""
import json

import numpy as np
import pytest

from digitdet.boxes import pad_xyxy, same_height_xyxy, xywh_to_xyxy
from digitdet.cli import main
from digitdet.config import Config
from digitdet.io import read_json, read_pred_csv, read_pred_json
from digitdet.labels import coco_categories, digit_to_category
from digitdet.read.submission import write_submission
from digitdet.score.evaluation import score_detections
from digitdet.tune import BOX_PADS, tune_box_style


def test_pad_grows_every_side_by_a_share_of_the_height_and_stops_at_the_corner():
    boxes = np.array([[10.0, 20.0, 22.0, 40.0], [1.0, 0.5, 9.0, 20.5]])
    np.testing.assert_allclose(pad_xyxy(boxes, 0.1), [[8, 18, 24, 42], [0, 0, 11, 22.5]])
    np.testing.assert_array_equal(pad_xyxy(boxes, 0.0), boxes)


def test_one_height_is_the_median_of_the_digits_read_and_spares_other_sizes():
    boxes = np.array([[0, 10, 10, 30], [12, 8, 22, 32], [24, 11, 34, 33], [40, 0, 44, 4], [50, 0, 60, 100.0]])
    scores = np.array([0.9, 0.95, 0.8, 0.3, 0.1])
    out = same_height_xyxy(boxes, scores, 0.5)
    np.testing.assert_allclose(out[:3, 3] - out[:3, 1], 22)  # the median of the three read
    np.testing.assert_allclose((out[:3, 1] + out[:3, 3]) / 2, (boxes[:3, 1] + boxes[:3, 3]) / 2)  # centred
    np.testing.assert_array_equal(out[3:], boxes[3:])  # far from that height: left alone
    np.testing.assert_array_equal(same_height_xyxy(boxes, scores, 0.99), boxes)  # nothing read


def _scene(seed=0, n_images=40, loose=0.07, one_height=False):
    """(tight detections, COCO gt whose boxes are ``loose`` x the height looser a side and, with
    ``one_height``, all of an image's the tallest digit's height, as SVHN's annotators drew them)."""
    rng = np.random.default_rng(seed)
    dets, anns, images = {}, [], []
    for i in range(1, n_images + 1):
        h = rng.uniform(16, 60)
        digits = rng.integers(0, 10, rng.integers(2, 4))
        x, tight = 5.0, []
        for d in digits:
            w, dh = h * rng.uniform(0.35, 0.7), h * rng.uniform(0.85, 1.0)
            tight.append([x, 30.0, x + w, 30.0 + dh])
            x += w + 0.2 * h
        tight = np.array(tight)
        dets[i] = (tight, np.array([digit_to_category(int(d)) for d in digits]), np.full(len(digits), 0.9))
        truth = tight.copy()
        if one_height:
            centre = (truth[:, 1] + truth[:, 3]) / 2
            truth[:, 1], truth[:, 3] = centre - np.median(tight[:, 3] - tight[:, 1]) / 2, centre + np.median(
                tight[:, 3] - tight[:, 1]) / 2
        for box, d in zip(pad_xyxy(truth, loose), digits):
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": digit_to_category(int(d)),
                         "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]], "iscrowd": 0,
                         "area": float((box[2] - box[0]) * (box[3] - box[1]))})
        images.append({"id": i, "file_name": f"{i}.png", "width": 400, "height": 200})
    return dets, {"images": images, "annotations": anns, "categories": coco_categories()}


def test_tuning_finds_the_style_of_the_annotations():
    dets, loose_gt = _scene(loose=0.07)
    style = tune_box_style(dets, loose_gt, Config())
    assert [(p, s) for p, s, _ in style["table"]] == [(p, s) for s in (False, True) for p in BOX_PADS]
    maps = {(p, s): m for p, s, m in style["table"]}
    assert style["box_pad"] in (0.06, 0.08) and not style["box_same_height"]
    assert maps[style["box_pad"], False] > 0.9 and maps[0.0, False] < 0.6  # tight boxes miss IoU >= 0.75
    cfg = Config(pred_box_pad=style["box_pad"])
    assert score_detections(dets, loose_gt, cfg)["map"] == pytest.approx(maps[style["box_pad"], False])
    # tight annotations keep the boxes as found
    _, tight_gt = _scene(loose=0.0)
    assert tune_box_style(dets, tight_gt, Config()) | {"table": None} == {"box_pad": 0.0, "box_same_height": False,
                                                                          "table": None}
    # annotations of one height per photo choose one height
    _, svhn_gt = _scene(loose=0.07, one_height=True)
    style = tune_box_style(dets, svhn_gt, Config())
    maps = {(p, s): m for p, s, m in style["table"]}
    assert style["box_same_height"] and maps[style["box_pad"], True] > maps[style["box_pad"], False] + 0.05


def test_predict_styles_pred_json_only_and_evaluate_pred_does_not_style_twice(tiny_data, tmp_path, capsys):
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
