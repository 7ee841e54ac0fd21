"""Training: resume equals an uninterrupted run; checkpoints; the end-to-end smoke run."""
import csv
import json

import pytest
import torch

from digitdet.cli import main
from digitdet.config import Config
from digitdet.io import load_checkpoint, read_pred_csv, read_pred_json
from digitdet.train.fit import fit

TINY = ["fpn_channels=32", "representation_size=64", "min_size=48", "max_size=128", "workers=0",
        "batch_size=4", "warmup_iters=2", "eval_every=0", "max_train_images=12", "max_valid_images=4",
        "rpn_post_nms_top_n_train=64", "box_batch_size_per_image=16", "pretrain_epochs=0"]


def tiny_cfg(*extra) -> Config:
    return Config().override([*TINY, *extra])


@pytest.mark.slow
def test_resume_equals_uninterrupted_run(tiny_data, tmp_path):
    cfg = tiny_cfg("epochs=2", "save_every_steps=0")  # 3 steps per epoch
    fit(cfg, tiny_data, tmp_path / "a", progress=False)
    stopped = fit(cfg, tiny_data, tmp_path / "b", progress=False, stop_after_steps=4)  # killed in epoch 2
    assert stopped["stopped"] == "stop_after_steps"
    assert load_checkpoint(tmp_path / "b" / "last.pt")["progress"]["step_in_epoch"] == 1
    fit(Config(), tiny_data, tmp_path / "b", resume=True, progress=False)  # config comes from last.pt
    a = load_checkpoint(tmp_path / "a" / "last.pt")
    b = load_checkpoint(tmp_path / "b" / "last.pt")
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert a["progress"]["epoch"] == b["progress"]["epoch"] == 2


@pytest.mark.slow
def test_resume_keeps_frozen_layers_without_the_pretrained_file(tiny_data, tmp_path):
    """trainable_layers < 5 freezes stages of pre-trained weights; a resumed run must freeze the
    same ones (its optimizer state belongs to the trainable set) and never re-read the file."""
    from digitdet.models.faster_rcnn import build_model

    weights, start = tmp_path / "w.pth", build_model(tiny_cfg()).state_dict()
    torch.save(start, weights)
    cfg = tiny_cfg("epochs=2", "save_every_steps=0", f"pretrained={weights}", "trainable_layers=3")
    fit(cfg, tiny_data, tmp_path / "a", progress=False)
    fit(cfg, tiny_data, tmp_path / "b", progress=False, stop_after_steps=4)
    weights.unlink()
    fit(Config(), tiny_data, tmp_path / "b", resume=True, progress=False)
    a = load_checkpoint(tmp_path / "a" / "last.pt")
    b = load_checkpoint(tmp_path / "b" / "last.pt")
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    for frozen in ("backbone.body.conv1.weight", "backbone.body.layer1.0.conv1.weight"):
        assert torch.equal(b["model"][frozen], start[frozen]), frozen
    assert not torch.equal(b["model"]["backbone.body.layer2.0.conv1.weight"], start["backbone.body.layer2.0.conv1.weight"])


@pytest.mark.slow
def test_ema_resumes_exactly_and_is_what_best_pt_holds(tiny_data, tmp_path):
    cfg = tiny_cfg("epochs=2", "save_every_steps=0", "ema_decay=0.9")
    fit(cfg, tiny_data, tmp_path / "a", progress=False)
    fit(cfg, tiny_data, tmp_path / "b", progress=False, stop_after_steps=4)
    fit(Config(), tiny_data, tmp_path / "b", resume=True, progress=False)
    a, b = (load_checkpoint(tmp_path / r / "last.pt") for r in "ab")
    assert a["ema"]["n_averaged"] == 6  # one update per optimizer step
    for k, v in a["ema"].items():
        assert torch.equal(v, b["ema"][k]), k
    best = load_checkpoint(tmp_path / "a" / "best.pt")["model"]  # eval_every=0: the final evaluation
    w = "backbone.fpn.layer_blocks.0.0.weight"
    assert torch.equal(best[w], a["ema"]["module." + w]) and not torch.equal(best[w], a["model"][w])


@pytest.mark.slow
def test_time_budget_plans_the_schedule_to_end_in_it(tiny_data, tmp_path, monkeypatch):
    import digitdet.train.budget as train

    planned = []
    monkeypatch.setattr(train, "PLAN_AFTER_STEPS", 2)
    monkeypatch.setattr(train, "plan_total_steps", lambda *a: planned.append(a) or 5)  # "5 steps fit"
    result = fit(tiny_cfg("epochs=3", "time_budget_min=60"), tiny_data, tmp_path / "t", progress=False)
    last = load_checkpoint(tmp_path / "t" / "last.pt")
    assert result["stopped"] == "time_budget" and last["progress"]["total_steps"] == 5
    assert last["scheduler"]["last_epoch"] == 5 and last["scheduler"]["_last_lr"][0] == 0.0  # cosine ended at 0
    # planned after 2 steps, then again after epoch 1 (3 steps); budget 3600 s, at most 3 epochs x 3 steps
    assert [(p[0], p[3], p[4]) for p in planned] == [(2, 3600.0, 9), (3, 3600.0, 9)]
    # long epochs are re-planned every REPLAN_EVERY_STEPS steps too, not only at their end
    planned.clear()
    monkeypatch.setattr(train, "REPLAN_EVERY_STEPS", 1)
    monkeypatch.setattr(train, "plan_total_steps", lambda *a: planned.append(a) or 7)
    fit(tiny_cfg("epochs=3", "time_budget_min=60"), tiny_data, tmp_path / "v", progress=False)
    # after steps 2-3, epoch 1's end, steps 4-6, epoch 2's end, step 7 (the last that fits)
    assert [p[0] for p in planned] == [2, 3, 3, 4, 5, 6, 6, 7]
    # when every epoch asked for fits the budget, the run simply ends them
    monkeypatch.setattr(train, "plan_total_steps", lambda *a: 6)
    assert fit(tiny_cfg("epochs=2", "time_budget_min=60"), tiny_data, tmp_path / "u", progress=False)["stopped"] == ""


def test_plan_total_steps_fits_the_budget():
    from digitdet.train.budget import plan_total_steps
    # 100 s used of 1000 (x 0.97 margin) at 2 s/step after 40 steps: (970 - 100) / 2 = 435 more
    assert plan_total_steps(40, 2.0, 100.0, 1000.0, max_steps=10_000) == 40 + 435
    assert plan_total_steps(40, 2.0, 100.0, 1000.0, max_steps=300) == 300  # the epochs asked for cap it
    assert plan_total_steps(40, 2.0, 990.0, 1000.0, max_steps=300) == 41  # over budget: end after the next
    assert plan_total_steps(40, 0.0, 100.0, 1000.0, max_steps=300) == 300  # not measured: no plan


@pytest.mark.slow
def test_refuses_to_overwrite_a_run_and_to_resume_nothing(tiny_data, tmp_path):
    fit(tiny_cfg("epochs=1"), tiny_data, tmp_path / "r", progress=False)
    with pytest.raises(ValueError, match="--resume"):
        fit(tiny_cfg("epochs=1"), tiny_data, tmp_path / "r", progress=False)
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        fit(tiny_cfg(), tiny_data, tmp_path / "empty", resume=True, progress=False)


def test_non_finite_loss_stops_with_a_clear_message(tiny_data, tmp_path):
    from digitdet.train.step import TrainingDiverged
    with pytest.raises(TrainingDiverged, match="lower lr"):
        fit(tiny_cfg("epochs=1", "lr=1e30", "warmup_iters=0", "clip_grad=0.0"), tiny_data, tmp_path / "nan",
            progress=False)


@pytest.mark.slow
def test_end_to_end_smoke(tiny_data, tmp_path, capsys):
    run, out = tmp_path / "run", tmp_path / "out"
    args = ["--data", str(tiny_data), "--out", str(run), "--config", "cpu_fast", "--epochs", "1", "--quiet"]
    assert main(["train", *args, *[o for o in TINY if not o.startswith("eval_every")]]) == 0
    for name in ("best.pt", "last.pt", "config.yaml", "metrics.csv"):
        assert (run / name).exists(), name
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert len(rows) == 1 and float(rows[0]["loss"]) > 0 and rows[0]["map"] != ""
    capsys.readouterr()
    assert main(["tune", "--weights", str(run / "best.pt"), "--data", str(tiny_data), "--split", "valid",
                 "--quiet", "--workers", "0"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"map", "ap50", "ap75", "aps", "apm", "apl", "accuracy", "errors"} <= set(metrics)
    assert "tuned_on" in load_checkpoint(run / "best.pt")["decoder"]
    assert main(["predict", "--weights", str(run / "best.pt"), "--images", str(tiny_data / "test"),
                 "--out", str(out), "--quiet", "--workers", "0"]) == 0
    numbers = read_pred_csv(out / "pred.csv")
    assert sorted(numbers) == list(range(1, 7))
    for r in read_pred_json(out / "pred.json"):
        assert r["image_id"] in numbers and r["score"] >= 0.05
    assert main(["evaluate", "--pred", str(out / "pred.json"), "--data", str(tiny_data), "--split", "test"]) == 0


@pytest.mark.slow
def test_tune_scale_stores_the_best_input_scale_and_predict_reads_at_it(tiny_data, tmp_path, capsys):
    from digitdet.read.detector import load_detector
    from digitdet.tune import SCALE_FACTORS
    fit(tiny_cfg("epochs=1"), tiny_data, tmp_path / "r", progress=False)
    weights = tmp_path / "r" / "best.pt"
    before = weights.read_bytes()
    assert main(["evaluate", "--weights", str(weights), "--data", str(tiny_data), "--tune-scale"]) == 2  # moved to tune
    assert "digitdet tune" in capsys.readouterr().err and weights.read_bytes() == before  # evaluate never writes
    assert main(["tune", "--data", str(tiny_data)]) == 2  # the bundled model is not rewritten without --out
    capsys.readouterr()
    assert main(["tune", "--weights", str(weights), "--data", str(tiny_data), "--scale",
                 "--quiet", "--workers", "0"]) == 0
    tuned = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["tuned_decoder"]
    sizes = [size for size, _, _, _ in tuned["scales"]]
    assert sizes == [round(f * 48) for f in SCALE_FACTORS]  # multiples of the training min_size (TINY: 48)
    accs = [acc for _, _, _, acc in tuned["scales"]]
    best = sizes[accs.index(max(accs))]  # the first (smallest) of the best
    state = load_checkpoint(weights)
    assert state["config"]["min_size"] == 48  # the training scale stays in the config
    assert (state["decoder"]["min_size"], state["decoder"]["max_size"]) == (best, round(best * 128 / 48))
    line = [ln for size, _, ln, _ in tuned["scales"] if size == best][0]
    assert state["decoder"]["line_thresh"] == line  # line reading is tuned and stored with the threshold
    from digitdet.tune import BOX_PADS
    assert [p for p, _, _ in tuned["box_styles"]] == list(BOX_PADS) * 2 and state["decoder"]["box_pad"] in BOX_PADS
    assert isinstance(state["decoder"]["box_same_height"], bool)
    # a min_size given as an override is the base the factors multiply, not the stored (tuned) one
    from digitdet.data.coco import load_coco_digits, split_paths
    from digitdet.tune import tune_reading
    images_dir, ann = split_paths(tiny_data, "valid")
    table = tune_reading(weights, images_dir, load_coco_digits(ann, images_dir)[0], torch.device("cpu"), (1.0, 1.5),
                         workers=0, overrides=["min_size=40", "max_size=100"])["table"]
    assert [size for size, _, _, _ in table] == [40, 60]
    # predict reads at the stored scale; the decoder dict is what changes it
    state["decoder"].update(min_size=72, max_size=192)
    torch.save(state, weights)
    model, cfg, _ = load_detector(weights, torch.device("cpu"))
    assert (cfg.min_size, cfg.max_size) == (72, 192) and tuple(model.transform.min_size) == (72,)
    assert model.transform.max_size == 192


def test_cli_errors_are_one_line(tiny_data, tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope" in err and "Traceback" not in err
    assert main(["predict", "--weights", str(tmp_path / "missing.pt"), "--images", str(tiny_data / "test"),
                 "--out", str(tmp_path / "o")]) == 2
    assert "missing.pt" in capsys.readouterr().err


@pytest.mark.slow
def test_fine_tuning_scores_its_start_keeps_it_unless_beaten_and_warns(tiny_data, tmp_path, caplog, monkeypatch):
    import logging

    import digitdet.train.fit as fit_mod
    from digitdet.models.faster_rcnn import build_model

    weights = tmp_path / "detector.pth"
    torch.save(build_model(tiny_cfg()).state_dict(), weights)  # a whole detector: fine-tuning
    real_evaluate, calls = fit_mod.evaluate, []

    def falling(*args, **kwargs):  # the start scores 0.8, every epoch after it less
        metrics, dets = real_evaluate(*args, **kwargs)
        calls.append(1)
        return {**metrics, "map": 0.8 / len(calls)}, dets

    monkeypatch.setattr(fit_mod, "evaluate", falling)
    with caplog.at_level(logging.INFO, logger="digitdet"):
        fit(tiny_cfg("epochs=2", "eval_every=1", f"pretrained={weights}"), tiny_data, tmp_path / "ft", progress=False)
    rows = list(csv.DictReader(open(tmp_path / "ft" / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"] and float(rows[0]["map"]) == 0.8
    assert load_checkpoint(tmp_path / "ft" / "best.pt")["epoch"] == 0  # never handed back worse than given
    assert "below the 0.8000 of the model fine-tuning started from" in caplog.text
    assert load_checkpoint(tmp_path / "ft" / "last.pt")["config"]["lr"] == Config().finetune_lr
    # from scratch: no start to score, the recipe's lr
    fit(tiny_cfg("epochs=1"), tiny_data, tmp_path / "scratch", progress=False)
    assert [r["epoch"] for r in csv.DictReader(open(tmp_path / "scratch" / "metrics.csv"))] == ["1"]
    assert load_checkpoint(tmp_path / "scratch" / "last.pt")["config"]["lr"] == Config().lr
