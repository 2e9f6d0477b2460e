"""Memory of a `smol` training step on CPU, measured by category, beside the planner's figure for the same run.

    python benchmarks/smol_memory.py                                   # mlp2x_gelu, the three strategies
    python benchmarks/smol_memory.py --projectors mlp2x_gelu,kan_h64_g5_k3 --batch 16
    python benchmarks/smol_memory.py --projectors mlp2x_gelu,kan_h36_g5_k3,kan_h64_g5_k3,bottleneck_h64_silu,\
        bottleneck_h64_rational --no_torch_tracker            # protocol v3's family, every strategy

For each (projector, strategy) on the sweep recipe (llava_df/configs/sweep_smol.yaml: INT8, bf16 autocast,
answer window), one process per measurement:

- planned: ``llava-df plan`` for the same flags and the measured sequence length, both methods
  (the dry run on meta tensors, the closed form), for target cpu;
- measured (ours): llava_df.memory.measure: two real training steps (build_model, the strategy, the
  Trainer's optimizer, a batch from the run's own collator, CPU autocast) under the dry run's own
  storage tracker and categories;
- measured (torch): torch's MemTracker (``torch.distributed._tools.mem_tracker``, a private module of
  torch 2.x, here only as a second opinion) on the same two steps, its peak by category;
- the process's peak RSS, which also holds Python, the libraries and allocator caches.

Writes results/smol/memory.md and results/smol/memory.json, the command and the machine beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "llava_df" / "configs" / "sweep_smol.yaml"
OUT = ROOT / "results" / "smol"
MIB = 2**20
STRATEGY_FLAGS = {
    "projector_only": ["--strategy", "projector_only"],
    "lora": ["--strategy", "lora"],
    "unfreeze_early": ["--strategy", "unfreeze_early", "--num_unfreeze_early_layers", "1"],
}


def argv_of(projector: str, strategy: str, batch: int) -> list[str]:
    return ["--config", str(RECIPE), "--mm_projector_type", projector, *STRATEGY_FLAGS[strategy],
            "--per_device_train_batch_size", str(batch), "--synthetic_n", "200", "--output_dir", "/tmp/unused"]  # fmt: skip


# ---- workers (one process each) -------------------------------------------------------------
def ours(argv: list[str]) -> dict:
    import dataclasses

    from llava_df.memory.measure import measure_step
    from llava_df.memory.peak import cpu_peak_rss_mb
    from llava_df.spec.resolve import parse_spec

    step = measure_step(parse_spec(argv))
    return dataclasses.asdict(step) | {"peak_rss_mb": cpu_peak_rss_mb()}


def torch_tracker(argv: list[str]) -> dict:
    import torch
    from torch.distributed._tools.mem_tracker import MemTracker

    from llava_df.data.pipeline import prepare_data, split_of
    from llava_df.memory.dryrun import _optimizer
    from llava_df.model.build import build_model
    from llava_df.model.processor import run_processor
    from llava_df.model.strategies import apply_strategy
    from llava_df.spec.resolve import parse_spec

    spec = parse_spec(argv)
    t = spec.training
    processor, _ = run_processor(spec.model, spec.data)
    data = prepare_data(spec.data, processor, seed=t.seed, model_max_length=t.model_max_length)
    built = build_model(spec.model, spec.strategy, torch_dtype=torch.bfloat16 if t.bf16 else None)
    model = apply_strategy(built.model, spec.model, spec.strategy, verbose=False).train()
    train = split_of(data.splits, "train")
    batch = data.collator([train[i % len(train)] for i in range(t.per_device_train_batch_size)])
    batch = {k: v for k, v in batch.items() if k not in data.collator.extra_keys}
    optimizer = _optimizer(spec, model, "cpu")
    tracker = MemTracker()
    tracker.track_external(model, optimizer)
    with tracker:
        for i in range(2):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(t.bf16)):
                loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if i == 0:
                tracker.reset_mod_stats()  # MemTracker follows one iteration's module stats at a time
    peak = tracker.get_tracker_snapshot("peak")
    return {str(device): {str(k).split(".")[-1]: v for k, v in cats.items()} for device, cats in peak.items()}


def planned(argv: list[str], seq_len: int) -> dict:
    from llava_df.memory.plan import make_plan

    # the sequence the measurement had: image tokens + its text (prompt, answer)
    return make_plan(argv, target="cpu", seq_len=seq_len, dry=True)


def run_worker(kind: str, argv: list[str], extra=None) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    job = json.dumps({"kind": kind, "argv": argv, "extra": extra})
    proc = subprocess.run(
        [sys.executable, __file__, "--_worker", job], env=env, cwd=ROOT, capture_output=True, text=True
    )
    if proc.returncode != 0:
        return {
            "error": proc.stderr.strip().splitlines()[-1][:300]
            if proc.stderr.strip()
            else f"exit {proc.returncode}"
        }
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- report ---------------------------------------------------------------------------------
def report(rows: list[dict], command: str) -> str:
    from llava_df.provenance import cpu_model, git_state

    git = git_state()

    def mib(x) -> str:
        return "-" if x is None else f"{x / MIB:.0f}"

    lines = [
        "# Memory of a `smol` training step on CPU: measured by category, beside the planner",
        "",
        f"Command: `{command}`; code: git {git['commit'][:7] if git['commit'] else '?'}{' (dirty)' if git['dirty'] else ''}; "
        f"machine: {cpu_model()}, one thread, no GPU. Recipe: llava_df/configs/sweep_smol.yaml (INT8 LLM, bf16 "
        "autocast, --answer_logits_only), two optimizer steps. MiB of tensor storage; weights by component are "
        "the same in plan and measurement (the same model).",
        "",
        "| projector | strategy | batch x seq | weights | planned peak: dry run / closed form | measured peak (ours) | "
        "its phase | measured: grads / optimizer / activations / temporaries | planned (dry run): grads / optimizer / "
        "activations / temporaries | torch MemTracker peak: params / grads / optimizer / activations / temp / total | "
        "peak RSS |",
        "|---|---|---|---:|---|---:|---|---|---|---|---:|",
    ]
    for r in rows:
        m, p, t = r["measured"], r["planned"], r["torch"]
        if "error" in m:
            lines.append(
                f"| {r['projector']} | {r['strategy']} | - | - | - | did not run: {m['error']} | | | | | |"
            )
            continue
        dry, est = (p.get("dry_run") or {}), p.get("estimate") or {}
        weights = sum(c["bytes"] for c in m["weights"].values())
        cpu = (t or {}).get("cpu") or {}
        tracker = (" / ".join(mib(cpu.get(k)) for k in ("PARAM", "GRAD", "OPT", "ACT", "TEMP", "Total"))
                   if cpu else f"did not run: {(t or {}).get('error', '?')}")  # fmt: skip
        lines.append(
            f"| {r['projector']} | {r['strategy']} | {m['batch_size']} x {m['seq_len']} | {mib(weights)} | "
            f"{mib(dry.get('peak_bytes'))} / {mib(est.get('peak_bytes'))} | **{mib(m['peak_bytes'])}** | {m['peak_phase']} | "
            f"{mib(m['grads_bytes'])} / {mib(m['optimizer_bytes'])} / {mib(m['activations_bytes'])} / {mib(m['temporaries_bytes'])} | "
            f"{mib(dry.get('grads_bytes'))} / {mib(dry.get('optimizer_bytes'))} / {mib(dry.get('activations_bytes'))} / "
            f"{mib(dry.get('temporaries_bytes'))} | {tracker} | {m['peak_rss_mb']:.0f} |"
        )
    lines += [
        "",
        "The planner does not emulate autocast (its assumptions, llava_df/memory/dryrun.py): it plans the bf16 "
        "weights the run loads, not the casts autocast makes inside each op. torch's MemTracker counts parameters "
        "(all of them, frozen included) where ours counts weights by component; its categories are its own.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--projectors", default="mlp2x_gelu")
    parser.add_argument("--strategies", default=",".join(STRATEGY_FLAGS))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument(
        "--no_torch_tracker",
        action="store_true",
        help="skip torch's MemTracker (it does not run on this model: results/smol/memory.md)",
    )
    parser.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._worker:
        import torch

        torch.set_num_threads(1)
        job = json.loads(args._worker)
        if job["kind"] == "ours":
            out = ours(job["argv"])
        elif job["kind"] == "torch":
            out = torch_tracker(job["argv"])
        else:
            out = planned(job["argv"], job["extra"])
        print(json.dumps(out, default=str))
        return
    command = "python benchmarks/smol_memory.py" + (" " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "")
    rows = []
    for projector in args.projectors.split(","):
        for strategy in args.strategies.split(","):
            argv = argv_of(projector, strategy, args.batch)
            measured = run_worker("ours", argv)
            row = {"projector": projector, "strategy": strategy, "measured": measured,
                   "planned": run_worker("plan", argv, measured.get("seq_len")) if "error" not in measured else {},
                   "torch": {"error": "not run (--no_torch_tracker)"} if args.no_torch_tracker
                   else run_worker("torch", argv)}  # fmt: skip
            rows.append(row)
            print(projector, strategy, "done", file=sys.stderr, flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "memory.json").write_text(
        json.dumps({"command": command, "rows": rows}, indent=1, default=str) + "\n"
    )
    (OUT / "memory.md").write_text(report(rows, command))
    print(f"wrote {OUT / 'memory.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
