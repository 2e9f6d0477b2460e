"""Secondary endpoints beside the primary family: AUC per fake family, and TPR at a fixed FPR. Never verdicts.

How to call::

    family_auc, targets = endpoints(protocol.get("secondary", []))    # ["family_auc", "tpr_at_fpr_0.01", ...]
    pairs = [(name, a, b), ...]        # name "cand vs ref | strategy"; a, b: [seeds, N] paired by seed
    by_family = family_auc_comparisons(pairs, y, manipulation, alpha=0.05)   # {family: [Comparison]}
    by_target = tpr_comparisons(pairs, y, targets, alpha=0.05, draws=1000)   # {target FPR: [Comparison]}
    write_family_auc(out, by_family); write_tpr_at_fpr(out, by_target)       # <out>/family_auc.*, tpr_at_fpr.*

Both use the primary's estimator (llava_df.sweep.inference): D = mean over seeds of the per-seed
differences, SE^2 = image part + s_d^2 / k, Welch df, t test; Holm within each endpoint (each fake
family is its own set of comparisons; each FPR target its own), never over the primary family.

- Family AUC: AUC of (family f's fakes vs every test real), the image part by DeLong on that subset.
- TPR at FPR t: per seed, sklearn.metrics.roc_curve on the test images, read at FPR t by linear
  interpolation between the ROC's vertices; where the curve is vertical at exactly t (a threshold
  gives FPR t), the highest TPR there (the threshold that keeps the reals' FPR at t). The image part:
  a paired bootstrap over the test images, stratified by class (reals and fakes each resampled to
  their own count), the same draws for both projectors, every seed and every comparison, from a fixed
  seed; Var_img(D) is the variance of D over the draws. Cost: one roc_curve (~1 ms at 4500 images) per
  seed, side, comparison and draw: ~1 min for 6 comparisons x 5 seeds x 1000 draws on one core.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_curve

from llava_df.errors import UsageError
from llava_df.io import write_text
from llava_df.sweep.inference import Comparison, adjust_family, compare_to_reference, comparison_from_parts

TPR_AT_FPR = re.compile(r"tpr_at_fpr_(0?\.\d+)")
DRAWS = 1000  # bootstrap draws for TPR at FPR's image part, unless the protocol says bootstrap_draws
BOOTSTRAP_SEED = 0  # the protocol's bootstrap_seed overrides it


def endpoints(names: list[str]) -> tuple[bool, list[float]]:
    """(whether family AUC is asked for, the FPR targets of tpr_at_fpr_<t>) from the protocol's ``secondary``."""
    targets, family = [], False
    for name in names:
        if name == "family_auc":
            family = True
        elif (match := TPR_AT_FPR.fullmatch(str(name))) and 0 < float(match[1]) < 1:
            targets.append(float(match[1]))
        else:
            raise UsageError(
                f"protocol secondary: {name!r} is not an endpoint; expected family_auc or tpr_at_fpr_<FPR> "
                "with 0 < FPR < 1 (e.g. tpr_at_fpr_0.01). Fix the protocol file."
            )
    return family, targets


def family_auc_comparisons(pairs, y, manipulation, alpha: float) -> dict[str, list[Comparison]]:
    """{family: the comparisons of AUC(family's fakes vs all reals), Holm within the family}."""
    y, manipulation = np.asarray(y), np.asarray(manipulation)
    out = {}
    for family in sorted(set(manipulation[y == 1])):
        subset = (y == 0) | (manipulation == family)
        if (y[subset] == 1).sum() < 2:
            raise UsageError(
                f"family_auc: the test split has {(y[subset] == 1).sum()} {family} fake; an AUC's image part "
                "needs at least 2 per family. Drop family_auc from the protocol's secondary for this test set."
            )
        comparisons = [
            compare_to_reference(y[subset], a[:, subset], b[:, subset], name=name) for name, a, b in pairs
        ]
        out[family] = adjust_family(comparisons, alpha=alpha)
    return out


def tpr_at_fpr(y, scores, targets) -> np.ndarray:
    """TPR [len(targets)] of ``scores`` [N] at each FPR target, by the rule in the module docstring."""
    fpr, tpr, _ = roc_curve(y, scores)
    targets = np.asarray(targets, dtype=float)
    i = (
        np.searchsorted(fpr, targets, side="right") - 1
    )  # the last vertex with FPR <= target: the top of a step
    after = np.minimum(i + 1, len(fpr) - 1)
    span = np.where(fpr[after] > fpr[i], fpr[after] - fpr[i], 1.0)
    between = tpr[i] + (targets - fpr[i]) * (tpr[after] - tpr[i]) / span
    return np.where(fpr[i] == targets, tpr[i], between)


def bootstrap_indices(y, draws: int, seed: int) -> np.ndarray:
    """[draws, N] image indices, each row reals resampled among reals and fakes among fakes (with replacement)."""
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    reals, fakes = np.flatnonzero(y == 0), np.flatnonzero(y == 1)
    return np.concatenate(
        [rng.choice(reals, (draws, len(reals))), rng.choice(fakes, (draws, len(fakes)))], axis=1
    )


def tpr_comparisons(pairs, y, targets: list[float], alpha: float, draws: int = DRAWS,
                    seed: int = BOOTSTRAP_SEED) -> dict[float, list[Comparison]]:  # fmt: skip
    """{target FPR: the comparisons of TPR at that FPR, Holm within the target}, the image part bootstrapped."""
    y = np.asarray(y)
    draw = bootstrap_indices(y, draws, seed)  # [draws, N]
    found: dict[float, list[Comparison]] = {t: [] for t in targets}
    for name, a, b in pairs:
        # per_seed [k, targets]: TPR(candidate) - TPR(reference); boot [draws, targets]: D on each draw
        per_seed = np.stack(
            [tpr_at_fpr(y, sa, targets) - tpr_at_fpr(y, sb, targets) for sa, sb in zip(a, b, strict=True)]
        )
        boot = np.stack([
            np.mean([tpr_at_fpr(y[d], sa[d], targets) - tpr_at_fpr(y[d], sb[d], targets)
                     for sa, sb in zip(a, b, strict=True)], axis=0)
            for d in draw
        ])  # fmt: skip
        var_image = boot.var(axis=0, ddof=1)
        for j, t in enumerate(targets):
            found[t].append(comparison_from_parts(per_seed[:, j], float(var_image[j]), name=name))
    return {t: adjust_family(cs, alpha=alpha) for t, cs in found.items()}


def _split(name: str) -> tuple[str, str]:
    comparison, strategy = name.split(" | ")
    return comparison, strategy


def _ci(c: Comparison) -> str:
    return f"{c.difference:+.4f} [{c.ci95[0]:+.4f}, {c.ci95[1]:+.4f}]"


def write_family_auc(out: Path, by_family: dict[str, list[Comparison]]) -> list[dict]:
    """``<out>/family_auc.{csv,md}``: one row per comparison and strategy, the columns per fake family."""
    families = list(by_family)
    rows = []
    for i, first in enumerate(by_family[families[0]]):
        comparison, strategy = _split(first.name)
        row = {"comparison": comparison, "strategy": strategy, "seeds": first.seeds}
        for f in families:
            c = by_family[f][i]
            row |= {f"{f}_difference": c.difference, f"{f}_ci95_low": c.ci95[0], f"{f}_ci95_high": c.ci95[1],
                    f"{f}_p": c.p, f"{f}_p_holm": c.p_holm}  # fmt: skip
        rows.append(row)
    _write_csv(out / "family_auc.csv", rows)
    lines = [
        "# SECONDARY endpoint: test AUC per fake family (not part of the confirmatory family; no verdicts)",
        "",
        "Per family f: AUC of (f's fakes vs every test real), candidate - reference, mean over the paired seeds; "
        "95% CI and p by the primary's estimator (DeLong on that subset + seed part, Welch df); p Holm: Holm "
        "within the family's comparisons.",
        "",
        "| comparison | strategy | seeds | "
        + " | ".join(f"{f}: difference [95% CI], p Holm" for f in families)
        + " |",
        "|---|---|---:|" + "---|" * len(families),
    ]
    for i, first in enumerate(by_family[families[0]]):
        comparison, strategy = _split(first.name)
        cells = " | ".join(f"{_ci(by_family[f][i])}, {by_family[f][i].p_holm:.3g}" for f in families)
        lines.append(f"| {comparison} | {strategy} | {first.seeds} | {cells} |")
    write_text(out / "family_auc.md", "\n".join(lines) + "\n")
    return rows


def write_tpr_at_fpr(
    out: Path, by_target: dict[float, list[Comparison]], draws: int, seed: int
) -> list[dict]:
    """``<out>/tpr_at_fpr.{csv,md}``: one row per endpoint, comparison and strategy."""
    rows = []
    for t, family in by_target.items():
        for c in family:
            comparison, strategy = _split(c.name)
            rows.append({
                "endpoint": f"tpr_at_fpr_{t:g}", "comparison": comparison, "strategy": strategy, "seeds": c.seeds,
                "difference": c.difference, "ci95_low": c.ci95[0], "ci95_high": c.ci95[1], "se": c.se,
                "se_image": c.se_image, "sd_seed": c.sd_seed, "df": c.df, "p": c.p, "p_holm": c.p_holm,
            })  # fmt: skip
    _write_csv(out / "tpr_at_fpr.csv", rows)
    lines = [
        "# SECONDARY endpoint: TPR at a fixed FPR of the test reals (not part of the confirmatory family; no verdicts)",
        "",
        "Per seed: sklearn's ROC on the test images, TPR read at the target FPR by linear interpolation between "
        "its vertices (at a vertical step exactly at the target, its top). Difference candidate - reference, mean "
        f"over the paired seeds; SE^2 = image part (paired bootstrap over test images stratified by class, {draws} "
        f"draws, seed {seed}, the same draws for every projector and seed) + s_d^2 / k, Welch df; p Holm: Holm "
        "within each endpoint.",
        "",
        "| endpoint | comparison | strategy | seeds | difference [95% CI] | SE (image, seed SD) | p | p Holm |",
        "|---|---|---|---:|---|---|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['endpoint']} | {r['comparison']} | {r['strategy']} | {r['seeds']} | {r['difference']:+.4f} "
            f"[{r['ci95_low']:+.4f}, {r['ci95_high']:+.4f}] | {r['se']:.4f} ({r['se_image']:.4f}, "
            f"{r['sd_seed']:.4f}) | {r['p']:.3g} | {r['p_holm']:.3g} |"
        )
    write_text(out / "tpr_at_fpr.md", "\n".join(lines) + "\n")
    return rows


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
