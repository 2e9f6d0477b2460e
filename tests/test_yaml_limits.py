"""A --config YAML is checked before anything in it is expanded: no aliases, lists only where a flag
takes a list, mappings only where it takes a dict, each with a size cap; one error naming the file,
the key and the fix."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from llava_df.errors import ConfigError
from llava_df.spec.args import DataArguments, ModelArguments
from llava_df.spec.resolve import parse_spec
from llava_df.spec.training_args import TrainingArguments
from llava_df.spec.yaml_file import COMMA_LIST_FLAGS, MAX_YAML_LIST

ROOT = Path(__file__).resolve().parent.parent
LEVELS = "abcdefghi"


def _laughs_in_one_flag(flag: str) -> str:
    """A "billion laughs" file under one real flag: nine levels of nine-fold aliases, 9**9 values."""
    lines = [f"{flag}:", f"  - &{LEVELS[0]} [x, x, x, x, x, x, x, x, x]"]
    for prev, cur in zip(LEVELS[:-1], LEVELS[1:], strict=True):
        lines.append(f"  - &{cur} [{', '.join([f'*{prev}'] * 9)}]")
    return "\n".join(lines) + "\n"


def _laughs_over_flags() -> str:
    """The same bomb with each level under its own real flag (list flags first, then scalar ones)."""
    flags = ["report_to", "label_names", "include_for_metrics", "optim_target_modules",
             "resume_allow_changes", "lora_target_modules", "run_name", "output_dir", "data_dir"]  # fmt: skip
    lines = [f"{flags[0]}: &{LEVELS[0]} [x, x, x, x, x, x, x, x, x]"]
    for flag, prev, cur in zip(flags[1:], LEVELS[:-1], LEVELS[1:], strict=True):
        lines.append(f"{flag}: &{cur} [{', '.join([f'*{prev}'] * 9)}]")
    return "\n".join(lines) + "\n"


def _write(tmp_path: Path, text: str, name: str = "c.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_billion_laughs_under_a_list_flag_is_refused(tmp_path):
    path = _write(tmp_path, _laughs_in_one_flag("lora_target_modules"))
    with pytest.raises(ConfigError) as err:
        parse_spec(["--config", path])
    message = str(err.value)
    assert message.startswith(f"{path}: line 3: key 'lora_target_modules' uses the YAML alias *a")
    assert "Write the value out" in message


def test_billion_laughs_over_real_flags_is_refused(tmp_path):
    path = _write(tmp_path, _laughs_over_flags())
    with pytest.raises(ConfigError, match=r"line 2: key 'label_names' uses the YAML alias \*a"):
        parse_spec(["--config", path])


def test_billion_laughs_from_the_command_line_is_one_error_line(tmp_path):
    # The entry point, as a user runs it: one `error:` line, exit 2, no traceback (timeout: a bound, not a timing).
    path = _write(tmp_path, _laughs_in_one_flag("report_to"))
    res = subprocess.run(
        [sys.executable, "-m", "llava_df.memory", "plan", "--config", path, "--no_dry_run"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "key 'report_to' uses the YAML alias" in lines[0] and path in lines[0], (
        res.stderr
    )
    assert "Traceback" not in res.stderr and "MemoryError" not in res.stderr


def test_an_anchor_alone_expands_nothing_and_is_allowed(tmp_path):
    path = _write(tmp_path, "lora_target_modules: &targets [q_proj, v_proj]\nlora_enable: true\n")
    assert parse_spec(["--config", path]).model.lora_target_modules == "q_proj,v_proj"


def test_flags_that_take_lists_and_mappings_still_read_them(tmp_path):
    path = _write(
        tmp_path,
        "lora_target_modules: [q_proj, k_proj]\nreport_to: [none]\n"
        "lr_scheduler_kwargs: {factor: 0.5}\n"
        "gradient_checkpointing: true\ngradient_checkpointing_kwargs: {use_reentrant: false}\n",
    )
    p = parse_spec(["--config", path])
    assert p.model.lora_target_modules == "q_proj,k_proj"
    assert p.training.lr_scheduler_kwargs == {"factor": 0.5}
    assert p.training.activation_checkpointing_kwargs == {"use_reentrant": False}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("lora_r: [8, 16]\n", "c.yaml: lora_r: got a list; --lora_r takes one value. Write e.g. lora_r: x."),
        ("lora:\n  r: {a: 1}\n", "c.yaml: lora.r (--lora_r): got a mapping; --lora_r takes one value."),
        ("learning_rate: {value: 1.0e-4}\n", "--learning_rate takes one value"),
        ("deepspeed: [zero2]\n", "c.yaml: deepspeed: got a list; --deepspeed takes a mapping."),
        ("lora_target_modules: {q: v}\n", "--lora_target_modules takes a list of plain values"),
        (
            "lora_target_modules: [[q_proj], v_proj]\n",
            "a list holding a list; --lora_target_modules takes a list of plain",
        ),
        ("report_to: [{a: b}]\n", "a list holding a dict; --report_to takes a list of plain values"),
        (
            "lora_target_modules: [" + ", ".join(["q"] * (MAX_YAML_LIST + 1)) + "]\n",
            f"a list of {MAX_YAML_LIST + 1} values; --lora_target_modules takes at most {MAX_YAML_LIST}",
        ),
        (
            "lr_scheduler_kwargs: {" + ", ".join(f"k{i}: [1, 2]" for i in range(400)) + "}\n",
            "more than 1000 values in the mapping of --lr_scheduler_kwargs",
        ),
        (
            "lr_scheduler_kwargs: " + "{a: " * 40 + "1" + "}" * 40 + "\n",
            "key 'lr_scheduler_kwargs' nests more than 16",
        ),
    ],
    ids=[
        "scalar-list",
        "scalar-mapping-in-section",
        "float-mapping",
        "dict-list",
        "list-mapping",
        "nested-list",
        "list-of-dicts",
        "long-list",
        "big-mapping",
        "deep-mapping",
    ],
)
def test_value_of_the_wrong_shape_is_refused_naming_file_and_key(tmp_path, text, expected):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        parse_spec(["--config", path])
    assert expected in str(err.value) and str(err.value).startswith(path)


def test_every_comma_separated_flag_may_be_a_yaml_list():
    # Our own str flags that take "a,b" (their help says so) are the ones a YAML may write as a list.
    comma = {
        f.name
        for dtype in (ModelArguments, DataArguments, TrainingArguments)
        for f in dataclasses.fields(dtype)
        if str(f.metadata.get("help", "")).startswith("Comma-separated")
    }
    assert comma == set(COMMA_LIST_FLAGS)
