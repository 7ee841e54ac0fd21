"""Zoom-in reading: which photos are read again, where the crop lies, and boxes mapped back."""
import numpy as np
import pytest
import torch

from digitdet.config import load_config
from digitdet.read.zoom import reading_detector, zoom_detector, zoom_region


def test_region_grows_the_digits_box_by_margin_digit_heights_and_clips_to_the_photo():
    # two 10-px-tall digits in a 200 x 300 photo: 10 < 0.45 x 200, so zoom
    boxes = np.array([[100, 50, 106, 60], [108, 52, 114, 62]], dtype=np.float32)
    region = zoom_region(boxes, np.array([0.9, 0.8]), height=200, width=300, margin=0.75)
    m = 0.75 * 10
    assert region == (int(np.floor(100 - m)), int(np.floor(50 - m)), int(np.ceil(114 + m)), int(np.ceil(62 + m)))
    # near the corner the crop is clipped to the photo
    corner = zoom_region(np.array([[1, 2, 7, 12]]), np.array([0.9]), height=200, width=300, margin=0.75)
    assert corner == (0, 0, int(np.ceil(7 + m)), int(np.ceil(12 + m)))


def test_no_region_when_no_digit_scores_enough_or_the_digits_are_already_large():
    boxes = np.array([[10, 10, 20, 30]], dtype=np.float32)  # 20 px tall
    assert zoom_region(boxes, np.array([0.29]), 100, 100, score=0.3) is None
    assert zoom_region(np.zeros((0, 4)), np.zeros(0), 100, 100) is None
    assert zoom_region(boxes, np.array([0.9]), 40, 100, below=0.45) is None  # 20 >= 0.45 x 40
    assert zoom_region(boxes, np.array([0.9]), 50, 100, below=0.45) is not None  # 20 < 0.45 x 50
    # the median height decides, so one tall false box does not cancel the zoom
    mixed = np.array([[10, 10, 20, 30], [30, 10, 40, 30], [50, 0, 60, 90]], dtype=np.float32)
    assert zoom_region(mixed, np.ones(3), 100, 100) is not None


@pytest.mark.parametrize("bad", [{"below": 0}, {"margin": -1}])
def test_bad_settings_are_refused_before_any_photo_is_read(bad):
    with pytest.raises(ValueError, match="zoom_"):
        zoom_region(np.array([[0, 0, 5, 5]]), np.array([1.0]), 100, 100, **bad)
    with pytest.raises(ValueError, match="zoom_"):
        zoom_detector(lambda images: [], **bad)


def fake_detect(calls):
    """A detector that finds one 10-px digit at (50, 40) in any photo at least 100 px wide and,
    in a narrower image (a crop), one digit 7 at a fixed place in the crop's own pixels."""
    def detect(images):
        calls.append([tuple(im.shape[-2:]) for im in images])
        out = []
        for im in images:
            if im.shape[-1] >= 100:
                out.append((np.array([[50, 40, 56, 50]], np.float32), np.array([3]), np.array([0.9], np.float32)))
            else:
                out.append((np.array([[7, 8, 13, 18]], np.float32), np.array([8]), np.array([0.95], np.float32)))
        return out
    return detect


def test_small_digits_are_read_again_on_the_crop_and_boxes_come_back_in_photo_pixels():
    calls = []
    detect = zoom_detector(fake_detect(calls), score=0.3, below=0.45, margin=0.75)
    small, large = torch.zeros(3, 120, 200), torch.zeros(3, 20, 100)  # 10 px digit: 0.08 / 0.5 of the short side
    (b1, l1, s1), (b2, l2, s2) = detect([small, large])
    x1, y1, x2, y2 = zoom_region(np.array([[50, 40, 56, 50]]), np.array([0.9]), 120, 200)
    assert calls == [[(120, 200), (20, 100)], [(y2 - y1, x2 - x1)]]  # only the small one is read again
    np.testing.assert_allclose(b1, [[7 + x1, 8 + y1, 13 + x1, 18 + y1]])  # pass 2's box, moved back
    assert l1.tolist() == [8] and s1.tolist() == pytest.approx([0.95])
    np.testing.assert_allclose(b2, [[50, 40, 56, 50]])  # pass 1's detections kept
    assert l2.tolist() == [3]


def test_reading_detector_follows_the_config():
    calls = []
    base = fake_detect(calls)
    cfg = load_config("default", ["zoom_read=false"])
    assert reading_detector(None, cfg, torch.device("cpu"), base) is base
    zoomed = reading_detector(None, load_config("default"), torch.device("cpu"), base)
    zoomed([torch.zeros(3, 120, 200)])
    assert len(calls) == 2


def empty_then_found(calls, second_score):
    """Pass 1 finds only a 0.1 digit; the second look finds a 4 scoring ``second_score``."""
    def first(images):
        calls.append(("first", len(images)))
        return [(np.array([[5, 5, 9, 15]], np.float32), np.array([2]), np.array([0.1], np.float32)) for _ in images]

    def again(images):
        calls.append(("again", len(images)))
        return [(np.array([[20, 4, 26, 16]], np.float32), np.array([5]), np.array([second_score], np.float32))
                for _ in images]
    return first, again


def test_a_photo_where_nothing_is_found_gets_a_second_look_and_the_more_confident_one_is_kept():
    calls = []
    first, again = empty_then_found(calls, 0.8)
    detect = zoom_detector(first, score=0.3, empty_detect=again)
    (boxes, labels, scores), = detect([torch.zeros(3, 40, 100)])
    assert calls == [("first", 1), ("again", 1)]
    assert labels.tolist() == [5] and boxes.tolist() == [[20, 4, 26, 16]]
    calls.clear()
    first, again = empty_then_found(calls, 0.05)
    (_, labels, _), = zoom_detector(first, score=0.3, empty_detect=again)([torch.zeros(3, 40, 100)])
    assert labels.tolist() == [2]  # the second look was less sure than pass 1: pass 1 stays
    # a photo where pass 1 found a digit is not looked at again
    calls.clear()
    base = fake_detect(calls)
    zoom_detector(base, score=0.3, empty_detect=lambda images: pytest.fail("second look"))([torch.zeros(3, 20, 100)])


def test_the_second_look_reads_the_whole_photo_at_the_enlarged_scale_and_restores_it():
    from digitdet.config import Config
    from digitdet.models.faster_rcnn import build_model
    from digitdet.read.zoom import enlarged_detector

    model = build_model(Config(fpn_channels=32, representation_size=64, min_size=48, max_size=128)).eval()
    seen = []
    model.transform.register_forward_hook(lambda m, args, out: seen.append(tuple(out[0].image_sizes[0])))
    photo = torch.rand(3, 30, 60, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        enlarged_detector(model, torch.device("cpu"), 2.0)([photo])
        reading_detector(model, load_config("default", ["zoom_read=false"]), torch.device("cpu"))([photo])
    assert seen == [(96, 192), (48, 96)]  # 2 x 48 px while it reads, 48 px after
    assert model.transform.min_size == (48,) and model.transform.max_size == 128


@pytest.mark.parametrize("scale", [0.5, 1.0, -2])
def test_a_second_look_that_would_not_enlarge_is_refused(scale):
    with pytest.raises(ValueError, match="zoom_empty_scale"):
        reading_detector(None, load_config("default", [f"zoom_empty_scale={scale}"]), torch.device("cpu"))


def test_the_second_look_is_skipped_for_a_detector_without_a_transform():
    # an ONNX graph (OnnxDetector) has its input scale frozen: zoom-in reading only
    calls = []

    class Frozen:
        def __call__(self, images):
            calls.append(len(images))
            return [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
                     "scores": torch.zeros(0)} for _ in images]

    detect = reading_detector(Frozen(), load_config("default"), torch.device("cpu"))
    detect([torch.zeros(3, 40, 100)])
    assert calls == [1]


def test_scan_scales_double_from_the_second_look_up_to_zoom_scan():
    from digitdet.read.zoom import scan_factors

    assert scan_factors(2.0, 8.0) == [4.0, 8.0]
    assert scan_factors(2.0, 6.0) == [4.0]
    assert scan_factors(2.0, 0.0) == [] and scan_factors(0.0, 8.0) == []  # off
    with pytest.raises(ValueError, match="zoom_scan"):
        reading_detector(None, load_config("default", ["zoom_scan=-1"]), torch.device("cpu"))


def test_a_large_photo_without_a_sure_digit_is_scanned_and_read_on_a_crop_around_what_the_scan_is_sure_of():
    calls = []

    def first(images):
        """Leaves score 0.6 as a digit anywhere; a crop showing the number (the photo's 1s) reads an 8 at 0.97."""
        calls.append(("first", [tuple(im.shape[-2:]) for im in images]))
        return [(np.array([[20, 10, 30, 30]], np.float32), np.array([8]), np.array([0.97], np.float32))
                if im.shape[-1] < 400 and im.max() == 1 else
                (np.array([[300, 200, 306, 210]], np.float32), np.array([2]), np.array([0.6], np.float32))
                for im in images]

    def scan4(images):  # 4x finds the number, surely, and more leaves
        calls.append(("scan4", [tuple(im.shape[-2:]) for im in images]))
        return [(np.array([[100, 40, 106, 52], [350, 250, 356, 260]], np.float32), np.array([5, 3]),
                 np.array([0.99, 0.5], np.float32)) for _ in images]

    scan = [(4 * 64, scan4), (8 * 64, lambda images: pytest.fail("8x: the 4x look was sure"))]
    detect = zoom_detector(first, score=0.3, empty_detect=lambda images: pytest.fail("second look"), scan=scan,
                           sure=0.9)
    large, small = torch.zeros(3, 300, 400), torch.zeros(3, 250, 400)  # short sides: 300 >= 4 x 64 > 250
    large[:, 40:52, 100:106] = 1
    (boxes, labels, _), (_, small_labels, small_scores) = detect([large, small])
    # the crop around what the scan is sure of (not around the leaves it scores 0.5)
    x1, y1, x2, y2 = zoom_region(np.array([[100, 40, 106, 52]]), np.array([0.99]), 300, 400)
    assert calls[-2:] == [("scan4", [(300, 400)]), ("first", [(y2 - y1, x2 - x1)])]
    np.testing.assert_allclose(boxes, [[20 + x1, 10 + y1, 30 + x1, 30 + y1]])  # the crop's digit, in photo pixels
    assert labels.tolist() == [8]
    assert small_labels.tolist() == [2] and small_scores.tolist() == pytest.approx([0.6])  # too small to scan


def test_a_scan_look_that_is_not_sure_enough_is_not_taken():
    # bricks and leaves at 8x score up to ~0.95 as digits: a photo without a number keeps pass 1
    def first(images):
        return [(np.array([[300, 200, 306, 210]], np.float32), np.array([2]), np.array([0.6], np.float32))
                for _ in images]

    def leaves(images):
        return [(np.array([[10, 10, 16, 20]], np.float32), np.array([7]), np.array([0.95], np.float32))
                for _ in images]

    detect = zoom_detector(first, score=0.3, below=0.01, scan=[(256, leaves), (512, leaves)], sure=0.9,
                           scan_score=0.98)
    (_, labels, scores), = detect([torch.zeros(3, 600, 800)])
    assert labels.tolist() == [2] and scores.tolist() == pytest.approx([0.6])
