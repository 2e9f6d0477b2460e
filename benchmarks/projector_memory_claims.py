"""The users' projector-size table (seeds/000, "VRAM cost of the KAN configurations, with INT8 LoRA") beside the
memory planner's LLaVA-1.5-7B figures, row by row, under each training strategy (issue #34).

Run:  python benchmarks/projector_memory_claims.py     # -> results/projector_memory_claims.{md,json}

The claims: mlp2x_gelu 16.8M parameters (+0 GB), KAN h=256 16.8M (+0 GB), KAN h=128 8.4M (-0.1 GB), KAN h=64
~5M (-0.2 GB), "Efficient KAN" ~0.5M (-0.3 GB; its code is Linear(in, 64) -> SiLU -> Linear(64, out), with
"2*64 + 64*4096 = 262K, 1.5% of the MLP" beside it). The KAN rows are planned as this project's B-spline KAN
(``kan_h{h}_g5_k3``, efficient-kan's layout) and the "Efficient KAN" as what its code is, ``bottleneck_h64_silu``;
``bottleneck_h64_rational`` and ``kan_light`` (the learnable-activation KANs) are added. Each cell is one
``python -m llava_df.memory plan`` (dry run on meta tensors, CUDA target: tensor bytes, without the CUDA context
or the allocator's reserve) of the users' INT8 LoRA flags (seeds/000: --bits 8, LoRA r 32 / alpha 64, batch 1,
8-bit AdamW), with checkpointing on as LLaVA's scripts set it, and 576 image tokens + 48 text tokens.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from llava_df.memory.plan import make_plan  # noqa: E402
from llava_df.projectors import count_parameters  # noqa: E402

GIB = 2**30
# (projector, the notes' name, claimed parameters, claimed VRAM change against mlp2x_gelu)
ROWS = [
    ("mlp2x_gelu", "mlp2x_gelu (current)", "16.8M", "+0 GB"),
    ("kan_h256_g5_k3", "KAN (h=256)", "16.8M", "+0 GB"),
    ("kan_h128_g5_k3", "KAN (h=128)", "8.4M", "-0.1 GB"),
    ("kan_h64_g5_k3", "KAN (h=64)", "~5M", "-0.2 GB"),
    (
        "bottleneck_h64_silu",
        "Efficient KAN (Linear -> SiLU -> Linear, hidden 64)",
        "~0.5M (262K in its code)",
        "-0.3 GB",
    ),
    ("bottleneck_h64_rational", "(added) the bottleneck with a learnable rational activation", "-", "-"),
    ("kan_light", "(added) mlp2x_gelu with a learnable rational activation", "-", "-"),
]
STRATEGIES = ("projector_only", "lora", "unfreeze_early")
USERS_INT8_LORA = [
    "--model_name_or_path", "llava-hf/llava-1.5-7b-hf", "--bf16", "true", "--bits", "8", "--lora_r", "32",
    "--lora_alpha", "64", "--per_device_train_batch_size", "1", "--optim", "adamw_8bit",
    "--activation_checkpointing", "true", "--model_max_length", "2048",
]  # fmt: skip


def argv(projector: str, strategy: str) -> list[str]:
    extra = (
        ["--num_unfreeze_early_layers", "2"] if strategy == "unfreeze_early" else []
    )  # seeds/000's scheme B
    return [*USERS_INT8_LORA, "--mm_projector_type", projector, "--strategy", strategy, *extra]


def main() -> None:
    started = time.time()
    planned = {}
    for projector, *_ in ROWS:
        for strategy in STRATEGIES:
            plan = make_plan(argv(projector, strategy), target="cuda")
            planned[(projector, strategy)] = {
                "dry_run_gib": plan["dry_run"]["peak_bytes"] / GIB,
                "closed_form_gib": plan["estimate"]["peak_bytes"] / GIB,
                "argv": argv(projector, strategy),
            }
            print(
                f"{projector} / {strategy}: {planned[(projector, strategy)]['dry_run_gib']:.3f} GiB",
                flush=True,
            )
    rows = []
    for projector, name, claimed_params, claimed_delta in ROWS:
        row = {"projector": projector, "notes_name": name, "claimed_parameters": claimed_params,
               "claimed_delta": claimed_delta, "parameters": count_parameters(projector, 1024, 4096)}  # fmt: skip
        for strategy in STRATEGIES:
            own, ref = planned[(projector, strategy)], planned[("mlp2x_gelu", strategy)]
            row[strategy] = own | {"delta_gib": own["dry_run_gib"] - ref["dry_run_gib"]}
        rows.append(row)
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()  # fmt: skip
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, no GPU (the planner needs none)"
    out = ROOT / "results"
    (out / "projector_memory_claims.json").write_text(json.dumps(
        {"command": "python benchmarks/projector_memory_claims.py", "machine": machine, "commit": commit,
         "seconds": round(time.time() - started), "rows": rows}, indent=1) + "\n")  # fmt: skip
    mlp = count_parameters("mlp2x_gelu", 1024, 4096)
    lines = [
        "# The users' projector-size table vs the planner (LLaVA-1.5-7B)",
        "",
        "Command: `python benchmarks/projector_memory_claims.py`  ",
        f"Machine: {machine}; git {commit}; {time.strftime('%Y-%m-%d')}  ",
        'Claims: seeds/000, "VRAM cost of the KAN configurations, with INT8 LoRA". Planned: `python -m llava_df.memory '
        "plan` (dry run) of the users' INT8 LoRA flags (`--bits 8 --lora_r 32 --lora_alpha 64 --optim adamw_8bit`, batch "
        "1, checkpointing, bf16, 576 image + 48 text tokens) with each projector; unfreeze_early unfreezes the first 2 "
        "layers (scheme B). Parameters are counted at 1024 -> 4096. Peaks are tensor bytes (add ~0.3-0.5 GiB of CUDA "
        "context); the change is against mlp2x_gelu under the same strategy.",
        "",
        "| projector (the notes' name) | parameters: claimed | counted (share of mlp2x_gelu) | VRAM change: claimed | "
        "planned, projector only | planned, LoRA | planned, unfreeze 2 + LoRA |",
        "|---|---|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        cells = [f"{r[s]['delta_gib'] * 1024:+.0f} MiB ({r[s]['dry_run_gib']:.2f} GiB)" for s in STRATEGIES]
        lines.append(
            f"| `{r['projector']}` ({r['notes_name']}) | {r['claimed_parameters']} | {r['parameters'] / 1e6:.2f}M "
            f"({r['parameters'] / mlp:.1%}) | {r['claimed_delta']} | " + " | ".join(cells) + " |"
        )
    lines += [
        "",
        "Reading it: every projector's weights, gradients and Adam states together are a few hundred MiB at most at "
        "7B (mlp2x_gelu: 21.0M parameters, not the notes' 16.8M); the strategy, not the projector, sets the peak. The "
        "planned changes are what the projectors' own tensors and activations add or save on top of the same LLM.",
    ]
    (out / "projector_memory_claims.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
