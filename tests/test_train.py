"""`python -m llava_df.train` end to end on the tiny preset: output layout, resume, bad input, evaluate CLI."""

from __future__ import annotations

import json
import math
import shlex

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from llava_df.errors import UsageError
from llava_df.model.anatomy import decoder_layers, unwrap
from llava_df.model.anatomy import projector as projector_of
from llava_df.spec.resolve import parse_spec
from llava_df.train.trainer import NonFiniteLossError
from llava_df.train.workflow import main, train

# The low-VRAM LoRA recipe in miniature: INT8, LoRA (with dropout, so RNG restore matters),
# 8-bit AdamW, checkpointing, batch 1 x accumulation 2; evaluations and checkpoints every 2 steps.
RECIPE = shlex.split(
    "--model_name_or_path tiny --bits 8 --lora_enable True --lora_r 4 --lora_alpha 8 --lora_dropout 0.1 "
    "--gradient_checkpointing True --optim adamw_8bit --per_device_train_batch_size 1 "
    "--gradient_accumulation_steps 2 --synthetic_n 24 --max_steps 4 --eval_strategy steps --eval_steps 2 "
    "--save_strategy steps --save_steps 2 --logging_steps 1 --learning_rate 1e-3 --per_device_eval_batch_size 4 "
    "--seed 3"
)
TRAINED_FILES = ("llava_df_checkpoint.json", "mm_projector.safetensors", "adapter_model.safetensors")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny matmuls on a shared 2-core machine: 2 OpenMP threads spin against other processes
    # and run ~100x slower than 1.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class RecordCheckpointing(TrainerCallback):
    """Reads how the Trainer set up activation checkpointing on the model it trains."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        layer = decoder_layers(unwrap(model))[0]
        self.enabled = layer.gradient_checkpointing
        self.kwargs = dict(layer._gradient_checkpointing_func.keywords)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out"
    recorder = RecordCheckpointing()
    results = train(parse_spec([*RECIPE, "--output_dir", str(out)]), callbacks=(recorder,))
    return out, results, recorder


@pytest.mark.slow
def test_output_layout(finished_run, capsys):
    out, results, _ = finished_run
    for name in ("run_config.json", "config.yaml", "env.json", "training_history.json", "results.json"):
        assert (out / name).is_file(), name
    for folder in ("best", "final", "checkpoint-2", "checkpoint-4"):
        for name in TRAINED_FILES:
            assert (out / folder / name).is_file(), f"{folder}/{name}"
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"):
        assert (out / "checkpoint-4" / name).is_file()
    assert list((out / "runs").rglob("events.out.tfevents.*")), "tensorboard logs under output_dir/runs"

    history = json.loads((out / "training_history.json").read_text())
    assert [e["step"] for e in history] == [2, 4]
    for entry in history:
        for key in ("epoch", "loss", "val_loss", "lr", "accuracy", "auc"):
            assert isinstance(entry[key], float) and math.isfinite(entry[key]), (key, entry)

    env = json.loads((out / "env.json").read_text())
    assert set(env["git"]) == {"commit", "dirty"} and env["packages"]["transformers"]
    config = json.loads((out / "run_config.json").read_text())
    assert config["model"]["lora_r"] == 4 and config["strategy"] == "lora"
    assert config["label_mapping"]["is_fake"] == {"real": 0, "fake": 1}
    assert config["label_mapping"]["answers"] == {"real": "Real", "fake": "Fake"}
    assert config["training"]["activation_checkpointing_kwargs"] == {"use_reentrant": True}

    saved = json.loads((out / "results.json").read_text())
    assert saved["steps"] == 4 and saved["test_weights"] == "best"
    assert 0.0 <= saved["test"]["accuracy"] <= 1.0 and math.isfinite(saved["test"]["auc"])
    assert saved["peak_memory"]["peak_rss_mb"] > 0
    assert results["test"] == saved["test"]


@pytest.mark.slow
def test_trainer_uses_reentrant_checkpointing_for_int8(finished_run):
    _, _, recorder = finished_run
    assert recorder.enabled is True
    assert recorder.kwargs == {"use_reentrant": True}


@pytest.mark.slow
def test_rerun_config_yaml_reproduces_the_flags(finished_run):
    out, _, _ = finished_run
    again = parse_spec(["--config", str(out / "config.yaml")])
    assert (again.model.lora_r, again.model.bits, again.training.max_steps, again.training.seed) == (
        4,
        8,
        4,
        3,
    )


@pytest.mark.slow
def test_finished_output_dir_is_refused(finished_run, capsys):
    out, _, _ = finished_run
    with pytest.raises(SystemExit) as exit_info:
        main([*RECIPE, "--output_dir", str(out)])
    assert exit_info.value.code == 1
    assert "holds a finished run (results.json exists)" in capsys.readouterr().err


@pytest.mark.slow
def test_evaluate_cli_matches_the_runs_test_metrics(finished_run):
    from llava_df.apps.evaluate import main as evaluate_main

    out, results, _ = finished_run
    metrics = evaluate_main(["--run_dir", str(out), "--weights", "best", "--split", "test"])
    assert metrics["accuracy"] == pytest.approx(results["test"]["accuracy"])
    assert metrics["auc"] == pytest.approx(results["test"]["auc"])
    assert (out / "eval_best_test.json").is_file()


class Interrupt(TrainerCallback):
    def __init__(self, after_step: int):
        self.after_step = after_step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.after_step:
            raise KeyboardInterrupt(f"killed after step {state.global_step}")


@pytest.mark.slow
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(finished_run, tmp_path):
    reference, _, _ = finished_run
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        train(parse_spec([*RECIPE, "--output_dir", str(out)]), callbacks=(Interrupt(3),))
    assert (out / "checkpoint-2").is_dir() and not (out / "final").exists()
    train(parse_spec([*RECIPE, "--output_dir", str(out), "--resume_from_checkpoint", "last"]))
    for name in ("mm_projector.safetensors", "adapter_model.safetensors"):
        expected, got = load_file(reference / "final" / name), load_file(out / "final" / name)
        assert expected.keys() == got.keys()
        for key in expected:
            torch.testing.assert_close(got[key], expected[key], rtol=0, atol=1e-6, msg=f"{name}:{key}")
    # The history of the resumed run lines up with the uninterrupted one.
    ref_hist = json.loads((reference / "training_history.json").read_text())
    hist = json.loads((out / "training_history.json").read_text())
    assert [e["step"] for e in hist] == [2, 4]
    assert [e["val_loss"] for e in hist] == pytest.approx([e["val_loss"] for e in ref_hist], abs=1e-6)


class PoisonProjector(TrainerCallback):
    """Writes NaN into the projector as step 3 begins (after checkpoint-2), as a diverging run would."""

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step == 2:
            with torch.no_grad():
                next(projector_of(unwrap(model)).parameters()).fill_(float("nan"))


@pytest.mark.slow
def test_nan_loss_stops_naming_the_step_and_keeps_the_last_checkpoint(tmp_path):
    out = tmp_path / "out"
    argv = [*RECIPE, "--bits", "16", "--gradient_checkpointing", "False", "--optim", "adamw_torch"]
    with pytest.raises(NonFiniteLossError, match=r"Loss is nan at step 3.*checkpoint-2"):
        train(parse_spec([*argv, "--output_dir", str(out)]), callbacks=(PoisonProjector(),))
    assert (out / "checkpoint-2" / "mm_projector.safetensors").is_file()
    assert not (out / "final").exists()
    saved = load_file(out / "checkpoint-2" / "mm_projector.safetensors")
    assert all(torch.isfinite(v).all() for v in saved.values())


def test_bad_input_exits_with_a_message(tmp_path, capsys):
    for argv, code, message in [
        (["--lora_rnak", "8"], 2, "Did you mean: --lora_r"),
        (["--data_dir", str(tmp_path / "missing")], 2, "no such folder"),
        (["--bf16", "True", "--fp16", "True"], 2, "--bf16 and --fp16"),
        (["--resume_from_checkpoint", str(tmp_path / "nope")], 2, "no such folder"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main([*argv, "--output_dir", str(tmp_path / "o")])
        assert exit_info.value.code == code
        assert message in capsys.readouterr().err


class FirstLoss(TrainerCallback):
    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs and not hasattr(self, "loss"):
            self.loss = logs["loss"]


@pytest.mark.slow
def test_kan_regularization_is_added_to_the_training_loss(tmp_path):
    argv = shlex.split(
        "--mm_projector_type kan_h16_g3_k2 --tune_mm_mlp_adapter True --synthetic_n 24 --max_steps 1 "
        "--logging_steps 1 --eval_strategy no --save_strategy no --report_to none --seed 5"
    )
    losses = {}
    for weight in (0.0, 1.0):
        first = FirstLoss()
        train(
            parse_spec([*argv, "--kan_reg_weight", str(weight), "--output_dir", str(tmp_path / str(weight))]),
            (first,),
        )
        losses[weight] = first.loss
    # Same seed, same batch: the only difference is + 1.0 * (L1 + entropy) of the KAN activations (> 0).
    assert losses[1.0] > losses[0.0] + 0.1


def test_kan_regularization_needs_a_kan_projector(tmp_path):
    argv = ["--tune_mm_mlp_adapter", "True", "--synthetic_n", "24", "--kan_reg_weight", "0.1"]
    with pytest.raises(UsageError, match="--mm_projector_type mlp2x_gelu has none"):
        train(parse_spec([*argv, "--output_dir", str(tmp_path / "o")]))


class OptimizerGroups(TrainerCallback):
    def on_step_end(self, args, state, control, optimizer=None, model=None, **kwargs):
        names = {id(p): n for n, p in model.named_parameters()}
        proj = {id(p) for p in projector_of(unwrap(model)).parameters()}
        self.groups = [
            (g["lr"], g["weight_decay"], any(id(p) in proj for p in g["params"]))
            for g in optimizer.param_groups
        ]
        self.no_decay = sorted(
            names[id(p)] for g in optimizer.param_groups if g["weight_decay"] == 0 for p in g["params"]
        )


@pytest.mark.slow
def test_projector_gets_its_own_learning_rate_and_the_trainers_decay_split(tmp_path):
    groups = OptimizerGroups()
    argv = shlex.split(
        "--lora_enable True --lora_r 2 --synthetic_n 24 --max_steps 1 --learning_rate 1e-3 --mm_projector_lr 1e-4 "
        "--weight_decay 0.1 --eval_strategy no --save_strategy no --report_to none"
    )
    train(parse_spec([*argv, "--output_dir", str(tmp_path / "o")]), (groups,))
    # LoRA matrices decay at the base lr; the projector's weights decay at its own lr, its biases never
    # decay: the split the Trainer applies without --mm_projector_lr (get_decay_parameter_names).
    assert sorted(groups.groups) == [(1e-4, 0.0, True), (1e-4, 0.1, True), (1e-3, 0.1, False)]
    assert groups.no_decay and all(n.endswith("bias") for n in groups.no_decay)
