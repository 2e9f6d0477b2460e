"""One JSON per run (PEFT method_comparison's layout): written when the run ends, read back by name.

A record holds the cell, the resolved config, every metric, parameters and multiply-adds, peak
memory, time, the environment, the test and held-out scores per image (for paired tests), and
``key``: a hash of the config and of llava_df's code. A rerun of the sweep skips a cell whose
record has the same key; a changed flag or a changed line of llava_df reruns it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from llava_df.io import write_json
from llava_df.provenance import package_versions
from llava_df.sweep.cells import PACKAGE, Cell

logger = logging.getLogger(__name__)
# Settings that name where a run writes, not what it computes.
NOT_IN_KEY = {"output_dir", "overwrite_output_dir", "logging_dir", "run_name", "resume_from_checkpoint"}


# The sweep's own bookkeeping (tables, plots, this file) does not change what a run computes.
NOT_IN_FINGERPRINT = ("sweep", "apps", "compare_projectors.py", "__main__.py")


def code_fingerprint() -> str:
    """Hash of the .py files of llava_df that compute a run, and of the packages that compute it."""
    h = hashlib.blake2b(digest_size=10)
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.relative_to(PACKAGE).parts[0] in NOT_IN_FINGERPRINT:
            continue
        h.update(str(path.relative_to(PACKAGE)).encode() + path.read_bytes())
    versions = package_versions()
    h.update(
        json.dumps({k: versions.get(k) for k in ("torch", "transformers", "peft", "bitsandbytes")}).encode()
    )
    return h.hexdigest()


def cell_key(run_config: dict, fingerprint: str) -> str:
    sections = {
        s: {k: v for k, v in run_config[s].items() if k not in NOT_IN_KEY}
        for s in ("model", "data", "training")
    }
    payload = json.dumps({"config": sections, "code": fingerprint}, sort_keys=True, default=str)
    return hashlib.blake2b(payload.encode(), digest_size=10).hexdigest()


def adapter_sha256(run_config: dict) -> str | None:
    """SHA-256 of the run's stage-1 file (--pretrain_mm_mlp_adapter); None without one. A cell's key hashes it, so
    a new stage-1 file at the same path is a new cell."""
    adapter = run_config["model"].get("pretrain_mm_mlp_adapter")
    return (
        hashlib.sha256(Path(adapter).read_bytes()).hexdigest()
        if adapter and Path(adapter).is_file()
        else None
    )


def key_inputs(run_config: dict) -> dict:
    """What a cell's key hashes besides the config the record holds: the code fingerprint and the stage-1 file's
    SHA-256. Kept in the record so that a key that stops matching can be traced to the code, the package versions
    (``env.packages``) or the stage-1 file, not guessed at."""
    return {
        "code_fingerprint": code_fingerprint(),
        "pretrain_mm_mlp_adapter_sha256": adapter_sha256(run_config),
    }


def record_path(results_dir: Path, cell: Cell) -> Path:
    return results_dir / "runs" / f"{cell.name}.json"


def build_record(cell: Cell, results: dict, scores: dict, key: str, init: str) -> dict:
    checks = results["config"].get("checks", {})
    return {
        "cell": {
            "projector": cell.projector,
            "strategy": cell.strategy,
            "seed": cell.seed,
            "name": cell.name,
        },
        "key": key,
        "key_inputs": key_inputs(results["config"]),
        "projector_init": init,
        "metrics": {
            "test": results["test"],
            "heldout": results.get("heldout"),
            "val": results.get("val_at_test_weights"),
            "best_val_entry": results.get("best"),
            "threshold": results.get("threshold"),
        },
        "parameters": {
            "trainable": results["trainable"]["trainable"],
            "total": results["trainable"]["total_base"],
            "projector": checks.get("projector_parameters"),
            "projector_macs_per_token": checks.get("projector_macs_per_token"),
        },
        "peak_memory": results["peak_memory"],
        "memory_check": results.get("memory_check"),
        "time": results.get("time"),
        "steps": results["steps"],
        "env": results["env"] | {"packages": package_versions()},
        "data": {k: v for k, v in results.get("data", {}).items() if k != "skipped"}
        | {"n_skipped": len(results.get("data", {}).get("skipped", []))},
        "config": {s: results["config"][s] for s in ("model", "data", "training")},
        "scores": {split: scores[split] for split in ("val", "test", "heldout") if split in scores},
    }


def write_record(path: Path, record: dict) -> None:
    write_json(path, record)


def read_records(results_dir: Path) -> tuple[list[dict], list[tuple[Path, str]]]:
    """(records, [(file, why it was skipped)]): a corrupt or half-written JSON is named, not fatal."""
    records, bad = [], []
    for path in sorted((results_dir / "runs").glob("*.json")):
        try:
            record = json.loads(path.read_text())
            _ = record["cell"]["projector"], record["metrics"]["test"]["auc"], record["scores"]["test"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            bad.append((path, f"{type(err).__name__}: {err}"))
            logger.warning("skipped %s: not a complete run record (%s)", path, err)
            continue
        records.append(record)
    return records, bad


def answer_head(record: dict) -> str:
    """The run's --answer_head (records from before the flag existed answered generatively)."""
    return ((record.get("config") or {}).get("model") or {}).get("answer_head", "generate")


def last_epoch_fraction(records: list[dict]) -> tuple[int, int]:
    """(training runs whose selected weights are their last evaluation's, training runs). A run that selects
    its last epoch stopped while still improving on validation; probe records (no ``steps``) are not counted."""
    runs = [r for r in records if "steps" in r]
    last = sum(
        1
        for r in runs
        if (step := (r["metrics"].get("best_val_entry") or {}).get("step")) is not None and step == r["steps"]
    )
    return last, len(runs)


def reached_cap(record: dict) -> bool | None:
    """Whether a training run trained up to its epoch cap (``num_train_epochs``) instead of being stopped by the
    plateau rule; None when the record lacks what says it. A run at the cap whose best epoch is an earlier one
    does not select its last evaluation, yet the cap may still have cut it short: reported beside that share."""
    best = (record.get("metrics") or {}).get("best_val_entry") or {}
    cap = ((record.get("config") or {}).get("training") or {}).get("num_train_epochs")
    if not (best.get("step") and best.get("epoch") and cap and record.get("steps")):
        return None
    epochs_run = record["steps"] * best["epoch"] / best["step"]
    return epochs_run >= float(cap) - 0.01


def cap_reached_by_strategy(records: list[dict]) -> dict[str, tuple[int, int]]:
    """{strategy: (training runs that reached the epoch cap, training runs that say whether they did)}."""
    out: dict[str, tuple[int, int]] = {}
    for r in records:
        if "steps" in r and (hit := reached_cap(r)) is not None:
            n, m = out.get(r["cell"]["strategy"], (0, 0))
            out[r["cell"]["strategy"]] = (n + int(hit), m + 1)
    return out


def last_epoch_by_strategy(records: list[dict]) -> dict[str, tuple[int, int]]:
    """{strategy: last_epoch_fraction of that strategy's training runs}, strategies in the records' order."""
    strategies = dict.fromkeys(r["cell"]["strategy"] for r in records if "steps" in r)
    return {s: last_epoch_fraction([r for r in records if r["cell"]["strategy"] == s]) for s in strategies}
