"""What the LLM adds: the classifier head against the generative answer, and the feature probes beside them.

Why: a detector that reads its answer from the LLM's vocabulary ("Real" / "Fake") might be held
back, or carried, by the language model. The same cell trained with ``--answer_head classifier``
(a 2-class head on the LLM's last hidden state, llava_df/model/answer_head.py: same data, seeds,
strategy, learning rate and stopping rule) separates the answer's form from the features; the
feature probes (no LLM at all, one at the pipelines' budget: ``probe_mlp_matched``) say what the
frozen tower alone allows (issue #24).

How to call::

    python -m llava_df.sweep.heads --generate results/confirmatory_v2/comparison/runs \\
        --classifier results/head_v2/comparison/runs --out results/head_v2/heads
    #   -> OUT/heads.md, OUT/heads.csv

Per (projector, strategy) present on both sides with the same seeds and test images: the test AUC
of each side and D = classifier - generative, paired by seed on the shared test images, with the
confirmatory analysis' error (DeLong image part + seed part, t with Welch-Satterthwaite df;
llava_df.sweep.inference). Descriptive: the protocol keeps this comparison out of its family, so
there is no verdict word; "which wins" says only whether the 95% interval excludes 0, and the
table gives Holm's adjusted p over all of its rows beside each p (the question "does any head or
probe row differ?" is asked once per row, so a lone small p among many is read with Holm's). The probes' rows are each probe's mean test AUC and its difference from each
pipeline row, computed the same way (probe seed s paired with pipeline seed s).
"""

from __future__ import annotations

import argparse
import csv
import shlex
from pathlib import Path

import numpy as np
from statsmodels.stats.multitest import multipletests

from llava_df.errors import UsageError, cli_entry
from llava_df.io import write_text
from llava_df.sweep.inference import compare_to_reference
from llava_df.sweep.record import answer_head, read_records
from llava_df.sweep.report import runs_machine
from llava_df.sweep.stats import mean_ci

TABLE, CSV = "heads.md", "heads.csv"
PROBE = "probe"


def _side(folder: Path, want: str, flag: str) -> tuple[dict, list[dict]]:
    if not folder.is_dir():
        raise UsageError(f"{flag} {folder}: no such folder. Pass a sweep's comparison/runs folder.")
    records, bad = read_records(folder.parent if folder.name == "runs" else folder)
    if bad:
        raise UsageError(
            f"{flag}: {len(bad)} unreadable records, e.g. {bad[0][0]} ({bad[0][1]}); rerun those cells."
        )
    cells: dict = {}
    probes = [r for r in records if r["cell"]["strategy"] == PROBE]
    for r in records:
        if r["cell"]["strategy"] == PROBE:
            continue
        if answer_head(r) != want:
            raise UsageError(
                f"{flag}: {r['cell']['name']} was trained with --answer_head {answer_head(r)}, expected {want}. Pass "
                f"the runs of one answer head per side."
            )
        cells.setdefault((r["cell"]["projector"], r["cell"]["strategy"]), {})[r["cell"]["seed"]] = r
    if not cells:
        raise UsageError(f"{flag} {folder}: no training record in it. Run the sweep first.")
    return cells, probes


def _scores(records: list[dict], ids: list[str]) -> np.ndarray:
    rows = []
    for r in records:
        by_id = dict(zip(r["scores"]["test"]["id"], r["scores"]["test"]["p_fake"], strict=True))
        if set(by_id) != set(ids):
            raise UsageError(
                f"{r['cell']['name']}: other test images than the first record. Compare runs of one benchmark "
                "(the same --synthetic_seed, data and split seed) only."
            )
        rows.append([by_id[i] for i in ids])
    return np.asarray(rows, dtype=float)


def _same_setting(gen: dict, cls: dict) -> None:
    """The two sides must differ in the answer head only: same data and learning rate."""
    g, c = gen.get("config") or {}, cls.get("config") or {}
    for part, key in (("data", None), ("training", "learning_rate"), ("training", "seed")):
        a, b = g.get(part) or {}, c.get(part) or {}
        if key is None:  # a field one side's code did not have yet counts as its default (None)
            a, b = ({k: side.get(k) for k in a.keys() | b.keys()} for side in (a, b))
        else:
            a, b = a.get(key), b.get(key)
        if a != b:
            if isinstance(a, dict):
                a, b = ({k: v for k, v in side.items() if a.get(k) != b.get(k)} for side in (a, b))
            raise UsageError(
                f"{cls['cell']['name']}: its {part}{'.' + key if key else ''} differs between the two sides ({a!r} vs "
                f"{b!r}). The comparison holds everything but --answer_head fixed: rerun one side with the other's settings."
            )


def _init(record: dict) -> str | None:
    """The SHA-256 of the stage-1 file the run started from (None: random init, or a record from before key_inputs)."""
    return (record.get("key_inputs") or {}).get("pretrain_mm_mlp_adapter_sha256")


def head_rows(generate: dict, classifier: dict, probes: list[dict]) -> tuple[list[dict], list[str]]:
    """(rows: one per cell on both sides, then each probe against each pipeline side; notes on what was left out)."""
    rows, notes, ids, y = [], [], None, None
    pipelines: dict[str, dict[int, dict]] = {}  # "projector / strategy / head" -> {seed: record}
    for key in sorted(set(generate) | set(classifier)):
        if key not in generate or key not in classifier:
            notes.append(
                f"{key[0]} / {key[1]}: only on the {'generate' if key in generate else 'classifier'} side"
            )
            continue
        seeds = sorted(set(generate[key]) & set(classifier[key]))
        # Each side may align its own stage 1 (another runs dir): a seed pairs only when both started from the
        # same bytes (record.key_inputs; records from before it have none on either side and pair as before).
        other_init = [s for s in seeds if _init(generate[key][s]) != _init(classifier[key][s])]
        if other_init:
            notes.append(f"{key[0]} / {key[1]}: seed(s) {', '.join(map(str, other_init))} left out: the two sides started "
                         "from different stage-1 files (key_inputs.pretrain_mm_mlp_adapter_sha256)")  # fmt: skip
            seeds = [s for s in seeds if s not in other_init]
        if len(seeds) < 2:
            notes.append(f"{key[0]} / {key[1]}: {len(seeds)} shared seed(s); a paired comparison needs 2")
            continue
        for s in seeds:
            _same_setting(generate[key][s], classifier[key][s])
        if ids is None:
            first = generate[key][seeds[0]]["scores"]["test"]
            ids, y = first["id"], np.asarray(first["is_fake"])
        cell = f"{key[0]} / {key[1]}"
        gen = {s: generate[key][s] for s in seeds}
        cls = {s: classifier[key][s] for s in seeds}
        pipelines[f"{cell} / generate"], pipelines[f"{cell} / classifier"] = gen, cls
        rows.append(_row(f"{cell} / classifier", cls, f"{cell} / generate", gen, ids, y))
    by_probe: dict[str, dict[int, dict]] = {}
    for r in probes:
        by_probe.setdefault(r["cell"]["projector"], {})[r["cell"]["seed"]] = r
    for probe, seeded in sorted(by_probe.items()):
        for label, runs in pipelines.items():
            seeds = sorted(set(seeded) & set(runs))
            if len(seeds) < 2:
                notes.append(
                    f"{probe} against {label}: {len(seeds)} shared seed(s); a paired comparison needs 2"
                )
            else:
                rows.append(
                    _row(probe, {s: seeded[s] for s in seeds}, label, {s: runs[s] for s in seeds}, ids, y)
                )
    return rows, notes


def _row(name: str, mine: dict, against: str, theirs: dict, ids: list[str], y: np.ndarray) -> dict:
    """``name`` against ``against``: paired by seed on the shared test images (inference.compare_to_reference)."""
    seeds = sorted(mine)
    c = compare_to_reference(
        y,
        _scores([mine[s] for s in seeds], ids),
        _scores([theirs[s] for s in seeds], ids),
        name=f"{name} vs {against}",
    )
    auc = lambda runs: [runs[s]["metrics"]["test"]["auc"] for s in seeds]  # noqa: E731
    if c.ci95[0] <= 0 <= c.ci95[1]:
        higher = "not separated (95% CI holds 0)"
    else:
        higher = name if c.difference > 0 else against
    return {
        "row": name, "against": against, "seeds": len(seeds), "auc": mean_ci(auc(mine))[0],
        "auc_sd": float(np.std(auc(mine), ddof=1)), "auc_against": mean_ci(auc(theirs))[0],
        "difference": c.difference, "ci95_low": c.ci95[0], "ci95_high": c.ci95[1], "p": c.p,
        "se_image": c.se_image, "sd_seed": c.sd_seed, "higher": higher,
    }  # fmt: skip


def render(rows: list[dict], notes: list[str], command: str, machine: str) -> str:
    lines = [
        "# What the LLM adds: a classification head and the feature probes beside the generative answer",
        "",
        f"Command: `{command}`; the runs were made on {machine}.",
        "Each row: its test AUC (mean ± SD over seeds) against another row's, D = row - other paired by seed on the same "
        "test images, 95% interval and two-sided p from the confirmatory analysis' error (DeLong image part + seed part, "
        "t with Welch-Satterthwaite df; llava_df/sweep/inference.py), and Holm's adjusted p over all rows of this table. "
        "**Descriptive**: this comparison is not in the protocol's family, so there is no verdict word; `higher` only "
        "says which side the (unadjusted) 95% interval lies on. classifier: `--answer_head classifier` (a 2-class head on the LLM's last hidden state); "
        "generate: the LLM's own 'Real'/'Fake' answer; probe_*: no LLM (llava_df/sweep/probes.py; probe_mlp_matched at "
        "the pipelines' training budget).",
        "",
        "| row | against | seeds | AUC | AUC (against) | D [95% CI] | p | p Holm | higher |",
        "|---|---|---:|---:|---:|---|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['row']} | {r['against']} | {r['seeds']} | {r['auc']:.3f} ± {r['auc_sd']:.3f} | {r['auc_against']:.3f} | "
            f"{r['difference']:+.4f} [{r['ci95_low']:+.4f}, {r['ci95_high']:+.4f}] | {_p(r['p'])} | {_p(r['p_holm'])} | "
            f"{r['higher']} |"
        )
    if notes:
        lines += ["", "Left out: " + "; ".join(notes) + "."]
    return "\n".join(lines) + "\n"


def _p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


@cli_entry
def main(argv: list[str]) -> dict:
    ap = argparse.ArgumentParser(prog="python -m llava_df.sweep.heads", description=__doc__.split("\n")[0])
    ap.add_argument(
        "--generate",
        required=True,
        type=Path,
        help="Run records of the generative answer (.../comparison/runs).",
    )
    ap.add_argument("--classifier", required=True, type=Path, help="Run records of --answer_head classifier.")
    ap.add_argument("--out", required=True, type=Path, help="Folder for heads.md and heads.csv.")
    args = ap.parse_args(argv)
    generate, probes = _side(args.generate, "generate", "--generate")
    classifier, _ = _side(args.classifier, "classifier", "--classifier")
    rows, notes = head_rows(generate, classifier, probes)
    if rows:  # Holm over every row of the table (heads and probes), descriptive
        _, holm, _, _ = multipletests([r["p"] for r in rows], method="holm")
        rows = [r | {"p_holm": float(h)} for r, h in zip(rows, holm, strict=True)]
    if not rows:
        raise UsageError(
            "no (projector, strategy) has 2 seeds on both sides: "
            + "; ".join(notes)
            + ". Run the classifier sweep with the generative sweep's cells and seeds."
        )
    command = shlex.join(["python", "-m", "llava_df.sweep.heads", *argv])
    runs = [r for side in (generate, classifier) for cell in side.values() for r in cell.values()]
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / CSV, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    write_text(args.out / TABLE, render(rows, notes, command, runs_machine(runs)))
    print((args.out / TABLE).read_text())
    return {"rows": rows, "notes": notes}


if __name__ == "__main__":
    main()
