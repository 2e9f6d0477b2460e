"""``llava-df evaluate``: rebuild a finished run's model and data, score one split at the run's threshold rule.

How to call::

    llava-df evaluate --run_dir outputs/run [--weights best|final] [--split test]
    llava-df evaluate --run_dir outputs/run --test celebdf=data/rgb/Celeb-DF-v2 --test dfdc=data/rgb/DFDC   # the table
    llava-df evaluate --help                # every flag, with its default
    evaluate_run(run_dir, weights="best", split="test")   # the metrics dict
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from llava_df.apps.test_sets import collect_tests, parse_tests, run_test_sets
from llava_df.cli_args import parse_verb
from llava_df.data.load import load_splits
from llava_df.data.pipeline import split_of
from llava_df.errors import RunError, UsageError, cli_entry
from llava_df.eval.detector import Detector
from llava_df.eval.scoring import predict_split, scoring_trainer
from llava_df.eval.threshold import choose_threshold
from llava_df.io import write_json
from llava_df.spec.run_spec import SavedRun

logger = logging.getLogger(__name__)


# ---- a finished run -------------------------------------------------------------------------
def evaluate_run(
    run_dir: Path,
    *,
    weights: str = "best",
    split: str = "test",
    batch_size: int = 8,
    drop_nonfinite: bool = False,
    allow_base_mismatch: bool = False,
) -> dict:
    """Rebuild a run's model + data and evaluate one split (``heldout`` too, with a held-out family)
    at the run's threshold rule applied to val; returns the metrics (``main`` writes them)."""
    run_dir = Path(run_dir)
    saved = SavedRun.read(run_dir)  # before any weight loads: a folder that is not a run fails here
    if not (run_dir / weights).is_dir():
        raise RunError(
            f"{run_dir / weights} does not exist; try --weights {'final' if weights == 'best' else 'best'}."
        )
    # The detector as predict loads it; its threshold is chosen again below, on val, by the run's rule.
    detector = Detector.from_pretrained(
        run_dir, weights=weights, threshold=None, allow_base_mismatch=allow_base_mismatch
    )
    splits = load_splits(detector.data, seed=saved.training["seed"])
    d = detector
    with scoring_trainer(d.model, d.collator, d.fake_id, d.real_id, batch_size) as trainer:
        # The decision threshold as training chose it (--threshold_rule on val), for these weights.
        _, val_scores = predict_split(trainer, split_of(splits, "val"), "val", drop_nonfinite=drop_nonfinite)
        threshold, rule = choose_threshold(saved.training.get("threshold_rule", "eer"), val_scores)
        metrics, _ = predict_split(
            trainer, split_of(splits, split), split, threshold=threshold, drop_nonfinite=drop_nonfinite
        )
    return {
        "weights": weights,
        "split": split,
        "threshold_rule": rule,
        **{k.removeprefix(f"{split}_"): v for k, v in metrics.items()},
    }


@dataclass
class EvaluateArguments:
    """``llava-df evaluate``'s flags."""

    run_dir: str = field(metadata={"help": "Required: a finished run's output_dir (has run_config.json)."})
    weights: Literal["best", "final"] = field(
        default="best", metadata={"help": "Which saved weights to load."}
    )
    split: Literal["train", "val", "test", "heldout"] = field(
        default="test", metadata={"help": "The split to score (heldout: the held-out manipulation family)."}
    )
    batch_size: int = field(default=8, metadata={"help": "Images per forward pass."})
    output: str | None = field(
        default=None,
        metadata={
            "help": "Where to write the metrics JSON (None: RUN_DIR/eval_<weights>_<split>.json); use it for a "
            "read-only run folder."
        },
    )
    drop_nonfinite_scores: bool = field(
        default=False,
        metadata={
            "help": "Leave samples with a NaN/inf score out of the metrics instead of stopping with an error."
        },
    )
    allow_base_mismatch: bool = field(
        default=False, metadata={"help": "Load the run's weights even onto another base revision."}
    )
    # The test-set table (llava_df.apps.test_sets): --test NAME=SOURCE, repeatable.
    test: list[str] | None = field(
        default=None,
        metadata={
            "help": "NAME=SOURCE (repeatable): also score this test set (a folder, a JSON/JSONL or a DeepfakeBench JSON; "
            "its test split) beside the run's own test split: one row each, frame and video level."
        },
    )
    video_agg: Literal["mean", "max", "median"] = field(
        default="mean", metadata={"help": "--test table: a video's score from its frames' P(Fake)."}
    )
    bootstrap: int = field(
        default=1000, metadata={"help": "--test table: bootstrap draws of videos for the 95%% CIs."}
    )
    rgb_root: str | None = field(
        default=None,
        metadata={"help": "--test with a DeepfakeBench JSON: its frames' root (default: the run's)."},
    )


@cli_entry
def main(argv: list[str]) -> dict:
    tests, argv = collect_tests(argv)  # repeatable --test (llava_df.apps.test_sets)
    args, _ = parse_verb(
        EvaluateArguments, argv, prog="llava-df evaluate", description=__doc__.split("\n")[0]
    )
    if args.batch_size < 1:
        raise UsageError(f"--batch_size {args.batch_size}: expected an integer >= 1.")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if tests:
        return run_test_sets(args, parse_tests(tests))
    metrics = evaluate_run(
        Path(args.run_dir),
        weights=args.weights,
        split=args.split,
        batch_size=args.batch_size,
        drop_nonfinite=args.drop_nonfinite_scores,
        allow_base_mismatch=args.allow_base_mismatch,
    )
    print(json.dumps(metrics, indent=2), flush=True)  # first: a failed write below loses nothing
    output = (
        Path(args.output) if args.output else Path(args.run_dir) / f"eval_{args.weights}_{args.split}.json"
    )
    try:
        write_json(output, metrics)
    except OSError as err:
        raise RunError(
            f"Cannot write {output} ({err.strerror}); the metrics are printed above. Pass --output to write elsewhere."
        ) from None
    print(f"wrote {output}", file=sys.stderr)
    return metrics


if __name__ == "__main__":
    main()
