"""``Reader``: the number in a photo, from Python, as ``digitdet predict`` reads it.

    reader = digitdet.Reader()                  # the bundled model; Reader("runs/x/best.pt", device="cuda")
    result = reader("house.jpg")                # a path, PIL.Image, HxWx3 uint8 numpy array, or bytes
    result.number                               # "418", or None when no digit is found
    result.digits                               # [Digit(digit=4, box=(x, y, w, h), score=0.98), ...] left to right
    results = reader(["a.jpg", "b.png"], batch_size=32)   # a list in, a list out

The model is loaded once. With the bundled model on a machine without an NVIDIA GPU (the
default) it is read by ONNX Runtime, without importing torch (``backend="auto"``;
:func:`digitdet.read.onnx.choose_backend`): one photo on every core, several photos ``threads``
at a time, as ``predict`` reads them with the same backend. A checkpoint (.pt), a GPU or
``backend="torch"`` read with torch, which batches photos as ``predict`` does (by shape, at
most ``batch_size``; a batch is padded to its largest photo, so a photo read in another company
can score a hair differently, which may flip a digit sitting on a threshold). Either way the
reading is the same (zoom-in, second look, scan) and the number is read with the weights'
decoder settings: a folder's photos, given in predict's order, read pred.csv's numbers. Boxes
are xywh in pixels of the upright photo, as found (pred.json may style them as SVHN's; see
Config.pred_box_pad).
"""
from __future__ import annotations

import io
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from digitdet.data.images import load_rgb, upright_rgb
from digitdet.read.decode import digits_read
from digitdet.read.onnx import choose_backend, load_onnx_detector
from digitdet.read.stream import read_stream
from digitdet.read.zoom import reading_detector


@dataclass(frozen=True)
class Digit:
    """One digit read: 0-9, its box ``(x, y, w, h)`` in pixels of the photo, its score."""
    digit: int
    box: tuple[float, float, float, float]
    score: float


@dataclass
class Result:
    """What was read in one photo. ``number`` is None when no digit was found (pred.csv's -1)."""
    number: str | None
    digits: list[Digit]
    width: int
    height: int
    source: str | None = None  # the file's path, when read from one
    image: Image.Image | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        """JSON-ready: number, digits (digit, box [x, y, w, h], score), width, height, source."""
        return {"number": self.number, "digits": [{**asdict(d), "box": list(d.box)} for d in self.digits],
                "width": self.width, "height": self.height, "source": self.source}

    def plot(self) -> Image.Image:
        """The photo with the digits read drawn on it and the number below."""
        from digitdet.viz.draw import draw_boxes  # matplotlib: only when a picture is drawn

        if self.image is None:
            raise ValueError("this result holds no photo to draw on")
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (d.box for d in self.digits)]).reshape(-1, 4)
        return draw_boxes(self.image, boxes, [d.digit for d in self.digits], [d.score for d in self.digits],
                          number_text=f"read {self.number or '-1'}")

    def save(self, path) -> Path:
        """Write :meth:`plot` to ``path`` (PNG/JPEG by its suffix); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.plot().save(path)
        return path


class _Photos:
    """Photos in memory as predict's dataset yields them (a map-style dataset for torch's
    DataLoader): (tensor, {"image_id": index})."""

    def __init__(self, images: list[Image.Image]):
        import torch

        from digitdet.data.transforms import build_transforms

        self.images, self.transform = images, build_transforms("none", train=False)
        self.no_boxes = {"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.int64)}

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        img, _ = self.transform(self.images[i], dict(self.no_boxes))
        return img, {"image_id": i}


def open_photo(photo) -> tuple[Image.Image, str | None]:
    """(upright 8-bit RGB image, source path or None) of a path, PIL image, HxWx3 uint8 array or
    the bytes of an image file; ValueError (naming the file) for anything else or unreadable."""
    if isinstance(photo, (str, Path)):
        return load_rgb(photo), str(photo)
    if isinstance(photo, Image.Image):
        return upright_rgb(photo), None
    if isinstance(photo, (bytes, bytearray, memoryview)):
        try:
            with Image.open(io.BytesIO(bytes(photo))) as im:
                return upright_rgb(im), None
        except (OSError, SyntaxError, Image.DecompressionBombError) as e:
            raise ValueError(f"{len(photo)} bytes: not a readable image ({e})") from None
    if isinstance(photo, np.ndarray):
        if photo.dtype != np.uint8 or photo.ndim not in (2, 3) or (photo.ndim == 3 and photo.shape[2] not in (3, 4)):
            raise ValueError(f"a numpy photo must be HxWx3 (or HxW) uint8, got {photo.shape} {photo.dtype}")
        return upright_rgb(Image.fromarray(photo)), None
    raise ValueError(f"cannot read a photo from {type(photo).__name__}: give a path, PIL.Image, numpy array or bytes")


class Reader:
    """A model loaded once, reading numbers from photos (module docstring).

    ``weights``: a checkpoint (.pt) or a model written by ``digitdet export`` (.onnx); None:
    the bundled model. ``device``: "cpu", "cuda" or "auto"; ``threads``: CPU threads (None:
    the cores this process may use for ONNX Runtime, torch's own setting for torch);
    ``backend``: "auto", "torch" or "onnxruntime" (module docstring); ``settings``: config
    overrides such as ``decode_score_thresh=0.6`` (as ``key=value`` strings or keywords).
    """

    def __init__(self, weights=None, device: str = "auto", threads: int | None = None, *overrides: str,
                 backend: str = "auto", **settings):
        self.backend = choose_backend(backend, weights, device)
        pairs = [*overrides, *(f"{k}={v}" for k, v in settings.items())]
        if self.backend == "onnxruntime":
            if device not in ("auto", "cpu"):
                raise ValueError(f"--device {device}: the onnxruntime backend runs on the CPU; use --backend torch")
            self.device = "cpu"
            self.model, self.cfg, _ = load_onnx_detector(weights, int(threads or 0), pairs)
        else:
            import torch  # the torch backend only

            from digitdet.read.detector import load_detector

            if threads:
                torch.set_num_threads(int(threads))
            if device == "auto":
                device = "cuda" if torch.cuda.is_available() else "cpu"
            self.device = torch.device(device)
            self.model, self.cfg, _ = load_detector(weights, self.device, pairs)
        self.detect = reading_detector(self.model, self.cfg, self.device)
        self._detect_many = None  # onnxruntime, several photos: threads at a time (made on first use)
        self.decoder = self.cfg.decoder()

    def __call__(self, photos, batch_size: int = 32):
        """One photo -> a :class:`Result`; a list (or tuple) of photos -> a list of them, in order."""
        if isinstance(photos, (list, tuple)):
            return self.read_many(list(photos), batch_size)
        return self.read_many([photos], batch_size)[0]

    def read_many(self, photos: list, batch_size: int = 32) -> list[Result]:
        """:meth:`__call__` for a list; an unreadable photo is a ValueError naming it."""
        return self.read_opened([open_photo(p) for p in photos], batch_size)

    def read_opened(self, opened: list[tuple[Image.Image, str | None]], batch_size: int = 32) -> list[Result]:
        """Results of photos already opened by :func:`open_photo`, in order."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not opened:
            return []
        images = [im for im, _ in opened]
        sizes = [im.size for im in images]
        if self.backend == "onnxruntime" and len(images) == 1:
            dets = read_stream(self.detect, list(enumerate(images)))["detections"]
        elif self.backend == "onnxruntime":
            if self._detect_many is None:
                self._detect_many = reading_detector(self.model.parallel(), self.cfg, self.device)
            dets = read_stream(self._detect_many, list(enumerate(images)), workers=self.model.threads)["detections"]
        else:
            from digitdet.data.loaders import inference_loader
            from digitdet.read.detect import predict_batches

            loader = inference_loader(_Photos(images), [w / h for w, h in sizes], batch_size, 0,
                                      [w * h for w, h in sizes])
            dets = predict_batches(self.model, loader, self.device, progress=False, detect=self.detect)["detections"]
        return [self._result(dets[i], sizes[i], source, image) for i, (image, source) in enumerate(opened)]

    def _result(self, det, size, source, image) -> Result:
        digits = [Digit(digit, tuple(box), score) for digit, box, score in digits_read(det, self.decoder, size)]
        number = "".join(str(g.digit) for g in digits) or None
        return Result(number, digits, size[0], size[1], source, image)
