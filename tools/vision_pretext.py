"""Forensic self-supervised pretext for the tiny vision tower: which local processing was applied where.

In the spirit of Huh et al. 2018 ("Fighting Fake News: image splice detection via learned
self-consistency"): a REAL image gets one generic image-processing operation inside a random soft
region, then goes through the camera's JPEG like any other photo; the tower learns to say, per
8x8 patch, which operation touched it. No forgery is rendered and no real/fake label exists
here: the operations are textbook processing steps (PIL / scipy filters, resampling, JPEG,
noise, a colour gain), not calls into ``llava_df.data.manipulations``.

>>> images, ops, cover = processed_reals(n_real=100, variants=2, seed=1000)
>>> images[0]      # PIL RGB 64x64, already JPEG-compressed at the face's own quality
>>> ops[0], cover[0]  # int op id (OPS[op]) and (64, 64) float coverage of its region
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageFilter
from scipy import ndimage

from llava_df.data.faces import add_sensor_noise, render_face, sample_face_params

OPS = ("none", "resample", "blur", "sharpen", "noise", "denoise", "jpeg", "colour", "shift")
_FACE, _CAMERA, _PRETEXT = 1, 2, 7  # streams; 1 and 2 match the benchmark's real-image pipeline


def _u8(img: np.ndarray) -> Image.Image:
    return Image.fromarray((np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8), mode="RGB")


def _f32(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.float32) / 255.0


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """float (H, W, 3) in [0, 1] -> JPEG round trip -> float."""
    buf = io.BytesIO()
    _u8(img).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as decoded:
        return _f32(decoded.convert("RGB"))


def process(img: np.ndarray, op: str, strength: float, rng: np.random.Generator) -> np.ndarray:
    """The whole image processed by ``op`` at ``strength`` in [0, 1] (0 mild, 1 strong)."""
    h, w, _ = img.shape
    if op == "none":
        return img
    if op == "resample":  # down-scale by 1.5-3x, back up with a random interpolation
        f = 1.5 + 1.5 * strength
        small = _u8(img).resize((max(4, round(w / f)), max(4, round(h / f))), Image.Resampling.BILINEAR)
        method = rng.choice([Image.Resampling.NEAREST, Image.Resampling.BILINEAR, Image.Resampling.BICUBIC])
        return _f32(small.resize((w, h), method))
    if op == "blur":
        s = 0.3 + 1.2 * strength
        return ndimage.gaussian_filter(img, (s, s, 0))
    if op == "sharpen":
        f = ImageFilter.UnsharpMask(
            radius=rng.uniform(0.8, 2.0), percent=int(40 + 200 * strength), threshold=0
        )
        return _f32(_u8(img).filter(f))
    if op == "noise":
        return add_sensor_noise(img, 0.005 + 0.04 * strength, rng)
    if op == "denoise":  # median removes sensor noise and fine texture
        return _f32(_u8(img).filter(ImageFilter.MedianFilter(3 if strength < 0.5 else 5)))
    if op == "jpeg":
        return jpeg(img, int(60 - 50 * strength))
    if op == "colour":
        amp = 0.02 + 0.08 * strength
        return img * (1.0 + rng.uniform(-amp, amp, 3)) + rng.uniform(-amp, amp, 3) / 2
    if op == "shift":  # region content misaligned by 1-3 px (a splice's seam)
        d = 1 + int(round(2 * strength))
        return np.roll(img, (int(rng.choice([-d, d])), int(rng.choice([-d, d]))), axis=(0, 1))
    raise KeyError(f"Unknown op {op!r}. Valid: {', '.join(OPS)}.")


def soft_region(size: int, rng: np.random.Generator) -> np.ndarray:
    """A random soft ellipse (H, W) in [0, 1]: where the processing applies."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    cx, cy = rng.uniform(0.2, 0.8, 2) * size
    ax, ay = rng.uniform(0.1, 0.35, 2) * size
    c, s = math.cos(t := rng.uniform(0, math.pi)), math.sin(t)
    u, v = (c * (x - cx) + s * (y - cy)) / ax, (-s * (x - cx) + c * (y - cy)) / ay
    mask = (u**2 + v**2 <= 1.0).astype(np.float32)
    return ndimage.gaussian_filter(mask, rng.uniform(0.3, 2.0))


def processed_reals(n_real: int, variants: int, seed: int, image_size: int = 64):
    """``n_real`` real faces x ``variants`` random local processings each.

    Returns (PIL images, op ids (n,), region coverage (n, H, W)). One variant in ``len(OPS)``
    is left unprocessed on average (op "none", empty region).
    """
    images, ops, cover = [], [], []
    for i in range(n_real):
        params = sample_face_params(np.random.default_rng([seed, i, _FACE]))
        clean, _ = render_face(params, image_size)
        captured = add_sensor_noise(clean, params.noise_sigma, np.random.default_rng([seed, i, _CAMERA]))
        for k in range(variants):
            rng = np.random.default_rng([seed, i, _PRETEXT, k])
            op = int(rng.integers(len(OPS)))
            mask = soft_region(image_size, rng) if op else np.zeros((image_size, image_size), np.float32)
            out = process(captured, OPS[op], float(rng.uniform()), rng)
            out = captured * (1.0 - mask[..., None]) + out * mask[..., None]
            images.append(_u8(jpeg(out, params.jpeg_quality)))  # the camera's own JPEG, as for every photo
            ops.append(op)
            cover.append(mask)
    return images, np.array(ops), np.stack(cover)
