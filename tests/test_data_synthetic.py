"""Synthetic benchmark: determinism, splits, held-out protocol, manipulations, CLI (llava_df.data.synthetic)."""

from __future__ import annotations

import csv
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from llava_df.data.__main__ import main as data_main
from llava_df.data.faces import add_sensor_noise, attributes, render_face, sample_face_params
from llava_df.data.load import load_splits
from llava_df.data.manipulations import (
    ManipulationContext,
    apply_manipulation,
    available_manipulations,
    blend_mask,
    get_manipulation,
    register_manipulation,
)
from llava_df.data.synthetic import SyntheticConfig, generate, plan
from llava_df.spec.args import DataArguments

FAMILIES = available_manipulations()


def main(argv):
    return data_main(["synthetic", *argv])


def _pixels(samples):
    return {s.id: np.asarray(s.image).tobytes() for s in samples}


def test_at_least_four_published_families_registered():
    assert {"face_swap", "self_blend", "gan_upsample", "expression_warp"} <= set(FAMILIES)


def test_same_config_same_images_other_seed_other_images():
    cfg = SyntheticConfig(n=24, seed=3)
    a, b = generate(cfg), generate(cfg)
    assert _pixels(a) == _pixels(b)
    assert [(s.is_fake, s.manipulation, s.split, s.attributes) for s in a] == [
        (s.is_fake, s.manipulation, s.split, s.attributes) for s in b
    ]
    c = generate(SyntheticConfig(n=24, seed=4))
    assert all(
        np.asarray(x.image).tobytes() != np.asarray(y.image).tobytes() for x, y in zip(a, c, strict=True)
    )


def test_plan_balances_labels_splits_and_families():
    p = plan(SyntheticConfig(n=200, seed=0))
    assert sum(s.is_fake for s in p) == 100
    for split, frac in (("train", 0.7), ("val", 0.15), ("test", 0.15)):
        members = [s for s in p if s.split == split]
        assert sum(s.is_fake for s in members) == round(frac * 100)
        assert len(members) - sum(s.is_fake for s in members) == round(frac * 100)
        fams = Counter(s.manipulation for s in members if s.is_fake)
        assert set(fams) == set(FAMILIES) and max(fams.values()) - min(fams.values()) <= 1
    assert {s.manipulation for s in p if not s.is_fake} == {"none"}


@pytest.mark.parametrize("n", [6, 7, 14, 25])
def test_small_benchmarks_have_both_classes_in_every_split(n):
    p = plan(SyntheticConfig(n=n, seed=0))
    for split in ("train", "val", "test"):
        assert {s.is_fake for s in p if s.split == split} == {0, 1}


def test_holdout_protocol_keeps_family_out_of_train_and_val():
    base = SyntheticConfig(n=200, seed=1)
    held = SyntheticConfig(n=200, seed=1, holdout_manipulation="gan_upsample")
    p0, p1 = plan(base), plan(held)
    assert not any(s.manipulation == "gan_upsample" for s in p1 if s.split in ("train", "val"))
    assert {s.manipulation for s in p1 if s.split == "test" and s.is_fake} == {"gan_upsample"}
    train_fams = {s.manipulation for s in p1 if s.split == "train" and s.is_fake}
    assert train_fams == set(FAMILIES) - {"gan_upsample"}
    # Same split sizes, same labels: only test fakes change family.
    assert [(s.split, s.is_fake) for s in p0] == [(s.split, s.is_fake) for s in p1]
    # Real images are the same pixels under both protocols.
    reals = [i for i, s in enumerate(p0) if not s.is_fake][:5]
    small0 = {s.id: s for s in generate(SyntheticConfig(n=200, seed=1), splits=("val",))}
    small1 = {
        s.id: s
        for s in generate(
            SyntheticConfig(n=200, seed=1, holdout_manipulation="gan_upsample"), splits=("val",)
        )
    }
    for key, s in small0.items():
        if not s.is_fake:
            assert np.array_equal(np.asarray(s.image), np.asarray(small1[key].image))
    assert reals


def test_bad_configs_fail_with_valid_names():
    with pytest.raises(KeyError, match=r"Unknown manipulation 'deepfakes'.*face_swap"):
        get_manipulation("deepfakes")
    with pytest.raises(ValueError, match=r"'nope' is not a family.*self_blend"):
        SyntheticConfig(n=40, holdout_manipulation="nope").validate()
    with pytest.raises(ValueError, match=r"difficulty must be in \[0, 1\]"):
        SyntheticConfig(n=40, difficulty=1.5).validate()
    with pytest.raises(ValueError, match="n >= 6"):
        SyntheticConfig(n=5).validate()
    with pytest.raises(ValueError, match="already registered"):
        register_manipulation("face_swap", description="dup")(lambda *a: a[0])


def test_attributes_describe_the_generator():
    p = sample_face_params(np.random.default_rng(0))
    a = attributes(p)
    assert a["skin_tone"] == pytest.approx(p.skin_tone)
    assert (a["head_cx"], a["head_cy"], a["head_rx"]) == pytest.approx((p.cx, p.cy, p.rx), abs=1e-5)
    assert (a["hair_r"], a["hair_g"], a["hair_b"]) == pytest.approx(p.hair, abs=1e-5)
    assert all(isinstance(v, int | float) for v in a.values())


def _face(seed: int, size: int):
    p = sample_face_params(np.random.default_rng(seed))
    img, lm = render_face(p, size)
    img = add_sensor_noise(img, p.noise_sigma, np.random.default_rng(seed + 100))
    return img, ManipulationContext(lm, p.noise_sigma, p)


@pytest.mark.parametrize("name", FAMILIES)
def test_each_family_changes_the_face_not_the_background(name):
    inside, outside = [], []
    for seed in range(4):
        img, ctx = _face(seed, 64)
        fake = apply_manipulation(name, img, ctx, np.random.default_rng(seed + 1000), difficulty=0.5)
        assert fake.shape == img.shape and fake.dtype == np.float32 and fake.min() >= 0 and fake.max() <= 1
        lm = ctx.landmarks
        face = (
            blend_mask((64, 64), lm.inner_centre, lm.inner_axes, lm.roll, np.random.default_rng(0), 0.0, 0.0)
            > 0.5
        )
        diff = np.abs(fake - img).mean(-1)
        inside.append(diff[face].mean())
        outside.append(diff[:6, :].mean())  # top rows: background / hair, far from the face
    assert np.mean(inside) > 0.004
    assert np.mean(inside) > 5 * np.mean(outside)


@pytest.mark.parametrize("name", FAMILIES)
def test_difficulty_scales_artifact_strength(name):
    strength = {}
    for d in (0.0, 1.0):
        diffs = []
        for seed in range(6):
            img, ctx = _face(seed, 64)
            fake = apply_manipulation(name, img, ctx, np.random.default_rng(seed + 1000), difficulty=d)
            diffs.append(np.abs(fake - img).mean())
        strength[d] = np.mean(diffs)
    assert strength[0.0] > 1.3 * strength[1.0] > 0


@pytest.mark.parametrize("size", [224, 336])
def test_large_resolutions_render_every_family(size):
    img, ctx = _face(7, size)
    assert img.shape == (size, size, 3)
    for name in FAMILIES:
        fake = apply_manipulation(name, img, ctx, np.random.default_rng(0), difficulty=0.5)
        assert fake.shape == (size, size, 3) and np.abs(fake - img).mean() > 1e-4


def test_generate_at_224_gives_224_images():
    s = generate(SyntheticConfig(n=20, seed=0, image_size=224), splits=("test",))
    assert s and all(x.image.size == (224, 224) and x.image.mode == "RGB" for x in s)


def test_cli_writes_byte_identical_folders(tmp_path):
    args = ["--n", "24", "--seed", "5", "--image-size", "32", "--difficulty", "0.3"]
    main(["--out", str(tmp_path / "a"), *args])
    main(["--out", str(tmp_path / "b"), *args])
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) == 24 + 2
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    rows = list(csv.DictReader((tmp_path / "a" / "metadata.csv").open()))
    assert list(rows[0])[:5] == ["file_name", "label", "manipulation", "split", "id"]
    assert {"skin_tone", "head_cx", "hair_r"} <= set(rows[0])
    assert Counter(r["label"] for r in rows) == {"real": 12, "fake": 12}
    with pytest.raises(FileExistsError, match="another config"):
        main(["--out", str(tmp_path / "a"), "--n", "30"])


def test_folder_written_by_cli_loads_like_the_in_memory_benchmark(tmp_path):
    main(["--out", str(tmp_path / "s"), "--n", "40", "--seed", "2"])
    from_disk = load_splits(DataArguments(data_dir=str(tmp_path / "s")), seed=123)
    in_memory = load_splits(DataArguments(synthetic_n=40, synthetic_seed=2), seed=123)
    for split in ("train", "val", "test"):
        disk = {r.id: r for r in from_disk[split].records}
        mem = {r.id: r for r in in_memory[split].records}
        assert disk.keys() == mem.keys()
        for key, r in mem.items():
            assert (disk[key].is_fake, disk[key].manipulation) == (r.is_fake, r.manipulation)
        item = from_disk[split][0]
        assert np.array_equal(
            np.asarray(item["image"]),
            np.asarray(in_memory[split][[r.id for r in in_memory[split].records].index(item["id"])]["image"]),
        )


def test_captions_cli_writes_llava_pretrain_format_of_other_faces(tmp_path):
    """Stage-1 captions: LLaVA-Pretrain's JSON list, one human turn with <image>, a caption that never
    says real or fake, images that are not the benchmark's of the same seed."""
    import json

    from llava_df.data.jsonl import load_jsonl_records

    path = main(["--captions", "--out", str(tmp_path / "cap"), "--n", "8", "--seed", "0"])
    records = json.loads(path.read_text())
    assert len(records) == 8 and len({r["conversations"][1]["value"] for r in records}) > 4
    for r in records:
        human, gpt = r["conversations"]
        assert human["from"] == "human" and "<image>" in human["value"] and gpt["from"] == "gpt"
        assert not {"real", "fake"} & set(gpt["value"].lower().replace(",", " ").replace(".", " ").split())
        assert (tmp_path / "cap" / r["image"]).is_file()
    loaded, _ = load_jsonl_records(path, task="caption")
    assert [r.answer for r in loaded] == [r["conversations"][1]["value"] for r in records]
    bench = {s.image.tobytes() for s in generate(SyntheticConfig(n=8, seed=0))}
    assert not bench & {Image.open(tmp_path / "cap" / r["image"]).convert("RGB").tobytes() for r in records}
