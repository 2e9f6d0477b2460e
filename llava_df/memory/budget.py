"""``--budget``: the configurations of a training setup that fit a GPU, fastest first, as --config YAML.

How to call::

    fits = search(argv, budget_bytes=24 * 2**30, margin=0.1, target="cuda")
    fits["candidates"][0]["yaml"]

What it varies (the strategy and projector are the experiment, so they stay):
- micro-batch and gradient accumulation, keeping the effective batch (batch x accumulation);
- gradient checkpointing: off, reentrant, non-reentrant;
- the optimizer: the one asked for, then 8-bit AdamW (2 bytes of state per parameter, not 8);
- bits: the ones asked for, then 8 and 4;
- LoRA r: the one asked for, then halves down to 8 (only where LoRA trains);
Not varied: the sequence length. Every sample is the image tokens (576 for LLaVA-1.5) plus a
prompt and answer of a few dozen tokens; ``--model_max_length`` only caps it, and a cap below
that would cut the answer off (the plan refuses it). Resolution, which sets the image tokens, is
the checkpoint's (its tower's position embeddings), so it is a different model, not a knob:
plan it with that checkpoint's config.json (benchmarks/memory_claims.py does for 448/384/336 px).

Every candidate is scored by the closed form (milliseconds); the best that fit under
``budget x (1 - margin)`` are then checked with the dry run. Speed order (a heuristic, not a
measurement; said with the result): each recomputation pass of checkpointing costs about a third
of a step; quantized matmuls are slower than 16-bit ones (INT8 x1.5, NF4 x1.3); a micro-batch
below 4 leaves the GPU partly idle; settings that change the experiment (bits, r) rank after those
that do not.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import sys

import yaml
from tqdm import tqdm

from llava_df.errors import UsageError
from llava_df.memory.estimate import estimate
from llava_df.memory.plan import make_plan, parse_plan_args
from llava_df.memory.shapes import plan_config

GIB = 2**30
BITS_COST = {16: 1.0, 8: 1.5, 4: 1.3}
EIGHT_BIT_ADAM = "adamw_bnb_8bit"


def _speed_cost(c: dict) -> float:
    """Relative time per sample (lower is faster); see the module docstring."""
    ckpt = {"off": 1.0, "reentrant": 1.33, "non-reentrant": 1.33}[c["gradient_checkpointing"]]
    small_batch = 1.0 + max(0, 4 - c["batch_size"]) * 0.1
    return ckpt * BITS_COST[c["bits"]] * small_batch


def _candidates(settings: dict, strategy: str):
    effective = settings["batch_size"] * settings["gradient_accumulation_steps"]
    batches = sorted(
        {b for b in (1, 2, 4, 8, 16, 32) if b <= effective and effective % b == 0} | {settings["batch_size"]}
    )
    bits = [settings["bits"]] + [b for b in (8, 4) if b != settings["bits"]]
    optims = [settings["optim"]] + ([EIGHT_BIT_ADAM] if settings["optim"] != EIGHT_BIT_ADAM else [])
    ranks = [settings["lora_r"]]
    if strategy != "projector_only":
        r = settings["lora_r"]
        while r > 8:
            r //= 2
            ranks.append(r)
    ckpts = ("off", "reentrant", "non-reentrant")
    for b, n_bits, optim, r, ckpt in itertools.product(batches, bits, optims, ranks, ckpts):
        if ckpt == "reentrant" and n_bits != 8:
            continue  # reentrant only differs where LLM.int8 keeps its input on ctx (results/gradient_checkpointing.md)
        yield {
            "batch_size": b,
            "gradient_accumulation_steps": max(1, effective // b),
            "bits": n_bits,
            "optim": optim,
            "lora_r": r,
            "gradient_checkpointing": ckpt,
        }


def _argv_for(argv: list[str], c: dict) -> list[str]:
    ckpt = c["gradient_checkpointing"]
    extra = [
        "--per_device_train_batch_size", str(c["batch_size"]),
        "--gradient_accumulation_steps", str(c["gradient_accumulation_steps"]),
        "--bits", str(c["bits"]), "--optim", c["optim"], "--lora_r", str(c["lora_r"]),
        "--activation_checkpointing", "false" if ckpt == "off" else "true",
    ]  # fmt: skip
    if ckpt != "off":
        extra += [
            "--activation_checkpointing_kwargs",
            f'{{"use_reentrant": {str(ckpt == "reentrant").lower()}}}',
        ]
    return list(argv) + extra


def _with(spec, c: dict):
    """``spec`` with candidate ``c``'s settings (copies; ``spec`` is unchanged)."""
    model = dataclasses.replace(spec.model, bits=c["bits"], lora_r=c["lora_r"])
    training = copy.copy(
        spec.training
    )  # transformers' TrainingArguments: a copy, then the candidate's values
    training.per_device_train_batch_size = c["batch_size"]
    training.gradient_accumulation_steps = c["gradient_accumulation_steps"]
    training.optim = c["optim"]
    training.activation_checkpointing = c["gradient_checkpointing"] != "off"
    training.activation_checkpointing_kwargs = {"use_reentrant": c["gradient_checkpointing"] == "reentrant"}
    return dataclasses.replace(spec, model=model, training=training)


def _changes(settings: dict, c: dict) -> int:
    """How many settings that change the experiment's numbers (bits, r, optimizer) differ from the request."""
    return sum(settings[k] != c[k] for k in ("bits", "lora_r", "optim"))


PLANNER_ADDED = ("output_dir", "use_cpu", "report_to")  # what parse_plan_args adds; not the user's


def candidate_yaml(explicit: dict, argv: list[str], c: dict, plan: dict, budget: int, margin: float) -> str:
    """The user's own settings (YAML + flags) with the candidate's, as a --config file."""
    peak = plan["dry_run"]["peak_bytes"] if plan.get("dry_run") else plan["estimate"]["peak_bytes"]
    method = "dry run" if plan.get("dry_run") else "closed form"
    body = {}
    for key, value in explicit.items():
        if key in PLANNER_ADDED:
            continue
        body[key] = getattr(value, "value", value)
    body.update(
        bits=c["bits"],
        per_device_train_batch_size=c["batch_size"],
        gradient_accumulation_steps=c["gradient_accumulation_steps"],
        activation_checkpointing=c["gradient_checkpointing"]
        != "off",  # transformers 5's name (not a renamed flag)
        optim=c["optim"],
    )
    if "model_max_length" not in explicit:  # the plan's (the checkpoint's); training's default may be shorter
        body["model_max_length"] = plan["settings"]["model_max_length"]
    if plan["settings"]["strategy"] != "projector_only":
        body["lora_r"] = c["lora_r"]
    if c["gradient_checkpointing"] != "off":
        body["activation_checkpointing_kwargs"] = {
            "use_reentrant": c["gradient_checkpointing"] == "reentrant"
        }
    else:
        body.pop("activation_checkpointing_kwargs", None)
    header = (
        f"# Predicted peak: {peak / GIB:.2f} GiB ({method}, python -m llava_df.memory plan --target {plan['target']}) "
        f"for a {budget / GIB:g} GiB budget with a {margin:.0%} margin; add ~0.5 GiB of CUDA context.\n"
        f"# Made by: python -m llava_df.memory plan {' '.join(argv)} --budget {budget / GIB:g}GiB\n"
    )
    return header + yaml.safe_dump(body, sort_keys=False)


def search(argv: list[str], *, budget_bytes: int, margin: float = 0.1, target: str = "cuda", top: int = 3,
           text_tokens: int = 48, verify: bool = True) -> dict:  # fmt: skip
    """{"candidates": [...], "searched": n}; raises UsageError when nothing fits, naming the smallest."""

    if not 0 <= margin < 1:
        raise UsageError(f"--margin {margin}: expected a fraction in [0, 1), such as 0.1 for 10%.")

    base = make_plan(argv, target=target, text_tokens=text_tokens, dry=False)  # validates argv once
    settings, strategy = base["settings"], base["settings"]["strategy"]
    spec = parse_plan_args(argv)
    config, _ = plan_config(spec.model)
    limit = budget_bytes * (1 - margin)
    scored = []
    for c in _candidates(settings, strategy):  # the closed form on edited copies: no parsing per candidate
        est = estimate(_with(spec, c), config, target=target, seq_len=settings["seq_len"])
        # a plan of the closed form alone, as make_plan(dry=False) would return it (--no_dry_run keeps it)
        scored.append((c, base | {"settings": settings | c, "estimate": est, "dry_run": None}))
    smallest_c, smallest = min(scored, key=lambda cp: cp[1]["estimate"]["peak_bytes"])
    fitting = [(c, p) for c, p in scored if p["estimate"]["peak_bytes"] <= limit]
    if not fitting:
        weights = sum(smallest["estimate"]["weights"].values())
        why = (
            f"the weights alone take {weights / GIB:.2f} GiB at {smallest_c['bits']} bits"
            if weights > limit
            else "no micro-batch, checkpointing, optimizer, bits or LoRA r brings the step under it"
        )
        raise UsageError(
            f"--budget {budget_bytes / GIB:g} GiB (usable {limit / GIB:.2f} GiB with --margin {margin:g}): nothing fits; {why}. "
            f"The smallest configuration of this setup (batch {smallest_c['batch_size']}, {smallest_c['bits']}-bit, "
            f"checkpointing {smallest_c['gradient_checkpointing']}, {smallest_c['optim']}, LoRA r {smallest_c['lora_r']}) "
            f"needs {smallest['estimate']['peak_bytes'] / GIB:.2f} GiB: raise --budget to at least "
            f"{smallest['estimate']['peak_bytes'] / (1 - margin) / GIB:.1f}GiB, or plan a smaller model."
        )
    fitting.sort(
        key=lambda cp: (_changes(settings, cp[0]), _speed_cost(cp[0]), cp[1]["estimate"]["peak_bytes"])
    )
    chosen = []
    # The dry runs are what takes time (seconds to minutes each for a 7B model): shown as they go, on stderr.
    progress = tqdm(fitting, desc=f"dry-running configurations that fit (best {top} kept)", unit="config",
                    disable=not verify, file=sys.stderr, leave=False)  # fmt: skip
    for c, plan in progress:
        if len(chosen) == top:
            break
        if verify:  # the dry run has the last word
            plan = make_plan(_argv_for(argv, c), target=target, text_tokens=text_tokens)
            if plan["dry_run"]["peak_bytes"] > limit:
                continue
        chosen.append({"settings": c, "plan": plan, "speed_cost": _speed_cost(c), "changes": _changes(settings, c),
                       "yaml": candidate_yaml(spec.explicit, argv, c, plan, budget_bytes, margin)})  # fmt: skip
    progress.close()
    return {"budget_bytes": budget_bytes, "margin": margin, "searched": len(scored), "candidates": chosen,
            "asked": {k: settings[k] for k in SUMMARY_KEYS}}  # fmt: skip


# What a --budget answer varies, in the summary's column order, with each column's heading.
SUMMARY_KEYS = {"batch_size": "batch", "gradient_accumulation_steps": "accum", "gradient_checkpointing": "checkpointing",
                "optim": "optimizer", "bits": "bits", "lora_r": "LoRA r"}  # fmt: skip


def format_budget(found: dict, asked_text: str) -> str:
    """One screen first (the budget as read, one row per configuration with only the settings that differ
    between the answers or from the request, and each one's planned peak), then each as a --config file."""
    budget, margin = found["budget_bytes"], found["margin"]
    rows = [c["settings"] for c in found["candidates"]]
    asked = found.get("asked") or {}
    varied = [k for k in SUMMARY_KEYS if len({str(r[k]) for r in rows} | {str(asked.get(k))}) > 1]
    lines = [
        f"--budget {asked_text} read as {budget / GIB:g} GiB (GB and GiB both mean 2**30 bytes here); "
        f"{budget * (1 - margin) / GIB:.2f} GiB usable with a {margin:.0%} margin. {len(rows)} of "
        f"{found['searched']} configurations searched fit, fastest first (speed order: a heuristic, see "
        "llava_df/memory/budget.py):",
        "",
        "| option | "
        + " | ".join(SUMMARY_KEYS[k] for k in varied)
        + " | planned peak GiB | changes the experiment |",
        "|---" * (len(varied) + 3) + "|",
    ]
    if asked:
        lines.append("| asked | " + " | ".join(str(asked.get(k)) for k in varied) + " | - | - |")
    for i, cand in enumerate(found["candidates"], 1):
        plan = cand["plan"]
        peak = (plan.get("dry_run") or plan["estimate"])["peak_bytes"]
        changed = [
            SUMMARY_KEYS[k]
            for k in ("bits", "lora_r", "optim")
            if asked and cand["settings"][k] != asked.get(k)
        ]
        lines.append(f"| {i} | " + " | ".join(str(cand["settings"][k]) for k in varied)
                     + f" | {peak / GIB:.2f} | {', '.join(changed) or 'no'} |")  # fmt: skip
    lines.append("\nEach option as a ready --config file:")
    for i, cand in enumerate(found["candidates"], 1):
        lines.append(f"\n--- option {i} ---\n{cand['yaml'].rstrip()}")
    return "\n".join(lines)
