"""Shared fixtures: a tiny COCO digit dataset drawn with Pillow's built-in font.

Independent of the synthetic renderer on purpose: pipeline tests must not change when the
renderer's realism is tuned.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont

from digitdet import labels as L

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def draw_number(number: str, rng: np.random.Generator, height: int = 48):
    """A plain photo of ``number``: (PIL image, [(digit, [x1, y1, x2, y2]), ...]) tight boxes."""
    font = ImageFont.load_default(size=int(height * 0.7))
    bg = tuple(int(c) for c in rng.integers(0, 100, 3))
    fg = tuple(int(c) for c in rng.integers(160, 256, 3))
    x = int(rng.integers(4, 12))
    width = x + len(number) * int(height * 0.5) + 12
    im = Image.new("RGB", (width, height), bg)
    draw = ImageDraw.Draw(im)
    boxes = []
    for ch in number:
        draw.text((x, height * 0.1), ch, font=font, fill=fg)
        x1, y1, x2, y2 = draw.textbbox((x, height * 0.1), ch, font=font)
        boxes.append((int(ch), [float(x1), float(y1), float(x2), float(y2)]))
        x = x2 + int(rng.integers(2, 6))
    return im, boxes


def write_tiny_dataset(root: Path, n_train: int = 16, n_valid: int = 8, n_test: int = 6, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("valid", n_valid), ("test", n_test)):
        (root / split).mkdir(parents=True, exist_ok=True)
        coco = {"images": [], "annotations": [], "categories": L.coco_categories()}
        for i in range(1, n + 1):
            number = str(int(rng.integers(1, 1000)))
            im, boxes = draw_number(number, rng)
            im.save(root / split / f"{i}.png")
            coco["images"].append({"id": i, "file_name": f"{i}.png", "width": im.width, "height": im.height})
            for d, (x1, y1, x2, y2) in boxes:
                coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": i,
                                            "category_id": L.digit_to_category(d),
                                            "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                                            "iscrowd": 0})
        name = "test_gt.json" if split == "test" else f"{split}.json"
        (root / name).write_text(json.dumps(coco))
    return root


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def pillow_numbers(tmp_path_factory) -> Path:
    """20 test photos only (other seed): numbers the synthetic renderer did not draw."""
    return write_tiny_dataset(tmp_path_factory.mktemp("pillow"), n_train=0, n_valid=0, n_test=20, seed=7)


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(2)
