"""Run records -> one row per (projector, strategy) -> results/comparison.{csv,md}.

Every number comes from the per-run JSONs; ``python -m llava_df.compare_projectors --aggregate``
rebuilds these files from them alone. A projector is marked better or worse than mlp2x_gelu under
the same strategy only where the paired bootstrap (stats.paired_auc_difference) says so.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

from llava_df.sweep.cells import REFERENCE
from llava_df.sweep.real_scale import REAL_SCALE_LABEL, planned_7b_peak_gib
from llava_df.sweep.stats import (
    hanley_mcneil_se,
    mean_ci,
    minimum_detectable_difference,
    paired_auc_difference,
    seeds_for_target,
)

PROBE = "probe"  # the strategy name of the feature-probe reference rows (comparison/probes.py)


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


def comparison_rows(records: list[dict], n_boot: int = 1000) -> list[dict]:
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
        row |= _versus_reference(groups.get((REFERENCE, strategy), []), runs, projector, n_boot)
        rows.append(row)
    probes = [r["test_auc"] for r in rows if r["strategy"] == PROBE and math.isfinite(r["test_auc"])]
    best = max(probes) if probes else math.nan
    for r in rows:  # how much the LLM readout loses against what the features allow
        r["vs_best_probe"] = r["test_auc"] - best if r["strategy"] != PROBE else math.nan
    return rows


def _planned_7b(projector: str, strategy: str) -> float:
    """The planner's LLaVA-1.5-7B peak for this cell (comparison/real_scale.py); NaN for probes."""
    if strategy == PROBE:
        return math.nan
    return planned_7b_peak_gib(projector, strategy)


def seeds_advice(rows: list[dict], target: float = 0.02) -> dict:
    """The paired test's SE split into image sampling and seed-to-seed spread, and the seeds that
    would bring the minimum detectable difference to ``target`` (None: more seeds alone cannot)."""
    se_image, sd_seed, n_seeds = [], [], []
    for r in rows:
        diffs = [float(d) for d in str(r.get("vs_ref_per_seed") or "").split()]
        if len(diffs) < 2 or not math.isfinite(r.get("vs_ref_se", math.nan)):
            continue
        sd = float(np.std(diffs, ddof=1))
        sd_seed.append(sd)
        n_seeds.append(len(diffs))
        se_image.append(math.sqrt(max(r["vs_ref_se"] ** 2 - sd**2 / len(diffs), 0.0)))
    if not se_image:
        return {"seeds": None, "se_image": math.nan, "sd_seed": math.nan, "target": target}
    img, sd = float(np.median(se_image)), float(np.median(sd_seed))
    return {"seeds": seeds_for_target(img, sd, target), "se_image": img, "sd_seed": sd, "target": target,
            "n_seeds": int(np.median(n_seeds))}  # fmt: skip


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


def _versus_reference(reference: list[dict], runs: list[dict], projector: str, n_boot: int) -> dict:
    empty = {"vs_ref_per_seed": "", "vs_ref_difference": math.nan, "vs_ref_ci_low": math.nan, "vs_ref_ci_high": math.nan,
             "vs_ref_se": math.nan, "vs_ref_verdict": "reference" if projector == REFERENCE else "n/a"}  # fmt: skip
    if projector == REFERENCE or not reference:
        return empty
    ref, own = _by_seed(reference), _by_seed(runs)
    seeds = sorted(set(ref) & set(own))  # the same seeds on both sides
    a = _aligned([own[s] for s in seeds], "test")
    b = _aligned([ref[s] for s in seeds], "test")
    if a is None or b is None or not np.array_equal(a[0], b[0]):
        return empty | {"vs_ref_verdict": "not pairable"}
    result = paired_auc_difference(a[0], a[1], b[1], n_boot=n_boot)
    verdict = "no significant difference"
    if result["significant"]:
        verdict = "better" if result["difference"] > 0 else "worse"
    return {
        "vs_ref_per_seed": " ".join(f"{d:+.3f}" for d in result["per_seed"]),
        "vs_ref_difference": result["difference"],
        "vs_ref_ci_low": result["ci_low"],
        "vs_ref_ci_high": result["ci_high"],
        "vs_ref_se": result["se"],
        "vs_ref_verdict": verdict,
    }


def _peak_mib(record: dict) -> float:
    peak = record["peak_memory"]
    value = peak.get("peak_allocated_mb") if peak.get("device") == "cuda" else peak.get("peak_rss_mb")
    return math.nan if value is None else value  # probes measure none (null in their JSON)


def _peak_kind(record: dict) -> str:
    return "CUDA allocated" if record["peak_memory"].get("device") == "cuda" else "process RSS"


def minimum_detectable(rows: list[dict]) -> float:
    """MDD at 80% power of the paired test, from the median SE of the paired differences."""
    ses = [r["vs_ref_se"] for r in rows if math.isfinite(r.get("vs_ref_se", math.nan))]
    return minimum_detectable_difference(float(np.median(ses))) if ses else math.nan


def _fmt(value, ci=None, digits=3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    text = f"{value:.{digits}f}"
    return text + (f" ± {ci:.{digits}f}" if ci is not None and math.isfinite(ci) else "")


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
        "vs mlp2x_gelu: AUC difference [95% CI] (per seed) | trainable params | projector params | projector MACs/token | "
        f"peak memory MiB ({rows[0]['peak_memory_kind'] if rows else ''}) | planned peak GiB at real scale ({REAL_SCALE_LABEL}) | "
        "s/step | val-test AUC gap (runs > 3 SE) | test AUC minus the best probe's |"
    )
    lines.append("|" + "---|" * 16)
    for r in rows:
        vs = (
            f"{r['vs_ref_difference']:+.3f} [{r['vs_ref_ci_low']:+.3f}, {r['vs_ref_ci_high']:+.3f}] "
            f"**{r['vs_ref_verdict']}** ({r['vs_ref_per_seed']})"
            if math.isfinite(r["vs_ref_difference"])
            else r["vs_ref_verdict"]
        )
        lines.append(
            f"| {r['strategy']} | {r['projector']} | {_init(r['init'])} | {r['seeds']} | {_fmt(r['test_auc'], r['test_auc_ci'])} | "
            f"{_fmt(r['test_accuracy'], r['test_accuracy_ci'])} | {_fmt(r['heldout_auc'], r['heldout_auc_ci'])} | {vs} | "
            f"{r['trainable_params']:,} | {r['projector_params'] or 0:,} | {r['projector_macs_per_token'] or 0:,} | "
            f"{_fmt(r['peak_memory_mib'], digits=0)} | {_fmt(r['planned_7b_peak_gib'], digits=2)} | {_fmt(r['s_per_step'])} | "
            f"{_fmt(r['val_test_gap'], digits=3)} ({r['val_test_gap_flag']}) | {_fmt(r['vs_best_probe'])} |"
        )
    md = out_dir / "comparison.md"
    md.write_text("\n".join(lines) + "\n")
    return csv, md


def write_summary(rows: list[dict], out_dir, mdd: float):
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
        "no significant difference": " (n.s.)",
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
                else f"{_fmt(r['test_auc'], r['test_auc_ci'])}{mark.get(r['vs_ref_verdict'], '')} "
                f"[{_fmt(r.get('planned_7b_peak_gib'), digits=1)} GiB]"
            )
        held = [cell[(p, s)]["heldout_auc"] for s in strategies if (p, s) in cell]
        held = [h for h in held if h is not None and math.isfinite(h)]
        lines.append(
            f"| {p} | " + " | ".join(cells) + f" | {_fmt(float(np.mean(held)) if held else math.nan)} |"
        )
    lines += [
        "",
        f"Mean over seeds ± 95% CI; (better)/(worse): the paired bootstrap against mlp2x_gelu under the same "
        f"strategy excludes 0; (n.s.): it does not. Smallest difference the table can detect (80% power): {mdd:.3f} AUC.",
        f"[planned 7B peak]: the memory planner's peak for the same projector and strategy at real scale "
        f"({REAL_SCALE_LABEL}; llava_df/comparison/real_scale.py), not measured here: the tiny runs' own peaks are in comparison.md.",
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
