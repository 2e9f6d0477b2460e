"""Dry run: the real training step of a config on the meta device, with live storage tracked.

How to call::

    plan = dry_run(spec, target="cuda")     # spec: llava_df.spec.RunSpec; no GPU, no weights
    plan.peak_bytes, plan.breakdown, plan.peak_phase

What runs is what ``python -m llava_df.train`` builds, in the same order: transformers'
``LlavaForConditionalGeneration`` from the config, bitsandbytes' own Linear8bitLt / Linear4bit
(transformers' ``replace_with_bnb_linear`` with train's skip list, weights quantized by
bitsandbytes' ``_quantize``), the projector swap, the strategy (PEFT, freezing, fp32 trainables,
checkpointing), the Trainer's optimizer class and kwargs, then two optimizer steps (forward, loss,
backward, step, zero_grad: the second step is the steady state, optimizer states allocated).
Everything lives on the meta device, so nothing is computed or allocated; the
:class:`~llava_df.memory.tracker.MetaStorageTracker` counts what would be.

``target``: the device whose kernels to emulate where meta differs from it:
- ``cuda``: bitsandbytes' CUDA int8 path (MatMul8bitLt: its input kept as fp16 on ctx); fused
  dropout (1-byte mask); AdamW with ``foreach`` (CUDA's default: whole-list temporaries).
- ``cpu``: bitsandbytes' CPU path (MatMul8bitFp: input on ctx + a dequantized weight per
  matmul); dropout's full-size mask; single-tensor AdamW.
Not emulated (said in the plan's assumptions): autocast (Trainer's --bf16/--fp16 mixed
precision), allocator overhead (CUDA caching and fragmentation), CUDA context and kernels.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from dataclasses import dataclass

import torch
from torch import nn
from transformers import BitsAndBytesConfig, LlavaForConditionalGeneration, Trainer
from transformers.integrations.bitsandbytes import replace_with_bnb_linear

from llava_df.memory.tracker import MetaStorageTracker, cuda_dropout, flash_sdpa
from llava_df.model.anatomy import component_paths, unwrap
from llava_df.model.build import swap_projector
from llava_df.model.quantization import enable_checkpointing, quantization_config, skip_modules, validate_bits
from llava_df.model.strategies import apply_strategy

TARGETS = ("cuda", "cpu")


@dataclass
class DryRun:
    target: str
    peak_bytes: int
    peak_phase: str
    weights: dict[str, dict]  # component -> {"bytes": int, "dtypes": {dtype: bytes}}
    trainable_params: int
    trainable_bytes: int
    grads_bytes: int
    optimizer_bytes: int
    activations_bytes: int  # saved for backward (alive when backward starts) and alive at the peak
    temporaries_bytes: int  # the rest of what is alive at the peak
    phase_peaks: dict[str, int]
    seq_len: int
    batch_size: int
    seconds: float
    data_reads: int

    @property
    def weights_bytes(self) -> int:
        return sum(c["bytes"] for c in self.weights.values())


# ---- the model, without weights -------------------------------------------------------------
def model_dtype(spec, config) -> torch.dtype:
    """The dtype of the unquantized weights: --bf16/--fp16, else the checkpoint's own (from_pretrained's
    dtype="auto": fp16 for llava-hf/llava-1.5-7b-hf), else fp32 (the tiny preset)."""
    t = spec.training
    if t.bf16:
        return torch.bfloat16
    if t.fp16:
        return torch.float16
    saved = getattr(config, "dtype", None)
    if isinstance(saved, str):
        saved = getattr(torch, saved, None)
    return saved if isinstance(saved, torch.dtype) else torch.float32


def _quantize_linears(model: nn.Module, bits: int, skip: list[str], model_args, compute_dtype) -> None:
    """transformers' replacement of nn.Linear by bitsandbytes modules, then bitsandbytes' own quantization."""
    import bitsandbytes as bnb  # lazy: bitsandbytes loads a native library that may be missing; --bits 16 runs without it

    q = quantization_config(
        bits,
        skip=skip,
        compute_dtype=compute_dtype,
        double_quant=model_args.double_quant,
        quant_type=model_args.quant_type,
    )
    assert isinstance(q, BitsAndBytesConfig)
    with torch.device("meta"):
        replace_with_bnb_linear(model, modules_to_not_convert=skip, quantization_config=q)
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear8bitLt):
            w = torch.empty(module.weight.shape, dtype=torch.float16, device="meta")
            module.weight = bnb.nn.Int8Params(w, requires_grad=False, has_fp16_weights=False)._quantize(
                "meta"
            )
        elif isinstance(module, bnb.nn.Linear4bit):
            w = torch.empty(module.weight.shape, dtype=compute_dtype, device="meta")
            module.weight = bnb.nn.Params4bit(
                w,
                requires_grad=False,
                quant_type=q.bnb_4bit_quant_type,
                compress_statistics=q.bnb_4bit_use_double_quant,
                module=module,
            )._quantize("meta")
            module.compute_dtype = compute_dtype


def build_meta_model(spec, config, *, verbose: bool = False) -> nn.Module:
    """The model train would build for ``spec``, on the meta device, strategy applied."""

    m, t = spec.model, spec.training
    strategy = spec.strategy
    bits = validate_bits(m.bits)
    dtype = model_dtype(spec, config)
    config = copy.deepcopy(config)
    config._attn_implementation = "sdpa"  # what from_pretrained picks where flash-attn is not installed
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    model.to(dtype)
    if bits < 16:
        skip = skip_modules(config, m.num_unfreeze_early_layers if strategy == "unfreeze_early" else 0)
        _quantize_linears(model, bits, skip, m, dtype)
    try:  # on meta: nothing allocated at any width
        with torch.device("meta"):
            swap_projector(model, m.mm_projector_type)
    except (RuntimeError, NotImplementedError):
        # A KAN fits its spline coefficients to values when it is built (least squares), which
        # meta tensors cannot compute: built on CPU, then moved to meta. Its size is bounded by
        # training's cap (validation.check_projector_size), which plan_spec checks first.
        swap_projector(model, m.mm_projector_type)
    model = apply_strategy(
        model, m, spec.strategy, gradient_checkpointing=bool(t.activation_checkpointing), verbose=verbose
    )
    if t.activation_checkpointing:  # what Trainer.train() then does with the run's kwargs
        enable_checkpointing(model, t.activation_checkpointing_kwargs or {"use_reentrant": False})
    model.train()
    return model


# ---- bookkeeping ----------------------------------------------------------------------------
def _tensors_of(module: nn.Module):
    """Every tensor a module holds: parameters, buffers and bitsandbytes' quantization constants."""
    yield from module.parameters(recurse=False)
    yield from module.buffers(recurse=False)
    weight = getattr(module, "weight", None)
    scb = getattr(weight, "SCB", None)
    if isinstance(scb, torch.Tensor):
        yield scb
    state = getattr(weight, "quant_state", None)
    while state is not None:
        for name in ("absmax", "code", "offset"):
            value = getattr(state, name, None)
            if isinstance(value, torch.Tensor):
                yield value
        state = getattr(state, "state2", None)


def weights_by_component(model: nn.Module) -> dict[str, dict]:
    """{component: {"bytes", "dtypes"}} for vision_tower / projector / llm (embeddings, layers, lm_head)."""
    base = unwrap(model)
    paths = component_paths(base)
    order = [(paths["vision_tower"], "vision_tower"), (paths["projector"], "projector")]
    seen: set[int] = set()
    out: dict[str, dict] = {c: {"bytes": 0, "dtypes": {}} for c in ("vision_tower", "projector", "llm")}
    for name, module in base.named_modules():
        component = next((c for p, c in order if name == p or name.startswith(p + ".")), "llm")
        for t in _tensors_of(module):
            storage = t.untyped_storage()
            if id(storage) in seen:
                continue
            seen.add(id(storage))
            size = storage.nbytes()
            out[component]["bytes"] += size
            key = str(t.dtype).removeprefix("torch.")
            out[component]["dtypes"][key] = out[component]["dtypes"].get(key, 0) + size
    return out


# ---- the step -------------------------------------------------------------------------------
# --answer_logits_only: the window the collator keeps (llava_df.data.collator): the logit before the
# answer, the answer word and EOS.
ANSWER_WINDOW = 3


def answer_window(spec) -> int | None:
    """The logits positions per sample a run keeps (None: all of them)."""
    return ANSWER_WINDOW if getattr(spec.data, "answer_logits_only", False) else None


def meta_batch(
    config, batch_size: int, text_tokens: int, model_max_length: int, window: int | None = None
) -> tuple[dict, int]:
    """A training batch of the right shapes: image tokens + text, the answer's tokens labelled; with
    ``window`` (answer_window), the LM head's positions and the labels cut to the answer's window."""
    vision = config.vision_config
    n_image = config.image_seq_length
    seq = min(model_max_length, n_image + text_tokens)
    ids = torch.empty((batch_size, seq), dtype=torch.long, device="meta")
    batch = {
        "input_ids": ids,
        "attention_mask": torch.empty((batch_size, seq), dtype=torch.long, device="meta"),
        "labels": torch.empty((batch_size, seq), dtype=torch.long, device="meta"),
        "pixel_values": torch.empty(
            (batch_size, vision.num_channels, vision.image_size, vision.image_size),
            dtype=torch.float32,
            device="meta",
        ),
    }
    if window is not None:
        batch["labels"] = torch.empty((batch_size, window), dtype=torch.long, device="meta")
        batch["logits_to_keep"] = torch.arange(seq - window, seq, device="meta")
    return batch, seq


def _optimizer(spec, model: nn.Module, target: str):
    """The optimizer the Trainer would create (its class and kwargs), over the trainable parameters."""

    cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(spec.training, model)
    if kwargs.get("fused"):
        # Meta has no fused kernel. The fused step keeps nothing beyond the states; the single-tensor
        # loop comes closest (one parameter's temporaries at a time).
        kwargs.update(fused=False, foreach=False)
    elif (
        issubclass(cls, torch.optim.Optimizer)
        and cls.__module__.startswith("torch.")
        and "foreach" not in kwargs
    ):
        kwargs["foreach"] = target == "cuda"  # torch's own default on each device
    params = [p for p in model.parameters() if p.requires_grad]
    return cls([{"params": params, "weight_decay": spec.training.weight_decay}], **kwargs)


@contextlib.contextmanager
def _target_kernels(target: str):
    """Make meta take the target's kernel paths where they differ (see the module docstring)."""
    with contextlib.ExitStack() as stack:
        if target == "cuda":
            stack.enter_context(cuda_dropout())
        else:
            try:
                import bitsandbytes.autograd._functions as bnb_functions  # lazy: bitsandbytes loads a native library that may be missing; --bits 16 runs without it
            except ImportError:
                bnb_functions = None
            # bnb picks MatMul8bitFp for cpu/xpu tensors, MatMul8bitLt otherwise (meta included)
            if bnb_functions is not None:
                original = bnb_functions.MatMul8bitLt
                bnb_functions.MatMul8bitLt = bnb_functions.MatMul8bitFp
                stack.callback(setattr, bnb_functions, "MatMul8bitLt", original)
        yield


def dry_run(spec, config, *, target: str = "cuda", text_tokens: int = 48, steps: int = 2) -> DryRun:
    """Run ``steps`` training steps of ``spec`` on meta tensors; see the module docstring."""
    if target not in TARGETS:
        raise ValueError(f"target {target!r}: expected one of {TARGETS}")
    start = time.time()
    logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)
    model = build_meta_model(spec, config)
    t = spec.training
    batch, seq = meta_batch(
        config, t.per_device_train_batch_size, text_tokens, t.model_max_length, window=answer_window(spec)
    )
    optimizer = _optimizer(spec, model, target)
    with _target_kernels(target), flash_sdpa(), MetaStorageTracker() as tracker:
        fields = tracked_steps(
            model, batch, optimizer, tracker, steps=steps, accumulation=t.gradient_accumulation_steps
        )
    return DryRun(
        target=target, **fields, seq_len=seq, batch_size=t.per_device_train_batch_size,
        seconds=time.time() - start, data_reads=tracker.data_reads,
    )  # fmt: skip


def tracked_steps(
    model: nn.Module, batch: dict, optimizer, tracker, *, steps: int, accumulation: int = 1, autocast=None
) -> dict:
    """``steps`` optimizer steps of ``model`` on ``batch`` inside ``tracker`` (entered by the caller), and what
    was alive at the peak by category: DryRun's fields from ``peak_bytes`` to ``phase_peaks``. The dry run
    runs it on meta tensors; llava_df.memory.measure on real CPU ones. ``autocast``: a context manager
    entered around each forward (the Trainer's --bf16 on CPU), or None."""
    weights = weights_by_component(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    grad_ids: set[int] = set()
    state_ids: set[int] = set()
    saved: set[int] = set()  # forward allocations still alive when backward starts: saved for backward
    # the weights exist before the step: views of them are not new memory
    tracker.ignore(x for module in model.modules() for x in _tensors_of(module))
    for _ in range(steps):
        # Two micro-batches show what accumulation adds (gradients held across them); more repeat it.
        for _micro in range(min(2, max(1, accumulation))):
            tracker.phase = "forward"
            with autocast if autocast is not None else contextlib.nullcontext():
                loss = model(**batch).loss
            saved |= tracker.live_serials("forward")
            tracker.phase = "backward"
            loss.backward()
            del loss
        grad_ids |= tracker.serials(p.grad for p in trainable if p.grad is not None)
        tracker.phase = "optimizer"
        optimizer.step()
        state_ids |= tracker.serials(v for state in optimizer.state.values() for v in state.values())
        optimizer.zero_grad(set_to_none=True)
    at_peak = tracker.at_peak.values()
    grads = sum(size for size, _, serial in at_peak if serial in grad_ids)
    states = sum(size for size, _, serial in at_peak if serial in state_ids)
    activations = sum(size for size, _, serial in at_peak if serial in saved)
    dynamic = tracker.peak
    weights_total = sum(c["bytes"] for c in weights.values())
    return dict(
        peak_bytes=weights_total + dynamic,
        peak_phase=tracker.peak_phase,
        weights=weights,
        trainable_params=sum(p.numel() for p in trainable),
        trainable_bytes=sum(p.numel() * p.element_size() for p in trainable),
        grads_bytes=grads,
        optimizer_bytes=states,
        activations_bytes=activations,
        temporaries_bytes=dynamic - grads - states - activations,
        phase_peaks={k: weights_total + v for k, v in tracker.phase_peaks.items()},
    )
