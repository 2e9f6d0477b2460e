"""Each (projector, strategy) gets its own learning rate, chosen on validation from a small grid.

Why: one learning rate for every projector judges a KAN at the MLP's optimum (issue #24). The
grid runs on the development benchmark seed, so the choice never sees a confirmatory image; the
choice file is committed with the protocol before the confirmatory run reads it.

How to call (``llava-df compare`` does)::

    llava-df compare --lr_grid 3e-4,1e-3,3e-3 --seeds 0 --synthetic_seed 0 ...   # the grid, then
    #   RESULTS_DIR/lr_grid/{lr_choice.json, lr_grid.md, lr<LR>/runs/<cell>.json}
    llava-df compare --lr_choice RESULTS_DIR/lr_grid/lr_choice.json ...          # every cell at its choice

Rule: per (projector, strategy), the learning rate whose selected weights (best/, the lowest
validation loss) have the highest validation AUC, averaged over the grid's seeds; a tie goes to
the lower validation loss. The test split is never read.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from llava_df.errors import UsageError
from llava_df.io import write_json

logger = logging.getLogger(__name__)

CHOICE_FILE = "lr_choice.json"
TABLE_FILE = "lr_grid.md"


def parse_rates(text: str) -> list[float]:
    """'3e-4,1e-3' -> [0.0003, 0.001]; UsageError naming the bad value."""
    rates = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        try:
            rate = float(item)
        except ValueError:
            rate = math.nan
        if not (math.isfinite(rate) and 0 < rate < 1):
            raise UsageError(
                f"--lr_grid {item!r}: expected learning rates in (0, 1), comma-separated, e.g. 3e-4,1e-3,3e-3."
            )
        rates.append(rate)
    if len(set(rates)) < 2:
        raise UsageError(
            f"--lr_grid {text!r}: a grid needs at least two different learning rates, e.g. 3e-4,1e-3,3e-3."
        )
    return sorted(set(rates))


def tag(rate: float) -> str:
    """The folder name of one learning rate's runs: lr0.001."""
    return f"lr{rate:g}"


def pair(projector: str, strategy: str) -> str:
    return f"{projector}/{strategy}"


# What makes a learning rate right for a study, besides its projector and strategy: the model, the data it
# trains and is selected on, and the recipe's budget. The benchmark's seed is not among them on purpose: a
# protocol chooses rates on a development seed and applies them on a fresh one (protocols/confirmatory_v2.md).
PROVENANCE = {
    "model": ("model_name_or_path", "bits", "answer_head"),
    "data": ("data_dir", "data_path", "test_data_dir", "synthetic_n", "image_size", "difficulty", "split_fractions"),
    "training": ("per_device_train_batch_size", "gradient_accumulation_steps", "num_train_epochs", "max_steps",
                 "max_lr_reductions", "lr_scheduler_type", "optim", "weight_decay"),
}  # fmt: skip


def provenance(values) -> dict[str, object]:
    """{section.key: value} of PROVENANCE from a run's config (``{"model": {...}, "data": {...}, ...}``, its records
    hold it) or from a flat namespace of flags (a sweep's cell, before it runs)."""
    out = {}
    for section, keys in PROVENANCE.items():
        source = values.get(section, {}) if isinstance(values, dict) else vars(values)
        for key in keys:
            value = source.get(key)
            out[f"{section}.{key}"] = getattr(
                value, "value", value
            )  # an enum (lr_scheduler_type) as its name
    return out


def load_choice(
    path: Path, projectors: list[str], strategies: list[str], study: dict | None = None
) -> dict[str, float]:
    """{projector/strategy: learning rate} of a choice file, for every pair the sweep runs; UsageError otherwise,
    and when ``study`` (provenance() of the sweep's cells) differs from the settings the rates were chosen with."""
    try:
        payload = json.loads(Path(path).read_text())
        choices = payload["choices"]
    except FileNotFoundError:
        raise UsageError(
            f"--lr_choice {path}: no such file. Run the grid first (llava-df compare --lr_grid ...)."
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UsageError(
            f"--lr_choice {path}: not a choice file written by --lr_grid ({type(err).__name__}: {err})."
        ) from None
    missing = [pair(p, s) for p in projectors for s in strategies if pair(p, s) not in choices]
    if missing:
        raise UsageError(
            f"--lr_choice {path} has no learning rate for {', '.join(missing)}. Run the grid for them, or drop them "
            "from --projectors / --strategies."
        )
    bad = {k: v for k, v in choices.items() if not (isinstance(v, (int, float)) and 0 < v < 1)}
    if bad:
        raise UsageError(f"--lr_choice {path}: {bad} are not learning rates in (0, 1).")
    chosen_with = payload.get("provenance")
    if study is not None and chosen_with is None:
        logger.warning(
            "--lr_choice %s records no settings (written before llava_df recorded them): it cannot be checked against "
            "this sweep's model, data and recipe", path,
        )  # fmt: skip
    if study is not None and chosen_with is not None:
        differ = {
            k: (chosen_with.get(k), v) for k, v in study.items() if k in chosen_with and chosen_with[k] != v
        }
        if differ:
            said = "; ".join(f"{k} {a!r} there, {b!r} here" for k, (a, b) in list(differ.items())[:4])
            raise UsageError(
                f"--lr_choice {path} was chosen for another study ({said}): its learning rates belong to those "
                "settings. Run the grid for this one (llava-df compare --lr_grid ... with these flags), or pass the "
                "flags it was chosen with."
            )
    return {k: float(v) for k, v in choices.items()}


def _epochs_run(record: dict, best: dict) -> float | None:
    """Epochs the run trained: its steps at the selected entry's steps-per-epoch."""
    if not best.get("step") or not best.get("epoch"):
        return None
    return round(record["steps"] * best["epoch"] / best["step"], 1)


def grid_rows(records: list[dict]) -> list[dict]:
    """One row per (projector, strategy, learning rate): validation AUC and loss of the selected weights."""
    groups: dict[tuple[str, str, float], list[dict]] = {}
    for r in records:
        cell = r["cell"]
        rate = float(r["config"]["training"]["learning_rate"])
        groups.setdefault((cell["projector"], cell["strategy"], rate), []).append(r)
    rows = []
    for (projector, strategy, rate), group in sorted(groups.items()):
        best = [g["metrics"].get("best_val_entry") or {} for g in group]
        rows.append({
            "projector": projector, "strategy": strategy, "learning_rate": rate, "seeds": len(group),
            "val_auc": sum(g["metrics"]["val"]["auc"] for g in group) / len(group),
            "val_loss": sum(b.get("val_loss", math.nan) for b in best) / len(group),
            "best_epoch": [b.get("epoch") for b in best],
            "epochs": [_epochs_run(g, b) for g, b in zip(group, best, strict=True)],
            "steps": [g["steps"] for g in group],
            "train_s": sum((g.get("time") or {}).get("train_s", math.nan) for g in group) / len(group),
            "last_is_best": sum(1 for g, b in zip(group, best, strict=True) if b.get("step") == g["steps"]),
        })  # fmt: skip
    return rows


def choose(rows: list[dict]) -> dict[str, float]:
    """{projector/strategy: the learning rate with the highest validation AUC (tie: lower val loss)}."""
    chosen: dict[str, dict] = {}
    for row in rows:
        key = pair(row["projector"], row["strategy"])
        now = chosen.get(key)
        if now is None or (row["val_auc"], -row["val_loss"]) > (now["val_auc"], -now["val_loss"]):
            chosen[key] = row
    return {key: row["learning_rate"] for key, row in sorted(chosen.items())}


def write_grid(out: Path, records: list[dict], command: str, machine: str, wall_s: float | None) -> dict:
    """lr_choice.json and lr_grid.md under ``out`` from the grid's run records."""
    rows = grid_rows(records)
    choices = choose(rows)
    seeds = sorted({r["cell"]["seed"] for r in records})
    bench = sorted({r["config"]["data"].get("synthetic_seed") for r in records}, key=str)
    payload = {
        "choices": choices,
        "provenance": provenance(records[0]["config"]) if records else None,  # load_choice checks a study against it
        "rule": "per projector/strategy, the learning rate whose selected weights have the highest validation AUC "
        "(mean over seeds; tie: lower validation loss); the test split is not read",
        "seeds": seeds, "benchmark_seeds": bench, "command": command, "machine": machine, "wall_s": wall_s,
        "rows": rows,
    }  # fmt: skip
    write_json(out / CHOICE_FILE, payload)
    lines = [
        "# Learning-rate grid: one learning rate per projector and strategy, chosen on validation",
        "",
        f"Command: `{command}`" + (f" ({wall_s:.0f} s)" if wall_s else "") + f"; machine: {machine}.",
        f"Benchmark seed(s) {bench} (development), training seed(s) {seeds}. Rule: {payload['rule']}. "
        f"Each run stops by the recipe's plateau rule; `best epoch` is the epoch of its selected weights.",
        "",
        "| projector | strategy | learning rate | val AUC | val loss (selected) | best epoch | epochs run | train s | chosen |",
        "|---|---|---:|---:|---:|---|---|---:|---|",
    ]
    for row in rows:
        mark = "**yes**" if choices[pair(row["projector"], row["strategy"])] == row["learning_rate"] else ""
        epochs = [f"{e:g}" if isinstance(e, (int, float)) else "?" for e in row["epochs"]]
        best_epochs = [f"{e:g}" if isinstance(e, (int, float)) else "?" for e in row["best_epoch"]]
        lines.append(
            f"| {row['projector']} | {row['strategy']} | {row['learning_rate']:g} | {row['val_auc']:.4f} | "
            f"{row['val_loss']:.4f} | {', '.join(best_epochs)} | {', '.join(epochs)} | {row['train_s']:.0f} | {mark} |"
        )
    (out / TABLE_FILE).write_text("\n".join(lines) + "\n")
    return payload
