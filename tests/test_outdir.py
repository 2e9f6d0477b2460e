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

from llava_df.errors import RunError
from llava_df.io import write_json
from llava_df.layout import ASIDE, LOCK, LOCK_INFO
from llava_df.spec.resolve import parse_spec
from llava_df.train.outdir import (
    MARKER,
    acquire_lock,
    check_output_dir,
    checkpoint_problem,
    live_run,
    release_lock,
    resolve_resume,
)
from llava_df.train.workflow import main, train

REPO = Path(__file__).resolve().parent.parent
RUN = shlex.split(
    "--tune_mm_mlp_adapter True --synthetic_n 24 --per_device_train_batch_size 2 --max_steps 4 --eval_strategy steps "
    "--eval_steps 2 --save_strategy steps --save_steps 2 --logging_steps 1 --report_to none --learning_rate 1e-3 --seed 1"
)


def run(out, *extra, callbacks=()):
    return train(parse_spec([*RUN, *extra, "--output_dir", str(out)]), callbacks)


class FailAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise RuntimeError(f"injected failure at step {self.step}")


# ---- lock -----------------------------------------------------------------------------------
def test_a_folder_held_by_a_live_run_is_refused_naming_its_process(tmp_path):
    held = acquire_lock(tmp_path)  # this test's own process: alive
    with pytest.raises(RunError, match=rf"in use by a live run: pid {os.getpid()}"):
        acquire_lock(tmp_path)
    release_lock(tmp_path, held)
    release_lock(tmp_path, acquire_lock(tmp_path))  # free again


def test_a_live_run_is_named_as_live_before_the_folder_state_is_judged(tmp_path):
    (tmp_path / "checkpoint-2").mkdir()  # looks like a crashed run...
    held = acquire_lock(tmp_path)  # ...but its run is alive
    with pytest.raises(RunError, match="in use by a live run") as info:
        check_output_dir(tmp_path, overwrite=False, resume=None)
    assert "crashed" not in str(info.value)
    release_lock(tmp_path, held)
    with pytest.raises(RunError, match="holds an unfinished run"):
        check_output_dir(tmp_path, overwrite=False, resume=None)


def test_a_lock_of_a_killed_process_is_free_at_once(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from llava_df.train.outdir import acquire_lock; "
         "lock = acquire_lock(Path(sys.argv[1])); print('held', flush=True); time.sleep(600)", str(tmp_path)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(RunError, match=rf"in use by a live run: pid {holder.pid}"):
        check_output_dir(tmp_path, overwrite=False, resume=None)
    holder.kill()  # SIGKILL: no cleanup runs, the OS drops the lock
    holder.wait()
    assert (tmp_path / LOCK_INFO).exists() and live_run(tmp_path) is None
    lock = acquire_lock(tmp_path)
    assert json.loads((tmp_path / LOCK_INFO).read_text())["pid"] == os.getpid()
    release_lock(tmp_path, lock)


def _hold_bare_lock(folder: Path, seconds: float) -> subprocess.Popen:
    """Another process takes the folder's lock without naming itself (as a probe does), for ``seconds``."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from filelock import FileLock; lock = FileLock(sys.argv[1]); "
         "lock.acquire(); print('held', flush=True); time.sleep(float(sys.argv[2])); lock.release()",
         str(folder / LOCK), str(seconds)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_another_process_probing_the_lock_is_not_taken_for_a_live_run(tmp_path):
    # every rank of a torchrun probes the lock at once: a probe holds it for an instant, a run for its life
    write_json(tmp_path / LOCK_INFO, {"pid": 1, "host": "gone"})  # left by a killed run
    prober = _hold_bare_lock(tmp_path, 0.3)
    assert live_run(tmp_path) is None
    check_output_dir(tmp_path, overwrite=False, resume=None)
    prober.wait()
    prober = _hold_bare_lock(tmp_path, 0.3)
    release_lock(tmp_path, acquire_lock(tmp_path))  # the main rank claims it after the probe
    prober.wait()


def test_a_lock_held_without_a_name_is_live_and_said_so(tmp_path):
    holder = _hold_bare_lock(tmp_path, 30)
    try:
        assert live_run(tmp_path) == {}
        with pytest.raises(RunError, match="has not named itself yet"):
            check_output_dir(tmp_path, overwrite=False, resume=None)
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow
def test_the_lock_is_released_when_the_run_ends(tmp_path):
    run(tmp_path / "o", "--save_strategy", "no", "--eval_strategy", "no")
    assert live_run(tmp_path / "o") is None and not (tmp_path / "o" / LOCK_INFO).exists()


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
    from llava_df.train.outdir import claim_output_dir

    with (
        pytest.raises(RunError, match="holds a finished run"),
        claim_output_dir(out, overwrite=False, resume=None),
    ):
        pass
    assert (out / "final").is_dir() and (out / "results.json").is_file() and not (out / ASIDE).exists()


def test_overwrite_moves_every_file_of_the_run_aside_and_nothing_else(tmp_path):
    from llava_df.layout import RUN_FOLDER
    from llava_df.train.outdir import claim_output_dir

    out = tmp_path / "o"
    out.mkdir()
    for entry in RUN_FOLDER:  # one of everything a run writes, an old threshold.json included
        name = entry.name.replace("*", "7")
        (out / name).mkdir() if entry.folder else (out / name).write_text("old")
    (out / "my_notes.txt").write_text("keep me")
    with claim_output_dir(out, overwrite=True, resume=None) as claim:
        left = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
        moved = sorted(p.name for p in claim.aside.iterdir())
    assert left == ["my_notes.txt"]
    assert moved == sorted(e.name.replace("*", "7") for e in RUN_FOLDER)


@pytest.mark.parametrize("case", ["a file", "under a file", "unwritable"])
def test_a_bad_output_dir_is_one_error_line_before_anything_is_validated(case, tmp_path, capsys, monkeypatch):
    import llava_df.train.workflow as train_module

    if case == "unwritable" and os.geteuid() == 0:
        pytest.skip("root writes anywhere: no unwritable folder to test with")
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    out = {"a file": blocker, "under a file": blocker / "run", "unwritable": locked / "run"}[case]

    def never(*args, **kwargs):
        raise AssertionError("validation ran before the output folder was checked")

    monkeypatch.setattr(train_module, "check_model_inputs", never)
    with pytest.raises(SystemExit) as info:
        main([*RUN, "--output_dir", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 1 and len(err) == 1 and err[0].startswith("error: --output_dir")
    assert {"a file": "is a file, expected a folder", "under a file": "is a file, so no folder",
            "unwritable": "not writable"}[case] in err[0]  # fmt: skip


@pytest.mark.slow
def test_a_resumed_run_finishes_after_the_rotation_deleted_its_checkpoint(tmp_path):
    out = tmp_path / "o"
    args = ("--max_steps", "8", "--save_total_limit", "1")
    with pytest.raises(RuntimeError, match="injected failure"):
        run(out, *args, callbacks=(FailAt(3),))
    assert (out / "checkpoint-2").is_dir()
    results = run(out, *args, "--resume_from_checkpoint", "last")
    assert not (out / "checkpoint-2").exists()  # rotated away while the resumed run trained
    assert results["steps"] == 8 and results["time"]["steps_this_segment"] == 6
    assert 0 < results["time"]["process_cpu_s"] < 3600  # this segment's CPU seconds, not the first one's too
    assert (out / "results.json").is_file() and (out / "threshold.json").is_file()


@pytest.mark.slow
def test_a_run_that_dies_in_its_final_evaluation_is_unfinished_and_resumable(tmp_path, monkeypatch, capsys):
    import llava_df.eval.scoring as scoring  # the final evaluation scores test and held-out through it

    out = tmp_path / "o"
    real = scoring.score_once

    def dies_on_test(trainer, datasets, prefix="predict"):
        if "test" in datasets:
            raise RuntimeError("out of memory in the final evaluation")
        return real(trainer, datasets, prefix)

    monkeypatch.setattr(scoring, "score_once", dies_on_test)
    with pytest.raises(RuntimeError, match="out of memory"):
        run(out)
    monkeypatch.setattr(scoring, "score_once", real)
    assert (
        (out / "final").is_dir()
        and not (out / "results.json").exists()
        and not (out / "threshold.json").exists()
    )
    with pytest.raises(SystemExit):
        main([*RUN, "--output_dir", str(out)])
    assert "holds an unfinished run" in capsys.readouterr().err
    results = run(out, "--resume_from_checkpoint", "last")
    assert results["steps"] == 4 and (out / "results.json").is_file() and (out / "threshold.json").is_file()


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
import llava_df.train.trainer as trainer_module
real = trainer_module.save_trainable
def save_then_die(model, out_dir, *a, **k):
    real(model, out_dir, *a, **k)
    if str(out_dir).endswith("checkpoint-4"):
        os.kill(os.getpid(), signal.SIGKILL)
trainer_module.save_trainable = save_then_die
from llava_df.train.workflow import main
main({[*RUN, "--output_dir", str(out)]!r})
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert (out / "checkpoint-4").is_dir() and not (out / "checkpoint-4" / MARKER).exists()
    assert (out / LOCK).exists() and live_run(out) is None  # left by the killed process, released by the OS
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
