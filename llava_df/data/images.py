"""Robust image loading: any file PIL can read -> an 8-bit RGB PIL image, or a clear error.

Conversions (done, not refused, because real face datasets contain all of these):
- grayscale (L, 1), palette (P): replicated / expanded to RGB;
- alpha (RGBA, LA, PA): composited onto black -- a fixed choice, so the same file always gives
  the same pixels (LLaVA's mean-colour padding would depend on the image);
- 16-bit and 32-bit grayscale (I;16*, I, F): scaled to 0..255 (``// 257`` for 16 bit);
- CMYK / YCbCr / LAB: PIL's own conversion; EXIF orientation applied.

Corrupt or truncated files raise :class:`ImageLoadError` naming the file; so does a file of more
than :data:`MAX_PIXELS` pixels, refused from its header before any pixel is decoded. The reason
never holds the file's path (the demo shows it to a browser; callers name the file themselves).
Loaders that prefer skipping record the file in a :class:`LoadSummary` (logged and returned),
never drop it silently.

>>> img = load_rgb("face.png")  # PIL.Image.Image, mode "RGB"
>>> img, info = load_rgb_with_info("face.tif")  # info: ImageInfo(width, height, mode) as stored
"""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

logger = logging.getLogger(__name__)

# Shown in summaries; the full lists stay in the LoadSummary object.
_MAX_NAMED = 20

# Larger images are refused from the header, before decoding: a face needs a few hundred pixels a
# side (the model sees 224-336), while a 12000x12000 PNG of 420 KB decodes to 432 MB of RGB (more in
# 16-bit or float) -- a decompression bomb for predict, the demo and training. 64 MP holds any
# camera photo up to 8000x8000.
MAX_PIXELS = 64_000_000


class ImageLoadError(ValueError):
    """An image file that cannot be decoded (corrupt, truncated, not an image, missing)."""

    def __init__(self, path: str | Path, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"Cannot load image {self.path}: {reason}")


def _scale_to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    if mode.startswith("I;16") or (mode == "I" and arr.max(initial=0) > 255):
        return (arr.astype(np.float64) / 257.0).round().clip(0, 255).astype(np.uint8)
    if mode == "F" and arr.max(initial=0) <= 1.0:  # float images are usually 0..1
        arr = arr * 255.0
    return arr.round().clip(0, 255).astype(np.uint8)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL image -> 8-bit RGB (see the module docstring for each mode)."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        gray = _scale_to_uint8(np.asarray(img), img.mode)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("RGB")
    return img.convert("RGB")


@dataclass(frozen=True)
class ImageInfo:
    """An image file as stored: its size before EXIF rotation and its PIL mode before conversion."""

    width: int
    height: int
    mode: str


def _too_large(width: int, height: int) -> str | None:
    if width * height <= MAX_PIXELS:
        return None
    return (
        f"{width}x{height} is {width * height / 1e6:.0f} megapixels, above the limit of {MAX_PIXELS / 1e6:.0f} "
        "(llava_df.data.images.MAX_PIXELS); not decoded. Downscale it first: the model sees a few hundred pixels a side"
    )


def load_rgb_with_info(path: str | Path) -> tuple[Image.Image, ImageInfo]:
    """(8-bit RGB image, the file's ImageInfo): one full decode (so truncation is caught now, not
    mid-training), the size checked against MAX_PIXELS from the header first."""
    path = Path(path)
    if not path.is_file():
        raise ImageLoadError(path, "no such file")
    try:
        # From bytes, not the file: nothing stays open, and a closed PIL image is never returned
        # (closing destroys its pixels), so no defensive copy of a large image is needed.
        with warnings.catch_warnings():
            # PIL warns above 89 MP; MAX_PIXELS is lower and refuses those below, with a reason.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(path.read_bytes()))
        info = ImageInfo(img.width, img.height, img.mode)
        too_large = _too_large(img.width, img.height)
        if too_large:
            raise ImageLoadError(path, too_large)
        img.load()
        ImageOps.exif_transpose(img, in_place=True)
        return to_rgb(img), info
    except Image.DecompressionBombError as err:  # over 2x PIL's own limit: refused by Image.open
        raise ImageLoadError(
            path,
            f"more than {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels, above the limit of {MAX_PIXELS / 1e6:.0f} "
            "(llava_df.data.images.MAX_PIXELS); not decoded. Downscale it first",
        ) from err
    except UnidentifiedImageError as err:
        raise ImageLoadError(path, "no image format PIL reads recognises it") from err
    except (OSError, SyntaxError, ValueError) as err:
        if isinstance(err, ImageLoadError):
            raise
        raise ImageLoadError(path, f"{type(err).__name__}: {err}".replace(str(path), path.name)) from err


def load_rgb(path: str | Path) -> Image.Image:
    """Decode ``path`` fully (so truncation is caught now, not mid-training) and convert to RGB."""
    return load_rgb_with_info(path)[0]


def printable(text: str) -> str:
    """``text`` with the bytes of a file name that is not valid UTF-8 (decoded by Python as lone
    surrogates) written as \\xNN escapes: a terminal, a log file or a JSON reader can show it."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


@dataclass
class LoadSummary:
    """What a loader kept and what it skipped, with reasons. Returned and logged, never silent."""

    source: str
    loaded: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file or file:line, reason)
    duplicates: int = 0  # of the skipped, how many were duplicates (llava_df.data.index.dedupe)

    def skip(self, where: str, reason: str) -> None:
        self.skipped.append((where, reason))

    def line(self) -> str:
        text = f"{self.source}: loaded {self.loaded}, skipped {len(self.skipped)}"
        if self.skipped:
            named = "; ".join(f"{printable(w)} ({printable(r)})" for w, r in self.skipped[:_MAX_NAMED])
            more = f"; and {len(self.skipped) - _MAX_NAMED} more" if len(self.skipped) > _MAX_NAMED else ""
            text += f": {named}{more}"
        return text

    def to_dict(self) -> dict:
        """For results.json's ``data``: every skipped entry with its reason."""
        return {
            "source": self.source,
            "loaded": self.loaded,
            "duplicates": self.duplicates,
            "skipped": [{"entry": w, "reason": r} for w, r in self.skipped],
        }

    def log(self) -> None:
        (logger.warning if self.skipped else logger.info)(self.line())


def jpeg_round_trip(img: np.ndarray, quality: int) -> Image.Image:
    """float (H, W, 3) in [0, 1] -> JPEG round trip at ``quality`` -> PIL RGB."""
    buf = io.BytesIO()
    Image.fromarray((img * 255.0 + 0.5).astype(np.uint8), mode="RGB").save(
        buf, format="JPEG", quality=quality
    )
    buf.seek(0)
    with Image.open(buf) as decoded:
        return decoded.convert("RGB")
