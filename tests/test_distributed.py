"""Several processes (issue 11): torchrun data parallel on CPU (gloo), launcher configs, refusals.

The torchrun test compares 2 processes x batch 4 with 1 process x batch 8 (the same global batch,
the same seed: accelerate shards each global batch of the same sampler order over the processes).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from llava_df.errors import ConfigError
from llava_df.spec.resolve import parse_spec

ROOT = Path(__file__).resolve().parent.parent
COMMON = [
    "--synthetic_n", "64", "--max_steps", "4", "--lora_enable", "True", "--lora_r", "4", "--lora_dropout", "0",
    "--bits", "8", "--report_to", "none", "--logging_steps", "1", "--eval_strategy", "steps", "--eval_steps", "2",
    "--save_strategy", "steps", "--save_steps", "2", "--use_cpu", "True", "--disable_tqdm", "True",
]  # fmt: skip
# Loss tolerance: the same batches and weights; only the all-reduce's summation order differs.
LOSS_ATOL = 2e-3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_fails(argv: list[str], nproc: int) -> subprocess.CompletedProcess:
    return _run(argv, nproc, ok=False)


def _run(
    argv: list[str], nproc: int, ok: bool = True, launcher: str = "torchrun", env: dict | None = None
) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
    if (
        launcher == "accelerate"
    ):  # --multi_gpu starts the processes; --use_cpu True in argv makes them gloo on CPU
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(nproc),
               "--main_process_port", str(_free_port()), "-m", "llava_df.train", *argv]  # fmt: skip
    elif nproc == 1:
        cmd = [sys.executable, "-m", "llava_df.train", *argv]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
               "--master_port", str(_free_port()), "-m", "llava_df.train", *argv]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    errors = [line for line in done.stderr.splitlines() if "Error" in line or "error:" in line]
    assert (done.returncode == 0) == ok, "\n".join(errors[:12]) + "\n...\n" + done.stderr[-1500:]
    return done


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    single = _run([*COMMON, "--per_device_train_batch_size", "8", "--output_dir", str(root / "single")], 1)
    ddp = _run([*COMMON, "--per_device_train_batch_size", "4", "--output_dir", str(root / "ddp")], 2)
    return root, single, ddp


def _train_losses(out: Path) -> list[float]:
    ckpt = max(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    log = json.loads((ckpt / "trainer_state.json").read_text())["log_history"]
    return [e["loss"] for e in log if "loss" in e]


@pytest.mark.slow
def test_two_processes_train_and_evaluate_like_one(runs):
    root, _, _ = runs
    single, ddp = root / "single", root / "ddp"
    a, b = _train_losses(single), _train_losses(ddp)
    assert len(a) == len(b) == 4
    assert max(abs(x - y) for x, y in zip(a, b, strict=True)) <= LOSS_ATOL, (a, b)
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (single, ddp))
    assert rb["test"]["n"] == ra["test"]["n"]  # evaluation gathered every process's share
    assert abs(rb["test"]["auc"] - ra["test"]["auc"]) <= 0.02
    sa, sb = (json.loads((d / "scores.json").read_text())["test"] for d in (single, ddp))
    assert sb["id"] == sa["id"]  # the gathered order is the split's order
    assert max(abs(x - y) for x, y in zip(sa["p_fake"], sb["p_fake"], strict=True)) <= 0.01


@pytest.mark.slow
def test_every_file_is_written_once_by_the_main_process(runs):
    root, _, ddp_proc = runs
    single, ddp = root / "single", root / "ddp"

    def listing(d):
        # The Trainer saves each process's RNG state (rng_state_<rank>.pth): per process by design.
        names = {
            re.sub(r"rng_state(_\d+)?\.pth$", "rng_state*.pth", str(p.relative_to(d))) for p in d.rglob("*")
        }
        return sorted(n for n in names if not n.startswith("runs"))

    assert listing(ddp) == listing(single)
    assert len(list(ddp.glob("checkpoint-2/rng_state_*.pth"))) == 2
    assert not [p for p in ddp.rglob("*.tmp")]
    assert len(json.loads((ddp / "training_history.json").read_text())) == 2  # one entry per evaluation
    assert ddp_proc.stdout.count("done: best val AUC") == 1  # the summary is printed once
    assert ddp_proc.stdout.count("trainable / base") == 1  # and the trainable-parameter table


@pytest.mark.slow
def test_two_processes_resume_from_their_checkpoint(runs, tmp_path):
    root, _, _ = runs
    ddp = tmp_path / "crashed"
    shutil.copytree(root / "ddp", ddp)
    for name in (
        "final",
        "results.json",
        "scores.json",
        "threshold.json",
    ):  # as if it died after checkpoint-4
        path = ddp / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    finished = _run_fails(
        [*COMMON, "--per_device_train_batch_size", "4", "--output_dir", str(root / "ddp")], 2
    )
    assert finished.stderr.count("error: --output_dir") == 1 and "holds a finished run" in finished.stderr
    assert finished.stderr.count("error: [rank 1] --output_dir") == 1  # the other process names itself
    # every process stops on the same check with no traceback of its own (torchrun adds its launcher's)
    assert "[rank1]:" not in finished.stderr and "llava_df/" not in finished.stderr
    resumed = [*COMMON, "--per_device_train_batch_size", "4", "--output_dir", str(ddp)]
    resumed[resumed.index("--max_steps") + 1] = "6"
    _run([*resumed, "--resume_from_checkpoint", "last", "--resume_allow_changes", "max_steps"], 2)
    results = json.loads((ddp / "results.json").read_text())
    assert results["steps"] == 6 and results["time"]["steps_this_segment"] == 2
    assert [s["from_step"] for s in json.loads((ddp / "run_config.json").read_text())["segments"]] == [0, 4]


@pytest.mark.slow
def test_accelerate_launch_runs_the_same_training(runs, tmp_path):
    root, _, _ = runs
    done = _run(
        [*COMMON, "--per_device_train_batch_size", "4", "--output_dir", str(tmp_path / "acc")],
        2,
        launcher="accelerate",
    )
    a, b = _train_losses(root / "single"), _train_losses(tmp_path / "acc")
    assert max(abs(x - y) for x, y in zip(a, b, strict=True)) <= LOSS_ATOL, (a, b)
    assert len(list((tmp_path / "acc").glob("checkpoint-4/rng_state_*.pth"))) == 2  # two processes ran
    assert done.stdout.count("done: best val AUC") == 1


@pytest.mark.slow
def test_plain_torchrun_on_a_fresh_machine_is_one_data_parallel_run_and_builds_the_cache_once(tmp_path):
    """No --use_cpu and an empty cache, as a new user's first torchrun: the tiny preset is built once
    (no half-written cache for later runs), and the two processes train one run, not two."""
    from llava_df.io import is_complete

    cache = tmp_path / "cache"
    argv = list(COMMON)
    del argv[argv.index("--use_cpu") : argv.index("--use_cpu") + 2]
    argv[argv.index("--max_steps") + 1] = "-1"  # by epochs: the step count shows how many processes share it
    argv += ["--num_train_epochs", "1", "--per_device_train_batch_size", "4", "--save_strategy", "no",
             "--eval_strategy", "no", "--output_dir", str(tmp_path / "run")]  # fmt: skip
    done = _run(argv, 2, env={"LLAVA_DF_CACHE": str(cache)})
    folders = sorted(
        p for p in cache.iterdir() if not p.name.startswith(".") and p.name not in ("features", "flags")
    )
    assert [p.name[:5] for p in folders] == ["tiny-"] and is_complete(folders[0])
    # the frozen tower's feature store: one, complete, written by one of the two processes
    stores = [p for p in (cache / "features").glob("*/*") if not p.name.startswith(".")]
    assert len(stores) == 1 and is_complete(stores[0])
    assert not [p for p in (cache / "features").glob("*/.*") if p.is_dir()]  # no temporary left
    assert (folders[0] / "config.json").is_file() and list(folders[0].glob("*.safetensors"))
    assert not [p for p in cache.iterdir() if p.is_dir() and p.name.startswith(".")]  # no temporary left
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    n_train = results["data"]["splits"]["train"]
    assert results["steps"] == -(-n_train // 8)  # global batch 2 x 4: both processes trained one run
    assert done.stdout.count("done: best val AUC") == 1 and "data parallel on gloo" in done.stderr
    # and the cache serves the next run
    _run([*argv[:-1], str(tmp_path / "again")], 1, env={"LLAVA_DF_CACHE": str(cache)})


# ---- launcher configs and refusals ----------------------------------------------------------
@pytest.mark.parametrize("name, stage", [("zero2", 2), ("zero3", 3)])
def test_deepspeed_configs_parse_through_accelerates_plugin(name, stage):
    from accelerate.utils import DeepSpeedPlugin

    plugin = DeepSpeedPlugin(hf_ds_config=str(ROOT / "configs" / "deepspeed" / f"{name}.json"))
    assert plugin.zero_stage == stage
    config = plugin.hf_ds_config.config
    assert (
        config["train_micro_batch_size_per_gpu"] == "auto" and config["gradient_accumulation_steps"] == "auto"
    )


@pytest.mark.parametrize("bits", [8, 4])
def test_zero3_with_quantized_weights_is_refused_before_loading(bits):
    with pytest.raises(ConfigError, match=r"ZeRO-3 shards every weight.*--deepspeed zero2"):
        parse_spec(["--deepspeed", "zero3", "--bits", str(bits)])
    with pytest.raises(ConfigError, match="FSDP shards weights"):
        parse_spec(["--fsdp", "full_shard", "--bits", str(bits)])


def test_accelerate_configs_are_data_parallel_and_name_their_command():
    import yaml

    for path in sorted((ROOT / "configs" / "accelerate").glob("*.yaml")):
        text = path.read_text()
        assert text.startswith("# Run: accelerate launch --config_file configs/accelerate/" + path.name)
        config = yaml.safe_load(text)
        assert config["distributed_type"] in ("MULTI_GPU", "DEEPSPEED") and config["num_processes"] >= 2
        if config["distributed_type"] == "DEEPSPEED":
            ds = json.loads((ROOT / config["deepspeed_config"]["deepspeed_config_file"]).read_text())
            assert ds["zero_optimization"]["stage"] == 2  # the one that takes INT8 bases


def test_ddp_does_not_search_for_unused_parameters_by_default():
    assert parse_spec([]).training.ddp_find_unused_parameters is False


@pytest.mark.slow
def test_the_gpu_validation_script_runs_its_code_path_on_cpu(tmp_path):
    """scripts/gpu_validate.sh's benchmark (random weights, llava_df's own build and strategy), tiny shape on CPU."""
    import csv

    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_memory.py"), "--shape", "tiny", "--device", "cpu",
         "--out", str(tmp_path / "g.csv"), "--work_dir", str(tmp_path), "--seq_len", "128",
         "--strategies", "lora", "--bits", "8", "--checkpointing", "1"],
        capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    rows = list(csv.DictReader((tmp_path / "g.csv").open()))
    assert len(rows) == 1 and rows[0]["error"] == "" and float(rows[0]["step_s"]) > 0
    assert rows[0]["strategy"] == "lora" and rows[0]["bits"] == "8"
