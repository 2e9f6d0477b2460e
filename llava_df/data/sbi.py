"""Self-blended fakes (SBI, Shiohara & Yamasaki 2022) from a folder of REAL face images only.

SBI trains a detector without any fake data: each real face is blended with a colour- and
geometry-jittered copy of itself through a deformed face mask, which leaves exactly the
blending traces forgeries share. This module has no landmark detector, so the mask is a
**face-ellipse heuristic**: an ellipse centred slightly below the image centre covering the
central ~60% x 75% of the frame -- right for face crops (FF++/Celeb-DF frames cropped around the
face), wrong for wide shots. Crop faces first.

    llava-df data sbi --real_dir data/real_faces --out data/sbi --seed 0 --difficulty 0.5
    llava-df data sbi --help                # every flag, with its default

writes ``real/`` (each readable source, as PNG), ``fake/`` (its SBI fakes) and metadata.csv
(file_name, label, manipulation=self_blend, group=source), so ``--data_dir data/sbi`` trains on
it and a real image never lands in another split than its own fakes.

>>> fake = sbi_fake(Image.open("face.png").convert("RGB"), np.random.default_rng(0), difficulty=0.5)
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
from PIL import Image

from llava_df.data.images import ImageLoadError, LoadSummary, load_rgb
from llava_df.data.manipulations import check_difficulty, self_blend_array
from llava_df.errors import DataError, DataNotFoundError

logger = logging.getLogger(__name__)

_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


def heuristic_face_ellipse(width: int, height: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """(centre, half-axes) in pixels of the assumed face in a face crop (no landmarks)."""
    return (0.5 * width, 0.52 * height), (0.3 * width, 0.38 * height)


def sbi_fake(image: Image.Image, rng: np.random.Generator, difficulty: float = 0.5) -> Image.Image:
    """One self-blended fake of an RGB face crop (same size)."""
    arr = np.asarray(image.convert("RGB"), np.float32) / 255.0  # (H, W, 3)
    centre, axes = heuristic_face_ellipse(arr.shape[1], arr.shape[0])
    out = self_blend_array(arr, centre, axes, 0.0, rng, check_difficulty(difficulty))
    return Image.fromarray((np.clip(out, 0, 1) * 255.0 + 0.5).astype(np.uint8), mode="RGB")


def write_sbi_folder(
    real_dir: str | Path, out: str | Path, *, seed: int = 0, difficulty: float = 0.5, per_image: int = 1
) -> tuple[Path, LoadSummary]:
    """Write real/, fake/ and metadata.csv under ``out``; returns (metadata path, summary)."""
    real_dir, out = Path(real_dir), Path(out)
    if not real_dir.is_dir():
        raise DataNotFoundError(f"--real_dir {str(real_dir)!r} is not a folder of real face images.")
    if per_image < 1:
        raise DataError(f"per_image must be >= 1, got {per_image}.")
    sources = sorted(p for p in real_dir.rglob("*") if p.is_file() and p.suffix.lower() in _SUFFIXES)
    if not sources:
        raise DataError(f"No image ({sorted(_SUFFIXES)}) under {str(real_dir)!r}.")
    (out / "real").mkdir(parents=True, exist_ok=True)
    (out / "fake").mkdir(parents=True, exist_ok=True)
    summary = LoadSummary(source=f"SBI sources {real_dir}")
    rows = []
    for k, src in enumerate(sources):
        try:
            image = load_rgb(src)
        except ImageLoadError as err:
            summary.skip(str(src), err.reason)
            continue
        stem = src.relative_to(real_dir).with_suffix("").as_posix().replace("/", "__")
        image.save(out / "real" / f"{stem}.png")
        rows.append({"file_name": f"real/{stem}.png", "label": "real", "manipulation": "none", "group": stem})
        rng = np.random.default_rng([seed, k])  # per source: adding files does not change others' fakes
        for j in range(per_image):
            sbi_fake(image, rng, difficulty).save(out / "fake" / f"{stem}_sbi{j}.png")
            rows.append(
                {
                    "file_name": f"fake/{stem}_sbi{j}.png",
                    "label": "fake",
                    "manipulation": "self_blend",
                    "group": stem,
                }
            )
    summary.loaded = sum(r["label"] == "real" for r in rows)
    summary.log()
    if not rows:
        raise DataError(f"No readable image under {str(real_dir)!r}. {summary.line()}")
    meta = out / "metadata.csv"
    with meta.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return meta, summary
