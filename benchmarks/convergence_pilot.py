"""How long must a sweep cell train before validation loss stops improving? A pilot for the convergence recipe.

    python benchmarks/convergence_pilot.py                     # 4 cells, cap 12 epochs, 2 at a time
    python benchmarks/convergence_pilot.py --epochs 16 --cells mlp2x_gelu__lora,linear__projector_only

The committed sweep trains 2 epochs and 52 of its 63 runs select their last evaluation: they stop
while still improving. #24 asks that each cell train until validation loss stops improving (the
plateau schedule's patience, a cap) and that at most one run in five select its last epoch. This
runs a few cells of the sweep recipe (configs/sweep_tiny.yaml, development benchmark seed 0, seed 0)
with a high epoch cap and the plateau schedule's stop (``--min_lr``: stop once the LR has been
halved ``--reductions`` times without improvement), and reports per cell the epoch of the lowest
validation loss, the epoch it stopped at, and the validation loss per epoch. Design input for the
confirmatory protocol's recipe (chosen on the development seed, as the protocol requires).
Writes results/convergence_pilot.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CELLS = "mlp2x_gelu__lora,kan_h64_g3_k2__projector_only,linear__projector_only,kan_light__unfreeze_early"


def run_cell(cell: str, args, scratch: Path) -> dict:
    projector, strategy = cell.split("__")
    out = scratch / cell
    lr = 1e-3  # the recipe's learning rate
    argv = [sys.executable, "-m", "llava_df.train", "--config", "sweep_tiny", "--mm_projector_type", projector,
            "--strategy", strategy, "--num_train_epochs", str(args.epochs), "--lr_patience", "1",
            "--lr_reduction_factor", "0.5", "--min_lr", str(lr * 0.5 ** args.reductions * 1.01),
            "--output_dir", str(out)]  # fmt: skip
    if strategy == "unfreeze_early":
        argv += ["--num_unfreeze_early_layers", "1"]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    start = time.time()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.time() - start
    if done.returncode != 0:
        return {"cell": cell, "error": done.stderr.strip().splitlines()[-1:], "wall_s": wall}
    history = json.loads((out / "training_history.json").read_text())
    losses = [(e.get("epoch"), e["val_loss"], e.get("lr")) for e in history]
    best = min(range(len(losses)), key=lambda i: losses[i][1])
    return {"cell": cell, "wall_s": round(wall), "evaluations": len(losses), "best_evaluation": best + 1,
            "best_epoch": losses[best][0], "stopped_epoch": losses[-1][0], "last_is_best": best == len(losses) - 1,
            "stop_reason": history[-1].get("stop_reason"), "val_loss": [round(v, 4) for _, v, _ in losses],
            "lr": [lr_ for _, _, lr_ in losses]}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cells", default=CELLS)
    ap.add_argument("--epochs", type=int, default=12, help="The cap.")
    ap.add_argument("--reductions", type=int, default=3, help="LR halvings before the run stops.")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "results" / "convergence_pilot"))
    args = ap.parse_args()
    started = time.time()
    with (
        tempfile.TemporaryDirectory(prefix="llava_df_conv_") as tmp,
        ThreadPoolExecutor(args.workers) as pool,
    ):
        rows = list(pool.map(lambda c: run_cell(c, args, Path(tmp)), args.cells.split(",")))
    git = subprocess.run(
        ["git", "describe", "--always", "--dirty"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    command = shlex.join(["python", "benchmarks/convergence_pilot.py", *sys.argv[1:]])
    lines = [
        "# Convergence pilot: how long a sweep cell trains before validation loss stops improving",
        "",
        f"Command: `{command}` ({time.time() - started:.0f} s, {args.workers} cells at a time, one thread each); code: "
        f"git {git}; machine: {_cpu()}, {os.cpu_count()} cores, no GPU.",
        f"Recipe: configs/sweep_tiny.yaml (development benchmark seed 0, seed 0) with --num_train_epochs {args.epochs} "
        f"and the plateau schedule's stop: the LR halves after an evaluation without improvement and the run stops "
        f"after {args.reductions} halvings (--min_lr). One evaluation per epoch.",
        "",
        "| cell | evaluations | lowest val loss at epoch | stopped at epoch | stop reason | last is best | wall s | val loss per epoch |",
        "|---|---:|---:|---:|---|---|---:|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['cell']} | failed: {r['error']} | | | | | {r['wall_s']:.0f} | |")
            continue
        lines.append(f"| {r['cell']} | {r['evaluations']} | {r['best_epoch']:.0f} | {r['stopped_epoch']:.0f} | "
                     f"{r['stop_reason'] or 'the epoch cap'} | {'yes' if r['last_is_best'] else 'no'} | {r['wall_s']} | "
                     f"{' '.join(f'{v:.3f}' for v in r['val_loss'])} |")  # fmt: skip
    lines.append("")
    out = Path(args.out)
    out.with_suffix(".md").write_text("\n".join(lines))
    out.with_suffix(".json").write_text(
        json.dumps({"command": command, "git": git, "rows": rows}, indent=1) + "\n"
    )
    print("\n".join(lines))


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    main()
