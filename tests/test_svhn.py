"""SVHN digitStruct -> COCO: a .mat written here in SVHN's v7.3 layout, and the real sample."""
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from digitdet.cli import main
from digitdet.data.svhn import read_digitstruct, read_svhn_json, svhn_to_coco
from digitdet.labels import category_to_digit

SAMPLE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "svhn_format1_sample"
TEST_BOXES = SAMPLE.parent / "svhn_test_boxes.json"

# name -> boxes (left, top, width, height, label); 12.png has no image on disk.
ENTRIES = {
    "10.png": [(5, 4, 8, 20, 10), (14, 3, 9, 21, 1), (24, 5, 8, 19, 7)],  # 3 digits: references
    "11.png": [(2, 1, 6, 30, 4)],  # 1 digit: plain scalars; height runs past the 20 px image
    "12.png": [(1, 1, 5, 9, 3)],
}
SIZES = {"10.png": (40, 30), "11.png": (12, 20)}


def _write_digitstruct(path: Path, entries: dict) -> None:
    """The layout MATLAB v7.3 gives SVHN's digitStruct: names and bboxes are (N, 1) object
    references into #refs#; a bbox field is a list of references for several digits and a
    plain (1, 1) number for one."""
    with h5py.File(path, "w") as f:
        refs = f.create_group("#refs#")
        names, bboxes = [], []
        for i, (name, boxes) in enumerate(entries.items()):
            chars = refs.create_dataset(f"name{i}", data=np.array([[ord(c)] for c in name], np.uint16))
            names.append(chars.ref)
            group = refs.create_group(f"bbox{i}")
            for j, field in enumerate(("left", "top", "width", "height", "label")):
                values = [float(b[j]) for b in boxes]
                if len(values) == 1:
                    group.create_dataset(field, data=np.array([[values[0]]]))
                else:
                    cells = [refs.create_dataset(f"v{i}_{field}_{k}", data=np.array([[v]])).ref
                             for k, v in enumerate(values)]
                    group.create_dataset(field, data=np.array(cells, dtype=h5py.ref_dtype).reshape(-1, 1))
            bboxes.append(group.ref)
        ds = f.create_group("digitStruct")
        ds.create_dataset("name", data=np.array(names, dtype=h5py.ref_dtype).reshape(-1, 1))
        ds.create_dataset("bbox", data=np.array(bboxes, dtype=h5py.ref_dtype).reshape(-1, 1))


@pytest.fixture
def svhn_dir(tmp_path):
    _write_digitstruct(tmp_path / "digitStruct.mat", ENTRIES)
    for name, size in SIZES.items():
        Image.new("RGB", size, (90, 90, 90)).save(tmp_path / name)
    return tmp_path


def test_read_digitstruct_both_layouts(svhn_dir):
    totals = []
    records = read_digitstruct(svhn_dir / "digitStruct.mat",
                               progress=lambda it, total: totals.append(total) or it)
    assert totals == [3]
    assert [r["filename"] for r in records] == list(ENTRIES)
    for rec, boxes in zip(records, ENTRIES.values()):
        got = [tuple(b[k] for k in ("left", "top", "width", "height", "label")) for b in rec["boxes"]]
        assert got == [tuple(float(v) for v in b) for b in boxes]


def test_svhn_to_coco(svhn_dir):
    coco, report = svhn_to_coco(svhn_dir / "digitStruct.mat", svhn_dir)
    assert report["entries"] == 3 and report["images"] == 2
    assert report["skipped_missing_images"] == 1 and report["missing_examples"] == ["12.png"]
    assert [(im["id"], im["file_name"], im["width"], im["height"]) for im in coco["images"]] == \
        [(10, "10.png", 40, 30), (11, "11.png", 12, 20)]
    digits = [(a["image_id"], category_to_digit(a["category_id"])) for a in coco["annotations"]]
    assert digits == [(10, 0), (10, 1), (10, 7), (11, 4)]  # label 10 is digit 0
    assert coco["annotations"][0]["bbox"] == [5.0, 4.0, 8.0, 20.0]  # COCO xywh, as SVHN's
    # 11.png's box (top 1, height 30) is clipped to the 20 px image: height 20 - 1.
    assert coco["annotations"][3]["bbox"] == [2.0, 1.0, 6.0, 20.0 - 1.0]
    assert report["clipped_boxes"] == 1 and report["dropped_boxes"] == 0
    assert len({a["id"] for a in coco["annotations"]}) == report["annotations"] == 4


def test_not_a_digitstruct(tmp_path):
    with h5py.File(tmp_path / "other.mat", "w") as f:
        f.create_dataset("digitStruct/name", data=np.zeros(3))
    with pytest.raises(ValueError, match=r"other\.mat.*digitStruct/bbox"):
        read_digitstruct(tmp_path / "other.mat")
    (tmp_path / "text.mat").write_text("MATLAB 5.0 MAT-file")
    with pytest.raises(ValueError, match=r"text\.mat.*HDF5"):
        read_digitstruct(tmp_path / "text.mat")
    with pytest.raises(FileNotFoundError, match="missing.mat"):
        read_digitstruct(tmp_path / "missing.mat")


def test_json_form_matches_mat(svhn_dir, tmp_path):
    records = read_digitstruct(svhn_dir / "digitStruct.mat")
    (tmp_path / "boxes.json").write_text(json.dumps(records))
    assert read_svhn_json(tmp_path / "boxes.json") == records
    (tmp_path / "bad.json").write_text(json.dumps([{"filename": "1.png", "boxes": [{"left": 1}]}]))
    with pytest.raises(ValueError, match=r"bad\.json.*1\.png"):
        read_svhn_json(tmp_path / "bad.json")


def test_cli_convert_svhn(svhn_dir, tmp_path, capsys):
    out = tmp_path / "out" / "train.json"
    assert main(["convert", "svhn", "--mat", str(svhn_dir / "digitStruct.mat"),
                 "--images", str(svhn_dir), "--out", str(out)]) == 0
    assert out.is_file() and "skipped 1" in capsys.readouterr().out
    assert main(["convert", "svhn", "--mat", str(svhn_dir / "10.png"),
                 "--images", str(svhn_dir), "--out", str(out)]) == 2
    assert "10.png" in capsys.readouterr().err


@pytest.mark.skipif(not SAMPLE.is_dir(), reason="shared SVHN sample not present (a user's clone)")
def test_real_sample():
    coco, report = svhn_to_coco(SAMPLE / "digitStruct.mat", SAMPLE)
    assert report["entries"] == 40 and report["images"] == 3 and report["skipped_missing_images"] == 37
    by_image = {im["file_name"]: im["id"] for im in coco["images"]}
    numbers = {name: "".join(str(category_to_digit(a["category_id"])) for a in coco["annotations"]
                             if a["image_id"] == image_id) for name, image_id in by_image.items()}
    assert numbers == {"1.png": "478", "2.png": "71", "3.png": "174"}  # what the photos show
    single = {r["filename"]: r["boxes"] for r in read_digitstruct(SAMPLE / "digitStruct.mat")}["22.png"]
    assert [b["label"] for b in single] == [4.0]  # the plain-scalar layout of one digit


@pytest.mark.skipif(not TEST_BOXES.is_file(), reason="shared SVHN test boxes not present")
def test_real_json_box_list():
    records = read_svhn_json(TEST_BOXES)
    assert len(records) == 13068
    assert [b["label"] for b in records[1]["boxes"]] == [2.0, 1.0, 10.0]  # 2.png reads "210"
