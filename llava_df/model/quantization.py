"""``--bits 16|8|4``: the BitsAndBytesConfig with full-path skip modules, and k-bit training prep.

Interface::

    validate_bits(bits) -> int
    require_bitsandbytes(bits) -> None                     # clear ImportError when bnb cannot load
    skip_modules(config, num_unfrozen_layers) -> list[str] # full paths kept out of int8/nf4
    quantization_config(bits, *, skip, compute_dtype, double_quant=True, quant_type="nf4")
        -> BitsAndBytesConfig | None
    quantized_module_names(model) -> list[str]             # modules held by bnb Linear8bitLt/Linear4bit
    prepare_for_kbit_training(model, *, gradient_checkpointing=False) -> model
    make_fp32_island(layer) -> None                        # run one decoder layer in fp32 inside a 16-bit stack

Why full paths: transformers 5.x matches ``llm_int8_skip_modules`` entries against full module
names from the START (``re.match``, up to a module boundary) or as a name suffix
(``quantizers_utils.should_convert_module``). LLaVA's bare ``mm_projector`` / ``vision_tower``
match neither ``model.multi_modal_projector.linear_1`` nor
``model.vision_tower.encoder.layers.0.self_attn.q_proj``, so the projector and the whole CLIP
tower would be quantized. And once a skip list is given, transformers no longer adds its
default skip (``lm_head``), so it must be listed too.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import BitsAndBytesConfig, LlavaForConditionalGeneration

from llava_df.model.anatomy import component_paths, decoder_layers, layers_path, unwrap

VALID_BITS = (16, 8, 4)


def validate_bits(bits) -> int:
    if bits not in VALID_BITS or isinstance(bits, bool):
        raise ValueError(
            f"--bits must be one of {', '.join(map(str, VALID_BITS))} (16-bit, LLM.int8, NF4), got {bits!r}."
        )
    return int(bits)


def _bitsandbytes_error() -> str | None:
    """None when bitsandbytes imports and has a backend for this machine, else the reason."""
    try:
        # lazy: importing bitsandbytes loads its native library; this function is what finds out whether it can
        import bitsandbytes  # noqa: F401
        from transformers.integrations import validate_bnb_backend_availability

        validate_bnb_backend_availability(raise_exception=True)
    except Exception as exc:  # ImportError, RuntimeError from a missing native library, ...
        return f"{type(exc).__name__}: {exc}"
    return None


def require_bitsandbytes(bits: int) -> None:
    if bits == 16:
        return
    reason = _bitsandbytes_error()
    if reason is not None:
        kind = "LLM.int8" if bits == 8 else "NF4"
        raise ImportError(
            f"--bits {bits} ({kind}) needs bitsandbytes, which could not be loaded here ({reason}). "
            "Install it with `pip install 'bitsandbytes>=0.45'` (CUDA and CPU builds), or run with --bits 16."
        )


def skip_modules(config, num_unfrozen_layers: int = 0) -> list[str]:
    """Full module paths to keep unquantized: vision tower, projector, lm_head, the first N LLM layers.

    The paths are read off a model instantiated on the meta device from ``config`` (no memory,
    no weights), so they are the real paths of this transformers version.
    """

    with torch.device("meta"):
        skeleton = LlavaForConditionalGeneration(config)
    paths = component_paths(skeleton)
    n_layers = len(decoder_layers(skeleton))
    if not 0 <= num_unfrozen_layers <= n_layers:
        raise ValueError(
            f"--num_unfreeze_early_layers {num_unfrozen_layers} is out of range: the language model has "
            f"{n_layers} decoder layers (valid: 0..{n_layers})."
        )
    prefix = layers_path(skeleton)
    # Unfrozen layers train in full precision, so they must load unquantized, not be dequantized later.
    layers = [f"{prefix}.{i}" for i in range(num_unfrozen_layers)]
    return [paths["vision_tower"], paths["projector"], paths["lm_head"], *layers]


def quantization_config(
    bits: int,
    *,
    skip: list[str],
    compute_dtype: torch.dtype = torch.float32,
    double_quant: bool = True,
    quant_type: str = "nf4",
):
    """BitsAndBytesConfig for ``bits`` (None for 16). ``skip`` are full paths from :func:`skip_modules`."""

    bits = validate_bits(bits)
    if bits == 16:
        return None
    if bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=list(skip))
    if quant_type not in ("nf4", "fp4"):
        raise ValueError(f"--quant_type must be 'nf4' or 'fp4', got {quant_type!r}.")
    # QLoRA: NF4 storage, double-quantized constants, matmuls in the compute dtype (bf16 on GPU).
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant_type,
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=compute_dtype,
        llm_int8_skip_modules=list(skip),  # transformers reads the skip list from this field for 4-bit too
    )


def is_quantized_linear(module: nn.Module) -> bool:
    try:
        import bitsandbytes as bnb  # lazy: bitsandbytes loads a native library that may be missing; --bits 16 runs without it
    except Exception:
        return False
    return isinstance(module, (bnb.nn.Linear8bitLt, bnb.nn.Linear4bit))


def quantized_module_names(model: nn.Module) -> list[str]:
    """Names (relative to the unwrapped model) of modules stored by bitsandbytes."""
    return [name for name, m in unwrap(model).named_modules() if is_quantized_linear(m)]


# bitsandbytes 0.50 repacks a Linear4bit's weight in place for its AVX512-BF16 CPU kernel at the
# first no-grad eval forward (only on CPUs with AVX512-BF16). Three faults for us, all seen on
# such a CPU: shapes that are not multiples of its blocks crash ("shape '[128, 5]' is invalid for
# input of size 704" for the tiny preset's 128x352 down_proj); the repack stores absmax in bf16,
# so the logits change; and saving a state dict unpacks it with that bf16 absmax, so an evaluation
# in the middle of training rounds the frozen weights' scales for the rest of the run, and a
# save/load round trip no longer reproduces the logits. `support_avx512bf16_for_cpu` is the
# module's own switch for that path (set in Linear4bit.__init__); off, every CPU computes NF4 the
# same way (dequantize, then matmul). CUDA never takes that path.
def disable_cpu_4bit_repack(model: nn.Module) -> int:
    """Keep bitsandbytes' 4-bit weights as loaded on every CPU; returns how many layers were switched."""
    try:
        import bitsandbytes as bnb  # lazy: bitsandbytes loads a native library that may be missing; --bits 16 runs without it
    except Exception:
        return 0
    changed = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit) and getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False
            changed += 1
    return changed


def _training_matmul_on_cpu(module, args):
    # bitsandbytes 0.50 picks its CPU matmul from ``state.is_training``, which Linear8bitLt.forward
    # copies from ``module.training``: in train() it dequantizes the int8 weights and runs a plain
    # fp matmul (MatMul8bitFp), in eval() it also quantizes every activation to int8
    # (MatMul8bitLt), which on CPU is slower (no fast kernel) and less exact. Saying "training" for
    # CPU inputs makes evaluation compute the function training optimized. The layer has no
    # dropout or other train-mode behaviour, so nothing else changes; CUDA inputs keep
    # bitsandbytes' own int8 kernels.
    x = args[0] if args else None
    if torch.is_tensor(x) and x.device.type == "cpu" and not module.training:
        module.training = True


def dequantized_int8_on_cpu(model: nn.Module) -> int:
    """CPU evaluation of LLM.int8 layers through training's dequantizing matmul; returns how many layers.

    Numerically: eval's logits become those of the same weights in train mode (int8 weights
    dequantized, activations in full precision) instead of bitsandbytes' activation-quantized
    int8 product; tests/test_int8_eval.py checks both. ``--int8_cpu_eval bitsandbytes`` keeps
    bitsandbytes' own choice.
    """
    try:
        import bitsandbytes as bnb  # lazy: bitsandbytes loads a native library that may be missing; --bits 16 runs without it
    except Exception:
        return 0
    changed = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear8bitLt) and not getattr(module, "_llava_df_cpu_fp_eval", False):
            module.register_forward_pre_hook(_training_matmul_on_cpu)
            module._llava_df_cpu_fp_eval = True
            changed += 1
    return changed


# ---- training preparation -------------------------------------------------------------------
def _cast_inputs_fp32(module, args, kwargs):
    hidden = args[0] if args else kwargs.get("hidden_states")
    # Remember the stack's dtype (the incoming hidden states) to hand the output back in it.
    module._llava_df_out_dtype = hidden.dtype if torch.is_tensor(hidden) else None

    def cast(t):
        if isinstance(t, tuple):  # position_embeddings = (cos, sin)
            return tuple(cast(x) for x in t)
        return t.float() if torch.is_tensor(t) and t.is_floating_point() else t

    return tuple(cast(a) for a in args), {k: cast(v) for k, v in kwargs.items()}


def _cast_output_back(module, args, kwargs, output):
    dtype = module.__dict__.pop("_llava_df_out_dtype", None)
    if dtype is None:
        return output
    if torch.is_tensor(output):
        return output.to(dtype)
    if isinstance(output, tuple):
        return tuple(o.to(dtype) if torch.is_tensor(o) and o.is_floating_point() else o for o in output)
    return output


def make_fp32_island(layer: nn.Module) -> None:
    """Keep ``layer`` in fp32 and cast its inputs up and its output back to the stack's dtype.

    An unfrozen decoder layer trains in fp32 (HF Trainer keeps no fp32 master copy, and bf16
    weights lose updates smaller than 2^-8 of their value), while the frozen layers around it
    stay 16-bit. Without the casts the residual stream would turn fp32 after this layer and the
    next 16-bit Linear would refuse it (without autocast). Idempotent.
    """
    layer.float()
    if getattr(layer, "_llava_df_fp32_island", False):
        return
    layer.register_forward_pre_hook(_cast_inputs_fp32, with_kwargs=True)
    layer.register_forward_hook(_cast_output_back, with_kwargs=True)
    layer._llava_df_fp32_island = True


def enable_checkpointing(model: nn.Module, kwargs: dict) -> None:
    """Activation checkpointing with ``kwargs`` (use_reentrant), as Trainer.train() turns it on."""
    base = unwrap(model)
    if hasattr(base, "activation_checkpointing_enable"):  # transformers 5.x name; the old one warns
        base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def prepare_for_kbit_training(model: nn.Module, *, gradient_checkpointing: bool = False) -> nn.Module:
    """Make an already strategy-applied model ready to train, at any ``--bits``. Call once.

    Replaces ``peft.prepare_model_for_kbit_training``, which up-casts EVERY non-int8 parameter
    to fp32: embeddings, lm_head, norms and the whole frozen CLIP tower. On LLaVA-1.5-7B that is
    several GB more than the bf16 weights it replaces, enough that INT8+LoRA peaks higher than
    bf16 LoRA. What training actually needs is kept:
    - trainable parameters (LoRA, projector, unfrozen layers) in fp32, for optimizer precision;
      unfrozen decoder layers become fp32 islands (:func:`make_fp32_island`);
    - frozen parameters stay in their loaded 16-bit dtype (no gradient, so no precision need;
      Llama's RMSNorm already computes in fp32 internally, so norms need no up-cast either);
    - with gradient checkpointing: non-reentrant checkpointing plus input gradients on the
      embeddings (``enable_input_require_grads``), so checkpointed blocks whose inputs come from
      a frozen embedding still backpropagate to the LoRA weights inside them.
    """
    base = unwrap(model)
    layers = decoder_layers(base)
    for layer in layers:
        params = list(layer.parameters())
        if params and all(p.requires_grad for p in params):
            make_fp32_island(layer)
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
    if gradient_checkpointing:
        enable_checkpointing(base, {"use_reentrant": False})
        if getattr(base, "_require_grads_hook", None) is None:  # 5.x already added it above
            base.enable_input_require_grads()
        base.config.use_cache = False  # the KV cache is useless in training and conflicts with checkpointing
    return model
