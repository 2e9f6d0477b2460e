"""The comparison's report: tables and plots from the run JSONs alone, with the header that says how they were made.

How to call::

    summary = aggregate(Path("results"), command="python -m llava_df.compare_projectors")
"""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path

from llava_df.errors import UsageError
from llava_df.provenance import run_environment
from llava_df.sweep.cells import REFERENCE
from llava_df.sweep.plots import write_plots
from llava_df.sweep.record import read_records
from llava_df.sweep.stats import hanley_mcneil_se
from llava_df.sweep.tables import (
    comparison_rows,
    minimum_detectable,
    seeds_advice,
    write_summary,
    write_tables,
)

logger = logging.getLogger(__name__)
# Below this many test images per class a run's AUC has a standard error above ~0.05.
MIN_PER_CLASS = 50


def aggregate(results_dir: Path, command: str, n_boot: int = 1000) -> dict:
    """Tables and plots from the run JSONs alone."""

    out = results_dir / "comparison"
    records, bad = read_records(out)
    if not records:
        raise UsageError(f"{out / 'runs'} holds no complete run record: run the sweep first.")
    rows = comparison_rows(records, n_boot=n_boot)
    env = run_environment()
    device = env["device"]
    machine = (
        f"{device.get('gpu_name')} x{device.get('gpu_count')}"
        if device.get("type") == "cuda"
        else f"{device.get('cpu_model')}, {device.get('cpu_count')} cores, no GPU"
    )
    mdd = minimum_detectable(rows)
    advice = seeds_advice(rows)
    sweep_file = out / "sweep.json"
    sweep = json.loads(sweep_file.read_text()) if sweep_file.is_file() else {"command": command}
    ran = (
        f" ({sweep['runs']} runs in {sweep['wall_s'] / 60:.0f} min with {sweep['workers']} worker(s))"
        if "wall_s" in sweep
        else ""
    )
    test_sizes = _test_sizes(records)
    header = "\n".join(
        [
            "# Projector comparison",
            "",
            f"Sweep: `{sweep['command']}`{ran}; tables and plots from its run JSONs: "
            "`python -m llava_df.compare_projectors --aggregate`.",
            f"Machine: {machine}; torch {env['packages'].get('torch')}, transformers {env['packages'].get('transformers')}; "
            f"the runs' code: {_run_commits(records)}.",
            f"Runs: {len(records)} records{f', {len(bad)} unreadable and skipped' if bad else ''}; "
            f"in-distribution test set {test_sizes}; {_val_size(records)}.",
            f"Minimum detectable test-AUC difference against {REFERENCE} (paired bootstrap over seed pairs and "
            f"test images, 80% power, 5% two-sided): {mdd:.3f}. Cells are marked better or worse only where the "
            "paired 95% interval excludes 0; otherwise they read 'no significant difference'. Selection: best/ is "
            "the epoch with the lowest validation loss (the plateau schedule's criterion), never the test split.",
            _seeds_line(advice, mdd),
            "Probe rows (strategy probe): linear / MLP / KAN probes on the frozen tower's features, the same splits "
            "(`--only_probes` recomputes them; comparison/probes.py); the last column is each row's test AUC minus the "
            "best probe's.",
            "Accuracy is at each run's decision threshold, chosen on its validation scores (--threshold_rule, default the EER point); peak memory "
            f"is {rows[0]['peak_memory_kind']} of the whole run (tiny preset: what the run measured, not a 7B figure).",
        ]
    )
    csv, md = write_tables(rows, results_dir, header)
    summary_md = write_summary(rows, results_dir, mdd)
    plots = write_plots(rows, results_dir, f"{len(records)} runs; error bars: 95% CI over seeds")
    print(md.read_text())
    for path, why in bad:
        print(f"skipped {path}: {why}", file=sys.stderr)
    return {
        "rows": rows,
        "files": [str(csv), str(md), str(summary_md), *map(str, plots)],
        "skipped": [str(p) for p, _ in bad],
        "mdd": mdd,
    }


def _seeds_line(advice: dict, mdd: float) -> str:
    if advice["seeds"] is None and not math.isfinite(advice["se_image"]):
        return "Seeds needed for a 0.02 minimum detectable difference: n/a (needs at least 2 paired seeds)."
    split = (
        f"the paired SE splits into {advice['se_image']:.4f} from the test images and a seed-to-seed SD of "
        f"{advice['sd_seed']:.4f} per difference"
    )
    if advice["seeds"] is None:
        return (f"More seeds alone cannot bring the minimum detectable difference ({mdd:.3f}) to {advice['target']}: "
                f"{split}, and the image part does not shrink with seeds; more test images would.")  # fmt: skip
    print(
        f"seeds for a {advice['target']} minimum detectable difference: {advice['seeds']} ({split})",
        file=sys.stderr,
    )
    return (f"With {advice['n_seeds']} seeds the minimum detectable difference is {mdd:.3f}; {advice['seeds']} seeds "
            f"would bring it to {advice['target']} ({split}).")  # fmt: skip


def _run_commits(records: list[dict]) -> str:
    """The git commits the runs were made at, each with its dirty flag (the records' own env)."""
    seen: dict[str, int] = {}
    for r in records:
        git = r["env"].get("git") or {}
        name = f"git {str(git.get('commit'))[:10]}" + (" (dirty)" if git.get("dirty") else " (clean)")
        seen[name] = seen.get(name, 0) + 1
    return ", ".join(f"{name} x{n}" if len(seen) > 1 else name for name, n in seen.items())


def _val_size(records: list[dict]) -> str:
    """The validation split's size and its AUC standard error (it picks best/ and the threshold)."""

    y = (records[0]["scores"].get("val") or {}).get("is_fake")
    if not y:
        return "no validation scores"
    fake, real = sum(y), len(y) - sum(y)
    return (f"validation {len(y)} images ({real} real, {fake} fake), AUC standard error "
            f"{hanley_mcneil_se(0.8, fake, real):.3f} at AUC 0.8")  # fmt: skip


def _test_sizes(records: list[dict]) -> str:
    y = records[0]["scores"]["test"]["is_fake"]
    fake, real = sum(y), len(y) - sum(y)
    text = f"{len(y)} images ({real} real, {fake} fake)"
    if min(fake, real) < MIN_PER_CLASS:
        # Hanley & McNeil's SE of an AUC near 0.8 with these class sizes.
        q1, q2, auc = 0.8 / 1.2, 2 * 0.64 / 1.8, 0.8
        se = math.sqrt(
            (auc * (1 - auc) + (fake - 1) * (q1 - auc**2) + (real - 1) * (q2 - auc**2)) / max(fake * real, 1)
        )
        logger.warning(
            "the test split has %d real and %d fake images: one run's AUC has a standard error of about %.2f, so "
            "differences below ~%.2f are noise. Use more data (at least %d per class).",
            real, fake, se, 2.8 * se, MIN_PER_CLASS,
        )  # fmt: skip
        text += f", below {MIN_PER_CLASS} per class"
    return text
