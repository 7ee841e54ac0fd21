import numpy as np
import pytest

from digitdet import labels as L
from digitdet.boxes import clip_xyxy, iou_xyxy, xywh_to_xyxy, xyxy_to_xywh


def test_digit_category_round_trip():
    for d in range(10):
        assert L.category_to_digit(L.digit_to_category(d)) == d
    assert L.digit_to_category(0) == 1 and L.digit_to_category(9) == 10
    assert [c["name"] for c in L.coco_categories()] == [str(d) for d in range(10)]


def test_svhn_label_ten_is_zero():
    assert L.svhn_label_to_digit(10) == 0
    assert L.svhn_label_to_digit(3) == 3


@pytest.mark.parametrize("bad", [0, 11, -1])
def test_unknown_category_is_an_error(bad):
    with pytest.raises(ValueError, match="category_id"):
        L.category_to_digit(bad)


def test_box_formats_round_trip():
    rng = np.random.default_rng(0)
    xywh = rng.uniform(0, 50, (20, 4))
    np.testing.assert_allclose(xyxy_to_xywh(xywh_to_xyxy(xywh)), xywh)
    np.testing.assert_allclose(xywh_to_xyxy([[1, 2, 3, 4]]), [[1, 2, 1 + 3, 2 + 4]])


def test_iou_and_clip():
    a = [[0, 0, 10, 10]]
    b = [[5, 0, 15, 10]]
    # overlap 5x10 = 50, union 100 + 100 - 50
    assert iou_xyxy(a, b)[0, 0] == pytest.approx(50 / 150)
    assert iou_xyxy(a, a)[0, 0] == pytest.approx(1.0)
    np.testing.assert_allclose(clip_xyxy([[-3, 2, 12, 30]], 10, 20), [[0, 2, 10, 20]])
