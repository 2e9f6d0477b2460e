"""Real data: image folders (datasets imagefolder), LLaVA JSONL, SBI, load_splits, bad input."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from PIL import Image

from llava_df.data.__main__ import main as data_main
from llava_df.data.dataset import assign_splits
from llava_df.data.folder import load_folder_records
from llava_df.data.jsonl import load_jsonl_records
from llava_df.data.load import load_splits
from llava_df.data.sbi import heuristic_face_ellipse, sbi_fake
from llava_df.spec.args import DataArguments

RNG = np.random.default_rng(0)


def _img(path, value=None, mode="RGB", size=16):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = (
        RNG.integers(0, 255, (size, size, 3), dtype=np.uint8)
        if value is None
        else np.full((size, size, 3), value, np.uint8)
    )
    img = Image.fromarray(arr)
    if mode == "L":
        img = img.convert("L")
    elif mode == "RGBA":
        img = img.convert("RGBA")
    img.save(path)
    return path


def _class_folder(root, names=("real", "fake"), n=6, offset=0):
    for name in names:
        for i in range(n):
            # Distinct pixels per image: identical files would be deduplicated into one.
            _img(root / name / f"{i}.png", value=(200 if name in ("real", "original") else 50) + offset + i)
    return root


@pytest.mark.parametrize("names", [("real", "fake"), ("original", "manipulated")])
def test_alphabetical_class_order_does_not_flip_labels(tmp_path, names):
    # datasets gives ClassLabel(names=sorted(...)): fake=0 / manipulated=0. Fakes must still be is_fake=1.
    records, summary = load_folder_records(
        _class_folder(tmp_path, names), cache_dir=str(tmp_path.parent / f"{tmp_path.name}_cache")
    )
    assert summary.loaded == 12 and not summary.skipped
    for r in records:
        pixel = np.asarray(Image.open(r.path))[0, 0, 0]
        assert r.is_fake == (1 if pixel < 128 else 0), r.path
        assert r.manipulation == ("unknown" if r.is_fake else "none")
        assert r.split is None


def test_unknown_class_folder_is_an_error(tmp_path):
    _class_folder(tmp_path, ("reel", "fake"))
    with pytest.raises(ValueError, match=r"Unknown label 'reel'"):
        load_folder_records(tmp_path, cache_dir=str(tmp_path.parent / f"{tmp_path.name}_cache"))


def test_empty_class_folder_and_missing_folder(tmp_path):
    _class_folder(tmp_path / "d", ("real",))
    (tmp_path / "d" / "fake").mkdir()
    with pytest.raises(ValueError, match=r"Class folder .*fake.* holds no images"):
        load_folder_records(tmp_path / "d")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_folder_records(tmp_path / "nowhere")


def test_bad_images_are_converted_or_skipped_and_named(tmp_path, caplog):
    root = _class_folder(tmp_path / "d", n=3)
    _img(root / "real" / "gray.png", mode="L")
    _img(root / "fake" / "alpha.png", mode="RGBA")
    Image.fromarray(np.full((8, 8), 40000, np.uint16)).save(root / "real" / "deep16.png")
    (root / "fake" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    good = _img(tmp_path / "x.jpg", size=64)
    (root / "real" / "truncated.jpg").write_bytes(good.read_bytes()[:300])
    with caplog.at_level(logging.WARNING):
        records, summary = load_folder_records(
            root, cache_dir=str(tmp_path.parent / f"{tmp_path.name}_cache")
        )
    skipped = sorted(w.rsplit("/", 1)[-1] for w, _ in summary.skipped)
    assert skipped == ["corrupt.png", "truncated.jpg"]
    assert summary.loaded == len(records) == 9
    assert "corrupt.png" in caplog.text and "truncated.jpg" in caplog.text
    splits = load_splits(DataArguments(data_dir=str(root)), seed=0)
    items = [ds[i] for ds in splits.values() for i in range(len(ds))]
    assert len(items) == 9 and all(it["image"].mode == "RGB" for it in items)


def test_split_folders_are_used_and_missing_val_is_cut_from_train(tmp_path):
    for split in ("train", "test"):
        _class_folder(tmp_path / split, n=10 if split == "train" else 4, offset=0 if split == "train" else 20)
    splits = load_splits(DataArguments(data_dir=str(tmp_path)), seed=0)
    assert all(r.path.startswith(str(tmp_path / "test")) for r in splits["test"].records)
    assert len(splits["test"]) == 8
    assert len(splits["train"]) + len(splits["val"]) == 20 and len(splits["val"]) >= 2
    ids = [set(r.id for r in splits[s].records) for s in ("train", "val", "test")]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2])


def test_metadata_csv_labels_splits_groups_and_holdout(tmp_path):
    rows = ["file_name,label,manipulation,group"]
    for v in range(10):  # 10 videos x 3 frames; videos must not straddle splits
        for f in range(3):
            fake = v % 2
            name = f"img/v{v}_{f}.png"
            _img(tmp_path / name)
            rows.append(
                f"{name},{'Fake' if fake else 'real'},{('Deepfakes', 'FaceSwap')[v % 4 // 2] if fake else 'none'},vid{v}"
            )
    (tmp_path / "metadata.csv").write_text("\n".join(rows) + "\n")
    records, _ = load_folder_records(tmp_path, cache_dir=str(tmp_path.parent / f"{tmp_path.name}_cache"))
    assert sum(r.is_fake for r in records) == 15
    splits = assign_splits([r.is_fake for r in records], 0, [r.group for r in records])
    per_group = {}
    for r, s in zip(records, splits, strict=True):
        per_group.setdefault(r.group, set()).add(s)
    assert all(len(s) == 1 for s in per_group.values())
    (tmp_path / "metadata.csv").write_text("\n".join([*rows[:3], "img/v1_0.png,maybe,none,vid1"]) + "\n")
    with pytest.raises(ValueError, match="Unknown label 'maybe'"):
        load_folder_records(tmp_path, cache_dir=str(tmp_path.parent / f"{tmp_path.name}_cache2"))


def test_holdout_on_folder_data(tmp_path):
    rows = ["file_name,label,manipulation,split"]
    for i in range(24):
        split = ("train", "val", "test")[i % 3]
        kind = i // 3 % 4  # 0, 1 real; 2 Deepfakes; 3 FaceSwap
        label, manip = ("real", "none") if kind < 2 else ("fake", ("Deepfakes", "FaceSwap")[kind - 2])
        _img(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,{label},{manip},{split}")
    (tmp_path / "metadata.csv").write_text("\n".join(rows) + "\n")
    splits = load_splits(DataArguments(data_dir=str(tmp_path), holdout_manipulation="FaceSwap"), seed=0)
    assert {r.manipulation for r in splits["train"].records} == {"none", "Deepfakes"}
    assert {r.manipulation for r in splits["val"].records} == {"none", "Deepfakes"}
    # In-distribution test: the trained families; held-out: test reals + every FaceSwap fake of any split.
    assert {r.manipulation for r in splits["test"].records} == {"none", "Deepfakes"}
    held = splits["heldout"].records
    assert {r.manipulation for r in held} == {"none", "FaceSwap"}
    assert sum(r.manipulation == "FaceSwap" for r in held) == 6  # 2 in each of the three splits
    assert [r for r in held if not r.is_fake] == [r for r in splits["test"].records if not r.is_fake]
    with pytest.raises(ValueError, match=r"'NeuralTextures' is not in this data.*Deepfakes"):
        load_splits(DataArguments(data_dir=str(tmp_path), holdout_manipulation="NeuralTextures"), seed=0)


def _conv(image, answer, **extra):
    return {
        "image": image,
        "conversations": [
            {"from": "human", "value": "<image>\nReal or fake?"},
            {"from": "gpt", "value": answer},
        ],
        **extra,
    }


def test_jsonl_records_labels_prompts_and_skipped_images(tmp_path):
    for i in range(4):
        _img(tmp_path / "frames" / f"{i}.png")
    (tmp_path / "frames" / "broken.png").write_bytes(b"xx")
    lines = [_conv(f"frames/{i}.png", "Fake" if i % 2 else "Real.", id=f"r{i}") for i in range(4)]
    lines += [_conv("frames/broken.png", "Fake"), _conv("frames/absent.png", "Real")]
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    records, summary = load_jsonl_records(path, "Real", "Fake")
    assert [r.is_fake for r in records] == [0, 1, 0, 1]
    assert records[0].prompt == "<image>\nReal or fake?" and records[0].id == "r0"
    assert [w.split(" ")[0] for w, _ in summary.skipped] == [f"{path}:5", f"{path}:6"]
    # The same records as LLaVA's JSON list.
    list_path = tmp_path / "data.json"
    list_path.write_text(json.dumps(lines[:4]))
    assert [r.is_fake for r in load_jsonl_records(list_path)[0]] == [0, 1, 0, 1]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"image": "a.png"}', r"data.jsonl:2: missing key\(s\) \['conversations'\]"),
        ('{"image": "a.png", "conversations": [', r"data.jsonl:2: invalid JSON"),
        (json.dumps(_conv("a.png", "Perhaps")), r"data.jsonl:2.*neither 'Real' nor 'Fake'"),
        (json.dumps(_conv("a.png", "Real", label="fake")), r"data.jsonl:2: 'label' 'fake' contradicts"),
        (
            json.dumps(
                {
                    "image": "a.png",
                    "conversations": [
                        {"from": "human", "value": "no image"},
                        {"from": "gpt", "value": "Real"},
                    ],
                }
            ),
            "must contain '<image>'",
        ),
    ],
)
def test_malformed_jsonl_lines_name_file_and_line(tmp_path, line, message):
    _img(tmp_path / "a.png")
    (tmp_path / "data.jsonl").write_text(json.dumps(_conv("a.png", "Real")) + "\n" + line + "\n")
    with pytest.raises(ValueError, match=message):
        load_jsonl_records(tmp_path / "data.jsonl")


def test_load_splits_from_jsonl_uses_split_keys(tmp_path):
    lines = []
    for i in range(12):
        _img(tmp_path / f"{i}.png")
        lines.append(
            _conv(
                f"{i}.png",
                "Fake" if i % 2 else "Real",
                split=("train", "validation", "test")[i % 3 if i < 6 else i // 2 % 3],
            )
        )
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    splits = load_splits(DataArguments(data_path=str(tmp_path / "d.jsonl")), seed=0)
    assert sum(len(s) for s in splits.values()) == 12
    item = splits["val"][0]
    assert item["prompt"] == "<image>\nReal or fake?" and item["image"].mode == "RGB"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_splits(DataArguments(data_path=str(tmp_path / "none.jsonl")), seed=0)


def test_sbi_fake_changes_the_central_face_region_only():
    img = Image.fromarray(RNG.integers(60, 200, (96, 80, 3), dtype=np.uint8))
    fake = sbi_fake(img, np.random.default_rng(1), difficulty=0.0)
    assert fake.size == img.size and fake.mode == "RGB"
    diff = np.abs(np.asarray(fake, float) - np.asarray(img, float)).mean(-1)
    (cx, cy), (ax, ay) = heuristic_face_ellipse(80, 96)
    assert diff[int(cy) - 5 : int(cy) + 5, int(cx) - 5 : int(cx) + 5].mean() > 3.0
    assert diff[:3, :3].mean() < 0.5 and diff[-3:, -3:].mean() < 0.5


def test_sbi_cli_writes_pairs_that_share_a_split(tmp_path):
    for i in range(10):
        _img(tmp_path / "real_faces" / f"sub{i % 2}" / f"{i}.png", size=32)
    (tmp_path / "real_faces" / "broken.jpg").write_bytes(b"not a jpeg")
    data_main(
        ["sbi", "--real_dir", str(tmp_path / "real_faces"), "--out", str(tmp_path / "sbi"), "--seed", "1"]
    )
    assert len(list((tmp_path / "sbi" / "fake").glob("*.png"))) == 10
    first = (tmp_path / "sbi" / "fake" / "sub0__0_sbi0.png").read_bytes()
    data_main(
        ["sbi", "--real_dir", str(tmp_path / "real_faces"), "--out", str(tmp_path / "sbi2"), "--seed", "1"]
    )
    assert (tmp_path / "sbi2" / "fake" / "sub0__0_sbi0.png").read_bytes() == first
    splits = load_splits(DataArguments(data_dir=str(tmp_path / "sbi")), seed=0)
    where = {}
    for name, ds in splits.items():
        for r in ds.records:
            where.setdefault(r.id.split("/")[-1].split("_sbi")[0].removesuffix(".png"), set()).add(name)
    assert len(where) == 10 and all(len(s) == 1 for s in where.values())
    assert {r.manipulation for r in splits["train"].records} == {"none", "self_blend"}


def test_several_families_held_out_train_on_the_rest_only_the_sbi_protocol():
    others = "face_swap,gan_upsample,expression_warp,noise_inconsistency"
    splits = load_splits(DataArguments(synthetic_n=200, holdout_manipulation=others), seed=0)
    for name in ("train", "val", "test"):  # reals + self-blended fakes only
        assert {r.manipulation for r in splits[name].records} == {"none", "self_blend"}
    held = splits["heldout"].records
    assert {r.manipulation for r in held if r.is_fake} == set(others.split(","))
    assert [r for r in held if not r.is_fake] == [r for r in splits["test"].records if not r.is_fake]
    one = load_splits(DataArguments(synthetic_n=200, holdout_manipulation="gan_upsample"), seed=0)
    both = load_splits(DataArguments(synthetic_n=200, holdout_manipulation=" gan_upsample, "), seed=0)
    assert [r.id for r in one["heldout"].records] == [r.id for r in both["heldout"].records]
    with pytest.raises(ValueError, match="holds out every fake family"):
        load_splits(DataArguments(synthetic_n=200, holdout_manipulation=f"{others},self_blend"), seed=0)
    with pytest.raises(ValueError, match=r"'deepfake' is not in this data"):
        load_splits(DataArguments(synthetic_n=200, holdout_manipulation="self_blend,deepfake"), seed=0)
