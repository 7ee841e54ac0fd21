"""Dataset statistics and anchor suggestions on a hand-made COCO dict."""
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from digitdet.labels import coco_categories, digit_to_category
from digitdet.viz.stats import anchor_shapes, box_stats, plot_stats, resize_scales, suggest_anchors


def _coco():
    """Image 1: 100x50 with two digits (w x h 10x20, 10x30); image 2: 200x200 with one
    digit 20x40; image 3: no digit."""
    images = [{"id": 1, "file_name": "1.png", "width": 100, "height": 50},
              {"id": 2, "file_name": "2.png", "width": 200, "height": 200},
              {"id": 3, "file_name": "3.png", "width": 64, "height": 32}]
    boxes = [(1, 3, [5, 5, 10, 20]), (1, 7, [20, 5, 10, 30]), (2, 0, [50, 50, 20, 40])]
    anns = [{"id": i, "image_id": im, "category_id": digit_to_category(d), "bbox": b, "area": b[2] * b[3],
             "iscrowd": 0} for i, (im, d, b) in enumerate(boxes, 1)]
    return {"images": images, "annotations": anns, "categories": coco_categories()}


def test_box_stats():
    st = box_stats(_coco())
    assert st["n_images"] == 3 and st["n_boxes"] == 3
    assert st["digits_per_image"] == {0: 1, 1: 1, 2: 1}
    assert st["digit_counts"][3] == st["digit_counts"][7] == st["digit_counts"][0] == 1
    # heights 20, 30, 40; numpy's linear percentile: p10 = 20 + 0.10 * (3 - 1) * (30 - 20)
    assert st["box_height"]["p50"] == 30
    assert st["box_height"]["p10"] == pytest.approx(20 + 0.10 * (3 - 1) * (30 - 20))
    assert st["hw_ratio"]["p50"] == 20 / 10  # ratios 2, 3, 2: height / width
    assert st["image_sizes"] == {"100x50": 1, "200x200": 1, "64x32": 1}


def test_resize_scales_match_torchvision():
    scales = resize_scales(_coco(), min_size=96, max_size=320)
    # short side to 96 unless the long side would pass 320
    assert scales.tolist() == pytest.approx([min(96 / 50, 320 / 100), min(96 / 200, 320 / 200),
                                             min(96 / 32, 320 / 64)])
    t = GeneralizedRCNNTransform(96, 320, [0, 0, 0], [1, 1, 1]).eval()
    target = {"boxes": torch.tensor([[5.0, 5.0, 15.0, 25.0]]), "labels": torch.tensor([4])}
    _, out = t([torch.zeros(3, 50, 100)], [target])
    height = float(out[0]["boxes"][0, 3] - out[0]["boxes"][0, 1])
    assert height == pytest.approx(20 * scales[0], rel=0.01)


def test_anchor_shapes_match_torchvision():
    ours = anchor_shapes([[32]], [2.0])[0]
    base = AnchorGenerator(((32,),), ((2.0,),)).generate_anchors([32], [2.0])[0]
    # torchvision rounds each corner to whole pixels, so sides agree within 1 px
    assert ours.tolist() == pytest.approx([float(base[2] - base[0]), float(base[3] - base[1])], abs=1)
    assert ours[1] / ours[0] == pytest.approx(2.0)  # ratio = height / width


def test_suggest_anchors_one_cluster():
    sug = suggest_anchors(_coco(), min_size=96, max_size=320, n_levels=1, k=1, n_ratios=1)
    # One centre = the mean of the log values: sizes sqrt(w*h) at model scale, ratios h/w.
    s1, s2 = min(96 / 50, 320 / 100), min(96 / 200, 320 / 200)
    sizes = [math.sqrt(10 * 20) * s1, math.sqrt(10 * 30) * s1, math.sqrt(20 * 40) * s2]
    assert sug["anchor_sizes"] == [[round(math.exp(np.mean(np.log(sizes))))]]
    assert sug["aspect_ratios"] == [round((2 * 3 * 2) ** (1 / 3), 2)]
    assert sug["aspect_ratios"][0] > 1  # tall digits: h/w > 1 in torchvision's convention


def test_suggest_anchors_levels_sorted():
    sug = suggest_anchors(_coco(), 96, 320, n_levels=3, k=1, n_ratios=2)
    flat = [s for level in sug["anchor_sizes"] for s in level]
    assert len(sug["anchor_sizes"]) == 3 and flat == sorted(flat)
    assert all(r > 1 for r in sug["aspect_ratios"]) and sug["fit"]["iou>=0.5"] == 1.0
    with pytest.raises(ValueError, match="too few"):
        suggest_anchors(_coco(), 96, 320, n_levels=3, k=2)


def test_plot_stats(tmp_path):
    plot_stats(box_stats(_coco()), tmp_path / "stats.png")
    with Image.open(tmp_path / "stats.png") as im:
        assert im.format == "PNG" and im.width > 100
