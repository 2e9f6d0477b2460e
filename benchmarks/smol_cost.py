"""What a sweep cell costs on the `smol` preset, one core, and what each cost lever gives.

    python benchmarks/smol_cost.py                  # levers + one full cell (mlp2x_gelu, lora)
    python benchmarks/smol_cost.py --workers 2 --cells mlp2x_gelu__lora,mlp2x_gelu__projector_only,mlp2x_gelu__unfreeze_early,mlp2x_gelu__lora__batch32,mlp2x_gelu__lora__compile
    python benchmarks/smol_cost.py --only levers    # the per-step lever table only (~10 min)
    python benchmarks/smol_cost.py --only cell --cells mlp2x_gelu__projector_only,kan_h64_g3_k2__unfreeze_early

Everything runs with one thread (OMP_NUM_THREADS=1, torch.set_num_threads(1)), as a sweep worker.

- Levers: the recipe's training step (llava_df/configs/sweep_smol.yaml: INT8 LLM, LoRA, batch 16,
  112 px -> 64 image tokens, the chatml prompt, the feature cache, bf16 autocast) timed per
  training sample (forward, backward, optimizer step; the median of ``--steps`` steps after one
  warm-up step), then the same step with ONE setting changed back: fp32 (no autocast), the
  tower run on every step (no feature cache), SmolLM2's own template (its system turn: the long
  prompt), 224 px (256 image tokens), batch 8 and 32, torch.compile. Evaluation's forward
  (batch 64, no grad) is timed the same way.
- Cell: ``llava-df train --config llava_df/configs/sweep_smol.yaml`` for each ``--cells`` entry, in a
  fresh process per cell (the preset and the benchmark data built before timing, as a sweep
  worker has them), wall time of the whole train() call (training, its evaluations, the final
  scoring) and where it went.

Writes results/smol/cost.md and results/smol/cost.json (the command and the machine beside them); ``--out``
another folder, e.g. for another machine type:

    python benchmarks/smol_cost.py --only levers --levers recipe,fp32 --out results/smol/xeon_2.80GHz
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "llava_df" / "configs" / "sweep_smol.yaml"
OUT = ROOT / "results" / "smol"
LEVERS = {  # name -> (flags changed from the recipe, what it shows)
    "recipe": ([], "the recipe as shipped"),
    "fp32": (["--bf16", "False"], "no bf16 autocast: fp32 compute"),
    "no_feature_cache": (["--feature_cache", "off"], "the tower runs on every step"),
    "all_logits": (["--answer_logits_only", "False"], "the LM head at every position"),
    "long_prompt": (["--conv_template", "smollm2"], "SmolLM2's template with its system turn"),
    "224px": (["--image_size", "224", "--model_max_length", "320"], "224 px: 16 x 16 = 256 image tokens"),
    "batch8": (["--per_device_train_batch_size", "8"], "batch 8"),
    "batch32": (["--per_device_train_batch_size", "32"], "batch 32"),
    "compile": (["--torch_compile", "True"], "torch.compile of the model (inductor, CPU)"),
}


# ---- levers: one process, one thread ----------------------------------------------------------
def time_steps(spec, n_steps: int, eval_batches: int) -> dict:
    """Seconds per sample of the recipe's training step and of evaluation's forward for ``spec``."""
    import torch

    from llava_df.data.pipeline import prepare_data, split_of
    from llava_df.model.feature_cache import FeatureCacheInfo, prepare_feature_cache
    from llava_df.model.processor import run_processor
    from llava_df.train.workflow import load_model

    t = spec.training
    processor, _ = run_processor(spec.model, spec.data)
    side = (
        spec.data.image_size
    )  # the 224px lever: the processor at that size, the tower resamples its positions
    if processor.image_processor.crop_size["height"] != side:
        processor.image_processor.size = {"shortest_edge": side}
        processor.image_processor.crop_size = {"height": side, "width": side}
    data = prepare_data(spec.data, processor, seed=t.seed, model_max_length=t.model_max_length)
    model, _ = load_model(spec, None, data)
    train_ds = split_of(data.splits, "train")
    if t.feature_cache == "auto":
        prepare_feature_cache(model, {"train": train_ds}, data.collator, batch_size=64)
    else:
        FeatureCacheInfo(None, "off")
    keys = data.collator.extra_keys
    b = t.per_device_train_batch_size
    batches = [
        {k: v for k, v in data.collator([train_ds[(i * b + j) % len(train_ds)] for j in range(b)]).items() if k not in keys}
        for i in range(n_steps + 1)
    ]  # fmt: skip
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    step_model = torch.compile(model) if t.torch_compile else model
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(t.bf16))
    model.train()
    times, first = [], None
    for i, batch in enumerate(batches):
        start = time.process_time()  # CPU time of this one-thread process: less sensitive to other load
        with autocast:
            loss = step_model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i:  # the first step warms up (allocations, kernels, compilation)
            times.append(time.process_time() - start)
        else:
            first = time.process_time() - start
    model.eval()
    eval_times = []
    e = t.per_device_eval_batch_size
    with torch.no_grad(), autocast:
        for i in range(eval_batches + 1):
            items = [train_ds[(i * e + j) % len(train_ds)] for j in range(e)]
            batch = {k: v for k, v in data.collator(items).items() if k not in keys}
            start = time.process_time()
            step_model(**batch)
            if i:
                eval_times.append(time.process_time() - start)
    seq = int(batches[0]["input_ids"].shape[1])
    return {
        "train_s_per_sample": statistics.median(times) / b,
        "eval_s_per_sample": statistics.median(eval_times) / e if eval_times else None,
        "seq_len": seq,
        "steps_timed": len(times),
        "first_step_s": first,
    }


def run_levers(names: list[str], n_steps: int, eval_batches: int) -> dict:
    from llava_df.spec.resolve import parse_spec

    results = {}
    for name in names:
        flags, _ = LEVERS[name]
        spec = parse_spec(["--config", str(RECIPE), "--strategy", "lora", "--output_dir", "/tmp/unused",
                           "--synthetic_n", "400", *flags])  # fmt: skip
        try:
            results[name] = time_steps(spec, n_steps, eval_batches)
        except Exception as err:  # a lever that does not run here is a finding, not a crash
            results[name] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"}
        print(name, results[name], file=sys.stderr, flush=True)
    return results


# ---- cell: one fresh process per cell --------------------------------------------------------
def cell_worker(cell: str) -> dict:
    from llava_df.data.load import load_splits
    from llava_df.model.build import materialize_base
    from llava_df.spec.resolve import parse_spec
    from llava_df.sweep.cells import Cell
    from llava_df.train.workflow import train

    projector, strategy, *lever = cell.split("__")  # an optional third part: a lever's flags (LEVERS)
    scratch = Path(os.environ["SMOL_COST_SCRATCH"])
    flags = Cell(projector, strategy, 0).flags(scratch / "__".join(lever))
    argv = [
        "--config",
        str(RECIPE),
        *flags,
        *(LEVERS[lever[0]][0] if lever else []),
        "--disable_tqdm",
        "True",
    ]
    spec = parse_spec(argv)
    load_splits(spec.data, seed=spec.training.seed)  # the benchmark data, as a sweep worker has it
    materialize_base(spec.model)
    start, cpu = time.perf_counter(), time.process_time()
    results = train(spec)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {
        "cell": cell,
        "wall_s": wall,
        "cpu_s": cpu,
        "train_s": results["time"]["train_s"],
        "steps": results["steps"],
        "epochs": results.get("epochs"),
        "test_auc": results["test"]["auc"],
        "heldout_auc": (results.get("heldout") or {}).get("auc"),
        "feature_cache": results.get("feature_cache"),
        "peak_memory": results.get("peak_memory"),
        "command": "llava-df train " + shlex.join(argv),
    }


def run_cells(cells: list[str], scratch: Path, workers: int = 1) -> list[dict]:
    """Each cell in its own one-thread process, ``workers`` at a time (CPU seconds are per process)."""
    from concurrent.futures import ThreadPoolExecutor

    def one(cell: str) -> dict:
        env = dict(os.environ, OMP_NUM_THREADS="1", SMOL_COST_SCRATCH=str(scratch))
        proc = subprocess.run([sys.executable, __file__, "--_cell", cell], env=env, cwd=ROOT,
                              capture_output=True, text=True)  # fmt: skip
        if proc.returncode != 0:
            raise SystemExit(f"cell {cell} failed:\n{proc.stderr[-3000:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        print(cell, result["cpu_s"], file=sys.stderr, flush=True)
        return result

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, cells))


# ---- report ---------------------------------------------------------------------------------
def report(levers: dict, cells: list[dict], command: str, git: dict | None = None) -> str:
    from llava_df.provenance import cpu_model, git_state

    git = git or git_state()
    lines = [
        "# Cost of a sweep cell on the `smol` preset, one core",
        "",
        f"Command: `{command}`; code: git {git['commit'][:7] if git['commit'] else '?'}"
        f"{' (dirty)' if git['dirty'] else ''}; machine: {cpu_model()}, one thread "
        "(OMP_NUM_THREADS=1), no GPU. Recipe: llava_df/configs/sweep_smol.yaml.",
        "",
    ]
    if levers:
        base = levers.get("recipe", {})
        lines += [
            "## Levers: one training step, one setting changed from the recipe",
            "",
            "CPU seconds per training sample (forward + backward + AdamW step, median of the timed steps after a warm-up "
            "step, LoRA; CPU time of the one-thread process, so other load on the machine inflates it less than wall "
            "time), evaluation's forward per sample (no grad, batch 64), and the ratio to the recipe.",
            "",
            "| setting | what | tokens per sample | train s/sample | x recipe | eval s/sample | x recipe | first step s |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, row in levers.items():
            what = LEVERS[name][1]
            if "error" in row:
                lines.append(f"| {name} | {what} | - | - | - | - | did not run: {row['error']} |")
                continue
            tr = (
                row["train_s_per_sample"] / base["train_s_per_sample"]
                if "train_s_per_sample" in base
                else float("nan")
            )
            ev = (row["eval_s_per_sample"] or 0) / (base.get("eval_s_per_sample") or float("nan"))
            first = row.get("first_step_s")
            lines.append(f"| {name} | {what} | {row['seq_len']} | {row['train_s_per_sample']:.3f} | {tr:.2f} | "
                         f"{row['eval_s_per_sample']:.3f} | {ev:.2f} | {'-' if first is None else f'{first:.0f}'} |")  # fmt: skip
        lines.append("")
    if cells:
        lines += [
            "## Whole cells",
            "",
            "| cell | wall s | CPU s | of which training (wall) s | steps | test AUC | held-out AUC | peak RSS MiB |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for c in cells:
            lines.append(f"| {c['cell']} | {c['wall_s']:.0f} | {c['cpu_s']:.0f} | {c['train_s']:.0f} | {c['steps']} | {c['test_auc']:.3f} | "
                         f"{c['heldout_auc'] if c['heldout_auc'] is None else round(c['heldout_auc'], 3)} | "
                         f"{(c['peak_memory'] or {}).get('peak_rss_mb', float('nan')):.0f} |")  # fmt: skip
        recipe = [c for c in cells if c["cell"].count("__") == 1] or cells  # the recipe's own cells, no lever
        per_cell = statistics.mean(c["cpu_s"] for c in recipe)
        lines += [
            "",
            f"Mean {per_cell / 60:.1f} CPU min per cell of the recipe ({len(recipe)} cells): on a quiet machine, 45 cells with 2 workers take about "
            f"{45 * per_cell / 2 / 3600:.1f} h (plus stage 1 per projector and seed, and the feature cache, built once "
            "per sweep). Wall time is that plus whatever else the machine ran.",
            "",
            "Each cell's command: " + "; ".join(f"`{c['command']}`" for c in cells),
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=("levers", "cell"), default=None)
    parser.add_argument("--levers", default=",".join(LEVERS), help="comma-separated lever names")
    parser.add_argument(
        "--cells",
        default="mlp2x_gelu__lora",
        help="projector__strategy[__lever], comma-separated (e.g. mlp2x_gelu__lora__compile)",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="cells at once (one thread each), like a sweep's"
    )
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per lever")
    parser.add_argument("--eval_batches", type=int, default=2)
    parser.add_argument(
        "--update",
        action="store_true",
        help="keep results/smol/cost.json's other levers and cells, replace these",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=OUT,
        help="folder of cost.md / cost.json (another machine type: its own folder)",
    )
    parser.add_argument("--_cell", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--from_json", action="store_true", help="only rewrite cost.md from cost.json")
    args = parser.parse_args()
    if args.from_json:
        payload = json.loads((args.out / "cost.json").read_text())
        (args.out / "cost.md").write_text(
            report(payload["levers"], payload["cells"], payload["command"], payload.get("git"))
        )
        return
    if args._cell:
        import torch

        torch.set_num_threads(1)
        print(json.dumps(cell_worker(args._cell)))
        return
    import tempfile

    import torch

    torch.set_num_threads(1)
    from llava_df.provenance import git_state

    git_at_start = git_state()  # the code the run ran (the report is written at the end)
    command = "python benchmarks/smol_cost.py" + (" " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "")
    levers = run_levers(args.levers.split(","), args.steps, args.eval_batches) if args.only != "cell" else {}
    with tempfile.TemporaryDirectory(prefix="smol_cost_") as scratch:
        cells = run_cells(args.cells.split(","), Path(scratch), args.workers) if args.only != "levers" else []
    args.out.mkdir(parents=True, exist_ok=True)
    payload = {"command": command, "git": git_at_start, "levers": levers, "cells": cells}
    if (
        args.update and (args.out / "cost.json").is_file()
    ):  # an earlier run's rows stay, this run's replace theirs
        old = json.loads((args.out / "cost.json").read_text())
        names = {c["cell"] for c in cells}
        payload = {
            "command": f"{old['command']}; then {command}",
            "git": old.get("git"),
            "levers": {**old["levers"], **levers},
            "cells": [c for c in old["cells"] if c["cell"] not in names] + cells,
        }
    (args.out / "cost.json").write_text(json.dumps(payload, indent=1) + "\n")
    (args.out / "cost.md").write_text(
        report(payload["levers"], payload["cells"], payload["command"], payload["git"])
    )
    print(f"wrote {args.out / 'cost.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
