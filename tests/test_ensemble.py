"""digitdet.ensemble: box fusion with ensemble-boxes, and reading numbers from an ensemble."""
import json

import numpy as np
import pytest

from digitdet.cli import main
from digitdet.decode import detections_to_coco
from digitdet.ensemble import fuse_detections, fuse_numbers, vote_numbers
from digitdet.io import read_pred_csv, read_pred_json
from digitdet.labels import digit_to_category
from digitdet.metrics import gt_numbers

SIZE = (120, 60)  # (width, height) of the image every test detection is on


def _dets(*items):
    """items: (x1, y1, x2, y2, digit, score) -> (boxes xyxy px, category ids, scores)."""
    boxes = np.array([i[:4] for i in items], dtype=float).reshape(-1, 4)
    return boxes, np.array([digit_to_category(i[4]) for i in items], dtype=np.int64), \
        np.array([i[5] for i in items], dtype=float)


NUMBER_17 = _dets((10, 10, 30, 50, 1, 0.9), (35, 10, 55, 50, 7, 0.8))


# nms / soft_nms are left out: ensemble-boxes compiles them with numba on first use (~15 s on CPU).
@pytest.mark.parametrize("method", ["wbf", "nmw"])
def test_fusing_identical_predictions_returns_them(method):
    members = [{1: NUMBER_17}] * 3
    boxes, labels, scores = fuse_detections(members, {1: SIZE}, method=method)[1]
    np.testing.assert_allclose(boxes, NUMBER_17[0], atol=1e-3)
    np.testing.assert_array_equal(labels, NUMBER_17[1])
    if method != "nmw":  # NMW re-weights scores: boxes and labels only
        np.testing.assert_allclose(scores, NUMBER_17[2], atol=1e-5)


def test_an_image_without_detections_fuses_to_nothing():
    empty = _dets()
    fused = fuse_detections([{}, {2: empty}], {1: SIZE, 2: SIZE})
    assert all(len(d[0]) == 0 and d[0].shape == (0, 4) for d in fused.values())


def test_detections_for_an_image_of_unknown_size_are_an_error():
    with pytest.raises(ValueError, match="no image size"):
        fuse_detections([{5: NUMBER_17}], {1: SIZE})
    with pytest.raises(ValueError, match="2 weights for 3"):
        fuse_detections([{1: NUMBER_17}] * 3, {1: SIZE}, weights=[1, 2])


@pytest.mark.parametrize("mode", ["boxes", "vote"])
def test_a_phantom_digit_from_one_weak_member_does_not_change_the_number(mode):
    # Three members read "17"; the weak one also sees a confident "4" on the background.
    weak = _dets((10, 10, 30, 50, 1, 0.9), (35, 10, 55, 50, 7, 0.8), (80, 10, 100, 50, 4, 0.95))
    members = [{1: NUMBER_17}, {1: NUMBER_17}, {1: weak}]
    fused = fuse_detections(members, {1: SIZE}, conf_type="max")  # max: the phantom keeps 0.95
    assert 4 + 1 in fused[1][1][fused[1][2] >= 0.5]  # a plain decode of the fused boxes would read "174"
    assert fuse_numbers(members, fused, [1], mode=mode) == {1: "17"}


def test_a_digit_only_a_minority_found_is_not_read_in_boxes_mode():
    lone = _dets((80, 10, 100, 50, 4, 0.99))
    members = [{1: NUMBER_17}, {1: NUMBER_17}, {1: lone}]
    fused = fuse_detections(members, {1: SIZE})
    assert fuse_numbers(members, fused, [1], mode="boxes") == {1: "17"}
    # ...but with weights making that member the majority, it is.
    fused = fuse_detections(members, {1: SIZE}, weights=[1, 1, 3])
    assert fuse_numbers(members, fused, [1], weights=[1, 1, 3], mode="boxes")[1] == "4"


def test_vote_numbers_weighted_majority_and_ties():
    a, b, c = {1: "17", 2: "5"}, {1: "11", 2: "5"}, {1: "11", 2: "-1"}
    assert vote_numbers([a, b, c]) == {1: "11", 2: "5"}
    assert vote_numbers([a, b, c], weights=[3, 1, 1]) == {1: "17", 2: "5"}  # 3 > 1 + 1
    # 2 vs 1 + 1 is a tie: the tie-break reading decides, else the earliest member's number.
    assert vote_numbers([a, b, c], weights=[2, 1, 1], tie_break={1: "117"})[1] == "117"
    assert vote_numbers([a, b, c], weights=[2, 1, 1])[1] == "17"
    assert vote_numbers([a, {}])[2] == "5"  # a missing image votes "-1"; tie -> first member


def test_cli_ensemble_end_to_end(tiny_data, tmp_path, capsys):
    gt = json.loads((tiny_data / "test_gt.json").read_text())
    truth = [{"image_id": a["image_id"], "bbox": a["bbox"], "score": 0.9, "category_id": a["category_id"]}
             for a in gt["annotations"]]
    phantom = detections_to_coco(1, [[0, 0, 8, 8]], [digit_to_category(3)], [0.99])
    (tmp_path / "a.json").write_text(json.dumps(truth))
    (tmp_path / "b.json").write_text(json.dumps(truth + phantom))
    (tmp_path / "c.json").write_text(json.dumps(truth))
    args = [str(tmp_path / f"{m}.json") for m in "abc"] + [
        "--images", str(tiny_data / "test"), "--out", str(tmp_path / "ens"), "--weights", "2", "1", "1"]
    assert main(["ensemble", *args]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == len(gt["images"])
    numbers = read_pred_csv(tmp_path / "ens" / "pred.csv")
    assert sorted(numbers) == sorted(im["id"] for im in gt["images"])
    assert numbers == gt_numbers(gt)  # the phantom "3" of member b is not read
    assert len(read_pred_json(tmp_path / "ens" / "pred.json")) >= len(truth)
    assert main(["evaluate", "--pred", str(tmp_path / "ens" / "pred.json"), "--data", str(tiny_data),
                 "--split", "test"]) == 0
    assert '"map": 1.0' in capsys.readouterr().out
