"""The comparison's inference, as the protocol fixes it: every projector against the reference per strategy.

    python -m llava_df.sweep.confirm --protocol protocols/confirmatory_v1.yaml --runs results/comparison/runs \\
        --out results/confirmatory                      # the confirmatory tables from the per-run JSONs
    python -m llava_df.sweep.confirm --protocol protocols/confirmatory_v1.yaml --runs results/comparison/runs \\
        --out results/power_pilot --exploratory          # the same analysis of the development sweep, labelled so

Reads the run records (llava_df.sweep.record: per-image test scores), pairs each candidate's seed s
with the reference's seed s under the same strategy, and applies llava_df.sweep.inference:
DeLong image part + seed part, Holm over the protocol's family (BH beside it), TOST at the
protocol's margin, verdicts, effect sizes, and the minimum detectable difference at the seeds run
(t quantiles, pooled seed SD and image SE) with the seeds that would reach the protocol's target.
Writes ``<out>/comparisons.csv``, ``<out>/comparisons.md`` (the header names the protocol file and
its commit, the records' benchmark seed, and the fraction of runs that selected their last epoch).
A record whose benchmark seed is not the protocol's is refused unless ``--exploratory``.

Optional protocol keys (v3; a protocol without them gives exactly the v1/v2 output):

- ``sensitivity_margins: [0.01, 0.015, 0.02]``: the verdicts at each margin and the smallest margin
  each equivalence claim survives (llava_df.sweep.margins) -> ``<out>/margin_sensitivity.{md,csv}``;
- ``secondary: [family_auc, tpr_at_fpr_0.01, ...]``: secondary endpoints, never verdicts
  (llava_df.sweep.secondary; ``bootstrap_draws``, ``bootstrap_seed`` for TPR at FPR's image part)
  -> ``<out>/family_auc.{md,csv}``, ``<out>/tpr_at_fpr.{md,csv}``;
- ``max_last_eval_share: 0.2``: the header gives the share of runs that selected their last
  evaluation per strategy, and says in bold where the epoch cap binds (share above it);
- ``primary: strategy_mean``: the primary family is one comparison per candidate, its difference averaged
  over the strategies (inference.compare_to_reference on [strategies, seeds, N]); the per-strategy
  comparisons are secondary -> ``<out>/per_strategy.{md,csv}`` (Holm over them, smallest margins);
- ``one_commit: true``: the family's records must share one code commit from a clean tree, one machine
  type and one preset (llava_df.sweep.study), else refused unless ``--exploratory``; the header names them.
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import subprocess
from collections import defaultdict
from pathlib import Path

import numpy as np

from llava_df.errors import UsageError, cli_entry
from llava_df.io import write_text
from llava_df.sweep import secondary
from llava_df.sweep.inference import Analysis, adjust_family, compare_to_reference, power_summary
from llava_df.sweep.margins import sensitivity, smallest_margin, write_margin_sensitivity
from llava_df.sweep.protocol import load_protocol
from llava_df.sweep.record import (
    cap_reached_by_strategy,
    last_epoch_by_strategy,
    last_epoch_fraction,
    read_records,
)
from llava_df.sweep.study import check_complete, check_learning_rates, check_one_study, study_line

# The repository's protocol (an editable checkout); an installed wheel has none and uses inference's defaults.
DEFAULT_PROTOCOL = Path(__file__).resolve().parents[2] / "protocols" / "confirmatory_v1.yaml"
STRATEGY_MEAN_KEY = "strategy_mean"  # protocol key ``primary``: one comparison per candidate, over strategies
STRATEGY_MEAN = "mean"
COLUMNS = ("comparison", "strategy", "seeds", "difference", "ci95_low", "ci95_high", "ci90_low", "ci90_high", "se",
           "se_image", "sd_seed", "df", "cohens_dz", "p", "p_holm", "p_bh", "p_tost", "p_tost_holm", "verdict")  # fmt: skip


def _commit_of(path: Path) -> str:
    done = subprocess.run(["git", "log", "-1", "--format=%h %cs", "--", str(path.resolve())], capture_output=True, text=True,
                          cwd=path.resolve().parent)  # fmt: skip
    return done.stdout.strip() or "not committed"


def pair_scores(
    records: list[dict], protocol: dict, exploratory: bool
) -> tuple[dict, np.ndarray | None, list[str]]:
    """({(projector, strategy): {seed: p_fake array}}, labels of the shared test images, notes)."""
    cells: dict = defaultdict(dict)
    y, ids, notes = None, None, []
    for r in records:
        cell = r["cell"]
        if cell["strategy"] not in protocol["strategies"]:
            continue
        seed = (r.get("config", {}).get("data") or {}).get("synthetic_seed")
        if seed != protocol["benchmark_seed"] and not exploratory:
            raise UsageError(
                f"{cell['name']}: benchmark seed {seed}, the protocol's is {protocol['benchmark_seed']}. A confirmatory "
                "table reads only the fresh test set; pass --exploratory to analyse the development runs."
            )
        test = r["scores"]["test"]
        if ids is None:
            ids, y = test["id"], np.asarray(test["is_fake"])
        elif test["id"] != ids:
            raise UsageError(
                f"{cell['name']}: other test images than the first record; runs of one benchmark only."
            )
        cells[(cell["projector"], cell["strategy"])][cell["seed"]] = np.asarray(test["p_fake"], dtype=float)
    return cells, y, notes


def paired(cells: dict, protocol: dict) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """[(name "candidate vs reference | strategy", candidate [k, N], reference [k, N])] in the family's order,
    row s of each side = the s-th paired seed."""
    ref, pairs = protocol["reference"], []
    for strategy in protocol["strategies"]:
        reference = cells.get((ref, strategy), {})
        for candidate in protocol["candidates"]:
            mine = cells.get((candidate, strategy), {})
            seeds = sorted(set(mine) & set(reference))
            if len(seeds) < 2:
                raise UsageError(
                    f"{candidate} vs {ref} under {strategy}: {len(seeds)} paired seeds in the records; the protocol's "
                    "family needs every comparison with at least 2. Run the missing cells, then analyse again."
                )
            pairs.append((f"{candidate} vs {ref} | {strategy}", np.stack([mine[s] for s in seeds]),
                          np.stack([reference[s] for s in seeds])))  # fmt: skip
    return pairs


def over_strategies(pairs: list[tuple[str, np.ndarray, np.ndarray]], protocol: dict) -> list[tuple]:
    """``primary: strategy_mean``: [(name "candidate vs reference | mean of S strategies", candidate [S, k, N],
    reference [S, k, N])], one per candidate, on the seeds every strategy of both sides has."""
    strategies, out = protocol["strategies"], []
    for candidate in protocol["candidates"]:
        mine = [(a, b) for name, a, b in pairs if name.split(" vs ")[0] == candidate]
        k = min(a.shape[0] for a, _ in mine)  # paired() stacks each strategy's shared seeds in order
        if any(a.shape[0] != k for a, _ in mine):
            raise UsageError(
                f"{candidate}: seed counts differ between strategies ({[a.shape[0] for a, _ in mine]}); the mean over "
                "strategies pairs seed s of every strategy. Run the missing cells, then analyse again."
            )
        name = f"{candidate} vs {protocol['reference']} | {STRATEGY_MEAN} of {len(strategies)} strategies"
        out.append((name, np.stack([a for a, _ in mine]), np.stack([b for _, b in mine])))
    return out


def primary_pairs(cells: dict, protocol: dict) -> list[tuple]:
    """The primary family's pairs: one per candidate and strategy, or per candidate (``primary: strategy_mean``)."""
    pairs = paired(cells, protocol)
    return over_strategies(pairs, protocol) if protocol.get("primary") == STRATEGY_MEAN_KEY else pairs


def analyse(records: list[dict], protocol: dict, exploratory: bool = False) -> tuple[list, dict]:
    cells, y, _ = pair_scores(records, protocol, exploratory)
    comparisons = [compare_to_reference(y, a, b, name=name, margin=protocol["margin"])
                   for name, a, b in primary_pairs(cells, protocol)]  # fmt: skip
    family = adjust_family(comparisons, alpha=protocol["alpha"])
    power_info = power_summary(family, Analysis.from_protocol(protocol, "protocol"))
    return family, power_info


def _row(c) -> dict:
    projector, strategy = c.name.split(" | ")
    return {
        "comparison": projector, "strategy": strategy, "seeds": c.seeds, "difference": c.difference,
        "ci95_low": c.ci95[0], "ci95_high": c.ci95[1], "ci90_low": c.ci90[0], "ci90_high": c.ci90[1], "se": c.se,
        "se_image": c.se_image, "sd_seed": c.sd_seed, "df": c.df, "cohens_dz": c.cohens_dz, "p": c.p,
        "p_holm": c.p_holm, "p_bh": c.p_bh, "p_tost": c.p_tost, "p_tost_holm": c.p_tost_holm, "verdict": c.verdict,
    }  # fmt: skip


def render(family, power: dict, protocol: dict, protocol_path: Path, last: tuple[int, int], command: str,
           exploratory: bool, more_header: tuple[str, ...] = ()) -> str:  # fmt: skip
    kind = "EXPLORATORY (development benchmark: not a confirmatory result)" if exploratory else "Confirmatory"
    target, k = protocol["target_mdd"], power["seeds"]
    lines = [
        f"# {kind}: every projector against {protocol['reference']}, test AUC",
        "",
        f"Command: `{command}`. Protocol: `{protocol_path}` (commit {_commit_of(protocol_path)}). Family: "
        f"{power['family_size']} comparisons, Holm at alpha {protocol['alpha']} (BH beside it); equivalence margin "
        f"+-{protocol['margin']} AUC (TOST, Holm over the family).",
        f"**Runs that selected their last epoch: {last[0]} of {last[1]} ({last[0] / max(last[1], 1):.0%}).**",
        *more_header,
        f"Power: pooled image SE {power['pooled_se_image']:.4f}, pooled seed SD of a difference "
        f"{power['pooled_sd_seed']:.4f}; at {k} seeds the minimum detectable difference (80% power, t quantiles) is "
        f"{power['mdd']:.3f} at alpha {protocol['alpha']} and {power['mdd_bonferroni']:.3f} at Holm's first step "
        f"(alpha/{power['family_size']}); {target} needs {power['seeds_for_target'] or 'more than 64'} seeds "
        f"({power['seeds_for_target_bonferroni'] or 'more than 64'} at alpha/{power['family_size']}).",
        "",
        "| comparison | strategy | seeds | difference [95% CI] | 90% CI (TOST) | d_z | p | p Holm | p BH | p TOST Holm | verdict |",
        "|---|---|---:|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for c in family:
        r = _row(c)
        lines.append(
            f"| {r['comparison']} | {r['strategy']} | {r['seeds']} | {r['difference']:+.4f} [{r['ci95_low']:+.4f}, "
            f"{r['ci95_high']:+.4f}] | [{r['ci90_low']:+.4f}, {r['ci90_high']:+.4f}] | {r['cohens_dz']:+.2f} | "
            f"{r['p']:.3g} | {r['p_holm']:.3g} | {r['p_bh']:.3g} | {r['p_tost_holm']:.3g} | {r['verdict']} |"
        )
    counts = defaultdict(int)
    for c in family:
        counts[c.verdict] += 1
    lines += ["", "Verdicts: " + ", ".join(f"{v} {n}" for v, n in sorted(counts.items())) + ".", ""]
    return "\n".join(lines)


def _convergence_lines(study: list[dict], protocol: dict) -> list[str]:
    """The share of runs that selected their last evaluation per strategy, and where the epoch cap binds."""
    cap, by_strategy = protocol["max_last_eval_share"], last_epoch_by_strategy(study)
    shares = {s: by_strategy[s] for s in protocol["strategies"] if s in by_strategy}
    lines = ["Runs whose selected checkpoint is their last evaluation, per strategy: " + ", ".join(
        f"{s} {last} of {runs} ({last / max(runs, 1):.0%})" for s, (last, runs) in shares.items()
    ) + f"; above {cap:.0%} the epoch cap binds."]  # fmt: skip
    lines += [
        f"**The epoch cap binds under {s}.**"
        for s, (last, runs) in shares.items()
        if last / max(runs, 1) > cap
    ]
    at_cap = cap_reached_by_strategy(study)
    if at_cap:  # descriptive: a run cut off at the cap with its best epoch earlier is not in the share above
        lines.append("Runs that trained up to the epoch cap (not stopped by the plateau rule), per strategy: " + ", ".join(
            f"{s} {n} of {m}" for s in protocol["strategies"] if s in at_cap for n, m in [at_cap[s]]
        ) + ".")  # fmt: skip
    return lines


def v3_extras(
    records: list[dict], study: list[dict], family: list, protocol: dict, exploratory: bool
) -> dict:
    """What protocol v3's optional keys add: header lines, the margin sensitivity, the secondary endpoints."""
    alpha, extras = protocol["alpha"], {"header": []}
    if protocol.get("sensitivity_margins"):  # a v3 protocol: its verdicts come from two Holm families
        extras["header"].append(
            f"The difference tests and the TOSTs are two Holm families, each at family-wise alpha {alpha}; a comparison "
            f"gets at most one verdict word, and the chance of any false verdict over both is at most {2 * alpha:g}."
        )
    if protocol.get("one_commit"):
        extras["header"].append(study_line(study))
    if "max_last_eval_share" in protocol:
        extras["header"] += _convergence_lines(study, protocol)
    if protocol.get("sensitivity_margins"):
        extras["margins"] = sensitivity(family, protocol["sensitivity_margins"], alpha)
    family_auc, targets = secondary.endpoints(protocol.get("secondary") or [])
    if (
        protocol.get("primary") == STRATEGY_MEAN_KEY or family_auc or targets
    ):  # the per-strategy pairs, read once
        cells, y, _ = pair_scores(records, protocol, exploratory)
        pairs = paired(cells, protocol)
    if protocol.get("primary") == STRATEGY_MEAN_KEY:
        per = [compare_to_reference(y, a, b, name=name, margin=protocol["margin"]) for name, a, b in pairs]
        extras["per_strategy"] = adjust_family(per, alpha=alpha)
        extras["header"].append(
            f"Primary family: each candidate's difference averaged over the {len(protocol['strategies'])} strategies "
            "(seed s of every strategy paired). Per strategy: secondary, Holm over those "
            f"{len(per)} (per_strategy.md), never a verdict of this study."
        )
    if family_auc or targets:
        if family_auc:
            extras["family_auc"] = secondary.family_auc_comparisons(pairs, y, _manipulation(study), alpha)
        if targets:
            draws = protocol.get("bootstrap_draws", secondary.DRAWS)
            seed = protocol.get("bootstrap_seed", secondary.BOOTSTRAP_SEED)
            by_target = secondary.tpr_comparisons(pairs, y, targets, alpha, draws=draws, seed=seed)
            extras["tpr"] = (by_target, draws, seed)
    return extras


def _manipulation(study: list[dict]) -> np.ndarray:
    """The test images' fake families, which every record of the family must give alike."""
    first = study[0]["scores"]["test"].get("manipulation")
    for r in study:
        if r["scores"]["test"].get("manipulation") != first or first is None:
            raise UsageError(
                f"{r['cell']['name']}: its test scores name no fake family per image, or others than "
                f"{study[0]['cell']['name']}'s; family_auc needs scores.test.manipulation alike in every record. "
                "Rescore the runs with this llava_df, or drop family_auc from the protocol's secondary."
            )
    return np.asarray(first)


def write_per_strategy(out: Path, per: list, protocol: dict) -> None:
    """``<out>/per_strategy.{csv,md}``: the per-strategy comparisons of a ``primary: strategy_mean`` study, Holm over
    them, with the smallest equivalence margin each survives (descriptive)."""
    alpha = protocol["alpha"]
    rows = [
        _row(c) | {"smallest_equivalence_margin": smallest_margin(per, i, alpha)} for i, c in enumerate(per)
    ]
    with open(out / "per_strategy.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*COLUMNS, "smallest_equivalence_margin"])
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        "# Per strategy (secondary): every candidate against the reference under each strategy",
        "",
        f"Descriptive: Holm over these {len(rows)} comparisons at alpha {alpha}, TOST at +-{protocol['margin']}; the "
        "primary family (comparisons.md) is the mean over strategies. Smallest margin: the smallest (to "
        "0.001) at which the comparison is 'equivalent' after Holm over these; '-' for better / worse or none.",
        "",
        "| comparison | strategy | seeds | difference [95% CI] | p Holm | p TOST Holm | verdict | smallest margin |",
        "|---|---|---:|---|---:|---:|---|---:|",
    ]
    for r in rows:
        m = r["smallest_equivalence_margin"]
        lines.append(
            f"| {r['comparison']} | {r['strategy']} | {r['seeds']} | {r['difference']:+.4f} [{r['ci95_low']:+.4f}, "
            f"{r['ci95_high']:+.4f}] | {r['p_holm']:.3g} | {r['p_tost_holm']:.3g} | {r['verdict']} | "
            f"{'-' if m is None else f'{m:.3f}'} |"
        )
    write_text(out / "per_strategy.md", "\n".join(lines) + "\n")


def write_v3_extras(out: Path, extras: dict, protocol: dict) -> None:
    if "per_strategy" in extras:
        write_per_strategy(out, extras["per_strategy"], protocol)
    if "margins" in extras:
        write_margin_sensitivity(out, extras["margins"], protocol["sensitivity_margins"], protocol["alpha"])
    if "family_auc" in extras:
        secondary.write_family_auc(out, extras["family_auc"])
    if "tpr" in extras:
        secondary.write_tpr_at_fpr(out, *extras["tpr"])


@cli_entry
def main(argv: list[str]) -> dict:
    ap = argparse.ArgumentParser(prog="python -m llava_df.sweep.confirm", description=__doc__.split("\n")[0])
    ap.add_argument("--protocol", required=True, type=Path)
    ap.add_argument(
        "--runs", required=True, type=Path, help="A folder of run records (results/comparison/runs)."
    )
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument(
        "--exploratory", action="store_true", help="Analyse records of another benchmark seed, labelled so."
    )
    args = ap.parse_args(argv)
    protocol = load_protocol(args.protocol)
    secondary.endpoints(protocol.get("secondary") or [])  # a misspelt endpoint is refused before any reading
    if not args.runs.is_dir():
        raise UsageError(f"--runs {args.runs}: no such folder. Pass the folder of the sweep's run records.")
    records, bad = read_records(args.runs.parent if args.runs.name == "runs" else args.runs)
    records = [r for r in records if r["cell"]["strategy"] != "probe"]
    if bad:
        raise UsageError(f"{len(bad)} unreadable records, e.g. {bad[0][0]} ({bad[0][1]}); rerun those cells.")
    study = [r for r in records if r["cell"]["strategy"] in protocol["strategies"]
             and r["cell"]["projector"] in (protocol["reference"], *protocol["candidates"])]  # fmt: skip
    if not args.exploratory:
        check_complete(study, protocol)
        check_learning_rates(study, protocol)
    if protocol.get("one_commit") and not args.exploratory:
        check_one_study(study, machine=protocol.get("machine"))
    family, power = analyse(records, protocol, exploratory=args.exploratory)
    # v3's additions are computed (and their inputs checked) before the output folder is touched
    extras = v3_extras(records, study, family, protocol, args.exploratory)
    command = shlex.join(["python", "-m", "llava_df.sweep.confirm", *argv])
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [_row(c) for c in family]
    with open(args.out / "comparisons.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    last = last_epoch_fraction(records)
    write_text(
        args.out / "comparisons.md",
        render(family, power, protocol, args.protocol, last, command, args.exploratory, extras["header"]),
    )
    write_v3_extras(args.out, extras, protocol)
    write_text(args.out / "power.json", json.dumps(power | {"command": command}, indent=1) + "\n")
    print((args.out / "comparisons.md").read_text())
    return {"family": rows, "power": power}


if __name__ == "__main__":
    main()
