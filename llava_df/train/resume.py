"""Resume is honest: a resumed run uses the settings it started with, or says what changed.

How to call (``llava_df.train.workflow`` does when ``--resume_from_checkpoint`` is given)::

    changes = check_resume_config(saved_run_config, new_run_config, allow="max_steps,learning_rate")
    # -> {"training.max_steps": {"from": 10, "to": 20}, ...}; RunError on a change not allowed

Any difference in the model, data, strategy or training settings is refused, listing the keys
with their old and new values, unless ``--resume_allow_changes`` names them (by field name or
``section.field``). Settings that cannot change the result (logging, evaluation batch size,
where files go, progress bars) pass with a note. ``segments`` in run_config.json records what
each part of the run used, with the step it started from.
"""

from __future__ import annotations

import time

from llava_df.errors import RunError

SECTIONS = ("model", "data", "training")
# Cannot alter the trained weights or the metrics: logging, output locations, speed knobs that
# do not change the math, and flags about resuming itself.
HARMLESS = {
    "logging_steps", "logging_first_step", "logging_strategy", "logging_nan_inf_filter", "report_to",
    "disable_tqdm", "per_device_eval_batch_size", "eval_accumulation_steps", "dataloader_num_workers",
    "dataloader_pin_memory", "dataloader_persistent_workers", "dataloader_prefetch_factor",
    "save_total_limit", "save_steps", "save_strategy", "save_only_model", "output_dir",
    "overwrite_output_dir", "resume_from_checkpoint", "resume_allow_changes", "run_name", "log_level",
    "log_level_replica", "log_on_each_node", "push_to_hub", "hub_model_id", "hub_strategy", "hub_token",
    "hub_private_repo", "hub_always_push", "include_num_input_tokens_seen", "skip_memory_metrics",
    "project", "trackio_space_id", "allow_base_mismatch", "mm_projector_bin", "local_rank",
}  # fmt: skip


def flatten(run_config: dict) -> dict:
    flat = {f"{s}.{k}": v for s in SECTIONS for k, v in (run_config.get(s) or {}).items()}
    flat["strategy"] = run_config.get("strategy")
    return flat


def _allowed(key: str, allow: set[str]) -> bool:
    return key in allow or key.split(".", 1)[-1] in allow


def check_resume_config(saved: dict, new: dict, allow: str = "") -> dict:
    """Changed keys {key: {"from", "to", "kind"}}; RunError if any result-changing one is not allowed."""
    allow_set = {a.strip() for a in str(allow or "").split(",") if a.strip()}
    old, cur = flatten(saved), flatten(new)
    changes = {}
    for key in sorted(set(old) | set(cur)):
        if old.get(key) == cur.get(key):
            continue
        name = key.split(".", 1)[-1]
        kind = "harmless" if name in HARMLESS else "allowed" if _allowed(key, allow_set) else "refused"
        changes[key] = {"from": old.get(key), "to": cur.get(key), "kind": kind}
    refused = {k: v for k, v in changes.items() if v["kind"] == "refused"}
    if refused:
        listed = "; ".join(f"{k}: {v['from']!r} -> {v['to']!r}" for k, v in refused.items())
        names = ",".join(k.split(".", 1)[-1] for k in refused)
        raise RunError(
            f"--resume_from_checkpoint: these settings differ from the ones the run was started with: {listed}. "
            f"Resume with the same settings, or pass --resume_allow_changes {names} to change them on purpose "
            "(recorded in run_config.json's segments)."
        )
    return changes


def add_segment(
    run_config: dict, previous: dict | None, *, argv: list[str], from_step: int, changes: dict
) -> dict:
    """run_config with ``segments``: the previous ones kept, this one appended."""
    segments = list((previous or {}).get("segments") or [])
    segments.append(
        {
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "from_step": from_step,
            "argv": list(argv),
            "changes": changes,
        }
    )
    return run_config | {"segments": segments}
