"""What the camera does to the picture after the geometry: light, blur, resolution, noise, JPEG.

None of these move a digit, so the boxes computed from the glyph masks stay valid.
"""
from __future__ import annotations

import functools
import io

import numpy as np
from PIL import Image, ImageFilter


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
    # colour matrix in Pillow (C, one pass; a numpy matmul would start BLAS threads)
    matrix = np.c_[_colour_matrix(params["cast"], params["saturation"]), np.zeros(3)]
    img = np.asarray(Image.fromarray(img).convert("RGB", matrix=tuple(matrix.ravel().tolist())))
    out = img * gain[..., None]
    if params["noise"]:
        out += _noise(rng, out.shape) * np.float32(params["noise"])
    return np.clip(out, 0, 255, out=out).astype(np.uint8)


def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def shoot(rng: np.random.Generator, work: Image.Image, size: tuple[int, int], params: dict) -> Image.Image:
    """Turn the warped work image into the output photo of ``size`` (width, height).

    Steps: 1. shrink to ``size`` (the work image is supersampled), 2. optional detour through a
    lower resolution (cheap camera, upscaled crop), 3. optical blur (``params['blur']`` in
    output px), 4. light, colour cast and sensor noise, 5. JPEG. Blur and light are smooth,
    so doing them at the output resolution looks the same and costs a fraction.
    """
    img = work.resize(size, Image.BILINEAR, reducing_gap=2.0)
    if params["lowres"]:
        small = (max(4, int(size[0] * params["lowres"])), max(4, int(size[1] * params["lowres"])))
        img = img.resize(small, Image.BILINEAR).resize(size, Image.BICUBIC)
    if params["blur"]:
        img = img.filter(ImageFilter.GaussianBlur(params["blur"]))
    img = Image.fromarray(_light_and_noise(rng, np.asarray(img), params))
    if params["jpeg"]:
        img = _jpeg(img, params["jpeg"])
    return img
