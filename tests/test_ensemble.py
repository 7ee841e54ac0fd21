"""digitdet.read.ensemble: box fusion with ensemble-boxes, and reading numbers from an ensemble."""
import json

import numpy as np
import pytest

from digitdet.cli import main
from digitdet.io import read_pred_csv, read_pred_json
from digitdet.labels import digit_to_category
from digitdet.read.decode import detections_to_coco
from digitdet.read.ensemble import fuse_numbers, vote_numbers
from digitdet.read.fusion import fuse_detections
from digitdet.score.metrics import gt_numbers

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


def test_vote_reads_each_member_with_its_own_decoder():
    # a confident "1", a weak "7" beside it, a confident small "4" off the line (a screw, say)
    dets = _dets((10, 10, 30, 50, 1, 0.95), (35, 10, 55, 50, 7, 0.6), (90, 50, 96, 56, 4, 0.8))
    members = [{1: dets}]
    fused = fuse_detections(members, {1: SIZE})
    assert fuse_numbers(members, fused, [1]) == {1: "174"}  # plainly at 0.5
    line = {"score_thresh": 0.9, "iou_thresh": 0.5, "line_thresh": 0.5}
    assert fuse_numbers(members, fused, [1], member_decoders=[line]) == {1: "17"}
    with pytest.raises(ValueError, match="2 member decoders for 1 members"):
        fuse_numbers(members, fused, [1], member_decoders=[line, None])


def test_cli_ensemble_takes_each_members_decoder_from_its_pred_config(tiny_data, tmp_path, capsys):
    from digitdet.config import Config
    from digitdet.io import write_json
    first = min(int(p.stem) for p in (tiny_data / "test").glob("*.png"))
    dets = _dets((2, 2, 6, 12, 1, 0.95), (7, 2, 11, 12, 7, 0.6), (20, 14, 21, 15, 4, 0.8))
    records = detections_to_coco(first, *dets)
    for m in "ab":
        (tmp_path / m).mkdir()
        (tmp_path / m / "pred.json").write_text(json.dumps(records))
    write_json(tmp_path / "a" / "pred_config.json",
               Config(decode_score_thresh=0.9, decode_line_thresh=0.5).to_dict())
    args = [str(tmp_path / "a" / "pred.json"), str(tmp_path / "b" / "pred.json"), "--images", str(tiny_data / "test"),
            "--weights", "2", "1"]
    assert main(["ensemble", *args, "--out", str(tmp_path / "e1")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["member_decoders"][0]["line_thresh"] == 0.5 and summary["member_decoders"][1] is None
    assert read_pred_csv(tmp_path / "e1" / "pred.csv")[first] == "17"  # member a, weight 2, reads on the line
    assert main(["ensemble", *args, "--decode-thresh", "0.5", "--out", str(tmp_path / "e2")]) == 0
    assert read_pred_csv(tmp_path / "e2" / "pred.csv")[first] == "174"  # everyone plainly at 0.5
