"""DeepfakeBench's dataset JSON, round trip: a frames tree in its layout (with the metadata.csv that
`llava-df data extract` writes), JSONs written the way its preprocessing/rearrange.py writes them (traps
included), read back by --data_path/--rgb_root and by `llava-df evaluate --test`. No face or video library needed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from llava_df.apps.evaluate_flags import collect_tests, parse_tests
from llava_df.apps.test_sets import load_test_set
from llava_df.data.deepfakebench import frame_pick, is_deepfakebench_json, load_deepfakebench_records
from llava_df.data.extract import metadata_rows, write_metadata
from llava_df.data.load import load_splits
from llava_df.data.video_layouts import Video
from llava_df.errors import DataError, UsageError
from llava_df.spec.args import DataArguments

FRAMES = (0, 200, 1000)  # 1000.png sorts before 200.png as text; DeepfakeBench sorts by number
PAIRS = {"train": [["000", "001"]], "val": [["002", "003"]], "test": [["004", "005"]]}


def _png(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)


def _video(out: Path, sub: str, name: str, seed: int) -> list[str]:
    """Frames of one video under out/sub/frames/name/, as DeepfakeBench's preprocess names them."""
    files = []
    for k, index in enumerate(FRAMES):
        rel = f"{sub}/frames/{name}/{index:03d}.png"
        _png(out / rel, seed * 10 + k)
        files.append(rel)
    return files


@pytest.fixture(scope="module")
def rgb(tmp_path_factory) -> Path:
    """rgb/ with FaceForensics++ (metadata.csv as extract writes it), Celeb-DF-v2, DFDC and DeepFakeDetection."""
    rgb = tmp_path_factory.mktemp("dfb") / "rgb"
    ffpp, videos = rgb / "FaceForensics++", []
    for split, pairs in PAIRS.items():
        for a, b in pairs:
            for name in (a, b):
                videos.append(
                    Video(
                        Path(f"{name}.mp4"),
                        "ffpp",
                        "youtube",
                        name,
                        0,
                        split,
                        "original_sequences/youtube/c23",
                    )
                )
            for name in (f"{a}_{b}", f"{b}_{a}"):
                videos.append(
                    Video(
                        Path(f"{name}.mp4"),
                        "ffpp",
                        "Deepfakes",
                        name,
                        1,
                        split,
                        "manipulated_sequences/Deepfakes/c23",
                    )
                )
    for i, v in enumerate(videos):
        _video(ffpp, v.sub, v.name, i)
    results = {v.group: {"saved": list(FRAMES)} for v in videos}
    write_metadata(ffpp, metadata_rows(ffpp, videos, results))
    for i, (sub, name) in enumerate([("Celeb-real", "id0_0000"), ("Celeb-real", "id1_0000"), ("Celeb-synthesis", "id0_id1_0000"),
                                     ("Celeb-synthesis", "id1_id0_0000")]):  # fmt: skip
        _video(rgb / "Celeb-DF-v2", sub, name, 100 + i)
    for i, (sub, name) in enumerate(
        [("dfdc_train_part_0", "aaaa"), ("dfdc_train_part_0", "bbbb"), ("test", "cccc"), ("test", "dddd")]
    ):
        _video(rgb / "DFDC", sub, name, 200 + i)
    for i, (sub, name) in enumerate(
        [
            ("original_sequences/actors/c23", "01__talking"),
            ("manipulated_sequences/DeepFakeDetection/c23", "01_02__talking"),
        ]
    ):
        _video(rgb / "FaceForensics++", sub, name, 300 + i)
    return rgb


def _win(*parts: str) -> str:
    return "\\".join(parts)  # rearrange.py run on Windows: backslashes, relative to rgb_dir


def ffpp_json(rgb: Path, path: Path) -> Path:
    """FaceForensics++.json as rearrange.py writes it: {split: {c23: {video: {label, frames}}}}."""
    split_of = {n: s for s, pairs in PAIRS.items() for a, b in pairs for n in (a, b, f"{a}_{b}", f"{b}_{a}")}
    out = {
        "FaceForensics++": {
            "FF-real": {s: {"c23": {}} for s in PAIRS},
            "FF-DF": {s: {"c23": {}} for s in PAIRS},
        }
    }
    for label, sub in (
        ("FF-real", "original_sequences/youtube/c23"),
        ("FF-DF", "manipulated_sequences/Deepfakes/c23"),
    ):
        for folder in sorted((rgb / "FaceForensics++" / sub / "frames").iterdir()):
            frames = [
                _win("FaceForensics++", *sub.split("/"), "frames", folder.name, f.name)
                for f in sorted(folder.iterdir())
            ]
            out["FaceForensics++"][label][split_of[folder.name]]["c23"][folder.name] = {
                "label": label,
                "frames": frames,
            }
    path.write_text(json.dumps(out))
    return path


def celebdf_json(rgb: Path, path: Path) -> Path:
    """Celeb-DF-v2.json as rearrange.py writes it: EVERY video in train, the test list in test and val; paths as
    absolute paths of the machine that made it."""
    labels = {"Celeb-real": "CelebDFv2_real", "Celeb-synthesis": "CelebDFv2_fake"}
    out = {"Celeb-DF-v2": {label: {"train": {}, "val": {}, "test": {}} for label in labels.values()}}
    test_list = {"id1_0000", "id1_id0_0000"}
    for folder, label in labels.items():
        for video in sorted((rgb / "Celeb-DF-v2" / folder / "frames").iterdir()):
            frames = [
                f"/mnt/old/datasets/rgb/Celeb-DF-v2/{folder}/frames/{video.name}/{f.name}"
                for f in sorted(video.iterdir())
            ]
            entry = {"label": label, "frames": frames}
            out["Celeb-DF-v2"][label]["train"][video.name] = entry
            if video.name in test_list:
                out["Celeb-DF-v2"][label]["test"][video.name] = entry
                out["Celeb-DF-v2"][label]["val"][video.name] = entry
    path.write_text(json.dumps(out))
    return path


def dfdc_json(rgb: Path, path: Path) -> Path:
    """DFDC.json as rearrange.py writes it: the test loop overwrites val with one video's {label, frames} (the
    malformed entry), then training videos are added to train AND into that val dict."""
    out = {"DFDC": {label: {"train": {}, "test": {}, "val": {}} for label in ("DFDC_Real", "DFDC_Fake")}}
    for name, label in (("aaaa", "DFDC_Real"), ("bbbb", "DFDC_Fake")):
        frames = [f"DFDC/dfdc_train_part_0/frames/{name}/{i:03d}.png" for i in FRAMES]
        out["DFDC"][label]["train"][name] = out["DFDC"][label]["val"][name] = {
            "label": label,
            "frames": frames,
        }
    for name, label in (("cccc", "DFDC_Real"), ("dddd", "DFDC_Fake")):
        frames = [f"DFDC/test/frames/{name}/{i:03d}.png" for i in FRAMES]
        out["DFDC"][label]["test"][name] = {"label": label, "frames": frames}
        out["DFDC"][label]["val"] = {
            "label": label,
            "frames": frames,
        }  # rearrange.py's line, as written there
    path.write_text(json.dumps(out))
    return path


def test_ffpp_json_reads_back_the_tree_extract_wrote(rgb, tmp_path):
    path = ffpp_json(rgb, tmp_path / "FaceForensics++.json")
    assert is_deepfakebench_json(path) and not is_deepfakebench_json(tmp_path)
    ours = load_splits(DataArguments(data_dir=str(rgb / "FaceForensics++")))
    theirs = load_splits(DataArguments(data_path=str(path), rgb_root=str(rgb), frame_num=2))
    for split in ("train", "val", "test"):
        videos = {r.group.split(":")[-1]: r.is_fake for r in ours[split].records}
        read = theirs[split].records
        assert {
            r.group.split(":")[-1]: r.is_fake for r in read
        } == videos  # same videos, same labels, same split
        assert {r.group.split(":")[1] for r in read} == {"FF-real", "FF-DF"}  # its label names
        # frame_num 2 of 3 frames: the first two BY NUMBER (000, 200), not by text (000, 1000)
        assert sorted(Path(r.path).name for r in read) == sorted(["000.png", "200.png"] * len(videos))
        assert all(Path(r.path).is_file() and Path(r.path).is_relative_to(rgb) for r in read)
    assert {r.manipulation for r in theirs["train"].records} == {"none", "FF-DF"}
    # All frames: the same files as the folder loader read from metadata.csv
    all_frames = load_deepfakebench_records(path, rgb)[0]
    assert sorted(r.path for r in all_frames) == sorted(r.path for s in ours.values() for r in s.records)


def test_frame_pick_is_deepfakebenchs_first_n():
    frames = ["x\\v\\1000.png", "x\\v\\000.png", "x\\v\\200.png", "x\\v\\31.png"]
    assert frame_pick(frames, 2) == ["x\\v\\000.png", "x\\v\\31.png"]  # the first 2 in number order
    assert frame_pick(frames, 32) == ["x\\v\\000.png", "x\\v\\31.png", "x\\v\\200.png", "x\\v\\1000.png"]


def test_celebdf_all_in_train_is_refused_for_training_and_its_test_list_is_a_test_set(rgb, tmp_path):
    path = celebdf_json(rgb, tmp_path / "Celeb-DF-v2.json")
    with pytest.raises(
        DataError,
        match=r"2 videos are in more than one split \(e\.g\. Celeb-DF-v2:CelebDFv2_real:id1_0000 \(train\+val\+test\).*--test NAME=",
    ):
        load_splits(DataArguments(data_path=str(path), rgb_root=str(rgb)))
    test = load_test_set("celebdf", str(path), DataArguments(), rgb_root=str(rgb))
    assert sorted({r.group for r in test.records}) == [
        "Celeb-DF-v2:CelebDFv2_fake:id1_id0_0000",
        "Celeb-DF-v2:CelebDFv2_real:id1_0000",
    ]
    assert len(test) == 6 and all(
        Path(r.path).is_relative_to(rgb) for r in test.records
    )  # /mnt/old/... found


def test_dfdc_malformed_val_is_skipped_and_named(rgb, tmp_path):
    path = dfdc_json(rgb, tmp_path / "DFDC.json")
    records, _ = load_deepfakebench_records(path, rgb, splits=("test",))
    assert sorted({r.group for r in records}) == ["DFDC:DFDC_Fake:dddd", "DFDC:DFDC_Real:cccc"]
    records, summary = load_deepfakebench_records(path, rgb)
    assert len(records) == 12 and {r.split for r in records} == {"train", "test"}  # val: nothing usable
    assert [w for w, why in summary.skipped if "malformed" in why] == [
        f"{path} DFDC/DFDC_Real/val",
        f"{path} DFDC/DFDC_Fake/val",
    ]


def test_dfd_reals_in_every_split_and_unknown_labels_are_refused(rgb, tmp_path):
    real = ["FaceForensics++/original_sequences/actors/c23/frames/01__talking/000.png"]
    fake = ["FaceForensics++/manipulated_sequences/DeepFakeDetection/c23/frames/01_02__talking/000.png"]
    entry = {"label": "DFD_real", "frames": real}
    dfd = {"DeepFakeDetection": {"DFD_real": {s: {"c23": {"01__talking": entry}} for s in ("train", "val", "test")},
                                 "DFD_fake": {"train": {"c23": {}}, "val": {"c23": {}}, "test": {"c23": {"01_02__talking": {"label": "DFD_fake", "frames": fake}}}}}}  # fmt: skip
    path = tmp_path / "DeepFakeDetection.json"
    path.write_text(json.dumps(dfd))
    with pytest.raises(
        DataError,
        match=r"1 videos are in more than one split .*DeepFakeDetection:DFD_real:01__talking \(train\+val\+test\)",
    ):
        load_deepfakebench_records(path, rgb)
    assert len(load_deepfakebench_records(path, rgb, splits=("test",))[0]) == 2
    with pytest.raises(DataError, match=r"no compression level 'c40' \(has \['c23'\]\)"):
        load_deepfakebench_records(path, rgb, splits=("test",), compression="c40")
    dfd["DeepFakeDetection"]["DFD_fake"]["test"]["c23"]["01_02__talking"]["label"] = "DFD_Fake"
    path.write_text(json.dumps(dfd))
    with pytest.raises(DataError, match="label 'DFD_Fake' is not in DeepfakeBench's label_dict"):
        load_deepfakebench_records(path, rgb, splits=("test",))


def test_frames_missing_under_rgb_root_are_named_and_none_found_is_an_error(rgb, tmp_path):
    path = ffpp_json(rgb, tmp_path / "FaceForensics++.json")
    with pytest.raises(DataError, match=r"no frame of splits \['test'\] found under --rgb_root"):
        load_deepfakebench_records(path, tmp_path, splits=("test",))
    data = json.loads(path.read_text())
    data["FaceForensics++"]["FF-real"]["test"]["c23"]["004"]["frames"].append(
        _win("FaceForensics++", "gone", "999.png")
    )
    path.write_text(json.dumps(data))
    records, summary = load_deepfakebench_records(path, rgb, splits=("test",))
    assert len(records) == 12 and any(
        "gone\\999.png" in w and "not found" in why for w, why in summary.skipped
    )


def test_test_flags_are_collected_however_written_and_checked(tmp_path):
    values, rest = collect_tests(
        ["--run_dir", "r", "--test", "a=x", "b=y", "--test=c=z", "--weights", "final"]
    )
    assert values == ["a=x", "b=y", "c=z"] and rest == ["--run_dir", "r", "--weights", "final"]
    assert parse_tests([f"celebdf={tmp_path}"]) == [("celebdf", str(tmp_path))]
    for bad, message in [("celebdf", "expected NAME=SOURCE"), (f"test={tmp_path}", "is taken"),
                         ("x=/no/such", "does not exist")]:  # fmt: skip
        with pytest.raises(UsageError, match=message):
            parse_tests([bad])
    with pytest.raises(UsageError, match="is taken"):
        parse_tests([f"a={tmp_path}", f"a={tmp_path}"])
