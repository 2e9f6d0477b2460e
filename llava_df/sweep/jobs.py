"""One cell as a job: the pool's cell function, run once per record, resumed from its run folder's last checkpoint.

How to call (``llava-df compare`` does)::

    job = CellJob(run_cell, "mlp2x_gelu__lora__seed0", jobs_dir)   # run_cell: the pool's cell function
    job(cell, argv, record_file, key)     # in a submitit job (submit.py), or here: `llava-df compare --cell NAME`
    cell_command(sweep_argv, name)        # the shell line that runs one cell anywhere (--emit_jobs writes them)
    read_state(jobs_dir, name)            # what the cell's last attempt said (--status reads it)

- **Once.** A cell whose record holds the current key is not run again: a requeued or repeated job
  of a finished cell writes no second record.
- **Resumed.** A run folder holding an unfinished run of the same settings with a complete
  checkpoint goes on from it (``--resume_from_checkpoint last``, the run-folder contract of
  ``train/outdir.py``); anything else starts the cell anew (``--overwrite_output_dir``, as the pool).
  A cell resumes from the newest checkpoint its recipe saved: ``--save_strategy steps --save_steps N``.
- **Requeued.** Under submitit, ``checkpoint()`` hands the same call back on preemption or timeout
  (SIGUSR2); submitit requeues the job (SLURM ``scontrol requeue``; the local executor restarts it)
  and the new attempt resumes as above.
- **Seen.** Each attempt writes ``JOBS_DIR/cells/<name>.json`` (state, job id, host, pid, start, the
  error line) and touches it every ``HEARTBEAT_S`` while it lives.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

from llava_df.errors import RunError
from llava_df.io import write_json
from llava_df.layout import is_finished
from llava_df.spec.resolve import parse_spec
from llava_df.sweep.cells import Cell
from llava_df.train.outdir import checkpoint_dirs, checkpoint_problem
from llava_df.train.resume import check_resume_config

logger = logging.getLogger(__name__)

HEARTBEAT_S = 30  # a live attempt touches its state file this often
STALE_S = 180  # ... so one untouched for this long (on another host) is gone
# Where a scheduler names the running job: SLURM (array task first), submitit's local executor, PBS, LSF, SGE.
JOB_ID_VARIABLES = (("SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"), ("SLURM_JOB_ID",), ("SUBMITIT_LOCAL_JOB_ID",),
                    ("PBS_JOBID",), ("LSB_JOBID",), ("JOB_ID",))  # fmt: skip


def job_name(mode: str, record: Path) -> str:
    """A cell's job name: the cell's own (``kan_h64_g3_k2__lora__seed0``), after its study variant outside the
    comparison (``face_swap/...``), read from its record's path (RESULTS_DIR/<mode>/<variant>/runs/<cell>.json)."""
    return record.stem if mode == "comparison" else f"{record.parent.parent.name}/{record.stem}"


def state_file(jobs_dir: Path, name: str) -> Path:
    return Path(jobs_dir) / "cells" / f"{name}.json"


def read_state(jobs_dir: Path, name: str) -> dict | None:
    """The cell's last attempt ({state, job, host, pid, started, error, ...} + ``seen``: the file's mtime), or None."""
    path = state_file(jobs_dir, name)
    try:
        return json.loads(path.read_text()) | {"seen": path.stat().st_mtime}
    except (OSError, ValueError):
        return None


def is_recorded(record: Path, key: str, newer_than: float | None = None) -> bool:
    """The cell's record is there with ``key`` (the sweep's rule: same settings and code, same run), and written
    after ``newer_than`` when given (--force: only a record of this very job counts)."""
    try:
        current = json.loads(record.read_text()).get("key") == key
        return current and (newer_than is None or record.stat().st_mtime >= newer_than)
    except (OSError, ValueError):
        return False


def scheduler_job_id() -> str | None:
    for names in JOB_ID_VARIABLES:
        if all(os.environ.get(n) for n in names):
            return "_".join(os.environ[n] for n in names)
    return None


def resume_point(spec) -> str | None:
    """The checkpoint an unfinished run of the same settings in the cell's folder goes on from; None: start anew
    (no folder, a finished run whose record is missing or stale, no complete checkpoint, other settings)."""
    out = Path(spec.training.output_dir)
    if is_finished(out):
        return None
    complete = [c for c in checkpoint_dirs(out) if checkpoint_problem(c) is None]
    if not complete:
        return None
    try:
        check_resume_config(json.loads((out / "run_config.json").read_text()), spec.to_json())
    except (OSError, ValueError, RunError) as err:
        logger.warning("%s: not resumed, started anew (%s)", out, str(err).splitlines()[0])
        return None
    return str(complete[0])


def one_line(err: BaseException) -> str:
    """An error as the pool's failure lines show it: its type and first line."""
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"


class CellJob:
    """One cell as a job (submitit pickles it; ``llava-df compare --cell`` calls it here). ``fn`` is the pool's
    cell function, ``fn(cell, argv, record_file, key) -> {"cell", "auc"}``; ``force``: run even a recorded cell."""

    def __init__(self, fn: Callable[..., dict], name: str, jobs_dir: Path, force: bool = False):
        self.fn, self.name, self.jobs_dir, self.force = fn, name, Path(jobs_dir), force
        self.submitted = time.time()
        self.requeued = False

    def __call__(self, cell: Cell, argv: list[str], record_file: str, key: str) -> dict:
        record = Path(record_file)
        if is_recorded(record, key, self.submitted if self.force else None):
            logger.warning("%s: its record %s is up to date; nothing to run", self.name, record)
            return {
                "cell": self.name,
                "auc": json.loads(record.read_text())["metrics"]["test"]["auc"],
                "ran": False,
            }
        spec = parse_spec(argv)
        resume = resume_point(spec)
        if resume:
            argv = [*argv, "--resume_from_checkpoint", "last"]
            logger.warning("%s: resuming from %s", self.name, resume)
        # The pool's worker setting (pool._init_worker): one thread, so a cell computes the pool's numbers.
        torch.set_num_threads(1)
        self.requeued = False
        attempt = {
            "name": self.name,
            "job": scheduler_job_id(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "resumed_from": resume,
            "log": str(Path(spec.training.output_dir).parent / f"{cell.name}.log"),  # where run_cell writes
        }
        path = state_file(self.jobs_dir, self.name)
        write_json(path, attempt | {"state": "running"})
        with _heartbeat(path):
            try:
                result = self.fn(cell, argv, record_file, key)
            except Exception as err:
                write_json(path, attempt | {"state": "failed", "error": one_line(err), "ended": _now()})
                raise
            except BaseException as err:  # SystemExit from submitit's requeue, KeyboardInterrupt, ...
                why = "requeued (preempted or timed out)" if self.requeued else type(err).__name__
                write_json(path, attempt | {"state": "stopped", "error": why, "ended": _now()})
                raise
        write_json(path, attempt | {"state": "done", "ended": _now()})
        return result | {"ran": True}

    def checkpoint(self, *args, **kwargs):
        """submitit calls this on preemption or timeout: the same call again, requeued; it resumes from the run
        folder's last complete checkpoint (nothing of the live process needs saving)."""
        # lazy: only a submitit job calls this, and submitit is optional (the [cluster] extra)
        from submitit.helpers import DelayedSubmission

        self.requeued = True
        return DelayedSubmission(self, *args, **kwargs)


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


@contextlib.contextmanager
def _heartbeat(path: Path):
    """Touch ``path`` every HEARTBEAT_S while the block runs: --status on another host tells a live job by it."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            with contextlib.suppress(OSError):
                os.utime(path)

    thread = threading.Thread(target=beat, name="llava_df-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()


# ---- --emit_jobs ----------------------------------------------------------------------------
def without_flag(argv: list[str], flag: str) -> list[str]:
    """``argv`` without ``flag`` and its value (``--flag v``, ``--flag=v``, ``--flag-name v``)."""
    spellings = {flag, flag.replace("_", "-")}
    out, skip = [], False
    for token in argv:
        if skip:
            skip = False
        elif token in spellings:
            skip = True
        elif token.split("=", 1)[0] not in spellings:
            out.append(token)
    return out


def cell_command(sweep_argv: list[str], name: str) -> str:
    """The shell line that runs one cell of the sweep anywhere that sees this folder: cd here, this Python, the
    sweep's flags and ``--cell NAME`` (a done cell is skipped, an unfinished one resumes)."""
    argv = [*without_flag(sweep_argv, "--emit_jobs"), "--cell", name]
    return f"cd {shlex.quote(os.getcwd())} && {shlex.quote(sys.executable)} -m llava_df compare {shlex.join(argv)}"
