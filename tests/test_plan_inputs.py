"""What the memory planner reads before it builds anything: the config.json's sizes, the projector's
size cap, and --model_max_length from the checkpoint when the user gave none."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import llava_df.model.build
from llava_df.memory.__main__ import main as plan_main
from llava_df.memory.dryrun import build_meta_model
from llava_df.memory.plan import make_plan, parse_plan_args, plan_spec
from llava_df.memory.shapes import KNOWN_MODELS, LLAVA_MAX_LENGTH, plan_config
from llava_df.spec.ranges import MAX_PROJECTOR_PARAMETERS, ConfigError, check_config_sizes

ROOT = Path(__file__).resolve().parent.parent
SEVEN_B = "llava-hf/llava-1.5-7b-hf"
LLAMA = {"model_type": "llama", "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000}  # fmt: skip


def _folder(tmp_path: Path, config: dict, name: str = "ckpt") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _error_line(capsys, argv: list[str]) -> str:
    """Run `llava-df plan` (llava_df.memory.__main__) in this process; the one `error:` line it ends with (exit 2)."""
    with pytest.raises(SystemExit) as exit_info:
        plan_main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ---- config.json sizes ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("hidden_size", 0, "hidden_size 0: expected an integer in [1, 65536]"),
        ("vocab_size", 0, "vocab_size 0: expected an integer in [1, 1048576]"),
        ("hidden_size", 1_000_000, "hidden_size 1000000: expected an integer in [1, 65536]"),
        ("num_hidden_layers", 100_000, "num_hidden_layers 100000: expected an integer in [1, 1024]"),
        ("num_attention_heads", 0, "num_attention_heads 0: expected an integer in [1, 1024]"),
        ("intermediate_size", -1, "intermediate_size -1: expected an integer in [1, 262144]"),
        ("num_key_value_heads", 3, "num_key_value_heads 3 does not divide num_attention_heads 4"),
    ],
)
def test_bad_llm_size_is_one_error_line_naming_file_field_and_range(tmp_path, capsys, field, value, expected):
    folder = _folder(tmp_path, LLAMA | {field: value})
    line = _error_line(capsys, ["plan", "--model_name_or_path", str(folder), "--no_dry_run"])
    assert line.startswith(f"error: {folder / 'config.json'}: ") and expected in line


@pytest.mark.parametrize(
    ("part", "field", "value", "expected"),
    [
        ("text_config", "hidden_size", 0, "text_config.hidden_size 0"),
        ("text_config", "vocab_size", 0, "text_config.vocab_size 0"),
        ("text_config", "hidden_size", 1_000_000, "text_config.hidden_size 1000000"),
        ("text_config", "num_hidden_layers", 100_000, "text_config.num_hidden_layers 100000"),
        ("vision_config", "patch_size", 0, "vision_config.patch_size 0"),
        ("vision_config", "image_size", 10, "vision_config.patch_size 14 is larger than image_size 10"),
    ],
)
def test_bad_llava_size_is_one_error_line(tmp_path, capsys, part, field, value, expected):
    config = KNOWN_MODELS[SEVEN_B]().to_dict()
    config[part][field] = value
    folder = _folder(tmp_path, config)
    # as the issue ran it: a dry run asked for; the check comes before anything is built
    line = _error_line(capsys, ["plan", "--model_name_or_path", str(folder), "--budget", "24GB"])
    assert line.startswith(f"error: {folder / 'config.json'}: ") and expected in line


def test_a_bad_vision_tower_config_is_refused_before_its_patch_count(tmp_path, capsys):
    tower = _folder(tmp_path, {"model_type": "clip_vision_model", "hidden_size": 64, "intermediate_size": 128,
                               "num_hidden_layers": 2, "num_attention_heads": 4, "image_size": 32,
                               "patch_size": 0}, "tower")  # fmt: skip
    llm = _folder(tmp_path, LLAMA)
    line = _error_line(capsys, ["plan", "--model_name_or_path", str(llm), "--vision_tower", str(tower),
                                "--no_dry_run"])  # fmt: skip
    assert f"--vision_tower {tower}" in line and "patch_size 0" in line


@pytest.mark.parametrize("value", [True, 2.5, "4096", [4096]])
def test_a_size_must_be_an_integer(value):
    with pytest.raises(ConfigError, match=r"x/config.json: text_config.hidden_size .*expected an integer"):
        check_config_sizes({"text_config": {"hidden_size": value}}, "x/config.json")


def test_released_shapes_pass_and_absent_fields_are_left_to_the_defaults():
    for make in KNOWN_MODELS.values():
        check_config_sizes(make().to_dict(), "known")
    check_config_sizes(
        {"model_type": "llava", "text_config": {"model_type": "llama"}, "head_dim": None}, "sparse"
    )


# ---- the projector --------------------------------------------------------------------------
def test_projector_size_cap_of_training_applies_to_the_plan(tmp_path, capsys):
    # 1024 -> 30000 (a legal width): mlp2x_gelu would have 930M parameters, 3.7 GB in fp32
    folder = _folder(
        tmp_path, LLAMA | {"hidden_size": 30000, "num_attention_heads": 30, "num_key_value_heads": 30}
    )
    line = _error_line(capsys, ["plan", "--model_name_or_path", str(folder), "--model_max_length", "1024"])
    assert f"above the {MAX_PROJECTOR_PARAMETERS:,} limit" in line and "--allow_large_projector" in line


def test_the_dry_run_builds_the_projector_on_meta(monkeypatch):
    built = []
    original = llava_df.model.build.create_projector

    def spy(*args, **kwargs):
        module = original(*args, **kwargs)
        built.append({p.device.type for p in module.parameters()})
        return module

    monkeypatch.setattr(llava_df.model.build, "create_projector", spy)
    parsed = parse_plan_args(["--model_name_or_path", "tiny", "--mm_projector_type", "mlp2x_gelu"])
    config, _ = plan_config(parsed.model)
    build_meta_model(parsed, config)
    assert built == [{"meta"}]  # created there: nothing allocated, whatever the width


# ---- --model_max_length from the checkpoint --------------------------------------------------
def test_7b_config_folder_plans_and_budgets_without_model_max_length(tmp_path):
    folder = tmp_path / "llava-1.5-7b"
    KNOWN_MODELS[SEVEN_B]().save_pretrained(folder)
    res = subprocess.run(
        [sys.executable, "-m", "llava_df.memory", "plan", "--model_name_or_path", str(folder), "--budget", "24GB",
         "--no_dry_run", "--json"],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    found = json.loads(res.stdout)
    assert found["candidates"]
    for cand in found["candidates"]:
        assert cand["plan"]["settings"]["model_max_length"] == LLAVA_MAX_LENGTH
        assert cand["plan"]["settings"]["seq_len"] == 576 + 48
        # the YAML trains as planned: training's own default (512) would not hold the 576 image tokens
        assert yaml.safe_load(cand["yaml"])["model_max_length"] == LLAVA_MAX_LENGTH


def test_default_model_max_length_rule(tmp_path):
    folder = tmp_path / "llava"
    KNOWN_MODELS[SEVEN_B]().save_pretrained(folder)
    plan = make_plan(["--model_name_or_path", str(folder)], dry=False)
    assert plan["settings"]["model_max_length"] == 2048  # min(2048, 4096 positions)
    assert any("--model_max_length not given: planned with 2048" in n for n in plan["notes"])
    # what the user gives wins
    given = make_plan(["--model_name_or_path", str(folder), "--model_max_length", "1024"], dry=False)
    assert given["settings"]["model_max_length"] == 1024
    # a tokenizer trained shorter says so; transformers' "unset" (1e30) says nothing
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 1024}))
    assert make_plan(["--model_name_or_path", str(folder)], dry=False)["settings"]["model_max_length"] == 1024
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": int(1e30)}))
    assert make_plan(["--model_name_or_path", str(folder)], dry=False)["settings"]["model_max_length"] == 2048
    # the tiny preset keeps training's 512 (its position table)
    assert make_plan(["--model_name_or_path", "tiny"], dry=False)["settings"]["model_max_length"] == 512


def test_a_checkpoint_default_too_short_for_the_image_says_where_it_came_from(tmp_path, capsys):
    folder = tmp_path / "llava"
    KNOWN_MODELS[SEVEN_B]().save_pretrained(folder)
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 512}))
    line = _error_line(capsys, ["plan", "--model_name_or_path", str(folder), "--no_dry_run"])
    assert "--model_max_length 512 (not given: the checkpoint's default) is shorter than the 576" in line


def test_the_checkpoint_default_leaves_the_callers_arguments_alone():
    parsed = parse_plan_args(["--model_name_or_path", SEVEN_B])
    plan = plan_spec(parsed, dry=False)
    assert plan["settings"]["model_max_length"] == 2048 and parsed.training.model_max_length == 512


@pytest.mark.parametrize(("field", "value"), [("hidden_size", 1_000_000), ("vocab_size", 0)])
def test_training_checks_the_same_sizes_before_it_builds_anything(tmp_path, capsys, field, value):
    from llava_df.model.tiny import tiny_config
    from llava_df.train.workflow import main as train_main

    config = tiny_config().to_dict()
    config["text_config"][field] = value
    folder = _folder(tmp_path, config)
    with pytest.raises(SystemExit) as info:
        train_main(["--model_name_or_path", str(folder), "--output_dir", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        info.value.code == 2 and err[-1].startswith("error: ") and f"text_config.{field} {value}" in err[-1]
    )
    assert not (tmp_path / "o").exists()
