"""Validation of COCO digit files at the boundary, image modes, and the datasets."""
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from digitdet.data.coco import DigitDataset, ImageFolderDataset, load_coco_digits
from digitdet.data.images import image_size, list_images, load_rgb
from digitdet.data.transforms import build_transforms


def _copy(tiny_data, tmp_path):
    root = tmp_path / "d"
    shutil.copytree(tiny_data, root)
    return root, json.loads((root / "train.json").read_text())


def _write(root, coco):
    (root / "train.json").write_text(json.dumps(coco))
    return root / "train.json"


def test_clean_file_loads(tiny_data):
    coco, report = load_coco_digits(tiny_data / "train.json", tiny_data / "train")
    assert report.images == 16 and report.clipped == 0 and report.dropped == 0
    assert len(coco["annotations"]) == report.annotations > 0


@pytest.mark.parametrize("mutate, error, match", [
    (lambda c: c["annotations"][0].update(category_id=11), ValueError, r"annotation id 1: unknown category_id 11"),
    (lambda c: c["images"].append(dict(c["images"][0])), ValueError, r"duplicate image id 1"),
    (lambda c: c["images"][0].update(file_name="missing.png"), FileNotFoundError, r"missing.png"),
    (lambda c: c["annotations"][0].update(image_id=999), ValueError, r"image_id 999"),
    (lambda c: c["annotations"][1].update(id=c["annotations"][0]["id"]), ValueError, r"duplicate annotation id"),
])
def test_fatal_errors_name_file_and_id(tiny_data, tmp_path, mutate, error, match):
    root, coco = _copy(tiny_data, tmp_path)
    mutate(coco)
    ann = _write(root, coco)
    with pytest.raises(error, match=match) as e:
        load_coco_digits(ann, root / "train")
    assert "train.json" in str(e.value)


def test_boxes_outside_are_clipped_and_empty_dropped(tiny_data, tmp_path):
    root, coco = _copy(tiny_data, tmp_path)
    w = coco["images"][0]["width"]
    a0, a1 = coco["annotations"][0], coco["annotations"][1]
    a0["bbox"] = [w - 5, 2, 20, 10]  # 15 px past the right edge
    a1["bbox"] = [3, 3, 0, 10]  # zero width
    cleaned, report = load_coco_digits(_write(root, coco), root / "train")
    assert report.clipped == 1 and report.dropped == 1
    fixed = next(a for a in cleaned["annotations"] if a["id"] == a0["id"])
    assert fixed["bbox"] == [w - 5, 2, 5, 10]
    assert all(a["id"] != a1["id"] for a in cleaned["annotations"])
    assert "clipped" in report.summary("train.json")


def test_image_without_annotations_is_kept_as_negative(tiny_data, tmp_path):
    root, coco = _copy(tiny_data, tmp_path)
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] != 1]
    cleaned, report = load_coco_digits(_write(root, coco), root / "train")
    assert report.negatives == 1
    ds = DigitDataset(cleaned, root / "train", build_transforms("none", False))
    img, target = ds[0]
    assert target["image_id"] == 1 and target["boxes"].shape == (0, 4) and img.shape[0] == 3


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "LA", "1"])
def test_any_image_mode_loads_as_rgb(tmp_path, mode):
    arr = (np.arange(20 * 30).reshape(20, 30) % 256).astype(np.uint8)
    im = Image.fromarray(arr).convert("RGB").convert(mode) if mode != "I;16" else \
        Image.fromarray((arr.astype(np.uint16) * 257))
    p = tmp_path / "x.png"
    im.save(p)
    rgb = load_rgb(p)
    assert rgb.mode == "RGB" and rgb.size == (30, 20)
    if mode == "I;16":  # scaled by range, not clipped to white
        assert np.asarray(rgb).max() == 255 and np.asarray(rgb).min() == 0


def test_corrupt_image_is_a_clear_error(tmp_path):
    p = tmp_path / "3.png"
    p.write_bytes(b"not a png")
    with pytest.raises(ValueError, match="3.png: not a readable image"):
        load_rgb(p)


def test_test_folder_ids_and_bad_names(tiny_data, tmp_path):
    assert [i for i, _ in list_images(tiny_data / "test")] == list(range(1, 7))
    for name in ("abc.png", "5.png", "Door.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    # integer stems keep their id; other photos are numbered after the largest, in name order
    assert [(i, p.name) for i, p in list_images(tmp_path)] == [(5, "5.png"), (6, "Door.jpg"), (7, "abc.png")]
    (tmp_path / "005.png").write_bytes(b"")
    with pytest.raises(ValueError, match="5.png: image id 5 also used by 005.png"):
        list_images(tmp_path)


def _phone_photo(upright: Image.Image, path) -> None:
    """``upright`` stored as a phone stores a portrait photo: turned a quarter (counter-clockwise),
    with EXIF orientation 6 ("turn 90 degrees clockwise to view")."""
    exif = Image.Exif()
    exif[0x0112] = 6
    upright.transpose(Image.Transpose.ROTATE_90).save(path, exif=exif)


def test_exif_orientation_is_applied_as_a_viewer_shows_the_photo(tmp_path):
    upright = Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 50, 3), dtype=np.uint8))
    for suffix in (".png", ".jpg"):
        path = tmp_path / f"1{suffix}"
        _phone_photo(upright, path)
        with Image.open(path) as stored:
            assert stored.size == (30, 50)  # as stored: turned
        assert image_size(path) == (50, 30) == load_rgb(path).size
    assert np.array_equal(np.asarray(load_rgb(tmp_path / "1.png")), np.asarray(upright))  # lossless: exact
    # annotations drawn on the stored, turned pixels do not fit the upright photo: said, not trained on
    (tmp_path / "train.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "1.png", "width": 30, "height": 50}],
        "annotations": [{"id": 1, "image_id": 1, "bbox": [2, 2, 10, 20], "category_id": 2}]}))
    coco, _ = load_coco_digits(tmp_path / "train.json", tmp_path)
    with pytest.raises(ValueError, match="1.png: annotated as 30x50, but its EXIF orientation shows it upright"):
        DigitDataset(coco, tmp_path, build_transforms("none", False))[0]


def test_heic_photos_are_read_upright_with_the_heif_extra_and_named_without_it(tmp_path, monkeypatch):
    from digitdet.data import images

    path = tmp_path / "1.heic"
    if images.HEIF:  # the heif extra (make install has it): an iPhone's photo, stored turned with its tag
        upright = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 64, 3), dtype=np.uint8))
        exif = Image.Exif()
        exif[0x0112] = 6
        upright.transpose(Image.Transpose.ROTATE_90).save(path, quality=95, exif=exif.tobytes())
        assert image_size(path) == (64, 40) == load_rgb(path).size
        assert [i for i, _ in list_images(tmp_path)] == [1]
    else:
        path.write_bytes(b"")
    monkeypatch.setattr(images, "HEIF", False)  # as without the extra
    for read in (load_rgb, image_size):
        with pytest.raises(ValueError, match=r"1.heic: a HEIC/HEIF photo; to read it install the heif extra"):
            read(path)


def test_one_image_file_is_a_folder_of_one(tmp_path):
    (tmp_path / "17.png").write_bytes(b"")
    (tmp_path / "front door.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_bytes(b"")
    assert list_images(tmp_path / "17.png") == [(17, tmp_path / "17.png")]
    assert list_images(tmp_path / "front door.png") == [(1, tmp_path / "front door.png")]
    with pytest.raises(ValueError, match="notes.txt: not an image"):
        list_images(tmp_path / "notes.txt")
    with pytest.raises(NotADirectoryError, match="missing: no such folder"):
        list_images(tmp_path / "missing")


def test_unreadable_test_image_is_reported_not_fatal(tiny_data, tmp_path):
    folder = tmp_path / "t"
    shutil.copytree(tiny_data / "test", folder)
    (folder / "99.png").write_bytes(b"garbage")
    ds = ImageFolderDataset(folder, build_transforms("none", False))
    img, t = ds[len(ds) - 1]
    assert img is None and t["image_id"] == 99 and "99.png" in t["error"]


def test_augmentation_is_seeded_per_sample_and_epoch(tiny_data):
    coco, _ = load_coco_digits(tiny_data / "train.json", tiny_data / "train")
    ds = DigitDataset(coco, tiny_data / "train", build_transforms("digits", True), seed=3)
    a, _ = ds[2]
    torch.manual_seed(123)  # the global RNG must not matter
    b, _ = ds[2]
    assert torch.equal(a, b)
    ds.set_epoch(1)
    c, _ = ds[2]
    assert a.shape != c.shape or not torch.equal(a, c)


def test_transforms_never_flip(tiny_data):
    coco, _ = load_coco_digits(tiny_data / "train.json", tiny_data / "train")
    ds = DigitDataset(coco, tiny_data / "train", build_transforms("digits", True))
    for epoch in range(8):
        ds.set_epoch(epoch)
        _, t = ds[0]
        x = t["boxes"][:, 0].tolist()
        raw = ds.target(0)
        if len(x) == len(raw["labels"]):  # boxes keep their left-to-right order
            assert x == sorted(x) and t["labels"].tolist() == raw["labels"].tolist()


def test_grey_is_refused_where_a_digit_differs_from_its_plate_in_colour_only():
    # purple on green has about the same luminance: in grey the digit is gone, yet labelled
    from torchvision import tv_tensors

    from digitdet.data.transforms import GreyKeepingDigits

    def photo(ink, plate):
        img = torch.empty(3, 40, 60, dtype=torch.uint8)
        img[:] = torch.tensor(plate, dtype=torch.uint8)[:, None, None]
        img[:, 10:30, 20:26] = torch.tensor(ink, dtype=torch.uint8)[:, None, None]  # a 1's stem
        return tv_tensors.Image(img)

    boxes = tv_tensors.BoundingBoxes([[16.0, 8.0, 30.0, 32.0]], format="XYXY", canvas_size=(40, 60))
    grey = GreyKeepingDigits(p=1.0)
    target = {"boxes": boxes, "labels": torch.tensor([2])}
    vivid, plain = photo((150, 40, 170), (60, 140, 40)), photo((20, 20, 20), (230, 220, 200))
    out, t = grey(vivid, target)
    assert torch.equal(out, vivid) and t is target  # left in colour
    out, _ = grey(plain, target)
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2]) and not torch.equal(out, plain)
    # the same vivid photo with no digit boxes may go grey; p = 0 never does
    out, _ = grey(vivid, {"boxes": boxes[:0], "labels": torch.tensor([], dtype=torch.int64)})
    assert torch.equal(out[0], out[2])
    assert torch.equal(GreyKeepingDigits(p=0.0)(plain, target)[0], plain)
    with pytest.raises(ValueError, match="GreyKeepingDigits"):
        GreyKeepingDigits(p=1.5)


def test_crop_around_digits_keeps_every_digit_whole_within_its_margins():
    from PIL import Image

    from digitdet.data.transforms import PairedTransform

    boxes = torch.tensor([[100.0, 60.0, 110.0, 80.0], [112.0, 62.0, 122.0, 82.0]])  # 20 px tall digits
    target = {"boxes": boxes, "labels": torch.tensor([2, 5])}
    crop = PairedTransform("none", crop_digits_p=1.0)
    lo, hi = 0.4 * 20, 1.2 * 20  # the default margins, in pixels
    for seed in range(20):
        torch.manual_seed(seed)
        img, t = crop(Image.new("RGB", (300, 200)), target)
        h, w = img.shape[-2:]
        # the crop spans the digits plus a margin in [lo, hi] (+1 px of rounding) on each side
        assert 22 + 2 * lo - 1 <= w <= 22 + 2 * hi + 2 and 22 + 2 * lo - 1 <= h <= 22 + 2 * hi + 2
        assert t["labels"].tolist() == [2, 5]
        sizes = t["boxes"][:, 2:] - t["boxes"][:, :2]
        assert torch.allclose(sizes, boxes[:, 2:] - boxes[:, :2])  # moved, never cut
        assert (t["boxes"][:, :2] >= lo - 1).all() and (t["boxes"][:, 2] <= w - lo + 1).all()
    # at the photo's edge the crop is clipped, and p = 0 leaves the photo alone
    edge = {"boxes": torch.tensor([[0.0, 0.0, 10.0, 20.0]]), "labels": torch.tensor([1])}
    img, t = crop(Image.new("RGB", (300, 200)), edge)
    assert t["boxes"][0, :2].tolist() == [0.0, 0.0] and img.shape[-1] < 300
    img, t = PairedTransform("none", crop_digits_p=0.0)(Image.new("RGB", (300, 200)), target)
    assert img.shape[-2:] == (200, 300) and torch.equal(t["boxes"], boxes)


def test_letter_boxes_are_validated_clipped_and_become_targets_on_request(tiny_data, tmp_path):
    from digitdet import labels as L
    root, coco = _copy(tiny_data, tmp_path)
    w = coco["images"][0]["width"]
    coco["images"][0]["letter_boxes"] = [[w - 4, 2, 10, 20], [1, 1, 0, 5]]  # past the edge; empty
    cleaned, _ = load_coco_digits(_write(root, coco), root / "train")
    im = next(i for i in cleaned["images"] if i["id"] == coco["images"][0]["id"])
    assert im["letter_boxes"] == [[w - 4, 2, 4, 20]]
    n_digits = sum(a["image_id"] == im["id"] for a in cleaned["annotations"])
    plain = DigitDataset(cleaned, root / "train", build_transforms("none", False))
    with_letters = DigitDataset(cleaned, root / "train", build_transforms("none", False), letter_label=L.LETTER)
    i = plain.images.index(im)
    assert len(plain.target(i)["labels"]) == n_digits
    target = with_letters.target(i)
    assert target["labels"].tolist()[-1] == L.LETTER and len(target["labels"]) == n_digits + 1
    assert target["boxes"][-1].tolist() == [w - 4, 2, w, 22]
    coco["images"][0]["letter_boxes"] = [[1, 2, 3]]
    with pytest.raises(ValueError, match=r"train.json: image id \d+: letter_boxes"):
        load_coco_digits(_write(root, coco), root / "train")


class _Widths(torch.utils.data.Dataset):
    """Images 10 px tall of the given widths; the target names the sample."""

    def __init__(self, widths):
        self.widths = widths

    def __len__(self):
        return len(self.widths)

    def __getitem__(self, i):
        return torch.zeros(3, 10, self.widths[i]), {"image_id": i}


def _batches(widths, group, skip_batches=0, batch_size=2, replicas=1, rank=0):
    from digitdet.data.loaders import EpochSampler, train_loader

    sampler = EpochSampler(len(widths), seed=3, num_replicas=replicas, rank=rank)
    sampler.set_epoch(1, skip=skip_batches * batch_size)
    loader = train_loader(_Widths(widths), sampler, batch_size, 0, group)
    out = [[t["image_id"] for t in targets] for _, targets in loader]
    assert len(out) == len(loader)
    return out


def test_grouped_batches_are_aspect_sorted_pools_of_the_same_samples():
    widths = np.random.default_rng(0).integers(10, 60, 23).tolist()
    plain, grouped = _batches(widths, 1), _batches(widths, 3)
    assert len(grouped) == len(plain) == 11  # drop_last: 23 samples make 11 batches of 2
    for p in range(0, 9, 3):  # each pool of 3 batches holds the plain order's 6 samples, sorted by width
        pool = [i for b in grouped[p:p + 3] for i in b]
        assert sorted(pool) == sorted(i for b in plain[p:p + 3] for i in b)
        assert [widths[i] for i in pool] == sorted(widths[i] for i in pool)
    pad = [sum(len(b) * max(widths[i] for i in b) for b in bs) for bs in (plain, grouped)]
    assert pad[1] < pad[0]  # what grouping is for: less padding


@pytest.mark.parametrize("replicas,rank", [(1, 0), (2, 1)])
def test_grouped_batches_resume_mid_pool_where_the_run_stopped(replicas, rank):
    widths = np.random.default_rng(1).integers(10, 60, 41).tolist()
    full = _batches(widths, 4, replicas=replicas, rank=rank)
    for done in range(len(full) + 1):
        assert _batches(widths, 4, done, replicas=replicas, rank=rank) == full[done:], done


def test_inference_batches_group_by_shape_and_never_hold_more_than_the_pixel_budget():
    from digitdet.data.loaders import MAX_BATCH_PIXELS, shape_grouped_batches

    ratios = [2.0, 1.0, 3.0, 1.5, 2.5]
    assert shape_grouped_batches(ratios, 2) == [[1, 3], [0, 4], [2]]  # by aspect ratio, then by count
    small = [100 * 50] * 5  # SVHN-sized photos: the count decides, as without pixels
    assert shape_grouped_batches(ratios, 2, small) == shape_grouped_batches(ratios, 2)
    phone = [4032 * 3024, 640 * 480, 640 * 480, 4032 * 3024, 640 * 480]
    batches = shape_grouped_batches(ratios, 32, phone)
    assert sorted(i for b in batches for i in b) == list(range(5))
    assert all(len(b) == 1 or sum(phone[i] for i in b) <= MAX_BATCH_PIXELS for b in batches)
    assert [b for b in batches if 0 in b] == [[0]] and [b for b in batches if 3 in b] == [[3]]
