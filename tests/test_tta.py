"""digitdet.read.tta: test-time augmentation maps every view back to original pixels and fuses them."""
import numpy as np
import pytest
import torch

from digitdet.config import Config
from digitdet.data.coco import ImageFolderDataset
from digitdet.data.loaders import inference_loader
from digitdet.data.transforms import build_transforms
from digitdet.models.faster_rcnn import build_model
from digitdet.read.detect import predict_batches
from digitdet.read.tta import tta_detector
from digitdet.read.views import View, _crop_offset

TINY = dict(fpn_channels=32, representation_size=64, min_size=48, max_size=128, box_score_thresh=0.0,
            rpn_post_nms_top_n_test=30, box_detections_per_img=20)


@pytest.fixture(scope="module")
def model_and_loader(tiny_data):
    torch.manual_seed(0)
    model = build_model(Config(**TINY)).eval()
    ds = ImageFolderDataset(tiny_data / "test", build_transforms("none", train=False))
    ds.items = ds.items[:3]  # two batches (of 2 and 1) are enough, and CPU time is shared
    return model, inference_loader(ds, None, batch_size=2, workers=0)


def predict_batches_tta(model, loader, device, views, progress=False):
    return predict_batches(model, loader, device, progress=progress, detect=tta_detector(model, device, views))


def test_identity_view_equals_plain_prediction(model_and_loader):
    model, loader = model_and_loader
    plain = predict_batches(model, loader, torch.device("cpu"), progress=False)["detections"]
    tta = predict_batches_tta(model, loader, torch.device("cpu"), views=(View(),), progress=False)["detections"]
    assert sorted(plain) == sorted(tta)
    assert sum(len(d[0]) for d in plain.values()) > 0  # random weights with score 0.0 do detect things
    for image_id, (boxes, labels, scores) in plain.items():
        order = np.argsort(-scores, kind="stable")
        t_boxes, t_labels, t_scores = tta[image_id]
        np.testing.assert_allclose(t_scores, scores[order], atol=1e-6)
        np.testing.assert_array_equal(t_labels, labels[order])
        np.testing.assert_allclose(t_boxes, boxes[order], atol=1e-3)


def test_views_are_fused_in_original_pixels_and_the_model_is_restored(model_and_loader):
    model, loader = model_and_loader
    views = (View(1.25), View(1.0, (4, 4)))
    out = predict_batches_tta(model, loader, torch.device("cpu"), views=views, progress=False)
    assert model.transform.min_size == (TINY["min_size"],) and model.transform.max_size == TINY["max_size"]
    images = {t["image_id"]: im for ims, ts in loader for im, t in zip(ims, ts)}
    for image_id, (boxes, labels, scores) in out["detections"].items():
        h, w = images[image_id].shape[-2:]
        assert np.all(boxes >= -1e-6) and np.all(boxes[:, [0, 2]] <= w + 1e-3) and np.all(boxes[:, [1, 3]] <= h + 1e-3)
        assert np.all((scores >= 0) & (scores <= 1)) and np.all((labels >= 1) & (labels <= 10))


def test_shift_is_given_in_model_pixels():
    # A 40x100 image at min_size 80 is doubled: a 4-pixel model shift is 2 original pixels.
    assert _crop_offset(40, 100, View(1.0, (4, 4)), 80, 1000) == (2, 2)
    assert _crop_offset(40, 100, View(1.0, (0, 0)), 80, 1000) == (0, 0)
    assert _crop_offset(8, 8, View(1.0, (400, 400)), 8, 8) == (2, 2)  # never more than a quarter


def test_tta_scales_are_parsed_and_bad_ones_are_named():
    from digitdet.read.tta import views_from_scales

    assert views_from_scales("0.875, 1") == (View(0.875), View(1.0))
    with pytest.raises(ValueError, match="'x' is not a number"):
        views_from_scales("1,x")
    with pytest.raises(ValueError, match="outside 0.25-4"):
        views_from_scales("0")


def test_predict_and_evaluate_read_at_the_scales_asked(tiny_data, tmp_path, capsys):
    # one view at the input scale reads what plain reading reads; another scale reads otherwise
    # or the same, but through the TTA path (its pred.json's boxes are fused, so they differ)
    from digitdet.cli import main
    from digitdet.io import read_json

    args = ["--images", str(tiny_data / "test"), "--quiet", "--workers", "0", "--threads", "1"]
    assert main(["predict", *args, "--out", str(tmp_path / "plain")]) == 0
    assert main(["predict", *args, "--out", str(tmp_path / "one"), "--tta-scales", "1"]) == 0
    assert main(["predict", *args, "--out", str(tmp_path / "two"), "--tta-scales", "0.75,1.25"]) == 0
    plain, one, two = (read_json(tmp_path / d / "pred.json") for d in ("plain", "one", "two"))
    assert (tmp_path / "one" / "pred.csv").read_text() == (tmp_path / "plain" / "pred.csv").read_text()
    assert len(one) == len(plain) > 0 and two != plain
    capsys.readouterr()
    assert main(["evaluate", "--data", str(tiny_data), "--split", "valid", "--quiet", "--workers", "0",
                 "--threads", "1", "--tta-scales", "1,y"]) == 2
    assert "'y' is not a number" in capsys.readouterr().err
