"""Fake families, modelled on published forgeries, in a registry keyed by exact name.

Each manipulation maps a captured face (float RGB, sensor noise already in it) to a forged one:

- ``face_swap`` (Face X-ray, Li et al. 2020): the inner face of ANOTHER rendered person, same
  pose, pasted through a deformed soft mask -> blending boundary + colour mismatch.
- ``self_blend`` (SBI, Shiohara & Yamasaki 2022): the image blended with a colour- and
  geometry-jittered copy of itself through a deformed face mask (also used on real photos).
- ``gan_upsample`` (Durall et al. 2020): the face region down-sampled and re-up-sampled with an
  uneven transposed-convolution kernel -> checkerboard, spectral peaks at Nyquist, lost noise.
- ``expression_warp`` (Face2Face-like): a local warp of the mouth or the eyes; the resampling
  also smooths the sensor noise there.
- ``noise_inconsistency``: the inner face denoised and re-noised at another level (the
  noise-residual cue of splicing detectors).

``difficulty`` in [0, 1] scales every artifact from obvious (0) to subtle (1); it never
reaches zero, so even difficulty 1 leaves a detectable trace.

>>> apply_manipulation("self_blend", img, ctx, np.random.default_rng(0), difficulty=0.5)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from llava_df.data.faces import FaceParams, Landmarks, add_sensor_noise, render_face, resample_identity


@dataclass(frozen=True)
class ManipulationContext:
    """What a manipulation may know about the image: landmarks (pixels), and for rendered faces
    the generator parameters (face_swap re-renders another identity from them)."""

    landmarks: Landmarks
    noise_sigma: float
    params: FaceParams | None = None


ManipulationFn = Callable[[np.ndarray, ManipulationContext, np.random.Generator, float], np.ndarray]


@dataclass(frozen=True)
class Manipulation:
    name: str
    fn: ManipulationFn
    description: str
    needs_renderer: bool = False


_REGISTRY: dict[str, Manipulation] = {}


def register_manipulation(name: str, *, description: str, needs_renderer: bool = False):
    """Decorator registering ``fn(image, ctx, rng, difficulty) -> image`` under ``name``."""

    def wrap(fn: ManipulationFn) -> ManipulationFn:
        if name in _REGISTRY:
            raise ValueError(f"Manipulation {name!r} is already registered; pick another name.")
        _REGISTRY[name] = Manipulation(name, fn, description, needs_renderer)
        return fn

    return wrap


def available_manipulations() -> list[str]:
    """Registered names, in registration order."""
    return list(_REGISTRY)


def get_manipulation(name: str) -> Manipulation:
    if name not in _REGISTRY:
        raise KeyError(f"Unknown manipulation {name!r}. Valid names: {', '.join(_REGISTRY)}.")
    return _REGISTRY[name]


def check_difficulty(difficulty: float) -> float:
    if not 0.0 <= float(difficulty) <= 1.0:
        raise ValueError(f"difficulty must be in [0, 1] (0 obvious, 1 subtle), got {difficulty!r}.")
    return float(difficulty)


def apply_manipulation(
    name: str, image: np.ndarray, ctx: ManipulationContext, rng: np.random.Generator, difficulty: float
) -> np.ndarray:
    """image: (H, W, 3) float in [0, 1] -> forged image, same shape, clipped to [0, 1]."""
    entry = get_manipulation(name)
    if entry.needs_renderer and ctx.params is None:
        raise ValueError(
            f"Manipulation {name!r} needs the face renderer's parameters; on photos use self_blend."
        )
    out = entry.fn(image.astype(np.float32, copy=True), ctx, rng, check_difficulty(difficulty))
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def lerp(obvious: float, subtle: float, difficulty: float) -> float:
    """Artifact parameter at ``difficulty``: ``obvious`` at 0, ``subtle`` at 1."""
    return obvious + (subtle - obvious) * difficulty


def blend_mask(
    shape: tuple[int, int],
    centre: tuple[float, float],
    axes: tuple[float, float],
    roll: float,
    rng: np.random.Generator,
    deform: float,
    blur_px: float,
) -> np.ndarray:
    """Soft face mask (H, W) in [0, 1]: an ellipse (pixels) with a randomly wavy boundary
    (relative amplitude ``deform``), Gaussian-blurred by ``blur_px`` -- SBI's deformed hull."""
    h, w = shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    dx, dy = x - centre[0], y - centre[1]
    c, s = math.cos(roll), math.sin(roll)
    u, v = (c * dx + s * dy) / axes[0], (-s * dx + c * dy) / axes[1]
    theta = np.arctan2(v, u)
    radius = np.ones_like(theta)
    for k in (2, 3, 5):  # low-order wobble of the boundary
        radius += deform / k * rng.uniform(-1, 1) * np.cos(k * theta + rng.uniform(0, 2 * math.pi))
    mask = (np.sqrt(u**2 + v**2) <= radius).astype(np.float32)
    return ndimage.gaussian_filter(mask, blur_px) if blur_px > 0 else mask


def _blend(base: np.ndarray, top: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask[..., None]  # (H, W, 1)
    return base * (1.0 - m) + top * m


def _px(ctx: ManipulationContext, image: np.ndarray) -> float:
    return image.shape[0] / 64.0  # sizes below are tuned at 64 px and scale with the image


@register_manipulation(
    "face_swap",
    description="inner face of another identity, soft-mask blended (Face X-ray)",
    needs_renderer=True,
)
def face_swap(image, ctx, rng, difficulty):
    p, lm = ctx.params, ctx.landmarks
    donor_p = resample_identity(p, rng, align=lerp(0.3, 0.9, difficulty))
    donor, _ = render_face(donor_p, image.shape[0])
    donor = add_sensor_noise(donor, p.noise_sigma * rng.uniform(0.5, 2.0), rng)  # another camera
    grow = rng.uniform(0.95, 1.1)
    axes = (lm.inner_axes[0] * grow, lm.inner_axes[1] * grow)
    mask = blend_mask(
        image.shape[:2],
        lm.inner_centre,
        axes,
        lm.roll,
        rng,
        lerp(0.2, 0.08, difficulty),
        lerp(0.5, 2.0, difficulty) * _px(ctx, image),
    )
    # Partial colour transfer: swap pipelines correct colour, better at higher difficulty.
    inside = mask > 0.5
    shift = image[inside].mean(0) - donor[inside].mean(0)  # (3,)
    donor = donor + lerp(0.0, 0.85, difficulty) * shift
    return _blend(image, donor, mask)


def self_blend_array(
    image: np.ndarray,
    centre: tuple[float, float],
    axes: tuple[float, float],
    roll: float,
    rng: np.random.Generator,
    difficulty: float,
) -> np.ndarray:
    """SBI on any image: blend it with a jittered copy of itself inside a deformed ellipse.

    image: (H, W, 3) float in [0, 1]; centre/axes in pixels. Used by ``self_blend`` (rendered
    faces, landmark ellipse) and by ``llava_df.data.sbi`` (photos, heuristic ellipse).
    """
    h, w, _ = image.shape
    px = h / 64.0
    # colour: per-channel gain and offset, optional blur (SBI's source-target augmentations)
    gain = 1.0 + rng.uniform(-1, 1, 3) * lerp(0.15, 0.04, difficulty)
    offset = rng.uniform(-1, 1, 3) * lerp(0.08, 0.02, difficulty)
    source = image * gain + offset
    blur = rng.uniform(0.0, lerp(1.0, 0.4, difficulty)) * px
    if blur > 0.05:
        source = ndimage.gaussian_filter(source, (blur, blur, 0))
    # geometry: scale about the face centre and translate (the misalignment SBI relies on)
    scale = 1.0 + rng.uniform(-1, 1) * lerp(0.06, 0.015, difficulty)
    shift = rng.uniform(-1, 1, 2) * lerp(0.03, 0.008, difficulty) * h
    cy, cx = centre[1], centre[0]
    matrix = np.diag([1.0 / scale, 1.0 / scale])
    off = np.array([cy, cx]) - matrix @ np.array([cy + shift[1], cx + shift[0]])
    source = np.stack(
        [ndimage.affine_transform(source[..., c], matrix, off, order=1, mode="reflect") for c in range(3)], -1
    )
    mask = blend_mask(
        (h, w), centre, axes, roll, rng, lerp(0.25, 0.1, difficulty), lerp(1.0, 2.5, difficulty) * px
    )
    ratio = rng.uniform(lerp(0.8, 0.4, difficulty), 1.0)
    return _blend(image, source, mask * ratio)


@register_manipulation("self_blend", description="blend with a colour/geometry-jittered copy of itself (SBI)")
def self_blend(image, ctx, rng, difficulty):
    lm = ctx.landmarks
    return self_blend_array(image, lm.inner_centre, lm.inner_axes, lm.roll, rng, difficulty)


@register_manipulation(
    "gan_upsample", description="down/up-sampled face, uneven transposed-conv kernel (Durall et al.)"
)
def gan_upsample(image, ctx, rng, difficulty):
    h, w, _ = image.shape
    down = ndimage.gaussian_filter(image, (0.7, 0.7, 0))[::2, ::2]  # (H/2, W/2, 3)
    up = np.zeros_like(image)
    up[::2, ::2] = down[: (h + 1) // 2, : (w + 1) // 2]  # zero insertion, stride 2
    # Kernel [k, 1, k]: k = 0.5 is exact linear interpolation; k != 0.5 is the uneven overlap
    # of a learned stride-2 transposed conv -> every other row/column brighter or darker.
    k = 0.5 + rng.choice([-1.0, 1.0]) * lerp(0.2, 0.02, difficulty)
    kernel = np.array([k, 1.0, k], np.float32)
    up = ndimage.convolve1d(
        ndimage.convolve1d(up, kernel, axis=0, mode="reflect"), kernel, axis=1, mode="reflect"
    )
    up /= ((1.0 + 2.0 * k) / 2.0) ** 2  # keep the mean brightness: only the periodic pattern remains
    up = add_sensor_noise(
        up, ctx.noise_sigma * lerp(0.0, 0.9, difficulty), rng
    )  # generators output no sensor noise
    lm = ctx.landmarks
    axes = (lm.inner_axes[0] * 1.2, lm.inner_axes[1] * 1.25)
    mask = blend_mask((h, w), lm.inner_centre, axes, lm.roll, rng, 0.1, 1.5 * _px(ctx, image))
    return _blend(image, up, mask * lerp(1.0, 0.45, difficulty))  # partial: a refined, re-blended frame


@register_manipulation("expression_warp", description="local warp of the mouth or eyes (Face2Face-like)")
def expression_warp(image, ctx, rng, difficulty):
    h, w, _ = image.shape
    lm = ctx.landmarks
    y, x = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    amp = lerp(0.06, 0.02, difficulty) * h  # pixels of displacement at the feature centre
    dx = np.zeros_like(x)
    dy = np.zeros_like(y)
    if rng.random() < 0.5:  # mouth: lift or drop the corners, open or close
        (mx, my), half = lm.mouth, lm.mouth_half_width
        g = np.exp(-((x - mx) ** 2 + (y - my) ** 2) / (2 * (1.3 * half) ** 2))
        corners = ((x - mx) / half) ** 2
        dy += g * amp * (rng.choice([-1.0, 1.0]) * corners + rng.uniform(-0.6, 0.6) * np.tanh((y - my) / 2.0))
        dx += g * amp * rng.uniform(-0.3, 0.3) * (x - mx) / half
    else:  # eyes: squint or widen both, vertically about each eye centre
        for ex, ey in (lm.left_eye, lm.right_eye):
            g = np.exp(-((x - ex) ** 2 + (y - ey) ** 2) / (2 * (1.4 * lm.eye_half_width) ** 2))
            dy += g * (y - ey) * rng.choice([-1.0, 1.0]) * lerp(0.5, 0.2, difficulty)
    # backward map: output pixel samples the input at (y - dy, x - dx); bilinear smooths noise
    coords = np.stack([y - dy - 0.5, x - dx - 0.5])
    return np.stack(
        [ndimage.map_coordinates(image[..., c], coords, order=1, mode="reflect") for c in range(3)], -1
    )


@register_manipulation(
    "noise_inconsistency", description="inner face denoised and re-noised at another level"
)
def noise_inconsistency(image, ctx, rng, difficulty):
    lm = ctx.landmarks
    sigma = ctx.noise_sigma * (
        lerp(0.0, 0.7, difficulty) if rng.random() < 0.5 else lerp(4.0, 1.5, difficulty)
    )
    blur = lerp(1.0, 0.25, difficulty) * _px(ctx, image)  # the denoiser also removes fine texture
    region = ndimage.gaussian_filter(image, (blur, blur, 0))
    region = add_sensor_noise(region, sigma, rng)
    mask = blend_mask(
        image.shape[:2], lm.inner_centre, lm.inner_axes, lm.roll, rng, 0.15, 1.0 * _px(ctx, image)
    )
    return _blend(image, region, mask)
