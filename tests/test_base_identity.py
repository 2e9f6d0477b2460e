"""Checkpoints name their base; trained parts are not loaded onto another one unless asked."""

from __future__ import annotations

import json

import pytest
from tiny_training import train

from llava_df.errors import WeightsError
from llava_df.io import mark_complete
from llava_df.model.base_identity import base_identity
from llava_df.model.checkpoint import (
    CHECKPOINT_JSON,
    COMPLETE_MARKER,
    TRAINED_FILES,
    load_trained,
    save_trainable,
)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model, _, rec = train("lora", bits=16)
    return save_trainable(model, tmp_path_factory.mktemp("ckpt") / "best", rec)


def test_a_checkpoint_records_its_base(saved):
    base = json.loads((saved / CHECKPOINT_JSON).read_text())["base"]
    assert base["name"] == "tiny" and base["revision"].startswith("local:")


def test_another_base_is_refused_naming_both_unless_allowed(saved, tmp_path):
    meta = json.loads((saved / CHECKPOINT_JSON).read_text())
    meta["base"] = {"name": "tiny", "revision": "local:0123456789abcdef"}
    (saved / CHECKPOINT_JSON).write_text(json.dumps(meta))
    # recorded as if saved so (a checkpoint of another base), not as an edit the completeness record refuses
    mark_complete(saved, COMPLETE_MARKER, digest=lambda name: name in TRAINED_FILES)
    with pytest.raises(
        WeightsError, match=r"trained on base tiny \(revision local:0123456789abcdef\).*revision local:"
    ):
        load_trained(saved)
    model, _ = load_trained(saved, allow_base_mismatch=True)
    assert model is not None


def test_revision_follows_config_and_weight_listing(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"x" * 10)
    first = base_identity(str(tmp_path), "m")
    (tmp_path / "model.safetensors").write_bytes(b"x" * 11)
    assert base_identity(str(tmp_path), "m") != first
    snapshot = tmp_path / "models--a--b" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    assert base_identity(str(snapshot), "a/b") == {"name": "a/b", "revision": "abc123"}
