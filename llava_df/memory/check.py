"""Every run checks the planner: planned peak beside measured peak, and ``llava-df plan --check``.

How to call::

    memory_check(peak, plan)          # results.json's "memory_check" (peak: PeakMemory.read(), plan: compact plan)
    rows = check_runs(["outputs/a", "outputs/b", "results/comparison/runs/x.json"])
    print(format_check(rows))         # one line per run and the worst relative error

What is compared: the plan counts tensor bytes (weights, gradients, optimizer states, activations,
temporaries), which on CUDA is what ``torch.cuda.max_memory_allocated`` measures. On CPU the only
measurement is the process's peak RSS, which also holds the interpreter, the libraries and the
allocator's caches (hundreds of MiB for the tiny preset against a plan of tens), so a CPU run
records both numbers and says they are not comparable; its relative error is None.
"""

from __future__ import annotations

import json
from pathlib import Path

from llava_df.errors import RunError, UsageError

CPU_WHY = ("CPU: the plan counts tensor bytes, the process's peak RSS also holds the Python runtime, its "
           "libraries and allocator caches")  # fmt: skip


def memory_check(peak: dict | None, plan: dict | None) -> dict | None:
    """{"device", "planned_peak_mb", "method", "measured_peak_mb", "measured", "relative_error", "comparable"}."""
    if not peak or not plan:
        return None
    planned = plan.get("predicted_peak_mb")
    if peak.get("device") == "cuda":
        measured = peak.get("peak_allocated_mb")
        error = (planned - measured) / measured if planned is not None and measured else None
        return {"device": "cuda", "planned_peak_mb": planned, "method": plan.get("method"),
                "plan_target": plan.get("target"), "measured_peak_mb": measured,
                "measured": "torch.cuda.max_memory_allocated", "measured_reserved_mb": peak.get("peak_reserved_mb"),
                "relative_error": error, "comparable": plan.get("target") == "cuda" and error is not None}  # fmt: skip
    return {"device": "cpu", "planned_peak_mb": planned, "method": plan.get("method"), "plan_target": plan.get("target"),
            "measured_peak_mb": peak.get("peak_rss_mb"), "measured": "process peak RSS", "relative_error": None,
            "comparable": False, "why_not_comparable": CPU_WHY}  # fmt: skip


def _read(path: Path) -> tuple[str, dict | None, str | None]:
    """(name, memory_check, why it has none) of a run folder, its results.json, or a sweep record."""
    file = path / "results.json" if path.is_dir() else path
    if not file.is_file():
        return path.name, None, "no results.json (an unfinished run, or not a run folder)"
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as err:  # UnicodeDecodeError (random bytes) is a ValueError
        return path.name, None, f"unreadable: not JSON ({type(err).__name__})"
    if not isinstance(data, dict) or not RUN_KEYS & set(data):
        return path.name, None, NOT_A_RUN
    name = path.name if path.is_dir() else (data.get("cell") or {}).get("name", path.stem)
    if "memory_check" in data:
        check = data["memory_check"]
        return (
            name,
            check,
            None if check else "no memory plan recorded (the planner could not model this run)",
        )
    # a run folder from before memory_check: rebuild it from the plan and the peak it did record
    plan = data.get("memory_plan") or ((data.get("config") or {}).get("checks") or {}).get("memory_plan")
    check = memory_check(data.get("peak_memory"), plan)
    return (
        name,
        check,
        None if check else "recorded before memory_check and without its plan: rerun it to check",
    )


RUN_KEYS = {"memory_check", "peak_memory", "memory_plan"}  # what every results.json and sweep record holds
NOT_A_RUN = "not a llava_df results.json or sweep record (none of: " + ", ".join(sorted(RUN_KEYS)) + ")"
UNRECOGNISED = ("not a llava_df", "unreadable", "no results.json")  # how _read's reasons for a non-run begin


def check_runs(paths: list[str]) -> list[dict]:
    """One row per run found under ``paths``; RunError when none of them holds a run (garbage, an empty or
    unrelated folder), naming each path and why."""
    if not paths:
        raise UsageError(
            "--check needs run folders (or results.json / sweep record files), e.g. outputs/run1 outputs/run2."
        )
    rows = []
    for text in paths:
        path = Path(text)
        if not path.exists():
            raise UsageError(
                f"--check {text}: no such file or folder. Pass run folders (their --output_dir)."
            )
        found = (
            sorted(p for p in path.glob("*.json"))
            if path.is_dir() and not (path / "results.json").exists()
            else [path]
        )
        if not found:
            rows.append(
                {
                    "run": path.name,
                    "path": str(path),
                    "problem": "no results.json and no *.json records in it",
                }
            )
        for p in found:
            if p.suffix == ".json" and "__probe__" in p.name:
                continue  # a feature probe: no LLM run, nothing planned
            name, check, why = _read(p)
            # recognised: a run, even one whose check cannot be made (no plan recorded, unfinished)
            recognised = why is None or not why.startswith(UNRECOGNISED)
            rows.append(
                {"run": name, "path": str(p), **(check or {}), "problem": why, "recognised": recognised}
            )
    if not any(r.get("recognised") for r in rows):
        raise RunError(
            "--check found no llava_df run to check: "
            + "; ".join(f"{r['path']}: {r['problem']}" for r in rows[:6])
            + (f"; and {len(rows) - 6} more" if len(rows) > 6 else "")
            + ". Pass training run folders (their --output_dir), their results.json, or a sweep's runs/ folder."
        )
    return rows


def format_check(rows: list[dict]) -> str:
    lines = [
        "| run | device | planned MiB (method) | measured MiB (what) | relative error |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        if r["problem"]:
            lines.append(f"| {r['run']} | - | - | - | {r['problem']} |")
            continue
        error = f"{r['relative_error']:+.1%}" if r.get("comparable") else "not comparable (CPU RSS)"
        lines.append(
            f"| {r['run']} | {r['device']} | {r['planned_peak_mb']:.0f} ({r['method']}, for {r['plan_target']}) | "
            f"{r['measured_peak_mb']:.0f} ({r['measured']}) | {error} |"
        )
    comparable = [r for r in rows if r.get("comparable")]
    if comparable:
        worst = max(comparable, key=lambda r: abs(r["relative_error"]))
        lines.append(f"\nWorst relative error over {len(comparable)} CUDA runs: {worst['relative_error']:+.1%} ({worst['run']}); "
                     "positive = the plan was above the measurement.")  # fmt: skip
    else:
        lines.append(
            f"\nNo CUDA run among these {len(rows)}: {CPU_WHY}. Run on a GPU to check the planner there."
        )
    return "\n".join(lines)
