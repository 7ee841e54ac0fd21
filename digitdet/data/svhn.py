"""SVHN "format 1" annotations (``digitStruct.mat`` or its JSON export) -> COCO digit dict.

SVHN ships one ``digitStruct.mat`` per split: a MATLAB v7.3 file, i.e. HDF5, read here
with h5py. Its layout::

    digitStruct/name  (N, 1) object references -> uint16 char arrays ("17.png")
    digitStruct/bbox  (N, 1) object references -> group with datasets
                      height, label, left, top, width

Two quirks every reader must handle:

* a bbox field holds **object references** (one per digit) when the image has several
  digits, and a **plain (1, 1) number** when it has one;
* label 10 means digit 0 (``labels.svhn_label_to_digit``).

Records returned by the readers keep SVHN's raw values::

    {"filename": "17.png",
     "boxes": [{"left", "top", "width", "height", "label"}]}   # pixels, label 1..10

``left/top/width/height`` is a COCO-style xywh box in pixels of the original image.
The same records come from the JSON export used by many SVHN tools
(``[{"filename", "boxes": [...]}]``, see :func:`read_svhn_json`).
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import h5py
import numpy as np

from digitdet.boxes import clip_xyxy, xywh_to_xyxy, xyxy_to_xywh
from digitdet.data.cocobuild import annotation, coco_dict
from digitdet.data.images import image_ids, image_size
from digitdet.labels import digit_to_category, svhn_label_to_digit

BOX_FIELDS = ("left", "top", "width", "height", "label")


def read_digitstruct(mat_path, progress=None) -> list[dict]:
    """Read an SVHN ``digitStruct.mat`` (MATLAB v7.3 / HDF5) into records.

    Returns one record per entry, in file order: ``{"filename": str, "boxes": [{"left",
    "top", "width", "height", "label"}]}`` with raw SVHN values (floats in pixels of the
    original image; label 1..10, 10 meaning digit 0). Entries are returned whether or not
    their image exists. ``progress``: optional wrapper of the entry iterator, e.g.
    ``tqdm.tqdm`` (one HDF5 read per digit: the 33k-entry train file takes minutes).

    Raises FileNotFoundError if the file is missing and ValueError naming the file when
    it is not HDF5 or lacks ``digitStruct/name`` / ``digitStruct/bbox``.
    """
    mat_path = Path(mat_path)
    if not mat_path.is_file():
        raise FileNotFoundError(f"{mat_path}: digitStruct file not found")
    try:
        f = h5py.File(mat_path, "r")
    except OSError as e:
        raise ValueError(f"{mat_path}: not an HDF5 file; SVHN's digitStruct.mat is MATLAB v7.3 "
                         f"(HDF5). Re-save older .mat files with save(..., '-v7.3') ({e})") from e
    with f:
        for key in ("digitStruct/name", "digitStruct/bbox"):
            if key not in f:
                raise ValueError(f"{mat_path}: not an SVHN digitStruct file: no '{key}' dataset "
                                 f"(top-level keys: {sorted(f.keys())})")
        names = f["digitStruct/name"][()].ravel()
        bboxes = f["digitStruct/bbox"][()].ravel()
        if len(names) != len(bboxes) or names.dtype != h5py.ref_dtype or bboxes.dtype != h5py.ref_dtype:
            raise ValueError(f"{mat_path}: digitStruct/name and digitStruct/bbox must be equally long "
                             f"lists of object references, got {len(names)} x {names.dtype} and "
                             f"{len(bboxes)} x {bboxes.dtype}")
        return [{"filename": _read_name(f.id, ref), "boxes": _read_boxes(f.id, ref_box, mat_path, i)}
                for i, (ref, ref_box) in enumerate(_wrap(progress, zip(names, bboxes), len(names)))]


def _wrap(progress, iterable, total: int):
    return iterable if progress is None else progress(iterable, total=total)


# The readers below use h5py's low-level API (h5r/h5d): the high-level ``f[ref]`` builds a
# Python object per access and was ~2.5x slower on a 2,000-entry digitStruct.

def _read_array(dataset_id, dtype) -> np.ndarray:
    """The whole content of a low-level dataset, as ``dtype``."""
    out = np.empty(dataset_id.shape, dtype=dtype)
    dataset_id.read(h5py.h5s.ALL, h5py.h5s.ALL, out)
    return out


def _read_name(file_id, ref) -> str:
    """Dereference one ``name`` entry: MATLAB stores strings as uint16 char codes."""
    codes = _read_array(h5py.h5r.dereference(ref, file_id), np.uint16)
    return "".join(chr(int(c)) for c in codes.ravel())


def _read_boxes(file_id, ref, mat_path: Path, index: int) -> list[dict]:
    """Dereference one ``bbox`` entry into a list of box dicts (raw SVHN values)."""
    group_id = h5py.h5r.dereference(ref, file_id)
    missing = [k for k in BOX_FIELDS if k.encode() not in group_id]
    if missing:
        raise ValueError(f"{mat_path}: digitStruct/bbox[{index}] lacks field(s) {missing}")
    columns = {k: _read_field(file_id, h5py.h5d.open(group_id, k.encode())) for k in BOX_FIELDS}
    lengths = {k: len(v) for k, v in columns.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"{mat_path}: digitStruct/bbox[{index}] fields differ in length: {lengths}")
    return [{k: columns[k][j] for k in BOX_FIELDS} for j in range(lengths["label"])]


def _read_field(file_id, dataset_id) -> list[float]:
    """One bbox field as a list of floats, whichever of SVHN's two layouts it uses.

    Several digits: the dataset holds one object reference per digit, each pointing at a
    (1, 1) number. One digit: the dataset *is* the (1, 1) number.
    """
    if dataset_id.get_type().get_class() == h5py.h5t.REFERENCE:
        refs = _read_array(dataset_id, h5py.ref_dtype).ravel()
        return [float(_read_array(h5py.h5r.dereference(r, file_id), np.float64).ravel()[0]) for r in refs]
    return [float(v) for v in _read_array(dataset_id, np.float64).ravel()]


def read_svhn_json(json_path) -> list[dict]:
    """Read the JSON export of a digitStruct: ``[{"filename", "boxes": [{left, top, width,
    height, label}]}]`` (raw SVHN values, label 10 = digit 0); same records as
    :func:`read_digitstruct`. ValueError names the file and entry when the shape is wrong."""
    json_path = Path(json_path)
    if not json_path.is_file():
        raise FileNotFoundError(f"{json_path}: SVHN box list not found")
    try:
        data = json.loads(json_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{json_path}: not valid JSON ({e})") from e
    if not isinstance(data, list):
        raise ValueError(f"{json_path}: expected a list of {{'filename', 'boxes'}} records, "
                         f"got {type(data).__name__}")
    records = []
    for i, rec in enumerate(data):
        if not isinstance(rec, dict) or "filename" not in rec or "boxes" not in rec:
            raise ValueError(f"{json_path}: entry {i} lacks 'filename' or 'boxes'")
        boxes = []
        for j, box in enumerate(rec["boxes"]):
            missing = [k for k in BOX_FIELDS if k not in box]
            if missing:
                raise ValueError(f"{json_path}: entry {i} ({rec['filename']}) box {j} lacks {missing}")
            boxes.append({k: float(box[k]) for k in BOX_FIELDS})
        records.append({"filename": str(rec["filename"]), "boxes": boxes})
    return records


def read_svhn_annotations(path, progress=None) -> list[dict]:
    """Records from either a ``.mat`` digitStruct or its ``.json`` export (by suffix)."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        return read_svhn_json(path)
    return read_digitstruct(path, progress=progress)


def svhn_to_coco(mat_path, images_dir, progress=None) -> tuple[dict, dict]:
    """Convert an SVHN digitStruct (``.mat`` or ``.json``) + its image folder to COCO.

    Steps: (1) read the records; (2) skip and count entries whose image is not in
    ``images_dir`` (the shared sample lists 40 entries for 3 images); (3) read each image's
    size with Pillow; (4) clip boxes to the image (real SVHN boxes stick out by a few px)
    and drop boxes with nothing left; (5) map label -> digit -> category_id via labels.py.
    Image ids are the integer file stems when possible (see ``data.images.image_ids``).
    ``progress`` is passed to :func:`read_digitstruct`.

    Returns ``(coco, report)``: ``coco`` as described in ``data/cocobuild.py`` (bbox xywh in
    pixels of each image); ``report`` counts ``entries``, ``images``, ``annotations``,
    ``skipped_missing_images`` (with up to 5 ``missing_examples``), ``clipped_boxes`` and
    ``dropped_boxes``. Raises ValueError naming the file and entry for a bad label.
    """
    mat_path, images_dir = Path(mat_path), Path(images_dir)
    if not images_dir.is_dir():
        raise NotADirectoryError(f"{images_dir}: image folder not found")
    records = read_svhn_annotations(mat_path, progress=progress)
    dupes = sorted(n for n, c in Counter(r["filename"] for r in records).items() if c > 1)
    if dupes:
        raise ValueError(f"{mat_path}: file names listed more than once, e.g. {dupes[:5]}")
    exists = {r["filename"]: (images_dir / r["filename"]).is_file() for r in records}
    present = [r for r in records if exists[r["filename"]]]
    missing = [r["filename"] for r in records if not exists[r["filename"]]]
    ids = image_ids([r["filename"] for r in present])
    report = {"entries": len(records), "images": len(present), "annotations": 0,
              "skipped_missing_images": len(missing), "missing_examples": missing[:5],
              "clipped_boxes": 0, "dropped_boxes": 0}
    images, annotations = [], []
    for rec in present:
        width, height = image_size(images_dir / rec["filename"])
        image_id = ids[rec["filename"]]
        images.append({"id": image_id, "file_name": rec["filename"], "width": width, "height": height})
        for box in rec["boxes"]:
            category = _category(box["label"], mat_path, rec["filename"])
            xywh = _clipped_box(box, width, height, report)
            if xywh is not None:
                annotations.append(annotation(len(annotations) + 1, image_id, category, xywh))
    report["annotations"] = len(annotations)
    return coco_dict(images, annotations, description=f"converted from {mat_path.name}"), report


def _category(label: float, mat_path: Path, filename: str) -> int:
    """SVHN label (10 = digit 0) -> COCO category_id, naming the entry when it is bad."""
    try:
        if label != int(label):
            raise ValueError(f"SVHN label must be an integer, got {label}")
        return digit_to_category(svhn_label_to_digit(int(label)))
    except ValueError as e:
        raise ValueError(f"{mat_path}: {filename}: {e}") from e


def _clipped_box(box: dict, width: int, height: int, report: dict):
    """Clip an SVHN box to the image; None if nothing is left. Updates the report counts."""
    xyxy = xywh_to_xyxy([box["left"], box["top"], box["width"], box["height"]])
    clipped = clip_xyxy(xyxy, width, height)
    if not np.array_equal(clipped, xyxy):
        report["clipped_boxes"] += 1
    xywh = xyxy_to_xywh(clipped)[0]
    if xywh[2] <= 0 or xywh[3] <= 0:
        report["dropped_boxes"] += 1
        return None
    return xywh.tolist()
