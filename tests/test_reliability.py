"""Bad input a user can give: one line naming the file and what is wrong, exit 2, nothing lost.

Each case of ../shared/reviews/reliability.md that is handled so far, as the user runs it."""
import shutil

import pytest
from PIL import Image

from digitdet.cli import main
from digitdet.io import read_pred_csv


def _one_line(err: str) -> None:
    assert err.count("\n") == 1 and "Traceback" not in err, err


def _folder(tiny_data, tmp_path, n=3):
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in sorted((tiny_data / "test").glob("*.png"))[:n]:
        shutil.copy(p, photos / p.name)
    return photos


def _predict(images, out):
    return main(["predict", "--images", str(images), "--out", str(out), "--quiet", "--workers", "0", "--device", "cpu"])


def test_a_decompression_bomb_reads_minus_one_and_the_run_goes_on(tiny_data, tmp_path, monkeypatch, caplog):
    photos = _folder(tiny_data, tmp_path)
    Image.new("RGB", (200, 100), "white").save(photos / "99.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6_000)  # 99.png's 20,000 pixels pass the bomb limit (2x), 95x48 not
    with caplog.at_level("WARNING", logger="digitdet"):
        assert _predict(photos, tmp_path / "out") == 0
    numbers = read_pred_csv(tmp_path / "out" / "pred.csv")
    assert numbers[99] == "-1" and len(numbers) == 4
    assert all(n != "-1" for i, n in numbers.items() if i != 99)  # the good photos are read
    assert "99.png" in caplog.text


def test_tif_and_gif_photos_are_read_and_other_files_are_named(tiny_data, tmp_path, caplog):
    photos = _folder(tiny_data, tmp_path, n=1)
    first = sorted(photos.iterdir())[0]
    Image.open(first).save(photos / "50.tif")
    Image.open(first).convert("P").save(photos / "51.gif")
    (photos / "notes.txt").write_text("not a photo")
    (photos / "more").mkdir()
    with caplog.at_level("WARNING", logger="digitdet"):
        assert _predict(photos, tmp_path / "out") == 0
    assert {50, 51} <= set(read_pred_csv(tmp_path / "out" / "pred.csv"))
    assert "notes.txt" in caplog.text and "more" in caplog.text and "subfolder" in caplog.text


@pytest.mark.parametrize("command", ["predict", "train"])
def test_out_that_is_a_file_fails_before_any_work(tiny_data, tmp_path, capsys, command):
    taken = tmp_path / "taken"
    taken.write_text("keep me")
    args = (["predict", "--images", str(tiny_data / "test")] if command == "predict"
            else ["train", "--data", str(tiny_data)])
    assert main([*args, "--out", str(taken), "--quiet", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    _one_line(err)
    assert "taken" in err and "is a file" in err and taken.read_text() == "keep me"


@pytest.mark.parametrize("setting, says", [("batch_size=0", "batch_size must be > 0"),
                                           ("min_size=0", "min_size must be > 0"),
                                           ("anchor_sizes=[[12", "not valid YAML"),
                                           ("backbone=vgg16", "choose one of"),
                                           ("scheduler=step", "no longer a setting")])
def test_bad_settings_are_one_line_before_training(tiny_data, tmp_path, capsys, setting, says):
    assert main(["train", "--data", str(tiny_data), "--out", str(tmp_path / "r"), "--quiet", setting]) == 2
    err = capsys.readouterr().err
    _one_line(err)
    assert says in err
    assert not (tmp_path / "r").exists()  # nothing started


def test_a_save_killed_midway_leaves_no_temp_file_behind(tiny_data, tmp_path):
    from digitdet.config import Config
    from digitdet.train.checkpoint import start_run
    run = tmp_path / "run"
    run.mkdir()
    (run / ".last.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    start_run(Config(), run, resume=False)
    assert list(run.glob(".*.tmp")) == []


@pytest.mark.parametrize("change, says", [
    (lambda c: c["annotations"].__setitem__(0, "not an object"), "an annotation must be an object"),
    (lambda c: c["annotations"][0].__setitem__("bbox", [1, 2, float("nan"), 4]), "four finite numbers"),
    (lambda c: c["annotations"][0].__setitem__("bbox", [1, "2", 3, 4]), "four finite numbers"),
    (lambda c: c["images"][0].__setitem__("id", "one"), "id must be an integer"),
    (lambda c: c["images"][0].__setitem__("width", 999), "in the JSON but"),
])
def test_bad_annotations_name_the_file_and_record(tiny_data, tmp_path, capsys, change, says):
    import json
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    coco = json.loads((data / "train.json").read_text())
    change(coco)
    (data / "train.json").write_text(json.dumps(coco))
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "r"), "--quiet"]) == 2
    err = capsys.readouterr().err
    _one_line(err)
    assert "train.json" in err and says in err


def test_an_empty_config_file_says_it_sets_nothing(tmp_path, caplog):
    from digitdet.config import Config, load_config
    empty = tmp_path / "mine.yaml"
    empty.write_text("# nothing yet\n")
    with caplog.at_level("WARNING", logger="digitdet"):
        assert load_config(str(empty)) == Config()
    assert "mine.yaml sets nothing" in caplog.text


def test_a_checkpoint_whose_config_names_another_model_is_one_line(tiny_data, tmp_path, capsys):

    from digitdet.io import load_checkpoint, save_checkpoint
    from digitdet.models.faster_rcnn import BUNDLED_WEIGHTS
    state = load_checkpoint(BUNDLED_WEIGHTS)
    state["config"]["backbone"] = "resnet34_fpn"  # the weights are a ResNet-18's
    save_checkpoint(tmp_path / "edited.pt", state)
    assert _predict_with(tiny_data, tmp_path, "edited.pt") == 2
    err = capsys.readouterr().err
    _one_line(err)
    assert "edited.pt" in err and "do not fit the model its config describes" in err



def _predict_with(tiny_data, tmp_path, weights):
    return main(["predict", "--weights", str(tmp_path / weights), "--images", str(tiny_data / "test"),
                 "--out", str(tmp_path / "out"), "--quiet", "--workers", "0", "--device", "cpu"])


@pytest.mark.parametrize("content, says", [(b"PK\x03\x04 truncated", "not a readable torch weights file"),
                                           ("hostile", "holds objects other than tensors")])
def test_a_bad_pretrained_file_is_one_line(tiny_data, tmp_path, capsys, content, says):
    import collections

    import torch
    bad = tmp_path / "w.pth"
    if content == "hostile":
        torch.save({"backbone.x": collections.OrderedDict, "f": print}, bad)  # globals a weights file never holds
    else:
        bad.write_bytes(content)
    assert main(["train", "--data", str(tiny_data), "--out", str(tmp_path / "r"), "--quiet", "pretrain_epochs=0",
                 f"pretrained={bad}", "workers=0"]) == 2
    err = capsys.readouterr().err
    _one_line(err)
    assert "w.pth" in err and says in err and "weights_only=False" not in err


def test_broken_training_photos_are_all_named_before_the_first_step(tiny_data, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    photos = sorted((data / "train").glob("*.png"))
    photos[0].write_bytes(photos[0].read_bytes()[:200])  # truncated
    photos[1].write_bytes(b"")  # zero bytes
    photos[2].write_text("this is text")
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "r"), "--quiet", "pretrain_epochs=0"]) == 2
    err = capsys.readouterr().err
    _one_line(err)
    assert "3 of" in err and all(p.name in err for p in photos[:3])
    assert not (tmp_path / "r" / "last.pt").exists()


def test_a_photo_given_as_weights_and_a_file_given_as_data_say_so(tiny_data, tmp_path, capsys):
    photo = sorted((tiny_data / "test").glob("*.png"))[0]
    assert main(["predict", "--weights", str(photo), "--images", str(tiny_data / "test"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    _one_line(err)
    assert "is a photo, not a checkpoint" in err
    assert main(["train", "--data", str(photo), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    _one_line(err)
    assert "is a file; a dataset is a folder" in err and not (tmp_path / "r").exists()


def test_a_huge_photo_is_read_reduced_and_its_boxes_come_back_in_its_pixels(tiny_data, tmp_path, monkeypatch):
    import digitdet.data.images as images
    from digitdet.io import read_pred_json
    photos = _folder(tiny_data, tmp_path, n=1)
    small = sorted(photos.iterdir())[0]
    Image.open(small).resize((95 * 4, 48 * 4), Image.Resampling.BICUBIC).save(photos / "7.jpg", quality=95)
    assert _predict(photos, tmp_path / "full") == 0
    monkeypatch.setattr(images, "READ_SIDE_LIMIT", 200)  # 380 x 192 is "huge" now: read at 200 x 101
    monkeypatch.setattr(images.load_rgb_within, "__defaults__", (200,))
    assert _predict(photos, tmp_path / "reduced") == 0
    full, reduced = (read_pred_csv(tmp_path / d / "pred.csv") for d in ("full", "reduced"))
    assert full[7] == reduced[7] != "-1"
    boxes = [r["bbox"] for r in read_pred_json(tmp_path / "reduced" / "pred.json") if r["image_id"] == 7 and r["score"] > 0.5]
    assert max(x + w for x, _, w, _ in boxes) > 200  # in the photo's 380-px frame, not the reduced one's


def test_predict_outputs_are_replaced_as_one_set(tmp_path):
    from digitdet.io import write_json, write_pred_csv, written_together
    write_pred_csv(tmp_path / "pred.csv", {1: "12"})
    write_json(tmp_path / "pred_config.json", {"run": "old"})
    with pytest.raises(RuntimeError):
        with written_together():
            write_pred_csv(tmp_path / "pred.csv", {1: "99"})
            raise RuntimeError("killed while writing the second file")
    assert read_pred_csv(tmp_path / "pred.csv") == {1: "12"}  # the old set, whole
    assert list(tmp_path.glob(".*.tmp")) == []
    with written_together():
        write_pred_csv(tmp_path / "pred.csv", {1: "99"})
        write_json(tmp_path / "pred_config.json", {"run": "new"})
        assert read_pred_csv(tmp_path / "pred.csv") == {1: "12"}  # nothing replaced until the set is written
    assert read_pred_csv(tmp_path / "pred.csv") == {1: "99"}


def test_a_closed_pipe_ends_the_command_quietly(monkeypatch, capfd):
    """`digitdet read photos/ | head`: the reader of our output leaving is exit 0, no traceback."""
    import digitdet.cli as cli

    class Gone:
        @staticmethod
        def add_parser(sub, name):
            return sub.add_parser(name)

        @staticmethod
        def run(args):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli, "command", lambda name: Gone)
    monkeypatch.setattr("os.dup2", lambda *a: None)  # keep pytest's stdout
    assert cli.main(["stats"]) == 0
    assert "Traceback" not in capfd.readouterr().err
