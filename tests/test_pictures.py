"""Pictures: training curves, evaluation pictures and the visualize command write valid PNGs."""
import json

import numpy as np
import pytest
from PIL import Image

from digitdet.boxes import xywh_to_xyxy
from digitdet.cli import main
from digitdet.config import Config
from digitdet.labels import digit_to_category
from digitdet.read.decode import group_by_image
from digitdet.read.submission import decoder_of_predictions, write_submission
from digitdet.score.diagnostics import CONFUSION_COLS, CONFUSION_ROWS, confusion_matrix, pr_curves, worst_number_errors
from digitdet.viz.report import write_evaluation_pictures, write_training_plots

HEADER = ("epoch,loss_classifier,loss_box_reg,loss_objectness,loss_rpn_box_reg,loss,lr,images_per_s,"
          "map,ap50,ap75,accuracy")


def _assert_pngs(paths):
    assert paths
    for p in paths:
        with Image.open(p) as im:
            assert im.format == "PNG" and im.width > 0 and im.height > 0
            im.load()


def _truth_dets(gt, digit_swap_image=None):
    """Detections equal to the truth (score 0.9); one image's first digit read as another digit."""
    dets = {}
    for a in gt["annotations"]:
        b, l, s = dets.setdefault(a["image_id"], ([], [], []))
        b.append(a["bbox"]); s.append(0.9)
        wrong = a["image_id"] == digit_swap_image and len(l) == 0
        l.append(digit_to_category((a["category_id"] - 1 + 1) % 10) if wrong else a["category_id"])
    return {i: (xywh_to_xyxy(b), np.array(l), np.array(s)) for i, (b, l, s) in dets.items()}


def test_training_plots_from_a_metrics_csv(tmp_path):
    rows = [f"{e},{1 / e:.3f},0.2,0.1,0.05,{1 / e + 0.35:.3f},{0.02 / e},30,{'' if e % 2 else 0.1 * e},"
            f"{'' if e % 2 else 0.2 * e},,{'' if e % 2 else 0.1 * e}" for e in range(1, 6)]
    (tmp_path / "metrics.csv").write_text("\n".join([HEADER, *rows]) + "\n")
    _assert_pngs(write_training_plots(tmp_path))


def test_a_missing_metrics_csv_is_named(tmp_path):
    with pytest.raises(ValueError, match="metrics.csv not found"):
        write_training_plots(tmp_path)


def test_evaluation_pictures_from_hand_made_detections(tiny_data, tmp_path):
    gt = json.loads((tiny_data / "valid.json").read_text())
    dets = _truth_dets(gt, digit_swap_image=1)
    paths = write_evaluation_pictures(tmp_path, dets, gt, tiny_data / "valid", Config())
    assert [p.name for p in paths] == ["pr_curves.png", "confusion_matrix.png", "worst_numbers.png"]
    _assert_pngs(paths)


def test_confusion_matrix_counts_swaps_misses_and_phantoms(tiny_data):
    gt = json.loads((tiny_data / "valid.json").read_text())
    dets = _truth_dets(gt, digit_swap_image=1)
    first = min((a for a in gt["annotations"] if a["image_id"] == 1), key=lambda a: a["id"])
    true_digit = first["category_id"] - 1
    del dets[2]  # image 2: every digit missed
    b, l, s = dets[3]  # image 3: a phantom "5" far from the digits
    dets[3] = (np.vstack([b, [0, 0, 3, 3]]), np.append(l, digit_to_category(5)), np.append(s, 0.99))
    m = confusion_matrix(dets, gt)
    assert m.shape == (len(CONFUSION_ROWS), len(CONFUSION_COLS))
    assert m[true_digit, (true_digit + 1) % 10] >= 1
    assert m[:10, 10].sum() == sum(a["image_id"] == 2 for a in gt["annotations"])
    assert m[10].sum() == 1 and m[10, 5] == 1
    assert m.sum() == len(gt["annotations"]) + 1
    worst = worst_number_errors(dets, gt)
    assert {e["image_id"] for e in worst} == {1, 2, 3}


def test_perfect_detections_have_precision_one(tiny_data):
    gt = json.loads((tiny_data / "valid.json").read_text())
    curves = pr_curves(_truth_dets(gt), gt)
    present = {str(a["category_id"] - 1) for a in gt["annotations"]}
    for digit, (recall, precision) in curves.items():
        assert len(recall) == len(precision) == 101
        assert np.allclose(precision, 1.0) if digit in present else np.isnan(precision).all()


def test_cli_visualize_on_a_tiny_folder(tiny_data, tmp_path, capsys):
    gt = json.loads((tiny_data / "test_gt.json").read_text())
    pred = [{"image_id": a["image_id"], "bbox": a["bbox"], "score": 0.8, "category_id": a["category_id"]}
            for a in gt["annotations"]]
    (tmp_path / "pred.json").write_text(json.dumps(pred))
    out = tmp_path / "pics"
    assert main(["visualize", "--pred", str(tmp_path / "pred.json"), "--images", str(tiny_data / "test"),
                 "--gt", str(tiny_data / "test_gt.json"), "--n", "4", "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 4
    _assert_pngs([out / "grid.png", *sorted((out / "images").glob("*.png"))])
    assert len(list((out / "images").glob("*.png"))) == 4


def test_visualize_reads_numbers_with_the_threshold_predict_used(tiny_data, tmp_path, capsys):
    gt = json.loads((tiny_data / "test_gt.json").read_text())
    dets = group_by_image([{"image_id": a["image_id"], "bbox": a["bbox"], "score": 0.3,
                            "category_id": a["category_id"]} for a in gt["annotations"]])
    ids = sorted(dets)
    cfg = Config(decode_score_thresh=0.25, decode_iou_thresh=0.4, decode_line_thresh=0.1)
    json_path, csv_path = write_submission(tmp_path / "pred", dets, ids, cfg)
    assert decoder_of_predictions(json_path) == {"score_thresh": 0.25, "iou_thresh": 0.4, "line_thresh": 0.1,
                                                 "box_pad": 0.0, "box_same_height": False,
                                                 "line_start_side": 4 * cfg.min_size}
    assert decoder_of_predictions(tmp_path / "elsewhere" / "pred.json") is None
    args = ["visualize", "--pred", str(json_path), "--images", str(tiny_data / "test"), "--n", "2"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    used = json.loads(capsys.readouterr().out)
    assert used["decode_thresh"] == 0.25 and used["decode_line"] == 0.1  # boxes of score 0.3 are read
    assert main([*args, "--decode-thresh", "0.5", "--out", str(tmp_path / "b")]) == 0
    assert json.loads(capsys.readouterr().out)["decode_thresh"] == 0.5


def test_evaluate_pred_reads_numbers_as_predict_did(tiny_data, tmp_path, capsys):
    gt = json.loads((tiny_data / "test_gt.json").read_text())
    dets = group_by_image([{"image_id": a["image_id"], "bbox": a["bbox"], "score": 0.3,
                            "category_id": a["category_id"]} for a in gt["annotations"]])
    json_path, _ = write_submission(tmp_path / "pred", dets, sorted(dets), Config(decode_score_thresh=0.25))
    args = ["evaluate", "--pred", str(json_path), "--data", str(tiny_data), "--split", "test"]
    assert main(args) == 0
    m = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert m["decode_score_thresh"] == 0.25 and m["accuracy"] == 1.0  # the digits of score 0.3 are read
    assert main([*args, "decode_score_thresh=0.5"]) == 0
    m = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert m["decode_score_thresh"] == 0.5 and m["accuracy"] == 0.0


def test_visualize_errors_draws_only_the_numbers_read_wrong(tiny_data, tmp_path, capsys):
    gt = json.loads((tiny_data / "test_gt.json").read_text())
    first = min(im["id"] for im in gt["images"])
    # every digit found, but the first image's digits read as another digit
    pred = [{"image_id": a["image_id"], "bbox": a["bbox"], "score": 0.8,
             "category_id": a["category_id"] % 10 + 1 if a["image_id"] == first else a["category_id"]}
            for a in gt["annotations"]]
    (tmp_path / "pred.json").write_text(json.dumps(pred))
    args = ["visualize", "--pred", str(tmp_path / "pred.json"), "--images", str(tiny_data / "test"),
            "--gt", str(tiny_data / "test_gt.json"), "--n", "4"]
    assert main([*args, "--errors", "--out", str(tmp_path / "a")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 1 and report["errors"] == {"wrong_digit": 1}
    assert [p.name for p in (tmp_path / "a" / "images").glob("*.png")] == [f"{first}.png"]
    assert main([*args, "--errors", "missed_digit", "--out", str(tmp_path / "b")]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 0 and not (tmp_path / "b").exists()
    assert main(["visualize", "--pred", str(tmp_path / "pred.json"), "--images", str(tiny_data / "test"),
                 "--errors", "--out", str(tmp_path / "c")]) != 0
    assert "--errors needs --gt" in capsys.readouterr().err
