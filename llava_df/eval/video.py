"""Video-level evaluation: a video's frames scored as one, and confidence intervals that resample videos.

How to call::

    video_metrics(p_fake, is_fake, groups, agg="mean", threshold=0.42)
        # {"video_auc", "video_ap", "video_eer", "video_accuracy", ..., "video_n", "video_frames_mean"}
    bootstrap_ci(p_fake, is_fake, groups, agg="mean", n_boot=1000, seed=0)
        # {"auc": [lo, hi], "video_auc": [lo, hi]}: 95% intervals from videos drawn with replacement
    deepfakebench_video_auc(paths, p_fake, is_fake)
        # (AUC, videos): the figure DeepfakeBench's tables report, computed its way

``groups`` name each frame's video (``<dataset>:<method>:<video>``, from metadata.csv or a
DeepfakeBench JSON). A video's score is the mean of its frames' P(Fake) (DeepfakeBench's rule;
``max`` and ``median`` on request); its accuracy uses the same threshold as the frames. Frames of
one video are not independent, so an interval that resampled frames would be too narrow: the
bootstrap draws whole videos (within each class, so every draw has both), and the frame-level AUC
of a draw is computed on the frames of the videos drawn.

DeepfakeBench's own video AUC (``training/metrics/utils.py``, ``get_video_metrics``) groups
frames by the name of the folder they sit in, and nothing else: FF++'s four methods each have a
``953_974/`` folder, which it counts as one video. A video's label is the integer part of its
frames' mean label. ``deepfakebench_video_auc`` reproduces that, so a number can be set beside
its tables; ours groups by the full video identity.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import auc as area_under
from sklearn.metrics import roc_auc_score, roc_curve

from llava_df.eval.metrics import binary_metrics

AGGREGATES = {"mean": np.mean, "max": np.max, "median": np.median}
VIDEO_KEYS = ("auc", "ap", "eer", "accuracy", "balanced_accuracy", "real_accuracy", "fake_accuracy", "n")


@dataclass(frozen=True)
class VideoScores:
    ids: list[str]  # one per video, in order of first appearance
    score: np.ndarray  # [V] the aggregated P(Fake)
    is_fake: np.ndarray  # [V]
    frames: np.ndarray  # [V] frames per video


def groups_of(dataset) -> list[str] | None:
    """Each record's video (``group``) when every record of ``dataset`` has one and no group holds both classes,
    else None (no video metrics). A group is not always a video: SBI's folders group a real photo with its fake,
    so that a split never separates them."""
    records = getattr(dataset, "records", None)
    if not records or any(r.group is None for r in records):
        return None
    labels: dict[str, int] = {}
    for r in records:
        if labels.setdefault(str(r.group), r.is_fake) != r.is_fake:
            return None
    return [str(r.group) for r in records]


def _members(groups: Sequence[str]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        out.setdefault(g, []).append(i)
    return out


def video_scores(p_fake, is_fake, groups: Sequence[str], agg: str = "mean") -> VideoScores:
    """Frames -> videos: ``agg`` of each video's P(Fake); a video whose frames disagree on the label is an error."""
    if agg not in AGGREGATES:
        raise ValueError(f"video aggregate {agg!r}: expected one of {', '.join(AGGREGATES)}.")
    p_fake, is_fake = np.asarray(p_fake, dtype=np.float64), np.asarray(is_fake).astype(int)
    if len(groups) != len(p_fake):
        raise ValueError(f"{len(groups)} video names for {len(p_fake)} frames; pass one per frame.")
    members = _members(groups)
    labels = []
    for g, idx in members.items():
        kinds = set(is_fake[idx].tolist())
        if len(kinds) > 1:
            raise ValueError(
                f"video {g!r} has real and fake frames ({len(idx)} frames); a video has one label. Give its "
                "frames one label, or different groups."
            )
        labels.append(kinds.pop())
    fn = AGGREGATES[agg]
    return VideoScores(
        ids=list(members),
        score=np.array([float(fn(p_fake[idx])) for idx in members.values()]),
        is_fake=np.array(labels, dtype=int),
        frames=np.array([len(idx) for idx in members.values()]),
    )


def video_metrics(
    p_fake, is_fake, groups: Sequence[str], *, agg: str = "mean", threshold: float = 0.5
) -> dict:
    """``video_<metric>`` of binary_metrics on the video scores (finite frames only): numbers only, as every metric."""
    p_fake, is_fake = np.asarray(p_fake, dtype=np.float64), np.asarray(is_fake)
    keep = np.isfinite(p_fake)  # non-finite frames were refused or dropped by the frame metrics already
    groups = [g for g, ok in zip(groups, keep, strict=True) if ok]
    v = video_scores(p_fake[keep], is_fake[keep], groups, agg)
    metrics = binary_metrics(v.score, v.is_fake, threshold=threshold) if len(v.ids) else {}
    out = {f"video_{k}": metrics.get(k, math.nan) for k in VIDEO_KEYS}
    out["video_n"] = len(v.ids)
    return out | {"video_frames_mean": float(v.frames.mean()) if len(v.ids) else math.nan}


def bootstrap_ci(
    p_fake,
    is_fake,
    groups: Sequence[str],
    *,
    agg: str = "mean",
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, list[float]]:
    """Percentile intervals of the frame AUC ("auc") and the video AUC ("video_auc"), videos drawn with replacement
    within each class (``n_boot`` draws). NaN bounds when a class has no video."""
    p_fake, is_fake = np.asarray(p_fake, dtype=np.float64), np.asarray(is_fake).astype(int)
    keep = np.isfinite(p_fake)
    p_fake, is_fake = p_fake[keep], is_fake[keep]
    groups = [g for g, ok in zip(groups, keep, strict=True) if ok]
    v = video_scores(p_fake, is_fake, groups, agg)
    nan = {"auc": [math.nan, math.nan], "video_auc": [math.nan, math.nan]}
    if set(v.is_fake.tolist()) != {0, 1} or n_boot < 1:
        return nan
    members = list(_members(groups).values())  # frame indices per video, in v's order
    by_class = [np.flatnonzero(v.is_fake == c) for c in (0, 1)]
    rng = np.random.default_rng(seed)
    frame_aucs, video_aucs = [], []
    for _ in range(n_boot):
        drawn = np.concatenate([rng.choice(idx, size=len(idx), replace=True) for idx in by_class])  # videos
        video_aucs.append(roc_auc_score(v.is_fake[drawn], v.score[drawn]))
        frames = np.concatenate([members[j] for j in drawn])
        frame_aucs.append(roc_auc_score(is_fake[frames], p_fake[frames]))
    tail = (1 - level) / 2 * 100
    return {
        "auc": [float(x) for x in np.percentile(frame_aucs, [tail, 100 - tail])],
        "video_auc": [float(x) for x in np.percentile(video_aucs, [tail, 100 - tail])],
    }


def deepfakebench_video_auc(paths: Sequence[str], p_fake, is_fake) -> tuple[float, int]:
    """(video AUC, videos) as DeepfakeBench computes it: frames grouped by their folder's name only, a video's
    label the integer part of its frames' mean label, its score their mean, AUC from roc_curve + auc."""
    p_fake, is_fake = np.asarray(p_fake, dtype=np.float64), np.asarray(is_fake).astype(int)
    folders = [(p.split("\\") if "\\" in p else p.split("/"))[-2] for p in map(str, paths)]
    members = _members(folders)
    scores = np.array([p_fake[idx].mean() for idx in members.values()])
    labels = np.array([int(is_fake[idx].sum() / len(idx)) for idx in members.values()])
    if set(labels.tolist()) != {0, 1} or not np.isfinite(scores).all():
        return math.nan, len(members)
    fpr, tpr, _ = roc_curve(labels, scores)
    return float(area_under(fpr, tpr)), len(members)
