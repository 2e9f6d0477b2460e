"""Tiny vision-tower pretraining: patch layout, real-only forensic pretext, a file the tiny preset loads."""

import dataclasses
import hashlib
import json

import numpy as np
import pretrain_vision as pv  # tools/ (tests/conftest.py puts it on sys.path)
import pytest
import torch
import vision_pretext as pretext
from safetensors.torch import load_file

from llava_df.model import tiny


def test_patchify_follows_clip_token_order():
    x = torch.arange(2 * 3 * 16 * 16, dtype=torch.float32).reshape(2, 3, 16, 16)
    patches = pv.patchify(x, p=8)  # (2, 4, 192)
    assert patches.shape == (2, 4, 3 * 8 * 8)
    for k, (r, c) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):  # row-major, like Conv2d -> flatten(2)
        assert torch.equal(patches[1, k], x[1, :, r * 8 : (r + 1) * 8, c * 8 : (c + 1) * 8].reshape(-1))


def test_patch_targets_label_a_patch_by_the_region_covering_it():
    cover = np.zeros((1, 16, 16), np.float32)
    cover[0, :8, :8] = 1.0  # patch 0 fully inside the region
    cover[0, :8, 8:12] = 1.0  # patch 1 half inside -> still labelled with the op
    cover[0, 8:10, :8] = 1.0  # patch 2 a quarter inside -> "none"
    labels, frac = pv.patch_targets(np.array([3]), cover, p=8)
    assert labels.tolist() == [[3, 3, 0, 0]]
    torch.testing.assert_close(frac, torch.tensor([[1.0, 0.5, 0.25, 0.0]]))


@pytest.mark.parametrize("op", pretext.OPS)
def test_every_op_is_a_bounded_image_processing(op):
    img = np.random.default_rng(0).uniform(0.2, 0.8, (32, 32, 3)).astype(np.float32)
    out = pretext.process(img, op, 0.7, np.random.default_rng(1))
    assert out.shape == img.shape
    assert (op == "none") == np.allclose(out, img, atol=1e-6)  # every real op changes the pixels


def test_pretext_uses_real_faces_only_and_never_the_benchmark_forgeries(monkeypatch):
    from llava_df.data import manipulations

    def forbidden(*args, **kwargs):
        raise AssertionError("the pretext must not call the benchmark's manipulations")

    monkeypatch.setattr(manipulations, "apply_manipulation", forbidden)
    for name in manipulations.available_manipulations():  # the registry's functions too
        entry = manipulations.get_manipulation(name)
        monkeypatch.setitem(manipulations._REGISTRY, name, dataclasses.replace(entry, fn=forbidden))
    images, ops, cover = pretext.processed_reals(n_real=6, variants=3, seed=1000)
    assert len(images) == 18 and ops.shape == (18,) and cover.shape == (18, 64, 64)
    assert images[0].size == (64, 64)
    assert (cover[ops == 0] == 0).all()  # unprocessed ones have no region
    assert (cover[ops > 0].max(axis=(1, 2)) > 0.5).all()  # processed ones have a region


@pytest.mark.slow
def test_pretext_head_learns(tmp_path):
    cfg = pv.PretrainConfig(
        n_real=48, variants=2, epochs=5, batch_size=32, probe_n=0, out=str(tmp_path / "w")
    )
    _, summary = pv.pretrain(cfg, log=lambda *_: None)
    first, last = summary["history"][0], summary["history"][-1]
    assert last["op_ce"] < first["op_ce"] and last["residual_mse"] < first["residual_mse"]


@pytest.mark.slow
def test_short_run_writes_a_tower_the_preset_can_load(tmp_path):
    out = tmp_path / "tiny_vision.safetensors"
    pv.main(
        [
            "--n_real",
            "12",
            "--variants",
            "2",
            "--epochs",
            "2",
            "--batch_size",
            "12",
            "--probe_n",
            "0",
            "--out",
            str(out),
        ]
    )
    state = load_file(out)
    tower = tiny.build_tiny_model(vision_weights=False).model.vision_tower
    random_state = {k: v.clone() for k, v in tower.state_dict().items()}
    tower.load_state_dict(state, strict=True)  # every key, every shape
    key = "encoder.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(state[key], random_state[key])  # it trained
    summary = json.loads(out.with_suffix(".json").read_text())
    assert [row["epoch"] for row in summary["history"]] == [1, 2]
    assert summary["config"]["n_real"] == 12 and summary["command"].startswith(
        "python tools/pretrain_vision.py"
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
