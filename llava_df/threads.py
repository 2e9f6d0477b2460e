"""How many CPU threads a scoring process uses when the user did not say (OMP_NUM_THREADS).

torch starts one OpenMP thread per core. On a machine where other work already holds some
cores, those threads wait on each other at every matmul (OpenMP's fork/join): predict on a busy
2-core machine ran 2-9x slower with 2 threads than with 1 (benchmarks/predict_throughput.py).
So we count the cores idle right now and use that many, at least one.

How to call::

    threads, why = choose_threads()     # e.g. (1, "1 of 2 cores idle"), or the user's OMP_NUM_THREADS
"""

from __future__ import annotations

import os
import time

import torch

USER_SETTINGS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
SAMPLE_S = 0.25  # how long the idle time is sampled


def _cpu_times() -> tuple[float, float] | None:
    """(idle, total) jiffies of the whole machine, from /proc/stat (None where it cannot be read)."""
    try:
        with open("/proc/stat") as f:
            fields = [float(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    return idle, sum(fields[:8])


def idle_cores(cores: int, sample_s: float = SAMPLE_S) -> float:
    """How many of ``cores`` are idle now: /proc/stat over ``sample_s``, else the 1-minute load average."""
    first = _cpu_times()
    if first is not None:
        time.sleep(sample_s)
        second = _cpu_times()
        if second is not None and second[1] > first[1]:
            machine = os.cpu_count() or cores
            return min(cores, machine * (second[0] - first[0]) / (second[1] - first[1]))
    try:
        return max(0.0, cores - os.getloadavg()[0])
    except OSError:
        return float(cores)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def choose_threads() -> tuple[int, str]:
    """(threads, why): the user's OMP_NUM_THREADS/MKL_NUM_THREADS when set, else the idle cores (>= 1)."""
    for name in USER_SETTINGS:
        if os.environ.get(name):
            return torch.get_num_threads(), f"{name}={os.environ[name]}"
    cores = available_cores()
    idle = idle_cores(cores)
    threads = max(1, min(cores, int(idle + 0.5)))
    return threads, f"{idle:.1f} of {cores} cores idle"


def use_chosen_threads() -> tuple[int, str]:
    threads, why = choose_threads()
    torch.set_num_threads(threads)
    return threads, why
