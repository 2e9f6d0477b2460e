"""``python -m llava_df.train``: parse -> validate -> index data -> claim the folder -> load -> train -> save.

How to call::

    python -m llava_df.train --config configs/tiny_lora_lowvram.yaml --output_dir outputs/run [--flag value ...]
    python -m llava_df.train --help                     # every flag, with its help
    main(["--max_steps", "4", "--output_dir", "o"])     # in-process; returns the results dict

Order (each step fails with one ``error:`` line before the next one starts)::

    parse_args         every flag, its range and its combinations (cli.py, validation.py)
    validate_inputs    projector size and start weights, from config.json alone (no model weights)
    prepare_data       the whole dataset: labels, splits, duplicates, readable files, >= 1 step
    claim_output_dir   lock the folder, refuse to mix runs, set a replaced run aside (outdir.py)
    build_model ...    only now are weights loaded; then the Trainer runs

Output layout (output_dir)::

    run_config.json        the resolved configuration; ``segments``: what each (resumed) part used
    config.yaml            only the keys that were set: rerun with --config output_dir/config.yaml
    env.json               git commit + dirty flag, package versions, device
    training_history.json  one entry per evaluation: step, epoch, loss, val_loss, lr, accuracy, auc, ...
    best/  final/          trained parts (projector, LoRA adapter, unfrozen layers) + config, via
                           llava_df.model.checkpoint.save_trainable; best = last val-loss improvement
    checkpoint-N/          the Trainer's resumable checkpoints, with our trained parts in each;
                           llava_df_complete.json marks one as complete
    runs/                  tensorboard logs (or $TENSORBOARD_LOGGING_DIR / --logging_dir)
    threshold.json         the decision threshold on P(Fake), chosen on val by --threshold_rule for the test weights
    results.json           best/final validation, test (+ heldout) metrics on best/ at that threshold (and at 0.5),
                           peak memory, data.skipped (--task caption: val and test loss)
    scores.json            P(Fake) per image of val, test (+ heldout), for paired comparisons (not for captions)
    mm_projector.safetensors  the projector of the test weights in LLaVA's key layout (+ mm_projector.bin with
                           --mm_projector_bin True): what stage 2's --pretrain_mm_mlp_adapter reads
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from transformers import TrainerState, set_seed

from llava_df.data.pipeline import load_data, split_of
from llava_df.errors import DataError, RunError, UsageError, cli_entry
from llava_df.eval.metrics import AnswerMetrics, AnswerScores
from llava_df.eval.scoring import predict_split
from llava_df.eval.threshold import choose_threshold, write_threshold
from llava_df.io import write_json, write_text
from llava_df.memory import PeakMemory
from llava_df.memory.plan import compact
from llava_df.model.anatomy import projector as projector_of
from llava_df.model.anatomy import unwrap
from llava_df.model.checkpoint import (
    export_mm_projector,
    load_trainable_weights,
    save_trainable,
    weights_identity,
)
from llava_df.provenance import write_environment
from llava_df.spec.parse import ParsedArgs, parse_args, run_env
from llava_df.train.callbacks import HistoryCallback, PlateauCallback, restore_callback_states
from llava_df.train.outdir import check_output_dir, claim_output_dir, is_main_process, resume_request
from llava_df.train.resume import add_segment, check_resume_config
from llava_df.train.trainer import DeepfakeTrainer, NonFiniteLossError

logger = logging.getLogger(__name__)
__all__ = ["NonFiniteLossError", "RunError", "main", "train", "validate_inputs"]


def process_device_map(training_args) -> dict | None:
    """Data parallel on GPUs: each process loads its whole (INT8/NF4/16-bit) model onto its own GPU,
    straight from disk (never ``"auto"``, which would split one model over every GPU). One process
    or CPU: None, from_pretrained's default."""
    if training_args.world_size > 1 and torch.cuda.is_available() and not training_args.use_cpu:
        return {"": training_args.local_process_index}
    return None


def _torch_dtype(training_args):
    return torch.bfloat16 if training_args.bf16 else torch.float16 if training_args.fp16 else None


# ---- before anything is loaded or written ---------------------------------------------------
def validate_inputs(parsed: ParsedArgs) -> dict:
    """Checks that need the model's config.json (never its weights); returns what they found."""
    from llava_df.model.build import load_projector_weights, model_config, projector_dims
    from llava_df.projectors import create_projector
    from llava_df.spec.ranges import check_config_sizes, check_projector_size

    m, t = parsed.model, parsed.training
    resume = resume_request(t.resume_from_checkpoint)
    if resume not in (None, "last") and not Path(resume).is_dir():
        raise UsageError(
            f"--resume_from_checkpoint {resume}: no such folder. Pass a checkpoint-N folder, or 'last' for the "
            "newest complete one in --output_dir."
        )
    config = model_config(m)
    # Sizes no real model has (0, a million-wide layer) end here in one line, not in a build of gigabytes.
    check_config_sizes(config.to_dict(), f"--model_name_or_path {m.model_name_or_path}")
    dims = projector_dims(config)
    n_params = check_projector_size(parsed, dims)
    if t.kan_reg_weight and not hasattr(create_projector(m.mm_projector_type, 8, 8), "regularization_loss"):
        raise UsageError(
            f"--kan_reg_weight {t.kan_reg_weight} needs a KAN projector with regularization_loss(); "
            f"--mm_projector_type {m.mm_projector_type} has none. Use a kan_* projector or --kan_reg_weight 0."
        )
    if m.pretrain_mm_mlp_adapter:  # does the file fit this projector at this model's widths?
        load_projector_weights(create_projector(m.mm_projector_type, *dims), m.pretrain_mm_mlp_adapter)
    return {"projector_dims": list(dims), "projector_parameters": n_params}


@dataclass
class Data:
    splits: dict
    collator: object
    fake_id: int
    real_id: int

    def summary(self) -> dict:
        """For results.json: split sizes and every skipped entry with its reason."""
        loaded = self.splits["train"].summary
        info = loaded.to_dict() if loaded is not None else {}
        return info | {"splits": {name: len(ds) for name, ds in self.splits.items()}}


def prepare_data(parsed: ParsedArgs) -> Data:
    """Index and validate the whole dataset with the tokenizer only (no model weights)."""
    from llava_df.model.build import load_processor

    d, t = parsed.data, parsed.training
    processor = load_processor(parsed.model)
    try:
        splits, collator, fake_id, real_id = load_data(d, processor, t.seed, t.model_max_length)
    except DataError:
        raise
    except (ValueError, KeyError, FileNotFoundError) as err:  # a loader's message, written for the user
        raise DataError(str(err).strip("'\"")) from None
    # One sample through the collator: a prompt that --model_max_length truncates fails here, not at step 1.
    train_ds = split_of(splits, "train")
    collator([train_ds[0]])
    return Data(splits, collator, fake_id, real_id)


# ---- the run --------------------------------------------------------------------------------
def train(parsed: ParsedArgs, callbacks: tuple = ()) -> dict:
    """Run one training job from parsed arguments; returns the results dict (also results.json).

    ``callbacks``: extra TrainerCallbacks, added after ours (tests use one to interrupt a run).
    """
    t = parsed.training
    out = Path(t.output_dir)
    if not t.plan_only:  # first: seconds of validation and planning must not end at a folder we cannot use
        check_output_dir(out, overwrite=t.overwrite_output_dir, resume=t.resume_from_checkpoint)
    checks = validate_inputs(parsed)
    data = prepare_data(parsed)
    plan = memory_plan(parsed, data)
    if t.plan_only:
        return {"memory_plan": plan}
    # Shared caches (the tiny preset, an assembled LLaVA) are built (once, by whichever process comes
    # first) before the output folder is claimed, so the claim's barrier never waits on a build.
    from llava_df.model.build import materialize_base

    materialize_base(parsed.model, torch_dtype=_torch_dtype(t))
    _ = t.world_size  # sets up the process group under torchrun / accelerate (claim_output_dir synchronizes on it)
    with (
        claim_output_dir(out, overwrite=t.overwrite_output_dir, resume=t.resume_from_checkpoint) as claim,
        run_env(parsed, default_tensorboard_dir=str(out / "runs")),
    ):
        return _train(parsed, out, claim, data, checks | {"memory_plan": compact(plan)}, callbacks)


def memory_plan(parsed: ParsedArgs, data: Data) -> dict | None:
    """The memory plan of this run (llava_df.memory), printed before any weights load.

    Sequence length: the collator's, on up to 16 training samples. The dry run (seconds on a
    7B shape) runs for CUDA runs and --plan_only; a CPU run prints the closed form (milliseconds).
    A plan that cannot be made is a warning, never a failed run (--plan_only: an error).
    """
    from llava_df.memory.plan import format_plan, plan_parsed

    t = parsed.training
    target = "cuda" if torch.cuda.is_available() and not t.use_cpu else "cpu"
    try:
        train_ds = split_of(data.splits, "train")
        seq = int(data.collator([train_ds[i] for i in range(min(16, len(train_ds)))])["input_ids"].shape[1])
        plan = plan_parsed(parsed, target=target, seq_len=seq, dry=t.plan_only or target == "cuda")
    except Exception as err:  # the planner must not stop a run it could not model (--plan_only: it is the run)
        if t.plan_only:
            raise
        logger.warning("memory plan not available (%s: %s); training goes on", type(err).__name__, err)
        return None
    if is_main_process():
        print(format_plan(plan), flush=True)
    return plan


def _run_config(parsed: ParsedArgs, out: Path, resume: str | None) -> dict:
    """The resolved config; on resume, checked against the saved one and appended as a segment."""
    from llava_df.data import label_mapping
    from llava_df.model.strategies import resolve_strategy

    d = parsed.data
    # Saved with the run: datasets sorts class folders alphabetically (fake=0, real=1), ours is fake=1.
    run_config = parsed.to_dict() | {
        "strategy": resolve_strategy(parsed.model),
        "label_mapping": label_mapping(d.answer_real, d.answer_fake),
    }
    saved = None
    changes: dict = {}
    from_step = 0
    if resume:
        saved_file = out / "run_config.json"
        try:
            saved = json.loads(saved_file.read_text())
        except (OSError, ValueError) as err:
            raise RunError(
                f"--resume_from_checkpoint: {saved_file} is missing or unreadable ({type(err).__name__}), so the "
                "settings the run started with are unknown. Start a new run with --overwrite_output_dir True."
            ) from None
        changes = check_resume_config(saved, run_config, parsed.training.resume_allow_changes)
        for key, change in changes.items():
            logger.warning(
                "resume: %s changed %r -> %r (%s)", key, change["from"], change["to"], change["kind"]
            )
        from_step = resumed_step(resume)
    return add_segment(run_config, saved, argv=parsed.argv, from_step=from_step, changes=changes)


def _train(parsed: ParsedArgs, out: Path, claim, data: Data, checks: dict, callbacks: tuple) -> dict:
    from llava_df.model.build import build_model
    from llava_df.model.strategies import apply_strategy, trainable_report

    m, t = parsed.model, parsed.training
    resume = claim.resume
    if not torch.cuda.is_available():
        t.dataloader_pin_memory = False  # pinning needs an accelerator; it only warns without one
    for note in [*parsed.notes, *claim.notes]:
        logger.warning("note: %s", note)

    run_config = _run_config(parsed, out, resume) | {"checks": checks}
    strategy = run_config["strategy"]
    if is_main_process():
        write_json(out / "run_config.json", run_config)
        write_text(
            out / "config.yaml",
            f"# Resolved from: python -m llava_df.train {' '.join(run_config.get('argv', []))}\n"
            f"# Rerun: python -m llava_df.train --config {out / 'config.yaml'}\n"
            + yaml.safe_dump(run_config["explicit"], sort_keys=False),
        )
        env = write_environment(out / "env.json")
    else:
        env = {"git": None, "device": None}

    meter = PeakMemory()
    meter.reset()  # before the model loads: the peak covers weights + training
    set_seed(t.seed)
    model, _ = build_model(m, torch_dtype=_torch_dtype(t), device_map=process_device_map(t))
    model = apply_strategy(
        model, m, gradient_checkpointing=bool(t.activation_checkpointing), verbose=is_main_process()
    )
    if resume:  # the checkpoint's trained parts must belong to this base
        from llava_df.model.base_identity import check_base
        from llava_df.model.checkpoint import read_checkpoint

        check_base(read_checkpoint(resume).get("base"), model, resume, allow=t.allow_base_mismatch)
    report = trainable_report(model)
    init = getattr(projector_of(unwrap(model)), "llava_df_init", None)  # random, checkpoint or file:<path>
    run_config["trainable"] = report
    splits, collator, fake_id, real_id = data.splits, data.collator, data.fake_id, data.real_id
    train_ds, val_ds, test_ds = (split_of(splits, s) for s in ("train", "val", "test"))
    caption = parsed.data.task == "caption"  # stage 1: loss on captions, nothing to score
    if caption:
        t.prediction_loss_only = True

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
        # history reads plateau's decision: keep this order; claim marks checkpoints complete
        callbacks=[plateau, history, claim.callback(), *callbacks],
        compute_metrics=None if caption else AnswerMetrics.for_split(val_ds, drop_nonfinite=t.drop_nonfinite_scores),
        preprocess_logits_for_metrics=None if caption else AnswerScores(fake_id, real_id),
        run_config=run_config,
        extra_input_keys=getattr(collator, "extra_keys", ()),
    )
    if resume:
        restored = restore_callback_states([plateau, history], resume)
        logger.warning("resuming from %s (restored %s)", resume, ", ".join(restored) or "no callback state")
    epochs_changed = "training.num_train_epochs" in run_config["segments"][-1]["changes"]
    done = completed_state(resume, t) if resume and not epochs_changed else None
    if done is None:
        train_metrics = trainer.train(resume_from_checkpoint=resume).metrics
    else:  # the run had trained to its end (it died in its final evaluation): evaluate, train no more
        logger.warning("resume: %s is step %d of %d, training is complete; evaluating only", resume, done.global_step, done.max_steps)
        load_trainable_weights(trainer.model, resume)
        trainer.state = done
        train_metrics = {"train_runtime": 0.0}

    if trainer.args.should_save:
        save_trainable(trainer.model, out / "final", run_config | {"step": trainer.state.global_step})
    best_dir = out / "best" if (out / "best").is_dir() else out / "final"
    if best_dir.name == "best":  # test on the weights chosen on validation
        load_trainable_weights(trainer.model, best_dir)
    projector_files = (
        export_mm_projector(trainer.model, out, llava_bin=t.mm_projector_bin) if trainer.args.should_save else []
    )
    evaluated: dict = {}
    scores: dict = {}
    threshold = rule = None
    if caption:
        for name, ds in (("val", val_ds), ("test", test_ds)):
            evaluated[name] = trainer.evaluate(ds, metric_key_prefix=name) | {f"{name}_n": len(ds)}
    else:
        # The decision threshold is chosen on validation (--threshold_rule), never on test; accuracy at
        # 0.5 is reported beside it, since a 0.5 cut on an uncalibrated score can be far off.
        drop = t.drop_nonfinite_scores
        evaluated["val"], scores["val"] = predict_split(trainer, val_ds, "val", drop_nonfinite=drop)
        threshold, rule = choose_threshold(t.threshold_rule, scores["val"])
        evaluated["test"], scores["test"] = predict_split(
            trainer, test_ds, "test", threshold=threshold, drop_nonfinite=drop
        )
        if "heldout" in splits:
            evaluated["heldout"], scores["heldout"] = predict_split(
                trainer, splits["heldout"], "heldout", threshold=threshold, drop_nonfinite=drop
            )
    val_metrics, test = evaluated["val"], evaluated["test"]
    peak = meter.read()
    trainer.log({f"peak_{k}": v for k, v in peak.items() if isinstance(v, float)})

    best_entry = _best_entry(history.entries, plateau.schedule.best)
    # Read when the run started (segments), never again: the Trainer's rotation (save_total_limit) may
    # have deleted the checkpoint this run resumed from by now.
    steps = trainer.state.global_step - run_config["segments"][-1]["from_step"]  # optimizer steps this segment ran
    results = {
        "task": parsed.data.task,
        "strategy": strategy,
        "projector": m.mm_projector_type,
        "projector_init": init,
        "bits": m.bits,
        "steps": trainer.state.global_step,
        "stop_reason": plateau.last.stop_reason if plateau.last else None,
        "best": best_entry,
        "final": history.entries[-1] if history.entries else None,
        "test": {k.removeprefix("test_"): v for k, v in test.items()},
        "heldout": {k.removeprefix("heldout_"): v for k, v in evaluated.get("heldout", {}).items()} or None,
        "val_at_test_weights": {k.removeprefix("val_"): v for k, v in val_metrics.items()},
        "threshold": None if caption else {
            "value": threshold, "rule": rule, "split": "val", "weights": best_dir.name, **weights_identity(best_dir)
        },
        "test_weights": best_dir.name,
        "peak_memory": peak,
        "memory_plan": checks.get("memory_plan"),  # predicted before launch (llava_df.memory), beside the measured peak
        "time": {
            "train_s": train_metrics.get("train_runtime"),
            "steps_this_segment": steps,
            "s_per_step": train_metrics.get("train_runtime", 0.0) / max(steps, 1),
        },
        "trainable": report,
        "paths": {
            "best": str(out / "best") if (out / "best").is_dir() else None,
            "final": str(out / "final"),
            "mm_projector": [str(f) for f in projector_files],
        },
        "env": {"git": env["git"], "device": env["device"]},
        "data": data.summary(),
        "config": run_config,
    }
    if trainer.is_world_process_zero():
        if scores:
            write_json(out / "scores.json", scores)
            write_threshold(out, threshold, rule, weights=best_dir.name, identity=weights_identity(best_dir))
        write_json(out / "results.json", results)
        print(summary_line(results), flush=True)
    return results


def completed_state(resume: str, training_args) -> TrainerState | None:
    """The checkpoint's TrainerState when it already holds every step this run asks for, else None.

    transformers 5.24's Trainer checks max_steps only at the end of a step, so resuming from the
    last checkpoint of a finished training (a run that died in its final evaluation) would train
    one step more than asked; such a resume must only evaluate. The number of steps asked for is
    --max_steps, or with the same epochs (the caller checks) the checkpoint's own max_steps.
    """
    state = TrainerState.load_from_json(str(Path(resume) / "trainer_state.json"))
    wanted = training_args.max_steps if training_args.max_steps > 0 else state.max_steps
    return state if state.max_steps and state.global_step >= wanted else None


def resumed_step(resume: str | None) -> int:
    """The optimizer step a run resumes from (0 for a new run), from the checkpoint's trainer state."""
    if not resume:
        return 0
    return int(json.loads((Path(resume) / "trainer_state.json").read_text()).get("global_step", 0))


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


@cli_entry
def main(argv: list[str]) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return train(parse_args(argv))


if __name__ == "__main__":
    main()
