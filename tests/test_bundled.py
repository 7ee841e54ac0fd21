"""The small model shipped with the package: `digitdet predict` without --weights."""
import json
import shutil

import pytest

from digitdet.cli import main
from digitdet.io import load_checkpoint, read_json, read_pred_csv, read_pred_json
from digitdet.models.faster_rcnn import BUNDLED_WEIGHTS
from digitdet.score.metrics import gt_numbers

pytestmark = pytest.mark.skipif(not BUNDLED_WEIGHTS.exists(), reason="no bundled model in this checkout")


def test_bundled_model_is_small_and_self_describing():
    assert BUNDLED_WEIGHTS.stat().st_size <= 25 * 2**20
    state = load_checkpoint(BUNDLED_WEIGHTS)
    assert state["config"]["pretrained"] == "none"  # rebuilds from the file alone, nothing to fetch
    assert 0.0 < state["decoder"]["score_thresh"] < 1.0


def test_pretrained_bundled_fine_tunes_the_shipped_model_with_the_default_recipe():
    import torch

    from digitdet.config import load_config
    from digitdet.models.faster_rcnn import build_model

    shipped = load_checkpoint(BUNDLED_WEIGHTS)["model"]
    own = build_model(load_config("default", ["pretrained=bundled"])).state_dict()
    assert set(shipped) <= set(own)
    assert all(torch.equal(own[k], shipped[k].to(own[k].dtype)) for k in shipped)


def test_predict_without_weights_uses_the_bundled_model(tiny_data, tmp_path):
    assert main(["predict", "--images", str(tiny_data / "test"), "--out", str(tmp_path), "--quiet",
                 "--workers", "0"]) == 0
    assert sorted(read_pred_csv(tmp_path / "pred.csv")) == list(range(1, 7))
    assert not (tmp_path / "image_ids.csv").exists()  # every file is named by its id


def test_predict_reads_photos_with_any_names_and_says_which_row_is_which(tiny_data, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for src, name in (("1.png", "front door, left.png"), ("2.png", "12.png"), ("3.png", "back.png")):
        shutil.copy(tiny_data / "test" / src, photos / name)
    assert main(["predict", "--images", str(photos), "--out", str(tmp_path / "out"), "--quiet",
                 "--workers", "0"]) == 0
    read = read_pred_csv(tmp_path / "out" / "pred.csv")
    assert sorted(read) == [12, 13, 14]
    # a few photos: the numbers read are printed by file name too
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["read"] == {"12.png": read[12], "back.png": read[13], "front door, left.png": read[14]}
    rows = (tmp_path / "out" / "image_ids.csv").read_text().splitlines()
    assert rows == ["image_id,file_name", "12,12.png", "13,back.png", '14,"front door, left.png"']
    # the same folder for photos named by their ids: no stale mapping is left behind
    assert main(["predict", "--images", str(tiny_data / "test"), "--out", str(tmp_path / "out"), "--quiet",
                 "--workers", "0"]) == 0
    assert not (tmp_path / "out" / "image_ids.csv").exists()


def test_bundled_model_reads_numbers_drawn_by_other_means(pillow_numbers, tmp_path):
    """Numbers set in Pillow's built-in font (Aileron, which the renderer never uses) on plain
    backgrounds: the bundled model, trained only on the renderer's images, reads them all
    (20 of 20 when this test was written)."""
    data = pillow_numbers
    assert main(["predict", "--images", str(data / "test"), "--out", str(tmp_path / "pred"), "--quiet",
                 "--workers", "0"]) == 0
    truth = gt_numbers(read_json(data / "test_gt.json"))
    read = read_pred_csv(tmp_path / "pred" / "pred.csv")
    assert len(truth) == 20
    assert sum(read[i] == number for i, number in truth.items()) >= 18, (truth, read)


@pytest.mark.slow
def test_large_photo_without_a_number_reads_minus_one(tmp_path):
    """A 1024x768 photo of a cat or of coffee holds no house number: SVHN's crops always do, so
    line reading starts a number from its best weak box there, but not in photos this large
    (``decode_line_start_below``); without that limit the bundle read a number into both."""
    from PIL import Image
    from skimage import data as samples

    photos = tmp_path / "photos"
    photos.mkdir()
    for image_id, name in ((1, "chelsea"), (2, "coffee")):
        Image.fromarray(getattr(samples, name)()).resize((1024, 768)).save(photos / f"{image_id}.png")
    common = ["--images", str(photos), "--quiet", "--workers", "0"]
    assert main(["predict", *common, "--out", str(tmp_path / "a")]) == 0
    assert read_pred_csv(tmp_path / "a" / "pred.csv") == {1: "-1", 2: "-1"}
    assert main(["predict", *common, "--out", str(tmp_path / "b"), "decode_line_start_below=0"]) == 0
    assert read_pred_csv(tmp_path / "b" / "pred.csv") != {1: "-1", 2: "-1"}


def test_a_phone_photo_turned_by_its_exif_tag_is_read_upright(tiny_data, tmp_path):
    """A portrait photo as a phone stores it (pixels turned a quarter, EXIF orientation 6) reads
    as the upright photo does, boxes in the upright frame."""
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(tiny_data / "test" / "1.png", photos / "1.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    with Image.open(tiny_data / "test" / "1.png") as im:
        im.transpose(Image.Transpose.ROTATE_90).save(photos / "2.png", exif=exif)
    assert main(["predict", "--images", str(photos), "--out", str(tmp_path / "out"), "--quiet",
                 "--workers", "0"]) == 0
    read = read_pred_csv(tmp_path / "out" / "pred.csv")
    assert read[1] != "-1" and read[2] == read[1]
    boxes = {i: sorted(tuple(round(v) for v in r["bbox"]) for r in read_pred_json(tmp_path / "out" / "pred.json")
                       if r["image_id"] == i and r["score"] >= 0.5) for i in (1, 2)}
    assert boxes[2] == boxes[1]
