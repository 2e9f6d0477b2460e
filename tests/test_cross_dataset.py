"""Cross-dataset protocol: train and validate on one folder, test on another (--test_data_dir), from real photos.

The folders are built from the two real photographs scikit-learn ships (china.jpg, flower.jpg): crops of
one photo are one "dataset", their self-blended copies (llava_df.data.sbi) its fakes, so a model trained on
one photo's crops is tested on the other's, as FF++ -> Celeb-DF is in deepfake papers."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_sample_images

from llava_df.data.load import load_splits
from llava_df.data.sbi import sbi_fake
from llava_df.errors import DataError
from llava_df.spec.args import DataArguments
from llava_df.spec.resolve import parse_spec


def _photo_dataset(root, photo: int, n: int = 12, size: int = 64):
    """n crops of a real photo in real/, one self-blended fake of each in fake/, metadata with a group per crop."""
    image = Image.fromarray(load_sample_images().images[photo])
    rng = np.random.default_rng(photo)
    rows = ["file_name,label,manipulation,group"]
    for i in range(n):
        x, y = int(rng.integers(0, image.width - 160)), int(rng.integers(0, image.height - 160))
        crop = image.crop((x, y, x + 160, y + 160)).resize((size, size))
        for label, img in (("real", crop), ("fake", sbi_fake(crop, rng, difficulty=0.2))):
            (root / label).mkdir(parents=True, exist_ok=True)
            img.save(root / label / f"{i}.png")
            rows.append(f"{label}/{i}.png,{label},{'none' if label == 'real' else 'self_blend'},crop{i}")
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    return _photo_dataset(root / "china", 0), _photo_dataset(root / "flower", 1)


def test_the_other_folder_is_the_whole_test_split_and_groups_stay_on_one_side(photos):
    china, flower = photos
    splits = load_splits(
        DataArguments(data_dir=str(china), test_data_dir=str(flower), split_fractions="0.6,0.2,0.2")
    )
    assert sorted(splits) == ["test", "train", "val"]
    assert len(splits["test"]) == 24 and all(str(flower) in r.path for r in splits["test"].records)
    assert len(splits["train"]) + len(splits["val"]) == 24  # china whole: train 0.75, val 0.25 of it
    assert all(str(china) in r.path for name in ("train", "val") for r in splits[name].records)
    sides = {r.group: name for name in ("train", "val") for r in splits[name].records}
    assert all(sides[r.group] == name for name in ("train", "val") for r in splits[name].records)
    assert len(splits["val"]) == 6  # 3 of the 12 crops (with their fakes): 0.2 / (0.6 + 0.2)


def test_an_image_in_both_folders_and_a_second_test_split_are_refused(photos, tmp_path):
    china, flower = photos
    leaky = shutil.copytree(flower, tmp_path / "leaky")
    shutil.copy(china / "real" / "3.png", leaky / "real" / "extra.png")
    (leaky / "metadata.csv").write_text((leaky / "metadata.csv").read_text() + "real/extra.png,real,none,x\n")
    with pytest.raises(
        DataError, match=r"1 images are also in the training source .*a test image seen in training"
    ):
        load_splits(DataArguments(data_dir=str(china), test_data_dir=str(leaky)))
    own_test = shutil.copytree(china, tmp_path / "own_test")
    (own_test / "metadata.csv").write_text(
        "file_name,label,manipulation,split\n" + "".join(
            f"{c}/{i}.png,{c},{'none' if c == 'real' else 'self_blend'},{'test' if i < 2 else 'train'}\n"
            for c in ("real", "fake") for i in range(12)))  # fmt: skip
    with pytest.raises(DataError, match="has its own test split .* Drop the test split"):
        load_splits(DataArguments(data_dir=str(own_test), test_data_dir=str(flower)))


def test_the_synthetic_benchmark_trains_and_a_real_photo_folder_tests(photos):
    _, flower = photos
    splits = load_splits(DataArguments(synthetic_n=60, test_data_dir=str(flower)))
    assert len(splits["test"]) == 24 and all(str(flower) in r.path for r in splits["test"].records)
    summary = splits["train"].summary
    assert any("synthetic test split" in where and "unused" in why for where, why in summary.skipped)


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--test_data_dir", "/no/such/folder"], "--test_data_dir /no/such/folder: no such folder"),
        (["--test_data_dir", ".", "--holdout_manipulation", "self_blend"], "Use one protocol per run"),
    ],
)
def test_bad_cross_dataset_flags_are_one_error_before_any_weight(extra, message):
    from llava_df.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        parse_spec(["--output_dir", "o", *extra])


@pytest.mark.slow
def test_the_sweep_trains_on_one_photo_and_tests_on_the_other(photos, tmp_path):
    from llava_df.data.folder import load_folder_records
    from llava_df.sweep.compare import main

    china, flower = photos
    main(["--quick", "--projectors", "mlp2x_gelu", "--strategies", "projector_only", "--skip_probes",
          "--data_dir", str(china), "--test_data_dir", str(flower), "--holdout_manipulation", "",  # the recipe's off
          "--results_dir", str(tmp_path / "r"), "--runs_dir", str(tmp_path / "o")])  # fmt: skip
    record = json.loads(
        (tmp_path / "r" / "comparison" / "runs" / "mlp2x_gelu__projector_only__seed0.json").read_text()
    )
    flower_ids = sorted(r.id for r in load_folder_records(flower)[0])
    assert sorted(record["scores"]["test"]["id"]) == flower_ids and record["metrics"]["test"]["n"] == 24
    assert len(record["scores"]["val"]["id"]) == record["metrics"]["val"]["n"] < 24  # a part of china only
    assert record["config"]["data"]["test_data_dir"] == str(flower)
    assert "| projector_only | mlp2x_gelu |" in (tmp_path / "r" / "comparison.md").read_text()
