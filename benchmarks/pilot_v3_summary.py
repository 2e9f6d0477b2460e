"""The v3 pilot's summary, from its run records alone: cost, where runs stop, seed spread, and the sizing table.

    python benchmarks/pilot_v3_summary.py                       # results/pilot_v3 -> results/pilot_v3/summary.{md,json}
    python benchmarks/pilot_v3_summary.py --allow_incomplete    # a progress view while cells are missing (marked so)

What protocols/pilot_v3.md says the pilot decides, computed the way it fixed:

- Epoch cap of v3: per strategy, the largest stopping epoch among the pilot's runs plus 2, and at
  least the epoch after the largest selected epoch; if any run reached the pilot's own cap (12) the
  cap binds at this learning rate, and the summary says so instead of proposing a cap.
- Cost: CPU seconds per epoch per (projector, strategy): the record's process CPU time less its final
  scoring (scored images x the zero-shot rows' scoring seconds per image), over the epochs it ran.
- Seed spread: per strategy, the paired test-AUC difference (candidate minus reference) per seed, its
  SD over seeds, and the image part of its SE (DeLong on the shared test images). The power figures
  use the larger of the pilot's pooled SD and protocol v2's 0.0120, as the pilot protocol fixed.

Sizing (the table protocol v3 chooses its test-set size and seed count from): for test sets of N
in-distribution images and k seeds, the image SE scaled by sqrt(N_pilot / N), the minimum detectable
difference at Holm's first step over the primary family (alpha / family) and the smallest equivalence
margin a true difference of 0 clears with the same power, and the CPU hours per seed at the pilot's
mean stopping epoch and at the cap.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from pathlib import Path

import numpy as np
from scipy import stats as scipy_stats

from llava_df.errors import UsageError
from llava_df.io import write_json, write_text
from llava_df.sweep.delong import delong
from llava_df.sweep.inference import _satterthwaite, minimum_detectable_difference
from llava_df.sweep.record import read_records
from llava_df.sweep.report import machine_name

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results" / "pilot_v3"
REFERENCE, CANDIDATE = "mlp2x_gelu", "bottleneck_h64_silu"  # protocols/pilot_v3.md: the largest and smallest
STRATEGIES = ("projector_only", "lora", "unfreeze_early")
SEEDS = (0, 1)
PILOT_CAP = 12  # smol_converge.yaml's num_train_epochs
V2_SD_SEED = 0.0120  # results/power_pilot/power.json: protocol v2's pooled seed SD of a difference
FAMILY = 12  # protocol v3's primary family: 4 candidates x 3 strategies
# Cells per strategy and seed in v3: the reference, 4 candidates and the head study's mlp2x_gelu with
# --answer_head classifier (the draft puts the head inside the study, so it is inside the budget too)
V3_CELLS = 6
TEST_SIZES = (450, 1000, 2000, 4000)
SEED_COUNTS = (3, 4, 5, 6, 7, 8)
# The two designs the draft of protocol v3 (c685a03: protocols/confirmatory_v3.draft.md, replaced by
# protocols/confirmatory_v3.md) chooses between (its "Choice of design" rule), before the
# pilot's seed 1 is seen: the per-strategy family of 12, or one comparison per candidate averaged over the
# three strategies (inference.compare_to_reference on [strategies, seeds, N]), a family of 4.
DESIGNS = {"per_strategy": FAMILY, "strategy_mean": 4}
PRIMARY_MARGIN = 0.015  # the draft's primary margin (AUC)
BUDGET_CPU_H = 60  # the draft's budget for the study at the epoch cap (grid excluded)
# Protocol v2's confirmatory records: how much averaging over the 3 strategies shrank the seed SD of a
# difference there; the strategy-mean design's floor is v2's 0.0120 times that ratio (the per-strategy rule's
# analogue), unless the pilot's own strategy-mean SD is larger.
V2_RUNS = ROOT / "results" / "confirmatory_v2" / "comparison" / "runs"


def epochs_run(record: dict) -> int:
    """Epochs the run trained: its optimizer steps over the steps of one epoch (train images / batch)."""
    train = record["data"]["splits"]["train"]
    t = record["config"]["training"]
    per_epoch = math.ceil(
        train / (t["per_device_train_batch_size"] * t.get("gradient_accumulation_steps", 1))
    )
    return round(record["steps"] / per_epoch)


def scoring_s_per_image(zero_shot: list[dict]) -> float:
    """Seconds per scored image of the zero-shot rows (scoring only, no training): their scoring_s over images."""
    seconds = sum(r["time"]["scoring_s"] for r in zero_shot)
    images = sum(len(split["id"]) for r in zero_shot for split in r["scores"].values())
    if not images:
        raise UsageError("no zero-shot row with scores: run the pilot's command (it scores them first).")
    return seconds / images


def cell_row(record: dict, s_per_image: float) -> dict:
    epochs = epochs_run(record)
    best = record["metrics"]["best_val_entry"]
    scored = sum(len(split["id"]) for split in record["scores"].values())
    cpu = record["time"]["process_cpu_s"]
    return {
        "projector": record["cell"]["projector"], "strategy": record["cell"]["strategy"], "seed": record["cell"]["seed"],
        "epochs": epochs, "selected_epoch": round(best["epoch"]), "last_eval": best["step"] == record["steps"],
        "at_cap": epochs >= PILOT_CAP, "cpu_s": cpu, "scored_images": scored,
        "cpu_s_per_epoch": (cpu - scored * s_per_image) / epochs,
        "test_auc": record["metrics"]["test"]["auc"], "val_auc": best["auc"],
    }  # fmt: skip


def epoch_cap(rows: list[dict]) -> dict:
    """Per strategy: the cap protocols/pilot_v3.md's rule gives (None where a pilot run reached the pilot's cap)."""
    out = {}
    for strategy in STRATEGIES:
        mine = [r for r in rows if r["strategy"] == strategy]
        if not mine:
            continue
        binds = any(r["at_cap"] for r in mine)
        cap = max(max(r["epochs"] for r in mine) + 2, max(r["selected_epoch"] for r in mine) + 1)
        out[strategy] = {"cap": None if binds else cap, "binds_at_pilot_cap": binds,
                         "largest_stop": max(r["epochs"] for r in mine),
                         "largest_selected": max(r["selected_epoch"] for r in mine)}  # fmt: skip
    return out


def _test_arrays(record: dict) -> tuple[list[str], np.ndarray, np.ndarray]:
    test = record["scores"]["test"]
    return test["id"], np.asarray(test["is_fake"], dtype=int), np.asarray(test["p_fake"], dtype=float)


def _same_test_images(a: dict, b: dict) -> None:
    ids_a, y_a, _ = _test_arrays(a)
    ids_b, y_b, _ = _test_arrays(b)
    if ids_a != ids_b or not np.array_equal(y_a, y_b):
        raise UsageError(
            f"{a['cell']['name']} and {b['cell']['name']} scored different test images; "
            "a pilot pair must share its split (same benchmark seed and recipe). Rerun the pilot's command."
        )


def paired_difference(candidate: dict, reference: dict) -> dict:
    """One seed's test-AUC difference (candidate - reference) on the shared test images and its DeLong SE."""
    _same_test_images(candidate, reference)
    _, y, c = _test_arrays(candidate)
    r = _test_arrays(reference)[2]
    auc, cov = delong(y, np.vstack([c, r]))
    return {"difference": float(auc[0] - auc[1]), "se_image": float(math.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])),
            "n_test": int(len(y))}  # fmt: skip


def seed_spread(records: dict[tuple[str, str, int], dict]) -> dict:
    """Per strategy: each seed's paired difference, their SD (None with one seed) and the RMS image SE."""
    out = {}
    for strategy in STRATEGIES:
        seeds = [
            s for s in SEEDS if (REFERENCE, strategy, s) in records and (CANDIDATE, strategy, s) in records
        ]
        if not seeds:
            continue
        pairs = {
            s: paired_difference(records[(CANDIDATE, strategy, s)], records[(REFERENCE, strategy, s)])
            for s in seeds
        }
        d = [pairs[s]["difference"] for s in seeds]
        out[strategy] = {"per_seed": pairs, "sd_seed": float(np.std(d, ddof=1)) if len(d) > 1 else None,
                         "se_image": float(math.sqrt(np.mean([p["se_image"] ** 2 for p in pairs.values()]))),
                         "n_test": pairs[seeds[0]]["n_test"]}  # fmt: skip
    return out


def strategy_mean_spread(records: dict[tuple[str, str, int], dict]) -> dict | None:
    """The strategy-mean design's spread: per seed with every strategy on both sides, the difference averaged over
    the strategies and its image SE (DeLong's c' S c over the 2 x 3 runs of that seed); their SD over seeds
    (None with one seed) and the RMS image SE. None when no seed has every strategy."""
    seeds = [
        s for s in SEEDS if all((p, st, s) in records for p in (CANDIDATE, REFERENCE) for st in STRATEGIES)
    ]
    if not seeds:
        return None
    per = {}
    for seed in seeds:
        runs = [records[(p, st, seed)] for p in (CANDIDATE, REFERENCE) for st in STRATEGIES]
        ids, y, _ = _test_arrays(runs[0])
        for r in runs[1:]:
            _same_test_images(r, runs[0])
        aucs, cov = delong(y, np.vstack([_test_arrays(r)[2] for r in runs]))
        n = len(STRATEGIES)
        contrast = np.concatenate([np.full(n, 1 / n), np.full(n, -1 / n)])
        per[seed] = {"difference": float(contrast @ aucs), "se_image": float(math.sqrt(max(contrast @ cov @ contrast, 0))),
                     "n_test": len(ids)}  # fmt: skip
    d = [p["difference"] for p in per.values()]
    return {"per_seed": per, "sd_seed": float(np.std(d, ddof=1)) if len(d) > 1 else None,
            "se_image": float(math.sqrt(np.mean([p["se_image"] ** 2 for p in per.values()]))),
            "n_test": per[seeds[0]]["n_test"]}  # fmt: skip


def v2_averaging_ratio(runs_dir: Path = V2_RUNS) -> dict:
    """From protocol v2's confirmatory records: the pooled seed SD of a per-strategy difference, that of the
    difference averaged over the strategies, and their ratio (how much the averaging shrank the seed part)."""
    from sklearn.metrics import roc_auc_score

    records, _ = read_records(runs_dir.parent)
    auc = {(r["cell"]["projector"], r["cell"]["strategy"], r["cell"]["seed"]):
           roc_auc_score(r["scores"]["test"]["is_fake"], r["scores"]["test"]["p_fake"]) for r in records if "steps" in r}  # fmt: skip
    if not auc:
        raise UsageError(
            f"{runs_dir}: no protocol v2 run records; the strategy-mean design's floor is read from them."
        )
    reference = "mlp2x_gelu"
    per_strategy, mean = [], []
    for candidate in sorted({p for p, _, _ in auc} - {reference}):
        strategies = sorted({s for p, s, _ in auc if p == candidate})
        seeds = sorted(k for p, s, k in auc if p == candidate and s == strategies[0])
        d = np.array([[auc[(candidate, s, k)] - auc[(reference, s, k)] for k in seeds] for s in strategies])
        per_strategy += list(d.std(axis=1, ddof=1) ** 2)
        mean.append(d.mean(axis=0).std(ddof=1) ** 2)
    sd_per, sd_mean = math.sqrt(np.mean(per_strategy)), math.sqrt(np.mean(mean))
    return {"sd_per_strategy": sd_per, "sd_strategy_mean": sd_mean, "ratio": sd_mean / sd_per,
            "source": str(runs_dir.relative_to(ROOT) if runs_dir.is_relative_to(ROOT) else runs_dir)}  # fmt: skip


def equivalence_margin_reachable(
    se_image: float, sd_seed: float, seeds: int, alpha: float, power: float
) -> float:
    """The smallest TOST margin a true difference of 0 clears with probability ~``power`` at one-sided level
    ``alpha``: (t_{1-alpha, df} + t_{1-(1-power)/2, df}) x SE, SE and df as in the confirmatory analysis."""
    var_seed = sd_seed**2 / seeds
    se = math.sqrt(se_image**2 + var_seed)
    t = scipy_stats.t(_satterthwaite(se_image**2, var_seed, seeds))
    return float((t.ppf(1 - alpha) + t.ppf(1 - (1 - power) / 2)) * se)


def design_inputs(spread: dict, mean_spread: dict | None, ratio: dict | None) -> dict:
    """{design: (image SE at the pilot's N, seed SD used, pilot N)}: per strategy, the worst strategy's image SE
    and the larger of the pilot's pooled SD and v2's; strategy mean, the pilot's strategy-mean image SE and the
    larger of the pilot's strategy-mean SD and v2's SD times v2's averaging ratio."""
    sds = [v["sd_seed"] for v in spread.values() if v["sd_seed"] is not None]
    n_pilot = next(iter(spread.values()))["n_test"]
    out = {"per_strategy": (max(v["se_image"] for v in spread.values()),
                            max([V2_SD_SEED, math.sqrt(np.mean(np.square(sds)))] if sds else [V2_SD_SEED]), n_pilot)}  # fmt: skip
    if mean_spread and ratio:
        floor = V2_SD_SEED * ratio["ratio"]
        sd = max(floor, mean_spread["sd_seed"]) if mean_spread["sd_seed"] is not None else floor
        out["strategy_mean"] = (mean_spread["se_image"], sd, mean_spread["n_test"])
    return out


def sizing(
    spread: dict,
    cost: dict,
    s_per_image: float,
    caps: dict,
    alpha: float = 0.05,
    power: float = 0.8,
    mean_spread: dict | None = None,
    ratio: dict | None = None,
) -> list[dict]:
    """The sizing table: per design, test-set size N and seed count k, power at Holm's first step over that
    design's family and CPU hours (the same cells in both designs)."""
    if not spread:
        return []
    rows = []
    for design, (se_pilot, sd_seed, n_pilot) in design_inputs(spread, mean_spread, ratio).items():
        rows += _design_rows(design, se_pilot, sd_seed, n_pilot, cost, s_per_image, caps, alpha, power)
    return rows


def _design_rows(design, se_pilot, sd_seed, n_pilot, cost, s_per_image, caps, alpha, power) -> list[dict]:
    family = DESIGNS[design]
    study_cap = max(c["cap"] or PILOT_CAP for c in caps.values())  # one recipe, so one cap: the largest
    rows = []
    for n in TEST_SIZES:
        se_image = se_pilot * math.sqrt(n_pilot / n)
        # images scored per cell grow with the test split (its heldout part grows with it): pilot ratio
        images = n * (1 + 450 / n_pilot) + 360  # test + heldout (the pilot's 450 each) scaled, + validation
        for k in SEED_COUNTS:
            hours = {}
            for label, epochs_of in (
                ("mean_stop", lambda s: cost[s]["mean_epochs"]),
                ("cap", lambda s: study_cap),
            ):
                per_seed = sum(V3_CELLS * (epochs_of(s) * cost[s]["cpu_s_per_epoch"] + images * s_per_image)
                               for s in cost)  # fmt: skip
                hours[label] = per_seed / 3600
            rows.append({
                "design": design, "family": family, "n_test": n, "seeds": k, "se_image": se_image, "sd_seed": sd_seed,
                "mdd_holm_first": minimum_detectable_difference(se_image, sd_seed, k, alpha=alpha / family, power=power),
                "margin_holm_first": equivalence_margin_reachable(se_image, sd_seed, k, alpha / family, power),
                "cpu_h_per_seed_mean_stop": hours["mean_stop"], "cpu_h_per_seed_cap": hours["cap"],
                "cpu_h_study_cap": hours["cap"] * k,
            })  # fmt: skip
    return rows


def choose(rows: list[dict], margin: float = PRIMARY_MARGIN, budget: float = BUDGET_CPU_H) -> dict | None:
    """The draft's rule, in order: (1) the per-strategy design's cheapest (N, k) within the budget (CPU h at the
    cap) whose reachable margin is at most the primary margin; else (2) the strategy-mean design's; else (3) the
    strategy-mean design's (N, k) within the budget with the smallest reachable margin, that margin then stated
    as the study's power. Ties: fewer CPU h, then fewer seeds. None without a row within the budget."""
    fits = [r for r in rows if r["cpu_h_study_cap"] <= budget]
    for design in DESIGNS:
        reach = [r for r in fits if r["design"] == design and r["margin_holm_first"] <= margin]
        if reach:
            best = min(reach, key=lambda r: (r["cpu_h_study_cap"], r["seeds"]))
            return best | {"rule": f"{design}: the cheapest pair reaching +-{margin} within {budget} CPU h"}
    mean = [r for r in fits if r["design"] == "strategy_mean"]
    if not mean:
        return None
    best = min(mean, key=lambda r: (round(r["margin_holm_first"], 3), r["cpu_h_study_cap"], r["seeds"]))
    return best | {"rule": f"no pair reaches +-{margin} within {budget} CPU h: the strategy-mean pair with the "
                           "smallest reachable margin, stated as the study's power"}  # fmt: skip


def summarise(records: list[dict], allow_incomplete: bool, v2_runs: Path = V2_RUNS) -> dict:
    zero_shot = [r for r in records if r["cell"]["strategy"].startswith("zero_shot")]
    runs = {
        (r["cell"]["projector"], r["cell"]["strategy"], r["cell"]["seed"]): r for r in records if "steps" in r
    }
    expected = [(p, s, k) for k in SEEDS for s in STRATEGIES for p in (REFERENCE, CANDIDATE)]
    missing = [f"{p}__{s}__seed{k}" for p, s, k in expected if (p, s, k) not in runs]
    if missing and not allow_incomplete:
        raise UsageError(
            f"the pilot is incomplete: no record for {', '.join(missing)}. Run protocols/pilot_v3.md's command "
            "until every cell has one, or pass --allow_incomplete for a progress view (marked so)."
        )
    s_per_image = scoring_s_per_image(zero_shot)
    rows = [cell_row(runs[key], s_per_image) for key in expected if key in runs]
    caps = epoch_cap(rows)
    cost = {}
    for strategy in STRATEGIES:
        mine = [r for r in rows if r["strategy"] == strategy]
        if mine:
            cost[strategy] = {"cpu_s_per_epoch": float(np.mean([r["cpu_s_per_epoch"] for r in mine])),
                              "mean_epochs": float(np.mean([r["epochs"] for r in mine])), "runs": len(mine)}  # fmt: skip
    spread = seed_spread(runs)
    mean_spread = strategy_mean_spread(runs)
    ratio = v2_averaging_ratio(v2_runs) if mean_spread else None
    table = (
        sizing(spread, cost, s_per_image, caps, mean_spread=mean_spread, ratio=ratio)
        if set(cost) == set(STRATEGIES)
        else []
    )
    commits = sorted({(r["env"]["git"]["commit"], bool(r["env"]["git"]["dirty"])) for r in records})
    return {
        "complete": not missing, "missing": missing, "rows": rows, "epoch_cap": caps, "cost": cost,
        "scoring_s_per_image": s_per_image, "seed_spread": spread, "strategy_mean_spread": mean_spread,
        "v2_averaging": ratio, "sizing": table, "choice": choose(table) if table else None,
        "commits": [{"commit": c, "dirty": d} for c, d in commits],
        "machines": sorted({machine_name(r["env"]["device"]) for r in records}),
        "last_eval_by_strategy": {s: [sum(r["last_eval"] for r in rows if r["strategy"] == s),
                                      sum(1 for r in rows if r["strategy"] == s)] for s in cost},
    }  # fmt: skip


def render(summary: dict, command: str) -> str:
    s = summary
    head = (
        "" if s["complete"] else f"**INCOMPLETE: a progress view.** Missing: {', '.join(s['missing'])}.\n\n"
    )
    code = ", ".join(f"{c['commit'][:7]}{' (dirty)' if c['dirty'] else ' (clean)'}" for c in s["commits"])
    lines = [
        "# Pilot v3 summary (protocols/pilot_v3.md), from the run records alone", "",
        head + f"Command: `{command}`. Records: code {code}; machine: {', '.join(s['machines'])}. "
        "Development benchmark (synthetic seed 0): sizing only, never confirmatory evidence.", "",
        "## Cells", "",
        "| projector | strategy | seed | epochs run | selected epoch | last eval | CPU s | CPU s/epoch | val AUC | test AUC |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|---:|",
    ]  # fmt: skip
    for r in s["rows"]:
        lines.append(f"| {r['projector']} | {r['strategy']} | {r['seed']} | {r['epochs']}{' (cap)' if r['at_cap'] else ''} | "
                     f"{r['selected_epoch']} | {'yes' if r['last_eval'] else 'no'} | {r['cpu_s']:.0f} | "
                     f"{r['cpu_s_per_epoch']:.0f} | {r['val_auc']:.3f} | {r['test_auc']:.3f} |")  # fmt: skip
    lines += ["", f"CPU s/epoch: process CPU time less the final scoring ({s['scoring_s_per_image']:.3f} s per scored "
              "image, the zero-shot rows' scoring time over their images), over the epochs run.", "",
              "## Epoch cap (the pilot protocol's rule: largest stop + 2, at least largest selected + 1)", "",
              "| strategy | largest stop | largest selected | runs at last eval | cap for v3 |", "|---|---:|---:|---:|---|"]  # fmt: skip
    for strategy, c in s["epoch_cap"].items():
        last, n = s["last_eval_by_strategy"][strategy]
        cap = (
            "binds: a pilot run reached 12; v3's grid needs larger rates"
            if c["binds_at_pilot_cap"]
            else str(c["cap"])
        )
        lines.append(f"| {strategy} | {c['largest_stop']} | {c['largest_selected']} | {last}/{n} | {cap} |")
    lines += ["", "## Seed spread (bottleneck_h64_silu minus mlp2x_gelu, test AUC)", "",
              "| strategy | per seed: D (image SE) | SD over seeds | test images |", "|---|---|---:|---:|"]  # fmt: skip
    for strategy, v in s["seed_spread"].items():
        per = "; ".join(
            f"seed {k}: {p['difference']:+.4f} ({p['se_image']:.4f})" for k, p in v["per_seed"].items()
        )
        sd = "-" if v["sd_seed"] is None else f"{v['sd_seed']:.4f}"
        lines.append(f"| {strategy} | {per} | {sd} | {v['n_test']} |")
    m = s.get("strategy_mean_spread")
    if m:
        per = "; ".join(
            f"seed {k}: {p['difference']:+.4f} ({p['se_image']:.4f})" for k, p in m["per_seed"].items()
        )
        sd = "-" if m["sd_seed"] is None else f"{m['sd_seed']:.4f}"
        lines.append(f"| mean of the 3 strategies | {per} | {sd} | {m['n_test']} |")
    if s.get("v2_averaging"):
        v = s["v2_averaging"]
        lines += ["", f"Protocol v2's records ({v['source']}): pooled seed SD of a per-strategy difference "
                  f"{v['sd_per_strategy']:.4f}, of the difference averaged over the 3 strategies {v['sd_strategy_mean']:.4f} "
                  f"(ratio {v['ratio']:.3f}; independent strategies would give {1 / math.sqrt(3):.3f})."]  # fmt: skip
    for design, family in DESIGNS.items():
        rows = [r for r in s["sizing"] if r["design"] == design]
        if not rows:
            continue
        what = ("each candidate per strategy" if design == "per_strategy"
                else "each candidate's difference averaged over the 3 strategies")  # fmt: skip
        lines += ["", f"## Sizing for v3, design {design} ({what}): family {family}, Holm's first step alpha/{family}, "
                  "power 0.8", "",
                  f"Seed SD used: {rows[0]['sd_seed']:.4f} "
                  + ("(the larger of the pilot's pooled SD and v2's 0.012)" if design == "per_strategy" else
                     "(the larger of the pilot's strategy-mean SD and v2's 0.012 x v2's averaging ratio)")
                  + f"; image SE: the pilot's {'worst strategy' if design == 'per_strategy' else 'strategy-mean'} "
                  f"image SE scaled by sqrt(N_pilot / N). CPU h: {V3_CELLS} cells (5 projectors and the classifier head) x 3 strategies per seed, at "
                  "the pilot's mean stopping epoch and at the cap, plus scoring (test and held-out grow with N).", "",
                  f"| test images N | seeds k | image SE | MDD at alpha/{family} | equivalence margin reachable at "
                  f"alpha/{family} | CPU h/seed (mean stop) | CPU h/seed (cap) | CPU h, study at cap |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        for r in rows:
            lines.append(f"| {r['n_test']} | {r['seeds']} | {r['se_image']:.4f} | {r['mdd_holm_first']:.3f} | "
                         f"{r['margin_holm_first']:.3f} | {r['cpu_h_per_seed_mean_stop']:.1f} | "
                         f"{r['cpu_h_per_seed_cap']:.1f} | {r['cpu_h_study_cap']:.0f} |")  # fmt: skip
    c = s.get("choice")
    if c:
        lines += ["", "## The draft's choice of design (its rule: c685a03, before seed 1; in force: protocols/confirmatory_v3.md)", "",
                  f"**{c['design']}, N = {c['n_test']} test images, k = {c['seeds']} seeds**: reachable equivalence "
                  f"margin {c['margin_holm_first']:.3f} at alpha/{c['family']}, MDD {c['mdd_holm_first']:.3f}, "
                  f"{c['cpu_h_study_cap']:.0f} CPU h at the cap. Rule applied: {c['rule']}."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results_dir", type=Path, default=RESULTS)
    parser.add_argument("--allow_incomplete", action="store_true")
    parser.add_argument(
        "--v2_runs", type=Path, default=V2_RUNS, help="protocol v2's confirmatory run records"
    )
    args = parser.parse_args(argv)
    runs = args.results_dir / "comparison" / "runs"
    try:
        records, bad = read_records(runs.parent)
        if bad:
            raise UsageError(
                f"{bad[0][0]}: not a complete run record ({bad[0][1]}); remove it or rerun its cell."
            )
        if not records:
            raise UsageError(
                f"--results_dir {args.results_dir}: no run records under {runs}. Run the pilot first."
            )
        summary = summarise(records, args.allow_incomplete, v2_runs=args.v2_runs)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    command = "python benchmarks/pilot_v3_summary.py" + "".join(
        f" {shlex.quote(a)}" for a in (argv or sys.argv[1:])
    )
    name = "summary" if summary["complete"] else "summary_incomplete"
    write_text(args.results_dir / f"{name}.md", render(summary, command))
    write_json(args.results_dir / f"{name}.json", {"command": command, **summary})
    print(f"wrote {args.results_dir / (name + '.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
