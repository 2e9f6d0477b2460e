"""``llava-df compare --status``, ``--emit_jobs FILE`` and ``--cell NAME``: the sweep's cells for any scheduler.

How to call (``llava-df compare`` does, after planning the sweep)::

    show_status(args, every_cell)          # every_cell: plan() of the whole study (force: no cell skipped)
    emit_jobs(args, todo, done, argv)      # one shell line per cell neither done nor running -> args.emit_jobs
    run_one_cell(args, todo, run_cell)     # the cell args.cell, here, through jobs.CellJob

A line of ``--emit_jobs`` is ``cd <here> && <python> -m llava_df compare <the sweep's flags> --cell NAME``:
any scheduler (PBS, LSF, a Kubernetes job, ``xargs -P``) can run it where this folder is mounted, and
it writes the same record as the pool (``--cell`` goes through the same cell function).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path

from llava_df.errors import RunError
from llava_df.io import write_text
from llava_df.sweep.jobs import CellJob, cell_command, job_name
from llava_df.sweep.status import cell_states, format_states


def for_status(args) -> argparse.Namespace:
    """The sweep's settings for planning every cell without running one: ``force`` (no cell left out) and the
    stage-1 files --stage1 trained before (RUNS_DIR/stage1/<projector>/, or <projector>__seed<seed>/ with
    --stage1_per_seed: stage1.py's layout) instead of training. A seed whose file is not there yet plans its cell
    without one: that cell is pending either way."""
    status = argparse.Namespace(**vars(args))
    status.force = True
    if args.run_stage1:
        root = args.runs_dir / "stage1"
        # per seed: without this every per-seed cell read as "out of date" (its init was missing)
        if args.stage1_per_seed:
            found = {
                p: {s: root / f"{p}__seed{s}" / "mm_projector.safetensors" for s in args.seeds}
                for p in args.projectors
            }
            status.stage1 = {
                p: {s: str(f) for s, f in files.items() if f.is_file()} for p, files in found.items()
            }
        else:
            found = {p: root / p / "mm_projector.safetensors" for p in args.projectors}
            status.stage1 = {p: str(f) for p, f in found.items() if f.is_file()}
    return status


def _states(args, planned):
    cells = [(job_name(args.mode, Path(path)), Path(path), key) for _, _, path, key in planned]
    return cell_states(cells, Path(args.jobs_dir))


def show_status(args, every_cell) -> dict:
    """Print each cell's state (done / running / failed / pending) to stdout; returns them."""
    rows = _states(args, every_cell)
    print(
        format_states(rows, f"{args.mode} (records: {args.results_dir / args.mode}; jobs: {args.jobs_dir})")
    )
    return {"cells": [asdict(r) for r in rows]}


def emit_jobs(args, todo, done: int, sweep_argv: list[str]) -> dict:
    """Write the command of every cell neither done nor running to ``args.emit_jobs``, one per line."""
    rows = _states(args, todo)
    running = [r.name for r in rows if r.state == "running"]
    lines = [cell_command(sweep_argv, r.name) for r in rows if r.state != "running"]
    write_text(args.emit_jobs, "".join(f"{line}\n" for line in lines))
    print(f"{len(lines)} cell commands -> {args.emit_jobs} ({done} done, {len(running)} running: "
          f"{', '.join(running) or 'none'})", file=sys.stderr)  # fmt: skip
    return {"commands": lines, "done": done, "running": running}


def run_one_cell(args, todo, fn) -> dict:
    """Run the cell ``args.cell`` here (nothing when its record is up to date); its summary."""
    match = [entry for entry in todo if job_name(args.mode, Path(entry[2])) == args.cell]
    if not match:
        print(f"{args.cell}: its record is up to date; nothing to run", file=sys.stderr)
        return {"cell": args.cell, "ran": False}
    cell, argv, path, key = match[0]
    (state,) = cell_states([(args.cell, Path(path), key)], Path(args.jobs_dir))
    if (
        state.state == "running"
    ):  # a second attempt would be refused by the run folder's lock, and say "failed"
        raise RunError(f"--cell {args.cell} is running already ({state.detail}): not started twice. "
                       "--status follows it.")  # fmt: skip
    result = CellJob(fn, args.cell, Path(args.jobs_dir), force=args.force)(cell, argv, str(path), key)
    print(f"{args.cell}: test AUC {result['auc']:.3f} -> {path}", file=sys.stderr)
    return result
