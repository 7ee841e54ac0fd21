"""bench/real.py scores one predict run against the split's boxes and draws every failure."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import real  # noqa: E402

from digitdet.io import read_pred_csv  # noqa: E402
from digitdet.score.metrics import gt_numbers  # noqa: E402


@pytest.mark.slow
def test_scores_predict_and_pictures_every_failure(tiny_data, tmp_path, capsys):
    assert real.main(["--data", str(tiny_data), "--split", "valid", "--out", str(tmp_path), "workers=0"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    gt = json.loads((tiny_data / "valid.json").read_text())
    truth, read = gt_numbers(gt), read_pred_csv(tmp_path / "pred" / "pred.csv")
    wrong = sum(read[i] != t for i, t in truth.items())
    assert summary["photos"] == len(truth) and summary["accuracy"] == 1 - wrong / len(truth)
    assert summary["errors"]["correct"] == len(truth) - wrong and 0 <= summary["map"] <= 1
    assert summary["whole_process_images_per_s"] > 0
    assert (tmp_path / "failures.png").exists() == (wrong > 0)
    # photos a model was trained on are left out of the scores
    (tmp_path / "ex.json").write_text(json.dumps(sorted(truth)[:2]))
    assert real.main(["--data", str(tiny_data), "--out", str(tmp_path / "b"), "--exclude-ids", str(tmp_path / "ex.json"),
                      "workers=0"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["photos"] == len(truth) - 2


def test_says_so_and_exits_0_without_the_data(tmp_path, capsys):
    assert real.main(["--data", str(tmp_path / "absent"), "--out", str(tmp_path)]) == 0
    assert "nothing to measure" in capsys.readouterr().out
