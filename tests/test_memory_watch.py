"""Memory you can watch (#25): per-log peaks beside the plan, the CUDA pre-flight, plan --check, an OOM in one line."""

from __future__ import annotations

import json
import shlex

import pytest
import torch
from transformers import TrainerCallback

import llava_df.train.memory_watch as memory_watch
import llava_df.train.workflow as workflow
from llava_df.errors import RunError
from llava_df.memory.__main__ import main as plan_main
from llava_df.spec.resolve import parse_spec
from llava_df.train.memory_watch import OutOfMemoryRunError, preflight

ARGV = shlex.split(
    "--model_name_or_path tiny --bits 8 --lora_enable True --lora_r 4 --lora_alpha 8 --synthetic_n 40 "
    "--max_steps 4 --per_device_train_batch_size 4 --logging_steps 1 --eval_strategy steps --eval_steps 2 "
    "--save_strategy steps --save_steps 2 --report_to tensorboard --learning_rate 1e-3 --seed 0"
)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("mem") / "run"
    try:
        results = workflow.train(parse_spec([*ARGV, "--output_dir", str(out)]))
    finally:
        torch.set_num_threads(threads)
    return out, results


def test_every_training_log_carries_the_peak_since_the_last_one_beside_the_plan(run):
    out, results = run
    history = json.loads((out / "training_history.json").read_text())
    steps = [m for entry in history for m in entry.get("memory", [])]
    assert [m["step"] for m in steps] == [1, 2, 3, 4]  # --logging_steps 1
    planned = results["memory_plan"]["predicted_peak_mb"]
    for m in steps:
        # named for what they measure: the process's RSS, the plan's tensor bytes (not one figure against the other)
        assert m["process_rss_peak_mib"] > 100 and m["planned_tensor_peak_mib"] == pytest.approx(
            planned, abs=0.1
        )
        assert "peak_rss_mib" not in m and "planned_peak_mib" not in m
    # the run's own peak still covers every interval
    assert results["peak_memory"]["peak_rss_mb"] >= max(m["process_rss_peak_mib"] for m in steps) - 0.1
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next((out / "runs").rglob("events.out.tfevents.*")).parent))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert "train/process_rss_peak_mib" in tags and "train/planned_tensor_peak_mib" in tags
    assert [e.step for e in events.Scalars("train/process_rss_peak_mib")] == [1, 2, 3, 4]


def test_results_record_planned_against_measured_and_plan_check_reads_them(run, tmp_path, capsys):
    out, results = run
    check = results["memory_check"]
    assert check["device"] == "cpu" and not check["comparable"] and check["relative_error"] is None
    assert check["planned_peak_mb"] == results["memory_plan"]["predicted_peak_mb"]
    # a CUDA run's results.json, as a GPU run writes it
    gpu = tmp_path / "gpu_run"
    gpu.mkdir()
    cuda = {"device": "cuda", "planned_peak_mb": 1000.0, "method": "dry run", "plan_target": "cuda",
            "measured_peak_mb": 800.0, "measured": "torch.cuda.max_memory_allocated", "relative_error": 0.25,
            "comparable": True}  # fmt: skip
    (gpu / "results.json").write_text(json.dumps({"memory_check": cuda}))
    # a sweep record from before memory_check, without its plan: named, not guessed
    old = tmp_path / "old_record.json"
    old.write_text(
        json.dumps({"cell": {"name": "old_cell"}, "peak_memory": {"device": "cpu", "peak_rss_mb": 9.0}})
    )
    rows = plan_main(["plan", "--check", str(out), str(gpu), str(old)])["runs"]
    printed = capsys.readouterr().out
    assert [r["run"] for r in rows] == ["run", "gpu_run", "old_cell"]
    assert (
        "| old_cell | - | - | - | recorded before memory_check and without its plan: rerun it to check |"
        in printed
    )
    assert "not comparable (CPU RSS)" in printed and "+25.0%" in printed
    assert "Worst relative error over 1 CUDA runs: +25.0% (gpu_run)" in printed
    with pytest.raises(SystemExit):
        plan_main(["plan", "--check", str(tmp_path / "nope")])
    assert "error: --check" in capsys.readouterr().err


def test_a_cuda_plan_above_the_free_memory_stops_before_any_weight_loads(tmp_path, monkeypatch, capsys):
    spec = parse_spec([*ARGV, "--output_dir", str(tmp_path / "o")])
    plan = {"target": "cuda", "predicted_peak_mb": 3 * 1024.0, "method": "dry run"}
    gib = 2**30
    with pytest.raises(
        RunError, match=r"planned peak 3\.00 GiB .* above the free memory of cuda:0 \(2\.00 GiB free"
    ):
        preflight(spec, plan, memory=lambda index: (2 * gib, 8 * gib))
    preflight(spec, plan, memory=lambda index: (4 * gib, 8 * gib))  # fits: silent
    preflight(spec, plan, memory=lambda index: (int(3.2 * gib), 8 * gib))  # within 10%: a warning only
    skip = parse_spec([*ARGV, "--output_dir", str(tmp_path / "o"), "--skip_memory_check", "True"])
    preflight(skip, plan, memory=lambda index: (1, 8 * gib))
    # end to end: a faked GPU reading stops `llava-df train` with one error line and the --budget answer
    monkeypatch.setattr(workflow, "compact", lambda p: plan)
    monkeypatch.setattr(memory_watch, "free_cuda_memory", lambda index: (gib // 4, 8 * gib))
    with pytest.raises(SystemExit):
        workflow.main([*ARGV, "--output_dir", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert err.startswith("error: the planned peak 3.00 GiB") and "--skip_memory_check True" in err
    assert "--budget" in err
    assert not (tmp_path / "o").exists()  # nothing loaded, nothing written


class OutOfMemoryAt(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step + 1 == self.step:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_an_out_of_memory_error_names_step_phase_peaks_and_keeps_the_last_checkpoint(tmp_path):
    out = tmp_path / "oom"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.raises(OutOfMemoryRunError) as caught:
            workflow.train(parse_spec([*ARGV, "--output_dir", str(out)]), callbacks=(OutOfMemoryAt(3),))
    finally:
        torch.set_num_threads(threads)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("out of memory at step 3, during the forward and backward of a training step")
    assert "planned peak 0.0" in message and "measured peak so far" in message
    assert f"Last good checkpoint: {out / 'checkpoint-2'} (kept)" in message and "--budget" in message
    assert (out / "checkpoint-2" / "trainer_state.json").is_file()
