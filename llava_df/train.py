"""``python -m llava_df.train``: parse -> seed -> build -> strategy -> Trainer -> save.

How to call::

    python -m llava_df.train --config configs/tiny_lora_lowvram.yaml --output_dir outputs/run [--flag value ...]
    python -m llava_df.train --help                     # every flag, with its help
    main(["--max_steps", "4", "--output_dir", "o"])     # in-process; returns the results dict

Output layout (output_dir)::

    run_config.json        the resolved configuration (every field, notes on renamed/derived flags)
    config.yaml            only the keys that were set: rerun with --config output_dir/config.yaml
    env.json               git commit + dirty flag, package versions, device
    training_history.json  one entry per evaluation: step, epoch, loss, val_loss, lr, accuracy, auc, ...
    best/  final/          trained parts (projector, LoRA adapter, unfrozen layers) + config, via
                           llava_df.checkpointing.save_trainable; best = last val-loss improvement
    checkpoint-N/          the Trainer's resumable checkpoints, with our trained parts in each
    runs/                  tensorboard logs (or $TENSORBOARD_LOGGING_DIR / --logging_dir)
    results.json           best/final validation, test metrics (on best/), peak memory, paths
"""

from __future__ import annotations

import logging
import math
import shutil
import sys
from pathlib import Path

import torch
import yaml
from transformers import set_seed
from transformers.trainer_utils import get_last_checkpoint

from .callbacks import HistoryCallback, PlateauCallback, restore_callback_states, write_json
from .checkpointing import load_trainable_weights, save_trainable
from .cli import ConfigError, ParsedArgs, parse_args, run_env
from .evaluate import AnswerMetrics, AnswerScores, evaluate_split, load_data, split_of
from .llava_layout import projector as projector_of
from .llava_layout import unwrap
from .memory import PeakMemory
from .runinfo import write_environment
from .trainer import DeepfakeTrainer, NonFiniteLossError, RunError

logger = logging.getLogger(__name__)
__all__ = ["NonFiniteLossError", "RunError", "main", "prepare_output_dir", "train"]


# ---- output folder --------------------------------------------------------------------------
RUN_ARTIFACTS = ("final", "best", "training_history.json", "results.json")


def prepare_output_dir(out: Path, *, overwrite: bool, resume: str | None) -> str | None:
    """Refuse to write over a finished run; resolve --resume_from_checkpoint ('last'/True -> newest)."""
    if (out / "final").exists():
        if not overwrite:
            raise RunError(
                f"--output_dir {out} holds a finished run (final/ exists). Pass --overwrite_output_dir True to "
                "replace it, or choose another --output_dir."
            )
        if resume:
            raise RunError(
                f"--resume_from_checkpoint with --overwrite_output_dir on finished run {out}: pick one."
            )
        for name in RUN_ARTIFACTS:
            path = out / name
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        for ckpt in out.glob("checkpoint-*"):
            shutil.rmtree(ckpt)
        logger.warning(
            "--overwrite_output_dir: removed the previous run's final/, best/, checkpoints in %s", out
        )
    if resume is None or str(resume).lower() in ("", "false", "none"):
        return None
    if str(resume).lower() in ("true", "last"):
        last = get_last_checkpoint(str(out)) if out.is_dir() else None
        if last is None:
            raise RunError(f"--resume_from_checkpoint {resume}: no checkpoint-N folder in {out}.")
        return last
    if not (Path(resume) / "trainer_state.json").is_file():
        raise RunError(f"--resume_from_checkpoint {resume}: not a checkpoint folder (no trainer_state.json).")
    return str(resume)


def _torch_dtype(training_args):
    return torch.bfloat16 if training_args.bf16 else torch.float16 if training_args.fp16 else None


# ---- the run --------------------------------------------------------------------------------
def train(parsed: ParsedArgs, callbacks: tuple = ()) -> dict:
    """Run one training job from parsed arguments; returns the results dict (also results.json).

    ``callbacks``: extra TrainerCallbacks, added after ours (tests use one to interrupt a run).
    """
    t = parsed.training
    out = Path(t.output_dir)
    resume = prepare_output_dir(out, overwrite=t.overwrite_output_dir, resume=t.resume_from_checkpoint)
    out.mkdir(parents=True, exist_ok=True)
    with run_env(parsed, default_tensorboard_dir=str(out / "runs")):
        return _train(parsed, out, resume, callbacks)


def _train(parsed: ParsedArgs, out: Path, resume: str | None, callbacks: tuple) -> dict:
    from .modeling import build_model
    from .strategies import apply_strategy, resolve_strategy, trainable_report

    m, d, t = parsed.model, parsed.data, parsed.training
    if not torch.cuda.is_available():
        t.dataloader_pin_memory = False  # pinning needs an accelerator; it only warns without one
    for note in parsed.notes:
        logger.warning("note: %s", note)

    strategy = resolve_strategy(m)
    from .data import label_mapping

    # Saved with the run: datasets sorts class folders alphabetically (fake=0, real=1), ours is fake=1.
    run_config = parsed.to_dict() | {
        "strategy": strategy,
        "label_mapping": label_mapping(d.answer_real, d.answer_fake),
    }
    write_json(out / "run_config.json", run_config)
    (out / "config.yaml").write_text(
        f"# Resolved from: python -m llava_df.train {' '.join(run_config.get('argv', []))}\n"
        f"# Rerun: python -m llava_df.train --config {out / 'config.yaml'}\n"
        + yaml.safe_dump(run_config["explicit"], sort_keys=False)
    )
    env = write_environment(out / "env.json")

    meter = PeakMemory()
    meter.reset()  # before the model loads: the peak covers weights + training
    set_seed(t.seed)
    model, processor = build_model(m, torch_dtype=_torch_dtype(t))
    model = apply_strategy(model, m, gradient_checkpointing=bool(t.activation_checkpointing))
    if t.kan_reg_weight and not hasattr(projector_of(unwrap(model)), "regularization_loss"):
        raise RunError(
            f"--kan_reg_weight {t.kan_reg_weight} needs a KAN projector with regularization_loss(); "
            f"--mm_projector_type {m.mm_projector_type} has none. Use a kan_* projector or --kan_reg_weight 0."
        )
    report = trainable_report(model)
    run_config["trainable"] = report
    splits, collator, fake_id, real_id = load_data(d, processor, t.seed, t.model_max_length)
    train_ds, val_ds, test_ds = (split_of(splits, s) for s in ("train", "val", "test"))

    plateau = PlateauCallback.from_args(
        t,
        on_best=lambda model, state: save_trainable(
            model, out / "best", run_config | {"step": state.global_step}
        ),
    )
    history = HistoryCallback(out / "training_history.json", plateau=plateau)
    trainer = DeepfakeTrainer(
        model=model,
        args=t,
        train_dataset=train_ds,
        eval_dataset=val_ds,
        data_collator=collator,
        callbacks=[plateau, history, *callbacks],  # history reads plateau's decision: keep this order
        compute_metrics=AnswerMetrics.for_split(val_ds, drop_nonfinite=t.drop_nonfinite_scores),
        preprocess_logits_for_metrics=AnswerScores(fake_id, real_id),
        run_config=run_config,
        extra_input_keys=getattr(collator, "extra_keys", ()),
    )
    if resume:
        restored = restore_callback_states([plateau, history], resume)
        logger.warning("resuming from %s (restored %s)", resume, ", ".join(restored) or "no callback state")
    trainer.train(resume_from_checkpoint=resume)

    save_trainable(trainer.model, out / "final", run_config | {"step": trainer.state.global_step})
    best_dir = out / "best" if (out / "best").is_dir() else out / "final"
    if best_dir.name == "best":  # test on the weights chosen on validation
        load_trainable_weights(trainer.model, best_dir)
    test = evaluate_split(trainer, test_ds, prefix="test", drop_nonfinite=t.drop_nonfinite_scores)
    peak = meter.read()
    trainer.log({f"peak_{k}": v for k, v in peak.items() if isinstance(v, float)})

    best_entry = _best_entry(history.entries, plateau.schedule.best)
    results = {
        "strategy": strategy,
        "projector": m.mm_projector_type,
        "bits": m.bits,
        "steps": trainer.state.global_step,
        "stop_reason": plateau.last.stop_reason if plateau.last else None,
        "best": best_entry,
        "final": history.entries[-1] if history.entries else None,
        "test": {k.removeprefix("test_"): v for k, v in test.items()},
        "test_weights": best_dir.name,
        "peak_memory": peak,
        "trainable": report,
        "paths": {
            "best": str(out / "best") if (out / "best").is_dir() else None,
            "final": str(out / "final"),
        },
        "env": {"git": env["git"], "device": env["device"]},
        "config": run_config,
    }
    write_json(out / "results.json", results)
    print(summary_line(results), flush=True)
    return results


def _best_entry(entries: list[dict], best_val_loss: float) -> dict | None:
    hits = [e for e in entries if e.get("val_loss") == best_val_loss]
    return hits[-1] if hits else None


def summary_line(results: dict) -> str:
    def f(value, fmt=".3f"):
        return (
            "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)
        )

    best, test, peak = results["best"] or {}, results["test"], results["peak_memory"]
    mem = peak.get("peak_allocated_mb") if peak["device"] == "cuda" else peak.get("peak_rss_mb")
    mem_kind = "allocated" if peak["device"] == "cuda" else "RSS"
    return (
        f"done: best val AUC {f(best.get('auc'))} (step {best.get('step', 'n/a')}) | "
        f"test accuracy {f(test.get('accuracy'))} AUC {f(test.get('auc'))} ({results['test_weights']}/) | "
        f"peak memory {f(mem, '.0f')} MiB {mem_kind} ({peak['device']}) | "
        f"weights: {results['paths']['best'] or '-'} , {results['paths']['final']}"
    )


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return train(parse_args(argv))
    except (ConfigError, RunError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2 if isinstance(err, ConfigError) else 1) from err


if __name__ == "__main__":
    main()
