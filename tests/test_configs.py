"""Every shipped config parses through the real command line (unknown keys fail), and the scripts wire them up."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llava_df.errors import ConfigError
from llava_df.spec.resolve import parse_spec

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
SCRIPTS = sorted((ROOT / "scripts").glob("finetune_stage2_*_lowvram.sh"))


@pytest.fixture
def bf16_capable(monkeypatch):
    # The 7B presets ask for bf16 (a GPU setting); TrainingArguments checks the hardware at parse
    # time. This machine may have no GPU: validate the config, not the machine.
    import transformers.training_args as training_args

    monkeypatch.setattr(training_args, "is_torch_bf16_gpu_available", lambda: True)


def test_configs_are_shipped():
    names = {p.name for p in CONFIGS}
    assert len([n for n in names if n.startswith("llava15_7b_")]) == 4  # the four memory tiers of seeds/004
    assert {
        "tiny_lora_lowvram.yaml",
        "tiny_projector_only_lowvram.yaml",
        "tiny_unfreeze_early_lowvram.yaml",
    } <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_parses_and_opens_with_its_command(path, bf16_capable, tmp_path):
    text = path.read_text()
    assert text.startswith("# Run:"), f"{path.name} must open with the command that runs it"
    assert f"configs/{path.name}" in text.split("\n\n")[0] or "bash scripts/" in text.split("\n")[0]
    raw = yaml.safe_load(text)
    extra = []
    if raw.get("version") == "plain":  # a stage-1 recipe: its command names the captions
        from llava_df.data.captions import write_captions

        extra = ["--data_path", str(write_captions(tmp_path, n=3))]
    parsed = parse_spec(["--config", str(path), *extra])
    # Every key reached a field: spot-check that values are not silently left at defaults.
    for key in ("bits", "learning_rate", "per_device_train_batch_size", "model_max_length"):
        if key in raw:
            value = (
                getattr(parsed.model, key, None)
                if hasattr(parsed.model, key)
                else getattr(parsed.training, key)
            )
            assert value == pytest.approx(float(raw[key])) if isinstance(value, float) else value == raw[key]
    if raw.get("activation_checkpointing"):
        assert parsed.training.activation_checkpointing_kwargs == {"use_reentrant": parsed.model.bits == 8}


@pytest.mark.parametrize(
    "path", [p for p in CONFIGS if p.name.startswith("llava15_7b_")], ids=lambda p: p.name
)
def test_7b_presets_leave_room_for_the_image_tokens(path, bf16_capable):
    # LLaVA-1.5 puts 576 image tokens in every sample; the collator refuses to truncate them.
    assert parse_spec(["--config", str(path)]).training.model_max_length >= 576 + 32


def test_unknown_key_in_a_config_fails(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "configs" / "tiny_lora_lowvram.yaml").read_text() + "lora_rank: 8\n")
    with pytest.raises(ConfigError, match="unknown flag --lora_rank.*--lora_r"):
        parse_spec(["--config", str(bad)])


def _dry_run(script: Path, env: dict[str, str], *args: str) -> list[str]:
    out = subprocess.run(
        ["bash", str(script), *args],
        env={**os.environ, **env, "LLAVA_DF_DRY_RUN": "1"},
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.splitlines()


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_defaults_to_tiny_and_switches_to_a_real_checkpoint(script, bf16_capable, tmp_path):
    (tmp_path / "faces").mkdir()
    tiny = _dry_run(script, {"OUTPUT_DIR": "o"}, "--lora_dropout", "0.1")
    assert tiny[1:3] == ["-m", "llava_df.train"]
    assert re.fullmatch(r"configs/tiny_.*\.yaml", tiny[tiny.index("--config") + 1])
    tiny_args = parse_spec(tiny[3:])
    assert tiny_args.model.model_name_or_path == "tiny" and tiny_args.model.lora_dropout == 0.1  # "$@" wins

    real = _dry_run(
        script,
        {
            "MODEL_NAME_OR_PATH": "llava-hf/llava-1.5-7b-hf",
            "DATA_DIR": str(tmp_path / "faces"),
            "OUTPUT_DIR": "o",
        },
    )
    real_args = parse_spec(real[3:])
    assert real[real.index("--config") + 1].startswith("configs/llava15_7b_")
    assert real_args.model.model_name_or_path == "llava-hf/llava-1.5-7b-hf"
    assert real_args.data.data_dir == str(tmp_path / "faces") and real_args.training.output_dir == "o"
    assert real_args.model.bits == parse_spec(tiny[3:]).model.bits == 8  # the same recipe at both sizes


@pytest.mark.slow
def test_lora_script_trains_the_tiny_preset(tmp_path):
    # The real script, shrunk through "$@" so it fits a test: it trains, evaluates and prints the summary.
    env = {**os.environ, "PYTHON": sys.executable, "OUTPUT_DIR": str(tmp_path / "out"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [
            "bash",
            str(ROOT / "scripts" / "finetune_stage2_lora_lowvram.sh"),
            "--synthetic_n",
            "24",
            "--max_steps",
            "2",
            "--eval_steps",
            "2",
            "--save_steps",
            "2",
            "--gradient_accumulation_steps",
            "1",
            "--report_to",
            "none",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = [line for line in result.stdout.splitlines() if line.startswith("done:")]
    assert summary and re.search(r"test accuracy \d\.\d{3} AUC (\d\.\d{3}|n/a)", summary[0])
    assert (tmp_path / "out" / "final" / "adapter_model.safetensors").is_file()
