"""The memory planner against measurement, on this machine's CPU, over the tiny preset's grid.

Run:  python benchmarks/memory_validation.py            # -> results/memory_validation.{csv,md}
      python benchmarks/memory_validation.py --quick    # 4 cells, to see it work

Each cell (strategy x projector x bits x checkpointing) runs in a fresh process:

1. **Measured** (no planner code): the model train builds (``build_model`` + ``apply_strategy``, real
   bitsandbytes INT8/NF4 on CPU), the Trainer's optimizer class and kwargs, a batch of the
   synthetic benchmark through the training collator, then two steps (forward, backward,
   optimizer step, zero_grad) under ``torch.profiler`` with ``profile_memory=True``. The counter
   is the profiler's allocator events ([memory] events: every CPU allocation and free, with its
   size): the peak of their running sum over the two steps, plus the bytes of the model's
   tensors before the steps (a walk over ``state_dict(keep_vars=True)`` storages).
2. **Predicted**: ``llava_df.memory`` for the same arguments with ``--target cpu`` (what this
   machine runs): the dry run (meta tensors) and the closed-form estimate.

Error = predicted / measured - 1.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STRATEGIES = ("projector_only", "lora", "unfreeze_early")
PROJECTORS = ("mlp2x_gelu", "kan_h64_g3_k2", "kan_light", "linear")
BITS = (16, 8, 4)
BATCH = 8


def cell_argv(strategy: str, projector: str, bits: int, ckpt: bool, out: str) -> list[str]:
    argv = [
        "--model_name_or_path", "tiny", "--strategy", strategy, "--mm_projector_type", projector,
        "--bits", str(bits), "--gradient_checkpointing", str(ckpt).lower(), "--lora_r", "16",
        "--lora_dropout", "0.05", "--per_device_train_batch_size", str(BATCH), "--synthetic_n", "64",
        "--output_dir", out, "--report_to", "none", "--optim", "adamw_torch",
    ]  # fmt: skip
    if strategy == "unfreeze_early":
        argv += ["--num_unfreeze_early_layers", "1"]
    return argv


def _model_bytes(model) -> int:
    seen, total = set(), 0
    for t in model.state_dict(keep_vars=True).values():
        if hasattr(t, "untyped_storage"):
            s = t.untyped_storage()
            if s.data_ptr() not in seen:
                seen.add(s.data_ptr())
                total += s.nbytes()
    return total


def measure(argv: list[str]) -> dict:
    """The measured peak of one cell (in this process)."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    from transformers import Trainer

    from llava_df.data.pipeline import prepare_data, split_of
    from llava_df.model.build import build_model
    from llava_df.model.processor import run_processor
    from llava_df.model.quantization import enable_checkpointing
    from llava_df.model.strategies import apply_strategy
    from llava_df.spec.resolve import parse_spec

    torch.manual_seed(0)
    parsed = parse_spec(argv)
    processor, _ = run_processor(parsed.model, parsed.data)
    data = prepare_data(
        parsed.data, processor, seed=parsed.training.seed, model_max_length=parsed.training.model_max_length
    )
    train = split_of(data.splits, "train")
    batch = data.collator([train[i] for i in range(BATCH)])
    model = build_model(parsed.model, parsed.strategy).model
    model = apply_strategy(
        model,
        parsed.model,
        parsed.strategy,
        gradient_checkpointing=parsed.training.activation_checkpointing,
        verbose=False,
    )
    if parsed.training.activation_checkpointing:  # as Trainer.train() does, with the run's kwargs
        enable_checkpointing(model, parsed.training.activation_checkpointing_kwargs)
    model.train()
    cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(parsed.training, model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = cls([{"params": params, "weight_decay": parsed.training.weight_decay}], **kwargs)
    weights = _model_bytes(model)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        for _ in range(2):
            loss = model(**batch).loss
            loss.backward()
            del loss
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    # The CPU allocator's own running total ("Total Allocated": bytes allocated since profiling began,
    # minus those freed), one record per allocation and free, in the profiler's trace.
    trace = Path(tempfile.mkdtemp()) / "trace.json"
    prof.export_chrome_trace(str(trace))
    records = [
        e["args"]
        for e in json.loads(trace.read_text())["traceEvents"]
        if e.get("name") == "[memory]" and "Total Allocated" in e.get("args", {})
    ]
    # The reporter's running total carries over from earlier profiles in the same process; measure from
    # the level before this profile's first event. (Each cell runs in a fresh process anyway.)
    start = records[0]["Total Allocated"] - records[0]["Bytes"] if records else 0
    peak = max((r["Total Allocated"] for r in records), default=start) - start
    return {
        "measured_bytes": weights + peak,
        "model_bytes": weights,
        "seq_len": int(batch["input_ids"].shape[1]),
    }


def predict(argv: list[str], seq_len: int) -> dict:
    from llava_df.memory.plan import make_plan

    plan = make_plan(argv, target="cpu", seq_len=seq_len)
    dry = plan["dry_run"]
    return {"dry_run_bytes": dry["peak_bytes"], "estimate_bytes": plan["estimate"]["peak_bytes"],
            "dry_run_weights_bytes": dry["weights_bytes"], "dry_run_s": dry["seconds"],
            "peak_phase": dry["peak_phase"]}  # fmt: skip


def run_cell(cell: tuple, out: str) -> dict:
    argv = cell_argv(*cell, out)
    measured = measure(argv)
    return measured | predict(argv, measured["seq_len"])


def _worker(cell, out, queue):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        queue.put(run_cell(cell, out))
    except BaseException as err:  # reported by the parent with the cell's name
        queue.put({"error": f"{type(err).__name__}: {err}"})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4 cells")
    ap.add_argument("--results_dir", default=str(ROOT / "results"))
    ap.add_argument(
        "--cell", help="one cell, e.g. lora,mlp2x_gelu,8,false: print its measurement and plan as JSON"
    )
    args = ap.parse_args()
    if args.cell:
        strategy, projector, bits, ckpt = args.cell.split(",")
        cell = (strategy, projector, int(bits), ckpt.lower() == "true")
        print(json.dumps(run_cell(cell, tempfile.mkdtemp(prefix="llava_df_memval_"))))
        return
    grid = list(itertools.product(STRATEGIES, PROJECTORS[:3], BITS, (False, True)))
    if args.quick:
        grid = [("lora", "mlp2x_gelu", 8, False), ("projector_only", "kan_h64_g3_k2", 4, True),
                ("unfreeze_early", "kan_light", 16, False), ("lora", "linear", 8, True)]  # fmt: skip
    rows = []
    ctx = multiprocessing.get_context("spawn")  # one fresh process per cell: no allocator state carried over
    for cell in grid:
        queue = ctx.Queue()
        proc = ctx.Process(target=_worker, args=(cell, "/tmp/llava_df_memval", queue))
        proc.start()
        result = queue.get()
        proc.join()
        if "error" in result:
            raise SystemExit(f"error: cell {cell}: {result['error']}")
        row = dict(zip(("strategy", "projector", "bits", "checkpointing"), cell, strict=True)) | result
        for k in ("dry_run", "estimate"):
            row[f"{k}_error"] = row[f"{k}_bytes"] / row["measured_bytes"] - 1
        rows.append(row)
        print(
            f"{cell}: measured {row['measured_bytes'] / 2**20:.2f} MiB, dry run {row['dry_run_error']:+.1%}, "
            f"estimate {row['estimate_error']:+.1%}",
            flush=True,
        )
    out = Path(args.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = "memory_validation_quick" if args.quick else "memory_validation"
    fields = list(rows[0])
    with open(out / f"{name}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fields)
        w.writeheader()
        w.writerows(rows)
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    worst = {k: max(abs(r[f"{k}_error"]) for r in rows) for k in ("dry_run", "estimate")}
    lines = [
        "# Memory planner vs measurement (tiny preset, CPU)",
        "",
        f"Command: `python benchmarks/memory_validation.py{' --quick' if args.quick else ''}`  ",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, no GPU; git {commit}; {time.strftime('%Y-%m-%d')}  ",
        f"Batch {BATCH}, LoRA r 16 with dropout 0.05, AdamW (torch), unfreeze_early N=1. Measured: torch.profiler allocator "
        "events (peak of the running sum over 2 steps) + the model's tensor bytes; predicted: `python -m llava_df.memory plan "
        "--target cpu` for the same arguments (dry run on meta tensors; closed-form estimate).",
        "",
        f"Largest error: dry run {worst['dry_run']:.1%}, closed form {worst['estimate']:.1%} over {len(rows)} cells.",
        "",
        "| strategy | projector | bits | checkpointing | measured MiB | dry run MiB (error) | estimate MiB (error) | peak phase |",
        "|---|---|---:|---|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['strategy']} | {r['projector']} | {r['bits']} | {r['checkpointing']} | {r['measured_bytes'] / 2**20:.2f} | "
            f"{r['dry_run_bytes'] / 2**20:.2f} ({r['dry_run_error']:+.1%}) | {r['estimate_bytes'] / 2**20:.2f} ({r['estimate_error']:+.1%}) | {r['peak_phase']} |"
        )
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print(json.dumps(worst))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
