"""Leave one family out: each manipulation family held out of training in turn, beside its in-distribution score.

Why: detecting a forgery never trained on is the question deepfake research asks first (the
cross-manipulation protocol). A held-out AUC alone cannot say whether a family is unseen-hard or
hard even when trained on; the same family's score from a run that trained on it can (issue #24).

How to call (``llava-df compare`` does)::

    llava-df compare --lofo all --projectors mlp2x_gelu --strategies lora --seeds 0 ...
    #   RESULTS_DIR/lofo/{lofo.md, lofo.csv, lofo_heatmap.png, <family>/runs/<cell>.json, none/runs/<cell>.json}

Per family F and cell: ``held out`` is the AUC of a run trained without F on the test split's
reals + every F fake (its ``heldout`` split); ``in-distribution`` is the AUC of F's test fakes
against the same test reals in the run that holds nothing out (``none``). With self_blend among
the families, one more run trains on reals + self-blended fakes only (``self_blend_only``, the SBI
protocol of Shiohara & Yamasaki 2022) and is scored on every family: the four others held out, its
own in distribution. All descriptive: no test, no correction (the confirmatory family is in protocols/).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import numpy as np

from llava_df.errors import UsageError, cli_entry
from llava_df.io import write_text
from llava_df.sweep.plots import lofo_heatmap
from llava_df.sweep.record import read_records
from llava_df.sweep.report import runs_machine
from llava_df.sweep.variants import NONE, SBI, SBI_FAMILY

TABLE, CSV, HEATMAP = "lofo.md", "lofo.csv", "lofo_heatmap.png"


def lofo_rows(by_family: dict[str, list[dict]]) -> list[dict]:
    """One row per (projector, strategy, family): held-out and in-distribution AUC, means over seeds."""
    reference, sbi = {}, {}
    for r in by_family.get(NONE, []):
        reference.setdefault((r["cell"]["projector"], r["cell"]["strategy"]), []).append(r)
    for r in by_family.get(SBI, []):
        sbi.setdefault((r["cell"]["projector"], r["cell"]["strategy"]), []).append(r)
    rows = []
    for family, records in sorted(by_family.items()):
        if family in (NONE, SBI):
            continue
        groups: dict[tuple[str, str], list[dict]] = {}
        for r in records:
            groups.setdefault((r["cell"]["projector"], r["cell"]["strategy"]), []).append(r)
        for (projector, strategy), runs in sorted(groups.items()):
            held = [(r["metrics"].get("heldout") or {}).get("auc", math.nan) for r in runs]
            ind = [
                r["metrics"]["test"].get(f"auc_{family}", math.nan)
                for r in reference.get((projector, strategy), [])
            ]
            # the SBI run scores self_blend in distribution (test) and every other family held out (heldout)
            part = "test" if family == SBI_FAMILY else "heldout"
            only = [
                (r["metrics"].get(part) or {}).get(f"auc_{family}", math.nan)
                for r in sbi.get((projector, strategy), [])
            ]
            rows.append({
                "projector": projector, "strategy": strategy, "family": family,
                "heldout_auc": float(np.mean(held)), "heldout_seeds": len(held),
                "in_distribution_auc": float(np.mean(ind)) if ind else math.nan, "in_distribution_seeds": len(ind),
                "trained_families_test_auc": float(np.mean([r["metrics"]["test"]["auc"] for r in runs])),
                "self_blend_only_auc": float(np.mean(only)) if only else math.nan, "self_blend_only_seeds": len(only),
                # every seed's value, in seed order: with two seeds the mean alone hides how much they agree
                "heldout_per_seed": _seeded(runs, held), "in_distribution_per_seed": _seeded(reference.get((projector, strategy), []), ind),
                "self_blend_only_per_seed": _seeded(sbi.get((projector, strategy), []), only),
            })  # fmt: skip
    return rows


def write_lofo(out: Path, by_family: dict[str, list[dict]], command: str, machine: str) -> list[dict]:
    """lofo.md and lofo.csv under ``out``."""
    rows = lofo_rows(by_family)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / CSV, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["family"])
        writer.writeheader()
        writer.writerows(rows)
    seeds = sorted({r["cell"]["seed"] for rs in by_family.values() for r in rs})
    bench = sorted(
        {r["config"]["data"].get("synthetic_seed") for rs in by_family.values() for r in rs}, key=str
    )
    lines = [
        "# Leave one family out: each forgery family held out of training, beside its in-distribution score",
        "",
        f"Command: `{command}`; machine: {machine}; benchmark seed(s) {bench}, training seed(s) {seeds}.",
        "Held out: AUC on the test reals + every fake of the family, from a run trained and selected without it. "
        "In-distribution: AUC of the family's test fakes against the same test reals, from the run that holds "
        "nothing out. Trained families: the held-out run's test AUC on the families it trained on. Self-blend only: "
        "the family's AUC in a run trained on reals + self-blended fakes only (the SBI protocol; self_blend itself in "
        "distribution, the others unseen). Descriptive: the mean over seeds, each seed's value in brackets; no test, no "
        "correction. Rebuilt from the run records by `python -m llava_df.sweep.lofo --results_dir RESULTS_DIR`.",
        "",
        "| projector | strategy | family | held out AUC | in-distribution AUC | drop | trained families' test AUC "
        "| self-blend only AUC |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        drop = r["in_distribution_auc"] - r["heldout_auc"]
        lines.append(
            f"| {r['projector']} | {r['strategy']} | {r['family']} | {_with_seeds(r['heldout_auc'], r['heldout_per_seed'])} | "
            f"{_with_seeds(r['in_distribution_auc'], r['in_distribution_per_seed'])} | {_num(drop)} | "
            f"{r['trained_families_test_auc']:.3f} | {_with_seeds(r['self_blend_only_auc'], r['self_blend_only_per_seed'])} |"
        )
    write_text(out / TABLE, "\n".join(lines) + "\n")
    lofo_heatmap(rows, out / HEATMAP)
    return rows


def _seeded(runs: list[dict], values: list[float]) -> str:
    """'0.735 0.742': the values in seed order (csv-safe)."""
    pairs = sorted(zip((r["cell"]["seed"] for r in runs), values, strict=True))
    return " ".join(f"{v:.3f}" for _, v in pairs)


def _with_seeds(mean: float, per_seed: str) -> str:
    return _num(mean) + (f" ({', '.join(per_seed.split())})" if " " in per_seed else "")


def _num(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.3f}"


def rebuild(results_dir: Path) -> list[dict]:
    """The tables of a finished --lofo study again, from its run records and sweep.json (the command) alone."""
    out = Path(results_dir) / "lofo"
    sweep = out / "sweep.json"
    if not sweep.is_file():
        raise UsageError(
            f"{sweep}: no such file. Pass the --results_dir of a finished `compare --lofo` sweep."
        )
    by_family = {}
    for folder in sorted(p for p in out.iterdir() if (p / "runs").is_dir()):
        records, bad = read_records(folder)
        if bad:
            raise UsageError(f"{bad[0][0]}: {bad[0][1]}. Run the sweep's command again to redo that run.")
        by_family[folder.name] = records
    if NONE not in by_family:
        raise UsageError(
            f"{out}: no {NONE}/ runs (the run that holds nothing out). Run the sweep's command again."
        )
    records = [r for rs in by_family.values() for r in rs]
    return write_lofo(out, by_family, json.loads(sweep.read_text())["command"], runs_machine(records))


@cli_entry
def main(argv: list[str]) -> list[dict]:
    ap = argparse.ArgumentParser(prog="python -m llava_df.sweep.lofo", description=rebuild.__doc__)
    ap.add_argument(
        "--results_dir", required=True, type=Path, help="The sweep's --results_dir (it holds lofo/)."
    )
    results_dir = ap.parse_args(argv).results_dir
    rows = rebuild(results_dir)
    print((results_dir / "lofo" / TABLE).read_text())
    return rows


if __name__ == "__main__":
    main()
