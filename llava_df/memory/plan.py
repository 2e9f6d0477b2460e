"""The memory plan of a training config: both methods side by side, as a dict or as text.

How to call::

    plan = make_plan(["--config", "configs/llava15_7b_12-16gb_lora.yaml"], target="cuda")
    plan["dry_run"]["peak_bytes"], plan["estimate"]["peak_bytes"]
    print(format_plan(plan))

``argv`` is a training command line (``python -m llava_df.train``'s flags, ``--config`` included);
output paths and data are not needed. ``--bf16``/``--fp16`` are planned on any machine (the plan
parses them as for a CPU run, which transformers allows, and predicts for ``target``).
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

from llava_df.errors import UsageError
from llava_df.memory.dryrun import TARGETS, dry_run, model_dtype
from llava_df.memory.estimate import _optim_name, estimate
from llava_df.memory.shapes import checkpoint_max_length, plan_config
from llava_df.model.build import projector_dims
from llava_df.spec.ranges import check_projector_size
from llava_df.spec.resolve import parse_spec

GIB = 2**30
MIB = 2**20
SHORT_DTYPES = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}


def parse_plan_args(argv: list[str]):
    """The RunSpec of a plan: the training parser, on a machine that may not have the target GPU."""

    argv = list(argv)
    if "--output_dir" not in argv and not any(a.startswith("--output_dir=") for a in argv):
        argv += ["--output_dir", "/nonexistent/llava_df_plan"]  # a plan writes nothing
    # transformers refuses --bf16 without a GPU unless the run is on CPU; a plan computes nothing, so say CPU.
    argv += ["--use_cpu", "true", "--report_to", "none"]
    return parse_spec(argv)


def make_plan(argv: list[str], *, target: str = "cuda", seq_len: int | None = None, text_tokens: int = 48,
              dry: bool = True) -> dict:  # fmt: skip
    """The plan of a training command line; see :func:`plan_spec`."""
    return plan_spec(parse_plan_args(argv), target=target, seq_len=seq_len, text_tokens=text_tokens, dry=dry)


def plan_spec(spec, *, target: str = "cuda", seq_len: int | None = None, text_tokens: int = 48,
                dry: bool = True) -> dict:  # fmt: skip
    """{"settings", "estimate": {...}, "dry_run": {...} | None, "notes": [...]}; bytes throughout.

    ``seq_len``: tokens per sample (image + text), e.g. the collator's length on the real data;
    default: the config's image tokens + ``text_tokens``.
    """

    if target not in TARGETS:
        raise UsageError(f"--target {target!r}: expected one of {', '.join(TARGETS)}.")
    config, notes = plan_config(spec.model)  # every size checked, nothing built yet
    # The projector's size cap of training (--allow_large_projector lifts it), from a formula: before
    # the dry run builds anything.
    check_projector_size(spec, projector_dims(config))
    n_image = config.image_seq_length
    if seq_len is None:
        seq_len = n_image + text_tokens
        given = "model_max_length" in spec.explicit
        if not given:  # the checkpoint's length, as it was trained (training passes seq_len: its own)
            spec = _with_max_length(spec, *checkpoint_max_length(config, _folder(spec.model)), notes)
        if spec.training.model_max_length < seq_len:
            source = "" if given else " (not given: the checkpoint's default)"
            raise UsageError(
                f"--model_max_length {spec.training.model_max_length}{source} is shorter than the {n_image} image "
                f"tokens + {text_tokens} text tokens of a sample; training would cut the answer off. Use "
                f"--model_max_length >= {seq_len} (LLaVA-1.5 uses 2048)."
            )
    if seq_len <= n_image:
        raise UsageError(f"sequence length {seq_len}: expected more than the {n_image} image tokens.")
    result = {
        "target": target,
        "model": spec.model.model_name_or_path,
        "settings": _settings(spec, config, seq_len),
        "estimate": estimate(spec, config, target=target, seq_len=seq_len),
        "dry_run": None,
        "notes": notes,
    }
    if dry:
        run = dry_run(spec, config, target=target, text_tokens=seq_len - n_image)
        result["dry_run"] = dataclasses.asdict(run) | {"weights_bytes": run.weights_bytes}
    return result


def _folder(model_args) -> Path | None:
    """The local checkpoint (or LLM) folder --model_name_or_path names, if it is one."""
    path = Path(model_args.model_name_or_path).expanduser()
    return path if path.is_dir() else None


def _with_max_length(spec, tokens: int, why: str, notes: list[str]):
    """``spec`` with --model_max_length ``tokens`` (a copy; the caller's is unchanged), noted."""
    default = type(spec.training).model_max_length
    if tokens == default:
        return spec
    training = copy.copy(spec.training)
    training.model_max_length = tokens
    notes.append(
        f"--model_max_length not given: planned with {tokens} ({why}); training's default is {default}, so "
        f"pass --model_max_length {tokens} to train as planned (--budget's YAML carries it)"
    )
    return dataclasses.replace(spec, training=training)


def predicted_peak(plan: dict) -> tuple[int, str]:
    """(bytes, method): the dry run's peak when it ran, else the closed form's."""
    if plan.get("dry_run"):
        return plan["dry_run"]["peak_bytes"], "dry run"
    return plan["estimate"]["peak_bytes"], "closed form"


def compact(plan: dict | None) -> dict | None:
    """What results.json keeps of a plan: the predicted peaks (MiB), target, phase and sequence length."""
    if plan is None:
        return None
    peak, method = predicted_peak(plan)
    dry = plan.get("dry_run")
    return {
        "target": plan["target"],
        "predicted_peak_mb": peak / MIB,
        "method": method,
        "closed_form_peak_mb": plan["estimate"]["peak_bytes"] / MIB,
        "dry_run_peak_mb": dry["peak_bytes"] / MIB if dry else None,
        "peak_phase": (dry or plan["estimate"])["peak_phase"],
        "seq_len": plan["settings"]["seq_len"],
        "counts": "tensor bytes (weights, gradients, optimizer states, activations, temporaries); "
        "compare with CUDA max_memory_allocated, not with process RSS",
    }


def _settings(spec, config, seq_len: int) -> dict:

    dtype = model_dtype(spec, config)
    m, t = spec.model, spec.training
    return {
        "strategy": spec.strategy,
        "projector": m.mm_projector_type,
        "bits": int(m.bits),
        "dtype": SHORT_DTYPES.get(str(dtype).removeprefix("torch."), str(dtype)),
        "batch_size": t.per_device_train_batch_size,
        "gradient_accumulation_steps": t.gradient_accumulation_steps,
        "seq_len": seq_len,
        "model_max_length": t.model_max_length,
        "gradient_checkpointing": spec.checkpointing,
        "optim": _optim_name(t.optim),
        "lora_r": m.lora_r,
        "lora_dropout": m.lora_dropout,
        "lora_target_modules": m.lora_target_modules,
        "num_unfreeze_early_layers": m.num_unfreeze_early_layers,
    }


def _gib(n: float) -> str:
    return f"{n / GIB:.2f} GiB" if n >= GIB / 4 else f"{n / MIB:.1f} MiB"


def format_plan(plan: dict) -> str:
    """The plan as the text ``python -m llava_df.memory plan`` prints."""
    s, est, dry = plan["settings"], plan["estimate"], plan["dry_run"]
    lines = [
        f"memory plan for {plan['model']} on {plan['target']}: {s['strategy']}, {s['projector']}, {s['bits']}-bit, "
        f"{s['dtype']}, batch {s['batch_size']} x seq {s['seq_len']}, checkpointing {s['gradient_checkpointing']}, "
        f"{s['optim']}" + (f", LoRA r {s['lora_r']}" if s["strategy"] != "projector_only" else ""),
    ]
    cols = [("dry run", dry), ("closed form", est)] if dry else [("closed form", est)]
    header = f"  {'':34s}" + "".join(f"{name:>16s}" for name, _ in cols)
    lines.append(header)

    def row(label: str, key) -> None:
        values = [key(r) for _, r in cols]
        lines.append(f"  {label:34s}" + "".join(f"{_gib(v):>16s}" for v in values))

    for comp in ("vision_tower", "projector", "llm"):
        dtypes = ""
        if dry:
            held = dry["weights"][comp]["dtypes"]
            dtypes = " " + "+".join(
                SHORT_DTYPES.get(d, d) for d in sorted(held, key=lambda d: -held[d]) if held[d] > 4096
            )
        row(
            f"weights: {comp}{dtypes}",
            lambda r, c=comp: (
                r["weights"][c]["bytes"] if isinstance(r["weights"][c], dict) else r["weights"][c]
            ),
        )
    lines.append(
        f"  {'trainable parameters':34s}" + "".join(f"{r['trainable_params'] / 1e6:>15.1f}M" for _, r in cols)
    )
    row("  of which trainable (fp32)", lambda r: r["trainable_bytes"])
    row("gradients alive at the peak", lambda r: r["grads_bytes"])
    row("optimizer states", lambda r: r["optimizer_bytes"])
    row("activations saved for backward", lambda r: r["activations_bytes"])
    row("temporaries at the peak", lambda r: r["temporaries_bytes"])
    row("PEAK", lambda r: r["peak_bytes"])
    lines.append(f"  {'phase of the peak':34s}" + "".join(f"{r['peak_phase']:>16s}" for _, r in cols))
    if dry:
        lines.append(
            f"  dry run: {dry['seconds']:.1f} s on meta tensors, 2 optimizer steps of the real training code"
        )
    lines.append(
        "  not included: the CUDA context and kernels (~0.3-0.5 GiB) and the caching allocator's reserve "
        "(reserved - allocated); plan a margin (see --margin)."
    )
    for note in plan["notes"]:
        lines.append(f"  note: {note}")
    return "\n".join(lines)
