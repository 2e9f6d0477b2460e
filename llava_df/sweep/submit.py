"""The sweep's cells as submitit jobs: one SLURM array (a task per cell), or submitit's local executor.

How to call (``llava-df compare --executor slurm|local`` does, where the pool would run)::

    failures = run_jobs(args, run_cell, jobs)   # jobs: the pool's [(name, (cell, argv, record, key))]
    # -> failure lines, as run_pool's; None with --no_wait (submitted, not waited for)

Each cell is a ``jobs.CellJob`` around the pool's own cell function, so a job writes the same record
the pool would, skips a recorded cell, and resumes an unfinished one from its last checkpoint when
SLURM preempts it or its time runs out (submitit requeues it). A cell that is running already (its
state file, ``status.py``) is not submitted again. submitit's files and the jobs' stdout/stderr go to
``JOBS_DIR/submitit/``; ``JOBS_DIR/jobs.json`` names the job of each cell for ``--status``.

- ``slurm``: one ``sbatch --array`` with the settings of --cluster / the flags (partition, account,
  qos, time, GPUs and CPUs per task, memory, array parallelism, setup lines, any other sbatch option).
  The tasks run this Python (``sys.executable``) on the compute nodes: the repository, the
  environment and RESULTS_DIR / RUNS_DIR must be on a filesystem they share.
- ``local``: each cell a submitit job on this machine, ``--workers`` at a time, each with its own GPU
  when there are several (as the pool's workers).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from llava_df.errors import RunError
from llava_df.io import write_json
from llava_df.spec.resolve import parse_spec
from llava_df.sweep.jobs import CellJob, job_name, read_state
from llava_df.sweep.pool import SweepInterrupted
from llava_df.sweep.status import JOBS_INDEX, SUBMITIT, cell_state, last_line, read_index

# submitit's local executor stops a job after 2 minutes unless told; a cell takes hours.
LOCAL_TIME_MIN = 7 * 24 * 60
POLL_S = 2  # how often the jobs are polled (their result files; SLURM's queue)
SLURM_DEFAULTS = {"gpus_per_task": 1}


def _submitit():
    try:
        import submitit  # lazy: optional (the [cluster] extra), needed only by --executor local|slurm
    except ImportError:
        raise RunError("--executor local|slurm needs submitit: pip install 'llava_df[cluster]'") from None
    return submitit


def slurm_parameters(settings: dict) -> dict:
    """--cluster / flag settings -> submitit SlurmExecutor parameters (one task, one node per cell)."""
    s = SLURM_DEFAULTS | settings
    params = {
        "job_name": "llava_df_compare",
        "time": int(s["time_min"]),
        "nodes": 1,
        "ntasks_per_node": 1,
        "setup": list(s.get("setup", [])),
        "additional_parameters": dict(s.get("sbatch", {})),
    }
    if s["gpus_per_task"]:
        params["gpus_per_task"] = int(s["gpus_per_task"])
    for name in ("partition", "account", "qos", "cpus_per_task", "array_parallelism"):
        if s.get(name) is not None:
            params[name] = s[name]
    if s.get("mem_gb") is not None:
        params["mem"] = f"{int(round(s['mem_gb'] * 1024))}M"
    return params


def _record_submission(jobs_dir: Path, submitted: dict[str, str], executor: str) -> None:
    index = read_index(jobs_dir)
    now = time.time()
    index.update({name: {"job": job, "executor": executor, "at": now} for name, job in submitted.items()})
    write_json(Path(jobs_dir) / JOBS_INDEX, index)


def _checkpoint_note(jobs) -> None:
    spec = parse_spec(jobs[0][1][1])
    if str(spec.training.save_strategy).split(".")[-1].lower() == "no":
        print("note: the cells save no checkpoints (--save_strategy no): a preempted or timed-out job starts its "
              "cell again. Pass --save_strategy steps --save_steps N to resume within N steps.", file=sys.stderr)  # fmt: skip


def run_jobs(args, fn, jobs: list[tuple[str, tuple]]) -> list[str] | None:
    """Run each (name, (cell, argv, record, key)) as a submitit job of ``args.executor``; the failure lines, or
    None when ``args.no_wait`` (SLURM only) returned right after submitting."""
    jobs_dir = Path(args.jobs_dir)
    named = [(job_name(args.mode, Path(a[2])), a) for _, a in jobs]
    index, now = read_index(jobs_dir), time.time()
    running = [name for name, a in named
               if cell_state(name, Path(a[2]), a[3], jobs_dir, index, now).state == "running"]  # fmt: skip
    for name in running:
        print(f"{name}: running already (--status says where); not submitted again", file=sys.stderr)
    named = [(name, a) for name, a in named if name not in running]
    if not named:
        return []
    _checkpoint_note(jobs)
    submitit = _submitit()
    folder = jobs_dir / SUBMITIT
    calls = [(name, CellJob(fn, name, jobs_dir, force=args.force), a) for name, a in named]
    if args.executor == "slurm":
        executor = submitit.SlurmExecutor(folder=folder)
        executor.update_parameters(**slurm_parameters(args.cluster_settings))
        with executor.batch():
            submitted = [(name, executor.submit(call, *a)) for name, call, a in calls]
        _record_submission(jobs_dir, {name: job.job_id for name, job in submitted}, "slurm")
        array = submitted[0][1].job_id.split("_")[0]
        print(f"submitted {len(submitted)} cells as SLURM array job {array} (logs: {folder}); follow with the same "
              "command and --status", file=sys.stderr)  # fmt: skip
        if args.no_wait:
            return None
        return _wait(submitted, jobs_dir, array)
    executor = submitit.LocalExecutor(folder=folder)
    minutes = args.cluster_settings.get("time_min") or LOCAL_TIME_MIN
    gpus = torch.cuda.device_count()
    return _wait_local(executor, calls, jobs_dir, args.workers, minutes, gpus)


def _failure(name: str, job, jobs_dir: Path) -> str | None:
    """The failure line of an ended job (the pool's format: the cell's error), or None when it succeeded."""
    crashed = None
    if job.paths.result_pickle.exists():
        try:
            job.result()
            return None
        except Exception as err:  # submitit's error holds the job's traceback
            crashed = last_line(str(err))
    attempt = read_state(jobs_dir, name)
    if attempt and attempt.get("state") == "failed":
        return f"{name}: {attempt['error']}"
    if crashed:
        return f"{name}: {crashed} (log: {job.paths.stderr})"
    return (
        f"{name}: its job ended without finishing the cell (killed? out of memory?); log: {job.paths.stderr}"
    )


def _queued(array: str) -> set[str] | None:
    """The task ids of ``array`` SLURM still holds (pending, running, requeued), or None when squeue cannot tell."""
    try:
        done = subprocess.run(["squeue", "-h", "-r", "-j", array, "-o", "%i"], capture_output=True, text=True,
                              timeout=60)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:  # an id SLURM has forgotten (MinJobAge) is one it no longer runs
        return set() if "Invalid job id" in done.stderr else None
    return set(done.stdout.split())


def _wait(submitted: list[tuple[str, object]], jobs_dir: Path, array: str) -> list[str]:
    """Wait for every SLURM job with a progress bar; Ctrl+C stops waiting, never the jobs.

    A job is over when its result file is there, or when SLURM's queue no longer holds it (twice in a row: a
    requeue passes through the queue). submitit's own watcher asks sacct, which a SLURM without an accounting
    database lacks; it is the fallback where squeue does not answer."""
    failures: list[str] = []
    bar = tqdm(total=len(submitted), desc="jobs", unit="run", dynamic_ncols=True)
    left, missing = list(submitted), set()
    try:
        while left:
            queued = _queued(array)
            for name, job in list(left):
                gone = queued is not None and job.job_id not in queued
                over = job.paths.result_pickle.exists() or (gone and job.job_id in missing)
                if queued is None:
                    over = job.done()
                missing = (missing | {job.job_id}) if gone else (missing - {job.job_id})
                if not over:
                    continue
                left.remove((name, job))
                line = _failure(name, job, jobs_dir)
                if line:
                    failures.append(line)
                bar.set_postfix_str(f"{name}: {'FAILED' if line else 'done'}")
                bar.update()
            if left:
                time.sleep(POLL_S)
    except KeyboardInterrupt:
        bar.close()
        raise SweepInterrupted(f"SIGINT: stopped waiting; the {len(left)} jobs left run on (SLURM array {array}). "
                               "Follow them with the same command and --status; `scancel "
                               f"{array}` stops them.", 2) from None  # fmt: skip
    bar.close()
    return failures


def _wait_local(executor, calls, jobs_dir: Path, workers: int, minutes: int, gpus: int) -> list[str]:
    """Local jobs, ``workers`` at a time: the next starts when one ends (submitit's local executor would start
    them all at once)."""
    failures: list[str] = []
    queue = list(calls)
    live: dict[int, tuple] = {}  # slot -> (name, job)
    bar = tqdm(total=len(queue), desc="jobs", unit="run", dynamic_ncols=True)
    try:
        while queue or live:
            for slot in [s for s, (_, job) in live.items() if job.done()]:
                name, job = live.pop(slot)
                line = _failure(name, job, jobs_dir)
                if line:
                    failures.append(line)
                bar.set_postfix_str(f"{name}: {'FAILED' if line else 'done'}")
                bar.update()
            for slot in range(workers):
                if slot in live or not queue:
                    continue
                name, call, args = queue.pop(0)
                params = {"timeout_min": minutes}
                if gpus:  # one GPU per job, as the pool gives one per worker
                    params |= {"gpus_per_node": 1, "visible_gpus": (slot % gpus,)}
                executor.update_parameters(**params)
                job = executor.submit(call, *args)
                _record_submission(jobs_dir, {name: job.job_id}, "local")
                live[slot] = (name, job)
            if live:
                time.sleep(POLL_S)
    except KeyboardInterrupt:
        bar.close()
        for _, job in live.values():
            job.cancel(check=False)
        raise SweepInterrupted(f"SIGINT: stopped {len(live)} local job(s) mid-run and {len(queue)} not started (their "
                               "run folders keep their last complete checkpoint). Run the same command again to "
                               "resume.", 2) from None  # fmt: skip
    bar.close()
    return failures
