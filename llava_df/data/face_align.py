"""Face detection and crops as DeepfakeBench makes them: dlib's HOG detector, 5 landmarks, the ArcFace template.

How to call::

    detector = FaceDetector()                              # dlib (the [faces] extra), loaded once
    found = crop_face(detector, rgb, CropRecipe())         # rgb: uint8 [H, W, 3]
    found.image, found.faces, found.status                 # PIL 256x256 crop or None, faces seen, "ok" / why not

DeepfakeBench's ``preprocessing/preprocess.py`` (``extract_aligned_face_dlib``), step by step:

- ``dlib.get_frontal_face_detector()`` on the RGB frame, upsampled once; the largest box is kept
  (``max`` over width x height: the first of equal ones);
- 68-point landmarks in that box (DeepfakeBench ships an 81-point model whose first 68 points are
  the 68-point model's; ``face_recognition_models`` ships the 68-point one), of which points 37,
  44, 30, 49, 55 (an eye point each side, the nose tip, a point beside each mouth corner);
- a similarity transform (Umeyama, as ``skimage.transform.SimilarityTransform.estimate``) onto
  ArcFace's 112-px template, shifted 8 px right, scaled to 256 px and shrunk into a 1.3x margin;
  the frame warped bilinearly with black outside (OpenCV's ``warpAffine``; here PIL's, with the
  pixel-centre convention converted, so the two agree to rounding);
- the detector run again on the aligned crop: a crop where it finds no face is dropped too.

``CropRecipe(kind="margin")`` is the simpler crop many papers use: the detector's box grown by
``margin`` on every side, made square, resized.
"""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from llava_df.errors import DataError

NEEDS_DLIB = (
    "face detection needs dlib and its landmark model, which are not installed: pip install -e '.[faces]' "
    "(dlib-bin, face_recognition_models)"
)
# ArcFace's 5-point template for 112x112 crops (insightface), as DeepfakeBench's img_align_crop has it.
ARCFACE_112 = np.array(
    [[30.2946, 51.6963], [65.5318, 51.5014], [48.0252, 71.7366], [33.5493, 92.3655], [62.7299, 92.2041]],
    dtype=np.float32,
)
FIVE_POINTS = (37, 44, 30, 49, 55)  # DeepfakeBench's get_keypts: indices into the 68 (81) landmarks
UPSAMPLE = 1  # DeepfakeBench calls face_detector(rgb, 1)


@dataclass(frozen=True)
class CropRecipe:
    """How a face becomes the image the model sees (saved with extracted data: predict crops alike)."""

    kind: Literal["align", "margin"] = "align"
    size: int = 256  # side of the square crop, pixels (DeepfakeBench: 256)
    scale: float = 1.3  # align: the template shrunk into this margin (DeepfakeBench: 1.3)
    margin: float = 0.3  # margin: the box grown by this fraction of its side on every side
    recheck: bool = True  # align: drop a crop where the detector finds no face (DeepfakeBench does)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, payload: dict) -> CropRecipe:
        return cls(**{k: payload[k] for k in asdict(cls()) if k in payload})

    def describe(self) -> str:
        if self.kind == "align":
            return f"aligned to the ArcFace template, {self.size} px, scale {self.scale}"
        return f"detector box + {self.margin:.0%} margin, {self.size} px"


@dataclass(frozen=True)
class Box:
    left: int
    top: int
    right: int
    bottom: int

    @property
    def area(self) -> int:
        return (self.right - self.left) * (self.bottom - self.top)


@dataclass
class FoundFace:
    image: Image.Image | None  # the crop, or None when no usable face
    faces: int  # faces the detector saw in the frame
    status: Literal["ok", "no_face", "lost_after_align"]
    box: Box | None = None  # the face cropped (the largest)


def landmark_model_path() -> Path:
    """face_recognition_models' 68-point predictor, found without importing the package (its __init__
    needs pkg_resources, which setuptools >= 81 no longer ships)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(NEEDS_DLIB)
    path = (
        Path(next(iter(spec.submodule_search_locations))) / "models" / "shape_predictor_68_face_landmarks.dat"
    )
    if not path.is_file():
        raise DataError(
            f"{path} is missing from face_recognition_models; reinstall it (pip install -e '.[faces]')."
        )
    return path


def faces_available() -> bool:
    """True when dlib and the landmark model are installed (the [faces] extra)."""
    return (
        importlib.util.find_spec("dlib") is not None
        and importlib.util.find_spec("face_recognition_models") is not None
    )


class FaceDetector:
    """dlib's frontal HOG detector and 68-point landmark predictor, loaded once (about 0.4 s)."""

    def __init__(self, upsample: int = UPSAMPLE):
        try:
            import dlib  # lazy: dlib is the optional [faces] extra; the rest of llava_df runs without it
        except ImportError:
            raise DataError(NEEDS_DLIB) from None
        self._dlib = dlib
        self.upsample = upsample
        self._detect = dlib.get_frontal_face_detector()
        self._predict = dlib.shape_predictor(str(landmark_model_path()))

    def boxes(self, rgb: np.ndarray) -> list[Box]:
        """Face boxes in ``rgb`` (uint8 [H, W, 3]), largest first (equal areas keep the detector's order)."""
        found = self._detect(np.ascontiguousarray(rgb), self.upsample)
        boxes = [Box(r.left(), r.top(), r.right(), r.bottom()) for r in found]
        return sorted(boxes, key=lambda b: -b.area)  # stable: the first of equal boxes stays first, as max()

    def landmarks(self, rgb: np.ndarray, box: Box) -> np.ndarray:
        """68 (x, y) landmarks [68, 2] of the face in ``box``."""
        shape = self._predict(
            np.ascontiguousarray(rgb), self._dlib.rectangle(box.left, box.top, box.right, box.bottom)
        )
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)


def arcface_target(size: int = 256, scale: float = 1.3) -> np.ndarray:
    """The 5 template points [5, 2] in a ``size`` crop with margin ``scale``: DeepfakeBench's img_align_crop."""
    dst = ARCFACE_112.copy()
    dst[:, 0] += 8.0  # the 112x112 template is 96 wide: centred in 112
    dst *= size / 112.0
    margin = size * (scale - 1) / 2.0
    dst += margin
    dst *= size / (size + 2 * margin)
    return dst


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The least-squares similarity [3, 3] mapping ``src`` [N, 2] onto ``dst`` [N, 2] (Umeyama 1991), as
    ``skimage.transform.SimilarityTransform.estimate`` computes it."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    n, dim = src.shape
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    a = dst_c.T @ src_c / n  # [2, 2]
    d = np.ones(dim)
    if np.linalg.det(a) < 0:
        d[-1] = -1
    t = np.eye(dim + 1)
    u, s, vt = np.linalg.svd(a)
    rank = np.linalg.matrix_rank(a)
    if rank == 0:
        raise ValueError("degenerate landmarks: every point is the same")
    if rank == dim - 1 and np.linalg.det(u) * np.linalg.det(vt) > 0:
        t[:dim, :dim] = u @ vt
    elif rank == dim - 1:
        d_last, d[-1] = d[-1], -1
        t[:dim, :dim] = u @ np.diag(d) @ vt
        d[-1] = d_last
    else:
        t[:dim, :dim] = u @ np.diag(d) @ vt
    scale = (s @ d) / src_c.var(axis=0).sum()
    t[:dim, dim] = dst_mean - scale * (t[:dim, :dim] @ src_mean)
    t[:dim, :dim] *= scale
    return t


def warp_affine(rgb: np.ndarray, matrix: np.ndarray, size: int) -> Image.Image:
    """OpenCV's ``warpAffine(rgb, matrix[:2], (size, size))`` (bilinear, black outside) with PIL.

    ``matrix`` maps input pixels to output pixels, pixel centres at integers (OpenCV's and
    skimage's convention). PIL samples output pixel (x, y) at ``A @ (x + 0.5, y + 0.5) - 0.5`` in
    those coordinates, so it is handed the inverse map conjugated by the half-pixel shift.
    """
    inverse = np.linalg.inv(matrix)  # output -> input, integer centres
    shift = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
    unshift = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1]])
    a = shift @ inverse @ unshift  # output corners -> input corners
    data = tuple(float(v) for v in a[:2].reshape(-1))
    image = Image.fromarray(np.ascontiguousarray(rgb))
    return image.transform((size, size), Image.Transform.AFFINE, data, resample=Image.Resampling.BILINEAR)


def margin_crop(rgb: np.ndarray, box: Box, margin: float, size: int) -> Image.Image:
    """The square around ``box`` grown by ``margin`` x its side on every side (black past the frame), resized."""
    side = max(box.right - box.left, box.bottom - box.top) * (1 + 2 * margin)
    cx, cy = (box.left + box.right) / 2, (box.top + box.bottom) / 2
    square = tuple(round(v) for v in (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2))
    return (
        Image.fromarray(np.ascontiguousarray(rgb)).crop(square).resize((size, size), Image.Resampling.BICUBIC)
    )


def crop_face(detector: FaceDetector, rgb: np.ndarray, recipe: CropRecipe) -> FoundFace:
    """The largest face of ``rgb`` cropped by ``recipe``, with how many faces were seen and why none was kept."""
    boxes = detector.boxes(rgb)
    if not boxes:
        return FoundFace(None, 0, "no_face")
    box = boxes[0]
    if recipe.kind == "margin":
        return FoundFace(margin_crop(rgb, box, recipe.margin, recipe.size), len(boxes), "ok", box)
    points = detector.landmarks(rgb, box)[list(FIVE_POINTS)]  # [5, 2]
    matrix = similarity_transform(points, arcface_target(recipe.size, recipe.scale))
    crop = warp_affine(rgb, matrix, recipe.size)
    if recipe.recheck and not detector.boxes(np.asarray(crop)):
        return FoundFace(None, len(boxes), "lost_after_align", box)
    return FoundFace(crop, len(boxes), "ok", box)
