"""digitdet.io: exact bytes of pred.csv, round trips, atomic writes, safe checkpoint loading."""
import json

import pytest
import torch

from digitdet import io


def _record(image_id=1, bbox=(1.0, 2.0, 3.0, 4.0), score=0.9, category_id=1):
    return {"image_id": image_id, "bbox": list(bbox), "score": score, "category_id": category_id}


# ---- pred.csv ------------------------------------------------------------------------------

def test_pred_csv_exact_bytes_sorted_with_leading_zero_and_none(tmp_path):
    path = tmp_path / "pred.csv"
    io.write_pred_csv(path, {10: "117", 2: "07", 1: "-1", 3: "5"})  # ids deliberately unsorted
    assert path.read_bytes() == b"image_id,pred_label\n1,-1\n2,07\n3,5\n10,117\n"
    assert io.read_pred_csv(path) == {1: "-1", 2: "07", 3: "5", 10: "117"}


def test_pred_csv_refuses_int_labels_that_would_lose_leading_zeros(tmp_path):
    with pytest.raises(ValueError, match="string of digits"):
        io.write_pred_csv(tmp_path / "pred.csv", {1: 7})


@pytest.mark.parametrize("text, message", [
    ("id,label\n1,5\n", "header"),
    ("image_id,pred_label\n1,5\n1,6\n", "appears twice"),
    ("image_id,pred_label\nx,5\n", "line 2"),
    ("image_id,pred_label\n1,5a\n", "digits or -1"),
])
def test_read_pred_csv_rejects_bad_files(tmp_path, text, message):
    path = tmp_path / "pred.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        io.read_pred_csv(path)


# ---- pred.json -----------------------------------------------------------------------------

def test_pred_json_round_trip_rounds_floats(tmp_path):
    path = tmp_path / "pred.json"
    records = [_record(3, (1.23456, 2.0, 3.0, 4.98765), 0.123456789, 10), _record(1)]
    io.write_pred_json(path, records)
    back = io.read_pred_json(path)
    assert back == [_record(3, (1.23, 2.0, 3.0, 4.99), 0.12346, 10), _record(1)]
    assert json.loads(path.read_text()) == back  # plain COCO results, nothing else in the file


@pytest.mark.parametrize("bad, message", [
    ({"bbox": [0, 0, -1, 4]}, "width/height"),
    ({"score": 1.5}, "score"),
    ({"category_id": 0}, "category_id"),
    ({"image_id": "7"}, "image_id"),
    ({"bbox": [0, 0, 1]}, "4 finite"),
])
def test_write_pred_json_rejects_bad_records(tmp_path, bad, message):
    records = [_record(), {**_record(), **bad}]
    with pytest.raises(ValueError, match=f"record 1.*{message}"):
        io.write_pred_json(tmp_path / "pred.json", records)
    assert not (tmp_path / "pred.json").exists()


def test_read_pred_json_names_file_and_record(tmp_path):
    path = tmp_path / "pred.json"
    path.write_text(json.dumps([_record(), {"image_id": 1}]))
    with pytest.raises(ValueError, match=r"pred\.json: record 1: missing key 'bbox'"):
        io.read_pred_json(path)


# ---- JSON and atomic writes ----------------------------------------------------------------

def test_read_json_errors_name_the_file(tmp_path):
    with pytest.raises(ValueError, match="annotation file .*missing.json not found"):
        io.read_json(tmp_path / "missing.json", what="annotation file")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json is not valid JSON"):
        io.read_json(tmp_path / "bad.json")


def test_atomic_writes_leave_no_temp_files(tmp_path):
    out = tmp_path / "sub" / "dir"  # parent folders are created
    io.atomic_write_bytes(out / "a.bin", b"old")
    io.atomic_write_bytes(out / "a.bin", b"new")
    io.write_json(out / "m.json", {"x": 1})
    io.save_checkpoint(out / "c.pt", {"model": {}, "config": {}})
    assert sorted(p.name for p in out.iterdir()) == ["a.bin", "c.pt", "m.json"]
    assert (out / "a.bin").read_bytes() == b"new"


def test_failed_write_keeps_old_file_and_no_temp(tmp_path):
    path = tmp_path / "m.json"
    io.write_json(path, {"x": 1})
    with pytest.raises(TypeError):
        io.write_json(path, {"x": object()})  # not serialisable: fails before any byte is written
    with pytest.raises(RuntimeError):
        io.save_checkpoint(tmp_path / "m.json", {"model": _Unpicklable(), "config": {}})
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]
    assert json.loads(path.read_text()) == {"x": 1}


class _Unpicklable:
    def __reduce__(self):
        raise RuntimeError("cannot pickle this")


# ---- checkpoints ---------------------------------------------------------------------------

def test_checkpoint_round_trip(tmp_path):
    state = {"model": {"w": torch.arange(3.0)}, "config": {"backbone": "resnet18_fpn", "lr": 0.01},
             "epoch": 4, "rng": {"torch": torch.get_rng_state()}}
    io.save_checkpoint(tmp_path / "c.pt", state)
    back = io.load_checkpoint(tmp_path / "c.pt")
    assert torch.equal(back["model"]["w"], state["model"]["w"])
    assert back["config"] == state["config"] and back["epoch"] == 4


def test_load_checkpoint_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        io.load_checkpoint(tmp_path / "nope.pt")


def test_load_checkpoint_rejects_non_checkpoints(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match=r"plain\.pt is not a digitdet checkpoint.*'model', 'config'"):
        io.load_checkpoint(tmp_path / "plain.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(ValueError, match=r"text\.pt"):
        io.load_checkpoint(tmp_path / "text.pt")


class Arbitrary:
    """Stands for any class a pickle could smuggle in (and run code on load)."""


def test_load_checkpoint_refuses_arbitrary_pickled_objects(tmp_path):
    torch.save({"model": {}, "config": Arbitrary()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match=r"evil\.pt cannot be loaded safely.*Arbitrary"):
        io.load_checkpoint(tmp_path / "evil.pt")


def test_save_checkpoint_requires_model_and_config(tmp_path):
    with pytest.raises(ValueError, match="lacks key"):
        io.save_checkpoint(tmp_path / "c.pt", {"model": {}})
