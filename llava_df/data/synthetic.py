"""The synthetic deepfake benchmark: procedural faces, five fake families, splits by seed.

Runs anywhere (numpy + PIL + scipy, no download) and is deterministic: sample ``i`` of seed
``s`` is a pure function of (s, i, image_size, difficulty, its family), so the same arguments
give byte-identical images in memory and on disk.

In memory (training, vision pretraining)::

    from llava_df.data.synthetic import SyntheticConfig, generate
    samples = generate(SyntheticConfig(n=600, seed=0, image_size=64, difficulty=0.5))
    s = samples[0]
    s.image          # PIL RGB, image_size x image_size
    s.is_fake        # 1 fake (positive class), 0 real; s.label is "fake" / "real"
    s.manipulation   # "none" for real, else a name from manipulations.available_manipulations()
    s.split          # "train" / "val" / "test" (70 / 15 / 15, stratified by label)
    s.attributes     # face generator parameters (skin tone, head position/size, hair colour, ...)

On disk (every run reads the same files)::

    llava-df data synthetic --out data/synth --n 2000 --seed 0 --image_size 64 --difficulty 0.5
    llava-df data synthetic --captions --out data/captions --n 1000   # stage-1 captions (data/captions.py)
    llava-df data synthetic --help                                    # every flag, with its default

writes ``images/<id>.png`` (lossless PNG of the final, JPEG-decoded pixels), ``metadata.csv``
(file_name, label, manipulation, split, id, then the attributes) for ``datasets``' imagefolder,
and ``benchmark.json`` (the config and the label mapping).

Pipeline of one image: render a face -> sensor noise -> (fakes) manipulation -> JPEG at the
face's quality. Half of the images are fake; fake families are balanced within each split.

Held-out-manipulation protocol (``holdout_manipulation="gan_upsample"``): train/val fakes come
from every other family, test holds real images plus the held-out family only -- the
cross-manipulation protocol of deepfake papers. Split sizes and every real image are the same
as without the holdout, so the two protocols compare like for like.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from llava_df.data.dataset import REAL_MANIPULATION, SPLITS, parse_fractions, split_sizes
from llava_df.data.faces import add_sensor_noise, attributes, render_face, sample_face_params
from llava_df.data.images import jpeg_round_trip
from llava_df.data.labels import CLASS_NAMES, label_mapping
from llava_df.data.manipulations import (
    ManipulationContext,
    apply_manipulation,
    available_manipulations,
    check_difficulty,
)
from llava_df.errors import DataError

logger = logging.getLogger(__name__)

# Independent random streams per sample, so one sample never depends on another's draws.
_PLAN, _FACE, _CAMERA, _FORGE = 0, 1, 2, 3


@dataclass(frozen=True)
class SyntheticConfig:
    """Everything that determines the benchmark. Same config -> same images."""

    n: int = 600
    seed: int = 0
    image_size: int = 64
    difficulty: float = 0.5
    holdout_manipulation: str | None = None
    manipulations: tuple[str, ...] | None = None  # None: every registered family
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)  # train, val, test

    def families(self) -> tuple[str, ...]:
        return (
            tuple(self.manipulations) if self.manipulations is not None else tuple(available_manipulations())
        )

    def validate(self) -> SyntheticConfig:
        if self.n < 6:
            raise DataError(f"n={self.n} is too small for three splits holding both classes; use n >= 6.")
        if self.image_size < 16:
            raise DataError(f"image_size={self.image_size} is too small to draw a face; use 16 or more.")
        check_difficulty(self.difficulty)
        parse_fractions(self.fractions)
        valid = available_manipulations()
        for name in self.families():
            if name not in valid:
                raise DataError(f"Unknown manipulation {name!r}. Valid names: {', '.join(valid)}.")
        if self.holdout_manipulation is not None:
            if self.holdout_manipulation not in self.families():
                raise DataError(
                    f"holdout_manipulation {self.holdout_manipulation!r} is not a family of this benchmark. "
                    f"Valid names: {', '.join(self.families())}."
                )
            if len(self.families()) < 2:
                raise DataError("A held-out family needs at least one other family to train on.")
        return self


@dataclass
class Sample:
    id: str
    image: Image.Image  # RGB, image_size x image_size
    is_fake: int
    manipulation: str
    split: str
    attributes: dict[str, float] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return CLASS_NAMES[self.is_fake]


@dataclass(frozen=True)
class PlannedSample:
    index: int
    is_fake: int
    manipulation: str
    split: str


def plan(cfg: SyntheticConfig) -> list[PlannedSample]:
    """Label, split and family of every index (cheap; no image is drawn)."""
    cfg.validate()
    rng = np.random.default_rng([cfg.seed, _PLAN])
    is_fake = np.zeros(cfg.n, dtype=int)
    is_fake[rng.permutation(cfg.n)[: cfg.n // 2]] = 1
    split = np.empty(cfg.n, dtype=object)
    fractions = dict(zip(SPLITS, cfg.fractions, strict=True))
    for label in (0, 1):  # stratified: the fractions of the reals and of the fakes
        idx = rng.permutation(np.flatnonzero(is_fake == label))
        n_train, n_val, _ = split_sizes(len(idx), fractions)
        split[idx[:n_train]], split[idx[n_train : n_train + n_val]], split[idx[n_train + n_val :]] = SPLITS
    families = cfg.families()
    manipulation = np.full(cfg.n, REAL_MANIPULATION, dtype=object)
    for name in SPLITS:
        allowed = families
        if cfg.holdout_manipulation is not None:
            held = cfg.holdout_manipulation
            allowed = (held,) if name == "test" else tuple(f for f in families if f != held)
        fakes = rng.permutation(np.flatnonzero((is_fake == 1) & (split == name)))
        for k, i in enumerate(fakes):  # round robin: families balanced within the split
            manipulation[i] = allowed[k % len(allowed)]
    return [PlannedSample(i, int(is_fake[i]), str(manipulation[i]), str(split[i])) for i in range(cfg.n)]


def render_sample(cfg: SyntheticConfig, planned: PlannedSample) -> Sample:
    """Draw one planned sample."""
    i = planned.index
    params = sample_face_params(np.random.default_rng([cfg.seed, i, _FACE]))
    clean, landmarks = render_face(params, cfg.image_size)
    img = add_sensor_noise(clean, params.noise_sigma, np.random.default_rng([cfg.seed, i, _CAMERA]))
    if planned.is_fake:
        ctx = ManipulationContext(landmarks, params.noise_sigma, params)
        forge_rng = np.random.default_rng([cfg.seed, i, _FORGE])
        img = apply_manipulation(planned.manipulation, img, ctx, forge_rng, cfg.difficulty)
    return Sample(
        id=f"synth{cfg.seed}_{i:06d}",
        image=jpeg_round_trip(img, params.jpeg_quality),
        is_fake=planned.is_fake,
        manipulation=planned.manipulation,
        split=planned.split,
        attributes=attributes(params),
    )


def iter_samples(cfg: SyntheticConfig, splits: Sequence[str] = SPLITS) -> Iterator[Sample]:
    """Yield the samples of ``splits`` in index order, drawing each image on demand."""
    for planned in plan(cfg):
        if planned.split in splits:
            yield render_sample(cfg, planned)


def generate(cfg: SyntheticConfig, splits: Sequence[str] = SPLITS) -> list[Sample]:
    """All samples of ``splits`` (default: all three) as a list."""
    return list(iter_samples(cfg, splits))


def write_benchmark(cfg: SyntheticConfig, out: str | Path) -> Path:
    """Write the benchmark as an image folder with metadata.csv; returns the metadata path.

    Re-running with the same config rewrites byte-identical files (PNG and CSV only, no
    timestamps). Refuses to mix into a folder written with another config.
    """
    out = Path(out)
    info = {"config": asdict(cfg) | {"manipulations": list(cfg.families())}, "label_mapping": label_mapping()}
    info_path = out / "benchmark.json"
    if info_path.exists() and json.loads(info_path.read_text())["config"] != info["config"]:
        raise FileExistsError(
            f"{out} holds a benchmark written with another config ({info_path}); use a new --out."
        )
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for sample in iter_samples(cfg):
        file_name = f"images/{sample.id}.png"
        sample.image.save(out / file_name, format="PNG")
        rows.append(
            {
                "file_name": file_name,
                "label": sample.label,
                "manipulation": sample.manipulation,
                "split": sample.split,
                "id": sample.id,
            }
            | sample.attributes
        )
    meta = out / "metadata.csv"
    with meta.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    info["counts"] = {s: sum(r["split"] == s for r in rows) for s in SPLITS}
    info_path.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    logger.info("wrote %d images to %s (%s)", len(rows), out, info["counts"])
    return meta
