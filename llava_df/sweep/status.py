"""``llava-df compare --status``: each cell of a study done, running, failed or pending, from files alone.

How to call (``llava-df compare --status`` does, with the sweep's own flags)::

    rows = cell_states(cells, jobs_dir)     # cells: [(name, record path, key)] -> [CellState]
    print(format_states(rows, header))

What it reads, and nothing else (no scheduler is asked, so it works for SLURM, the local executor
and --emit_jobs lines run by any scheduler alike):

- the run records: a record with the current key is **done**;
- the cells' state files (``JOBS_DIR/cells/<name>.json``, written by each attempt, jobs.py): an
  attempt that says running and is alive is **running** (same host: its pid; another host: its
  heartbeat), one that raised is **failed** with its error line;
- submitit's files of the jobs this study submitted (``JOBS_DIR/jobs.json`` names them): a job that
  died before its cell started (its result file holds the traceback) is **failed** with the
  traceback's last line;
- anything else is **pending**, with why when a file says (stopped, requeued, submitted, stale record).
"""

from __future__ import annotations

import json
import os
import pickle
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from llava_df.sweep.jobs import STALE_S, is_recorded, read_state
from llava_df.sweep.record import key_inputs

STATES = ("done", "running", "failed", "pending")
SUBMITIT = "submitit"  # submitit's folder inside JOBS_DIR
JOBS_INDEX = (
    "jobs.json"  # {cell name: {"job": id, "executor": ..., "at": epoch seconds}}: the latest submission
)


@dataclass(frozen=True)
class CellState:
    name: str
    state: str  # one of STATES
    detail: str = ""


def read_index(jobs_dir: Path) -> dict:
    try:
        return json.loads((Path(jobs_dir) / JOBS_INDEX).read_text())
    except (OSError, ValueError):
        return {}


def _alive(attempt: dict, now: float) -> bool:
    """A running attempt is alive: on this host its pid exists; elsewhere its heartbeat is recent."""
    if attempt.get("host") == socket.gethostname():
        try:
            os.kill(int(attempt["pid"]), 0)
        except ProcessLookupError:
            return False
        except (PermissionError, KeyError, TypeError, ValueError):
            pass  # another user's process, or no pid written: trust the heartbeat
        else:
            return True
    return now - attempt["seen"] < STALE_S


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def log_tail(path: Path, size: int = 4096) -> str:
    """The last line of a log file (its last ``size`` bytes read), or "" when there is none."""
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - size))
            return last_line(f.read().decode(errors="replace"))
    except OSError:
        return ""


def submitit_error(jobs_dir: Path, job: str) -> str | None:
    """The traceback's last line of a submitit job whose result file holds an error; None otherwise."""
    result = Path(jobs_dir) / SUBMITIT / f"{job}_0_result.pkl"
    try:
        with result.open("rb") as f:
            outcome = pickle.load(f)  # our own job's file: ("success", summary) or ("error", traceback text)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError):
        return None
    if isinstance(outcome, tuple) and outcome[0] == "error":
        return last_line(str(outcome[1]))
    return None


def cell_state(name: str, record: Path, key: str, jobs_dir: Path, index: dict, now: float) -> CellState:
    if is_recorded(record, key):
        auc = json.loads(record.read_text())["metrics"]["test"]["auc"]
        return CellState(name, "done", f"test AUC {auc:.3f}")
    attempt = read_state(jobs_dir, name)
    submitted = index.get(name) or {}
    job = submitted.get("job")
    if attempt is not None and submitted.get("at", 0) > attempt["seen"]:
        attempt = None  # an attempt from before the latest submission: that job has not started the cell yet
    if attempt is not None:
        where = (
            f"job {attempt['job']} on {attempt['host']}" if attempt.get("job") else f"on {attempt['host']}"
        )
        if attempt["state"] == "running" and _alive(attempt, now):
            resumed = (
                f", resumed from {Path(attempt['resumed_from']).name}" if attempt.get("resumed_from") else ""
            )
            return CellState(
                name, "running", f"{where}, pid {attempt['pid']}, since {attempt['started']}{resumed}"
            )
        if attempt["state"] == "failed":
            return CellState(name, "failed", f"{attempt['error']} (log: {attempt['log']})")
        if attempt["state"] in ("running", "stopped"):
            why = attempt.get("error") or "its process is gone"
            last = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(attempt["seen"]))
            return CellState(name, "pending", f"stopped: {why} ({where}, last seen {last}); resumes from its last "
                                              "checkpoint when run again")  # fmt: skip
    elif job:
        crashed = submitit_error(jobs_dir, job)
        if crashed:  # the job died before its cell started (unpickling, imports, the environment)
            log = Path(jobs_dir) / SUBMITIT / f"{job}_0_log.err"
            return CellState(name, "failed", f"{crashed} (job {job}: {log})")
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(submitted.get("at", 0)))
        log = log_tail(Path(jobs_dir) / SUBMITIT / f"{job}_0_log.err")
        ended = f"; its log ends: {log}" if log else ""  # e.g. the scheduler's word on a job that ended early
        return CellState(name, "pending", f"submitted as job {job} at {when}, not started{ended}")
    if record.is_file():
        return CellState(name, "pending", why_stale(record))
    return CellState(name, "pending")


# what a record's key_inputs name, in the words a user acts on
KEY_INPUTS = (
    ("code_fingerprint", "code or package versions"),
    ("pretrain_mm_mlp_adapter_sha256", "stage-1 file"),
)


def why_stale(record: Path) -> str:
    """Which input of a stale record's key changed, as far as the record says (``key_inputs``; older records
    hold only the key, so settings and code cannot be told apart)."""
    try:
        old = json.loads(record.read_text())
        was, config = old.get("key_inputs"), old["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return "its record is unreadable or incomplete"
    if not was:
        return "its record is out of date (settings or code changed)"
    now = key_inputs(config)
    changed = [words for field, words in KEY_INPUTS if was.get(field) != now.get(field)]
    return f"its record is out of date ({' and '.join(changed) or 'settings'} changed)"


def cell_states(cells: list[tuple[str, Path, str]], jobs_dir: Path) -> list[CellState]:
    index, now = read_index(jobs_dir), time.time()
    return [cell_state(name, Path(record), key, jobs_dir, index, now) for name, record, key in cells]


def format_states(rows: list[CellState], header: str) -> str:
    counts = {s: sum(r.state == s for r in rows) for s in STATES}
    width = max((len(r.name) for r in rows), default=0) + 2
    lines = [f"{header}: {len(rows)} cells: " + ", ".join(f"{n} {s}" for s, n in counts.items())]
    order = {s: i for i, s in enumerate(STATES)}
    for row in sorted(rows, key=lambda r: order[r.state]):
        lines.append(f"{row.state:<8} {row.name:<{width}}{row.detail}".rstrip())
    return "\n".join(lines)
