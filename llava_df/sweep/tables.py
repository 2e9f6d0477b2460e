"""Run records -> one row per (projector, strategy) -> results/comparison.{csv,md}.

Every number comes from the per-run JSONs; ``python -m llava_df.compare_projectors --aggregate``
rebuilds these files from them alone. Each projector is compared with mlp2x_gelu under the same
strategy as the protocol fixes it (llava_df.sweep.inference: DeLong on the shared test images plus
the seed part, Holm over every comparison in the table, TOST at the margin), and its verdict is one
of: better / worse (after Holm), equivalent (within the margin, after Holm), not resolved at this power.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

from llava_df.sweep.cells import REFERENCE, ZERO_SHOT_STRATEGIES
from llava_df.sweep.inference import Analysis, Comparison, adjust_family, compare_to_reference
from llava_df.sweep.real_scale import REAL_SCALE_LABEL, planned_7b_peak_gib
from llava_df.sweep.stats import hanley_mcneil_se, mean_ci

PROBE = "probe"  # the strategy name of the feature-probe reference rows (sweep/probes.py)


def _aligned(records: list[dict], split: str) -> tuple[np.ndarray, np.ndarray, list[int]] | None:
    """Labels [N] and scores [seeds, N] of ``split``, aligned by image id across the records."""
    if not records or any(split not in (r["scores"] or {}) for r in records):
        return None
    ids = records[0]["scores"][split]["id"]
    y = np.asarray(records[0]["scores"][split]["is_fake"])
    rows = []
    for r in records:
        by_id = dict(zip(r["scores"][split]["id"], r["scores"][split]["p_fake"], strict=True))
        if set(by_id) != set(ids):
            return None  # different images: not pairable
        rows.append([by_id[i] for i in ids])
    scores = np.asarray(rows, dtype=float)
    return (y, scores, [r["cell"]["seed"] for r in records]) if np.isfinite(scores).all() else None


def _by_seed(records: list[dict]) -> dict[int, dict]:
    return {r["cell"]["seed"]: r for r in records}


def comparison_rows(
    records: list[dict], analysis: Analysis | None = None
) -> tuple[list[dict], list[Comparison]]:
    """(one row per (projector, strategy), the adjusted family of comparisons against the reference)."""
    analysis = analysis or Analysis()
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in records:
        groups[(r["cell"]["projector"], r["cell"]["strategy"])].append(r)
    rows = []
    for (projector, strategy), runs in sorted(
        groups.items(), key=lambda kv: (kv[0][1], kv[0][0] != REFERENCE, kv[0][0])
    ):
        runs = sorted(runs, key=lambda r: r["cell"]["seed"])
        auc, auc_ci = mean_ci(_metric(runs, "test", "auc"))
        acc, acc_ci = mean_ci(_metric(runs, "test", "accuracy"))
        held, held_ci = mean_ci(_metric(runs, "heldout", "auc"))
        val, _ = mean_ci(_metric(runs, "val", "auc"))
        row = {
            "projector": projector,
            "strategy": strategy,
            "init": runs[0].get("projector_init", "random"),
            "seeds": len(runs),
            "test_auc": auc,
            "test_auc_ci": auc_ci,
            "test_accuracy": acc,
            "test_accuracy_ci": acc_ci,
            "heldout_auc": held,
            "heldout_auc_ci": held_ci,
            "val_auc": val,
            "val_test_gap": val - auc if math.isfinite(val) and math.isfinite(auc) else math.nan,
            "val_test_gap_flag": _gap_flag(runs),
            "trainable_params": int(np.mean([r["parameters"]["trainable"] for r in runs])),
            "projector_params": runs[0]["parameters"].get("projector"),
            "projector_macs_per_token": runs[0]["parameters"].get("projector_macs_per_token"),
            "peak_memory_mib": float(np.mean([_peak_mib(r) for r in runs])),
            "peak_memory_kind": _peak_kind(runs[0]),
            "s_per_step": float(np.mean([(r.get("time") or {}).get("s_per_step") or math.nan for r in runs])),
            "planned_7b_peak_gib": _planned_7b(projector, strategy),
        }
        row["comparison"] = (
            "beside the comparison (zero-shot)"  # stage 1 alone: shown, never tested
            if strategy in ZERO_SHOT_STRATEGIES
            else _versus_reference(groups.get((REFERENCE, strategy), []), runs, projector, analysis)
        )
        rows.append(row)
    # Holm (and BH) over every comparison the table makes, then each row gets its adjusted result
    family = adjust_family(
        [r["comparison"] for r in rows if isinstance(r["comparison"], Comparison)], analysis.alpha
    )
    adjusted = {c.name: c for c in family}
    for r in rows:
        c = r.pop("comparison")
        r |= _comparison_fields(adjusted[c.name] if isinstance(c, Comparison) else c)
    probes = [r["test_auc"] for r in rows if r["strategy"] == PROBE and math.isfinite(r["test_auc"])]
    best = max(probes) if probes else math.nan
    for r in rows:  # how much the LLM readout loses against what the features allow
        r["vs_best_probe"] = r["test_auc"] - best if r["strategy"] != PROBE else math.nan
    return rows, family


def _planned_7b(projector: str, strategy: str) -> float:
    """The planner's LLaVA-1.5-7B peak for this cell (sweep/real_scale.py); NaN for probes."""
    if strategy == PROBE or strategy in ZERO_SHOT_STRATEGIES:
        return math.nan
    return planned_7b_peak_gib(projector, strategy)


def _class_sizes(record: dict, split: str) -> tuple[int, int] | None:
    scores = (record.get("scores") or {}).get(split)
    if not scores:
        return None
    n_pos = int(sum(scores["is_fake"]))
    return n_pos, len(scores["is_fake"]) - n_pos


def _gap_flag(runs: list[dict]) -> str:
    """'n of k' runs whose val-test AUC gap exceeds 3 standard errors of the difference."""
    flagged, counted = 0, 0
    for r in runs:
        val, test = (r["metrics"].get("val") or {}).get("auc"), r["metrics"]["test"].get("auc")
        sizes_val, sizes_test = _class_sizes(r, "val"), _class_sizes(r, "test")
        if None in (val, test, sizes_val, sizes_test):
            continue
        se = math.hypot(hanley_mcneil_se(val, *sizes_val), hanley_mcneil_se(test, *sizes_test))
        counted += 1
        flagged += abs(val - test) > 3 * se
    return f"{flagged} of {counted}" if counted else "n/a"


def _metric(runs: list[dict], split: str, key: str) -> list:
    return [(r["metrics"].get(split) or {}).get(key) for r in runs]


def _versus_reference(
    reference: list[dict], runs: list[dict], projector: str, analysis: Analysis
) -> Comparison | str:
    """The unadjusted comparison of this cell with the reference cell of its strategy, or why there is none."""
    if projector == REFERENCE:
        return "reference"
    if not reference:
        return "n/a (no reference cell)"
    ref, own = _by_seed(reference), _by_seed(runs)
    seeds = sorted(set(ref) & set(own))  # the same seeds on both sides
    if len(seeds) < 2:
        return f"n/a ({len(seeds)} paired seed{'s' if len(seeds) != 1 else ''}; the test needs 2)"
    a = _aligned([own[s] for s in seeds], "test")
    b = _aligned([ref[s] for s in seeds], "test")
    if a is None or b is None or not np.array_equal(a[0], b[0]):
        return "not pairable"
    name = f"{projector} vs {REFERENCE} | {runs[0]['cell']['strategy']}"
    return compare_to_reference(a[0], a[1], b[1], name=name, margin=analysis.margin)


def _comparison_fields(c: Comparison | str) -> dict:
    if isinstance(c, str):
        return {"vs_ref_per_seed": "", "vs_ref_difference": math.nan, "vs_ref_ci_low": math.nan,
                "vs_ref_ci_high": math.nan, "vs_ref_se": math.nan, "vs_ref_p": math.nan, "vs_ref_p_holm": math.nan,
                "vs_ref_p_bh": math.nan, "vs_ref_p_tost_holm": math.nan, "vs_ref_verdict": c}  # fmt: skip
    return {"vs_ref_per_seed": " ".join(f"{d:+.3f}" for d in c.per_seed), "vs_ref_difference": c.difference,
            "vs_ref_ci_low": c.ci95[0], "vs_ref_ci_high": c.ci95[1], "vs_ref_se": c.se, "vs_ref_p": c.p,
            "vs_ref_p_holm": c.p_holm, "vs_ref_p_bh": c.p_bh, "vs_ref_p_tost_holm": c.p_tost_holm,
            "vs_ref_verdict": c.verdict}  # fmt: skip


def _peak_mib(record: dict) -> float:
    peak = record["peak_memory"]
    value = peak.get("peak_allocated_mb") if peak.get("device") == "cuda" else peak.get("peak_rss_mb")
    return math.nan if value is None else value  # probes measure none (null in their JSON)


def _peak_kind(record: dict) -> str:
    return "CUDA allocated" if record["peak_memory"].get("device") == "cuda" else "process RSS"


def _fmt(value, ci=None, digits=3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    text = f"{value:.{digits}f}"
    return text + (f" ± {ci:.{digits}f}" if ci is not None and math.isfinite(ci) else "")


def _p(value: float) -> str:
    return "-" if not math.isfinite(value) else ("<0.001" if value < 0.001 else f"{value:.3f}")


def _init(init: str) -> str:
    """random / checkpoint / stage 1 (file name): how the projector started, short enough for a table."""
    return f"stage 1 ({Path(init[5:]).parent.name or init[5:]})" if init.startswith("file:") else init


def write_tables(rows: list[dict], out_dir, header: str) -> tuple:
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows)
    csv = out_dir / "comparison.csv"
    frame.to_csv(csv, index=False, float_format="%.6g")
    lines = [header, ""]
    lines.append(
        "| strategy | projector | projector init | seeds | test AUC (95% CI) | test accuracy at the val-chosen threshold | held-out AUC | "
        "vs mlp2x_gelu: AUC difference [95% CI] (per seed) | p (Holm) | p TOST (Holm) | verdict | trainable params | "
        "projector params | projector MACs/token | "
        f"peak memory MiB ({rows[0]['peak_memory_kind'] if rows else ''}) | planned peak GiB at real scale ({REAL_SCALE_LABEL}) | "
        "s/step | val-test AUC gap (runs > 3 SE) | test AUC minus the best probe's |"
    )
    lines.append("|" + "---|" * 19)
    for r in rows:
        vs = (
            f"{r['vs_ref_difference']:+.3f} [{r['vs_ref_ci_low']:+.3f}, {r['vs_ref_ci_high']:+.3f}] ({r['vs_ref_per_seed']})"
            if math.isfinite(r["vs_ref_difference"])
            else "-"
        )
        lines.append(
            f"| {r['strategy']} | {r['projector']} | {_init(r['init'])} | {r['seeds']} | {_fmt(r['test_auc'], r['test_auc_ci'])} | "
            f"{_fmt(r['test_accuracy'], r['test_accuracy_ci'])} | {_fmt(r['heldout_auc'], r['heldout_auc_ci'])} | {vs} | "
            f"{_p(r['vs_ref_p_holm'])} | {_p(r['vs_ref_p_tost_holm'])} | **{r['vs_ref_verdict']}** | "
            f"{r['trainable_params']:,} | {r['projector_params'] or 0:,} | {r['projector_macs_per_token'] or 0:,} | "
            f"{_fmt(r['peak_memory_mib'], digits=0)} | {_fmt(r['planned_7b_peak_gib'], digits=2)} | {_fmt(r['s_per_step'])} | "
            f"{_fmt(r['val_test_gap'], digits=3)} ({r['val_test_gap_flag']}) | {_fmt(r['vs_best_probe'])} |"
        )
    md = out_dir / "comparison.md"
    md.write_text("\n".join(lines) + "\n")
    return csv, md


def write_summary(rows: list[dict], out_dir, analysis: Analysis, power: dict | None):
    """results/comparison_summary.md: test AUC per projector (rows) and strategy (columns), the
    verdict against mlp2x_gelu in each cell; the README's "What we found" shows this file."""
    probes = [r for r in rows if r["strategy"] == PROBE]
    rows = [r for r in rows if r["strategy"] != PROBE]
    strategies = sorted({r["strategy"] for r in rows})
    projectors = list(
        dict.fromkeys(r["projector"] for r in sorted(rows, key=lambda r: r["projector"] != REFERENCE))
    )
    cell = {(r["projector"], r["strategy"]): r for r in rows}
    mark = {
        "better": " (better)",
        "worse": " (worse)",
        "equivalent": " (equivalent)",
        "not resolved at this power": " (not resolved)",
        "reference": " (reference)",
    }
    lines = [
        "| projector | "
        + " | ".join(f"{s}: test AUC [planned 7B peak]" for s in strategies)
        + " | held-out AUC (mean over strategies) |",
        "|---|" + "---|" * (len(strategies) + 1),
    ]
    for p in projectors:
        cells = []
        for s in strategies:
            r = cell.get((p, s))
            cells.append(
                "n/a"
                if r is None
                else _fmt(
                    r["test_auc"], r["test_auc_ci"]
                )  # a zero-shot row: nothing trained, nothing planned
                if s in ZERO_SHOT_STRATEGIES
                else f"{_fmt(r['test_auc'], r['test_auc_ci'])}{mark.get(r['vs_ref_verdict'], '')} "
                f"[{_fmt(r.get('planned_7b_peak_gib'), digits=1)} GiB]"
            )
        trained = [s for s in strategies if s not in ZERO_SHOT_STRATEGIES]
        held = [cell[(p, s)]["heldout_auc"] for s in trained if (p, s) in cell]
        held = [h for h in held if h is not None and math.isfinite(h)]
        lines.append(
            f"| {p} | " + " | ".join(cells) + f" | {_fmt(float(np.mean(held)) if held else math.nan)} |"
        )
    lines += [
        "",
        f"Mean over seeds ± 95% CI. Against mlp2x_gelu under the same strategy (DeLong on the shared test images + the "
        f"seed part; Holm over the table's comparisons at alpha {analysis.alpha}): (better)/(worse): the difference "
        f"survives Holm; (equivalent): TOST shows it within ±{analysis.margin} AUC after Holm; (not resolved): "
        "neither, the data cannot tell at this power. "
        + (
            f"Smallest difference the table detects with {analysis.power:.0%} power at {power['seeds']} seeds: {power['mdd']:.3f} AUC "
            f"({power['mdd_bonferroni']:.3f} at Holm's first step)."
            if power
            else "No comparison has 2 paired seeds: no verdicts."
        ),
        f"[planned 7B peak]: the memory planner's peak for the same projector and strategy at real scale "
        f"({REAL_SCALE_LABEL}; llava_df/sweep/real_scale.py), not measured here: the tiny runs' own peaks are in comparison.md.",
    ]
    if probes:
        best = max(rows, key=lambda r: r["test_auc"] if math.isfinite(r["test_auc"]) else -1)
        ceiling = max(probes, key=lambda r: r["test_auc"])
        listed = ", ".join(
            f"{r['projector'].removeprefix('probe_')} {_fmt(r['test_auc'], r['test_auc_ci'])}" for r in probes
        )
        lines.append(
            f"Feature probes on the frozen tower (the ceiling, no LLM): {listed} test AUC. The best pipeline cell "
            f"({best['projector']}, {best['strategy']}: {best['test_auc']:.3f}) is {_versus(best['test_auc'] - ceiling['test_auc'])} "
            f"the best probe ({ceiling['projector']}: {ceiling['test_auc']:.3f})."
        )
    path = out_dir / "comparison_summary.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _versus(diff: float) -> str:
    """'0.006 below' / '0.012 above' / 'level with': a signed gap in words, never '+0.006 below'."""
    if round(diff, 3) == 0:
        return "level with"
    return f"{abs(diff):.3f} {'above' if diff > 0 else 'below'}"
