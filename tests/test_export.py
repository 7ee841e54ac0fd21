"""ONNX export: the exported graph gives the PyTorch model's detections, at any input scale; export + predict CLI;
the bundled model's graph and the torch-free reading path."""
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
from digitdet.read.detector import at_scale, load_detector  # noqa: E402
from digitdet.read.onnx import METADATA_CONFIG, load_onnx_detector  # noqa: E402

# Small input and few proposals keep export and inference quick; a score threshold of 0 makes
# a random-weight model return detections (box_detections_per_img of them) to compare.
TINY = ["min_size=64", "max_size=160", "fpn_channels=32", "representation_size=64",
        "rpn_pre_nms_top_n_test=100", "rpn_post_nms_top_n_test=20", "box_score_thresh=0.0",
        "box_detections_per_img=10"]


def torchy(detections: list[tuple]) -> list[dict]:
    """The ONNX detector's (boxes, labels, scores) numpy tuples as torchvision's dicts of tensors."""
    return [{"boxes": torch.from_numpy(b), "labels": torch.from_numpy(labels), "scores": torch.from_numpy(s)}
            for b, labels, s in detections]


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
    for got, want in zip(torchy(detector(images)), expected):
        assert len(want["boxes"]) > 0
        assert got["boxes"].shape == want["boxes"].shape
        np.testing.assert_allclose(got["scores"].numpy(), want["scores"].numpy(), atol=1e-4)
        np.testing.assert_allclose(got["boxes"].numpy(), want["boxes"].numpy(), atol=1e-2)
        assert torch.equal(got["labels"], want["labels"])


def test_the_graph_reads_at_any_input_scale_as_torch_does(exported):
    """The input scale is a graph input: zoom-in reading's second look and scan run on the graph."""
    ckpt, onnx_path = exported
    model, cfg, _ = load_detector(ckpt, torch.device("cpu"))
    detector, _, _ = load_onnx_detector(onnx_path, threads=2)
    g = torch.Generator().manual_seed(3)
    images = [torch.rand((3, h, w), generator=g) for h, w in ((48, 120), (70, 90))]
    for factor in (2.0, 3.0):
        with torch.inference_mode(), at_scale(model, round(cfg.min_size * factor), round(cfg.max_size * factor)):
            expected = [model([im])[0] for im in images]
        for got, want in zip(torchy(detector.at(factor)(images)), expected):
            assert len(want["boxes"]) > 0 and torch.equal(got["labels"], want["labels"])
            np.testing.assert_allclose(got["scores"].numpy(), want["scores"].numpy(), atol=1e-4)
            np.testing.assert_allclose(got["boxes"].numpy(), want["boxes"].numpy(), atol=1e-2)


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
    detector, cfg, _ = load_onnx_detector(onnx_path, overrides=["min_size=128"])  # the scale is a graph input
    assert (detector.min_size, cfg.min_size) == (128, 128)
    with pytest.raises(ValueError, match="re-export"):
        load_onnx_detector(onnx_path, overrides=["rpn_post_nms_top_n_test=5"])


def test_predict_with_onnxruntime_writes_the_same_files_as_torch(exported, tiny_data, tmp_path):
    ckpt, onnx_path = exported
    images = str(tiny_data / "test")
    common = ["--images", images, "--quiet", "--workers", "0", "--threads", "2"]
    assert main(["predict", "--weights", str(onnx_path), "--out", str(tmp_path / "ort"), *common]) == 0
    # --batch-size 1 like the ONNX graph: in a batch torchvision pads, which shifts scores slightly.
    # The second look included: the graph takes its input scale.
    assert main(["predict", "--weights", str(ckpt), "--backend", "torch", "--batch-size", "1",
                 "--out", str(tmp_path / "pt"), *common]) == 0
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
    from digitdet.read.export import export_onnx

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
    got = torchy(detector(images))[0]
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
    got = torchy(detector(images))[0]
    assert torch.equal(got["labels"], want["labels"])
    np.testing.assert_allclose(got["boxes"].numpy(), want["boxes"].numpy(), atol=1e-2)
    np.testing.assert_allclose(got["scores"].numpy(), want["scores"].numpy(), atol=1e-3)


def test_box_refinement_of_no_detections_runs_in_the_exported_graph(tmp_path):
    model, detector, images = _exported(tmp_path, ["box_refine=1", "box_score_thresh=0.999"])  # nothing passes
    with torch.inference_mode():
        assert len(model(images)[0]["boxes"]) == 0
    assert torchy(detector(images))[0]["boxes"].shape == (0, 4)


def test_the_bundled_graph_is_the_bundled_checkpoint_exported():
    """digitdet/assets/digitdet_synth.onnx comes from digitdet_synth.pt (tools/bundle_model.py writes both)."""
    from digitdet.models.faster_rcnn import BUNDLED_WEIGHTS
    from digitdet.read.export import file_sha256
    from digitdet.read.onnx import BUNDLED_ONNX, METADATA_SOURCE

    detector, cfg, decoder = load_onnx_detector(None)
    assert detector.path == BUNDLED_ONNX and detector.scalable
    assert detector.metadata[METADATA_SOURCE] == file_sha256(BUNDLED_WEIGHTS)
    _, torch_cfg, torch_decoder = load_detector(None, torch.device("cpu"))
    assert cfg == torch_cfg and decoder == torch_decoder


def test_the_default_backend_reads_a_folder_as_torch_does(pillow_numbers, tmp_path):
    """The bundled model, default backend (onnxruntime) against torch one photo at a time: the same
    numbers and boxes, the second look included (photos where the first look finds nothing)."""
    common = ["--images", str(pillow_numbers / "test"), "--quiet", "--workers", "0", "--threads", "2"]
    assert main(["predict", "--out", str(tmp_path / "ort"), *common]) == 0
    assert main(["predict", "--backend", "torch", "--batch-size", "1", "--out", str(tmp_path / "pt"), *common]) == 0
    ort_csv, pt_csv = read_pred_csv(tmp_path / "ort" / "pred.csv"), read_pred_csv(tmp_path / "pt" / "pred.csv")
    assert len(ort_csv) == 20 and ort_csv == pt_csv
    assert sum(v != -1 for v in ort_csv.values()) >= 10  # numbers were read, not just -1s compared
    key = lambda r: (r["image_id"], -r["score"])  # noqa: E731
    ort_json = sorted(read_pred_json(tmp_path / "ort" / "pred.json"), key=key)
    pt_json = sorted(read_pred_json(tmp_path / "pt" / "pred.json"), key=key)
    assert [r["category_id"] for r in ort_json] == [r["category_id"] for r in pt_json]
    np.testing.assert_allclose([r["bbox"] for r in ort_json], [r["bbox"] for r in pt_json], atol=0.05)


def test_reading_with_onnxruntime_imports_no_torch(pillow_numbers, tmp_path):
    import subprocess
    import sys

    photo = sorted((pillow_numbers / "test").iterdir())[0]
    code = ("import sys; from digitdet.cli import main; "
            f"assert main(['read', {str(photo)!r}]) == 0; "
            f"assert main(['predict', '--images', {str(photo)!r}, '--out', {str(tmp_path / 'out')!r}, '--quiet']) == 0; "
            "import digitdet; digitdet.Reader()(" + repr(str(photo)) + "); "
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False"


def test_the_two_size_nudges_agree():
    from digitdet.models.transform import SIZE_NUDGE
    from digitdet.read import onnx

    assert onnx.SIZE_NUDGE == SIZE_NUDGE


def test_the_settings_free_to_change_under_onnx_are_never_read_by_the_model():
    """load_onnx_detector lets decode_*, pred_* and zoom_* change because no model code reads them."""
    import re
    from pathlib import Path

    import digitdet.models
    from digitdet.read.onnx import POST_MODEL_PREFIXES

    pattern = re.compile(r"\bcfg\.(" + "|".join(POST_MODEL_PREFIXES) + ")")
    files = sorted(Path(digitdet.models.__file__).parent.glob("*.py"))
    assert files and not [f.name for f in files if pattern.search(f.read_text())]


def test_photos_read_two_at_a_time_give_what_one_at_a_time_gives(pillow_numbers, tmp_path):
    from digitdet.data.images import list_images
    from digitdet.read.stream import read_stream
    from digitdet.read.zoom import reading_detector

    detector, cfg, _ = load_onnx_detector(None, threads=2)
    items = list_images(pillow_numbers / "test")[:8]
    broken = tmp_path / "99.png"
    broken.write_bytes(b"not a png")
    items.insert(3, (99, broken))
    detect = reading_detector(detector, cfg, None)
    one, two = (read_stream(detect, items, workers=w) for w in (1, 2))
    assert list(two["detections"]) == list(one["detections"]) == [i for i, _ in items if i != 99]
    for key, (boxes, labels, scores) in one["detections"].items():
        np.testing.assert_array_equal(two["detections"][key][0], boxes)
        np.testing.assert_array_equal(two["detections"][key][1], labels)
    assert list(one["errors"]) == list(two["errors"]) == [99] and "99.png" in one["errors"][99]


def test_an_int8_export_reads_a_folder(exported, tiny_data, tmp_path, capsys):
    ckpt, _ = exported
    out = tmp_path / "int8.onnx"
    assert main(["export", "--weights", str(ckpt), "--out", str(out), "--int8",
                 "--calibrate", str(tiny_data / "train")]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["int8"] is True
    ops = {n.op_type for n in __import__("onnx").load(str(out)).graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    _, cfg, decoder = load_onnx_detector(out)
    assert decoder == {"score_thresh": 0.3, "iou_thresh": 0.5} and cfg.min_size == 64  # the metadata kept
    assert main(["predict", "--weights", str(out), "--images", str(tiny_data / "test"), "--out", str(tmp_path / "o"),
                 "--quiet"]) == 0
    assert sorted(read_pred_csv(tmp_path / "o" / "pred.csv")) == list(range(1, 7))
    assert main(["export", "--weights", str(ckpt), "--out", str(out), "--int8"]) == 2  # no photos to calibrate on
    assert "--calibrate" in capsys.readouterr().err


def test_the_backend_auto_chooses(monkeypatch):
    from digitdet.read import onnx

    monkeypatch.setattr(onnx, "nvidia_gpu", lambda: False)
    assert onnx.choose_backend("auto", None, "auto") == "onnxruntime"  # the bundled model on a CPU
    assert onnx.choose_backend("auto", "m.onnx", "auto") == "onnxruntime"
    assert onnx.choose_backend("auto", "runs/x/best.pt", "auto") == "torch"
    assert onnx.choose_backend("auto", None, "cuda") == "torch"
    monkeypatch.setattr(onnx, "nvidia_gpu", lambda: True)
    assert onnx.choose_backend("auto", None, "auto") == "torch"  # a GPU: torch reads on it
    assert onnx.choose_backend("auto", None, "cpu") == "onnxruntime"
    with pytest.raises(ValueError, match="onnxruntime"):
        onnx.choose_backend("torch", "m.onnx")
    with pytest.raises(ValueError, match="digitdet export"):
        onnx.choose_backend("onnxruntime", "best.pt")


def test_the_reader_reads_a_list_as_it_reads_each_photo(pillow_numbers):
    import digitdet

    photos = sorted((pillow_numbers / "test").iterdir())[:6]
    reader = digitdet.Reader(threads=2)
    assert reader.backend == "onnxruntime"
    together = [r.number for r in reader(photos)]
    assert together == [reader(p).number for p in photos] and any(together)


def test_onnxruntime_under_torchrun_is_one_line(pillow_numbers, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["predict", "--backend", "onnxruntime", "--images", str(pillow_numbers / "test"),
                 "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "torchrun" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_both_backends_of_the_reader_read_the_same_numbers(pillow_numbers):
    import digitdet

    photos = sorted((pillow_numbers / "test").iterdir())[:6]
    by_torch = [r.number for r in digitdet.Reader(backend="torch", threads=2)(photos, batch_size=1)]
    assert by_torch == [r.number for r in digitdet.Reader(threads=2)(photos)] and any(by_torch)
