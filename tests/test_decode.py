"""digitdet.read.decode: reading the number (Task 2) and COCO records (Task 1)."""
import numpy as np
import pytest
import torch

from digitdet.labels import digit_to_category
from digitdet.read.decode import (
    decode_all,
    decode_number,
    detections_to_coco,
    group_by_image,
    no_start_ids,
    starts_lines,
    suppress_duplicates,
)
from digitdet.tune import tune_decoder


def _dets(*items):
    """items: (x1, y1, x2, y2, digit, score) -> boxes, labels (category ids), scores."""
    boxes = np.array([i[:4] for i in items], dtype=float).reshape(-1, 4)
    labels = np.array([digit_to_category(i[4]) for i in items], dtype=np.int64)
    scores = np.array([i[5] for i in items], dtype=float)
    return boxes, labels, scores


def test_duplicates_of_different_classes_on_one_digit_give_one_digit():
    # The same "7" detected as 7 (0.9) and as 1 (0.6): per-class NMS would keep both.
    assert decode_number(*_dets((10, 0, 20, 30, 7, 0.9), (11, 1, 21, 30, 1, 0.6))) == "7"


def test_117_is_not_read_as_1117():
    dets = _dets((0, 0, 10, 30, 1, 0.95), (12, 0, 22, 30, 1, 0.93), (24, 0, 36, 30, 7, 0.9),
                 (25, 1, 36, 31, 1, 0.7))  # a "1" duplicate on the 7
    assert decode_number(*dets) == "117"


def test_box_contained_in_a_bigger_box_is_a_duplicate():
    # A small box inside a higher-scoring one: IoU 0.25 < 0.5, but 100% contained.
    dets = _dets((0, 0, 20, 40, 3, 0.9), (5, 10, 15, 30, 8, 0.8))
    assert decode_number(*dets) == "3"
    assert decode_number(*dets, contain_thresh=1.0) == "38"


def test_nothing_found_is_minus_one():
    assert decode_number(np.zeros((0, 4)), np.zeros(0, np.int64), np.zeros(0)) == "-1"
    assert decode_number(*_dets((0, 0, 10, 10, 5, 0.3))) == "-1"  # below the score threshold


def test_leading_zero_is_kept():
    assert decode_number(*_dets((0, 0, 10, 30, 0, 0.9), (12, 0, 22, 30, 7, 0.9))) == "07"


def test_right_to_left_input_is_read_left_to_right():
    dets = _dets((40, 0, 50, 30, 3, 0.9), (20, 0, 30, 30, 2, 0.8), (0, 0, 10, 30, 1, 0.7))
    assert decode_number(*dets) == "123"


def test_overlapping_neighbours_below_iou_threshold_are_both_kept():
    a, b = (0, 0, 12, 30), (8, 0, 20, 30)  # touching digits: IoU = 4*30 / (20*30) = 0.2
    dets = _dets((*a, 4, 0.9), (*b, 2, 0.8))
    assert decode_number(*dets) == "42"
    assert decode_number(*dets, iou_thresh=0.1) == "4"


def test_score_threshold_is_inclusive_and_tunable():
    dets = _dets((0, 0, 10, 30, 1, 0.5), (12, 0, 22, 30, 9, 0.4))
    assert decode_number(*dets) == "1"
    assert decode_number(*dets, score_thresh=0.4) == "19"
    assert decode_number(*dets, score_thresh=0.51) == "-1"


def test_torch_tensors_are_accepted():
    boxes, labels, scores = _dets((12, 0, 22, 30, 2, 0.9), (0, 0, 10, 30, 1, 0.8))
    assert decode_number(torch.tensor(boxes), torch.tensor(labels), torch.tensor(scores)) == "12"


def test_bad_inputs_raise_value_error():
    with pytest.raises(ValueError, match="same length"):
        decode_number(np.zeros((2, 4)), [1], [0.9, 0.9])
    with pytest.raises(ValueError, match="1..10"):
        decode_number(np.array([[0, 0, 1, 1]]), [11], [0.9])


def test_zero_area_box_does_not_suppress_the_others():
    dets = _dets((5, 5, 5, 5, 9, 0.99), (0, 0, 10, 30, 1, 0.9), (12, 0, 22, 30, 2, 0.8))
    assert decode_number(*dets) == "912"


def test_suppress_duplicates_returns_highest_score_first():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [20, 0, 30, 10]], dtype=float)
    assert suppress_duplicates(boxes, np.array([0.2, 0.9, 0.5])).tolist() == [1, 2]


def test_detections_to_coco_sorted_thresholded_xywh():
    boxes, labels, scores = _dets((0, 0, 10, 20, 3, 0.2), (5, 5, 8, 9, 0, 0.9), (1, 1, 2, 2, 9, 0.01))
    recs = detections_to_coco(7, boxes, labels, scores)
    assert recs == [
        {"image_id": 7, "bbox": [5.0, 5.0, 3.0, 4.0], "score": 0.9, "category_id": 1},
        {"image_id": 7, "bbox": [0.0, 0.0, 10.0, 20.0], "score": 0.2, "category_id": 4},
    ]
    assert len(detections_to_coco(7, boxes, labels, scores, max_dets=1)) == 1


def test_group_by_image_inverts_detections_to_coco():
    boxes, labels, scores = _dets((0, 0, 10, 20, 3, 0.8), (5, 5, 8, 9, 0, 0.9))
    recs = detections_to_coco(4, boxes, labels, scores) + detections_to_coco(9, boxes[:1], labels[:1], scores[:1])
    grouped = group_by_image(recs)
    assert sorted(grouped) == [4, 9]
    b, l, s = grouped[4]
    np.testing.assert_allclose(b, boxes[[1, 0]])
    assert l.tolist() == labels[[1, 0]].tolist() and s.tolist() == [0.9, 0.8]


def test_tune_decoder_matches_decode_number_and_picks_plateau_centre():
    rng = np.random.default_rng(0)
    dets, truth = {}, {}
    for i in range(30):
        n = int(rng.integers(0, 6))
        x1 = rng.uniform(0, 80, n)
        boxes = np.stack([x1, np.zeros(n), x1 + rng.uniform(5, 15, n), np.full(n, 30.0)], axis=1)
        dets[i] = (boxes, rng.integers(1, 11, n), rng.uniform(0, 1, n))
        truth[i] = str(i % 7)
    dets.pop(3)  # an image with no detections at all reads "-1"
    for lines in [(0.0,), (0.0, 0.3, 0.6)]:
        out = tune_decoder(dets, truth, line_thresholds=lines)
        for t, acc in out["curve"]:
            expected = np.mean([decode_number(*dets.get(i, (np.zeros((0, 4)), [], [])), score_thresh=t,
                                              line_thresh=out["line_thresh"]) == v for i, v in truth.items()])
            assert acc == pytest.approx(expected)
        assert out["accuracy"] == max(acc for _, acc in out["curve"]) == max(a for _, _, a in out["line_curve"])
        assert out["line_thresh"] in lines


def test_tune_decoder_tie_break_is_centre_of_widest_plateau():
    # One image "1": a 1 at 0.9 and a spurious 8 at 0.3 -> correct for thresholds in (0.3, 0.9].
    dets = {0: _dets((0, 0, 10, 30, 1, 0.9), (20, 0, 30, 30, 8, 0.3))}
    out = tune_decoder(dets, {0: "1"}, thresholds=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95])
    # Best plateau 0.4..0.9 (6 values): centre, lower middle -> 0.6.
    assert out["accuracy"] == 1.0 and out["score_thresh"] == pytest.approx(0.6)


def test_line_reading_adds_a_weak_digit_beside_the_number_and_drops_a_box_off_its_line():
    number = [(0, 10, 10, 40, 4, 0.97), (12, 10, 22, 40, 7, 0.55), (24, 11, 34, 41, 8, 0.96)]
    screw = (60, 50, 66, 56, 0, 0.8)       # confident but small and below the number
    neighbour = (-30, 12, -20, 42, 1, 0.5)  # on the line, but a gap of 2 digit heights away
    dets = _dets(*number, screw, neighbour)
    assert decode_number(*dets, score_thresh=0.5) == "14780"  # plain reading keeps them all
    assert decode_number(*dets, score_thresh=0.9) == "48"
    assert decode_number(*dets, score_thresh=0.9, line_thresh=0.5) == "478"
    # off: 0, or a line threshold not below the score threshold
    assert decode_number(*dets, score_thresh=0.9, line_thresh=0.95) == "48"


def test_line_reading_follows_a_sloped_number_and_starts_from_the_best_box():
    # digits stepping down a slope, each 8 px lower than the last (a quarter of their height)
    stepped = [(i * 12, 8 * i, i * 12 + 10, 8 * i + 32, d, s) for i, (d, s) in enumerate([(1, 0.7), (2, 0.6), (3, 0.65)])]
    assert decode_number(*_dets(*stepped), score_thresh=0.9) == "-1"
    assert decode_number(*_dets(*stepped), score_thresh=0.9, line_thresh=0.5) == "123"
    # a box twice the height is not the same number
    big = _dets(stepped[0], (12, 0, 24, 64, 5, 0.6))
    assert decode_number(*big, score_thresh=0.9, line_thresh=0.5) == "1"


def test_no_line_start_in_photos_too_large_to_be_a_crop_around_a_number():
    stepped = [(i * 12, 8 * i, i * 12 + 10, 8 * i + 32, d, s) for i, (d, s) in enumerate([(1, 0.7), (2, 0.6), (3, 0.65)])]
    assert decode_number(*_dets(*stepped), score_thresh=0.9, line_thresh=0.5, line_start=False) == "-1"
    # a confident digit still starts the line, and its neighbours join it
    sure = _dets((0, 0, 10, 32, 1, 0.95), *stepped[1:])
    assert decode_number(*sure, score_thresh=0.9, line_thresh=0.5, line_start=False) == "123"
    # the rule holds below the side (short side, px; 0 = every photo) and where the size is unknown
    assert starts_lines((1024, 255), 256) and not starts_lines((256, 1024), 256)
    assert starts_lines((4000, 3000), 0) and starts_lines(None, 256)
    assert no_start_ids({1: (80, 40), 2: (1024, 768), 3: (300, 255)}, 256) == {2}
    # decode_all takes the sizes: the same weak boxes read in a crop, not in a phone's photo
    decoder = {"score_thresh": 0.9, "iou_thresh": 0.5, "line_thresh": 0.5, "line_start_side": 256}
    dets = {1: _dets(*stepped), 2: _dets(*stepped)}
    assert decode_all(dets, [1, 2], decoder, {1: (80, 40), 2: (1024, 768)}) == {1: "123", 2: "-1"}
    assert decode_all(dets, [1, 2], decoder) == {1: "123", 2: "123"}  # sizes unknown: the rule everywhere
    # tune_decoder reads as decode_all does
    out = tune_decoder(dets, {1: "123", 2: "-1"}, thresholds=[0.9], line_thresholds=(0.0, 0.5), no_start={2})
    assert out["accuracy"] == 1.0 and out["line_thresh"] == 0.5


def test_tune_decoder_picks_line_reading_only_when_it_reads_more():
    # image 0: "478" with a weak 7; image 1: "5" with a confident phantom off the line
    dets = {0: _dets((0, 10, 10, 40, 4, 0.97), (12, 10, 22, 40, 7, 0.55), (24, 11, 34, 41, 8, 0.96)),
            1: _dets((0, 0, 10, 30, 5, 0.97), (40, 40, 44, 44, 1, 0.8))}
    truth = {0: "478", 1: "5"}
    assert tune_decoder(dets, truth, line_thresholds=(0.0,))["accuracy"] == 0.5
    out = tune_decoder(dets, truth)
    assert out["accuracy"] == 1.0 and 0 < out["line_thresh"] <= 0.5 < 0.8 < out["score_thresh"]
    # where plain reading is as good, it stays off
    easy = {0: _dets((0, 0, 10, 30, 5, 0.97))}
    assert tune_decoder(easy, {0: "5"})["line_thresh"] == 0.0
