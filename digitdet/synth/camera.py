"""What the camera does to the picture after the geometry: light, blur, resolution, noise, JPEG.

None of these move a digit, so the boxes computed from the glyph masks stay valid.
"""
from __future__ import annotations

import functools

import cv2
import numpy as np
from PIL import Image

# Sensor noise is read from one fixed pool of Gaussian numbers at a random offset: drawing
# fresh normals for every pixel was the renderer's single costliest step.
_NOISE_POOL_SIZE = 1 << 21


@functools.lru_cache(maxsize=1)
def _noise_pool() -> np.ndarray:
    return np.random.default_rng(12345).standard_normal(_NOISE_POOL_SIZE, dtype=np.float32)


def _noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard-normal float32 noise of ``shape`` (tiled from the pool when larger than it)."""
    n = int(np.prod(shape))
    pool = _noise_pool()
    if n > len(pool):
        return np.resize(np.roll(pool, int(rng.integers(len(pool)))), shape)
    start = int(rng.integers(len(pool) - n + 1))
    return pool[start:start + n].reshape(shape)


def _colour_matrix(cast, saturation: float) -> np.ndarray:
    """3x3 matrix: per-channel colour cast, then pull towards grey by ``saturation`` (1 = keep)."""
    desaturate = saturation * np.eye(3) + (1 - saturation) / 3 * np.ones((3, 3))
    return (desaturate @ np.diag(cast)).astype(np.float32)


def resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``img`` resampled to ``size`` (width, height): area averaging when it shrinks (no
    aliasing of thin strokes), bilinear when it grows. Same pixel-centre alignment as Pillow."""
    shrink = size[0] < img.shape[1] or size[1] < img.shape[0]
    return cv2.resize(img, (int(size[0]), int(size[1])), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _light_and_noise(rng: np.random.Generator, img: np.ndarray, params: dict) -> np.ndarray:
    """Uneven light (a gain plane), a colour cast, duller colours (street photos are duller than
    paint chips), sometimes a cast shadow's soft edge, then sensor noise; (h, w, 3) uint8."""
    h, w = img.shape[:2]
    ys = np.linspace(-0.5, 0.5, h, dtype=np.float32)[:, None]
    xs = np.linspace(-0.5, 0.5, w, dtype=np.float32)[None, :]
    base, gx, gy = params["light_gain"]
    gain = base + gx * xs + gy * ys
    if params["shadow"]:
        # a straight shadow edge at a random angle through the picture, softened over ~15%
        a = rng.uniform(0, 2 * np.pi)
        d = np.cos(a) * xs + np.sin(a) * ys - rng.uniform(-0.3, 0.3)
        gain = gain * (1 - params["shadow"] * np.clip(0.5 + d / 0.15, 0, 1))
    # colour matrix with OpenCV (one C pass; a numpy matmul would start BLAS threads)
    out = cv2.transform(img.astype(np.float32), _colour_matrix(params["cast"], params["saturation"]))
    out *= gain[..., None]
    if params["noise"]:
        out = cv2.scaleAdd(_noise(rng, out.shape), float(params["noise"]), out)
    return np.clip(out, 0, 255, out=out).astype(np.uint8)


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """JPEG round trip of an RGB array (OpenCV codes BGR; a colour swap either way is exact)."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def shoot(rng: np.random.Generator, img: np.ndarray, params: dict) -> Image.Image:
    """Turn the scene as the lens sees it (uint8 (h, w, 3) RGB, output size) into the photo.

    Steps: 1. optional detour through a lower resolution (cheap camera, upscaled crop),
    2. optical blur (``params['blur']`` in output px), 3. light, colour cast and sensor noise,
    4. JPEG. OpenCV does the resampling and blur: several times faster than Pillow on these
    small pictures.
    """
    h, w = img.shape[:2]
    if params["lowres"]:
        small = (max(4, int(w * params["lowres"])), max(4, int(h * params["lowres"])))
        img = cv2.resize(resize(img, small), (w, h), interpolation=cv2.INTER_CUBIC)
    if params["blur"]:
        img = cv2.GaussianBlur(img, (0, 0), params["blur"])  # sigma in px, like Pillow's "radius"
    img = _light_and_noise(rng, img, params)
    if params["jpeg"]:
        img = _jpeg(img, params["jpeg"])
    return Image.fromarray(img)
