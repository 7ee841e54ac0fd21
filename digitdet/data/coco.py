"""COCO-format digit datasets: loading, validation at the boundary, torch Datasets, collate.

Layout (the assignment's): ``DATA/{train,valid,test}/*.png``, ``DATA/train.json``,
``DATA/valid.json``; the test folder has no annotations and an image's id is the integer
of its file stem. Targets follow torchvision's detection schema:
``{"boxes": float32 (N, 4) xyxy in pixels of the original image, "labels": int64 (N,)
category ids 1..10, "image_id": int}``.

An image entry may list ``"letter_boxes": [[x, y, w, h], ...]``: letters beside the number
("25D"), which are not digits and so not annotations (the synthetic renderer writes them).
A dataset built with ``letter_label`` adds them to the targets with that label
(``labels.LETTER``, config ``letter_class``).
"""
from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from digitdet import labels as L
from digitdet.boxes import clip_xyxy, xywh_to_xyxy
from digitdet.data.images import (exif_quarter_turned, image_size, list_images, load_rgb, load_rgb_within,
                                  verified_sizes)


@dataclass
class ValidationReport:
    """What :func:`load_coco_digits` fixed, to print once."""
    images: int = 0
    annotations: int = 0
    clipped: int = 0  # boxes partly outside their image, clipped to it
    dropped: int = 0  # boxes of zero or negative size after clipping, removed
    negatives: int = 0  # images without any digit (kept as negative examples)
    examples: list = field(default_factory=list)  # first few messages, for the user

    def note(self, msg: str) -> None:
        if len(self.examples) < 5:
            self.examples.append(msg)

    def summary(self, name: str) -> str:
        s = (f"{name}: {self.images} images, {self.annotations} digit boxes; "
             f"{self.clipped} boxes clipped to their image, {self.dropped} empty boxes dropped, "
             f"{self.negatives} images without digits kept")
        return s + "".join(f"\n  e.g. {m}" for m in self.examples)


def split_paths(data_root: str | Path, split: str) -> tuple[Path, Path | None]:
    """``(images_dir, annotation_file or None)`` of a split of the standard layout."""
    root = Path(data_root)
    if root.is_file():
        raise NotADirectoryError(f"{root}: is a file; a dataset is a folder (train/, valid/, test/, train.json, "
                                 "valid.json)")
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: dataset folder not found (expected train/, valid/, test/, "
                                 f"train.json, valid.json)")
    images = root / split
    if not images.is_dir():
        raise NotADirectoryError(f"{images}: split folder not found in {root}")
    ann = root / f"{split}.json"
    if not ann.exists() and split == "test" and (root / "test_gt.json").exists():
        ann = root / "test_gt.json"  # the synthetic renderer ships test truth under this name
    return images, (ann if ann.exists() else None)


def load_coco_digits(ann_file: str | Path, images_dir: str | Path, check_images: bool = True,
                     progress: bool | None = None) -> tuple[dict, ValidationReport]:
    """Read and validate a COCO digit file; returns a cleaned COCO dict and what was fixed.

    Fatal (ValueError naming the file and id): unreadable JSON, missing keys, duplicate image
    or annotation ids, an annotation of an unknown image, category_id outside 1..10, a
    missing image file (when ``check_images``). Fixed and counted: boxes partly outside the
    image are clipped; boxes with zero or negative size are dropped. Images without boxes
    are kept (negatives). Width/height missing from the JSON are read from the image file.
    ``progress``: the bar of the photos' check (None: on a terminal; False: never, ``--quiet``).
    """
    ann_file, images_dir = Path(ann_file), Path(images_dir)
    coco = _read_json(ann_file)
    report = ValidationReport()
    images = _validate_images(coco, ann_file, images_dir, check_images, progress)
    anns, by_image = [], {i: 0 for i in images}
    seen_ann: set = set()
    for a in coco["annotations"]:
        fixed = _validate_annotation(a, ann_file, images, seen_ann, report)
        if fixed is not None:
            anns.append(fixed)
            by_image[fixed["image_id"]] += 1
    report.images, report.annotations = len(images), len(anns)
    report.negatives = sum(1 for n in by_image.values() if n == 0)
    cleaned = {"images": list(images.values()), "annotations": anns,
               "categories": L.coco_categories()}
    return cleaned, report


def _read_json(path: Path) -> dict:
    if not path.exists():
        raise FileNotFoundError(f"{path}: annotation file not found")
    try:
        coco = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(coco, dict) or "images" not in coco or "annotations" not in coco:
        raise ValueError(f"{path}: not a COCO file (needs top-level 'images' and 'annotations' lists)")
    return coco


def _validate_images(coco: dict, ann_file: Path, images_dir: Path, check: bool,
                     progress: bool | None = None) -> dict[int, dict]:
    """The split's image entries by id; with ``check`` every photo is decoded (in parallel) and its
    size compared with the JSON's, so a broken file stops the run before its first step."""
    images: dict[int, dict] = {}
    to_read: list[tuple[dict, Path]] = []
    for k, im in enumerate(coco["images"]):
        if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
            raise ValueError(f"{ann_file}: images[{k}] {im!r} is not an entry with 'id' and 'file_name'")
        image_id = im["id"]
        if isinstance(image_id, float) and image_id.is_integer():
            image_id = int(image_id)  # 17.0, as pandas writes ids
        if isinstance(image_id, bool) or not isinstance(image_id, int):
            raise ValueError(f"{ann_file}: images[{k}] ({im['file_name']}): id must be an integer, got {image_id!r}")
        if image_id in images:
            raise ValueError(f"{ann_file}: duplicate image id {image_id} "
                             f"({images[image_id]['file_name']} and {im['file_name']})")
        path = images_dir / im["file_name"]
        entry = {"id": image_id, "file_name": im["file_name"],
                 "width": im.get("width"), "height": im.get("height")}
        if check or not entry["width"] or not entry["height"]:
            if not path.exists():
                raise FileNotFoundError(f"{ann_file}: image id {image_id}: file {path} not found")
            to_read.append((entry, path))
        images[image_id] = entry
    sizes = (verified_sizes([p for _, p in to_read], f"{ann_file}'s images", progress) if check
             else [image_size(p) for _, p in to_read])
    for (entry, _), size in zip(to_read, sizes):
        if not entry["width"] or not entry["height"]:
            entry["width"], entry["height"] = size
        elif (entry["width"], entry["height"]) not in (size, size[::-1]):  # turned: load_annotated says why
            raise ValueError(f"{ann_file}: image id {entry['id']} ({entry['file_name']}) is {entry['width']}x"
                             f"{entry['height']} in the JSON but {size[0]}x{size[1]} in its file; fix the JSON "
                             "(or delete width/height to read them from the file)")
    for im in coco["images"]:
        if "letter_boxes" in im:
            entry = images[im["id"]]
            entry["letter_boxes"] = _letter_boxes(im["letter_boxes"], entry, f"{ann_file}: image id {entry['id']}")
    return images


def _letter_boxes(boxes, image: dict, where: str) -> list[list[float]]:
    """An image entry's ``letter_boxes`` ([x, y, w, h] each), clipped to the image; boxes with
    no area inside it are dropped. ValueError when it is not a list of 4-number lists."""
    if not isinstance(boxes, list) or not all(isinstance(b, (list, tuple)) and len(b) == 4 for b in boxes):
        raise ValueError(f"{where}: letter_boxes must be a list of [x, y, w, h] boxes, got {boxes!r}")
    if not boxes:
        return []
    try:
        xyxy = clip_xyxy(xywh_to_xyxy(boxes), image["width"], image["height"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: letter_boxes must hold numbers, got {boxes!r} ({e})") from None
    keep = (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
    return [[x1, y1, x2 - x1, y2 - y1] for x1, y1, x2, y2 in xyxy[keep].tolist()]


def _validate_annotation(a: dict, ann_file: Path, images: dict, seen: set,
                         report: ValidationReport) -> dict | None:
    if not isinstance(a, dict):
        raise ValueError(f"{ann_file}: an annotation must be an object with id, image_id, category_id, bbox; got {a!r}")
    aid = a.get("id")
    where = f"{ann_file}: annotation id {aid}"
    if aid in seen:
        raise ValueError(f"{where}: duplicate annotation id")
    seen.add(aid)
    if a.get("image_id") not in images:
        raise ValueError(f"{where}: image_id {a.get('image_id')!r} is not in 'images'")
    cat = a.get("category_id")
    if cat not in L.CATEGORY_IDS:
        raise ValueError(f"{where}: unknown category_id {cat!r} (expected 1..10 for digits 0..9)")
    bbox = a.get("bbox")
    if (not isinstance(bbox, (list, tuple)) or len(bbox) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in bbox)):
        raise ValueError(f"{where}: bbox must be [x, y, w, h], four finite numbers, got {bbox!r}")
    im = images[a["image_id"]]
    xyxy = xywh_to_xyxy(bbox)
    clipped = clip_xyxy(xyxy, im["width"], im["height"])
    w, h = clipped[0, 2] - clipped[0, 0], clipped[0, 3] - clipped[0, 1]
    if w <= 0 or h <= 0:
        report.dropped += 1
        report.note(f"annotation id {aid}: box {bbox} has no area inside its "
                    f"{im['width']}x{im['height']} image; dropped")
        return None
    if not np.allclose(clipped, xyxy):
        report.clipped += 1
        report.note(f"annotation id {aid}: box {bbox} lies partly outside its "
                    f"{im['width']}x{im['height']} image; clipped")
    x1, y1, x2, y2 = clipped[0].tolist()
    return {"id": aid, "image_id": a["image_id"], "category_id": cat,
            "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0}


def load_annotated(images_dir: Path, entry: dict) -> Image.Image:
    """The RGB photo of a COCO image ``entry`` (``file_name``, ``width``, ``height``), upright
    (``images.load_rgb``). ValueError naming the file when its EXIF orientation turns it a
    quarter away from the size it was annotated at: its boxes were drawn on the stored pixels."""
    path = Path(images_dir) / entry["file_name"]
    image = load_rgb(path)
    size = (entry["width"], entry["height"])
    if image.size != size and image.size == size[::-1] and exif_quarter_turned(path):
        raise ValueError(f"{path}: annotated as {size[0]}x{size[1]}, but its EXIF orientation shows it upright as "
                         f"{image.size[0]}x{image.size[1]}: the boxes were drawn on the stored, turned pixels. "
                         "Re-annotate the upright photos, or remove the orientation tag (e.g. exiftool "
                         "-Orientation=1 -n FILE) to keep these boxes")
    return image


class DigitDataset(Dataset):
    """Annotated split: item i -> (image float32 (3, H, W) in [0, 1], target dict).

    ``transforms(image: PIL RGB, target) -> (tensor, target)`` from data/transforms.py.
    Random augmentation is seeded per (seed, epoch, index) so a run is reproducible and a
    resumed run sees the same augmented images as an uninterrupted one, whatever the
    number of DataLoader workers. Call :meth:`set_epoch` before each epoch.
    """

    def __init__(self, coco: dict, images_dir: str | Path, transforms, seed: int = 0,
                 max_images: int = 0, letter_label: int | None = None):
        self.images_dir, self.letter_label = Path(images_dir), letter_label
        self.images = sorted(coco["images"], key=lambda im: im["id"])
        if max_images:
            self.images = self.images[:max_images]
        self.anns: dict[int, list] = {im["id"]: [] for im in self.images}
        for a in coco["annotations"]:
            if a["image_id"] in self.anns:
                self.anns[a["image_id"]].append(a)
        self.transforms, self.seed, self.epoch = transforms, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images)

    def target(self, i: int) -> dict:
        """The i-th target in original pixels, before any transform; with ``letter_label`` the
        image's letter boxes follow its digits with that label."""
        im = self.images[i]
        anns = self.anns[im["id"]]
        xywh = [a["bbox"] for a in anns]
        labels = [a["category_id"] for a in anns]
        if self.letter_label is not None:
            letters = im.get("letter_boxes", [])
            xywh, labels = xywh + letters, labels + [self.letter_label] * len(letters)
        boxes = xywh_to_xyxy(xywh) if xywh else np.zeros((0, 4))
        return {"boxes": torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                "labels": torch.as_tensor(labels, dtype=torch.int64),
                "image_id": int(im["id"])}

    def __getitem__(self, i: int):
        image = load_annotated(self.images_dir, self.images[i])
        target = self.target(i)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, self.epoch, i))
            return self.transforms(image, target)

    def aspect_ratios(self) -> list[float]:
        return [im["width"] / im["height"] for im in self.images]


class ImageFolderDataset(Dataset):
    """Unannotated folder (the test split): item i -> (image tensor, {"image_id": int}), and
    ``"scale": (sx, sy)`` for a photo read reduced (images.load_rgb_within).

    A file that cannot be read yields ``None`` for the image so prediction can report it
    by name and go on; see :func:`collate`.
    """

    def __init__(self, folder: str | Path, transforms):
        self.items = list_images(folder)
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        image_id, path = self.items[i]
        try:
            image, scale = load_rgb_within(path)
        except ValueError as e:
            return None, {"image_id": image_id, "error": str(e)}
        img, _ = self.transforms(image, {"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.int64)})
        return img, {"image_id": image_id, **({"scale": scale} if scale != (1.0, 1.0) else {})}


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 31-bit seed for one sample's augmentation, stable across processes and runs."""
    return zlib.crc32(f"{seed}/{epoch}/{index}".encode()) & 0x7FFFFFFF


def collate(batch):
    """List of (image, target) -> (tuple of images, tuple of targets); torchvision's form."""
    return tuple(zip(*batch))
