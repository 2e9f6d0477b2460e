"""``llava-df train`` / ``python -m llava_df.train``: one training run, from its spec to results.json.

How to call::

    llava-df train --config tiny_lora_lowvram --output_dir outputs/run [--flag value ...]
    llava-df train --help                            # every flag, with its default and help
    main(["--max_steps", "4", "--output_dir", "o"])  # in-process; returns the results dict
    train(parse_spec(argv))                          # the same, from a spec

Order (each step fails with one ``error:`` line before the next one starts)::

    parse_spec          every flag, its range and its combinations -> the frozen RunSpec (llava_df.spec)
    check_output_dir    the folder can take this run (read-only: a file, unwritable, a live run, a finished run)
    check_model_inputs  checkpoint sizes, projector size and start weights, from config.json alone (no weights)
    prepare_data        the whole dataset: labels, splits, duplicates, readable files, >= 1 step
    memory_plan         the planner's prediction, printed (llava_df.memory)
    claim_output_dir    lock the folder, refuse to mix runs, set a replaced run aside (train.outdir)
    build_model ...     only now are weights loaded; then the Trainer runs, then the final evaluation

What a run writes: llava_df.layout.RUN_FOLDER (``llava-df`` README, "A run writes").
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import torch
import yaml
from transformers import TrainerState, set_seed

from llava_df.data.labels import label_mapping
from llava_df.data.pipeline import PreparedData, prepare_data, split_of
from llava_df.errors import RunError, UsageError, cli_entry
from llava_df.eval.metrics import AnswerMetrics, AnswerScores
from llava_df.eval.scoring import evaluate_final
from llava_df.eval.threshold import write_threshold
from llava_df.io import write_json, write_text
from llava_df.memory.peak import PeakMemory
from llava_df.memory.plan import compact, format_plan, plan_spec
from llava_df.model.answer_head import install_answer_head
from llava_df.model.base_identity import check_base
from llava_df.model.build import build_model, materialize_base
from llava_df.model.checkpoint import (
    CheckpointRecord,
    export_mm_projector,
    load_trainable_weights,
    read_checkpoint,
    save_trainable,
    weights_identity,
)
from llava_df.model.feature_cache import FeatureCacheInfo, prepare_feature_cache
from llava_df.model.inputs import check_model_inputs
from llava_df.model.processor import run_processor
from llava_df.model.strategies import apply_strategy, trainable_report
from llava_df.provenance import write_environment
from llava_df.spec.parse import check_train_argv
from llava_df.spec.resolve import parse_spec
from llava_df.spec.run_spec import RunSpec
from llava_df.train.callbacks import (
    HistoryCallback,
    PlateauCallback,
    ValScoresCallback,
    restore_callback_states,
)
from llava_df.train.memory_watch import PhaseCallback, oom_error, preflight
from llava_df.train.outdir import check_output_dir, claim_output_dir, is_main_process, resume_request
from llava_df.train.results import build_results, summary_line
from llava_df.train.resume import add_segment, check_resume_config
from llava_df.train.trainer import DeepfakeTrainer

logger = logging.getLogger(__name__)


def process_device_map(training_args) -> dict | None:
    """Data parallel on GPUs: each process loads its whole (INT8/NF4/16-bit) model onto its own GPU,
    straight from disk (never ``"auto"``, which would split one model over every GPU). One process
    or CPU: None, from_pretrained's default."""
    if training_args.world_size > 1 and torch.cuda.is_available() and not training_args.use_cpu:
        return {"": training_args.local_process_index}
    return None


def torch_dtype(training_args):
    return torch.bfloat16 if training_args.bf16 else torch.float16 if training_args.fp16 else None


# ---- before anything is loaded or written ---------------------------------------------------
def check_resume_folder(spec: RunSpec) -> None:
    resume = resume_request(spec.training.resume_from_checkpoint)
    if resume not in (None, "last") and not Path(resume).is_dir():
        raise UsageError(
            f"--resume_from_checkpoint {resume}: no such folder. Pass a checkpoint-N folder, or 'last' for the "
            "newest complete one in --output_dir."
        )


def train(spec: RunSpec, callbacks: tuple = ()) -> dict:
    """Run one training job; returns the results dict (also results.json).

    ``callbacks``: extra TrainerCallbacks, added after ours (tests use one to interrupt a run).
    """
    t, out = spec.training, spec.output_dir
    # CPU seconds of this process (all its threads) for the whole run: a cost figure that load from
    # other jobs on the machine inflates far less than wall time (pilots size studies from it)
    cpu_start = time.process_time()
    if not t.plan_only:  # first: seconds of validation and planning must not end at a folder we cannot use
        check_output_dir(out, overwrite=t.overwrite_output_dir, resume=t.resume_from_checkpoint)
    check_resume_folder(spec)
    checks = check_model_inputs(spec)
    processor, checks["image_aspect_ratio"] = run_processor(spec.model, spec.data)
    data = prepare_data(
        spec.data,
        processor,
        seed=t.seed,
        model_max_length=t.model_max_length,
        answer_head=spec.model.answer_head,
    )
    plan = memory_plan(spec, data)
    if t.plan_only:
        return {"memory_plan": plan}
    preflight(spec, compact(plan))  # CUDA: the plan against the GPU's free memory, before any weight loads
    # Shared caches (the tiny preset, an assembled LLaVA) are built (once, by whichever process comes
    # first) before the output folder is claimed, so the claim's barrier never waits on a build.
    materialize_base(spec.model, torch_dtype=torch_dtype(t))
    _ = (
        t.world_size
    )  # sets up the process group under torchrun / accelerate (claim_output_dir synchronizes on it)
    with (
        claim_output_dir(out, overwrite=t.overwrite_output_dir, resume=t.resume_from_checkpoint) as claim,
        spec.environment(default_tensorboard_dir=str(out / "runs")),
    ):
        for note in [*spec.notes, *claim.notes]:
            logger.warning("note: %s", note)
        run_config = start_run(spec, claim.resume, checks | {"memory_plan": compact(plan)})
        return _run(spec, run_config, claim, data, callbacks, cpu_start=cpu_start)


def memory_plan(spec: RunSpec, data: PreparedData) -> dict | None:
    """The memory plan of this run (llava_df.memory), printed before any weights load.

    Sequence length: the collator's, on up to 16 training samples. The dry run (seconds on a
    7B shape) runs for CUDA runs and --plan_only; a CPU run prints the closed form (milliseconds).
    A plan that cannot be made is a warning, never a failed run (--plan_only: an error).
    """
    t = spec.training
    target = "cuda" if torch.cuda.is_available() and not t.use_cpu else "cpu"
    try:
        train_ds = split_of(data.splits, "train")
        seq = int(data.collator([train_ds[i] for i in range(min(16, len(train_ds)))])["input_ids"].shape[1])
        plan = plan_spec(spec, target=target, seq_len=seq, dry=t.plan_only or target == "cuda")
    except (
        Exception
    ) as err:  # the planner must not stop a run it could not model (--plan_only: it is the run)
        if t.plan_only:
            raise
        logger.warning("memory plan not available (%s: %s); training goes on", type(err).__name__, err)
        return None
    if is_main_process():
        print(format_plan(plan), flush=True)
    return plan


# ---- the run --------------------------------------------------------------------------------
def start_run(spec: RunSpec, resume: str | None, checks: dict) -> dict:
    """run_config.json (the spec + what the checks found + resume segments), config.yaml and env.json.

    On resume, the spec is checked against the saved one (a changed setting that can alter the result
    is refused unless --resume_allow_changes names it) and appended as a segment.
    """
    out = spec.output_dir
    # Saved with the run: datasets sorts class folders alphabetically (fake=0, real=1), ours is fake=1.
    run_config = spec.to_json() | {
        "label_mapping": label_mapping(spec.data.answer_real, spec.data.answer_fake)
    }
    saved, changes, from_step = None, {}, 0
    if resume:
        saved_file = out / "run_config.json"
        try:
            saved = json.loads(saved_file.read_text())
        except (OSError, ValueError) as err:
            raise RunError(
                f"--resume_from_checkpoint: {saved_file} is missing or unreadable ({type(err).__name__}), so the "
                "settings the run started with are unknown. Start a new run with --overwrite_output_dir True."
            ) from None
        changes = check_resume_config(saved, run_config, spec.training.resume_allow_changes)
        for key, change in changes.items():
            logger.warning(
                "resume: %s changed %r -> %r (%s)", key, change["from"], change["to"], change["kind"]
            )
        from_step = resumed_step(resume)
    run_config = add_segment(run_config, saved, argv=list(spec.argv), from_step=from_step, changes=changes)
    run_config["checks"] = checks
    if is_main_process():
        write_json(out / "run_config.json", run_config)
        write_text(
            out / "config.yaml",
            f"# Resolved from: llava-df train {' '.join(spec.argv)}\n"
            f"# Rerun: llava-df train --config {out / 'config.yaml'}\n"
            + yaml.safe_dump(run_config["explicit"], sort_keys=False),
        )
    return run_config


def load_model(spec: RunSpec, resume: str | None, data: PreparedData):
    """(model with the strategy applied, BuiltModel): weights load here, and only here."""
    t = spec.training
    built = build_model(
        spec.model, spec.strategy, torch_dtype=torch_dtype(t), device_map=process_device_map(t)
    )
    if spec.model.answer_head == "classifier":  # before the strategy: it trains under every strategy
        install_answer_head(built.model, data.real_id, data.fake_id)
    model = apply_strategy(
        built.model, spec.model, spec.strategy, gradient_checkpointing=bool(t.activation_checkpointing),
        verbose=is_main_process(),
    )  # fmt: skip
    if resume:  # the checkpoint's trained parts must belong to this base
        check_base(read_checkpoint(resume).get("base"), built.base, resume, allow=t.allow_base_mismatch)
    return model, built


def _run(
    spec: RunSpec, run_config: dict, claim, data: PreparedData, callbacks: tuple, cpu_start: float = 0.0
) -> dict:
    t, out, resume = spec.training, spec.output_dir, claim.resume
    caption = spec.task == "caption"  # stage 1: loss on captions, nothing to score
    env = write_environment(out / "env.json") if is_main_process() else {"git": None, "device": None}
    meter = PeakMemory()
    meter.reset()  # before the model loads: the peak covers weights + training
    set_seed(t.seed)
    model, built = load_model(spec, resume, data)
    run_config["trainable"] = trainable_report(model)
    record = CheckpointRecord(dataclasses.asdict(spec.model), spec.strategy, built.base, run_config)
    train_ds, val_ds = split_of(data.splits, "train"), split_of(data.splits, "val")
    features = (
        prepare_feature_cache(
            model, data.splits, data.collator, batch_size=max(t.per_device_eval_batch_size, 16)
        )
        if t.feature_cache == "auto"
        else FeatureCacheInfo(None, "--feature_cache off")
    )
    if is_main_process():
        logger.info("feature cache: %s", features.stats())
    metrics_fn = None if caption else AnswerMetrics.for_split(val_ds, drop_nonfinite=t.drop_nonfinite_scores)
    val_scores = ValScoresCallback(metrics_fn)

    phase = PhaseCallback()  # what the Trainer is doing, for an out-of-memory message
    plateau = PlateauCallback.from_args(
        t, on_best=lambda model, state: save_trainable(model, out / "best", record, step=state.global_step)
    )
    history = HistoryCallback(out / "training_history.json", plateau=plateau)
    trainer = DeepfakeTrainer(
        model=model,
        args=t,
        train_dataset=train_ds,
        eval_dataset=val_ds,
        data_collator=data.collator,
        # history reads plateau's decision: keep this order; claim marks checkpoints complete
        callbacks=[phase, plateau, history, val_scores, claim.callback(), *callbacks],
        compute_metrics=metrics_fn,
        preprocess_logits_for_metrics=None if caption else AnswerScores(data.fake_id, data.real_id),
        record=record,
        extra_input_keys=getattr(data.collator, "extra_keys", ()),
        memory_meter=meter,
        planned_peak_mb=(run_config["checks"].get("memory_plan") or {}).get("predicted_peak_mb"),
    )
    train_metrics = fit(trainer, resume, run_config, [plateau, history], phase=phase)

    if trainer.args.should_save:
        save_trainable(trainer.model, out / "final", record, step=trainer.state.global_step)
    test_dir = out / "best" if (out / "best").is_dir() else out / "final"
    if test_dir.name == "best":  # test on the weights chosen on validation
        load_trainable_weights(trainer.model, test_dir)
    projector_files = (
        export_mm_projector(trainer.model, out, llava_bin=t.mm_projector_bin)
        if trainer.args.should_save
        else []
    )
    # Every rank takes the same decision (scoring is collective under several processes).
    tested_step = plateau.best_step if test_dir.name == "best" else trainer.state.global_step
    final = evaluate_final(
        trainer, data.splits, caption=caption, threshold_rule=t.threshold_rule, drop_nonfinite=t.drop_nonfinite_scores,
        val_scored=val_scores.scored_at(tested_step) if tested_step is not None else None,
    )  # fmt: skip
    peak = meter.read()
    trainer.log({f"peak_{k}": v for k, v in peak.items() if isinstance(v, float)})
    train_metrics = {**train_metrics, "process_cpu_s": time.process_time() - cpu_start}
    results = build_results(
        spec, run_config, out=out, step=trainer.state.global_step, plateau=plateau, history=history, final=final,
        test_dir=test_dir, projector_init=built.projector_init, projector_files=projector_files, peak=peak,
        train_metrics=train_metrics, env=env, data_summary=data.summary(), feature_cache=features.stats(),
    )  # fmt: skip
    if trainer.is_world_process_zero():  # results.json last: it marks the run finished (llava_df.layout)
        if final.scores:
            write_json(out / "scores.json", final.scores)
            write_threshold(
                out, final.threshold, final.rule, weights=test_dir.name, identity=weights_identity(test_dir)
            )
        write_json(out / "results.json", results)
        print(summary_line(results), flush=True)
    return results


def fit(trainer: DeepfakeTrainer, resume: str | None, run_config: dict, stateful_callbacks: list,
        phase: PhaseCallback | None = None) -> dict:  # fmt: skip
    """trainer.train(), resumed when ``resume``; returns the Trainer's train metrics. A CUDA out-of-memory
    error ends in one error line naming the step, the phase, the planned and measured peaks."""
    try:
        return _fit(trainer, resume, run_config, stateful_callbacks)
    except torch.cuda.OutOfMemoryError:  # torch.OutOfMemoryError since 2.5; the same class
        planned = (run_config["checks"].get("memory_plan") or {}).get("predicted_peak_mb")
        peak = trainer.memory_meter.read() if trainer.memory_meter is not None else {}
        out = trainer.args.output_dir
        raise oom_error(trainer.state.global_step, phase.phase if phase else "training", planned, peak, out,
                        Path(out) / "config.yaml") from None  # fmt: skip


def _fit(trainer: DeepfakeTrainer, resume: str | None, run_config: dict, stateful_callbacks: list) -> dict:
    t = trainer.args
    if resume:
        restored = restore_callback_states(stateful_callbacks, resume)
        logger.warning("resuming from %s (restored %s)", resume, ", ".join(restored) or "no callback state")
    epochs_changed = "training.num_train_epochs" in run_config["segments"][-1]["changes"]
    done = completed_state(resume, t) if resume and not epochs_changed else None
    if done is None:
        return trainer.train(resume_from_checkpoint=resume).metrics
    # The run had trained to its end (it died in its final evaluation): evaluate, train no more.
    logger.warning(
        "resume: %s is step %d of %d, training is complete; evaluating only",
        resume,
        done.global_step,
        done.max_steps,
    )
    load_trainable_weights(trainer.model, resume)
    trainer.state = done
    return {"train_runtime": 0.0}


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


@cli_entry
def main(argv: list[str]) -> dict:
    return run(check_train_argv(argv))


def run(argv: list[str]) -> dict:
    """Train the run ``argv`` describes (checked by llava_df.spec.parse.check_train_argv first)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return train(parse_spec(argv))


if __name__ == "__main__":
    main()
