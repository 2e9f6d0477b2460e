"""build_model: tiny or checkpoint, projector swap and its weights, dtypes, clear errors."""

import pytest
import torch
from safetensors.torch import save_file
from tiny_training import build
from transformers import GPT2Config, LlamaConfig, LlavaForConditionalGeneration

from llava_df.model.build import load_projector_weights, resolve_checkpoint
from llava_df.model.tiny import example_batch, materialize_tiny
from llava_df.projectors import create_projector
from llava_df.projectors.mlp import MLPProjector
from llava_df.spec.args import ModelArguments

VISION, TEXT = 128, 128  # tiny preset widths (llava_df.model.tiny.VISION / TEXT)


@pytest.fixture(scope="module")
def tiny16():
    return build(ModelArguments())


def test_tiny_builds_with_swapped_projector(tiny16):
    model, processor = tiny16
    proj = model.model.multi_modal_projector
    assert isinstance(proj, MLPProjector) and proj.projector_name == "mlp2x_gelu"
    assert model.config.mm_projector_type == "mlp2x_gelu"
    assert all(p.dtype == torch.float32 for p in proj.parameters())
    # mlp2x_gelu is HF's projector architecture: it starts from the checkpoint's trained weights.
    stock = LlavaForConditionalGeneration.from_pretrained(materialize_tiny()).model.multi_modal_projector
    assert torch.equal(proj[0].weight, stock.linear_1.weight) and torch.equal(
        proj[2].bias, stock.linear_2.bias
    )
    batch = example_batch(processor, batch_size=2)
    out = model(**batch)
    assert out.logits.shape == (2, batch["input_ids"].shape[1], model.config.text_config.vocab_size)
    assert torch.isfinite(out.loss)


def test_bf16_model_keeps_fp32_projector_and_runs():
    model, processor = build(ModelArguments(mm_projector_type="mlp3x_gelu"), torch_dtype=torch.bfloat16)
    proj = model.model.multi_modal_projector
    assert {p.dtype for p in proj.parameters()} == {torch.float32}
    assert model.model.language_model.layers[0].self_attn.q_proj.weight.dtype == torch.bfloat16
    assert model.model.vision_tower.embeddings.patch_embedding.weight.dtype == torch.bfloat16
    batch = example_batch(processor, batch_size=2)
    batch["pixel_values"] = batch["pixel_values"].to(torch.bfloat16)
    out = model(**batch)  # bf16 vision features -> fp32 projector (pre-hook cast) -> bf16 embeddings
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.loss)


def _llava_state(projector):
    """A projector state dict in LLaVA's mm_projector.bin layout."""
    return {f"model.mm_projector.{k}": v.clone() for k, v in projector.state_dict().items()}


def test_pretrained_adapter_bin_with_llava_prefix(tmp_path):
    source = create_projector("mlp2x_gelu", VISION, TEXT)
    torch.save(_llava_state(source), tmp_path / "mm_projector.bin")
    model, _ = build(ModelArguments(pretrain_mm_mlp_adapter=str(tmp_path / "mm_projector.bin")))
    loaded = model.model.multi_modal_projector.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in source.state_dict().items())


def test_projector_safetensors_with_hf_keys(tmp_path):
    # HF LlavaMultiModalProjector keys (linear_1/linear_2) load into mlp2x_gelu too.
    stock = LlavaForConditionalGeneration.from_pretrained(materialize_tiny()).model.multi_modal_projector
    save_file(
        {f"model.multi_modal_projector.{k}": v for k, v in stock.state_dict().items()},
        tmp_path / "p.safetensors",
    )
    proj = create_projector("mlp2x_gelu", VISION, TEXT)
    load_projector_weights(proj, tmp_path / "p.safetensors")
    assert torch.equal(proj[2].weight, stock.linear_2.weight)


def test_projector_file_with_wrong_shapes_names_file_key_and_shapes(tmp_path):
    wrong = create_projector("mlp2x_gelu", 64, TEXT)  # trained for a 64-wide vision tower
    path = tmp_path / "mm_projector.bin"
    torch.save(_llava_state(wrong), path)
    proj = create_projector("mlp2x_gelu", VISION, TEXT)
    with pytest.raises(ValueError) as err:
        load_projector_weights(proj, path)
    msg = str(err.value)
    assert str(path) in msg and "'0.weight'" in msg and "(128, 64)" in msg and "(128, 128)" in msg


def test_projector_file_with_other_keys_is_rejected(tmp_path):
    save_file({"foo.weight": torch.zeros(2, 2)}, tmp_path / "p.safetensors")
    with pytest.raises(ValueError, match=r"missing keys .*0\.weight.*unexpected keys .*foo\.weight"):
        load_projector_weights(create_projector("mlp2x_gelu", VISION, TEXT), tmp_path / "p.safetensors")


def test_unknown_projector_lists_valid_names():
    with pytest.raises(KeyError, match=r"Unknown projector 'mlp_gelu'.*mlp\{depth\}x_gelu"):
        build(ModelArguments(mm_projector_type="mlp_gelu"))


@pytest.mark.parametrize("bits", [0, 2, 32, True])
def test_bits_outside_16_8_4(bits):
    with pytest.raises(ValueError, match=rf"--bits must be one of 16, 8, 4.*got {bits!r}"):
        build(ModelArguments(bits=bits))


def test_missing_local_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_checkpoint(str(tmp_path / "nope" / "llava"))


def test_folder_without_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        resolve_checkpoint(str(tmp_path))


def test_non_llava_checkpoint(tmp_path):
    LlamaConfig(
        hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8
    ).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="plain 'llama' LLM, not LLaVA. Add --vision_tower"):
        build(ModelArguments(model_name_or_path=str(tmp_path)))
    GPT2Config(n_embd=8, n_layer=1, n_head=1).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="'gpt2' checkpoint, not LLaVA"):
        build(ModelArguments(model_name_or_path=str(tmp_path)))


def test_offline_missing_hub_checkpoint_fails_fast_and_says_how_to_get_it(monkeypatch):
    """HF_HUB_OFFLINE=1 with an uncached hub id: an immediate error, no network wait.

    huggingface_hub reads the variable at import, so the test sets both the variable and the
    constant its is_offline_mode() returns.
    """
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(FileNotFoundError) as err:
        build(ModelArguments(model_name_or_path="llava-df-test/does-not-exist"))
    msg = str(err.value)
    assert "'llava-df-test/does-not-exist'" in msg and "HF_HUB_OFFLINE=1" in msg
    assert "hf download llava-df-test/does-not-exist" in msg
