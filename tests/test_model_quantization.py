"""--bits 8/4 on the real bitsandbytes path (CPU): full-path skip modules, errors, k-bit preparation."""

import sys

import bitsandbytes as bnb
import pytest
import torch
from tiny_training import build, prepare
from transformers import BitsAndBytesConfig, LlavaForConditionalGeneration
from transformers.quantizers.quantizers_utils import should_convert_module

from llava_df.model.quantization import quantized_module_names, skip_modules
from llava_df.model.tiny import example_batch, materialize_tiny, tiny_config
from llava_df.spec.args import ModelArguments

N_LAYERS = 4  # tiny preset
LINEARS = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
)


def expected_quantized(first_quantized_layer: int) -> set[str]:
    return {
        f"model.language_model.layers.{i}.{m}"
        for i in range(first_quantized_layer, N_LAYERS)
        for m in LINEARS
    }


def test_skip_paths_are_the_real_module_paths():
    assert skip_modules(tiny_config(), 2) == [
        "model.vision_tower",
        "model.multi_modal_projector",
        "lm_head",
        "model.language_model.layers.0",
        "model.language_model.layers.1",
    ]
    with pytest.raises(ValueError, match=r"--num_unfreeze_early_layers 5 .* 4 decoder layers"):
        skip_modules(tiny_config(), 5)


def test_matching_rule_bare_names_match_nothing():
    """transformers 5.x matches from the start of the full name or as a suffix: bare LLaVA names miss."""
    bare = ["mm_projector", "vision_tower"]  # LLaVA's train.py spelling
    ours = skip_modules(tiny_config(), 1)
    for name in (
        "model.multi_modal_projector.linear_1",
        "model.vision_tower.encoder.layers.0.self_attn.q_proj",
    ):
        assert should_convert_module(name, bare)  # would be quantized
        assert not should_convert_module(name, ours)
    assert not should_convert_module("model.language_model.layers.0.mlp.up_proj", ours)
    # The boundary rule: layer 1 does not swallow layer 10+.
    assert should_convert_module(
        "model.language_model.layers.10.mlp.up_proj", ["model.language_model.layers.1"]
    )


def test_regression_bare_names_quantize_projector_and_vision_tower():
    config = BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=["mm_projector", "vision_tower"])
    model = LlavaForConditionalGeneration.from_pretrained(materialize_tiny(), quantization_config=config)
    assert isinstance(model.model.multi_modal_projector.linear_1, bnb.nn.Linear8bitLt)
    assert isinstance(model.model.vision_tower.encoder.layers[0].self_attn.q_proj, bnb.nn.Linear8bitLt)
    assert isinstance(model.lm_head, bnb.nn.Linear8bitLt)  # a given skip list drops the default lm_head skip


@pytest.mark.parametrize(
    "bits,n_unfrozen,cls",
    [(8, 0, bnb.nn.Linear8bitLt), (8, 2, bnb.nn.Linear8bitLt), (4, 1, bnb.nn.Linear4bit)],
)
def test_full_path_skips_keep_exactly_the_right_parts_unquantized(bits, n_unfrozen, cls):
    strategy = {"num_unfreeze_early_layers": n_unfrozen} if n_unfrozen else {"lora_enable": True}
    model, _ = build(ModelArguments(bits=bits, **strategy))
    assert set(quantized_module_names(model)) == expected_quantized(n_unfrozen)
    for name in expected_quantized(n_unfrozen):
        assert isinstance(model.get_submodule(name), cls)
    for part in (model.model.vision_tower, model.model.multi_modal_projector, model.lm_head):
        assert not any(isinstance(m, (bnb.nn.Linear8bitLt, bnb.nn.Linear4bit)) for m in part.modules())
    for layer in model.model.language_model.layers[:n_unfrozen]:
        assert {type(m) for m in layer.modules() if isinstance(m, torch.nn.Linear)} == {torch.nn.Linear}
    if bits == 4:  # QLoRA: NF4 with double-quantized constants
        state = model.get_submodule(
            f"model.language_model.layers.{n_unfrozen}.mlp.up_proj"
        ).weight.quant_state
        assert state.quant_type == "nf4" and state.nested


def test_bitsandbytes_missing_gives_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # `import bitsandbytes` now raises ImportError
    with pytest.raises(
        ImportError, match=r"--bits 8 \(LLM.int8\) needs bitsandbytes.*pip install.*--bits 16"
    ):
        build(ModelArguments(bits=8))


def test_preparation_keeps_frozen_parts_16bit_and_trainables_fp32():
    args = ModelArguments(bits=8, num_unfreeze_early_layers=1)
    model, _ = build(args, torch_dtype=torch.bfloat16)
    model = prepare(model, args, verbose=False)
    base = model.get_base_model()
    frozen = {
        "vision tower": base.model.vision_tower,
        "embeddings": base.get_input_embeddings(),
        "lm_head": base.lm_head,
        "final norm": base.model.language_model.norm,
    }
    for name, module in frozen.items():
        assert {p.dtype for p in module.parameters()} == {torch.bfloat16}, name
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and {p.dtype for p in trainable.values()} == {torch.float32}
    assert any("lora_A" in n for n in trainable) and any("multi_modal_projector" in n for n in trainable)
    assert {p.dtype for p in base.model.language_model.layers[0].parameters()} == {torch.float32}  # unfrozen


def test_peft_preparation_would_upcast_the_frozen_tower():
    """Why llava_df has its own preparation: PEFT's casts every non-int8 parameter to fp32."""
    from peft import prepare_model_for_kbit_training

    model, _ = build(ModelArguments(bits=8, lora_enable=True), torch_dtype=torch.bfloat16)
    prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    assert {p.dtype for p in model.model.vision_tower.parameters()} == {torch.float32}
    assert model.get_input_embeddings().weight.dtype == torch.float32


@pytest.mark.parametrize("gradient_checkpointing", [False, True])
def test_bf16_int8_step_with_fp32_island_and_checkpointing(gradient_checkpointing):
    args = ModelArguments(bits=8, num_unfreeze_early_layers=2, lora_r=4, lora_alpha=8)
    model, processor = build(args, torch_dtype=torch.bfloat16)
    model = prepare(model, args, gradient_checkpointing=gradient_checkpointing, verbose=False)
    assert model.get_base_model().is_activation_checkpointing == gradient_checkpointing
    batch = example_batch(processor, batch_size=2)
    batch["pixel_values"] = batch["pixel_values"].to(torch.bfloat16)
    model.train()
    out = model(**batch)
    assert out.logits.dtype == torch.bfloat16  # the fp32 layers hand bf16 back to the stack
    out.loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    # LoRA B starts at zero, so its gradient is the first to be non-zero; it must reach every adapted layer.
    lora_b = [n for n in grads if "lora_B" in n]
    assert lora_b and all(grads[n].abs().sum() > 0 for n in lora_b)
    assert all(grads[n].abs().sum() > 0 for n in grads if ".layers.0." in n and n.endswith("q_proj.weight"))


def test_nf4_weights_stay_as_loaded_through_eval_and_save(tmp_path):
    # bitsandbytes' AVX512-BF16 CPU repack (on CPUs that have it) crashes on the tiny preset's 128 x 352
    # down_proj and rounds absmax to bf16 in place; every NF4 layer must keep the generic path.
    model, processor = build(ModelArguments(bits=4))
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and not any(
        m.support_avx512bf16_for_cpu for m in layers
    )  # bnb gives 0 where the CPU lacks it
    before = {n: b.clone() for n, b in model.state_dict().items() if "absmax" in n}
    batch = example_batch(processor, batch_size=2)
    with torch.no_grad():
        first = model.eval()(**batch).logits
        second = model(**batch).logits
    assert torch.isfinite(first).all() and torch.equal(first, second)
    after = {n: b for n, b in model.state_dict().items() if "absmax" in n}
    assert before.keys() == after.keys() and all(torch.equal(before[n], after[n]) for n in before)
