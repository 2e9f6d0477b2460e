"""`llava-df <verb>`: one console entry point, one flag dialect (HfArgumentParser's), each verb's --help
listing its flags with their defaults. Nothing here trains or loads a model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from llava_df.__main__ import VERBS, run
from llava_df.__main__ import main as llava_df
from llava_df.apps.predict_flags import parse as parse_predict
from llava_df.cli_args import bool_value
from llava_df.sweep.compare import parse as parse_compare

CONSOLE_SCRIPT = Path(sys.executable).with_name("llava-df")

# verb's argv -> (a flag of its own, that flag's default as --help shows it)
HELP = {
    ("train",): ("--lora_r", "32"),
    ("evaluate",): ("--weights", "best"),
    ("predict",): ("--batch_size", "8"),
    ("demo",): ("--port", "7860"),
    ("merge",): ("--dtype", "auto"),
    ("compare",): ("--workers", "1"),
    ("plan",): ("--text_tokens", "48"),
    ("projectors",): ("--in_dim", "1024"),
    ("data", "synthetic"): ("--n", "2000"),
    ("data", "sbi"): ("--per_image", "1"),
}


def help_entry(text: str, flag: str) -> str:
    """The option ``flag``'s entry in argparse's --help: its line and the wrapped lines under it, joined."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(f"{flag} "))
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("  -")), len(lines))
    return " ".join(" ".join(lines[start:end]).split())


def test_the_console_script_lists_every_verb():
    if not CONSOLE_SCRIPT.is_file():
        pytest.skip(f"{CONSOLE_SCRIPT} is not installed (pip install -e .)")
    res = subprocess.run([str(CONSOLE_SCRIPT), "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    listed = [line.split()[0] for line in res.stdout.splitlines() if line.startswith("  ")]
    assert listed == list(VERBS)
    assert set(VERBS) == {
        "train",
        "evaluate",
        "predict",
        "demo",
        "merge",
        "compare",
        "plan",
        "projectors",
        "data",
    }


def test_every_verb_is_in_the_help_table():
    assert {argv[0] for argv in HELP} == set(VERBS)


@pytest.mark.parametrize("argv", list(HELP), ids=[" ".join(a) for a in HELP])
def test_each_verbs_help_lists_its_flags_with_defaults(argv, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit) as info:
        llava_df([*argv, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    flag, default = HELP[argv]
    assert f"(default: {default})" in help_entry(text, flag), text
    if argv != ("train",):  # train's parser lives in llava_df.spec (python -m llava_df.train runs it too)
        assert text.startswith(f"usage: llava-df {' '.join(argv)} ")
    # every option of the verb shows its default (a required one says so in its help)
    for line in text.splitlines():
        if line.startswith("  --") and argv != ("train",):
            entry = help_entry(text, line.split()[0])
            assert "(default: " in entry or "Required" in entry, entry


def test_a_boolean_is_a_bare_flag_or_takes_a_value_and_dash_spellings_map_to_underscores(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # predict checks its inputs exist before the model loads
    (tmp_path / "r").mkdir()
    (tmp_path / "faces").mkdir()
    for name in ("face.jpg", "x.png", "faces/a.png"):
        (tmp_path / name).write_bytes(b"")
    bare = parse_predict(["--run_dir", "r", "--generate", "face.jpg", "faces/"])
    assert bare.generate is True and bare.images == ["face.jpg", "faces/"]  # a bare flag before a positional
    assert parse_predict(["--run_dir", "r", "--generate", "True", "face.jpg"]).generate is True
    off = parse_predict(["--run_dir", "r", "--generate", "false", "face.jpg"])
    assert off.generate is False and off.images == ["face.jpg"]
    assert parse_predict(["--run_dir", "r", "--generate=yes", "face.jpg"]).generate is True
    assert parse_predict(["--run_dir", "r", "face.jpg"]).generate is False
    dashed = parse_predict(["--run-dir", "r", "--batch-size", "4", "--allow-base-mismatch", "x.png"])
    assert (dashed.run_dir, dashed.batch_size, dashed.allow_base_mismatch, dashed.images) == (
        "r",
        4,
        True,
        ["x.png"],
    )
    assert [bool_value(w) for w in ("True", "no", "1", "maybe")] == [True, False, True, None]


def test_dash_spellings_run_a_verb(capsys):
    result = run(["projectors", "--in-dim", "32", "--out_dim", "64", "--also", "kan_light_g16"])
    assert result["settings"]["in_dim"] == 32 and result["settings"]["out_dim"] == 64
    assert result["command"] == "llava-df projectors --in-dim 32 --out_dim 64 --also kan_light_g16"
    assert "| mlp2x_gelu |" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, run_stage1",
    [(["--stage1"], True), (["--stage1", "True"], True), (["--stage1", "False"], False), ([], False)],
)
def test_compare_stage1_alone_or_as_a_boolean_runs_stage1_and_other_flags_go_to_training(
    argv, run_stage1, tmp_path
):
    args, train_flags = parse_compare(
        ["--quick", *argv, "--results-dir", str(tmp_path / "r"), "--learning_rate", "5e-4"]
    )
    assert args.run_stage1 is run_stage1 and args.stage1 == {} and args.results_dir == tmp_path / "r"
    assert train_flags[-2:] == ["--learning_rate", "5e-4"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["frobnicate"], "unknown verb 'frobnicate'; expected one of train, evaluate"),
        (["predict", "--batch_size", "0", "face.jpg"], "--batch_size 0: expected an integer >= 1"),
        (["predict", "--weights", "middle"], "argument --weights: invalid choice: 'middle'"),
        (["data", "synthetic", "--out", "x", "--captions", "maybe"], "Truthy value expected: got maybe"),
        (["merge", "--run_dir", "r"], "the following arguments are required: --output_dir"),
        (["evaluate", "--run_dir", "r", "--no_such_flag", "1"], "unknown flag --no_such_flag."),
    ],
)
def test_a_bad_command_line_is_one_error_line_and_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        llava_df(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert message in err[0]
    assert not list(tmp_path.iterdir())  # nothing written
