import pytest

from digitdet.config import Config, load_config


def test_recipes_load_and_override():
    for name in ("default", "cpu_fast", "seed_r50v2"):
        cfg = load_config(name)
        assert all(r >= 1.0 for r in cfg.aspect_ratios), "ratios are HEIGHT/WIDTH: digits are tall"
    cfg = load_config("default", ["lr=0.005", "anchor_sizes=[[8], [16], [32]]", "amp=false"])
    assert cfg.lr == 0.005 and cfg.anchor_sizes == [[8], [16], [32]] and cfg.amp is False


def test_round_trip_through_dict():
    cfg = load_config("cpu_fast")
    assert Config.from_dict(cfg.to_dict()) == cfg


def test_unknown_key_and_bad_type_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown config key"):
        load_config("default", ["learning_rate=0.1"])
    with pytest.raises(ValueError, match="lr must be float"):
        load_config("default", ["lr=fast"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [\n")
    with pytest.raises(ValueError, match="bad.yaml"):
        load_config(str(bad))
    with pytest.raises(FileNotFoundError, match="not a packaged recipe"):
        load_config("nope")
    with pytest.raises(ValueError, match=r"unknown term\(s\) \['loss_cls'\]"):
        load_config("default", ["loss_weights={loss_cls: 2}"])
    with pytest.raises(ValueError, match="numbers >= 0"):
        load_config("default", ["loss_weights={loss_classifier: -1}"])
    assert load_config("default", ["loss_weights={loss_box_reg: 2}"]).loss_weights == {"loss_box_reg": 2.0}
