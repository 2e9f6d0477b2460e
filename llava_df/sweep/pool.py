"""The sweep's worker pool: cells run in spawned processes that stop when the sweep stops or dies.

How to call (``llava-df compare`` does)::

    failures = run_pool(run_cell, jobs, workers=2)   # jobs: [(name, args)]; SweepInterrupted on SIGINT/SIGTERM

Every worker is a fresh interpreter (spawn: no forked torch state) with one thread. SIGINT (Ctrl+C)
or SIGTERM stops the sweep: no new cell starts, the running ones are interrupted (then terminated
if they linger; their run folders keep their last complete checkpoint), and SweepInterrupted says
how to continue. The default handlers would not: the pool's shutdown waits for every queued cell.
A worker also ends when the sweep is killed outright (SIGKILL): it would otherwise go on writing
run folders while a rerun races it on the same cells.
"""

from __future__ import annotations

import concurrent.futures as futures
import contextlib
import ctypes
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable

import torch
from tqdm import tqdm

from llava_df.errors import RunError

_stopping = False  # in a worker: the sweep asked it to stop (SIGINT); a queued cell then does not start


def _stop_worker(signum, frame):
    global _stopping
    _stopping = True
    raise KeyboardInterrupt


def _init_worker(gpus) -> None:

    _die_with_parent()
    signal.signal(signal.SIGINT, _stop_worker)
    torch.set_num_threads(1)  # one core per worker; the tiny preset gains nothing from more
    if gpus is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpus.get())


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent() -> None:
    """A worker must not outlive the sweep: killed with SIGKILL, the sweep cannot stop it, and an orphan
    would go on writing run folders while a rerun races it on the same cells. Linux sends SIGTERM on
    the parent's death (prctl PR_SET_PDEATHSIG); elsewhere, and as a backstop, a thread watches the
    parent pid and ends the worker within a few seconds of it changing."""
    parent = os.getppid()
    with contextlib.suppress(Exception):  # not Linux, or no libc to call: the watchdog alone
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(2)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="llava_df-parent-watch", daemon=True).start()


def stopping() -> bool:
    """In a worker: True once the sweep asked it to stop (a cell queued to it must not start)."""
    return _stopping


class SweepInterrupted(RunError):
    """SIGINT or SIGTERM stopped the sweep; finished cells are kept and a rerun continues."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum  # what a shell reports for a process stopped by that signal


class _Stop(BaseException):  # raised in the main thread by the signal handler below
    def __init__(self, signum: int):
        self.signum = signum


def _raise_stop(signum, frame):
    raise _Stop(signum)


def run_pool(fn: Callable[..., dict], jobs: list[tuple[str, tuple]], workers: int) -> list[str]:
    """Run ``fn(*args)`` for each (name, args) job, ``workers`` at a time, with a progress bar; returns the
    failures, one line each. ``fn`` returns {"cell": name, "auc": test AUC} for the bar."""
    failures: list[str] = []
    if not jobs:
        return failures
    gpus = None

    if torch.cuda.is_available() and workers > 1:
        gpus = multiprocessing.get_context("spawn").Queue()
        for i in range(workers):
            gpus.put(i % torch.cuda.device_count())
    context = multiprocessing.get_context("spawn")  # fresh interpreters: no forked torch state
    in_main = threading.current_thread() is threading.main_thread()  # signal handlers only go there
    previous = (
        {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGINT, signal.SIGTERM)} if in_main else {}
    )
    bar = tqdm(total=len(jobs), desc="runs", unit="run", dynamic_ncols=True)
    pool = futures.ProcessPoolExecutor(
        workers, mp_context=context, initializer=_init_worker, initargs=(gpus,)
    )
    done = 0
    try:
        submitted = {pool.submit(fn, *args): name for name, args in jobs}
        for job in futures.as_completed(submitted):
            name = submitted[job]
            try:
                result = job.result()
                bar.set_postfix_str(f"{result['cell']}: test AUC {result['auc']:.3f}")
            except Exception as err:  # one failed cell must not lose the others
                failures.append(
                    f"{name}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                )
                bar.set_postfix_str(f"{name}: FAILED")
            done += 1
            bar.update()
    except _Stop as stop:
        pool.shutdown(wait=False, cancel_futures=True)  # no new cell starts
        # SIGINT first: the run in a worker stops with KeyboardInterrupt, the worker hands it back and exits
        # like a finished one, so the pool frees its queues (a terminated worker leaks a semaphore). A
        # worker that does not stop in time is terminated.
        workers = multiprocessing.active_children()
        for worker in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGINT)
        for worker in workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.terminate()
                worker.join(timeout=10)
        pool.shutdown(wait=True)
        bar.close()
        signame = signal.Signals(stop.signum).name
        raise SweepInterrupted(
            f"{signame}: stopped the sweep after {done} of {len(jobs)} runs ({len(failures)} failed); {len(workers)} "
            "worker(s) stopped mid-run (their run folders keep their last complete checkpoint). Rerun the same "
            "command to continue: finished cells are kept and skipped.",
            stop.signum,
        ) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    pool.shutdown(wait=True)
    bar.close()
    return failures
