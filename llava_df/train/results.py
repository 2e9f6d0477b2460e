"""results.json of a run, and the one line a finished run prints.

How to call (the workflow does)::

    results = build_results(spec, run_config, trainer, ...)   # every metric, the plan, the peak, the data
    print(summary_line(results))
"""

from __future__ import annotations

import math
from pathlib import Path

from llava_df.eval.scoring import FinalScores
from llava_df.memory.check import memory_check
from llava_df.model.checkpoint import weights_identity


def _best_entry(entries: list[dict], best_val_loss: float) -> dict | None:
    hits = [e for e in entries if e.get("val_loss") == best_val_loss]
    return hits[-1] if hits else None


def _without(prefix: str, metrics: dict) -> dict:
    return {k.removeprefix(f"{prefix}_"): v for k, v in metrics.items()}


def build_results(
    spec,
    run_config: dict,
    *,
    out: Path,
    step: int,
    plateau,
    history,
    final: FinalScores,
    test_dir: Path,
    projector_init: str,
    projector_files: list[Path],
    peak: dict,
    train_metrics: dict,
    env: dict,
    data_summary: dict,
    feature_cache: dict | None = None,
) -> dict:
    """The run's results.json (see llava_df.layout): metrics of the test weights, the best and last
    evaluations, the plan beside the measured peak, time, parameters, data skipped, the config."""
    evaluated = final.evaluated
    # Read when the run started (segments), never again: the Trainer's rotation (save_total_limit) may
    # have deleted the checkpoint this run resumed from by now.
    steps = step - run_config["segments"][-1]["from_step"]  # optimizer steps this segment ran
    caption = spec.task == "caption"
    return {
        "task": spec.task,
        "strategy": spec.strategy,
        "projector": spec.projector,
        "projector_init": projector_init,
        "bits": spec.bits,
        "steps": step,
        "stop_reason": plateau.last.stop_reason if plateau.last else None,
        "best": _best_entry(history.entries, plateau.schedule.best),
        "final": history.entries[-1] if history.entries else None,
        "test": _without("test", evaluated["test"]),
        "heldout": _without("heldout", evaluated.get("heldout", {})) or None,
        "val_at_test_weights": _without("val", evaluated["val"]),
        "threshold": None
        if caption
        else {
            "value": final.threshold,
            "rule": final.rule,
            "split": "val",
            "weights": test_dir.name,
            **weights_identity(test_dir),
        },  # fmt: skip
        "test_weights": test_dir.name,
        "peak_memory": peak,
        "memory_plan": run_config["checks"].get("memory_plan"),  # predicted before launch
        # the planner checked by this run: planned vs measured, the method, the device, the error
        "memory_check": memory_check(peak, run_config["checks"].get("memory_plan")),
        "time": {
            "train_s": train_metrics.get("train_runtime"),
            "steps_this_segment": steps,
            "s_per_step": train_metrics.get("train_runtime", 0.0) / max(steps, 1),
            # setup, training and scoring of this segment: CPU seconds of the process, every thread
            "process_cpu_s": train_metrics.get("process_cpu_s"),
        },
        "trainable": run_config["trainable"],
        "feature_cache": feature_cache,  # {"on", "store", "images", "hits", "misses"} or {"on": False, "reason"}
        "paths": {
            "best": str(out / "best") if (out / "best").is_dir() else None,
            "final": str(out / "final"),
            "mm_projector": [str(f) for f in projector_files],
        },
        "env": {"git": env["git"], "device": env["device"]},
        "data": data_summary,
        "config": run_config,
    }


def summary_line(results: dict) -> str:
    def f(value, fmt=".3f"):
        return (
            "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)
        )

    best, test, peak = results["best"] or {}, results["test"], results["peak_memory"]
    mem = peak.get("peak_allocated_mb") if peak["device"] == "cuda" else peak.get("peak_rss_mb")
    mem_kind = "allocated" if peak["device"] == "cuda" else "RSS"
    if results.get("task") == "caption":
        return (
            f"done: caption task (stage 1): best val loss {f(best.get('val_loss'))} | test loss {f(test.get('loss'))} | "
            f"peak memory {f(mem, '.0f')} MiB {mem_kind} ({peak['device']}) | "
            f"projector for stage 2: {', '.join(results['paths']['mm_projector']) or '-'}"
        )
    return (
        f"done: best val AUC {f(best.get('auc'))} (step {best.get('step', 'n/a')}) | "
        f"test accuracy {f(test.get('accuracy'))} AUC {f(test.get('auc'))} ({results['test_weights']}/) | "
        f"peak memory {f(mem, '.0f')} MiB {mem_kind} ({peak['device']}) | "
        f"weights: {results['paths']['best'] or '-'} , {results['paths']['final']}"
    )
