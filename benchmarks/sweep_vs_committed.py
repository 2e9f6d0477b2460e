"""The re-run sweep against the sweep committed at an earlier commit: wall time and every cell's numbers.

    python benchmarks/sweep_vs_committed.py --before dd851e6     # the commit that holds the earlier sweep's records

Reads the earlier records with ``git show <commit>:results/comparison/runs/<cell>.json`` and the
current ones from results/comparison/runs/, and writes results/sweep_rerun.md: both sweeps' wall
time (results/comparison/sweep.json), and per cell the test / val / held-out AUC of both, their
difference, the largest P(Fake) difference, and whether the same epoch was selected. It measures;
it does not explain: the closing note of #23 and results/sweep_cost.md say what moved the numbers.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RUNS = "results/comparison/runs"
SPLITS = {"test": "test", "val": "val", "heldout": "heldout"}


def at(commit: str, path: str) -> dict | None:
    done = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=ROOT, capture_output=True, text=True)
    return json.loads(done.stdout) if done.returncode == 0 else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", required=True, help="The commit whose results/ holds the earlier sweep.")
    ap.add_argument("--out", default=str(ROOT / "results" / "sweep_rerun.md"))
    args = ap.parse_args()
    rows, diffs, same_epoch, n = [], [], 0, 0
    for path in sorted((ROOT / RUNS).glob("*.json")):
        if "__probe__" in path.name:
            continue
        new, old = json.loads(path.read_text()), at(args.before, f"{RUNS}/{path.name}")
        if old is None:
            continue
        n += 1
        aucs = {
            s: ((old["metrics"].get(k) or {}).get("auc"), (new["metrics"].get(k) or {}).get("auc"))
            for s, k in SPLITS.items()
        }
        worst = max(abs(a - b) for a, b in aucs.values() if a is not None and b is not None)
        p_diff = max(
            float(np.max(np.abs(np.asarray(old["scores"][s]["p_fake"]) - np.asarray(new["scores"][s]["p_fake"]))))
            for s in old["scores"] if s in new["scores"]
        )  # fmt: skip
        epoch = (old["metrics"]["best_val_entry"] or {}).get("step") == (
            new["metrics"]["best_val_entry"] or {}
        ).get("step")
        same_epoch += epoch
        diffs.append(worst)
        rows.append(f"| {new['cell']['name']} | {aucs['test'][0]:.4f} | {aucs['test'][1]:.4f} | {worst:.1e} | {p_diff:.1e} | "
                    f"{'yes' if epoch else 'no'} |")  # fmt: skip
    before, now = (
        at(args.before, "results/comparison/sweep.json"),
        json.loads((ROOT / "results/comparison/sweep.json").read_text()),
    )
    old_env = at(args.before, f"{RUNS}/mlp2x_gelu__lora__seed0.json")["env"]
    new_env = json.loads((ROOT / RUNS / "mlp2x_gelu__lora__seed0.json").read_text())["env"]
    lines = [
        "# The sweep re-run against the committed one",
        "",
        f"Command: `{shlex.join(['python', 'benchmarks/sweep_vs_committed.py', *sys.argv[1:]])}`.",
        f"Earlier sweep: commit {old_env['git']['commit'][:10]}, {before['runs']} runs with {before['workers']} workers in "
        f"{before['wall_s'] / 60:.0f} min, on {old_env['device']['cpu_model']}. This sweep: commit "
        f"{new_env['git']['commit'][:10]}, {now['runs']} runs with {now['workers']} workers in {now['wall_s'] / 60:.0f} min "
        f"({now['wall_s'] / before['wall_s']:.2f} of the time), on {new_env['device']['cpu_model']}; command "
        f"`{now['command']}`.",
        f"Over {n} cells: the largest AUC difference (test, val or held-out) is {max(diffs):.1e}, the median "
        f"{float(np.median(diffs)):.1e}; {same_epoch} of {n} select the same epoch.",
        "",
        "| cell | test AUC before | test AUC now | max AUC diff | max P(Fake) diff | same epoch |",
        "|---|---:|---:|---:|---:|---|",
        *rows,
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines[:6]))


if __name__ == "__main__":
    main()
