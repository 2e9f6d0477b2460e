"""Every verb reads its flags before torch loads: --help, --version and every usage error answer at once (with
torch made unimportable, to prove it), typos are matched against the verb's own flags, and a clean run has no
noise of ours (issue #32). Speed itself is measured in benchmarks/bench_cli_latency.py, never here."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llava_df.cli_args import install_command
from llava_df.errors import ConfigError, UsageError
from llava_df.spec.flag_table import flag_table
from llava_df.spec.parse import parse_flags, parse_with
from llava_df.spec.training_args import build_parser

ROOT = Path(__file__).resolve().parent.parent
RECIPES = sorted((ROOT / "llava_df" / "configs").glob("*.yaml"))
# What a verb's first step must never import: the heavy libraries whose import costs the seconds.
HEAVY = ("torch", "accelerate", "bitsandbytes", "peft", "sklearn", "gradio", "datasets")
BLOCKED = tuple(m for m in HEAVY if m != "gradio")  # the demo's first step asks whether gradio is installed

# verb argv -> (--help shows this, a usage error, the start of its message)
VERBS = {
    "train": (
        "--lora_r",
        ["train", "--lora_rnak", "8"],
        "command line: unknown flag --lora_rnak. Did you mean: --lora_r",
    ),
    "evaluate": ("--split", ["evaluate", "--run_dir", "nowhere"], "--run_dir nowhere: no such folder"),
    "predict": (
        "--batch_size",
        ["predict", "--run_dir", ".", "missing.png"],
        "missing.png: no such file or folder",
    ),
    "demo": ("--max_upload_mb", ["demo", "--run_dir", ".", "--port", "0"], "--port 0: expected a TCP port"),
    "merge": (
        "--dtype",
        ["merge", "--run_dir", "nowhere", "--output_dir", "m"],
        "--run_dir nowhere: no such folder",
    ),
    "compare": ("--workers", ["compare", "--worker", "2"], "unknown flag --worker. Did you mean --workers?"),
    "plan": ("--budget", ["plan", "--budgt", "24GB"], "unknown flag --budgt. Did you mean --budget?"),
    "projectors": ("--in_dim", ["projectors", "--in_dim", "0"], "--in_dim 0: expected an integer >= 1"),
    "data": (
        "--n",
        ["data", "synthetic", "--out", "x", "--n", "many"],
        "argument --n: invalid int value: 'many'",
    ),
}


def run_without_heavy(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``llava-df argv`` in a process where torch (and the other heavy libraries) cannot be imported."""
    code = (
        "import sys\n"
        f"for name in {BLOCKED!r}:\n"
        "    sys.modules[name] = None  # import torch -> ImportError\n"
        "from llava_df.__main__ import main\n"
        f"main({argv!r})\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


@pytest.mark.parametrize("verb", list(VERBS))
def test_help_and_a_usage_error_answer_without_torch(verb, tmp_path):
    shown, bad, message = VERBS[verb]
    help_argv = [verb, "synthetic", "--help"] if verb == "data" else [verb, "--help"]
    done = run_without_heavy(help_argv, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert shown in done.stdout and "Traceback" not in done.stderr
    if verb == "demo":
        pytest.importorskip(
            "gradio", reason="gradio is not installed: the demo's usage errors start by saying so"
        )
    done = run_without_heavy(bad, tmp_path)
    err = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr[-2000:]
    assert err[-1].startswith("error: ") and message in err[-1], err[-3:]
    assert "Traceback" not in done.stderr
    assert not [p for p in tmp_path.iterdir()]  # nothing written


def test_version_and_the_verb_list_answer_without_torch(tmp_path):
    from llava_df import __version__

    for argv in (["--version"], ["train", "--version"], ["plan", "--version"]):
        done = run_without_heavy(argv, tmp_path)
        assert done.returncode == 0 and done.stdout.strip() == f"llava_df {__version__}", done.stderr[-1000:]
    done = run_without_heavy(["trian"], tmp_path)
    assert done.returncode == 2 and "Did you mean `llava-df train`?" in done.stderr


def test_train_help_is_the_real_parsers():
    real = build_parser().format_help()
    assert flag_table().help == real
    for flag in ("--lora_r", "--learning_rate", "--per_device_train_batch_size", "--deepspeed", "--config"):
        assert flag in real


def _light_and_real(argv: list[str]):
    table = flag_table()
    light = vars(parse_with(list(argv), table.parser(), table).values)
    real = vars(parse_with(list(argv), build_parser(), table).values)
    return light, real


@pytest.mark.parametrize(
    "argv",
    [
        [],
        [
            "--bits",
            "8",
            "--lora_enable",
            "True",
            "--lora_r",
            "16",
            "--learning_rate",
            "2e-4",
            "--optim",
            "adamw_8bit",
        ],
        ["--strategy", "unfreeze_early", "--num_unfreeze_early_layers", "2", "--no_freeze_backbone"],
        [
            "--eval_strategy",
            "steps",
            "--eval_steps",
            "5",
            "--save_steps",
            "10",
            "--report_to",
            "none",
            "--bf16",
            "False",
        ],
        ["--gradient_checkpointing", "--warmup_ratio", "0.1", "--lora_target_modules", "q_proj,v_proj"],
        ["--version", "plain", "--data_path", "captions.json", "--max_steps", "3", "--seed", "7"],
        ["--activation_checkpointing_kwargs", '{"use_reentrant": false}', "--weight_decay", "0.01"],
    ],
)
def test_the_flag_table_parses_as_the_real_parser_does(argv, tmp_path):
    # Every value of the namespace the checks see is the one the real parser gives (the checks run on both).
    if "captions.json" in argv:
        (tmp_path / "captions.json").write_text("[]")
        argv = [str(tmp_path / a) if a == "captions.json" else a for a in argv]
    light, real = _light_and_real(argv)
    assert light == real


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_every_shipped_recipe_parses_alike_and_says_nothing_renamed(recipe, tmp_path):
    argv = ["--config", str(recipe)]
    if "stage1" in recipe.name:  # a caption recipe: its data is the user's
        (tmp_path / "captions.json").write_text("[]")
        argv += ["--data_path", str(tmp_path / "captions.json")]
    light, real = _light_and_real(argv)
    assert light == real
    notes = parse_flags(argv).notes
    assert not [n for n in notes if "the name this version uses" in n], (
        notes
    )  # no renamed-flag warning of ours


def test_usage_errors_of_the_train_command_line(tmp_path):
    with pytest.raises(ConfigError, match=r"--config given 2 times \(a.yaml, b.yaml\); pass one YAML"):
        parse_flags(["--config", "a.yaml", "--config", "b.yaml"])
    with pytest.raises(ConfigError, match="--mm_projector_type mlp9x_relu: not a registered projector"):
        parse_flags(["--mm_projector_type", "mlp9x_relu"])
    with pytest.raises(ConfigError, match="--data_dir nowhere: no such folder"):
        parse_flags(["--data_dir", "nowhere"])
    with pytest.raises(ConfigError, match="argument --lora_r/--lora-r: invalid int value: 'big'"):
        parse_flags(["--lora_r", "big"])
    with pytest.raises(ConfigError, match="invalid choice: 'sometimes'"):
        parse_flags(["--eval_strategy", "sometimes"])


def test_typos_are_matched_against_the_verbs_own_flags_first():
    from llava_df.memory.plan_flags import parse as parse_plan
    from llava_df.sweep.compare_flags import parse as parse_compare

    with pytest.raises(UsageError, match=r"unknown flag --budgt\. Did you mean --budget\?"):
        parse_plan(["plan", "--budgt", "24GB"])
    with pytest.raises(
        UsageError, match=r"unknown flag --lora_rnak\. Did you mean --lora_r \(a training flag\)"
    ):
        parse_plan(["plan", "--lora_rnak", "8"])
    with pytest.raises(UsageError, match=r"unknown flag --projector\. Did you mean --projectors or "):
        parse_compare(["--projector", "mlp2x_gelu"])  # the sweep's own flag first, then training's


def test_the_bitsandbytes_kernels_hint_is_dropped_and_nothing_else(caplog):
    # bitsandbytes 0.50 logs it on import where the CPU has AVX512-BF16; the filter is set by `import llava_df`.
    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
    with caplog.at_level(logging.WARNING, logger=logger.name):
        logger.warning("Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please make sure you "
                       "already `pip install kernels`", "No module named 'kernels'")  # fmt: skip
        logger.warning("another warning of bitsandbytes")
    assert [r.getMessage() for r in caplog.records] == ["another warning of bitsandbytes"]


def test_the_budget_answer_writes_the_new_flag_name_and_says_how_it_read_the_size():
    from llava_df.memory.budget import format_budget, search

    found = search(["--config", "tiny_lora_lowvram"], budget_bytes=2**30, top=2, target="cpu", verify=False)
    text = format_budget(found, "1GB")
    assert text.startswith("--budget 1GB read as 1 GiB (GB and GiB both mean 2**30 bytes here)")
    summary, _, files = text.partition("Each option as a ready --config file:")
    assert "| option |" in summary and "| 1 |" in summary and "planned peak GiB" in summary
    assert "activation_checkpointing:" in files and "gradient_checkpointing" not in files


def test_the_install_hint_is_the_command_for_where_llava_df_is(tmp_path, monkeypatch):
    assert install_command("demo") == f"pip install -e '{ROOT}[demo]'"  # this checkout's editable install
    import llava_df.cli_args as cli_args

    fake = (
        tmp_path / "site-packages" / "llava_df" / "cli_args.py"
    )  # an installed wheel: no pyproject beside it
    fake.parent.mkdir(parents=True)
    monkeypatch.setattr(cli_args, "__file__", str(fake))
    assert install_command("demo") == "pip install 'llava_df[demo]'"


def test_verb_flag_modules_import_nothing_heavy():
    # The first step of every verb, imported in a fresh process: none of the heavy libraries may load.
    from llava_df.__main__ import VERBS as MAIN_VERBS

    modules = sorted({ref.split(":")[0] for ref, *_ in MAIN_VERBS.values()} | {"llava_df.__main__"})
    code = "import importlib, sys\n" + "".join(f"importlib.import_module({m!r})\n" for m in modules)
    code += f"print([m for m in {HEAVY!r} if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-1500:]
    assert json.loads(done.stdout.strip().replace("'", '"')) == []


def test_the_flag_table_is_cached_per_schema(tmp_path, monkeypatch):
    from llava_df.spec import flag_table as module

    monkeypatch.setenv("LLAVA_DF_CACHE", str(tmp_path))
    monkeypatch.setattr(module, "_TABLE", None)
    table = module.flag_table()
    cached = list((tmp_path / module.FOLDER).glob("train-*.json"))
    assert len(cached) == 1 and json.loads(cached[0].read_text())["torch"] is True
    assert {f.name for f in dataclasses.fields(build_parser().dataclass_types[2])} <= {
        f["name"] for f in table.fields["training"]
    }
