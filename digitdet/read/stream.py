"""Photos streamed through a ``detect`` without torch: the ONNX Runtime backend's loop.

The torch path batches a folder with a DataLoader (:mod:`digitdet.read.pipeline`); an ONNX
graph reads one image a call, and most of a call on a photo of SVHN's size is spent in the
graph's many small operators, which more intra-op threads hardly speed up. So the photos of a
folder are read ``workers`` at a time instead (ONNX Runtime's ``run`` releases the GIL; one
thread a call, :meth:`digitdet.read.onnx.OnnxDetector.parallel`), each decoded, read and dropped
by its worker, at most ``2 x workers`` in flight: memory does not grow with the folder. One
photo is read on every thread.
On 2 cores, the bundled graph, model-only: 79 photos/s one at a time on 1 thread, 118 on 2
intra-op threads, 160 two at a time on 1 thread each (bench/reading_speed.py). Outputs follow
:func:`digitdet.read.detect.predict_batches`: boxes in pixels of the photo.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from digitdet.config import Config
from digitdet.data.images import list_images, load_rgb_within, readable_sizes
from digitdet.labels import NO_NUMBER
from digitdet.read.zoom import reading_detector

log = logging.getLogger("digitdet")

def photo_array(image: Image.Image) -> np.ndarray:
    """(3, H, W) float32 in [0, 1] of an RGB image: what torchvision's ``to_tensor`` gives, bit for bit."""
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1), dtype=np.float32) / 255


def _decoded(photo: Path | Image.Image | np.ndarray):
    """(array, (sx, sy) scale back to the photo's pixels) of a file, an opened RGB image or an
    array as :func:`photo_array` gives, or the ValueError naming the file."""
    if isinstance(photo, np.ndarray):
        return photo, (1.0, 1.0)
    if isinstance(photo, Image.Image):
        return photo_array(photo), (1.0, 1.0)
    try:
        image, scale = load_rgb_within(photo)
    except ValueError as e:
        return e
    return photo_array(image), scale


def read_stream(detect, items: list[tuple[int, Path | Image.Image | np.ndarray]], progress: bool = False,
                desc: str = "read", workers: int = 1) -> dict:
    """``detect`` over the photos of ``items`` ((key, file or opened RGB image) pairs), ``workers``
    at a time (module docstring): ``{"detections": {key: (boxes, labels, scores)}, "errors":
    {key: message}, "images_per_s"}``."""

    def read_one(photo):
        got = _decoded(photo)
        if isinstance(got, ValueError):
            return got
        image, (sx, sy) = got
        boxes, labels, scores = detect([image])[0]
        if (sx, sy) != (1.0, 1.0):  # a huge photo read reduced: boxes back to its own pixels
            boxes = (boxes * np.array([sx, sy, sx, sy])).astype(np.float32)
        return boxes, labels, scores

    dets, errors, t0 = {}, {}, time.perf_counter()
    with ThreadPoolExecutor(max(1, workers)) as pool, tqdm(total=len(items), desc=desc, disable=not progress,
                                                           leave=False, dynamic_ncols=True) as bar:
        rest = iter(items)
        pending = deque((key, pool.submit(read_one, photo)) for key, photo in islice(rest, 2 * max(1, workers)))
        while pending:
            key, future = pending.popleft()
            for key_next, photo in islice(rest, 1):  # keep the workers busy while this one is collected
                pending.append((key_next, pool.submit(read_one, photo)))
            got = future.result()
            bar.update()
            if isinstance(got, ValueError):
                errors[key] = str(got)
            else:
                dets[key] = got
    n = len(dets)
    return {"detections": dets, "errors": errors, "images_per_s": n / max(time.perf_counter() - t0, 1e-9)}


def read_folder(detector, cfg: Config, images_dir, progress: bool = True) -> dict:
    """:func:`digitdet.read.pipeline.predict_folder` for an ONNX detector, without torch: the
    same ``{"detections", "errors", "image_ids", "files", "images_per_s", "sizes"}``."""
    items = list_images(images_dir)
    many = detector.parallel() if len(items) > 1 else detector  # one photo: on every thread
    out = read_stream(reading_detector(many, cfg, None), items, progress, "predict", many.threads)
    return folder_output(out, items, readable_sizes(items))


def folder_output(out: dict, items: list[tuple[int, Path]], sizes: dict) -> dict:
    """A folder's reading (``detections``, ``errors``, ``images_per_s``) completed as predict
    writes it: ``image_ids``, ``files`` ({image_id: path}), ``sizes``; each unreadable photo
    warned of by name. Both backends' folder readers end here."""
    for image_id, msg in sorted(out["errors"].items()):
        log.warning("skipped unreadable image (written as %s): %s", NO_NUMBER, msg)
    return {**out, "image_ids": [i for i, _ in items], "files": dict(items), "sizes": sizes}
