"""``llava-df evaluate``: rebuild a finished run's model and data, score one split at the run's threshold rule.

How to call::

    llava-df evaluate --run_dir outputs/run [--weights best|final] [--split test]
    evaluate_run(run_dir, weights="best", split="test")   # the metrics dict
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from llava_df.data.pipeline import load_data, split_of
from llava_df.errors import ArgumentParser, RunError, UsageError, cli_entry
from llava_df.eval.scoring import predict_split, scoring_trainer
from llava_df.eval.threshold import choose_threshold
from llava_df.io import write_json

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
    from llava_df.model.checkpoint import load_trained
    from llava_df.spec.args import DataArguments

    run_dir = Path(run_dir)
    config_file = run_dir / "run_config.json"
    if not config_file.is_file():
        raise RunError(f"{run_dir} has no run_config.json: pass the --output_dir of a llava_df.train.workflow run.")
    if not (run_dir / weights).is_dir():
        raise RunError(
            f"{run_dir / weights} does not exist; try --weights {'final' if weights == 'best' else 'best'}."
        )
    try:
        config = json.loads(config_file.read_text())
        data_args = DataArguments(**config["data"])
    except (ValueError, KeyError, TypeError) as err:
        raise RunError(
            f"{config_file} is unreadable or not a llava_df run config ({type(err).__name__}: {err}). Re-run training, "
            "or restore the file from the run's checkpoint folders."
        ) from None
    training = config["training"]
    # is_trainable: the same model structure as in training (a PeftModel), which the Trainer accepts
    # for quantized models; nothing is trained here.
    model, processor = load_trained(run_dir / weights, is_trainable=True, allow_base_mismatch=allow_base_mismatch)
    model.eval()
    splits, collator, fake_id, real_id = load_data(
        data_args, processor, training["seed"], training["model_max_length"]
    )
    with scoring_trainer(model, collator, fake_id, real_id, batch_size) as trainer:
        # The decision threshold as training chose it (--threshold_rule on val), for these weights.
        _, val_scores = predict_split(trainer, split_of(splits, "val"), "val", drop_nonfinite=drop_nonfinite)
        threshold, rule = choose_threshold(training.get("threshold_rule", "eer"), val_scores)
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
    from transformers.hf_argparser import string_to_bool

    parser = ArgumentParser(prog="llava-df evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--run_dir", required=True, help="A finished run's output_dir (has run_config.json).")
    parser.add_argument(
        "--weights", default="best", choices=("best", "final"), help="Which saved weights to load."
    )
    parser.add_argument("--split", default="test", choices=("train", "val", "test", "heldout"))
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument(
        "--output",
        default=None,
        help="Where to write the metrics JSON (default: RUN_DIR/eval_<weights>_<split>.json); use it for a "
        "read-only run folder.",
    )
    parser.add_argument(
        "--drop_nonfinite_scores",
        type=string_to_bool,
        default=False,
        help="Leave samples with a NaN/inf score out of the metrics instead of stopping with an error.",
    )
    parser.add_argument(
        "--allow_base_mismatch", action="store_true", help="Load the run's weights even onto another base revision."
    )
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        raise UsageError(f"--batch_size {args.batch_size}: expected an integer >= 1.")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
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
