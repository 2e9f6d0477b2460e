"""Video-level metrics on scores small enough to check by hand, intervals that resample videos, and
DeepfakeBench's own video AUC with its folder-name grouping."""

from __future__ import annotations

import math

import numpy as np
import pytest

from llava_df.data.dataset import FaceDataset, Record
from llava_df.eval.scoring import split_result
from llava_df.eval.video import bootstrap_ci, deepfakebench_video_auc, groups_of, video_metrics, video_scores

# Two frames per video. A, B real; C, D fake.
P = [0.1, 0.3, 0.6, 0.2, 0.5, 0.7, 0.1, 0.5]
Y = [0, 0, 0, 0, 1, 1, 1, 1]
G = ["A", "A", "B", "B", "C", "C", "D", "D"]


def test_video_auc_by_hand():
    # Means: A 0.2, B 0.4, C 0.6, D 0.3. Fake above real in (C,A) (C,B) (D,A), not (D,B): 3 of 4 pairs.
    v = video_scores(P, Y, G)
    assert v.ids == ["A", "B", "C", "D"] and v.score.tolist() == pytest.approx([0.2, 0.4, 0.6, 0.3])
    m = video_metrics(P, Y, G, threshold=0.5)
    assert m["video_auc"] == 0.75 and m["video_n"] == 4 and m["video_frames_mean"] == 2
    assert m["video_accuracy"] == 0.75  # C is the only video >= 0.5: A, B, C right, D wrong
    # Frames: 0.5 beats 3 reals, 0.7 all 4, 0.1 ties one (half), 0.5 beats 3: 10.5 of 16 pairs.
    assert video_metrics(P, Y, [str(i) for i in range(8)])["video_auc"] == 10.5 / 16
    # max: A 0.3, B 0.6, C 0.7, D 0.5 -> again 3 of 4; median of two frames is their mean
    assert video_metrics(P, Y, G, agg="max")["video_auc"] == 0.75
    assert video_scores(P, Y, G, agg="median").score.tolist() == pytest.approx([0.2, 0.4, 0.6, 0.3])


def test_a_video_with_two_labels_and_an_unknown_aggregate_are_errors():
    with pytest.raises(ValueError, match="video 'A' has real and fake frames"):
        video_scores(P, [0, 1, 0, 0, 1, 1, 1, 1], G)
    with pytest.raises(ValueError, match="expected one of mean, max, median"):
        video_scores(P, Y, G, agg="mode")


def test_the_bootstrap_draws_videos_not_frames():
    # 2 real and 2 fake videos of 50 frames each: a draw is 2 videos per class, so the video AUC of a draw
    # can only be 0, 0.25, 0.5, 0.75 or 1 (with repeats), and the frame AUC moves with whole videos.
    rng = np.random.default_rng(0)
    means = {"A": 0.2, "B": 0.45, "C": 0.6, "D": 0.4}
    groups = [g for g in means for _ in range(50)]
    p = np.array([means[g] + rng.normal(0, 0.01) for g in groups])
    y = np.array([int(g in "CD") for g in groups])
    ci = bootstrap_ci(p, y, groups, n_boot=300, seed=1)
    assert set(np.round(ci["video_auc"], 6)) <= {0.0, 0.25, 0.5, 0.75, 1.0}
    assert ci["video_auc"][0] < 0.75 < ci["video_auc"][1] or ci["video_auc"][1] == 1.0
    # Frame draws would give a near-zero width here (100 frames per class); video draws do not.
    assert ci["auc"][1] - ci["auc"][0] > 0.2
    assert bootstrap_ci(p, y, groups, n_boot=300, seed=1) == ci  # seeded
    assert all(math.isnan(v) for v in bootstrap_ci(p[:100], y[:100], groups[:100])["auc"])  # one class


def test_deepfakebench_groups_by_folder_name_only():
    paths = [
        "rgb/FaceForensics++/original_sequences/youtube/c23/frames/953/000.png",
        "rgb/FaceForensics++/original_sequences/youtube/c23/frames/953/031.png",
        "rgb\\FaceForensics++\\manipulated_sequences\\Deepfakes\\c23\\frames\\953_974\\000.png",
        "rgb\\FaceForensics++\\manipulated_sequences\\Deepfakes\\c23\\frames\\953_974\\031.png",
        "rgb/FaceForensics++/manipulated_sequences/Face2Face/c23/frames/953_974/000.png",
        "rgb/FaceForensics++/manipulated_sequences/Face2Face/c23/frames/953_974/031.png",
        "rgb/FaceForensics++/original_sequences/youtube/c23/frames/974/000.png",
    ]
    p = [0.1, 0.3, 0.9, 0.7, 0.2, 0.2, 0.6]
    y = [0, 0, 1, 1, 1, 1, 0]
    # Its videos: 953 (0.2, real), 953_974 = both methods merged (0.5, fake), 974 (0.6, real): 1 of 2 pairs.
    assert deepfakebench_video_auc(paths, p, y) == (0.5, 3)
    ours = video_metrics(
        p,
        y,
        ["ffpp:youtube:953"] * 2
        + ["ffpp:Deepfakes:953_974"] * 2
        + ["ffpp:Face2Face:953_974"] * 2
        + ["ffpp:youtube:974"],
    )
    # Ours: 4 videos; DF (0.8) beats both reals, F2F (0.2) ties 953 (0.2) and loses to 974: 2.5 of 4 pairs.
    assert ours["video_n"] == 4 and ours["video_auc"] == 0.625
    # A folder name shared by a real and a fake video: its label is int(mean label) = 0, as DeepfakeBench's.
    mixed = ["a/x/0.png", "b/x/0.png", "c/y/0.png", "d/z/0.png"]
    assert deepfakebench_video_auc(mixed, [0.9, 0.9, 0.1, 0.5], [0, 1, 0, 1]) == (0.5, 3)


def test_split_scores_get_video_metrics_and_groups_when_every_record_has_a_video():
    records = [
        Record(id=str(i), is_fake=y, manipulation="m" if y else "none", group=g)
        for i, (y, g) in enumerate(zip(Y, G, strict=True))
    ]
    preds = np.stack([P, Y], axis=1)
    metrics, scores = split_result(preds, None, FaceDataset(records), "test", threshold=0.5)
    assert metrics["test_video_auc"] == 0.75 and metrics["test_auc"] == 10.5 / 16 and scores["group"] == G
    records[
        0
    ].group = "C"  # a group with both classes is no video (SBI: a photo and its fake): no video figures
    assert groups_of(FaceDataset(records)) is None
    records[0].group = None  # one record without a video: no video figures at all, not a partial one
    assert groups_of(FaceDataset(records)) is None
    metrics, scores = split_result(preds, None, FaceDataset(records), "test")
    assert "test_video_auc" not in metrics and "group" not in scores
