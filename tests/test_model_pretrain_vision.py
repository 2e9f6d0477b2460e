"""Tiny vision-tower pretraining: patch layout, real-only data, a file the tiny preset loads."""

import hashlib
import json

import pytest
import torch
from safetensors.torch import load_file

from llava_df import pretrain_vision as pv
from llava_df import tiny


def test_patchify_follows_clip_token_order():
    x = torch.arange(2 * 3 * 16 * 16, dtype=torch.float32).reshape(2, 3, 16, 16)
    patches = pv.patchify(x, p=8)  # (2, 4, 192)
    assert patches.shape == (2, 4, 3 * 8 * 8)
    for k, (r, c) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):  # row-major, like Conv2d -> flatten(2)
        assert torch.equal(patches[1, k], x[1, :, r * 8 : (r + 1) * 8, c * 8 : (c + 1) * 8].reshape(-1))


def test_blank_patches_zeroes_exactly_the_masked_ones():
    x = torch.ones(1, 3, 16, 16)
    mask = torch.tensor([[True, False, False, True]])
    blanked = pv.patchify(pv.blank_patches(x, mask, p=8), p=8)
    assert blanked[0, 0].abs().sum() == 0 and blanked[0, 3].abs().sum() == 0
    assert torch.equal(blanked[0, 1], torch.ones(192)) and torch.equal(blanked[0, 2], torch.ones(192))


def test_real_faces_only_and_their_attributes():
    images, attrs, names = pv.real_faces(6, seed=1000)
    assert len(images) == 6 and attrs.shape == (6, len(names))
    assert "skin_tone" in names and "head_cx" in names


def test_short_run_writes_a_tower_the_preset_can_load(tmp_path):
    out = tmp_path / "tiny_vision.safetensors"
    pv.main(["--n_real", "24", "--epochs", "2", "--batch_size", "12", "--probe_n", "0", "--out", str(out)])
    state = load_file(out)
    tower = tiny.build_tiny_model(vision_weights=False).model.vision_tower
    random_state = {k: v.clone() for k, v in tower.state_dict().items()}
    tower.load_state_dict(state, strict=True)  # every key, every shape
    key = "encoder.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(state[key], random_state[key])  # it trained
    summary = json.loads(out.with_suffix(".json").read_text())
    assert [row["epoch"] for row in summary["history"]] == [1, 2]
    assert summary["config"]["n_real"] == 24 and summary["command"].startswith(
        "python -m llava_df.pretrain_vision"
    )


@pytest.mark.skipif(not tiny.VISION_WEIGHTS.is_file(), reason="no shipped tiny_vision.safetensors yet")
def test_shipped_weights_are_loaded_and_recorded():
    model = tiny.build_tiny_model()
    state = load_file(tiny.VISION_WEIGHTS)
    tower = model.model.vision_tower.state_dict()
    assert all(torch.equal(tower[k], v) for k, v in state.items())
    info = model.config.llava_df["vision_weights"]
    assert info["sha256"] == hashlib.sha256(tiny.VISION_WEIGHTS.read_bytes()).hexdigest()


@torch.no_grad()
def test_features_are_llavas_layer_minus_2():
    tower = tiny.build_tiny_model(vision_weights=False).model.vision_tower
    x = torch.randn(2, 3, 64, 64)
    full = tower(x, output_hidden_states=True).hidden_states[-2][:, 1:]
    torch.testing.assert_close(pv.layer_minus_2(tower, x), full)
    assert len(tower.encoder.layers) == tiny.VISION["num_hidden_layers"]  # restored
