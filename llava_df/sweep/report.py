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
from llava_df.sweep.cells import REFERENCE, ZERO_SHOT_STRATEGIES
from llava_df.sweep.confirm import DEFAULT_PROTOCOL, load_protocol
from llava_df.sweep.inference import Analysis, power_summary
from llava_df.sweep.plots import write_plots
from llava_df.sweep.record import answer_head, last_epoch_fraction, read_records
from llava_df.sweep.stats import hanley_mcneil_se
from llava_df.sweep.tables import comparison_rows, write_summary, write_tables

logger = logging.getLogger(__name__)
# Below this many test images per class a run's AUC has a standard error above ~0.05.
MIN_PER_CLASS = 50


def machine_name(device: dict) -> str:
    """The machine a table names, from provenance's device record."""
    # provenance.device_info writes cuda (bool) and gpu; "type"/"gpu_name" is an older spelling
    if device.get("cuda") or device.get("type") == "cuda":
        return f"{device.get('gpu') or device.get('gpu_name')} x{device.get('gpu_count')}"
    return f"{device.get('cpu_model')}, {device.get('cpu_count')} cores, no GPU"


def runs_machine(records: list[dict]) -> str:
    """The machine(s) the runs were made on, from each record's own env (never the machine that
    aggregates them: tables are often rebuilt elsewhere), with counts where they differ. Training
    records only: a probe record's env names the device type alone."""
    devices = [r["env"]["device"] for r in records if "steps" in r and "device" in (r.get("env") or {})]
    return _counted(map(machine_name, devices), "{name} ({n} runs)") or "not recorded"


def _counted(names, form: str = "{name} x{n}") -> str:
    """Distinct names in order, each with its count where there is more than one name."""
    seen: dict[str, int] = {}
    for name in names:
        seen[name] = seen.get(name, 0) + 1
    return ", ".join(form.format(name=name, n=n) if len(seen) > 1 else name for name, n in seen.items())


def analysis_settings(protocol: Path | None = None) -> Analysis:
    """The protocol's margin, alpha, power and benchmark seed: ``protocol``, else the repository's
    protocols/confirmatory_v1.yaml (the development default), else (an installed wheel) the same values built in."""
    path = protocol or DEFAULT_PROTOCOL
    if protocol is None and not path.is_file():
        return Analysis()
    shown = path.resolve()
    if shown.is_relative_to(DEFAULT_PROTOCOL.parents[1]):  # the repository's own: named from its root
        shown = shown.relative_to(DEFAULT_PROTOCOL.parents[1])
    return Analysis.from_protocol(load_protocol(path), source=str(shown))


def aggregate(results_dir: Path, command: str, protocol: Path | None = None) -> dict:
    """Tables and plots from the run JSONs alone, judged by the protocol's analysis."""

    out = results_dir / "comparison"
    records, bad = read_records(out)
    if not records:
        raise UsageError(f"{out / 'runs'} holds no complete run record: run the sweep first.")
    analysis = analysis_settings(protocol)
    heads = sorted({answer_head(r) for r in records if "steps" in r})
    if len(heads) > 1:
        raise UsageError(
            f"{out / 'runs'} holds runs of --answer_head {' and '.join(heads)}: one table would mix them. Keep each answer "
            "head in its own --results_dir; python -m llava_df.sweep.heads compares two of them."
        )
    rows, family = comparison_rows(records, analysis)
    power = power_summary(family, analysis) if family else None
    env = run_environment()
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
            f"Runs made on: {runs_machine(records)}; {_run_packages(records)}; the runs' code: {_run_commits(records)}; "
            f"tables built on {machine_name(env['device'])}.",
            f"Runs: {len(records)} records{f', {len(bad)} unreadable and skipped' if bad else ''}; "
            f"in-distribution test set {test_sizes}; {_val_size(records)}.",
            _status_line(records, analysis),
            *(
                [
                    "Answer: `--answer_head classifier`, a 2-class head on the LLM's last hidden state in place of lm_head "
                    "(llava_df/model/answer_head.py), not the LLM's generated word."
                ]
                if heads == ["classifier"]
                else []
            ),
            f"Each projector against {REFERENCE} under the same strategy, as the protocol fixes it "
            f"(settings from {analysis.source}; its reasons in the .md beside it): the test-AUC difference averaged over paired seeds, its error from the "
            "shared test images (DeLong) plus the seed-to-seed spread (t, Welch-Satterthwaite df); Holm over the "
            f"{len(family)} comparisons of this table at alpha {analysis.alpha} (BH in comparison.csv); equivalence by "
            f"TOST at ±{analysis.margin} AUC, Holm-adjusted. Verdict: better / worse (Holm p < {analysis.alpha}), "
            "equivalent (TOST Holm p < alpha), else not resolved at this power. Selection: best/ is the epoch with the "
            "lowest validation loss (the plateau schedule's criterion), never the test split.",
            _power_line(power, analysis),
            _last_epoch_line(records),
            "Probe rows (strategy probe): linear / MLP / KAN probes on the frozen tower's features, the same splits "
            "(`--only_probes` recomputes them; llava_df/sweep/probes.py); the last column is each row's test AUC minus the "
            "best probe's.",
            *(
                [
                    "Zero-shot rows (strategies zero_shot, zero_shot_yes_no): each projector's stage-1 model asked before any "
                    "detection training, the sweep's own question (P of the fake answer's first token against the real "
                    "one's) and 'Is this face fake? Answer yes or no.' (P(Yes) against P(No)), scored as the trained cells "
                    "are (llava_df/sweep/zeroshot.py); beside the comparison, never in its tests."
                ]
                if any(r["cell"]["strategy"] in ZERO_SHOT_STRATEGIES for r in records)
                else []
            ),
            "Accuracy is at each run's decision threshold, chosen on its validation scores (--threshold_rule, default the EER point); peak memory "
            f"is {rows[0]['peak_memory_kind']} of the whole run (tiny preset: what the run measured, not a 7B figure).",
        ]
    )
    csv, md = write_tables(rows, results_dir, header)
    summary_md = write_summary(rows, results_dir, analysis, power)
    plots = write_plots(rows, records, results_dir)
    print(md.read_text())
    for path, why in bad:
        print(f"skipped {path}: {why}", file=sys.stderr)
    return {
        "rows": rows,
        "files": [str(csv), str(md), str(summary_md), *map(str, plots)],
        "skipped": [str(p) for p, _ in bad],
        "family": family,
        "power": power,
    }


def _status_line(records: list[dict], analysis: Analysis) -> str:
    """Exploratory or confirmatory: whether the runs' benchmark is the protocol's fresh test set."""
    seeds = {
        ((r.get("config") or {}).get("data") or {}).get("synthetic_seed") for r in records if "steps" in r
    }
    if analysis.benchmark_seed is None:  # no protocol names a fresh test set: nothing to claim either way
        return (f"Benchmark seed(s) {', '.join(map(str, sorted(seeds, key=str)))}; no --protocol names a confirmatory test "
                "set for these runs, so their verdicts are descriptive.")  # fmt: skip
    if seeds == {analysis.benchmark_seed} and analysis.primary == "strategy_mean":
        return (f"**Confirmatory test set** (--synthetic_seed {analysis.benchmark_seed}), but the protocol's primary "
                "family is each candidate's difference averaged over the strategies (python -m llava_df.sweep.confirm "
                "--protocol ...): the per-strategy verdicts of this table are secondary, not confirmatory claims.")  # fmt: skip
    if seeds == {analysis.benchmark_seed}:
        return (f"**Confirmatory test set**: every run is on the protocol's benchmark (--synthetic_seed "
                f"{analysis.benchmark_seed}), never used for a design choice; only the comparisons the protocol names are "
                "confirmatory claims.")  # fmt: skip
    return (f"**Exploratory**: these runs use benchmark seed(s) {', '.join(map(str, sorted(seeds, key=str)))}, on which the "
            "benchmark's size and the tower's pretext were chosen, so their test set has been looked at. Read each "
            "verdict as a hypothesis for a confirmatory run (protocols/), not as a finding.")  # fmt: skip


def _power_line(power: dict | None, analysis: Analysis) -> str:
    if power is None:
        return "Power: no comparison has 2 paired seeds, so there is no test and no minimum detectable difference."
    k, m, target = power["seeds"], power["family_size"], analysis.target_mdd

    def seeds(n: int | None, level: str) -> str:
        return (f"{n} seeds at {level}" if n else f"no seed count up to 64 at {level} (the test images' part "
                "alone is too large: a larger test set is needed)")  # fmt: skip

    return (
        f"Power: pooled image SE {power['pooled_se_image']:.4f}, seed SD of a difference {power['pooled_sd_seed']:.4f}; "
        f"at {k} seeds the minimum detectable difference ({analysis.power:.0%} power, t quantiles) is {power['mdd']:.3f} "
        f"at alpha {analysis.alpha} and {power['mdd_bonferroni']:.3f} at Holm's first step (alpha/{m}); {target} "
        f"needs {seeds(power['seeds_for_target'], f'alpha {analysis.alpha}')}, "
        f"{seeds(power['seeds_for_target_bonferroni'], f'alpha/{m}')}."
    )


def _last_epoch_line(records: list[dict]) -> str:
    last, runs = last_epoch_fraction(records)
    if not runs:
        return "No training runs."
    share = last / runs
    why = (" More than one in five: most runs stopped while validation was still improving (undertrained)."
           if share > 0.2 else "")  # fmt: skip
    return f"**Runs that selected their last evaluation: {last} of {runs} ({share:.0%}).**{why}"


def _run_commits(records: list[dict]) -> str:
    """The git commits the runs were made at, each with its dirty flag (the records' own env)."""

    def name(r: dict) -> str:
        git = r["env"].get("git") or {}
        return f"git {str(git.get('commit'))[:10]}" + (" (dirty)" if git.get("dirty") else " (clean)")

    return _counted(map(name, records))


def _run_packages(records: list[dict]) -> str:
    """torch and transformers as the runs had them (the records' own env)."""
    packages = [(r.get("env") or {}).get("packages") or {} for r in records if "steps" in r]
    return ", ".join(f"{p} {_counted(str(pk.get(p)) for pk in packages)}" for p in ("torch", "transformers"))


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
