"""The small model shipped with the package: `digitdet predict` without --weights."""
import pytest

from digitdet.cli import main
from digitdet.inference import BUNDLED_WEIGHTS
from digitdet.io import load_checkpoint, read_pred_csv

pytestmark = pytest.mark.skipif(not BUNDLED_WEIGHTS.exists(), reason="no bundled model in this checkout")


def test_bundled_model_is_small_and_self_describing():
    assert BUNDLED_WEIGHTS.stat().st_size <= 25 * 2**20
    state = load_checkpoint(BUNDLED_WEIGHTS)
    assert state["config"]["pretrained"] == "none"  # rebuilds from the file alone, nothing to fetch
    assert 0.0 < state["decoder"]["score_thresh"] < 1.0


def test_predict_without_weights_uses_the_bundled_model(tiny_data, tmp_path):
    assert main(["predict", "--images", str(tiny_data / "test"), "--out", str(tmp_path), "--quiet",
                 "--workers", "0"]) == 0
    assert sorted(read_pred_csv(tmp_path / "pred.csv")) == list(range(1, 7))
