"""Pictures are valid, non-empty PNGs; boxes land where they should."""
import numpy as np
import pytest
from PIL import Image

from digitdet.viz.draw import DIGIT_COLORS, dataset_grid, draw_boxes, image_grid, new_figure, save_figure_atomic, save_png_atomic


def test_draw_boxes_upscales_tiny_images(tmp_path):
    image = Image.new("RGB", (40, 20), (255, 255, 255))
    out = draw_boxes(image, [[10, 2, 20, 18]], [7], scores=[0.9], min_side=100)
    factor = -(-100 // 20)  # ceil(min_side / short side)
    assert out.size == (40 * factor, 20 * factor)
    # the box's right edge, in pixels of the upscaled picture, has the digit's colour
    assert out.getpixel((20 * factor, 15 * factor)) == DIGIT_COLORS[7]
    captioned = draw_boxes(image, [[10, 2, 20, 18]], [7], number_text="7", min_side=100)
    assert captioned.width == out.width and captioned.height > out.height
    save_png_atomic(captioned, tmp_path / "sub" / "boxes.png")
    with Image.open(tmp_path / "sub" / "boxes.png") as im:
        assert im.format == "PNG" and im.size == captioned.size
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["boxes.png"]  # no temp left


def test_draw_boxes_rejects_bad_input():
    image = Image.new("RGB", (40, 20))
    with pytest.raises(ValueError, match="2 boxes but 1 labels"):
        draw_boxes(image, [[0, 0, 5, 5], [5, 5, 9, 9]], [1])
    with pytest.raises(ValueError, match="digits 0..9"):
        draw_boxes(image, [[0, 0, 5, 5]], [10])


def test_image_grid():
    images = [Image.new("RGB", (30, 10), (200, 0, 0)) for _ in range(5)]
    grid = image_grid(images, cols=3, cell_size=(60, 40))
    assert grid.size == (3 * 60, 2 * 40)  # 5 images in rows of 3
    assert grid.getpixel((30, 20)) == (200, 0, 0) and grid.getpixel((150, 60)) == (24, 24, 24)
    with pytest.raises(ValueError):
        image_grid([], cols=2)


def test_dataset_grid_and_figure(tmp_path):
    for i in (1, 2):
        Image.new("RGB", (32, 16), (0, 90, 0)).save(tmp_path / f"{i}.png")
    coco = {"images": [{"id": i, "file_name": f"{i}.png", "width": 32, "height": 16} for i in (1, 2)],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 4, "bbox": [2, 2, 6, 12]}]}
    grid = dataset_grid(coco, tmp_path, n=5, seed=0, cell_size=64)
    assert grid.size == (2 * 64, 64) and np.asarray(grid).std() > 0
    assert dataset_grid(None, tmp_path, n=1, cell_size=32).size == (32, 32)
    fig = new_figure(figsize=(2, 2))
    fig.subplots().plot([0, 1], [1, 0])
    save_figure_atomic(fig, tmp_path / "fig.png")
    with Image.open(tmp_path / "fig.png") as im:
        assert im.format == "PNG" and im.size == (200, 200)
