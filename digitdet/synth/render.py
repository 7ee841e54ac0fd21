"""The embedded default dataset: realistic synthetic house-number photos with tight digit boxes.

Public API:

* ``render_sample(rng) -> (PIL RGB image, [{"digit": 0..9, "bbox": [x1, y1, x2, y2]}, ...])``
  with boxes in pixels of the returned image, listed left to right (``letters=True`` adds the
  letter suffix's box, for models that learn letters as a class of their own).
* ``render_dataset(out_dir, n_train, n_valid, n_test, seed=0, workers=1, progress=True)``
  writes ``{train,valid,test}/<id>.png`` and COCO files ``train.json``, ``valid.json``,
  ``test_gt.json`` (a split of count 0 is left as it is); returns a summary dict.

How one sample is made (each stage is a module named after it):

1. ``synth_style.sample_style``: every random choice, calibrated on real SVHN boxes.
2. ``synth_scene.layout_number``: glyph masks on a line in upright scene pixels.
3. Here: a camera homography (roll, shear, perspective, condensing), then a crop around the
   number with real-looking margins, which fixes the output size.
4. ``synth_scene.draw_scene`` paints only the scene window the crop sees; OpenCV warps it
   and scales it to the output size.
5. ``synth_camera.shoot``: low resolution, blur, light, noise, JPEG.

Boxes are tight around each digit's ink (mask pixels at least half covered) mapped through
the same homography and scaling as the picture, never the font's advance box. A digit cut by
the image edge keeps the box of its visible part, or is dropped when less than half of its
ink is visible; the crop never leaves it showing between MAX_SLIVER_INK and half of its ink,
nor a neighbour's unlabelled fragment more than MAX_SLIVER_INK of its ink. Determinism: a
sample depends only on its rng (and on the installed fonts, see ``synth_fonts``); a dataset
only on ``seed``, whatever ``workers`` is.
"""
from __future__ import annotations

import json
import os
import time
from multiprocessing import get_context

import cv2
import numpy as np
from PIL import Image

from digitdet.boxes import xyxy_to_xywh
from digitdet.labels import coco_categories, digit_to_category
from digitdet.synth import geometry as geo
from digitdet.synth.camera import resize, shoot
from digitdet.synth.fonts import available_fonts
from digitdet.synth.scene import Glyph, draw_scene, layout_number, paste_max
from digitdet.synth.style import Style, sample_style

SPLITS = ("train", "valid", "test")
COCO_FILE = {"train": "train.json", "valid": "valid.json", "test": "test_gt.json"}
MIN_VISIBLE = 0.5        # a digit cut by the edge is labelled while this much of its ink shows
# A neighbour's fragment (unlabelled) shows at most this much of its ink, and a cut digit either
# at least MIN_VISIBLE (labelled) or at most this (a sliver): between the two, an unlabelled digit
# can still be read (docs/results.md, "A by-eye audit of the errors").
MAX_SLIVER_INK = 0.3
MAX_OUTPUT = (520, 320)  # largest output picture (width, height) in px, about real SVHN's p99
MAX_REGION_FACTOR = 2.0  # scene window may be at most this many times the crop (else less tilt)
# Sampling the scene straight into output pixels (one bilinear warp) is fine while the camera
# shrinks it by less than this; below, thin strokes would alias, so the warp is done at scene
# scale and then area-averaged down (a second, dearer resampling).
DIRECT_WARP_MIN_SCALE = 0.75
# zlib level 1 with run-length matching and libpng's cheap filters (none/sub/up): twice as fast
# as Pillow's level-1 PNG (which tries all five filters per row), and the files are no larger
PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE,
              cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FAST_FILTERS]


def _camera(style: Style, glyphs: list[Glyph], H: float, yaw: float, pitch: float) -> np.ndarray:
    """Scene -> warped homography: condense x by ``x_scale``, then roll/shear/perspective."""
    ink = [g.ink_points() for g in glyphs if g.digit is not None]
    cx, cy = np.concatenate(ink).mean(axis=0)
    pts = np.concatenate([g.rim_points() for g in glyphs if g.digit is not None])  # same x extent
    # perspective strength is relative to the whole picture (number plus margins), so the
    # wall at the edges is not stretched to the horizon
    width = float(np.ptp(pts[:, 0])) * style.x_scale + H * max(2.0, style.margins[0] + style.margins[2])
    condense = geo.translation(cx, cy) @ np.diag([style.x_scale, 1.0, 1.0]) @ geo.translation(-cx, -cy)
    return geo.camera_homography(style.rotation_deg, style.shear, yaw, pitch, (cx, cy), width) @ condense


def _ink_x(G: np.ndarray, g: Glyph) -> np.ndarray:
    """x of ``g``'s ink pixels in warped pixels (camera ``G``)."""
    return geo.apply(G, g.ink_points())[:, 0]


def _crop(rng, style: Style, glyphs: list[Glyph], boxes: list[np.ndarray], G: np.ndarray) -> np.ndarray:
    """[x1, y1, x2, y2] of the picture in warped pixels (camera ``G``): the number plus sampled
    margins, moved so a neighbour's fragment or a cut digit ends up at the edge when asked."""
    digit_boxes = np.array([b for g, b in zip(glyphs, boxes) if g.digit is not None])
    hd = float(np.median(digit_boxes[:, 3] - digit_boxes[:, 1]))
    left, top, right, bottom = (m * hd for m in style.margins)
    crop = np.array([digit_boxes[:, 0].min() - left, digit_boxes[:, 1].min() - top,
                     digit_boxes[:, 2].max() + right, digit_boxes[:, 3].max() + bottom])
    for g, b in zip(glyphs, boxes):
        # of a fragment's width: at most 0.3, so it stays a sliver. Fragments showing 0.38-0.45 of
        # a digit read as that digit by eye (5 of 12 in a valid split, bench/reading_audit.py),
        # which made their unlabelled digit label noise; the same draw, so no other picture changes
        # ... and at most MAX_SLIVER_INK of its ink: the right tenths of a 1's box can hold its
        # whole stem (a fifth of the fragments showed more than 0.3 of their ink, some 0.87).
        # On whole pixels, as _plan rounds the crop outwards.
        visible = rng.uniform(0.1, 0.3)
        if g.role == "fragment-left":
            crop[0] = np.ceil(max(b[2] - visible * (b[2] - b[0]), np.quantile(_ink_x(G, g), 1 - MAX_SLIVER_INK)))
        elif g.role == "fragment-right":
            crop[2] = np.floor(min(b[0] + visible * (b[2] - b[0]), np.quantile(_ink_x(G, g), MAX_SLIVER_INK)))
        elif g.role == "letter":
            crop[2] = max(crop[2], b[2] + 0.3 * hd)
    # the rare huge margins (p99 of real left margins is 9 digit heights) are capped so no
    # picture exceeds MAX_OUTPUT px: bigger ones cost time and teach little
    px_per_warped = style.height_px / hd
    for lo, hi, limit in ((0, 2, MAX_OUTPUT[0]), (1, 3, MAX_OUTPUT[1])):
        excess = (crop[hi] - crop[lo]) - limit / px_per_warped
        core = (digit_boxes[:, lo].min(), digit_boxes[:, hi].max())
        if excess > 0:
            room = (core[0] - crop[lo], crop[hi] - core[1])
            total = max(room[0] + room[1], 1e-9)
            crop[lo] += min(room[0], excess * room[0] / total)
            crop[hi] -= min(room[1], excess * room[1] / total)
    cut = style.distractors["cut"]
    if cut and len(style.digits) > 1:
        first, last = digit_boxes[0], digit_boxes[-1]
        keep = rng.uniform(0.3, 0.9)
        # a cut digit shows at least MIN_VISIBLE of its ink (labelled) or at most MAX_SLIVER_INK
        # (counted on the whole pixels _plan rounds the crop out to); a share between is moved
        # up to MIN_VISIBLE, with a margin
        digits = [g for g in glyphs if g.digit is not None]
        if cut == "left":
            crop[0] = first[2] - keep * (first[2] - first[0])
            xs = _ink_x(G, digits[0])
            if MAX_SLIVER_INK < np.mean(xs >= np.floor(crop[0])) < MIN_VISIBLE:
                crop[0] = np.quantile(xs, 1 - MIN_VISIBLE - 0.05)
        else:
            crop[2] = last[0] + keep * (last[2] - last[0])
            xs = _ink_x(G, digits[-1])
            if MAX_SLIVER_INK < np.mean(xs <= np.ceil(crop[2])) < MIN_VISIBLE:
                crop[2] = np.quantile(xs, MIN_VISIBLE + 0.05)
    return crop


def _plan(rng, style: Style, glyphs: list[Glyph], H: float):
    """Camera, crop, output size and scene window; weakens the perspective until the window
    the crop sees is finite and not much larger than the crop. Returns (T, crop size, out size,
    region) where T maps scene pixels to work pixels (warped, crop origin at 0, 0)."""
    yaw, pitch = float(np.clip(style.yaw, -0.5, 0.5)), float(np.clip(style.pitch, -0.3, 0.3))
    for attempt in range(7):
        last = attempt == 6
        if last:
            # No perspective at all: the window is finite and only as large as the crop turned
            # by the roll and shear. A narrow, tall crop (a cut first digit and a neighbour's
            # sliver, margins of 4 digit heights) turned by 12 degrees can still see a window
            # over twice its width; that window is honest, so take it rather than fail.
            yaw = pitch = 0.0
        G = _camera(style, glyphs, H, yaw, pitch)
        boxes = [geo.bounds(geo.apply(G, g.rim_points())) for g in glyphs]
        crop = _crop(rng, style, glyphs, boxes, G)
        x0, y0 = np.floor(crop[:2])
        work = (int(np.ceil(crop[2] - x0)), int(np.ceil(crop[3] - y0)))
        T = geo.translation(-x0, -y0) @ G
        corners = np.array([[0, 0], [work[0], 0], [0, work[1]], [work[0], work[1]]], np.float64)
        inv = np.linalg.inv(T)
        denom = np.c_[corners, np.ones(4)] @ inv[2]
        if np.all(denom > 0):
            src = geo.bounds(geo.apply(inv, corners))
            size = src[2:] - src[:2]
            if last or (size[0] <= MAX_REGION_FACTOR * work[0] + H and size[1] <= MAX_REGION_FACTOR * work[1] + H):
                region = (int(np.floor(src[0])) - 2, int(np.floor(src[1])) - 2,
                          int(np.ceil(size[0])) + 5, int(np.ceil(size[1])) + 5)
                return T, work, region, boxes
        yaw, pitch = yaw / 2, pitch / 2
    raise RuntimeError("could not find a valid camera for this sample")  # unreachable: yaw=pitch=0 is affine


def _out_size(style: Style, glyphs: list[Glyph], boxes, work: tuple[int, int]) -> tuple[int, int]:
    """Output (width, height): the work canvas scaled so digits get ``style.height_px`` tall."""
    heights = [b[3] - b[1] for g, b in zip(glyphs, boxes) if g.digit is not None]
    f = style.height_px / float(np.median(heights))
    return max(8, int(round(work[0] * f))), max(8, int(round(work[1] * f)))


def _annotations(glyphs: list[Glyph], T: np.ndarray, sx: float, sy: float, size,
                 roles=("digit",)) -> list[tuple[Glyph, dict]]:
    """(glyph, annotation) of each glyph of ``roles`` with enough ink in view; tight boxes in
    output pixels, clipped to the visible part. A digit's annotation is ``{"digit", "bbox"}``,
    a letter suffix's ``{"letter": True, "bbox"}``."""
    w, h = size
    out = []
    for g in glyphs:
        if g.role not in roles:
            continue
        q = geo.apply(T, g.rim_points()) * [sx, sy]
        inside = (q[:, 0] >= 0) & (q[:, 0] <= w) & (q[:, 1] >= 0) & (q[:, 1] <= h)
        if not inside.all():  # cut by the edge: count and bound the visible ink pixels one by one
            q = geo.apply(T, g.ink_points()) * [sx, sy]
            inside = (q[:, 0] >= 0) & (q[:, 0] <= w) & (q[:, 1] >= 0) & (q[:, 1] <= h)
            if inside.mean() < MIN_VISIBLE:
                continue
        # points are pixel centres: half a scene pixel (sx, sy output px) more on each side
        box = geo.bounds(q[inside]) + np.array([-sx, -sy, sx, sy]) * 0.5
        box = np.clip(box, 0, [w, h, w, h])
        label = {"digit": int(g.digit)} if g.role == "digit" else {"letter": True}
        out.append((g, {**label, "bbox": [round(float(v), 2) for v in box]}))
    return out


def _project(layer: np.ndarray, T: np.ndarray, region, work, size) -> np.ndarray:
    """Scene window ``layer`` (uint8, region pixels) seen by the camera: warped by ``T`` and
    scaled to the output ``size``, so the box maths (T, then x sx, sy) holds for its pixels."""
    sx, sy = size[0] / work[0], size[1] / work[1]
    to_work = T @ geo.translation(region[0], region[1])
    if min(sx, sy) >= DIRECT_WARP_MIN_SCALE:
        return geo.warp(layer, np.diag([sx, sy, 1.0]) @ to_work, size)
    return resize(geo.warp(layer, to_work, work), size)


def _debug_mask(g: Glyph, T, region, work, size) -> np.ndarray:
    """The glyph warped and shrunk alone, like the picture: float32 (h, w) coverage 0..1."""
    layer = np.zeros((region[3], region[2]), np.uint8)
    paste_max(layer, g.mask, int(g.x - region[0]), int(g.y - region[1]))
    return _project(layer, T, region, work, size).astype(np.float32) / 255


def _soft_focus(params: dict, pairs: list) -> dict:
    """The camera settings of a picture with ``params["soft"]`` (SOFT_P of them): its detour
    through a lower resolution made deep enough that the median digit keeps only that many px
    of height (or the drawn ``lowres``, if deeper)."""
    heights = [ann["bbox"][3] - ann["bbox"][1] for _, ann in pairs if "digit" in ann]
    if not params.get("soft") or not heights:
        return params
    factor = params["soft"] / float(np.median(heights))
    if factor >= 1.0:
        return params
    return {**params, "lowres": min(factor, params["lowres"] or 1.0)}


def render_sample(rng: np.random.Generator, debug: bool = False,
                  letters: bool = False) -> tuple[Image.Image, list[dict]]:
    """One synthetic house-number photo and its digits.

    Returns (RGB image, annotations): each annotation is ``{"digit": int 0..9, "bbox":
    [x1, y1, x2, y2]}`` (floats, pixels of the returned image, tight around the digit's
    visible ink), sorted left to right. With ``letters=True`` the letter suffix ("25D"), an
    unlabelled distractor of the number, is listed too, as ``{"letter": True, "bbox": ...}``
    (no "digit" key). With ``debug=True`` each annotation also has ``"mask"``: float32
    (height, width) ink coverage of that glyph alone, for tests. ``letters`` draws nothing
    from ``rng``: the picture is the same either way.
    """
    style = sample_style(rng)
    glyphs, H = layout_number(rng, style)
    T, work, region, boxes = _plan(rng, style, glyphs, H)
    size = _out_size(style, glyphs, boxes, work)
    sx, sy = size[0] / work[0], size[1] / work[1]
    # surfaces are drawn at about 60% of the output resolution: after blur and noise the
    # difference does not show, and they are the costliest layer
    scene = draw_scene(rng, style, glyphs, H, region, unit_scale=float(np.clip(0.6 * min(sx, sy), 0.25, 1.0)))
    pairs = _annotations(glyphs, T, sx, sy, size, roles=("digit", "letter") if letters else ("digit",))
    image = shoot(rng, _project(np.asarray(scene), T, region, work, size), _soft_focus(style.photo_params, pairs))
    if debug:
        for g, ann in pairs:
            ann["mask"] = _debug_mask(g, T, region, work, size)
    anns = [ann for _, ann in pairs]
    anns.sort(key=lambda a: (a["bbox"][0] + a["bbox"][2]) / 2)
    return image, anns


def sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of image ``index`` of ``split``: depends on nothing else, so any worker
    renders the same picture."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return np.random.default_rng(np.random.SeedSequence([int(seed), SPLITS.index(split), int(index)]))


def write_png(image: Image.Image, path: str) -> None:
    """Write an RGB image as a standard 8-bit RGB PNG (OpenCV's libpng; Pillow reads it back
    pixel for pixel). Raises OSError when it cannot be encoded or written."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2BGR), PNG_PARAMS)
    if not ok:
        raise OSError(f"{path}: OpenCV could not encode a {image.size} {image.mode} image as PNG")
    with open(path, "wb") as f:
        f.write(buf)


def _render_file(job: tuple[str, str, int, int]) -> tuple[int, int, int, list[dict]]:
    """Worker: render image ``index`` of ``split`` and write ``out/split/index.png``.
    Returns (index, width, height, annotations)."""
    out_dir, split, index, seed = job
    image, anns = render_sample(sample_rng(seed, split, index), letters=True)
    write_png(image, os.path.join(out_dir, split, f"{index}.png"))
    return index, image.width, image.height, anns


def _xywh(box_xyxy) -> list[float]:
    """[x, y, w, h] of an xyxy box, rounded to 0.01 px as the COCO files store boxes."""
    return [round(float(v), 2) for v in xyxy_to_xywh(box_xyxy)[0]]


def coco_dict(records: list[tuple[int, int, int, list[dict]]], split: str, seed: int) -> dict:
    """COCO dict of rendered records (index, width, height, annotations); image id = index,
    file ``<index>.png``, annotation ids 1.. in image order, bbox [x, y, w, h]. Letter
    suffixes are not digits, so not COCO annotations: an image that shows one lists its box
    as ``"letter_boxes": [[x, y, w, h], ...]`` in its image entry (see ``data.coco``), a key
    COCO tools ignore."""
    images, annotations = [], []
    for index, width, height, anns in records:
        image = {"id": index, "file_name": f"{index}.png", "width": width, "height": height}
        letters = [_xywh(a["bbox"]) for a in anns if "letter" in a]
        if letters:
            image["letter_boxes"] = letters
        images.append(image)
        for ann in anns:
            if "letter" in ann:
                continue
            x, y, w, h = _xywh(ann["bbox"])
            annotations.append({"id": len(annotations) + 1, "image_id": index,
                                "category_id": digit_to_category(ann["digit"]), "bbox": [x, y, w, h],
                                "area": round(w * h, 2), "iscrowd": 0})
    info = {"description": "digitdet synthetic house numbers", "split": split, "seed": seed}
    return {"info": info, "images": images, "annotations": annotations, "categories": coco_categories()}


def _write_json_atomic(obj: dict, path: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, separators=(",", ":"))
    os.replace(tmp, path)


def _remove_stale(folder: str, n: int) -> None:
    """Delete ``<id>.png`` files with id > n left by an earlier, larger run in this folder."""
    for name in os.listdir(folder):
        stem, ext = os.path.splitext(name)
        if ext == ".png" and stem.isdigit() and int(stem) > n:
            os.remove(os.path.join(folder, name))


def render_dataset(out_dir, n_train: int, n_valid: int, n_test: int, seed: int = 0, workers: int = 1,
                   progress: bool = True) -> dict:
    """Render the three splits into ``out_dir``; returns a summary dict.

    Writes ``{train,valid,test}/<id>.png`` (ids 1..n per split; a test image's id is
    ``int(stem)``) and COCO files ``train.json``, ``valid.json``, ``test_gt.json`` (categories
    from ``labels.coco_categories()``), each JSON written atomically. Files are byte-identical
    for a given seed whatever ``workers`` is (same installed fonts assumed). PNGs ``<id>.png``
    beyond the new count left by an earlier run are deleted. A split whose count is 0 is not
    touched (its folder and JSON, if any, stay as they are), so ``n_train=0, n_valid=0`` adds a
    test split to an existing dataset without deleting its training images. Raises ValueError
    on negative counts or ``workers < 1``.
    """
    counts = {"train": int(n_train), "valid": int(n_valid), "test": int(n_test)}
    if min(counts.values()) < 0 or workers < 1:
        raise ValueError(f"counts must be >= 0 and workers >= 1, got {counts}, workers={workers}")
    out_dir = os.fspath(out_dir)
    start = time.perf_counter()
    summary = {"out": out_dir, "seed": seed, "workers": workers, "fonts": len(available_fonts()), **counts}
    # one OpenCV thread per process: the pictures are small (threads cost more than they give)
    # and the workers already fill the cores; restored on return
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    context = get_context("fork" if os.name == "posix" else "spawn")
    pool = context.Pool(workers, initializer=cv2.setNumThreads, initargs=(1,)) if workers > 1 else None
    try:
        n_boxes = 0
        for split in SPLITS:
            if counts[split] == 0:
                continue
            os.makedirs(os.path.join(out_dir, split), exist_ok=True)
            _remove_stale(os.path.join(out_dir, split), counts[split])
            jobs = [(out_dir, split, i, seed) for i in range(1, counts[split] + 1)]
            results = pool.imap(_render_file, jobs, chunksize=16) if pool else map(_render_file, jobs)
            if progress:
                from tqdm import tqdm
                results = tqdm(results, total=len(jobs), desc=f"synth {split}", unit="img")
            records = list(results)
            n_boxes += sum(1 for r in records for a in r[3] if "digit" in a)
            _write_json_atomic(coco_dict(records, split, seed), os.path.join(out_dir, COCO_FILE[split]))
    finally:
        cv2.setNumThreads(threads)
        if pool:
            pool.close()
            pool.join()
    seconds = time.perf_counter() - start
    total = sum(counts.values())
    summary.update(digits=n_boxes, seconds=round(seconds, 2), images_per_s=round(total / max(seconds, 1e-9), 1))
    return summary
