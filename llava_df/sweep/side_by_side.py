"""The tiny preset's answer (v2) beside the smol preset's (v3): does it hold on a pretrained LLaVA?

How to call (once both confirmatory analyses exist; README's "What we found" quotes the table)::

    python -m llava_df.sweep.side_by_side \\
        --tiny results/confirmatory_v2 --tiny_protocol protocols/confirmatory_v2.yaml \\
        --smol results/confirmatory_v3 --smol_protocol protocols/confirmatory_v3.yaml --out results/tiny_vs_smol

Reads each study's ``confirm/comparisons.csv`` (the smol study's ``confirm/per_strategy.csv`` too) and its run
records (``comparison/runs``); writes ``<out>/tiny_vs_smol.{md,csv}``. Nothing is re-estimated where a study
has its own analysis: every per-strategy row and the smol mean row are copied from the files ``confirm``
wrote, with their own family's Holm p and verdict. The one number computed here is the tiny study's mean
over strategies (v3's primary estimator on v2's records), which v2 never fixed: it is labelled **post hoc**,
Holm over v2's candidates, and never carries a verdict word.

Rows pair the projectors by the question they answer (ROLES), not by name: the two presets' widths differ
(tiny 512 -> 128, smol 384 -> 576), so each preset ran the projectors sized for it. Beside the table: the
reference's test AUC per strategy in each preset (how hard each benchmark was for the MLP), and the smol
study's zero-shot rows (each stage-1 model before any detection training).
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llava_df.errors import UsageError, cli_entry
from llava_df.io import write_text
from llava_df.sweep.confirm import STRATEGY_MEAN_KEY, analyse
from llava_df.sweep.protocol import load_protocol
from llava_df.sweep.record import read_records


@dataclass(frozen=True)
class Role:
    question: str
    tiny: str | None  # the projector that answered it on the tiny preset (None: not in v2's family)
    smol: str | None


ROLES = (
    Role("B-spline KAN against the MLP (v2: the development sweep's best KAN; v3: LLaVA-7B's KAN/MLP size ratio)",
         "kan_h256_g5_k3", "kan_h36_g5_k3"),
    Role("B-spline KAN at the seed notes' h=64", None, "kan_h64_g5_k3"),
    Role("lightweight learnable-activation projector (v2: rational activation at the MLP's width; v3: in the "
         "64-wide bottleneck)", "kan_light", "bottleneck_h64_rational"),
    Role("the seed notes' bottleneck (Linear -> SiLU -> Linear, hidden 64)", None, "bottleneck_h64_silu"),
)  # fmt: skip
MEAN = "mean"
COLUMNS = ("question", "strategy", "preset", "projector", "source", "difference", "ci95_low", "ci95_high",
           "p_holm", "p_tost_holm", "margin", "verdict")  # fmt: skip


def _read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        raise UsageError(
            f"{path}: no such file. Run the study's analysis first (python -m llava_df.sweep.confirm ... --out "
            f"{path.parent})."
        )
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _confirmatory(confirm: Path) -> None:
    """The analysis was confirm's confirmatory one: an --exploratory one (a partial study, mixed machines) is not
    a verdict to put beside another study's."""
    try:
        command = json.loads((confirm / "power.json").read_text()).get("command", "")
    except (OSError, ValueError) as err:
        raise UsageError(
            f"{confirm}/power.json: unreadable ({type(err).__name__}); rerun the study's analysis."
        ) from None
    if "--exploratory" in command.split():
        raise UsageError(
            f"{confirm}: written by an --exploratory analysis ({command}); its verdicts are not confirmatory. Run "
            "python -m llava_df.sweep.confirm without --exploratory on the complete study."
        )


def _by_projector_strategy(rows: list[dict]) -> dict[tuple[str, str], dict]:
    return {(r["comparison"].split(" vs ")[0], r["strategy"]): r for r in rows}


def _records(study: Path) -> list[dict]:
    runs = study / "comparison"
    records, bad = read_records(runs)
    if bad:
        raise UsageError(
            f"{len(bad)} unreadable records under {runs}/runs, e.g. {bad[0][0]}: rerun those cells."
        )
    if not records:
        raise UsageError(
            f"{runs}/runs: no run records. Pass the study's results folder (e.g. results/confirmatory_v2)."
        )
    return [r for r in records if r["cell"]["strategy"] != "probe"]


def _row(role: Role, strategy: str, preset: str, projector: str, source: str, r: dict, margin: float,
         verdict: str) -> dict:  # fmt: skip
    return {
        "question": role.question, "strategy": strategy, "preset": preset, "projector": projector, "source": source,
        "difference": float(r["difference"]), "ci95_low": float(r["ci95_low"]), "ci95_high": float(r["ci95_high"]),
        "p_holm": float(r["p_holm"]), "p_tost_holm": float(r["p_tost_holm"]), "margin": margin, "verdict": verdict,
    }  # fmt: skip


def tiny_strategy_mean(records: list[dict], protocol: dict) -> dict[str, dict]:
    """{candidate: row} of v3's primary estimator on v2's records (post hoc: v2 fixed per-strategy comparisons)."""
    family, _ = analyse(records, protocol | {"primary": STRATEGY_MEAN_KEY})
    return {
        c.name.split(" vs ")[0]: {"difference": c.difference, "ci95_low": c.ci95[0], "ci95_high": c.ci95[1],
                                  "p_holm": c.p_holm, "p_tost_holm": c.p_tost_holm}
        for c in family
    }  # fmt: skip


def build_rows(
    tiny: Path, tiny_protocol: dict, smol: Path, smol_protocol: dict
) -> tuple[list[dict], list[str]]:
    """(rows, notes: what a role asks for that a study does not have)."""
    tiny_rows = _by_projector_strategy(_read_csv(tiny / "confirm" / "comparisons.csv"))
    smol_mean = {
        k[0]: v for k, v in _by_projector_strategy(_read_csv(smol / "confirm" / "comparisons.csv")).items()
    }
    smol_per = _by_projector_strategy(_read_csv(smol / "confirm" / "per_strategy.csv"))
    for study in (tiny, smol):  # after the files exist: an exploratory analysis is refused
        _confirmatory(study / "confirm")
    tiny_mean = tiny_strategy_mean(_records(tiny), tiny_protocol)
    t_margin, s_margin = tiny_protocol["margin"], smol_protocol["margin"]
    strategies = list(dict.fromkeys([*tiny_protocol["strategies"], *smol_protocol["strategies"]]))
    per_label = f"secondary (v3, Holm over {len(smol_per)})"
    rows, notes = [], []
    for role in ROLES:
        for strategy in [*strategies, MEAN]:
            if role.tiny is not None:
                if strategy == MEAN and role.tiny in tiny_mean:
                    rows.append(_row(role, strategy, "tiny", role.tiny, "post hoc (v2 records, v3's estimator)",
                                     tiny_mean[role.tiny], t_margin, "post hoc: no verdict"))  # fmt: skip
                elif strategy != MEAN and (role.tiny, strategy) in tiny_rows:
                    r = tiny_rows[(role.tiny, strategy)]
                    rows.append(
                        _row(role, strategy, "tiny", role.tiny, "primary (v2)", r, t_margin, r["verdict"])
                    )
                else:
                    notes.append(f"tiny: no {role.tiny} row under {strategy}")
            if role.smol is not None:
                if strategy == MEAN and role.smol in smol_mean:
                    r = smol_mean[role.smol]
                    rows.append(
                        _row(role, strategy, "smol", role.smol, "primary (v3)", r, s_margin, r["verdict"])
                    )
                elif strategy != MEAN and (role.smol, strategy) in smol_per:
                    r = smol_per[(role.smol, strategy)]
                    rows.append(_row(role, strategy, "smol", role.smol, per_label, r, s_margin,
                                     f"secondary: {r['verdict']}"))  # fmt: skip
                else:
                    notes.append(f"smol: no {role.smol} row under {strategy}")
    return rows, notes


def reference_auc(records: list[dict], reference: str, strategies: list[str]) -> dict[str, tuple[float, int]]:
    """{strategy: (mean test AUC of the reference over seeds, seeds)}."""
    out = {}
    for s in strategies:
        aucs = [r["metrics"]["test"]["auc"] for r in records
                if r["cell"]["projector"] == reference and r["cell"]["strategy"] == s]  # fmt: skip
        if aucs:
            out[s] = (float(np.mean(aucs)), len(aucs))
    return out


def zero_shot(records: list[dict]) -> list[dict]:
    """Per projector and prompt (zero_shot, zero_shot_yes_no): mean test AUC of the stage-1 models over seeds."""
    found: dict[tuple[str, str], list[float]] = {}
    for r in records:
        if r["cell"]["strategy"].startswith("zero_shot"):
            found.setdefault((r["cell"]["projector"], r["cell"]["strategy"]), []).append(
                r["metrics"]["test"]["auc"]
            )
    return [{"projector": p, "prompt": s, "auc": float(np.mean(v)), "seeds": len(v)}
            for (p, s), v in sorted(found.items())]  # fmt: skip


def render(
    rows: list[dict],
    notes: list[str],
    ref: dict[str, dict],
    zero: list[dict],
    command: str,
    protocols: tuple[Path, Path],
) -> str:
    lines = [
        "# Does the answer hold on a pretrained LLaVA? The tiny preset (protocol v2) and smol (v3) side by side",
        "",
        f"Command: `{command}`. Protocols: `{protocols[0]}` (tiny: random-weight 4-layer LLM, INT8, 64 px) and "
        f"`{protocols[1]}` (smol: SmolLM2-135M-Instruct + DINOv2-S, both pretrained, INT8, 112 px). Each row is "
        "copied from its study's own analysis (`confirm/comparisons.csv`, smol's `confirm/per_strategy.csv`) with "
        "that family's Holm p; difference = candidate - mlp2x_gelu test AUC, paired by seed and image. The tiny "
        "mean over strategies is post hoc (v2 fixed per-strategy comparisons) and carries no verdict. Smol's "
        "per-strategy rows are its secondary family (Holm over 12); its verdicts are the mean rows.",
        "",
        "| question | strategy | preset | projector | difference [95% CI] | p Holm | p TOST Holm (margin) | verdict |",
        "|---|---|---|---|---|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['question']} | {r['strategy']} | {r['preset']} | `{r['projector']}` | {r['difference']:+.4f} "
            f"[{r['ci95_low']:+.4f}, {r['ci95_high']:+.4f}] | {r['p_holm']:.3g} | {r['p_tost_holm']:.3g} "
            f"(+-{r['margin']}) | {r['verdict']} |"
        )
    lines += ["", "The reference's level: `mlp2x_gelu`'s mean test AUC per strategy.", "",
              "| preset | " + " | ".join(ref["strategies"]) + " |", "|---|" + "---:|" * len(ref["strategies"])]  # fmt: skip
    for preset in ("tiny", "smol"):
        cells = [f"{ref[preset][s][0]:.3f} ({ref[preset][s][1]} seeds)" if s in ref[preset] else "-"
                 for s in ref["strategies"]]  # fmt: skip
        lines.append(f"| {preset} | " + " | ".join(cells) + " |")
    if notes:
        lines += ["", "Not in the table (a study has no such row): " + "; ".join(notes) + "."]
    if zero:
        lines += ["", "Zero-shot (smol): each stage-1 model on the detection question before any detection "
                  "training, mean test AUC over seeds (0.5 is chance).", "",
                  "| projector | prompt | test AUC | seeds |", "|---|---|---:|---:|"]  # fmt: skip
        lines += [f"| `{z['projector']}` | {z['prompt']} | {z['auc']:.3f} | {z['seeds']} |" for z in zero]
    return "\n".join(lines) + "\n"


@cli_entry
def main(argv: list[str]) -> list[dict]:
    ap = argparse.ArgumentParser(
        prog="python -m llava_df.sweep.side_by_side", description=__doc__.split("\n")[0]
    )
    for preset in ("tiny", "smol"):
        ap.add_argument(f"--{preset}", required=True, type=Path, help=f"The {preset} study's results folder.")
        ap.add_argument(f"--{preset}_protocol", required=True, type=Path, help="Its protocols/<name>.yaml.")
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args(argv)
    tiny_protocol, smol_protocol = load_protocol(args.tiny_protocol), load_protocol(args.smol_protocol)
    if smol_protocol.get("primary") != STRATEGY_MEAN_KEY:
        raise UsageError(
            f"--smol_protocol {args.smol_protocol}: primary is {smol_protocol.get('primary', 'per_strategy')!r}; this "
            "table pairs a per-strategy study (tiny) with a strategy-mean one (smol). Pass protocols/confirmatory_v3.yaml."
        )
    rows, notes = build_rows(
        args.tiny, tiny_protocol, args.smol, smol_protocol
    )  # every input read before writing
    strategies = list(dict.fromkeys([*tiny_protocol["strategies"], *smol_protocol["strategies"]]))
    smol_records = _records(args.smol)
    ref = {
        "strategies": strategies,
        "tiny": reference_auc(_records(args.tiny), tiny_protocol["reference"], strategies),
        "smol": reference_auc(smol_records, smol_protocol["reference"], strategies),
    }
    command = shlex.join(["python", "-m", "llava_df.sweep.side_by_side", *argv])
    text = render(
        rows, notes, ref, zero_shot(smol_records), command, (args.tiny_protocol, args.smol_protocol)
    )
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "tiny_vs_smol.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    write_text(args.out / "tiny_vs_smol.md", text)
    print(text)
    return rows


if __name__ == "__main__":
    main()
