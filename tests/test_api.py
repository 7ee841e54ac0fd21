"""digitdet.Reader and `digitdet read`: the numbers predict writes, from Python and from the shell."""
import json

import numpy as np
import pytest
from PIL import Image

import digitdet
from digitdet.cli import main
from digitdet.data.images import list_images
from digitdet.io import read_pred_csv


@pytest.fixture(scope="module")
def reader():
    return digitdet.Reader(device="cpu", threads=1)


@pytest.fixture(scope="module")
def predicted(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("pred")
    assert main(["predict", "--images", str(tiny_data / "test"), "--out", str(out), "--quiet", "--workers", "0"]) == 0
    return read_pred_csv(out / "pred.csv")


def test_reader_reads_what_predict_writes(reader, tiny_data, predicted):
    items = list_images(tiny_data / "test")
    results = reader([path for _, path in items], batch_size=32)
    assert [r.number or "-1" for r in results] == [predicted[i] for i, _ in items]
    for r in results:  # the digits are those of the number, left to right, boxes inside the photo
        assert "".join(str(d.digit) for d in r.digits) == (r.number or "")
        xs = [d.box[0] for d in r.digits]
        assert xs == sorted(xs) and all(0 <= d.score <= 1 for d in r.digits)
        assert all(d.box[0] + d.box[2] <= r.width + 1e-3 and d.box[1] + d.box[3] <= r.height + 1e-3 for d in r.digits)


def test_every_input_kind_reads_the_same(reader, tiny_data):
    path = list_images(tiny_data / "test")[0][1]
    image = Image.open(path).convert("RGB")
    by_path = reader(path)
    assert by_path.source == str(path)
    for same in (str(path), image, np.asarray(image), path.read_bytes()):
        r = reader(same)
        assert (r.number, r.digits, r.width, r.height) == (by_path.number, by_path.digits, by_path.width, by_path.height)
    assert json.loads(json.dumps(by_path.to_dict()))["number"] == by_path.number


def test_a_photo_without_digits_reads_none_and_bad_inputs_are_clear(reader, tmp_path):
    blank = reader(np.full((60, 160, 3), 128, np.uint8))
    assert blank.number is None and blank.digits == []
    saved = blank.save(tmp_path / "blank.png")
    assert Image.open(saved).size[0] >= 160
    with pytest.raises(ValueError, match="not a readable image"):
        reader(b"not a picture")
    with pytest.raises(ValueError, match="HxWx3"):
        reader(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="cannot read a photo from int"):
        reader(7)
    assert reader([]) == []


def test_read_prints_one_line_a_photo_and_saves_pictures(tiny_data, predicted, tmp_path, capsys):
    items = list_images(tiny_data / "test")
    assert main(["read", str(tiny_data / "test"), "--save", str(tmp_path / "ann"), "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(items)
    for (image_id, path), text in zip(items, lines):
        name, number = text.split()[:2]
        assert name == str(path) and number == (predicted[image_id] if predicted[image_id] != "-1" else "-")
        assert (tmp_path / "ann" / f"{path.stem}.png").exists()
    assert main(["read", str(tiny_data / "test" / "*.png"), "--json", "--device", "cpu"]) == 0
    records = [json.loads(t) for t in capsys.readouterr().out.strip().splitlines()]
    assert [r["number"] or "-1" for r in records] == [predicted[i] for i, _ in items]
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"png?")
    assert main(["read", str(bad), str(items[0][1]), "--device", "cpu"]) == 2  # the good one is still read
    out, err = capsys.readouterr()
    assert "bad.png" in err and err.count("\n") == 1 and len(out.strip().splitlines()) == 1
    assert main(["read", str(tmp_path / "missing.jpg")]) == 2
    assert "no such photo" in capsys.readouterr().err


def test_import_is_light_and_version_is_known(capsys):
    import subprocess
    import sys
    code = "import sys, digitdet; print('torch' in sys.modules, digitdet.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", digitdet.__version__]
    assert main(["--version"]) == 0 and digitdet.__version__ in capsys.readouterr().out
    code = "import sys; from digitdet.cli import main; main(['--version']); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.split()[-1] == "False"


def test_predict_writes_results_jsonl_beside_the_course_files(tiny_data, tmp_path, reader):
    assert main(["predict", "--images", str(tiny_data / "test"), "--out", str(tmp_path), "--quiet",
                 "--workers", "0"]) == 0
    numbers = read_pred_csv(tmp_path / "pred.csv")
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["image_id"] for r in rows] == sorted(numbers)
    items = dict(list_images(tiny_data / "test"))
    for r in rows:
        assert (r["number"] or "-1") == numbers[r["image_id"]] and r["file"] == items[r["image_id"]].name
        assert "".join(str(d["digit"]) for d in r["digits"]) == (r["number"] or "")
        assert [d["digit"] for d in r["digits"]] == [d.digit for d in reader(items[r["image_id"]]).digits]
