"""Robust image loading: any file PIL can read -> an 8-bit RGB PIL image, or a clear error.

Conversions (done, not refused, because real face datasets contain all of these):
- grayscale (L, 1), palette (P): replicated / expanded to RGB;
- alpha (RGBA, LA, PA): composited onto black -- a fixed choice, so the same file always gives
  the same pixels (LLaVA's mean-colour padding would depend on the image);
- 16-bit and 32-bit grayscale (I;16*, I, F): scaled to 0..255 (``// 257`` for 16 bit);
- CMYK / YCbCr / LAB: PIL's own conversion; EXIF orientation applied.

Corrupt or truncated files raise :class:`ImageLoadError` naming the file. Loaders that prefer
skipping record the file in a :class:`LoadSummary` (logged and returned), never drop it silently.

>>> img = load_rgb("face.png")  # PIL.Image.Image, mode "RGB"
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

logger = logging.getLogger(__name__)

# Shown in summaries; the full lists stay in the LoadSummary object.
_MAX_NAMED = 20


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


def load_rgb(path: str | Path) -> Image.Image:
    """Decode ``path`` fully (so truncation is caught now, not mid-training) and convert to RGB."""
    path = Path(path)
    if not path.is_file():
        raise ImageLoadError(path, "no such file")
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            return to_rgb(img).copy()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ImageLoadError(path, f"{type(err).__name__}: {err}") from err


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
            named = "; ".join(f"{w} ({r})" for w, r in self.skipped[:_MAX_NAMED])
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
