"""The training command line: the users' flags, --config YAML + overrides, renamed flags, errors."""

from __future__ import annotations

import json
import os

import pytest
import yaml

from llava_df.errors import ConfigError
from llava_df.spec.flag_table import flag_table
from llava_df.spec.parse import known_flags
from llava_df.spec.resolve import parse_spec


def test_users_lora_lowvram_flags_parse():
    # The flag block of seeds/000 ("INT8 LoRA"), verbatim apart from the output folder.
    p = parse_spec(
        [
            "--bits",
            "8",
            "--load_in_8bit",
            "True",
            "--lora_enable",
            "True",
            "--lora_r",
            "32",
            "--lora_alpha",
            "64",
            "--per_device_train_batch_size",
            "1",
            "--gradient_accumulation_steps",
            "40",
            "--model_max_length",
            "512",
            "--optim",
            "adamw_8bit",
            "--gradient_checkpointing",
            "True",
            "--tune_deepfake_mlp_adapter",
            "False",
            "--num_unfreeze_early_layers",
            "0",
            "--mm_projector_type",
            "mlp2x_gelu",
            "--learning_rate",
            "2e-4",
            "--num_train_epochs",
            "3",
            "--seed",
            "7",
            "--output_dir",
            "out",
        ]
    )
    m, t = p.model, p.training
    assert (m.bits, m.lora_enable, m.lora_r, m.lora_alpha, m.mm_projector_type) == (
        8,
        True,
        32,
        64,
        "mlp2x_gelu",
    )
    assert (t.per_device_train_batch_size, t.gradient_accumulation_steps, t.model_max_length) == (1, 40, 512)
    assert t.optim.value == "adamw_8bit" and t.learning_rate == 2e-4 and t.seed == 7
    assert t.activation_checkpointing is True
    assert t.activation_checkpointing_kwargs == {
        "use_reentrant": True
    }  # INT8: see results/gradient_checkpointing.md
    assert any("load_in_8bit" in n for n in p.notes)


def test_checkpointing_default_depends_on_bits():
    assert parse_spec(["--gradient_checkpointing", "True"]).training.activation_checkpointing_kwargs == {
        "use_reentrant": False
    }
    p = parse_spec(["--bits", "8", "--gradient_checkpointing", "True"])
    assert p.training.activation_checkpointing_kwargs == {"use_reentrant": True}
    p = parse_spec(["--bits", "4", "--gradient_checkpointing", "True"])
    assert p.training.activation_checkpointing_kwargs == {"use_reentrant": False}
    assert parse_spec(["--bits", "8"]).training.activation_checkpointing_kwargs is None  # checkpointing off


def test_tune_deepfake_alias_sets_projector_only():
    p = parse_spec(["--tune_deepfake_mlp_adapter", "True", "--freeze_backbone", "True"])
    assert p.model.tune_mm_mlp_adapter is True
    assert any("tune_deepfake_mlp_adapter" in n for n in p.notes)


def test_yaml_flat_and_sections_with_cli_override(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "model_name_or_path": "tiny",
                "lora": {
                    "enable": True,
                    "r": 8,
                    "alpha": 16,
                    "dropout": 0.1,
                    "target_modules": ["q_proj", "v_proj"],
                },
                "training": {"learning_rate": "1e-4", "batch_size": 2, "num_epochs": 4, "warmup_ratio": 0.02},
                "gradient_checkpointing_kwargs": {"use_reentrant": False},
            }
        )
    )
    p = parse_spec(["--config", str(cfg), "--lora_r", "4", "--gradient_checkpointing", "True"])
    m, t = p.model, p.training
    assert (m.lora_enable, m.lora_r, m.lora_alpha, m.lora_dropout) == (True, 4, 16, 0.1)  # CLI wins for r
    assert m.lora_target_modules == "q_proj,v_proj"
    assert (t.learning_rate, t.per_device_train_batch_size, t.num_train_epochs) == (1e-4, 2, 4)
    assert t.warmup_steps == 0.02  # a fraction of all steps in transformers 5
    assert t.activation_checkpointing_kwargs == {"use_reentrant": False}  # explicit kwargs beat the default
    assert p.explicit["lora_r"] == 4 and p.explicit["learning_rate"] == 1e-4
    assert p.config_file == str(cfg)


def test_resolved_config_round_trips_through_json():
    p = parse_spec(["--lora_enable", "True", "--bits", "8", "--output_dir", "o"])
    d = json.loads(json.dumps(p.to_json()))
    assert d["model"]["bits"] == 8 and d["training"]["output_dir"] == "o"
    assert d["explicit"] == {"lora_enable": True, "bits": 8, "output_dir": "o"}


@pytest.mark.parametrize(
    ("argv", "field", "value", "note"),
    [
        (["--evaluation_strategy", "steps"], "eval_strategy", "steps", "--eval_strategy"),
        (["--warmup_ratio", "0.03"], "warmup_steps", 0.03, "--warmup_steps 0.03"),
        (["--batch_size", "3"], "per_device_train_batch_size", 3, "per_device_train_batch_size"),
    ],
)
def test_renamed_transformers4_flags_are_mapped_with_a_note(argv, field, value, note):
    p = parse_spec(argv)
    got = getattr(p.training, field)
    assert getattr(got, "value", got) == value
    assert any(note in n for n in p.notes)


def test_logging_dir_goes_to_tensorboard_env_for_the_run_only(monkeypatch, tmp_path):
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    p = parse_spec(["--logging_dir", str(tmp_path / "tb")])
    assert p.env == {"TENSORBOARD_LOGGING_DIR": str(tmp_path / "tb")}
    with p.environment(default_tensorboard_dir=str(tmp_path / "runs")):
        assert os.environ["TENSORBOARD_LOGGING_DIR"] == str(tmp_path / "tb")
    assert "TENSORBOARD_LOGGING_DIR" not in os.environ
    with parse_spec([]).environment(default_tensorboard_dir=str(tmp_path / "runs")):
        assert os.environ["TENSORBOARD_LOGGING_DIR"] == str(tmp_path / "runs")


def test_unknown_flag_names_close_matches():
    with pytest.raises(ConfigError, match=r"unknown flag --lora_rank.*--lora_r"):
        parse_spec(["--lora_rank", "8"])
    with pytest.raises(ConfigError, match=r"--num_unfreeze_early_layers"):
        parse_spec(["--num_unfreeze_early_layer", "2"])


def test_unknown_yaml_key_names_close_matches(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("learning_rat: 1.0e-4\n")
    with pytest.raises(ConfigError, match=r"c.yaml: unknown flag --learning_rat.*--learning_rate"):
        parse_spec(["--config", str(cfg)])


def test_bad_value_type_is_reported():
    with pytest.raises(ConfigError, match="--lora_r.*invalid int value: 'big'"):
        parse_spec(["--lora_r", "big"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--bf16", "True", "--fp16", "True"], "--bf16 and --fp16 are both True"),
        (["--lora_enable", "False", "--num_unfreeze_early_layers", "2"], "--lora_enable is False"),
        (["--tune_mm_mlp_adapter", "True", "--lora_enable", "True"], "contradicts --lora_enable True"),
        (["--strategy", "full"], "Unknown strategy 'full'"),
        (["--freeze_backbone", "False"], "--freeze_backbone False"),
        (["--bits", "3"], "--bits 3: expected 4"),
        (["--load_in_8bit", "True", "--bits", "4"], "--load_in_8bit True conflicts with --bits 4"),
        (["--warmup_ratio", "3"], r"--warmup_ratio 3.0: expected a fraction"),
        (["--evaluation_strategy", "steps", "--eval_strategy", "epoch"], "same setting"),
        (["--mm_projector_type", "mlp2x_relu"], "--mm_projector_type mlp2x_relu: not a registered projector"),
        (["--min_lr", "1e-3", "--learning_rate", "1e-4"], "--min_lr 0.001 is not below"),
        (["--lr_reduction_factor", "2"], r"--lr_reduction_factor 2.0: expected a multiplier in \(0, 1\]"),
        (["--data_dir", "/definitely/not/here"], "--data_dir /definitely/not/here: no such folder"),
        (["--remove_unused_columns", "True"], "remove_unused_columns"),
    ],
)
def test_bad_input_gives_a_clear_error(argv, message):
    with pytest.raises(ConfigError, match=message):
        parse_spec(argv)


def test_lora_config_with_conflicting_cli_flags(tmp_path):
    # A LoRA-only preset, then --lora_enable False --num_unfreeze_early_layers 2 on top.
    cfg = tmp_path / "lora.yaml"
    cfg.write_text("strategy: lora\nlora_enable: true\n")
    assert parse_spec(["--config", str(cfg)]).model.lora_enable is True
    with pytest.raises(ConfigError, match="--lora_enable is False"):
        parse_spec(["--config", str(cfg), "--lora_enable", "False", "--num_unfreeze_early_layers", "2"])
    with pytest.raises(ConfigError, match="--strategy lora contradicts --num_unfreeze_early_layers 2"):
        parse_spec(["--config", str(cfg), "--num_unfreeze_early_layers", "2"])


def test_strategy_alone_switches_its_flag_on():
    assert parse_spec(["--strategy", "lora"]).model.lora_enable is True
    p = parse_spec(["--strategy", "unfreeze_early", "--num_unfreeze_early_layers", "2"])
    assert (p.model.lora_enable, p.model.num_unfreeze_early_layers) == (True, 2)
    assert parse_spec(["--num_unfreeze_early_layers", "2"]).model.lora_enable is True  # scheme B needs LoRA
    assert parse_spec(["--strategy", "projector_only"]).model.tune_mm_mlp_adapter is True


def test_missing_config_file():
    with pytest.raises(ConfigError, match="--config nope.yaml: no such file"):
        parse_spec(["--config", "nope.yaml"])


def test_help_lists_users_flags(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_spec(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in (
        "--tune_deepfake_mlp_adapter",
        "--num_unfreeze_early_layers",
        "--mm_projector_lr",
        "--config",
    ):
        assert flag in out
    assert "Alias of --tune_mm_mlp_adapter" in out  # field help becomes --help


def test_known_flags_include_old_spellings():
    flags = known_flags(flag_table())
    assert {"warmup_ratio", "evaluation_strategy", "logging_dir", "lora_r", "config"} <= set(flags)
    assert not any("-" in f for f in flags)


def test_users_qlora_yaml_of_seed_003_reads_as_is(tmp_path):
    # The training/lora sections of the users' config_qwen3vl32_fp16.yaml (seeds/003), verbatim.
    cfg = tmp_path / "qlora.yaml"
    cfg.write_text(
        """
lora:
  r: 8                    # LoRA rank
  alpha: 16
  dropout: 0.05
  target_modules:
    - "q_proj"
    - "k_proj"
    - "v_proj"
    - "o_proj"

training:
  learning_rate: 1e-4
  min_lr: 6e-5
  lr_reduction_factor: 0.5
  lr_patience: 1
  improvement_threshold: 0.05
  min_val_loss: 0.2
  batch_size: 1
  gradient_accumulation_steps: 8
  num_epochs: 10
  max_length: 512
  warmup_ratio: 0.02
  weight_decay: 0.01
"""
    )
    p = parse_spec(["--config", str(cfg), "--lora_enable", "True"])
    m, t = p.model, p.training
    assert (m.lora_r, m.lora_alpha, m.lora_dropout, m.lora_target_modules) == (
        8,
        16,
        0.05,
        "q_proj,k_proj,v_proj,o_proj",
    )
    assert (t.learning_rate, t.min_lr, t.lr_reduction_factor, t.lr_patience) == (1e-4, 6e-5, 0.5, 1)
    assert (t.improvement_threshold, t.min_val_loss, t.weight_decay) == (0.05, 0.2, 0.01)
    assert (t.per_device_train_batch_size, t.gradient_accumulation_steps, t.num_train_epochs) == (1, 8, 10)
    assert (t.model_max_length, t.warmup_steps) == (512, 0.02)
