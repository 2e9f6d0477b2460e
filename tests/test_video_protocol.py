"""The cross-dataset protocol end to end on real-face videos: FF++-, Celeb-DF- and DFDC-shaped trees of mp4s
(tests/video_trees.py) -> llava-df data extract -> train (tiny, 2 steps) on FF++'s official split -> the
video-level table of llava-df evaluate --test, its video AUC checked by hand; predict's face check on the run."""

from __future__ import annotations

import json
import shutil
from importlib.util import find_spec

import numpy as np
import pytest

from llava_df.__main__ import run as llava_df
from llava_df.data.face_align import faces_available

pytest.importorskip("skimage", reason="scikit-image (a dev dependency) ships the astronaut photo")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (faces_available() and find_spec("av")),
        reason="needs the [faces] extra: pip install -e '.[faces]' (av, dlib-bin, face_recognition_models)",
    ),
]
PAIRS = {"train": [["000", "001"], ["002", "003"]], "val": [["004", "005"]], "test": [["006", "007"]]}


@pytest.fixture(scope="module")
def protocol(tmp_path_factory):
    """Three downloads, extracted (2 frames a video; FF++ with 2 worker processes), and a tiny run on FF++."""
    from video_trees import celebdf_tree, dfdc_tree, ffpp_tree

    root = tmp_path_factory.mktemp("protocol")
    ffpp_tree(root / "FaceForensics++", PAIRS)
    celebdf_tree(root / "Celeb-DF-v2")
    dfdc_tree(root / "dfdc")
    rgb = root / "rgb"
    for dataset, folder, extra in (("ffpp", "FaceForensics++", ["--methods", "Deepfakes,FaceSwap", "--workers", "2"]),
                                   ("celebdf", "Celeb-DF-v2", []), ("dfdc", "dfdc", [])):  # fmt: skip
        llava_df(
            [
                "data",
                "extract",
                "--dataset",
                dataset,
                "--root",
                str(root / folder),
                "--out",
                str(rgb),
                "--num_frames",
                "2",
                *extra,
            ]
        )
    out = root / "run"
    llava_df(["train", "--model_name_or_path", "tiny", "--tune_mm_mlp_adapter", "True", "--data_dir", str(rgb / "FaceForensics++"),
              "--max_steps", "2", "--per_device_train_batch_size", "4", "--eval_strategy", "steps", "--eval_steps", "2",
              "--save_strategy", "steps", "--save_steps", "2", "--report_to", "none", "--output_dir", str(out)])  # fmt: skip
    return rgb, out


def _pairs_auc(real: list[float], fake: list[float]) -> float:
    """AUC by counting: the share of (fake, real) pairs in which the fake scores higher, ties half."""
    wins = sum((f > r) + 0.5 * (f == r) for f in fake for r in real)
    return wins / (len(fake) * len(real))


def test_extraction_follows_the_official_splits_and_names_every_video(protocol):
    rgb, _ = protocol
    rows = (rgb / "FaceForensics++" / "metadata.csv").read_text().splitlines()
    assert rows[0] == "file_name,label,manipulation,split,group,frame" and len(rows) == 1 + 24 * 2
    assert (
        "manipulated_sequences/Deepfakes/c23/frames/006_007/003.png,fake,Deepfakes,test,ffpp:Deepfakes:006_007,3"
        in rows
    )
    celebdf = (rgb / "Celeb-DF-v2" / "metadata.csv").read_text()
    assert (
        celebdf.count(",test,") == 8
        and "Celeb-real/frames/id1_0000/000.png,real,none,test,celebdf:Celeb-real:id1_0000,0" in celebdf
    )
    dfdc = (rgb / "DFDC" / "metadata.csv").read_text()
    assert (
        dfdc.count(",train,") == 8 and dfdc.count(",test,") == 8
    )  # dfdc_train_part_0/ and test/ by their metadata
    for folder in ("FaceForensics++", "Celeb-DF-v2", "DFDC"):
        report = json.loads((rgb / folder / "extract_report.json").read_text())
        assert report["videos_failed"] == {} and report["videos_without_face"] == []


def test_the_runs_video_auc_is_the_mean_of_its_frames_counted_by_hand(protocol):
    _, out = protocol
    results, scores = (
        json.loads((out / "results.json").read_text()),
        json.loads((out / "scores.json").read_text())["test"],
    )
    videos: dict[str, list[float]] = {}
    labels = {}
    for g, p, y in zip(scores["group"], scores["p_fake"], scores["is_fake"], strict=True):
        videos.setdefault(g, []).append(p)
        labels[g] = y
    assert len(videos) == 6 and all(len(v) == 2 for v in videos.values())  # 2 reals, 2 Deepfakes, 2 FaceSwap
    means = {g: float(np.mean(v)) for g, v in videos.items()}
    by_hand = _pairs_auc(
        [m for g, m in means.items() if not labels[g]], [m for g, m in means.items() if labels[g]]
    )
    assert results["test"]["video_auc"] == pytest.approx(by_hand) and results["test"]["video_n"] == 6


def test_the_cross_dataset_table(protocol, tmp_path, capsys):
    rgb, out = protocol
    rows = llava_df(["evaluate", "--run_dir", str(out), "--test", f"celebdf={rgb / 'Celeb-DF-v2'}", "--test", f"dfdc={rgb / 'DFDC'}",
                     "--bootstrap", "50", "--output", str(tmp_path / "table.json")])  # fmt: skip
    assert [r["test_set"] for r in rows] == ["test", "celebdf", "dfdc"]
    ffpp, celebdf, dfdc = rows
    assert (ffpp["video_n"], ffpp["videos_real"], ffpp["videos_fake"], ffpp["frames"]) == (6, 2, 4, 12)
    # DeepfakeBench's grouping by folder name merges Deepfakes/006_007 with FaceSwap/006_007: 4 "videos".
    assert ffpp["deepfakebench_videos"] == 4
    assert (celebdf["video_n"], celebdf["frames"]) == (4, 8) and (dfdc["video_n"], dfdc["frames"]) == (4, 8)
    results = json.loads((out / "results.json").read_text())
    assert ffpp["video_auc"] == pytest.approx(results["test"]["video_auc"]) and ffpp["auc"] == pytest.approx(
        results["test"]["auc"]
    )
    for r in rows:
        lo, hi = r["video_auc_ci"]
        assert lo <= r["video_auc"] <= hi
    table = (tmp_path / "table.md").read_text()
    assert table.startswith("llava-df evaluate --run_dir") and "| celebdf | 4 (2/2) | 8 |" in table
    assert (tmp_path / "table.csv").read_text().count("\n") == 4
    # A "test set" made of the run's training frames is refused before any weight loads, naming the videos.
    leak = tmp_path / "leak"
    (leak / "real").mkdir(parents=True)
    shutil.copy(
        rgb / "FaceForensics++/original_sequences/youtube/c23/frames/000/000.png", leak / "real" / "a.png"
    )
    shutil.copytree(rgb / "Celeb-DF-v2" / "Celeb-synthesis" / "frames" / "id0_id1_0000", leak / "fake")
    with pytest.raises(SystemExit):
        llava_df(["evaluate", "--run_dir", str(out), "--test", f"leak={leak}"])
    assert "--test leak: 1 images of 1 videos" in capsys.readouterr().err


def test_leave_one_method_out_keeps_videos_whole(protocol):
    from llava_df.data.load import load_splits
    from llava_df.spec.args import DataArguments

    rgb, _ = protocol
    splits = load_splits(
        DataArguments(data_dir=str(rgb / "FaceForensics++"), holdout_manipulation="FaceSwap")
    )
    assert {r.manipulation for r in splits["train"].records} == {"none", "Deepfakes"}
    held = splits["heldout"].records
    assert {r.manipulation for r in held} == {"none", "FaceSwap"} and len(
        {r.group for r in held if r.is_fake}
    ) == 8
    assert all(r.group is not None for r in held)  # video metrics apply to the held-out row too


def test_predict_crops_the_face_as_the_training_data_and_flags_a_cat(protocol, tmp_path, capsys):
    from PIL import Image
    from video_trees import photo

    _, out = protocol
    Image.fromarray(np.ascontiguousarray(photo("astronaut")[:300, 100:400])).save(tmp_path / "face.png")
    Image.fromarray(photo("chelsea")).save(tmp_path / "cat.png")
    rows = llava_df(["predict", "--run_dir", str(out), str(tmp_path), "--output", str(tmp_path / "p.csv")])
    by_name = {r["path"].rsplit("/", 1)[-1]: r for r in rows}
    assert (
        by_name["face.png"]["faces"],
        by_name["face.png"]["scored"],
        by_name["face.png"]["face_warning"],
    ) == (1, "aligned face", None)
    assert by_name["cat.png"]["faces"] == 0 and by_name["cat.png"]["face_warning"].startswith("no face found")
    err = capsys.readouterr().err
    assert (
        "aligned to the ArcFace template, 256 px, scale 1.3" in err
        and f"warning {tmp_path / 'cat.png'}: no face found" in err
    )
    assert "faces,scored,face_warning" in (tmp_path / "p.csv").read_text().splitlines()[0]
