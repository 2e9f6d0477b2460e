"""Margin sensitivity: the family's equivalence verdicts at other margins, and the smallest margin each claim survives.

How to call::

    rows = sensitivity(family, margins=[0.01, 0.015, 0.02], alpha=0.05)   # family: inference.adjust_family's
    write_margin_sensitivity(out, rows, margins, alpha)                   # <out>/margin_sensitivity.{md,csv}

At each margin m every comparison's TOST p is recomputed from its D, SE and df (inference.tost_p),
Holm runs over the whole family at that margin, and the verdict follows inference's rule
(inference.adjust_family: better / worse first, then equivalent, else not resolved). The smallest
surviving margin of a comparison is the smallest m on a 0.001 grid at which its verdict is
'equivalent'. Holm is a monotone procedure and every TOST p falls as m grows, so the family's
Holm-adjusted TOST p of one comparison is non-increasing in m and a bisection over the grid finds it.
A comparison judged better or worse is a difference claim: no margin makes it 'equivalent' (None).
"""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import numpy as np

from llava_df.io import write_text
from llava_df.sweep.inference import Comparison, adjust_family, tost_p

RESOLUTION = 0.001  # AUC: the grid of the smallest surviving margin
LARGEST = 1.0  # AUC: no margin beyond this is searched (an AUC difference lies within +-1)


def at_margin(family: list[Comparison], margin: float, alpha: float) -> list[Comparison]:
    """The family judged at ``margin``: TOST p recomputed, Holm over the family, verdicts."""
    moved = [replace(c, margin=margin, p_tost=tost_p(c.difference, c.se, c.df, margin)) for c in family]
    return adjust_family(moved, alpha=alpha)


def holm(p) -> np.ndarray:
    """Holm's adjusted p, exactly as statsmodels' ``multipletests(p, method="holm")[1]``, written out because that
    one calls ``gc.collect()`` on every call (~0.1 s in a process holding torch) and the margin search below calls
    it about ten times per comparison. tests/test_confirm_v3.py checks the two agree."""
    p = np.asarray(p, dtype=float)
    order, m = np.argsort(p), len(p)
    out = np.empty(m)
    out[order] = np.minimum(np.maximum.accumulate(p[order] * (m - np.arange(m))), 1.0)
    return out


def holm_tost(family: list[Comparison], margin: float) -> np.ndarray:
    """The family's Holm-adjusted TOST p [len(family)] at ``margin`` (as adjust_family computes them)."""
    return holm([tost_p(c.difference, c.se, c.df, margin) for c in family])


def smallest_margin(family: list[Comparison], index: int, alpha: float, resolution: float = RESOLUTION,
                    largest: float = LARGEST) -> float | None:  # fmt: skip
    """The smallest margin on the ``resolution`` grid at which ``family[index]`` (adjust_family's) is 'equivalent'
    after Holm over the family at that margin; None when it is a difference claim (better / worse: its Holm
    p does not depend on the margin) or not equivalent even at ``largest``."""
    if family[index].p_holm < alpha:
        return None

    def equivalent(step: int) -> bool:
        return holm_tost(family, round(step * resolution, 12))[index] < alpha

    low, high = 0, round(largest / resolution)  # at margin 0 nothing is equivalent; look for the first True
    if not equivalent(high):
        return None
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if equivalent(mid) else (mid, high)
    return round(high * resolution, 12)


def sensitivity(family: list[Comparison], margins: list[float], alpha: float) -> list[dict]:
    """One row per comparison: its D and 90% CI, the Holm TOST p and verdict at each margin, the smallest margin."""
    judged = {m: at_margin(family, m, alpha) for m in margins}
    rows = []
    for i, c in enumerate(family):
        projector, strategy = c.name.split(" | ")
        row = {"comparison": projector, "strategy": strategy, "difference": c.difference,
               "ci90_low": c.ci90[0], "ci90_high": c.ci90[1]}  # fmt: skip
        for m in margins:
            row[f"p_tost_holm_at_{m:g}"] = judged[m][i].p_tost_holm
            row[f"verdict_at_{m:g}"] = judged[m][i].verdict
        row["smallest_equivalence_margin"] = smallest_margin(family, i, alpha)
        rows.append(row)
    return rows


def write_margin_sensitivity(out: Path, rows: list[dict], margins: list[float], alpha: float) -> None:
    """``<out>/margin_sensitivity.csv`` (the rows as they are) and ``.md`` (a table of them)."""
    with open(out / "margin_sensitivity.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        "# Margin sensitivity of the primary family",
        "",
        f"At each margin: TOST p, Holm over the whole family at that margin (alpha {alpha}), and the verdict by "
        "the protocol's rule. The smallest margin a claim survives: the smallest margin (to "
        f"{RESOLUTION}) at which the comparison is 'equivalent' after Holm; '-' for a difference claim (better / "
        f"worse) or none up to {LARGEST}. The protocol's margin alone gives the confirmatory verdict.",
        "",
        "| comparison | strategy | difference [90% CI] | "
        + " | ".join(f"p TOST Holm / verdict at {m:g}" for m in margins)
        + " | smallest margin |",
        "|---|---|---|" + "---|" * len(margins) + "---:|",
    ]
    for r in rows:
        cells = " | ".join(f"{r[f'p_tost_holm_at_{m:g}']:.3g} {r[f'verdict_at_{m:g}']}" for m in margins)
        smallest = r["smallest_equivalence_margin"]
        lines.append(
            f"| {r['comparison']} | {r['strategy']} | {r['difference']:+.4f} [{r['ci90_low']:+.4f}, "
            f"{r['ci90_high']:+.4f}] | {cells} | {'-' if smallest is None else f'{smallest:.3f}'} |"
        )
    write_text(out / "margin_sensitivity.md", "\n".join(lines) + "\n")
