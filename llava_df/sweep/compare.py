"""``llava-df compare``: the sweep that answers the research question.

How do LLaVA's ``mlp2x_gelu``, the B-spline KAN at several sizes and the lightweight KAN compare,
in accuracy and peak memory, under projector-only, LoRA and unfreeze-early training?

How to call (``python -m llava_df.compare_projectors`` is the same command, kept for scripts)::

    llava-df compare                        # the embedded default: 7 projectors x 3 strategies x 3 seeds,
                                            # tiny preset, INT8
    llava-df compare --workers 2            # two runs at a time (one per core / GPU)
    llava-df compare --quick                # 2 x 2 x 1, small data: about a minute
    llava-df compare --projectors mlp2x_gelu,kan_h64_g3_k2 --strategies lora \\
        --seeds 0,1 --model_name_or_path llava-hf/llava-1.5-7b-hf --data_dir /data/faces --bits 8
    llava-df compare --aggregate            # tables and plots from results/ alone
    llava-df compare --stage1               # stage 1 (caption alignment) per projector first
    llava-df compare --executor slurm --time_min 240 --partition gpu   # one SLURM array job, a task per cell
    llava-df compare --emit_jobs cells.txt  # the command of each cell to run, for any scheduler
    llava-df compare --status               # which cells are done, running, failed, pending
    llava-df compare --help                 # the sweep's flags, with their defaults

Every cell trains with the same recipe (``--recipe``, default configs/sweep_tiny.yaml, plus any
training flag given here) and differs only in projector, strategy and seed. Each finished run
writes ``<results_dir>/comparison/runs/<cell>.json``; a rerun skips cells whose config and code
are unchanged, so a killed sweep picks up where it stopped. The answer is
``<results_dir>/comparison.{csv,md}`` and two PNG plots, rebuilt from the run JSONs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shlex
import sys
import time
from pathlib import Path

from llava_df.errors import RunError, UsageError, cli_entry
from llava_df.io import write_json
from llava_df.model.inputs import check_model_inputs
from llava_df.projectors import create_projector
from llava_df.projectors.profile import macs_per_token
from llava_df.spec.resolve import parse_spec
from llava_df.sweep.cells import (
    REFERENCE,
    ZERO_SHOT_STRATEGIES,
    Cell,
    grid,
)
from llava_df.sweep.compare_flags import cell_argv, parse
from llava_df.sweep.job_commands import emit_jobs, for_status, run_one_cell, show_status
from llava_df.sweep.lofo import write_lofo
from llava_df.sweep.lr_grid import write_grid
from llava_df.sweep.pool import run_pool, stopping
from llava_df.sweep.probes import PROBES, ProbeBudget, run_probes, tower_features
from llava_df.sweep.record import (
    adapter_sha256,
    build_record,
    cell_key,
    code_fingerprint,
    read_records,
    record_path,
    write_record,
)
from llava_df.sweep.report import aggregate, runs_machine
from llava_df.sweep.stage1 import run_stage1
from llava_df.sweep.submit import run_jobs
from llava_df.sweep.zeroshot import zero_shot_records
from llava_df.train.workflow import train

logger = logging.getLogger(__name__)


# ---- running one cell (in a worker process) -------------------------------------------------
def run_cell(cell: Cell, argv: list[str], record_file: str, key: str) -> dict:
    """Train one cell, write its record; returns a short summary for the progress bar."""
    if stopping():  # already queued to this worker when the sweep was stopped
        raise KeyboardInterrupt

    spec = parse_spec([*argv, "--disable_tqdm", "True"])
    out = Path(spec.training.output_dir)
    out.parent.mkdir(parents=True, exist_ok=True)  # for the log; train() creates out after validating
    logging.getLogger().setLevel(logging.WARNING)
    with (
        open(out.parent / f"{cell.name}.log", "w") as log,
        contextlib.redirect_stdout(log),
        contextlib.redirect_stderr(log),
    ):
        results = train(spec)
    checks = results["config"].setdefault("checks", {})
    dims = checks.get("projector_dims")
    if dims:
        checks["projector_macs_per_token"] = int(
            macs_per_token(create_projector(cell.projector, *dims), dims[0])
        )
    scores = json.loads((out / "scores.json").read_text())
    init = (
        results.get("projector_init") or "random"
    )  # random, checkpoint (its own projector) or file:<stage-1 path>
    write_record(Path(record_file), build_record(cell, results, scores, key, init))
    return {"cell": cell.name, "auc": results["test"]["auc"]}


# ---- feature probes (the ceiling rows) ------------------------------------------------------
def run_probe_records(args, train_flags: list[str], command: str) -> None:
    """Probe records for the recipe's data (sweep/probes.py), reused while their key holds."""

    cell = next(iter(grid([REFERENCE], ["projector_only"], args.seeds[:1])))
    spec = parse_spec(cell_argv(args, train_flags, cell))
    config = spec.to_json()
    # the reference's projector-only budget (with --lr_choice, its LR)
    matched = ProbeBudget.matched(spec.training)
    probes_code = Path(__file__).with_name("probes.py")
    # What a probe depends on: the tower (model), the data and its split seed, the probe seeds and code.
    key = cell_key(
        {
            "model": {
                k: config["model"][k]
                for k in ("model_name_or_path", "vision_tower", "mm_vision_select_layer")
            },
            "data": config["data"],
            "training": {
                "seed": spec.training.seed,
                "probe_seeds": args.seeds,
                "matched_budget": vars(matched),
                "probes": hashlib.sha256(probes_code.read_bytes()).hexdigest(),
            },  # fmt: skip
        },
        code_fingerprint(),
    )
    out = args.results_dir / "comparison" / "runs"
    existing = [out / f"{name}__probe__seed{s}.json" for name in PROBES for s in args.seeds]
    current = [p for p in existing if p.is_file() and json.loads(p.read_text()).get("key") == key]
    if current:
        print(f"probes: up to date ({len(current)} records)", file=sys.stderr)
        return
    start = time.time()
    feats = tower_features(spec)
    for record in run_probes(feats, args.seeds, key, matched):
        record["command"] = command
        cell = record["cell"]
        write_record(out / f"{cell['projector']}__probe__seed{cell['seed']}.json", record)
    print(f"probes: {len(PROBES)} probes in {time.time() - start:.0f} s", file=sys.stderr)


# ---- zero-shot rows (the stage-1 model before detection training) ----------------------------
def run_zero_shot_records(args, train_flags: list[str], command: str) -> None:
    """Zero-shot records (sweep/zeroshot.py) of every projector with a stage-1 file, one per seed when each
    seed has its own file (else one), reused while their key holds; ``--workers`` of them at once."""
    out = args.results_dir / "comparison" / "runs"
    fingerprint = code_fingerprint()
    jobs = []
    for projector, files in args.stage1.items():
        for seed in args.seeds if isinstance(files, dict) else args.seeds[:1]:
            argv = cell_argv(args, train_flags, Cell(projector, "projector_only", seed))
            config = parse_spec(argv).to_json()
            config["model"]["pretrain_mm_mlp_adapter_sha256"] = adapter_sha256(config)
            key = cell_key(config, fingerprint)
            paths = [str(out / f"{projector}__{form}__seed{seed}.json") for form in ZERO_SHOT_STRATEGIES]
            if not args.force and all(
                Path(p).is_file() and json.loads(Path(p).read_text()).get("key") == key for p in paths
            ):
                continue
            jobs.append((f"{projector} zero-shot seed {seed}", (argv, seed, key, paths, command)))
    if args.workers > 1 and len(jobs) > 1:
        failures = run_pool(run_zero_shot, jobs, args.workers)
        if failures:
            raise RunError(f"zero-shot rows failed: {'; '.join(failures)}. Fix the cause and run the same command "
                           "again (finished ones are kept), or skip them with --zero_shot False.")  # fmt: skip
        return
    for _, job in jobs:
        run_zero_shot(*job)


def run_zero_shot(argv: list[str], seed: int, key: str, paths: list[str], command: str) -> dict:
    """One projector and seed's zero-shot records (both forms), in this process or a pool worker."""
    start = time.time()
    records = zero_shot_records(parse_spec(argv), seed=seed, key=key)
    for path, record in zip(paths, records, strict=True):
        write_record(Path(path), record | {"command": command})
    print(
        f"zero-shot: {records[0]['cell']['projector']} seed {seed} in {time.time() - start:.0f} s",
        file=sys.stderr,
    )
    return {"cell": records[0]["cell"]["name"], "auc": records[0]["metrics"]["test"]["auc"]}


# ---- the sweep ------------------------------------------------------------------------------
def plan(args, train_flags) -> tuple[list[tuple[Cell, list[str], Path, str]], int]:
    """(cells to run with argv, record path and key; how many are up to date and skipped)."""

    fingerprint = code_fingerprint()
    todo, skipped = [], 0
    cells = [(cell, v) for v in args.variants for cell in grid(args.projectors, args.strategies, args.seeds)]
    for cell, variant in cells:
        results = args.results_dir / args.mode / variant[0] if variant else args.results_dir / "comparison"
        argv = cell_argv(args, train_flags, cell, variant)
        config = parse_spec(argv).to_json()
        sha = adapter_sha256(config)  # parse_spec checked that the file exists
        if sha:  # a new stage-1 file at the same path is a new cell
            config["model"]["pretrain_mm_mlp_adapter_sha256"] = sha
        key = cell_key(config, fingerprint)
        path = record_path(results, cell)
        if not args.force and path.is_file():
            try:
                if json.loads(path.read_text()).get("key") == key:
                    skipped += 1
                    continue
            except ValueError:
                logger.warning("%s is unreadable; running its cell again", path)
        todo.append((cell, argv, path, key))
    return todo, skipped


def _finish_study(args, command: str, wall: float | None, failures: list[str]) -> dict:
    """A study's own table (the LR grid's choice, leave-one-family-out) from every record of its cells,
    earlier runs included; never from a partial study."""
    out = args.results_dir / args.mode
    by_variant = {}
    for name, _ in args.variants:
        found, _ = read_records(out / name)
        by_variant[name] = [r for r in found if r["cell"]["projector"] in args.projectors
                            and r["cell"]["strategy"] in args.strategies and r["cell"]["seed"] in args.seeds]  # fmt: skip
    missing = [name for name, records in by_variant.items() if not records]
    if failures or missing:
        raise RunError(
            f"--{args.mode}: {len(failures)} runs failed (listed above; logs in {args.runs_dir / args.mode})"
            + (f", no record for {', '.join(missing)}" if missing else "")
            + ": no table is written from a partial study. Fix the cause and run the same command again (finished "
            "runs are kept)."
        )
    machine = runs_machine([r for rs in by_variant.values() for r in rs])
    if args.mode == "lofo":
        rows = write_lofo(out, by_variant, command, machine)
        print(f"lofo: {out / 'lofo.md'} ({len(rows)} rows)", file=sys.stderr)
        return {"rows": rows}
    payload = write_grid(out, [r for rs in by_variant.values() for r in rs], command, machine, wall)
    print(f"lr_grid: {out / 'lr_choice.json'}: {payload['choices']}", file=sys.stderr)
    return payload


@cli_entry
def main(argv: list[str]) -> dict:
    return run(parse(argv))


def run(parsed) -> dict:
    """The sweep as ``parsed`` says (from llava_df.sweep.compare_flags.parse)."""
    args, train_flags = parsed
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    command = "python -m llava_df.compare_projectors" + (" " + shlex.join(args.argv) if args.argv else "")
    for cell in grid(args.projectors, args.strategies, args.seeds[:1]):
        if (
            cell.projector in args.stage1 and cell.strategy == args.strategies[0]
        ):  # a stage-1 file that does not fit
            check_model_inputs(parse_spec(cell_argv(args, train_flags, cell)))
    failures: list[str] = []
    if args.only_probes and (args.aggregate or args.skip_probes):
        raise UsageError("--only_probes runs the probes: it cannot go with --aggregate or --skip_probes.")
    if args.status:  # reads files only: trains nothing, stage 1 included
        return show_status(args, plan(for_status(args), train_flags)[0])
    if args.run_stage1 and not args.aggregate and not args.only_probes:
        n_captions = 120 if args.quick else 1000  # --quick: a smoke run of the whole pipeline
        args.stage1 = run_stage1(
            args.projectors, args.runs_dir, train_flags, captions=args.stage1_data, n_captions=n_captions,
            seeds=args.seeds if args.stage1_per_seed else None, recipe=args.stage1_recipe,
            image_size=args.image_size, workers=args.workers,
        )  # fmt: skip
    if (
        args.stage1
        and args.zero_shot
        and args.mode == "comparison"
        and not args.aggregate
        and not args.only_probes
    ):
        run_zero_shot_records(args, train_flags, command)
    if not args.aggregate and not args.only_probes:
        todo, skipped = plan(args, train_flags)
        if args.emit_jobs or args.cell:  # commands for another scheduler, or one of them run here
            return (
                emit_jobs(args, todo, skipped, args.argv)
                if args.emit_jobs
                else run_one_cell(args, todo, run_cell)
            )
        print(f"{len(todo)} runs to do, {skipped} up to date ({args.workers} worker(s))", file=sys.stderr)
        start = time.time()
        jobs = [(cell.name, (cell, argv, str(path), key)) for cell, argv, path, key in todo]
        failures = (
            run_pool(run_cell, jobs, args.workers)
            if args.executor == "pool"
            else run_jobs(args, run_cell, jobs)
        )
        if failures is None:  # --no_wait: submitted to SLURM; the same command again builds the tables
            return {"submitted": len(jobs)}
        wall = time.time() - start
        print(f"sweep: {len(todo) - len(failures)} runs in {wall:.0f} s", file=sys.stderr)
        if todo:  # the command and time the tables' header names
            sweep = {
                "command": command,
                "runs": len(todo) - len(failures),
                "wall_s": round(wall),
                "workers": args.workers,
            }
            write_json(args.results_dir / args.mode / "sweep.json", sweep)
        for line in failures:
            print(f"failed: {line}", file=sys.stderr)
    if args.mode != "comparison":
        return _finish_study(args, command, wall if todo else None, failures)
    if not args.aggregate and not args.skip_probes:
        run_probe_records(args, train_flags, command)
    summary = aggregate(args.results_dir, command, protocol=Path(args.protocol) if args.protocol else None)
    if not args.aggregate and not args.only_probes and failures:
        raise RunError(
            f"{len(failures)} runs failed (listed above; logs in {args.runs_dir}); the tables hold the others."
        )
    return summary


if __name__ == "__main__":
    main()
