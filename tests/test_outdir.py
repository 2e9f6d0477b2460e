"""The output folder contract: one run per folder, nothing finished lost, nothing partial trusted."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file
from transformers import TrainerCallback

from llava_df.callbacks import write_json
from llava_df.cli import parse_args
from llava_df.errors import RunError
from llava_df.outdir import ASIDE, LOCK, MARKER, acquire_lock, checkpoint_problem, resolve_resume
from llava_df.train import main, train

REPO = Path(__file__).resolve().parent.parent
RUN = shlex.split(
    "--tune_mm_mlp_adapter True --synthetic_n 24 --per_device_train_batch_size 2 --max_steps 4 --eval_strategy steps "
    "--eval_steps 2 --save_strategy steps --save_steps 2 --logging_steps 1 --report_to none --learning_rate 1e-3 --seed 1"
)


def run(out, *extra, callbacks=()):
    return train(parse_args([*RUN, *extra, "--output_dir", str(out)]), callbacks)


class FailAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise RuntimeError(f"injected failure at step {self.step}")


# ---- lock -----------------------------------------------------------------------------------
def test_a_folder_held_by_a_live_run_is_refused_naming_its_process(tmp_path):
    acquire_lock(tmp_path)  # this test's own process: alive
    with pytest.raises(RunError, match=rf"in use by a live run: pid {os.getpid()}"):
        acquire_lock(tmp_path)


def test_a_stale_lock_from_a_dead_process_is_taken_over_with_a_warning(tmp_path, caplog):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK).write_text(
        json.dumps({"pid": dead.pid, "host": os.uname().nodename, "started": "then"})
    )
    path = acquire_lock(tmp_path)
    assert json.loads(path.read_text())["pid"] == os.getpid()
    assert "taking over a stale lock" in caplog.text


@pytest.mark.slow
def test_the_lock_is_released_when_the_run_ends(tmp_path):
    run(tmp_path / "o", "--save_strategy", "no", "--eval_strategy", "no")
    assert not (tmp_path / "o" / LOCK).exists()


# ---- states ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_an_unfinished_run_is_refused_unless_resumed_or_overwritten(tmp_path, capsys):
    out = tmp_path / "o"
    with pytest.raises(RuntimeError, match="injected failure"):
        run(out, callbacks=(FailAt(3),))
    assert (out / "checkpoint-2").is_dir() and not (out / "final").exists()
    with pytest.raises(SystemExit) as info:
        main([*RUN, "--output_dir", str(out)])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert (
        info.value.code == 1 and "holds an unfinished run" in err and "--resume_from_checkpoint last" in err
    )
    results = run(out, "--resume_from_checkpoint", "last")
    assert results["steps"] == 4 and (out / "final").is_dir()


@pytest.mark.slow
def test_overwrite_keeps_the_old_run_until_the_new_one_has_a_checkpoint(tmp_path):
    out = tmp_path / "o"
    first = run(out)
    (out / "my_notes.txt").write_text("keep me")
    old_projector = load_file(out / "final" / "mm_projector.safetensors")
    # The new run fails before its first checkpoint: the old run comes back, whole.
    with pytest.raises(RuntimeError, match="injected failure"):
        run(out, "--overwrite_output_dir", "True", "--seed", "2", callbacks=(FailAt(1),))
    assert not (out / ASIDE).exists() and (out / "my_notes.txt").read_text() == "keep me"
    restored = load_file(out / "final" / "mm_projector.safetensors")
    assert all((restored[k] == v).all() for k, v in old_projector.items())
    assert json.loads((out / "results.json").read_text())["test"] == pytest.approx(first["test"], nan_ok=True)
    # A new run that gets past its first checkpoint replaces it for good.
    second = run(out, "--overwrite_output_dir", "True", "--seed", "2")
    assert not (out / ASIDE).exists() and (out / "my_notes.txt").exists()
    assert (
        json.loads((out / "run_config.json").read_text())["training"]["seed"]
        == 2
        == second["config"]["training"]["seed"]
    )


def test_a_replaced_run_left_by_a_killed_process_is_restored(tmp_path):
    out = tmp_path / "o"
    (out / ASIDE / "final").mkdir(parents=True)
    (out / ASIDE / "results.json").write_text("{}")
    from llava_df.outdir import claim_output_dir

    with (
        pytest.raises(RunError, match="holds a finished run"),
        claim_output_dir(out, overwrite=False, resume=None),
    ):
        pass
    assert (out / "final").is_dir() and (out / "results.json").is_file() and not (out / ASIDE).exists()


# ---- partial checkpoints --------------------------------------------------------------------
def _fake_checkpoint(out: Path, step: int, complete: bool) -> Path:
    ckpt = out / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (ckpt / "weights.bin").write_bytes(b"x" * 100)
    if complete:
        (ckpt / MARKER).write_text(
            json.dumps(
                {
                    "files": {
                        "trainer_state.json": (ckpt / "trainer_state.json").stat().st_size,
                        "weights.bin": 100,
                    }
                }
            )
        )
    return ckpt


def test_resume_last_skips_partial_checkpoints_and_names_them(tmp_path, caplog):
    _fake_checkpoint(tmp_path, 2, complete=True)
    _fake_checkpoint(tmp_path, 4, complete=False)  # killed mid-write
    truncated = _fake_checkpoint(tmp_path, 6, complete=True)
    (truncated / "weights.bin").write_bytes(b"x" * 10)  # disk full part-way
    assert "is 10 bytes, 100 when written" in checkpoint_problem(truncated)
    assert resolve_resume(tmp_path, "last") == str(tmp_path / "checkpoint-2")
    assert "skipped" in caplog.text and "checkpoint-4" in caplog.text and "checkpoint-6" in caplog.text
    with pytest.raises(RunError, match=r"checkpoint-4.*no llava_df_complete.json"):
        _fake_checkpoint(tmp_path, 4, complete=False)
        resolve_resume(tmp_path, str(tmp_path / "checkpoint-4"))


@pytest.mark.slow
def test_a_run_killed_while_writing_a_checkpoint_resumes_from_the_last_complete_one(tmp_path):
    out = tmp_path / "o"
    reference = run(tmp_path / "ref")
    # The real process is SIGKILLed after checkpoint-4's weights but before the Trainer's state is written.
    script = f"""
import os, signal, sys
import llava_df.trainer as trainer_module
real = trainer_module.save_trainable
def save_then_die(model, out_dir, *a, **k):
    real(model, out_dir, *a, **k)
    if str(out_dir).endswith("checkpoint-4"):
        os.kill(os.getpid(), signal.SIGKILL)
trainer_module.save_trainable = save_then_die
from llava_df.train import main
main({[*RUN, "--output_dir", str(out)]!r})
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert (out / "checkpoint-4").is_dir() and not (out / "checkpoint-4" / MARKER).exists()
    assert (out / LOCK).exists()  # left by the killed process: stale, taken over below
    resumed = run(out, "--resume_from_checkpoint", "last")
    assert resumed["steps"] == 4
    final = load_file(out / "final" / "mm_projector.safetensors")
    expected = load_file(tmp_path / "ref" / "final" / "mm_projector.safetensors")
    assert all(float((final[k] - v).abs().max()) < 1e-6 for k, v in expected.items())
    assert resumed["test"]["auc"] == pytest.approx(reference["test"]["auc"], abs=1e-6)


# ---- atomic writes --------------------------------------------------------------------------
def test_json_writes_are_atomic_with_unique_temporary_names(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    write_json(target, {"auc": 0.5})
    seen = []
    real_replace = os.replace

    def failing_replace(src, dst):
        seen.append(Path(src).name)
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError):
        write_json(target, {"auc": 0.9})
    monkeypatch.setattr(os, "replace", real_replace)
    assert json.loads(target.read_text()) == {"auc": 0.5}  # the old file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]  # no temporary left
    assert seen and seen[0] != "results.json.tmp" and seen[0].startswith(".results.json.")


def test_written_files_are_readable_like_any_other(tmp_path):
    target = tmp_path / "results.json"
    write_json(target, {"auc": 0.5})
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
