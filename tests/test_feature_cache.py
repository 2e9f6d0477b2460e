"""The frozen-tower feature cache: bitwise the tower's own output, built once, never used where it would be wrong."""

import json

import pytest
import torch
from tiny_training import FLAGS, build, prepare

from llava_df.data.pipeline import prepare_data
from llava_df.errors import RunError
from llava_df.io import COMPLETE
from llava_df.model.feature_cache import (
    FEATURES_FILE,
    FeatureStore,
    attach_existing,
    detach,
    prepare_feature_cache,
    store_problem,
    vision_tower_of,
    why_not_cacheable,
)
from llava_df.spec.args import DataArguments, ModelArguments


@pytest.fixture(scope="module")
def setup():
    args = ModelArguments(bits=8, lora_r=4, lora_alpha=8, **FLAGS["lora"])
    model, processor = build(args)
    model = prepare(model, args, verbose=False)
    data = prepare_data(
        DataArguments(synthetic_n=40, split_fractions="0.5,0.25,0.25"),
        processor,
        seed=0,
        model_max_length=128,
    )
    return model, data


def batches(data, size=6):
    for ds in data.splits.values():
        for start in range(0, len(ds), size):
            yield data.collator([ds[i] for i in range(start, min(start + size, len(ds)))])


@torch.no_grad()
def outputs(model, data):
    model.eval()
    return [
        model(**{k: v for k, v in b.items() if k not in data.collator.extra_keys}).logits
        for b in batches(data)
    ]


def test_cached_features_give_bitwise_the_logits_of_the_tower_and_are_built_once(setup, tmp_path):
    model, data = setup
    plain = outputs(model, data)
    info = prepare_feature_cache(model, data.splits, data.collator, batch_size=16, cache_dir=tmp_path)
    try:
        assert info.reason is None and len(info.stores) == 1
        store = info.stores[0].folder
        assert (store / COMPLETE).is_file() and (store / FEATURES_FILE).is_file()
        cached = outputs(model, data)
        n_images = sum(len(ds) for ds in data.splits.values())
        assert info.hits == n_images and info.misses == 0  # every forward read the store
        for a, b in zip(plain, cached, strict=True):
            assert torch.equal(a, b)
        # 40 images, 65 tokens of the tiny tower's hidden size
        index = json.loads((store / "index.json").read_text())
        assert index["shape"][0] == len(set(index["digests"])) == 40
        built_at = (store / FEATURES_FILE).stat().st_mtime_ns
    finally:
        detach(vision_tower_of(model), info)
    again = prepare_feature_cache(model, data.splits, data.collator, batch_size=16, cache_dir=tmp_path)
    detach(vision_tower_of(model), again)
    assert again.stores[0].folder == store and (store / FEATURES_FILE).stat().st_mtime_ns == built_at


def test_an_image_the_store_lacks_runs_the_tower(setup, tmp_path):
    model, data = setup
    half = {"train": data.splits["train"]}
    info = prepare_feature_cache(model, half, data.collator, batch_size=16, cache_dir=tmp_path)
    try:
        ds = data.splits["test"]
        batch = data.collator([ds[i] for i in range(4)])
        inputs = {k: v for k, v in batch.items() if k not in data.collator.extra_keys}
        with torch.no_grad():
            got = model.eval()(**inputs).logits
        assert info.misses == 4 and info.hits == 0
    finally:
        detach(vision_tower_of(model), info)
    with torch.no_grad():
        assert torch.equal(got, model(**inputs).logits)


def test_predict_and_evaluate_read_stores_already_built_and_build_none(setup, tmp_path):
    model, data = setup
    assert attach_existing(model, cache_dir=tmp_path).stores == []
    detach(
        vision_tower_of(model), prepare_feature_cache(model, data.splits, data.collator, cache_dir=tmp_path)
    )
    info = attach_existing(model, cache_dir=tmp_path)
    try:
        outputs(model, data)
        assert info.hits == 40 and info.misses == 0
    finally:
        detach(vision_tower_of(model), info)


def test_an_incomplete_store_is_rebuilt_not_read(setup, tmp_path):
    model, data = setup
    info = prepare_feature_cache(model, data.splits, data.collator, cache_dir=tmp_path)
    detach(vision_tower_of(model), info)
    store = info.stores[0].folder
    (store / COMPLETE).unlink()  # as a process killed mid-write leaves it
    (store / FEATURES_FILE).write_bytes(b"garbage")
    assert attach_existing(model, cache_dir=tmp_path).stores == []
    info = prepare_feature_cache(model, data.splits, data.collator, cache_dir=tmp_path)
    detach(vision_tower_of(model), info)
    assert (store / COMPLETE).is_file() and info.stores[0].features.shape[0] == 40


def test_a_store_damaged_in_place_at_the_same_size_is_never_read(setup, tmp_path, caplog):
    """Rows reversed in place (sizes unchanged): every image would get another image's features. The
    content digest recorded at build refuses it: predict/evaluate run the tower, training rebuilds it."""
    import numpy as np

    model, data = setup
    plain = outputs(model, data)
    info = prepare_feature_cache(model, data.splits, data.collator, cache_dir=tmp_path)
    detach(vision_tower_of(model), info)
    store = info.stores[0].folder
    features = np.load(store / FEATURES_FILE, mmap_mode="r+")
    features[:] = features[::-1].copy()  # same file, same size, rows reversed
    features.flush()
    del features
    assert attach_existing(model, cache_dir=tmp_path).stores == []  # read-only users: the tower runs instead
    assert "ignoring feature cache" in caplog.text and "changed since it was written" in caplog.text
    with pytest.raises(RunError, match=r"features\.npy changed since it was written"):
        FeatureStore.open(store)
    info = prepare_feature_cache(model, data.splits, data.collator, cache_dir=tmp_path)
    try:
        assert "is damaged" in caplog.text and "rebuilding it" in caplog.text
        assert info.stores[0].folder == store and store_problem(store) is None
        assert all(torch.equal(a, b) for a, b in zip(plain, outputs(model, data), strict=True))
    finally:
        detach(vision_tower_of(model), info)


def test_never_used_when_the_tower_trains_or_is_random(setup):
    model, _ = setup
    tower = vision_tower_of(model)
    assert why_not_cacheable(model) is None
    first = next(tower.parameters())
    first.requires_grad_(True)
    try:
        assert why_not_cacheable(model) == "the vision tower trains"
    finally:
        first.requires_grad_(False)
    dropout = tower.config.attention_dropout
    tower.config.attention_dropout = 0.1
    try:
        assert "dropout" in why_not_cacheable(model)
    finally:
        tower.config.attention_dropout = dropout
    layer = model.config.vision_feature_layer
    model.config.vision_feature_layer = [-2, -1]
    try:
        assert "several feature layers" in why_not_cacheable(model)
    finally:
        model.config.vision_feature_layer = layer
