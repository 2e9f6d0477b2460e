"""Do committed sweep cells reproduce on today's code? Re-run them and compare with their run JSONs.

    python benchmarks/reproduce_cells.py                       # the default three cells, one per strategy
    python benchmarks/reproduce_cells.py --cells mlp2x_gelu__lora__seed0,kan_light__projector_only__seed1
    python benchmarks/reproduce_cells.py --also_at eb1a017     # and each cell at that commit, compared with today's

Each cell is re-run through the sweep itself (``python -m llava_df.compare_projectors`` with
that projector, strategy and seed and the committed recipe), into a scratch folder; its fresh
record is compared with ``results/comparison/runs/<cell>.json``: every metric of val, test and
held-out, the number of optimizer steps, and P(Fake) of every image (the largest absolute
difference). Writes results/reproduction.md with the command, the machine, and one row per cell.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from llava_df.provenance import cpu_model, git_state  # noqa: E402

COMMITTED = ROOT / "results" / "comparison" / "runs"
DEFAULT = (
    "mlp2x_gelu__lora__seed0",
    "kan_h64_g3_k2__projector_only__seed0",
    "kan_light__unfreeze_early__seed0",
)
SPLITS = ("val", "test", "heldout")


def rerun(cell: str, scratch: Path, code: Path = ROOT) -> tuple[dict, float]:
    """The cell's fresh record, run by the llava_df of ``code`` (a checkout of any commit)."""
    projector, strategy, seed = cell.split("__")
    argv = [sys.executable, "-m", "llava_df.compare_projectors", "--projectors", projector, "--strategies", strategy,
            "--seeds", seed.removeprefix("seed"), "--skip_probes", "--force", "--results_dir", str(scratch / "results"),
            "--runs_dir", str(scratch / "runs")]  # fmt: skip
    start = time.time()
    env = dict(os.environ, PYTHONPATH=str(code), OMP_NUM_THREADS="1")
    subprocess.run(argv, check=True, cwd=code, capture_output=True, env=env)
    return json.loads(
        (scratch / "results" / "comparison" / "runs" / f"{cell}.json").read_text()
    ), time.time() - start


def _numbers(metrics: dict | None) -> dict:
    return {
        k: v for k, v in (metrics or {}).items() if isinstance(v, int | float) and not isinstance(v, bool)
    }


def compare(old: dict, new: dict) -> dict:
    """Largest absolute difference of every metric and every P(Fake); equal steps."""
    metric_diff = 0.0
    for split in SPLITS:
        a, b = _numbers(old["metrics"].get(split)), _numbers(new["metrics"].get(split))
        assert set(a) == set(b), f"{split}: metrics differ in name: {sorted(set(a) ^ set(b))}"
        for key in a:
            if not (math.isnan(a[key]) and math.isnan(b[key])):
                metric_diff = max(metric_diff, abs(a[key] - b[key]))
    score_diff = 0.0
    for split in SPLITS:
        if split in old["scores"]:
            assert old["scores"][split]["id"] == new["scores"][split]["id"], f"{split}: other images"
            pairs = zip(old["scores"][split]["p_fake"], new["scores"][split]["p_fake"], strict=True)
            score_diff = max(score_diff, *(abs(x - y) for x, y in pairs))
    return {
        "test_auc": (old["metrics"]["test"]["auc"], new["metrics"]["test"]["auc"]),
        "steps": (old["steps"], new["steps"]),
        "max_metric_diff": metric_diff,
        "max_p_fake_diff": score_diff,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cells", default=",".join(DEFAULT))
    ap.add_argument(
        "--also_at", default=None, help="Also run each cell at this commit (a git worktree) and compare."
    )
    ap.add_argument("--out", default=str(ROOT / "results" / "reproduction.md"))
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="llava_df_repro_") as scratch:
        other = None
        if args.also_at:
            other = Path(scratch) / "checkout"
            subprocess.run(
                ["git", "worktree", "add", "-q", "--detach", str(other), args.also_at], check=True, cwd=ROOT
            )
        try:
            for cell in args.cells.split(","):
                committed = json.loads((COMMITTED / f"{cell}.json").read_text())
                now, seconds = rerun(cell, Path(scratch) / "now")
                row = {
                    "cell": cell,
                    "reference": f"record ({committed['env']['git']['commit'][:10]})",
                    "seconds": seconds,
                }
                rows.append(row | compare(committed, now))
                print(json.dumps(rows[-1]), flush=True)
                if other is not None:
                    then, _ = rerun(cell, Path(scratch) / "then", code=other)
                    rows.append(row | {"reference": f"rerun at {args.also_at[:10]}"} | compare(then, now))
                    print(json.dumps(rows[-1]), flush=True)
        finally:
            if other is not None:
                subprocess.run(["git", "worktree", "remove", "--force", str(other)], cwd=ROOT)
    git = git_state()
    lines = [
        "# Do committed sweep cells reproduce?",
        "",
        f"Command: `{shlex.join(['python', 'benchmarks/reproduce_cells.py', *sys.argv[1:]])}`; code: git "
        f"{str(git['commit'])[:10]}{' (dirty)' if git['dirty'] else ''}; machine: {cpu_model()}, no GPU.",
        "Each cell re-runs through `python -m llava_df.compare_projectors` with the committed recipe and is compared with "
        "a reference: its committed record (`results/comparison/runs/<cell>.json`, made at the commit named), or the same "
        "cell re-run at an earlier commit (`--also_at`). Columns: the largest absolute difference over every val / test / "
        "held-out metric and over every image's P(Fake).",
        "",
        "| cell | reference | steps (reference, now) | test AUC (reference, now) | max metric diff | max P(Fake) diff | s |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['cell']} | {r['reference']} | {r['steps'][0]}, {r['steps'][1]} | {r['test_auc'][0]:.6f}, "
            f"{r['test_auc'][1]:.6f} | {r['max_metric_diff']:.2e} | {r['max_p_fake_diff']:.2e} | {r['seconds']:.0f} |"
        )
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
