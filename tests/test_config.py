from pathlib import Path

import pytest

from digitdet.config import Config, load_config


def test_recipes_load_and_override():
    for name in ("default", "cpu_fast", "seed_r50v2"):
        cfg = load_config(name)
        assert all(r >= 1.0 for r in cfg.aspect_ratios), "ratios are HEIGHT/WIDTH: digits are tall"
    cfg = load_config("default", ["lr=0.005", "anchor_sizes=[[8], [16], [32]]", "amp=false"])
    assert cfg.lr == 0.005 and cfg.anchor_sizes == [[8], [16], [32]] and cfg.amp is False


def test_top_level_configs_folder_is_the_packaged_recipes():
    """The issue and the README name ``configs/default.yaml``: a path from the repository root."""
    root = Path(__file__).resolve().parents[1]
    for name in ("default", "cpu_fast", "seed_r50v2"):
        path = root / "configs" / f"{name}.yaml"
        assert path.is_file(), f"{path} missing (configs/ must point at digitdet/configs/)"
        assert load_config(str(path)) == load_config(name)


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


def test_decoder_settings_round_trip_and_older_files_keep_line_reading_off():
    cfg = Config(decode_score_thresh=0.9, decode_iou_thresh=0.4, decode_line_thresh=0.6, pred_box_pad=0.06,
                 pred_box_same_height=True)
    assert cfg.decoder() == {"score_thresh": 0.9, "iou_thresh": 0.4, "line_thresh": 0.6, "box_pad": 0.06,
                             "box_same_height": True, "line_start_side": 4 * cfg.min_size}
    assert Config().apply_decoder(cfg.decoder()) == cfg
    # the start rule's photo size follows the input scale; 0 = the rule in every photo
    assert Config(min_size=64, decode_line_start_below=0).decoder()["line_start_side"] == 0
    assert Config(min_size=80).decoder()["line_start_side"] == 320
    # a checkpoint tuned before line reading stores no line_thresh: plain reading, as it was tuned
    old = Config().apply_decoder({"score_thresh": 0.7, "iou_thresh": 0.5, "min_size": 64, "accuracy": 0.9})
    assert (old.decode_score_thresh, old.decode_line_thresh, old.min_size) == (0.7, 0.0, Config().min_size)
    assert (old.pred_box_pad, old.pred_box_same_height) == (0.0, False)  # files from before: boxes as found
    assert Config().apply_decoder(None) == Config()


def test_dataclass_defaults_are_the_default_recipe_and_recipes_list_only_changes():
    import yaml

    from digitdet.config import CONFIG_DIR
    assert load_config("default") == Config()
    for name in ("cpu_fast", "seed_r50v2"):
        listed = yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())
        unchanged = sorted(k for k, v in listed.items() if getattr(Config(), k) == v)
        assert unchanged == [], f"{name}.yaml repeats defaults: {unchanged}"


def test_configs_saved_by_older_versions_load_as_they_were_trained():
    """A checkpoint's config from before the cleanup: keys since made constants, keys it lacks."""
    old = {"norm": "bn", "scheduler": "step", "momentum": 0.95, "box_nms_thresh": 0.5, "zoom_score": 0.3, "lr": 0.02}
    cfg = Config.from_dict(old, source="old.pt", saved=True)  # training-only settings are history
    assert (cfg.lr, cfg.size_divisible, cfg.min_size, cfg.returned_layers) == (0.02, 32, 96, [2, 3, 4])
    with pytest.raises(ValueError, match=r"old.pt: box_nms_thresh=0.3 is no longer a setting"):
        Config.from_dict({"box_nms_thresh": 0.3}, source="old.pt", saved=True)  # it changes how it reads
    with pytest.raises(ValueError, match="scheduler is no longer a setting"):
        load_config("default", ["scheduler=step"])  # a user asking for it is told, not ignored
    assert load_config("default", ["norm=bn"]) == Config()  # the constant's own value is harmless


def test_resuming_an_old_run_refuses_training_settings_it_can_no_longer_honour():
    old = {"scheduler": "step", "lr": 0.02}
    assert Config.from_dict(old, source="last.pt", saved=True).lr == 0.02  # reading its weights: fine
    with pytest.raises(ValueError, match="last.pt: scheduler='step' is no longer a setting"):
        Config.from_dict(old, source="last.pt", saved=True, resuming=True)  # training on with them: not
    assert Config.from_dict({"group_batches": 0}, saved=True).group_batches == 0  # saved values are not re-judged


def test_fine_tuning_the_bundle_reads_as_the_bundle_was_tuned():
    from digitdet.io import load_checkpoint
    from digitdet.models.faster_rcnn import BUNDLED_WEIGHTS
    from digitdet.train.fit import _decoder_of
    assert _decoder_of("bundled") == load_checkpoint(BUNDLED_WEIGHTS)["decoder"]
    assert _decoder_of("/nonexistent.pth") is None
