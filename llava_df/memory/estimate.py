"""Closed-form memory estimate: per-layer formulas, no model built. Answers in milliseconds.

How to call::

    est = estimate(spec, config, target="cuda", seq_len=624)
    est["peak_bytes"], est["breakdown"]

It counts what the dry run (``dryrun.py``) measures on the real code, term by term, so the two can
be compared (``tests/test_memory.py`` does, over the tiny grid and LLaVA-1.5-7B configs). Symbols:
b batch, s sequence (image tokens + text), H / I / kv LLM hidden / MLP / key-value widths, V vocab,
e the LLM's activation bytes (2 for bf16/fp16, 4 for fp32).

Saved for backward by one frozen Llama decoder layer (the input needs a gradient: the projector
before it trains):
- RMSNorm x2: its fp32 input (a copy when e < 4, the residual itself when e == 4): 8bsH;
- attention (fused SDPA): rotated q and k, v, the output (e(2bsH + 2bs kv)) + log-sum-exp (4 b heads s);
- MLP: silu's input, its output and up's output: 3e bsI;
- frozen 16-bit / NF4 linears keep no input (the weight is all they need for the input's
  gradient); LLM.int8 keeps each matmul's input on its autograd ctx: e(3bsH + bsI) more;
- LoRA keeps its own copy of each adapted module's input (fp32 when the LLM is 16-bit: PEFT casts it
  to the adapter's dtype), and its dropout a mask (CUDA: 1 byte per element; CPU: a full tensor)
  plus the dropped-out copy; lora_A's output (bsr).
- an unfrozen (fp32) layer: the same with e = 4 plus every linear's input.
Checkpointing keeps each layer's input (e bsH) instead, and recomputes one layer at a time in
backward; non-reentrant checkpointing cannot free what LLM.int8 holds on its ctx
(results/gradient_checkpointing.md). The loss: fp32 log-softmax of the logits, its gradient and the
gradient of the logits, 12 bsV, at the start of backward, where the peak usually is.
"""

from __future__ import annotations

from llava_df.memory.dryrun import answer_window, model_dtype
from llava_df.model.build import projector_dims
from llava_df.model.strategies import lora_targets
from llava_df.projectors.registry import count_parameters

ADAM_STATE_BYTES = {
    "adamw_bnb_8bit": 2,
    "adamw_8bit": 2,
    "paged_adamw_8bit": 2,
    "lion_8bit": 1,
    "paged_lion_8bit": 1,
}


def _optim_name(optim) -> str:
    return getattr(optim, "value", str(optim)).lower()


def optimizer_state_bytes(optim) -> int:
    """Bytes of optimizer state per trained parameter: AdamW 8 (two fp32 moments), 8-bit AdamW 2."""
    name = _optim_name(optim)
    if name in ADAM_STATE_BYTES:
        return ADAM_STATE_BYTES[name]
    if name in ("sgd",):
        return 0
    if "lion" in name or name == "adafactor":
        return 4
    return 8


def _linear_shapes(text) -> dict[str, tuple[int, int]]:
    h = text.hidden_size
    heads = text.num_attention_heads
    hd = getattr(text, "head_dim", None) or h // heads
    kv = (getattr(text, "num_key_value_heads", None) or heads) * hd
    i = text.intermediate_size
    return {
        "q_proj": (h, heads * hd), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (heads * hd, h),
        "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h),
    }  # fmt: skip


def _weight_bytes(n_in: int, n_out: int, bits: int, e: int, double_quant: bool) -> float:
    n = n_in * n_out
    if bits == 8:
        return n + 4 * n_out  # int8 + one fp32 scale per output row (SCB)
    if bits == 4:  # NF4: half a byte + an absmax per 64 (uint8 + fp32 per 256 blocks when double-quantized)
        return n / 2 + (n / 64 + 4 * n / 64 / 256 if double_quant else 4 * n / 64)
    return e * n


def _params(config) -> dict[str, int]:
    """Parameter counts of the frozen parts, by component, from the config alone."""
    v, t = config.vision_config, config.text_config
    hv, lv = v.hidden_size, v.num_hidden_layers
    # CLIP names its MLP width; DINOv2 (the smol preset's tower) gives a ratio and adds a layer scale
    # per residual branch (2 x hidden per layer) and a mask token.
    iv = getattr(v, "intermediate_size", None) or int(hv * v.mlp_ratio)
    extra = lv * 2 * hv + hv if v.model_type == "dinov2" else 0
    patches = (v.image_size // v.patch_size) ** 2
    vision = (
        3 * v.patch_size**2 * hv + (patches + 1) * hv + hv  # patch conv, positions, class embedding
        + 2 * hv * 2  # pre and post layernorm
        + lv * (4 * (hv * hv + hv) + 2 * hv * iv + iv + hv + 4 * hv)
        + extra
    )  # fmt: skip
    h, layers = t.hidden_size, t.num_hidden_layers
    linear = sum(a * b for a, b in _linear_shapes(t).values())
    return {"vision": vision, "layer_linear": linear, "layer_norms": 2 * h, "layers": layers,
            "embed": t.vocab_size * h, "lm_head": 0 if getattr(config, "tie_word_embeddings", False) else t.vocab_size * h,
            "final_norm": h}  # fmt: skip


def estimate(
    spec, config, *, target: str = "cuda", seq_len: int | None = None, text_tokens: int = 48
) -> dict:
    """The closed-form plan, in bytes: the peak, its phase and the same breakdown keys as the dry run."""

    m, tr = spec.model, spec.training
    strategy = spec.strategy
    bits = int(m.bits)
    e = model_dtype(spec, config).itemsize
    t = config.text_config
    b = tr.per_device_train_batch_size
    s = seq_len or min(tr.model_max_length, config.image_seq_length + text_tokens)
    h, i, vocab, heads, layers = (
        t.hidden_size,
        t.intermediate_size,
        t.vocab_size,
        t.num_attention_heads,
        t.num_hidden_layers,
    )
    shapes = _linear_shapes(t)
    kv = shapes["k_proj"][1]
    n_unfrozen = m.num_unfreeze_early_layers if strategy == "unfreeze_early" else 0
    lora_layers = {"lora": layers, "unfreeze_early": layers - n_unfrozen}.get(strategy, 0)
    targets = [x for x in lora_targets(m) if x in shapes] if lora_layers else []
    r = m.lora_r

    # ---- weights ----
    p = _params(config)
    in_dim, out_dim = projector_dims(config)
    proj = count_parameters(m.mm_projector_type, in_dim, out_dim)
    frozen_layers = layers - n_unfrozen
    llm = (
        frozen_layers * sum(_weight_bytes(a, c, bits, e, m.double_quant) for a, c in shapes.values())
        + frozen_layers * p["layer_norms"] * e
        + n_unfrozen * (p["layer_linear"] + p["layer_norms"]) * 4  # fp32 islands
        + (p["embed"] + p["lm_head"] + p["final_norm"]) * e
    )
    lora_params = lora_layers * sum(r * (shapes[x][0] + shapes[x][1]) for x in targets)
    trainable = proj + lora_params + n_unfrozen * (p["layer_linear"] + p["layer_norms"])
    weights = {"vision_tower": p["vision"] * e, "projector": proj * 4, "llm": llm + lora_params * 4}

    # ---- activations saved for backward, per layer ----
    bs = b * s
    lse = 4 * b * heads * s

    def frozen_layer(act: int, int8: bool) -> float:
        saved = 8 * bs * h + act * (2 * bs * h + 2 * bs * kv) + 3 * act * bs * i + lse
        if int8:
            saved += act * (3 * bs * h + bs * i)
        return saved

    inputs = {
        "q_proj": "n1",
        "k_proj": "n1",
        "v_proj": "n1",
        "o_proj": "attn",
        "gate_proj": "n2",
        "up_proj": "n2",
        "down_proj": "prod",
    }
    width = {"n1": h, "attn": h, "n2": h, "prod": i}

    def lora_extra(int8: bool) -> float:
        if not targets:
            return 0.0
        extra = len(targets) * 4 * bs * r  # lora_A's output, saved by lora_B
        if m.lora_dropout > 0:  # per module: the mask (CUDA bool, else fp32) + the dropped-out copy
            mask = 1 if target == "cuda" else 4
            return extra + sum((mask + 4) * bs * width[inputs[x]] for x in targets)
        if e < 4:  # per module: PEFT's fp32 cast of the input, which lora_A keeps
            return extra + sum(4 * bs * width[inputs[x]] for x in targets)
        if int8:  # the input itself, already kept by LLM.int8
            return extra
        return extra + sum(e * bs * width[k] for k in {inputs[x] for x in targets})  # once per distinct input

    layer_frozen = frozen_layer(e, bits == 8) + lora_extra(bits == 8)
    layer_unfrozen = frozen_layer(4, False) + 4 * (3 * bs * h + bs * i) + 4 * bs * h
    ckpt = bool(tr.activation_checkpointing)
    reentrant = bool((tr.activation_checkpointing_kwargs or {}).get("use_reentrant", False))
    if ckpt:
        kept = e * bs * h + (e * (3 * bs * h + bs * i) if bits == 8 and not reentrant else 0)
        saved = frozen_layers * kept + n_unfrozen * 4 * bs * h
        recompute = max(layer_frozen, layer_unfrozen if n_unfrozen else 0)
    else:
        saved = frozen_layers * layer_frozen + n_unfrozen * layer_unfrozen
        recompute = 0
    # vision -> projector -> embeddings: the projector keeps its input and hidden activations (fp32)
    n_img = config.image_seq_length
    saved += 4 * b * n_img * in_dim + 2 * 4 * b * n_img * out_dim + 4 * bs * h  # + the final norm's input
    loss = 12 * b * (answer_window(spec) or s) * vocab  # logits and the loss's fp32 copies, where kept

    per_param = optimizer_state_bytes(tr.optim)
    layer_grads = e * (3 * bs * i + 2 * bs * h)  # gradients of gate/up/act and of the hidden state, transient
    states = trainable * per_param
    if per_param < 8 and _optim_name(tr.optim) not in ("sgd",):
        # bitsandbytes keeps 32-bit state for tensors under 4096 elements (min_8bit_size): small LoRA
        # matrices (r x width < 4096) and biases; the blockwise absmax adds 8 bytes per 256 elements
        small = lora_layers * sum(
            n for x in targets for n in (r * shapes[x][0], r * shapes[x][1]) if n < 4096
        )
        states += small * (8 - per_param) + (trainable - small) * 8 / 256
    grads = trainable * 4
    held = grads if max(1, tr.gradient_accumulation_steps) > 1 else 0  # accumulated across micro-batches
    phases = {
        # the larger of: the start of backward (everything saved + the loss's gradients, or, with
        # checkpointing, one layer recomputed) and the first layer's backward, last (nearly every
        # gradient exists, that layer's activations are alive, its MLP and hidden-state gradients
        # in flight)
        "backward": max(
            states + held + saved + max(loss, recompute + layer_grads),
            states
            + grads
            + layer_grads
            + (recompute if ckpt else (layer_unfrozen if n_unfrozen else layer_frozen)),
        ),
        # unfused torch AdamW (--optim adamw_torch) runs foreach on CUDA: whole-list temporaries, about
        # one more gradient set; the fused default (adamw_torch_fused) and bitsandbytes' keep none
        "optimizer": states
        + grads
        + (grads if target == "cuda" and _optim_name(tr.optim) == "adamw_torch" else 0),
    }
    phase = max(phases, key=phases.get)
    weights_total = sum(weights.values())
    peak = weights_total + phases[phase]
    in_backward = phase == "backward"
    grads_at_peak = held if in_backward else grads
    activations = saved if in_backward else 0
    return {
        "peak_bytes": int(peak),
        "peak_phase": phase,
        "seq_len": s,
        "batch_size": b,
        "weights": {k: int(v) for k, v in weights.items()},
        "trainable_params": int(trainable),
        "trainable_bytes": int(trainable * 4),
        "grads_bytes": int(grads_at_peak),
        "optimizer_bytes": int(states),
        "activations_bytes": int(activations),
        "temporaries_bytes": int(phases[phase] - states - grads_at_peak - activations),
    }
