"""save_trainable / load_trained round trips give IDENTICAL logits, for every strategy at 16 and 8 bits."""

import dataclasses
import json

import pytest
import torch
from tiny_training import FLAGS, logits, train

from llava_df.model.checkpoint import (
    ADAPTER_FILE,
    CHECKPOINT_JSON,
    PROJECTOR_FILE,
    UNFROZEN_FILE,
    find_checkpoint,
    load_trained,
    save_trainable,
)


@pytest.mark.parametrize("strategy,bits", [(s, b) for s in FLAGS for b in (16, 8)] + [("lora", 4)])
def test_round_trip_gives_identical_logits(strategy, bits, tmp_path):
    model, batch, rec = train(
        strategy, bits, projector="mlp3x_gelu" if strategy == "unfreeze_early" else "mlp2x_gelu"
    )
    reference = logits(model, batch)
    grads_before = {n: p.requires_grad for n, p in model.named_parameters()}
    out = save_trainable(
        model,
        tmp_path / "best",
        dataclasses.replace(rec, run_config={"learning_rate": 1e-2, "note": object()}),
    )
    # Saving changes nothing in the model being trained.
    assert torch.equal(logits(model, batch), reference)
    assert {n: p.requires_grad for n, p in model.named_parameters()} == grads_before

    files = {p.name for p in out.iterdir()}
    assert {CHECKPOINT_JSON, PROJECTOR_FILE, "mm_projector.json"} <= files
    assert (ADAPTER_FILE in files) == (strategy != "projector_only")
    assert (UNFROZEN_FILE in files) == (strategy == "unfreeze_early")
    meta = json.loads((out / CHECKPOINT_JSON).read_text())
    assert meta["strategy"] == strategy and meta["model_args"]["bits"] == bits
    assert meta["run_config"]["learning_rate"] == 1e-2  # non-JSON values are stored as text, not dropped
    assert meta["projector"]["name"] == model.config.mm_projector_type

    loaded, _ = load_trained(tmp_path)  # the run folder: best/ is found
    assert not any(p.requires_grad for p in loaded.parameters())
    assert torch.equal(logits(loaded, batch), reference)

    # Resuming: the strategy is re-applied and the weights loaded into it.
    resumed, _ = load_trained(out, is_trainable=True)
    assert any(p.requires_grad for p in resumed.parameters())
    assert torch.equal(logits(resumed, batch), reference)


def test_find_checkpoint_prefers_the_folder_then_best_then_final(tmp_path):
    model, _, rec = train("projector_only", 16)
    for name in ("final", "checkpoint-2"):
        save_trainable(model, tmp_path / name, rec)
    assert find_checkpoint(tmp_path) == tmp_path / "final"
    save_trainable(model, tmp_path / "best", rec)
    assert find_checkpoint(tmp_path) == tmp_path / "best"
    assert find_checkpoint(tmp_path / "checkpoint-2") == tmp_path / "checkpoint-2"


def test_missing_checkpoint_names_what_exists(tmp_path):
    model, _, rec = train("projector_only", 16)
    save_trainable(model, tmp_path / "checkpoint-7", rec)
    with pytest.raises(FileNotFoundError, match=r"No llava_df checkpoint at .*\['checkpoint-7'\]"):
        load_trained(tmp_path)
