"""Files in and out: JSON, checkpoints, and the two graded prediction files.

Every write is atomic: the bytes go to a temporary file in the destination's own folder,
which then replaces the destination with ``os.replace``. A crash or Ctrl-C mid-write
leaves the old file (or none), never half a file, and the temp name never reaches a
reader. Parent folders are created as needed.

Graded formats:

* ``pred.json`` (Task 1): COCO results, a list of
  ``{"image_id": int, "bbox": [x, y, w, h], "score": float, "category_id": int}`` with
  ``bbox`` in COCO xywh, pixels of the original test image, ``category_id`` 1..10
  (digits 0..9, see :mod:`digitdet.labels`).
* ``pred.csv`` (Task 2): header ``image_id,pred_label``, one row per test image sorted by
  integer id, ``pred_label`` the number as read (a string: leading zeros kept) or ``-1``.

Readers validate and raise ``ValueError`` naming the file and the offending record.
"""
from __future__ import annotations

import contextlib
import contextvars
import csv
import io
import json
import math
import numbers
import os
import pickle
import re
import tempfile
import warnings
from pathlib import Path

import numpy as np

from digitdet.labels import CATEGORY_IDS

PRED_CSV_HEADER = "image_id,pred_label"
CHECKPOINT_KEYS = ("model", "config")
BBOX_DECIMALS = 2  # 0.01 px is far below annotation noise; keeps pred.json small
SCORE_DECIMALS = 5  # fine enough that rounding never reorders detections that matter for AP
_LABEL_RE = re.compile(r"^(-1|[0-9]+)$")


def _read_umask() -> int:
    """The process umask. os.umask can only read it by setting it, so do that once, at import,
    not on every write where another thread could create a file in between."""
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


_UMASK = _read_umask()


# ---- atomic writes -----------------------------------------------------------------------

# While written_together() is open: the (temp file, final path) pairs waiting to replace their files.
_PENDING: contextvars.ContextVar[list | None] = contextvars.ContextVar("digitdet_pending_writes", default=None)


@contextlib.contextmanager
def written_together():
    """Atomic writes inside the block replace their files only when the whole block succeeds,
    one after another at its end: a run that fails while writing its outputs (or is stopped)
    leaves the previous run's set whole, never a new file beside an old one."""
    pending: list = []
    token = _PENDING.set(pending)
    try:
        yield
    except BaseException:
        for tmp, _ in pending:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise
    finally:
        _PENDING.reset(token)
    for tmp, path in pending:
        os.replace(tmp, path)


@contextlib.contextmanager
def _atomic_open(path):
    """Yield a binary file object whose contents replace ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600; give the file the permissions a plain open() would have.
        os.chmod(tmp, 0o666 & ~_UMASK)
        pending = _PENDING.get()
        if pending is None:
            os.replace(tmp, path)
        else:
            pending.append((tmp, path))  # written_together() replaces it with the others
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def writable_folder(path, what: str = "--out") -> Path:
    """Create folder ``path`` (and parents) and check that files can be written in it, before any
    work: a file where a folder is meant, or a read-only place, is one clear error naming it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{what} {path}: is a file; give a folder to write into")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check.", suffix=".tmp"):
            pass
    except OSError as e:
        raise PermissionError(f"{what} {path}: cannot write there ({e.strerror or e})") from None
    return path


def remove_stale_temps(folder) -> list[Path]:
    """Delete the temp files an atomic write killed mid-way left in ``folder`` (``.NAME.*.tmp``)."""
    stale = sorted(Path(folder).glob(".*.tmp"))
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder + ``os.replace``)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError(f"atomic_write_bytes({path}): data must be bytes, got {type(data).__name__}")
    with _atomic_open(path) as f:
        f.write(data)


def _json_default(obj):
    """Let numpy scalars/arrays and paths through json.dumps (metrics often hold them)."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable")


def write_json(path, obj, indent: int | None = 2) -> None:
    """Write ``obj`` as UTF-8 JSON atomically. numpy scalars/arrays and Paths are converted.

    NaN/inf floats are written as Python's ``json`` does (``NaN``), which Python reads back
    but strict parsers do not; keep them out of files meant for other tools.
    """
    separators = (",", ":") if indent is None else (",", ": ")
    text = json.dumps(obj, indent=indent, separators=separators, default=_json_default)
    atomic_write_bytes(path, (text + "\n").encode("utf-8"))


def read_json(path, what: str = "file"):
    """Read a JSON file. ``what`` names it in errors ("annotation file", "pred.json", ...).

    Raises ValueError naming the file when it is missing, unreadable or not valid JSON.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what} {path} not found (or is not a file)")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{what} {path} is not valid JSON: {e}") from e
    except UnicodeDecodeError as e:
        raise ValueError(f"{what} {path} is not UTF-8 text: {e}") from e


# ---- checkpoints ---------------------------------------------------------------------------

def save_checkpoint(path, state: dict) -> None:
    """Save a digitdet checkpoint atomically with ``torch.save``.

    ``state`` must be a dict holding at least ``"model"`` (a state_dict) and ``"config"``
    (``Config.to_dict()``, a plain dict). Everything in it must load under
    ``torch.load(weights_only=True)``: tensors, dicts, lists, tuples, str/int/float/bool/None.
    No numpy arrays, Paths, dataclasses or other classes (store RNG states as tensors and
    paths as str), otherwise :func:`load_checkpoint` would refuse the file later.
    """
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint state for {path} must be a dict, got {type(state).__name__}")
    missing = [k for k in CHECKPOINT_KEYS if k not in state]
    if missing:
        raise ValueError(f"checkpoint state for {path} lacks key(s) {missing}; "
                         f"a digitdet checkpoint holds {list(CHECKPOINT_KEYS)}")
    import torch  # here, not at the top: reading with onnxruntime writes files without torch

    with _atomic_open(path) as f:
        torch.save(state, f)


def load_checkpoint(path, map_location="cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint`.

    Uses ``torch.load(weights_only=True)``: a checkpoint is untrusted input and a full
    unpickle could run arbitrary code. Raises FileNotFoundError when ``path`` is missing,
    ValueError naming the file when it is not a torch file, holds objects other than
    tensors/containers/primitives, or lacks the keys ``"model"`` and ``"config"``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    if path.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".heic", ".heif"):
        raise ValueError(f"{path}: is a photo, not a checkpoint; read it with `digitdet read {path}` "
                         "(or give its folder to --images)")
    import torch

    try:
        with warnings.catch_warnings():  # a plain pickle's protocol: refused or read, saying so is ours
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's own message advises weights_only=False, which is exactly what we must not do
        # with an untrusted file; keep only the part that says what was found ("Unsupported
        # global: GLOBAL x" before torch 2.14, "unsupported GLOBAL x whose module ..." since).
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        detail = f"it contains a {found.group(1)} object" if found else "it is not a torch checkpoint"
        raise ValueError(
            f"checkpoint {path} cannot be loaded safely (torch.load weights_only=True): {detail}. "
            f"digitdet checkpoints hold only tensors, dicts, lists and primitives; re-save it "
            f"with digitdet.io.save_checkpoint") from e
    except Exception as e:  # a malformed file can fail anywhere in the unpickler (KeyError, EOFError, ...)
        raise ValueError(f"checkpoint {path} is not a readable torch file (truncated, or another "
                         f"format?): {type(e).__name__}: {e}") from e
    if not isinstance(state, dict) or any(k not in state for k in CHECKPOINT_KEYS):
        found = sorted(state)[:10] if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{path} is not a digitdet checkpoint: expected a dict with keys "
                         f"{list(CHECKPOINT_KEYS)}, found {found}")
    return state


# ---- pred.json (Task 1) ----------------------------------------------------------------------

def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _is_real(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def _check_record(rec, where: str) -> dict:
    """Validate one COCO result record; return it with plain Python types."""
    if not isinstance(rec, dict):
        raise ValueError(f"{where}: expected an object, got {type(rec).__name__}")
    for key in ("image_id", "bbox", "score", "category_id"):
        if key not in rec:
            raise ValueError(f"{where}: missing key {key!r} (got keys {sorted(rec)})")
    if not _is_int(rec["image_id"]):
        raise ValueError(f"{where}: image_id must be an int, got {rec['image_id']!r}")
    bbox = rec["bbox"]
    if (not isinstance(bbox, (list, tuple, np.ndarray)) or len(bbox) != 4
            or not all(_is_real(v) for v in bbox)):
        raise ValueError(f"{where}: bbox must be 4 finite numbers [x, y, w, h], got {bbox!r}")
    if bbox[2] < 0 or bbox[3] < 0:
        raise ValueError(f"{where}: bbox width/height must be >= 0 (COCO xywh, not xyxy?), got {list(bbox)}")
    if not _is_real(rec["score"]) or not 0.0 <= rec["score"] <= 1.0:
        raise ValueError(f"{where}: score must be a number in [0, 1], got {rec['score']!r}")
    if not _is_int(rec["category_id"]) or int(rec["category_id"]) not in CATEGORY_IDS:
        raise ValueError(f"{where}: category_id must be an int 1..10 (digits 0..9), "
                         f"got {rec['category_id']!r}")
    return {"image_id": int(rec["image_id"]), "bbox": [float(v) for v in bbox],
            "score": float(rec["score"]), "category_id": int(rec["category_id"])}


def write_pred_json(path, results: list[dict]) -> None:
    """Write Task 1 ``pred.json`` (COCO results) atomically after validating every record.

    Each record: int ``image_id``, ``bbox`` = 4 finite floats [x, y, w, h] (COCO xywh, pixels
    of the original image, w, h >= 0), ``score`` in [0, 1], ``category_id`` 1..10. Only these
    four keys are written; bbox is rounded to 2 decimals and score to 5, which keeps files
    small without changing COCO mAP. Order is kept as given.
    """
    if not isinstance(results, (list, tuple)):
        raise ValueError(f"results for {path} must be a list of dicts, got {type(results).__name__}")
    out = []
    for i, rec in enumerate(results):
        r = _check_record(rec, f"{path}: record {i}")
        r["bbox"] = [round(v, BBOX_DECIMALS) for v in r["bbox"]]
        r["score"] = round(r["score"], SCORE_DECIMALS)
        out.append(r)
    write_json(path, out, indent=None)


def read_pred_json(path) -> list[dict]:
    """Read and validate a ``pred.json``; errors name the file and the record index."""
    data = read_json(path, what="prediction file")
    if not isinstance(data, list):
        raise ValueError(f"prediction file {path} must hold a JSON list of COCO results, "
                         f"got {type(data).__name__}")
    return [_check_record(rec, f"{path}: record {i}") for i, rec in enumerate(data)]


# ---- pred.csv (Task 2) -----------------------------------------------------------------------

def write_pred_csv(path, labels: dict[int, str]) -> None:
    """Write Task 2 ``pred.csv`` atomically: ``image_id,pred_label`` rows sorted by int id.

    ``labels`` maps image id -> the number as a *string* of digits (``"07"`` keeps its
    leading zero) or ``"-1"`` when no digit was found. Ints are refused on purpose: the old
    ``int()`` round trip lost leading zeros. Lines end with ``\\n``.
    """
    if not isinstance(labels, dict):
        raise ValueError(f"labels for {path} must be a dict image_id -> str, got {type(labels).__name__}")
    rows = []
    for image_id, label in labels.items():
        if not _is_int(image_id):
            raise ValueError(f"{path}: image id {image_id!r} must be an int")
        if not isinstance(label, str) or not _LABEL_RE.match(label):
            raise ValueError(f"{path}: label for image {image_id} must be a string of digits or '-1' "
                             f"(str keeps leading zeros), got {label!r}")
        rows.append((int(image_id), label))
    rows.sort(key=lambda r: r[0])
    lines = [PRED_CSV_HEADER] + [f"{i},{label}" for i, label in rows]
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode("utf-8"))


def write_image_ids_csv(path, names: dict[int, str]) -> None:
    """Write ``image_id,file_name`` rows sorted by id, atomically: which photo each row of a
    pred.csv is, for a folder whose file names are not their image ids."""
    buf = io.StringIO()
    rows = csv.writer(buf, lineterminator="\n")  # quotes a name with a comma in it
    rows.writerow(["image_id", "file_name"])
    rows.writerows(sorted(names.items()))
    atomic_write_bytes(path, buf.getvalue().encode("utf-8"))


def read_pred_csv(path) -> dict[int, str]:
    """Read and validate a ``pred.csv``: header, int ids (no duplicates), digits or ``-1``.

    Labels stay strings, so ``"07"`` is read back as ``"07"``.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"prediction file {path} not found (or is not a file)")
    # utf-8-sig: spreadsheet programs like to prepend a BOM.
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    if not lines or lines[0].strip().replace(" ", "") != PRED_CSV_HEADER:
        first = lines[0] if lines else "<empty file>"
        raise ValueError(f"{path}: first line must be the header {PRED_CSV_HEADER!r}, got {first!r}")
    out: dict[int, str] = {}
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 2 or not re.fullmatch(r"-?[0-9]+", parts[0]):
            raise ValueError(f"{path}: line {lineno} must be '<int image_id>,<label>', got {line!r}")
        image_id, label = int(parts[0]), parts[1]
        if not _LABEL_RE.match(label):
            raise ValueError(f"{path}: line {lineno}: label must be digits or -1, got {label!r}")
        if image_id in out:
            raise ValueError(f"{path}: line {lineno}: image_id {image_id} appears twice")
        out[image_id] = label
    return out
