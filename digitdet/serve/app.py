"""The HTTP service: ``POST /v1/read`` (a photo in, the number and its digits out), ``GET /health``,
``GET /`` (a page to try it), OpenAPI docs at ``/docs``.

A photo comes as the multipart field ``image`` or as the raw request body. Bad input never takes
the server down: a body over ``max_bytes`` is 413, an image over ``max_pixels`` (a decompression
bomb: huge dimensions in a tiny file) 413, empty or unreadable bytes 400, another content type
415; each as ``{"error": "..."}``. The model runs in a worker thread (the event loop keeps
serving), one photo at a time: zoom-in reading changes the model's input scale while it reads.
"""
from __future__ import annotations

import io
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse
from PIL import Image

from digitdet import __version__
from digitdet.api import Reader, open_photo

MAX_BYTES = 20 * 2**20  # 20 MB
MAX_PIXELS = 50_000_000  # a 7000 x 7000 photo; phones take 12-50 MP
IMAGE_TYPES = ("image/", "application/octet-stream")


class BadInput(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _checked_size(data: bytes, max_pixels: int) -> None:
    """413 for an image whose header promises more than ``max_pixels``, before any pixel is decoded."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
    except Image.DecompressionBombError as e:
        raise BadInput(413, f"image too large to decode ({e})") from None
    except Exception:  # noqa: BLE001 - not an image at all: open_photo says so
        return
    if w * h > max_pixels:
        raise BadInput(413, f"image of {w} x {h} pixels is over the limit of {max_pixels:,} pixels")


def create_app(reader: Reader, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS,
               source: str = "bundled model") -> FastAPI:
    """The service for ``reader`` (loaded once; see module docstring)."""
    app = FastAPI(title="digitdet", version=__version__,
                  description="Reads the house number in a photo: every digit (class + box) and the whole number.")
    lock = threading.Lock()

    def read(data: bytes) -> dict:
        _checked_size(data, max_pixels)
        try:
            photo = open_photo(data)
        except ValueError as e:
            raise BadInput(400, str(e)) from None
        t0 = time.perf_counter()
        with lock:
            result = reader(photo[0])
        out = result.to_dict()
        out.pop("source")
        return {**out, "ms": round((time.perf_counter() - t0) * 1000, 1)}

    @app.exception_handler(BadInput)
    async def bad_input(request: Request, exc: BadInput):
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.post("/v1/read", summary="Read the number in one photo")
    async def read_photo(request: Request):
        """The photo as multipart field ``image``, or as the raw body (any image content type).
        Returns ``{"number": "418" | null, "digits": [{"digit", "box": [x, y, w, h], "score"}],
        "width", "height", "ms"}``."""
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_bytes + 64 * 1024:
            raise BadInput(413, f"request of {int(declared):,} bytes is over the limit of {max_bytes:,}")
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "multipart/form-data":
            form = await request.form()
            upload = form.get("image")
            if upload is None or isinstance(upload, str):
                raise BadInput(400, "multipart request has no file field 'image'")
            data = await upload.read(max_bytes + 1)
        elif kind.startswith(IMAGE_TYPES) or kind == "":
            data = await request.body()
        else:
            raise BadInput(415, f"content type {kind!r}: send an image (image/*) or multipart/form-data with 'image'")
        if len(data) > max_bytes:
            raise BadInput(413, f"image of {len(data):,} bytes is over the limit of {max_bytes:,}")
        if not data:
            raise BadInput(400, "empty body: no image sent")
        return await run_in_threadpool(read, data)

    @app.get("/health", summary="Whether the service is up, and with which model")
    async def health():
        return {"status": "ok", "model": source, "version": __version__}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return resources.files("digitdet.serve").joinpath("page.html").read_text()

    return app


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for tests and benchmarks on loopback)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, seconds: float = 60.0) -> None:
    """Poll ``url``/health until the service answers 200; TimeoutError when it has not in ``seconds``."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise TimeoutError(f"{url}: the service did not answer /health within {seconds:g} s")


def app_from_env() -> FastAPI:
    """``create_app`` with the settings ``digitdet serve`` passes to each uvicorn worker process."""
    weights = os.environ.get("DIGITDET_SERVE_WEIGHTS") or None
    threads = int(os.environ.get("DIGITDET_SERVE_THREADS", "0")) or None
    reader = Reader(weights, os.environ.get("DIGITDET_SERVE_DEVICE", "auto"), threads)
    return create_app(reader, int(os.environ.get("DIGITDET_SERVE_MAX_BYTES", MAX_BYTES)),
                      int(os.environ.get("DIGITDET_SERVE_MAX_PIXELS", MAX_PIXELS)), weights or "bundled model")
