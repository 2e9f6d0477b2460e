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
from pathlib import Path

from llava_df.apps.evaluate_flags import EvaluateArguments, parse
from llava_df.apps.test_sets import run_test_sets
from llava_df.data.load import load_splits
from llava_df.data.pipeline import split_of
from llava_df.errors import RunError, cli_entry
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


@cli_entry
def main(argv: list[str]) -> dict:
    return run(parse(argv))


def run(args: EvaluateArguments) -> dict:
    """Score ``args.split`` of ``args.run_dir`` (parsed and checked by llava_df.apps.evaluate_flags.parse)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.tests:
        return run_test_sets(args, args.tests)
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
