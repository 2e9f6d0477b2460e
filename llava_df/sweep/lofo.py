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

import csv
import math
from pathlib import Path

import numpy as np

from llava_df.data.manipulations import available_manipulations
from llava_df.errors import UsageError
from llava_df.io import write_text
from llava_df.sweep.plots import lofo_heatmap

NONE = "none"  # the variant that holds nothing out
SBI = "self_blend_only"  # the variant that trains on reals + self-blended fakes only
SBI_FAMILY = "self_blend"


def sbi_holdout() -> str:
    """--holdout_manipulation of the SBI run: every registered family but self_blend."""
    return ",".join(f for f in available_manipulations() if f != SBI_FAMILY)


TABLE, CSV, HEATMAP = "lofo.md", "lofo.csv", "lofo_heatmap.png"


def parse_families(text: str) -> list[str]:
    """'all' or comma-separated family names -> names; UsageError naming an unknown one."""
    valid = available_manipulations()
    names = valid if text.strip() == "all" else [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in valid]
    if bad or not names:
        raise UsageError(
            f"--lofo {text!r}: {', '.join(map(repr, bad)) or 'no family'} is not a manipulation family. "
            f"Valid: all, or names of {', '.join(valid)}."
        )
    return list(dict.fromkeys(names))


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
        "distribution, the others unseen). Descriptive (means over seeds; no test, no correction).",
        "",
        "| projector | strategy | family | held out AUC | in-distribution AUC | drop | trained families' test AUC "
        "| self-blend only AUC |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        drop = r["in_distribution_auc"] - r["heldout_auc"]
        lines.append(
            f"| {r['projector']} | {r['strategy']} | {r['family']} | {r['heldout_auc']:.3f} | "
            f"{_num(r['in_distribution_auc'])} | {_num(drop)} | {r['trained_families_test_auc']:.3f} | "
            f"{_num(r['self_blend_only_auc'])} |"
        )
    write_text(out / TABLE, "\n".join(lines) + "\n")
    lofo_heatmap(rows, out / HEATMAP)
    return rows


def _num(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.3f}"
