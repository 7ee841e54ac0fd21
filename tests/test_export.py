"""ONNX export: the exported graph gives the PyTorch model's detections; export + predict CLI."""
import json

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from digitdet.cli import main  # noqa: E402
from digitdet.config import load_config  # noqa: E402
from digitdet.io import read_pred_csv, read_pred_json, save_checkpoint  # noqa: E402
from digitdet.models.faster_rcnn import build_model  # noqa: E402
from digitdet.read.detector import load_detector  # noqa: E402
from digitdet.read.onnx import METADATA_CONFIG, load_onnx_detector  # noqa: E402

# Small input and few proposals keep export and inference quick; a score threshold of 0 makes
# a random-weight model return detections (box_detections_per_img of them) to compare.
TINY = ["min_size=64", "max_size=160", "fpn_channels=32", "representation_size=64",
        "rpn_pre_nms_top_n_test=100", "rpn_post_nms_top_n_test=20", "box_score_thresh=0.0",
        "box_detections_per_img=10"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(checkpoint path, onnx path) of a random-weight model, exported through the CLI."""
    root = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    cfg = load_config("cpu_fast", TINY)
    ckpt = root / "tiny.pt"
    save_checkpoint(ckpt, {"model": build_model(cfg).state_dict(), "config": cfg.to_dict(),
                           "decoder": {"score_thresh": 0.3, "iou_thresh": 0.5}})
    onnx_path = root / "tiny.onnx"
    assert main(["export", "--weights", str(ckpt), "--out", str(onnx_path)]) == 0
    return ckpt, onnx_path


def test_onnx_matches_pytorch_on_images_of_different_shapes(exported):
    ckpt, onnx_path = exported
    model, _, _ = load_detector(ckpt, torch.device("cpu"))
    detector, _, _ = load_onnx_detector(onnx_path, threads=2)
    # typical, wide (max_size caps the scale) and small photos: the resize is traced, not fixed.
    # A typical photo first: torchvision's RoI pooler infers its strides from the first call.
    # 98 x 150 and 60 x 303 are shrunk (like most real photos) by factors whose product with the
    # side lands a hair under an integer in double precision (see models/transform.py).
    g = torch.Generator().manual_seed(1)
    shapes = ((48, 120), (30, 240), (40, 64), (98, 150), (60, 303))
    images = [torch.rand((3, h, w), generator=g) for h, w in shapes]
    with torch.inference_mode():
        # One image per call on both sides: in a batch torchvision pads images to a common
        # size, which changes the features near the borders (batched != unbatched).
        expected = [model([im])[0] for im in images]
    for got, want in zip(detector(images), expected):
        assert len(want["boxes"]) > 0
        assert got["boxes"].shape == want["boxes"].shape
        np.testing.assert_allclose(got["scores"].numpy(), want["scores"].numpy(), atol=1e-4)
        np.testing.assert_allclose(got["boxes"].numpy(), want["boxes"].numpy(), atol=1e-2)
        assert torch.equal(got["labels"], want["labels"])


def test_onnx_metadata_carries_config_and_decoder(exported):
    ckpt, onnx_path = exported
    _, cfg, decoder = load_onnx_detector(onnx_path)
    torch_cfg = load_detector(ckpt, torch.device("cpu"))[1]
    assert cfg == torch_cfg
    assert decoder == {"score_thresh": 0.3, "iou_thresh": 0.5}
    assert cfg.decode_score_thresh == 0.3
    meta = ort.InferenceSession(str(onnx_path)).get_modelmeta().custom_metadata_map
    assert json.loads(meta[METADATA_CONFIG])["min_size"] == 64


def test_settings_baked_into_the_graph_cannot_be_overridden(exported):
    _, onnx_path = exported
    load_onnx_detector(onnx_path, overrides=["pred_score_thresh=0.2"])  # post-processing: allowed
    with pytest.raises(ValueError, match="re-export"):
        load_onnx_detector(onnx_path, overrides=["min_size=128"])


def test_predict_with_onnxruntime_writes_the_same_files_as_torch(exported, tiny_data, tmp_path):
    ckpt, onnx_path = exported
    images = str(tiny_data / "test")
    common = ["--images", images, "--quiet", "--workers", "0", "--threads", "2"]
    assert main(["predict", "--weights", str(onnx_path), "--out", str(tmp_path / "ort"), *common]) == 0
    # --batch-size 1 like the ONNX graph: in a batch torchvision pads, which shifts scores slightly;
    # no second look at photos where nothing was found: the graph's input scale is frozen
    assert main(["predict", "--weights", str(ckpt), "--backend", "torch", "--batch-size", "1",
                 "--out", str(tmp_path / "pt"), *common, "zoom_empty_scale=0"]) == 0
    ort_json, pt_json = read_pred_json(tmp_path / "ort" / "pred.json"), read_pred_json(tmp_path / "pt" / "pred.json")
    assert len(ort_json) == len(pt_json) > 0
    key = lambda r: (r["image_id"], -r["score"])  # noqa: E731
    for a, b in zip(sorted(ort_json, key=key), sorted(pt_json, key=key)):
        assert a["image_id"] == b["image_id"]
        assert a["score"] == pytest.approx(b["score"], abs=1e-3)
    ort_csv = read_pred_csv(tmp_path / "ort" / "pred.csv")
    assert sorted(ort_csv) == list(range(1, 7))  # every test image, one row each
    assert ort_csv == read_pred_csv(tmp_path / "pt" / "pred.csv")


def _exported(tmp_path, settings: list[str], prepare=None):
    """(random-weight model, its ONNX detector, one test image) for TINY + ``settings``;
    ``prepare(model)`` runs on the weights (without gradients) before the export."""
    from digitdet.read.onnx import export_onnx

    torch.manual_seed(0)
    cfg = load_config("cpu_fast", TINY + settings)
    model = build_model(cfg).eval()
    if prepare is not None:
        with torch.no_grad():
            prepare(model)
    detector, _, _ = load_onnx_detector(export_onnx(model, cfg, {}, tmp_path / "model.onnx"), threads=2)
    return model, detector, [torch.rand((3, 48, 120), generator=torch.Generator().manual_seed(2))]


def test_the_letter_class_is_dropped_in_the_exported_graph_too(tmp_path):
    from digitdet import labels as L

    def more_letters(model):  # letters among the detections
        model.roi_heads.box_predictor.cls_score.bias[L.LETTER] += 1.0

    model, detector, images = _exported(tmp_path, ["letter_class=true"], more_letters)
    with torch.inference_mode():
        want = model(images)[0]
        model.roi_heads.drop_label = None
        raw = model(images)[0]
    assert (raw["labels"] == L.LETTER).any() and len(want["labels"]) < len(raw["labels"])
    got = detector(images)[0]
    assert L.LETTER not in got["labels"].tolist()
    assert torch.equal(got["labels"], want["labels"])
    np.testing.assert_allclose(got["boxes"].numpy(), want["boxes"].numpy(), atol=1e-2)


def test_box_refinement_is_traced_into_the_exported_graph(tmp_path):
    model, detector, images = _exported(tmp_path, ["box_refine=1"])
    with torch.inference_mode():
        want = model(images)[0]
        model.roi_heads.refine_steps = 0
        unrefined = model(images)[0]
    assert not torch.allclose(want["boxes"], unrefined["boxes"], atol=1e-2)  # the step moves boxes
    got = detector(images)[0]
    assert torch.equal(got["labels"], want["labels"])
    np.testing.assert_allclose(got["boxes"].numpy(), want["boxes"].numpy(), atol=1e-2)
    np.testing.assert_allclose(got["scores"].numpy(), want["scores"].numpy(), atol=1e-3)


def test_box_refinement_of_no_detections_runs_in_the_exported_graph(tmp_path):
    model, detector, images = _exported(tmp_path, ["box_refine=1", "box_score_thresh=0.999"])  # nothing passes
    with torch.inference_mode():
        assert len(model(images)[0]["boxes"]) == 0
    assert detector(images)[0]["boxes"].shape == (0, 4)
