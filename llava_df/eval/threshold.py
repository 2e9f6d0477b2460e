"""The decision threshold on P(Fake): chosen on validation, saved with the run, used by predict and the demo.

How to call::

    rule = parse_threshold_rule("eer")                         # "eer" | "youden" | "fixed:0.5"; UsageError otherwise
    value = choose_threshold(rule, val_scores)       # val_scores: {"p_fake": [...], "is_fake": [...]}
    write_threshold(run_dir, value, rule, weights="best")   # run_dir/threshold.json
    read_threshold(run_dir, weights="best") -> dict  # {"value", "rule", "split", "weights"} or RunError

Rules: ``eer`` (default) the point where false-positive and false-negative rates meet;
``youden`` the point that maximizes TPR - FPR; ``fixed:p`` a given cut. A 0.5 cut on an
uncalibrated score can be far from either, which is why results.json also reports accuracy at
0.5 beside accuracy at the chosen threshold. A validation split without both classes (or with
no finite score) falls back to 0.5, and says so in the rule it records.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_curve

from llava_df.errors import RunError
from llava_df.io import write_json
from llava_df.spec.ranges import parse_threshold_rule

RULES = ("eer", "youden", "fixed:<p>")
THRESHOLD_FILE = "threshold.json"


def choose_threshold(rule: str, val_scores: dict) -> tuple[float, str]:
    """(threshold, the rule as applied) from validation scores."""
    rule = parse_threshold_rule(rule)
    if rule.startswith("fixed:"):
        return float(rule[6:]), rule
    y, p = np.asarray(val_scores["is_fake"]), np.asarray(val_scores["p_fake"], dtype=float)
    ok = np.isfinite(p)
    if set(y[ok].tolist()) != {0, 1}:
        return 0.5, f"{rule} (fell back to 0.5: validation lacks a class)"
    fpr, tpr, thresholds = roc_curve(y[ok], p[ok])
    # eer: where the miss rate meets the false-alarm rate; youden: the largest TPR - FPR
    i = int(np.nanargmin(np.abs((1 - tpr) - fpr))) if rule == "eer" else int(np.argmax(tpr - fpr))
    return float(min(thresholds[i], 1.0)), rule  # roc_curve's first threshold is inf


def write_threshold(
    run_dir: str | Path, value: float, rule: str, weights: str, identity: dict | None = None
) -> Path:
    """threshold.json for the weights in ``run_dir/weights``; ``identity`` ({"step", "sha256"}:
    llava_df.model.checkpoint.weights_identity) names those exact weights, so it is never applied to others."""

    path = Path(run_dir) / THRESHOLD_FILE
    identity = identity or {}
    write_json(
        path,
        {"value": value, "rule": rule, "split": "val", "weights": weights, "step": identity.get("step"),
         "weights_sha256": identity.get("sha256")},
    )  # fmt: skip
    return path


def _named(identity: dict) -> str:
    sha = identity.get("sha256") or identity.get("weights_sha256")
    return f"step {identity.get('step')}, weights sha256 {str(sha)[:12]}"


def read_threshold(folder: str | Path, weights: str | None = None, identity: dict | None = None) -> dict:
    """The saved threshold of a run (or merged checkpoint) folder; RunError saying what to do otherwise.

    ``identity``: the {"step", "sha256"} of the weights about to be used. A threshold chosen for other
    weights (an old run's threshold.json beside a new run's best/, as an interrupted
    --overwrite_output_dir could leave) is refused naming both, never applied.
    """
    path = Path(folder) / THRESHOLD_FILE
    if not path.is_file():
        raise RunError(
            f"{folder} has no {THRESHOLD_FILE} (runs from before it existed, or another tool's checkpoint). Pass "
            "--threshold P (a cut on P(Fake) in [0, 1]), or re-run training."
        )
    try:
        saved = json.loads(path.read_text())
        value = saved["value"]
    except (ValueError, KeyError, TypeError) as err:
        raise RunError(f"{path} is unreadable ({type(err).__name__}); pass --threshold P.") from None
    # bool is an int to Python, and json reads NaN/Infinity: a probability is a finite real in [0, 1].
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise RunError(
            f"{path}: value {json.dumps(value)} is not a probability in [0, 1]; pass --threshold P, or re-run "
            "training to write it again."
        )
    if weights is not None and saved.get("weights") not in (None, weights):
        raise RunError(
            f"{path} holds the threshold chosen for the {saved['weights']}/ weights, not {weights}/. Use --weights "
            f"{saved['weights']}, or pass --threshold P for {weights}/."
        )
    chosen_for = saved.get("weights_sha256")
    if identity and identity.get("sha256") and chosen_for and chosen_for != identity["sha256"]:
        raise RunError(
            f"{path} was chosen for other weights ({_named(saved)}) than {Path(folder) / (weights or '')} holds "
            f"({_named(identity)}): it belongs to another run or checkpoint. Re-run training (or "
            "--resume_from_checkpoint last) to choose it for these weights, or pass --threshold P."
        )
    return saved
