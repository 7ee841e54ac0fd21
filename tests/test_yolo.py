"""COCO <-> YOLO txt: the round trip returns the same boxes, classes are digits 0..9."""
import numpy as np
import pytest
import yaml
from PIL import Image

from digitdet.data.yolo import coco_to_yolo, yolo_to_coco
from digitdet.labels import coco_categories, digit_to_category

SIZES = {"3.png": (37, 23), "7.png": (120, 61), "9.png": (16, 16)}  # 9.png has no digit


def _coco():
    boxes = {3: [(0.5, 1.25, 10.0, 17.5, 0), (12.0, 2.0, 9.75, 20.0, 9)],
             7: [(100.125, 40.5, 19.875, 20.5, 5)]}
    anns = [{"id": n, "image_id": im, "category_id": digit_to_category(d), "bbox": [x, y, w, h],
             "area": w * h, "iscrowd": 0}
            for n, (im, (x, y, w, h, d)) in enumerate(((im, b) for im in boxes for b in boxes[im]), 1)]
    images = [{"id": int(n.split(".")[0]), "file_name": n, "width": w, "height": h}
              for n, (w, h) in SIZES.items()]
    return {"images": images, "annotations": anns, "categories": coco_categories()}


@pytest.fixture
def images_dir(tmp_path):
    d = tmp_path / "images"
    d.mkdir()
    for name, size in SIZES.items():
        Image.new("RGB", size).save(d / name)
    return d


def test_round_trip(images_dir, tmp_path):
    coco = _coco()
    report = coco_to_yolo(coco, images_dir, tmp_path / "labels")
    assert report["images"] == 3 and report["boxes"] == 3 and report["skipped_missing_images"] == 0
    line = (tmp_path / "labels" / "7.txt").read_text().split()
    # class = digit; cx = (x + w / 2) / image width, ...
    assert line[0] == "5" and float(line[1]) == pytest.approx((100.125 + 19.875 / 2) / 120)
    assert (tmp_path / "labels" / "9.txt").read_text() == ""
    back = yolo_to_coco(tmp_path / "labels", images_dir)
    assert back["images"] == coco["images"]
    assert [(a["image_id"], a["category_id"]) for a in back["annotations"]] == \
        [(a["image_id"], a["category_id"]) for a in coco["annotations"]]
    np.testing.assert_allclose([a["bbox"] for a in back["annotations"]],
                               [a["bbox"] for a in coco["annotations"]], atol=1e-6)


def test_class_files(images_dir, tmp_path):
    coco_to_yolo(_coco(), images_dir, tmp_path / "labels")
    names = yaml.safe_load((tmp_path / "labels" / "data.yaml").read_text())["names"]
    assert names == {i: str(i) for i in range(10)}
    assert (tmp_path / "labels" / "classes.txt").read_text().split() == [str(i) for i in range(10)]


def test_missing_image_skipped_and_wrong_size_rejected(images_dir, tmp_path):
    (images_dir / "9.png").unlink()
    report = coco_to_yolo(_coco(), images_dir, tmp_path / "a")
    assert report["skipped_missing_images"] == 1 and report["missing_examples"] == ["9.png"]
    Image.new("RGB", (5, 5)).save(images_dir / "3.png")
    with pytest.raises(ValueError, match=r"3\.png.*5x5"):
        coco_to_yolo(_coco(), images_dir, tmp_path / "b")


def test_bad_label_lines(images_dir, tmp_path):
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "3.txt").write_text("1 0.5 0.5 0.2 0.3\n10 0.5 0.5 0.1 0.1\n")
    with pytest.raises(ValueError, match=r"3\.txt:2: class must be a digit"):
        yolo_to_coco(labels, images_dir)
    (labels / "3.txt").write_text("1 0.5 0.5 0.2\n")
    with pytest.raises(ValueError, match=r"3\.txt:1: expected"):
        yolo_to_coco(labels, images_dir)
    (labels / "3.txt").write_text("1 12 40 7 9\n")  # pixels, not normalised
    with pytest.raises(ValueError, match=r"3\.txt:1: values must be normalised"):
        yolo_to_coco(labels, images_dir)
    (labels / "3.txt").unlink()
    (labels / "44.txt").write_text("")
    with pytest.raises(ValueError, match="44.txt"):
        yolo_to_coco(labels, images_dir)
