"""Procedural face renderer: random face parameters -> a float RGB image and its landmarks.

Every visual property is a field of :class:`FaceParams`, drawn by :func:`sample_face_params`
from a numpy Generator, so an image is a pure function of (params, size): the synthetic
benchmark is reproducible and the face-swap manipulation can re-render a *different identity*
at the same pose. Geometry is in image units (0..1), so one params object renders at 64, 224 or
336 pixels alike. :func:`attributes` flattens the parameters a vision tower could regress
(skin tone, head position/size, hair colour, ...).

Camera effects (sensor noise, JPEG) are applied by the caller (``synthetic.py``) because the
manipulations must act between them, as a real forgery acts on a captured frame.

>>> rng = np.random.default_rng(0)
>>> p = sample_face_params(rng)
>>> img, lm = render_face(p, 64)  # img: (64, 64, 3) float32 in [0, 1]; lm: Landmarks in pixels
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np
from scipy import ndimage

# Skin tones from dark to light (sRGB, 0..1); a tone t in [0, 1] interpolates along them.
_SKIN_RAMP = np.array([[0.30, 0.19, 0.13], [0.55, 0.36, 0.24], [0.78, 0.58, 0.45], [0.96, 0.82, 0.71]])
_HAIR = np.array(
    [
        [0.08, 0.07, 0.07],
        [0.30, 0.19, 0.11],
        [0.55, 0.40, 0.22],
        [0.85, 0.72, 0.45],
        [0.60, 0.25, 0.12],
        [0.70, 0.70, 0.70],
    ]
)
_IRIS = np.array([[0.30, 0.18, 0.10], [0.25, 0.45, 0.70], [0.30, 0.50, 0.30], [0.45, 0.45, 0.50]])
HAIR_STYLES = ("short", "long", "bald")


@dataclass(frozen=True)
class FaceParams:
    """All the randomness of one face. Positions of features are in head-local units
    (u across, in head half-widths; v down, in head half-heights; origin at the head centre)."""

    # pose and head, image units
    cx: float
    cy: float
    rx: float
    ry: float
    roll: float  # radians
    # identity
    skin_tone: float
    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    hair_style: int  # index into HAIR_STYLES
    hairline: float  # v of the hairline
    iris: tuple[float, float, float]
    eye_u: float
    eye_v: float
    eye_r: float
    eye_open: float  # eye height / width
    brow_gap: float
    brow_thick: float
    brow_tilt: float
    nose_v: float
    nose_len: float
    nose_w: float
    mouth_v: float
    mouth_w: float
    lip_h: float
    smile: float
    lips: tuple[float, float, float]
    texture_seed: int
    # scene
    bg_top: tuple[float, float, float]
    bg_bottom: tuple[float, float, float]
    bg_blob: tuple[float, float]  # centre of a soft background blob, image units
    clothes: tuple[float, float, float]
    light_angle: float
    light_strength: float
    # camera (applied by the caller)
    noise_sigma: float
    jpeg_quality: int


@dataclass(frozen=True)
class Landmarks:
    """Pixel coordinates (x, y) of the features, and the inner-face ellipse the manipulations use
    (centre, half-axes in pixels, roll): the region a face swap replaces (Face X-ray's hull)."""

    left_eye: tuple[float, float]
    right_eye: tuple[float, float]
    nose_tip: tuple[float, float]
    mouth: tuple[float, float]
    mouth_half_width: float
    eye_half_width: float
    inner_centre: tuple[float, float]
    inner_axes: tuple[float, float]
    roll: float


def _rgb(a) -> tuple[float, float, float]:
    return tuple(float(round(v, 4)) for v in np.clip(a, 0.0, 1.0))


def _jitter(rng: np.random.Generator, colour: np.ndarray, amount: float) -> tuple[float, float, float]:
    return _rgb(colour + rng.uniform(-amount, amount, 3))


def sample_face_params(rng: np.random.Generator) -> FaceParams:
    """Draw one random face (identity, pose, scene, camera) from ``rng``."""
    u = rng.uniform
    tone = float(u(0.0, 1.0))
    seg = min(int(tone * 3), 2)
    skin = _SKIN_RAMP[seg] + (tone * 3 - seg) * (_SKIN_RAMP[seg + 1] - _SKIN_RAMP[seg])
    hair = _HAIR[rng.integers(len(_HAIR))]
    rx = float(u(0.19, 0.26))
    return FaceParams(
        cx=float(u(0.42, 0.58)),
        cy=float(u(0.43, 0.55)),
        rx=rx,
        ry=rx * float(u(1.18, 1.38)),
        roll=float(u(-0.15, 0.15)),
        skin_tone=round(tone, 4),
        skin=_jitter(rng, skin, 0.03),
        hair=_jitter(rng, hair, 0.05),
        hair_style=int(rng.integers(len(HAIR_STYLES))),
        hairline=float(u(-0.75, -0.5)),
        iris=_jitter(rng, _IRIS[rng.integers(len(_IRIS))], 0.05),
        eye_u=float(u(0.33, 0.45)),
        eye_v=float(u(-0.22, -0.08)),
        eye_r=float(u(0.13, 0.18)),
        eye_open=float(u(0.4, 0.62)),
        brow_gap=float(u(0.13, 0.2)),
        brow_thick=float(u(0.025, 0.05)),
        brow_tilt=float(u(-0.25, 0.25)),
        nose_v=float(u(0.14, 0.24)),
        nose_len=float(u(0.18, 0.3)),
        nose_w=float(u(0.12, 0.2)),
        mouth_v=float(u(0.45, 0.58)),
        mouth_w=float(u(0.24, 0.38)),
        lip_h=float(u(0.04, 0.08)),
        smile=float(u(-0.05, 0.12)),
        lips=_rgb(skin * np.array([0.85, 0.55, 0.55]) + rng.uniform(-0.04, 0.04, 3)),
        texture_seed=int(rng.integers(2**31)),
        bg_top=_rgb(u(0.05, 0.95, 3)),
        bg_bottom=_rgb(u(0.05, 0.95, 3)),
        bg_blob=(round(float(u(0.0, 1.0)), 4), round(float(u(0.0, 1.0)), 4)),
        clothes=_rgb(u(0.05, 0.9, 3)),
        light_angle=float(u(0.0, 2 * math.pi)),
        light_strength=float(u(0.15, 0.45)),
        noise_sigma=float(u(0.004, 0.025)),
        jpeg_quality=int(rng.integers(70, 96)),
    )


def resample_identity(params: FaceParams, rng: np.random.Generator, align: float) -> FaceParams:
    """Another person at the same pose, scene and camera: the donor of a face swap.

    ``align`` in [0, 1] pulls the donor's feature positions toward the target's (1: eyes and
    mouth exactly where the target's are), as a swap pipeline aligns landmarks.
    """
    other = sample_face_params(rng)
    mix = {}
    for name in ("eye_u", "eye_v", "eye_r", "brow_gap", "nose_v", "nose_len", "mouth_v", "mouth_w"):
        mine, theirs = getattr(params, name), getattr(other, name)
        mix[name] = theirs + align * (mine - theirs)
    keep = {k: getattr(params, k) for k in ("cx", "cy", "rx", "ry", "roll", "hair", "hair_style", "hairline")}
    keep |= {
        k: getattr(params, k)
        for k in ("bg_top", "bg_bottom", "bg_blob", "clothes", "light_angle", "light_strength")
    }
    keep |= {"noise_sigma": params.noise_sigma, "jpeg_quality": params.jpeg_quality}
    return replace(other, **keep, **mix)


def attributes(params: FaceParams) -> dict[str, float]:
    """Flat, regressable description of a face (what a vision tower can be pretrained to predict)."""
    p = asdict(params)
    out = {f"head_{k}": p[k] for k in ("cx", "cy", "rx", "ry", "roll")}
    out["skin_tone"] = p["skin_tone"]
    for name in ("skin", "hair", "iris", "bg_top"):
        out.update({f"{name}_{c}": p[name][i] for i, c in enumerate("rgb")})
    out["hair_style"] = p["hair_style"]
    out.update(
        {k: p[k] for k in ("eye_u", "eye_v", "mouth_v", "mouth_w", "smile", "light_angle", "noise_sigma")}
    )
    out["jpeg_quality"] = p["jpeg_quality"]
    return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in out.items()}


class _Canvas:
    """Float image plus head-local coordinates; layers are painted back to front."""

    def __init__(self, p: FaceParams, size: int):
        self.size = size
        self.px = 1.0 / size  # one pixel in image units: the anti-aliasing width
        coords = (np.arange(size, dtype=np.float32) + 0.5) / size
        self.y, self.x = np.meshgrid(coords, coords, indexing="ij")  # (S, S) each
        dx, dy = self.x - p.cx, self.y - p.cy
        c, s = math.cos(p.roll), math.sin(p.roll)
        self.u = (c * dx + s * dy) / p.rx  # (S, S) head-local, across
        self.v = (-s * dx + c * dy) / p.ry  # (S, S) head-local, down
        self.scale = p.rx  # local unit -> image units (approximately, for edge softness)
        self.img = np.zeros((size, size, 3), np.float32)

    def soft(self, sdf_local: np.ndarray) -> np.ndarray:
        """Signed distance (local units, <0 inside) -> coverage in [0, 1] with a 1-pixel edge."""
        return np.clip(0.5 - sdf_local * self.scale / self.px, 0.0, 1.0)

    def ellipse(self, cu, cv, ru, rv, u=None, v=None) -> np.ndarray:
        u = self.u if u is None else u
        v = self.v if v is None else v
        d = np.sqrt(((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2)
        return self.soft((d - 1.0) * min(ru, rv))

    def paint(self, alpha: np.ndarray, colour) -> None:
        a = alpha[..., None]
        self.img = self.img * (1.0 - a) + np.asarray(colour, np.float32) * a


def render_face(p: FaceParams, size: int) -> tuple[np.ndarray, Landmarks]:
    """Render ``p`` at ``size`` x ``size``: (image (S, S, 3) float32 in [0, 1], Landmarks)."""
    if size < 16:
        raise ValueError(f"image size {size} is too small to draw a face; use 16 or more (default 64).")
    cv = _Canvas(p, size)
    skin = np.asarray(p.skin, np.float32)
    hair = np.asarray(p.hair, np.float32)

    # background: vertical gradient + one soft blob, so backgrounds are not flat
    t = cv.y[..., None]
    cv.img = (1 - t) * np.asarray(p.bg_top, np.float32) + t * np.asarray(p.bg_bottom, np.float32)
    blob = np.exp(-(((cv.x - p.bg_blob[0]) ** 2 + (cv.y - p.bg_blob[1]) ** 2) / 0.05))[..., None]
    cv.img = cv.img * (1 - 0.25 * blob) + 0.25 * blob * np.asarray(p.bg_bottom[::-1], np.float32)

    style = HAIR_STYLES[p.hair_style]
    if style == "long":  # hair behind the head and shoulders
        cv.paint(cv.ellipse(0.0, 0.25, 1.32, 1.3) * (cv.v < 1.35), hair * 0.85)
    cv.paint(cv.soft(np.maximum(np.abs(cv.u) - 0.5, 0.3 - cv.v)), skin * 0.82)  # neck
    cv.paint(cv.ellipse(0.0, 2.05, 2.4, 0.75), p.clothes)  # shoulders
    for side in (-1, 1):  # ears
        cv.paint(cv.ellipse(side * 0.98, -0.02, 0.13, 0.2), skin * 0.9)

    # head: Lambertian shading of an ellipsoid, plus a smooth skin texture
    head = cv.ellipse(0.0, 0.0, 1.0, 1.0)
    nz = np.sqrt(np.clip(1.0 - cv.u**2 - cv.v**2, 0.0, 1.0))
    lu, lv = math.cos(p.light_angle) * 0.6, math.sin(p.light_angle) * 0.6
    lambert = np.clip(lu * cv.u + lv * cv.v + 0.8 * nz, 0.0, None)
    shade = (1 - p.light_strength) + p.light_strength * lambert
    tex_rng = np.random.default_rng(p.texture_seed)
    texture = ndimage.gaussian_filter(tex_rng.standard_normal((size, size)).astype(np.float32), size / 40)
    texture *= 0.035 / (texture.std() + 1e-6)
    cheeks = sum(cv.ellipse(side * 0.5, 0.28, 0.22, 0.16) for side in (-1, 1)) * 0.04
    skin_px = (
        skin * (shade * (1 + texture))[..., None] * (1 - np.array([0, 1, 1], np.float32) * cheeks[..., None])
    )
    a = head[..., None]
    cv.img = cv.img * (1 - a) + skin_px * a

    if style != "bald":  # hair cap above a curved hairline
        wave = 0.04 * np.sin(cv.u * 9.0 + p.texture_seed % 7)
        cap = cv.ellipse(0.0, -0.04, 1.08, 1.06) * cv.soft(cv.v - (p.hairline + 0.35 * cv.u**2 + wave))
        strands = 0.08 * np.sin(cv.u * 40.0 + 3.0 * cv.v)  # fine texture along the hair
        cv.paint(cap, hair)
        cv.img = cv.img * (1.0 + strands * cap)[..., None]

    # eyes: white, iris, pupil, lid line; brows above
    eye_rv = p.eye_r * p.eye_open * p.rx / p.ry  # keep eyes' aspect in image space
    for side in (-1, 1):
        eu = side * p.eye_u
        white = cv.ellipse(eu, p.eye_v, p.eye_r, eye_rv)
        cv.paint(white, np.array([0.93, 0.92, 0.9]) * shade.mean())
        cv.paint(white * cv.ellipse(eu, p.eye_v, p.eye_r * 0.48, p.eye_r * 0.48 * p.rx / p.ry), p.iris)
        cv.paint(
            white * cv.ellipse(eu, p.eye_v, p.eye_r * 0.22, p.eye_r * 0.22 * p.rx / p.ry), (0.03, 0.03, 0.03)
        )
        d = np.sqrt(((cv.u - eu) / p.eye_r) ** 2 + ((cv.v - p.eye_v) / eye_rv) ** 2)
        lid = cv.soft(np.abs(d - 1.0) * eye_rv - 0.02) * (cv.v < p.eye_v)
        cv.paint(lid, skin * 0.35)
        bv = p.eye_v - p.brow_gap
        c, s = math.cos(side * p.brow_tilt), math.sin(side * p.brow_tilt)
        bu_, bv_ = c * (cv.u - eu) + s * (cv.v - bv), -s * (cv.u - eu) + c * (cv.v - bv)
        cv.paint(cv.ellipse(0, 0, p.eye_r * 1.25, p.brow_thick, bu_, bv_), hair * 0.8)

    # nose: side shadow toward the dark side, nostrils, tip highlight
    side_dark = -1.0 if lu > 0 else 1.0
    ridge = cv.ellipse(side_dark * p.nose_w * 0.6, p.nose_v - p.nose_len / 2, p.nose_w * 0.3, p.nose_len / 2)
    cv.paint(ridge, skin * 0.75)
    for side in (-1, 1):
        cv.paint(cv.ellipse(side * p.nose_w * 0.45, p.nose_v, p.nose_w * 0.22, 0.025), skin * 0.4)
    cv.paint(cv.ellipse(0.0, p.nose_v - 0.04, p.nose_w * 0.3, 0.03) * 0.5, np.minimum(skin * 1.2, 1.0))

    # mouth: two lips bent by the smile, a dark line between them
    bend = p.smile * (cv.u / p.mouth_w) ** 2
    mv = cv.v - p.mouth_v + bend
    cv.paint(cv.ellipse(0.0, 0.0, p.mouth_w, p.lip_h * 2.0, v=mv), p.lips)
    line = cv.soft(np.abs(mv) - 0.008) * (np.abs(cv.u) < p.mouth_w * 0.95)
    cv.paint(line, np.asarray(p.lips) * 0.35)

    img = np.clip(cv.img, 0.0, 1.0).astype(np.float32)
    return img, _landmarks(p, size)


def _landmarks(p: FaceParams, size: int) -> Landmarks:
    c, s = math.cos(p.roll), math.sin(p.roll)

    def to_px(u: float, v: float) -> tuple[float, float]:
        dx, dy = u * p.rx, v * p.ry  # local -> image offsets, then undo the roll
        return ((p.cx + c * dx - s * dy) * size, (p.cy + s * dx + c * dy) * size)

    top = p.eye_v - p.brow_gap - 0.08
    bottom = p.mouth_v + 2.5 * p.lip_h
    return Landmarks(
        left_eye=to_px(-p.eye_u, p.eye_v),
        right_eye=to_px(p.eye_u, p.eye_v),
        nose_tip=to_px(0.0, p.nose_v),
        mouth=to_px(0.0, p.mouth_v),
        mouth_half_width=p.mouth_w * p.rx * size,
        eye_half_width=p.eye_r * p.rx * size,
        inner_centre=to_px(0.0, (top + bottom) / 2),
        inner_axes=((p.eye_u + p.eye_r * 1.4) * p.rx * size, (bottom - top) / 2 * p.ry * size),
        roll=p.roll,
    )


def add_sensor_noise(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Camera noise: signal-dependent (shot) plus constant (read) Gaussian noise, per channel.

    img: (H, W, 3) float in [0, 1] -> same shape, clipped to [0, 1].
    """
    std = sigma * np.sqrt(0.3 + 0.7 * img)  # brighter pixels are noisier, as in a real sensor
    return np.clip(img + std * rng.standard_normal(img.shape, dtype=np.float32), 0.0, 1.0)
