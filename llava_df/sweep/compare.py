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
    llava-df compare --help                 # the sweep's flags, with their defaults

Every cell trains with the same recipe (``--recipe``, default configs/sweep_tiny.yaml, plus any
training flag given here) and differs only in projector, strategy and seed. Each finished run
writes ``<results_dir>/comparison/runs/<cell>.json``; a rerun skips cells whose config and code
are unchanged, so a killed sweep picks up where it stopped. The answer is
``<results_dir>/comparison.{csv,md}`` and two PNG plots, rebuilt from the run JSONs.
"""

from __future__ import annotations

import argparse
import concurrent.futures as futures
import contextlib
import ctypes
import hashlib
import json
import logging
import math
import multiprocessing
import os
import shlex
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from llava_df.cli_args import bool_value, parse_verb
from llava_df.errors import ConfigError, RunError, UsageError, cli_entry
from llava_df.io import write_json
from llava_df.model.inputs import check_model_inputs
from llava_df.projectors import available_projectors, create_projector, resolve
from llava_df.projectors.profile import macs_per_token
from llava_df.provenance import run_environment
from llava_df.spec import parse_spec
from llava_df.spec.strategy import STRATEGIES
from llava_df.sweep.cells import (
    DEFAULT_PROJECTORS,
    DEFAULT_RECIPE,
    DEFAULT_SEEDS,
    DEFAULT_STRATEGIES,
    QUICK,
    REFERENCE,
    Cell,
    grid,
)
from llava_df.sweep.plots import write_plots
from llava_df.sweep.probes import PROBES, run_probes, tower_features
from llava_df.sweep.record import (
    build_record,
    cell_key,
    code_fingerprint,
    read_records,
    record_path,
    write_record,
)
from llava_df.sweep.stage1 import run_stage1
from llava_df.sweep.stats import hanley_mcneil_se
from llava_df.sweep.tables import (
    comparison_rows,
    minimum_detectable,
    seeds_advice,
    write_summary,
    write_tables,
)
from llava_df.train.workflow import train

logger = logging.getLogger(__name__)
# Below this many test images per class a run's AUC has a standard error above ~0.05.
MIN_PER_CLASS = 50


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


@dataclass
class CompareArguments:
    """``llava-df compare``'s own flags; every other flag is a training flag, given to every run."""

    projectors: str | None = field(
        default=None,
        metadata={"help": f"Comma-separated projector names (None: {','.join(DEFAULT_PROJECTORS)}; --quick: "
                          f"{','.join(QUICK['projectors'])})."},
    )  # fmt: skip
    strategies: str | None = field(
        default=None,
        metadata={"help": f"Comma-separated strategies (None: {','.join(DEFAULT_STRATEGIES)}; --quick: "
                          f"{','.join(QUICK['strategies'])})."},
    )  # fmt: skip
    seeds: str | None = field(
        default=None,
        metadata={"help": f"Comma-separated training seeds (None: {','.join(map(str, DEFAULT_SEEDS))}; --quick: "
                          f"{','.join(map(str, QUICK['seeds']))})."},
    )  # fmt: skip
    recipe: str = field(default=str(DEFAULT_RECIPE), metadata={"help": "The training config every cell shares."})
    results_dir: str = field(default="results", metadata={"help": "Where comparison.{csv,md}, plots and runs/ go."})
    runs_dir: str = field(default="outputs/compare", metadata={"help": "Where each run's weights and logs go."})
    workers: int = field(default=1, metadata={"help": "Runs at once: one per CPU core, or one per GPU."})
    quick: bool = field(default=False, metadata={"help": "2 projectors x 2 strategies x 1 seed on small data."})
    force: bool = field(default=False, metadata={"help": "Rerun cells even when their record is up to date."})
    aggregate: bool = field(default=False, metadata={"help": "Only rebuild tables and plots from the run JSONs."})
    n_boot: int = field(default=1000, metadata={"help": "Bootstrap resamples of the paired test."})
    skip_probes: bool = field(
        default=False,
        metadata={"help": "Do not run the feature probes (linear / MLP / KAN on the frozen tower's features, the "
                          "ceiling rows)."},
    )  # fmt: skip
    only_probes: bool = field(
        default=False,
        metadata={"help": "Run (or reuse) only the feature probes of the recipe's data, then rebuild the tables."},
    )
    # Not a plain boolean: alone (or True) it runs stage 1, with name=path pairs it names stage-1 files.
    # HfArgumentParser passes the metadata on to argparse, so nargs="?" with a const keeps both meanings.
    stage1: str = field(
        default="",
        metadata={
            "nargs": "?",
            "const": "True",
            "help": "Alone (or True): run stage 1 (caption alignment, configs/stage1_tiny.yaml) for each projector "
            "before its stage-2 runs. With name=path[,name=path]: start those projectors from these stage-1 files.",
        },
    )
    stage1_data: str | None = field(
        default=None,
        metadata={"help": "--stage1's captions (LLaVA-Pretrain JSON); None: synthetic captions written to "
                          "RUNS_DIR/stage1/captions."},
    )  # fmt: skip


def parse(argv: list[str]):
    """(sweep args, training flags for every cell); UsageError before anything runs."""
    flags, train_flags = parse_verb(
        CompareArguments, argv, prog="llava-df compare", description=__doc__.split("\n\n")[0],
        epilog="Any other flag goes to every run, e.g. --model_name_or_path, --data_dir, --bits, --learning_rate "
        "(llava-df train --help lists them).",
        allow_unknown=True,
    )  # fmt: skip
    # The resolved settings: lists, paths and the stage-1 plan where the flags hold text.
    args = argparse.Namespace(**vars(flags))
    defaults = (
        (QUICK["projectors"], QUICK["strategies"], QUICK["seeds"])
        if args.quick
        else (DEFAULT_PROJECTORS, DEFAULT_STRATEGIES, DEFAULT_SEEDS)
    )
    args.projectors = args.projectors or ",".join(defaults[0])
    args.strategies = args.strategies or ",".join(defaults[1])
    args.seeds = args.seeds or ",".join(map(str, defaults[2]))
    if args.quick:
        train_flags = [*QUICK["flags"], *train_flags]
    args.projectors, args.strategies = _names(args.projectors), _names(args.strategies)
    for name in args.projectors:
        try:
            resolve(name)
        except KeyError:
            raise UsageError(
                f"--projectors: {name!r} is not a registered projector. Valid names and patterns: "
                f"{', '.join(available_projectors())}."
            ) from None
    for name in args.strategies:
        if name not in STRATEGIES:
            raise UsageError(f"--strategies: {name!r} is not a strategy. Valid: {', '.join(STRATEGIES)}.")
    try:
        args.seeds = [int(s) for s in _names(args.seeds)]
    except ValueError:
        raise UsageError(f"--seeds {args.seeds!r}: expected comma-separated integers, e.g. 0,1,2.") from None
    if not (args.projectors and args.strategies and args.seeds):
        raise UsageError("--projectors, --strategies and --seeds each need at least one value.")
    if args.workers < 1:
        raise UsageError(f"--workers {args.workers}: expected 1 or more.")
    # --stage1 alone or True: run stage 1; False: do not; anything else: name=path pairs of stage-1 files.
    run_stage1 = bool_value(args.stage1)
    args.run_stage1 = bool(run_stage1)
    if run_stage1 is not None:
        args.stage1 = ""
    if args.stage1_data and not args.run_stage1:
        raise UsageError("--stage1_data is the data of --stage1 (alone, which runs stage 1); add --stage1.")
    if args.stage1_data and not Path(args.stage1_data).is_file():
        raise UsageError(f"--stage1_data {args.stage1_data}: no such file. Pass a LLaVA-Pretrain caption JSON.")
    bad = [item for item in _names(args.stage1) if "=" not in item]
    if bad:
        raise UsageError(
            f"--stage1 {bad[0]!r}: expected name=path, e.g. kan_h256_g5_k3=stage1/mm_projector.safetensors."
        )
    args.stage1 = dict(item.split("=", 1) for item in _names(args.stage1))
    for name, path in args.stage1.items():
        if not Path(path).is_file():
            raise UsageError(
                f"--stage1 {name}={path}: no such file. Pass the stage-1 mm_projector file of {name}."
            )
    if not Path(args.recipe).is_file():
        raise UsageError(f"--recipe {args.recipe}: no such file. The default is {DEFAULT_RECIPE}.")
    # Every cell's flags go through the training parser now: a typo fails here, not after an hour.
    args.results_dir, args.runs_dir = Path(args.results_dir), Path(args.runs_dir)
    try:
        for cell in grid(args.projectors, args.strategies, args.seeds[:1]):
            spec = parse_spec(cell_argv(args, train_flags, cell))
            if cell.projector in args.stage1 and cell.strategy == args.strategies[0]:
                check_model_inputs(spec)  # a stage-1 file that does not fit its projector fails now
    except ConfigError as err:
        raise UsageError(f"a training flag of the sweep: {err}") from None
    unknown = sorted(set(args.stage1) - set(args.projectors))
    if unknown:
        raise UsageError(f"--stage1 names {unknown}, which are not in --projectors {args.projectors}.")
    return args, train_flags


def cell_argv(args, train_flags: list[str], cell: Cell) -> list[str]:
    return ["--config", str(args.recipe), *train_flags, *cell.flags(args.runs_dir, args.stage1)]


# ---- running one cell (in a worker process) -------------------------------------------------
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


def run_cell(cell: Cell, argv: list[str], record_file: str, key: str) -> dict:
    """Train one cell, write its record; returns a short summary for the progress bar."""
    if _stopping:  # already queued to this worker when the sweep was stopped
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
    init = results.get("projector_init") or "random"  # random, checkpoint (its own projector) or file:<stage-1 path>
    write_record(Path(record_file), build_record(cell, results, scores, key, init))
    return {"cell": cell.name, "auc": results["test"]["auc"]}


# ---- feature probes (the ceiling rows) ------------------------------------------------------
def run_probe_records(args, train_flags: list[str], command: str) -> None:
    """Probe records for the recipe's data (comparison/probes.py), reused while their key holds."""

    cell = next(iter(grid([REFERENCE], ["projector_only"], args.seeds[:1])))
    spec = parse_spec(cell_argv(args, train_flags, cell))
    config = spec.to_json()
    probes_code = Path(__file__).with_name("probes.py")
    # What a probe depends on: the tower (model), the data and its split seed, the probe seeds and code.
    key = cell_key(
        {
            "model": {k: config["model"][k] for k in ("model_name_or_path", "vision_tower", "mm_vision_select_layer")},
            "data": config["data"],
            "training": {"seed": spec.training.seed, "probe_seeds": args.seeds,
                         "probes": hashlib.sha256(probes_code.read_bytes()).hexdigest()},  # fmt: skip
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
    for record in run_probes(feats, args.seeds, key):
        record["command"] = command
        cell = record["cell"]
        write_record(out / f"{cell['projector']}__probe__seed{cell['seed']}.json", record)
    print(f"probes: {len(PROBES)} probes in {time.time() - start:.0f} s", file=sys.stderr)


# ---- the sweep ------------------------------------------------------------------------------
def plan(args, train_flags) -> tuple[list[tuple[Cell, list[str], Path, str]], int]:
    """(cells to run with argv, record path and key; how many are up to date and skipped)."""

    fingerprint = code_fingerprint()
    todo, skipped = [], 0
    results = args.results_dir / "comparison"
    for cell in grid(args.projectors, args.strategies, args.seeds):
        argv = cell_argv(args, train_flags, cell)
        config = parse_spec(argv).to_json()
        adapter = config["model"].get("pretrain_mm_mlp_adapter")
        if adapter:  # a new stage-1 file at the same path is a new cell
            config["model"]["pretrain_mm_mlp_adapter_sha256"] = hashlib.sha256(Path(adapter).read_bytes()).hexdigest()
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


def run_sweep(args, todo) -> list[str]:
    """Run the cells, ``args.workers`` at a time, with a progress bar; returns the failures.

    SIGINT (Ctrl+C) or SIGTERM stops it: no new cell starts, the running ones are terminated (their
    folders keep their last complete checkpoint), and SweepInterrupted says how to continue. The
    default handlers would not do that: the pool's shutdown waits for every queued cell.
    """
    failures: list[str] = []
    if not todo:
        return failures
    gpus = None

    if torch.cuda.is_available() and args.workers > 1:
        gpus = multiprocessing.get_context("spawn").Queue()
        for i in range(args.workers):
            gpus.put(i % torch.cuda.device_count())
    context = multiprocessing.get_context("spawn")  # fresh interpreters: no forked torch state
    in_main = threading.current_thread() is threading.main_thread()  # signal handlers only go there
    previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGINT, signal.SIGTERM)} if in_main else {}
    bar = tqdm(total=len(todo), desc="runs", unit="run", dynamic_ncols=True)
    pool = futures.ProcessPoolExecutor(args.workers, mp_context=context, initializer=_init_worker, initargs=(gpus,))
    done = 0
    try:
        jobs = {pool.submit(run_cell, cell, argv, str(path), key): cell for cell, argv, path, key in todo}
        for job in futures.as_completed(jobs):
            cell = jobs[job]
            try:
                result = job.result()
                bar.set_postfix_str(f"{result['cell']}: test AUC {result['auc']:.3f}")
            except Exception as err:  # one failed cell must not lose the others
                failures.append(
                    f"{cell.name}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                )
                bar.set_postfix_str(f"{cell.name}: FAILED")
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
        name = signal.Signals(stop.signum).name
        raise SweepInterrupted(
            f"{name}: stopped the sweep after {done} of {len(todo)} runs ({len(failures)} failed); {len(workers)} "
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


def aggregate(results_dir: Path, command: str, n_boot: int = 1000) -> dict:
    """Tables and plots from the run JSONs alone."""

    out = results_dir / "comparison"
    records, bad = read_records(out)
    if not records:
        raise UsageError(f"{out / 'runs'} holds no complete run record: run the sweep first.")
    rows = comparison_rows(records, n_boot=n_boot)
    env = run_environment()
    device = env["device"]
    machine = (
        f"{device.get('gpu_name')} x{device.get('gpu_count')}"
        if device.get("type") == "cuda"
        else f"{device.get('cpu_model')}, {device.get('cpu_count')} cores, no GPU"
    )
    mdd = minimum_detectable(rows)
    advice = seeds_advice(rows)
    sweep_file = out / "sweep.json"
    sweep = json.loads(sweep_file.read_text()) if sweep_file.is_file() else {"command": command}
    ran = (
        f" ({sweep['runs']} runs in {sweep['wall_s'] / 60:.0f} min with {sweep['workers']} worker(s))"
        if "wall_s" in sweep
        else ""
    )
    test_sizes = _test_sizes(records)
    header = "\n".join(
        [
            "# Projector comparison",
            "",
            f"Sweep: `{sweep['command']}`{ran}; tables and plots from its run JSONs: "
            "`python -m llava_df.compare_projectors --aggregate`.",
            f"Machine: {machine}; torch {env['packages'].get('torch')}, transformers {env['packages'].get('transformers')}; "
            f"the runs' code: {_run_commits(records)}.",
            f"Runs: {len(records)} records{f', {len(bad)} unreadable and skipped' if bad else ''}; "
            f"in-distribution test set {test_sizes}; {_val_size(records)}.",
            f"Minimum detectable test-AUC difference against {REFERENCE} (paired bootstrap over seed pairs and "
            f"test images, 80% power, 5% two-sided): {mdd:.3f}. Cells are marked better or worse only where the "
            "paired 95% interval excludes 0; otherwise they read 'no significant difference'. Selection: best/ is "
            "the epoch with the lowest validation loss (the plateau schedule's criterion), never the test split.",
            _seeds_line(advice, mdd),
            "Probe rows (strategy probe): linear / MLP / KAN probes on the frozen tower's features, the same splits "
            "(`--only_probes` recomputes them; comparison/probes.py); the last column is each row's test AUC minus the "
            "best probe's.",
            "Accuracy is at each run's decision threshold, chosen on its validation scores (--threshold_rule, default the EER point); peak memory "
            f"is {rows[0]['peak_memory_kind']} of the whole run (tiny preset: what the run measured, not a 7B figure).",
        ]
    )
    csv, md = write_tables(rows, results_dir, header)
    summary_md = write_summary(rows, results_dir, mdd)
    plots = write_plots(rows, results_dir, f"{len(records)} runs; error bars: 95% CI over seeds")
    print(md.read_text())
    for path, why in bad:
        print(f"skipped {path}: {why}", file=sys.stderr)
    return {
        "rows": rows,
        "files": [str(csv), str(md), str(summary_md), *map(str, plots)],
        "skipped": [str(p) for p, _ in bad],
        "mdd": mdd,
    }


def _seeds_line(advice: dict, mdd: float) -> str:
    if advice["seeds"] is None and not math.isfinite(advice["se_image"]):
        return "Seeds needed for a 0.02 minimum detectable difference: n/a (needs at least 2 paired seeds)."
    split = (
        f"the paired SE splits into {advice['se_image']:.4f} from the test images and a seed-to-seed SD of "
        f"{advice['sd_seed']:.4f} per difference"
    )
    if advice["seeds"] is None:
        return (f"More seeds alone cannot bring the minimum detectable difference ({mdd:.3f}) to {advice['target']}: "
                f"{split}, and the image part does not shrink with seeds; more test images would.")  # fmt: skip
    print(f"seeds for a {advice['target']} minimum detectable difference: {advice['seeds']} ({split})", file=sys.stderr)
    return (f"With {advice['n_seeds']} seeds the minimum detectable difference is {mdd:.3f}; {advice['seeds']} seeds "
            f"would bring it to {advice['target']} ({split}).")  # fmt: skip


def _run_commits(records: list[dict]) -> str:
    """The git commits the runs were made at, each with its dirty flag (the records' own env)."""
    seen: dict[str, int] = {}
    for r in records:
        git = r["env"].get("git") or {}
        name = f"git {str(git.get('commit'))[:10]}" + (" (dirty)" if git.get("dirty") else " (clean)")
        seen[name] = seen.get(name, 0) + 1
    return ", ".join(f"{name} x{n}" if len(seen) > 1 else name for name, n in seen.items())


def _val_size(records: list[dict]) -> str:
    """The validation split's size and its AUC standard error (it picks best/ and the threshold)."""

    y = (records[0]["scores"].get("val") or {}).get("is_fake")
    if not y:
        return "no validation scores"
    fake, real = sum(y), len(y) - sum(y)
    return (f"validation {len(y)} images ({real} real, {fake} fake), AUC standard error "
            f"{hanley_mcneil_se(0.8, fake, real):.3f} at AUC 0.8")  # fmt: skip


def _test_sizes(records: list[dict]) -> str:
    y = records[0]["scores"]["test"]["is_fake"]
    fake, real = sum(y), len(y) - sum(y)
    text = f"{len(y)} images ({real} real, {fake} fake)"
    if min(fake, real) < MIN_PER_CLASS:
        # Hanley & McNeil's SE of an AUC near 0.8 with these class sizes.
        q1, q2, auc = 0.8 / 1.2, 2 * 0.64 / 1.8, 0.8
        se = math.sqrt(
            (auc * (1 - auc) + (fake - 1) * (q1 - auc**2) + (real - 1) * (q2 - auc**2)) / max(fake * real, 1)
        )
        logger.warning(
            "the test split has %d real and %d fake images: one run's AUC has a standard error of about %.2f, so "
            "differences below ~%.2f are noise. Use more data (at least %d per class).",
            real, fake, se, 2.8 * se, MIN_PER_CLASS,
        )  # fmt: skip
        text += f", below {MIN_PER_CLASS} per class"
    return text


@cli_entry
def main(argv: list[str]) -> dict:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    command = "python -m llava_df.compare_projectors" + (" " + shlex.join(argv) if argv else "")
    args, train_flags = parse(argv)
    failures: list[str] = []
    if args.only_probes and (args.aggregate or args.skip_probes):
        raise UsageError("--only_probes runs the probes: it cannot go with --aggregate or --skip_probes.")
    if args.run_stage1 and not args.aggregate and not args.only_probes:
        n_captions = 120 if args.quick else 1000  # --quick: a smoke run of the whole pipeline
        args.stage1 = run_stage1(
            args.projectors, args.runs_dir, train_flags, captions=args.stage1_data, n_captions=n_captions
        )
    if not args.aggregate and not args.only_probes:
        todo, skipped = plan(args, train_flags)
        print(f"{len(todo)} runs to do, {skipped} up to date ({args.workers} worker(s))", file=sys.stderr)
        start = time.time()
        failures = run_sweep(args, todo)
        wall = time.time() - start
        print(f"sweep: {len(todo) - len(failures)} runs in {wall:.0f} s", file=sys.stderr)
        if todo:  # the command and time the tables' header names
            sweep = {
                "command": command,
                "runs": len(todo) - len(failures),
                "wall_s": round(wall),
                "workers": args.workers,
            }
            write_json(args.results_dir / "comparison" / "sweep.json", sweep)
        for line in failures:
            print(f"failed: {line}", file=sys.stderr)
    if not args.aggregate and not args.skip_probes:
        run_probe_records(args, train_flags, command)
    summary = aggregate(args.results_dir, command, n_boot=args.n_boot)
    if not args.aggregate and not args.only_probes and failures:
        raise RunError(
            f"{len(failures)} runs failed (listed above; logs in {args.runs_dir}); the tables hold the others."
        )
    return summary


if __name__ == "__main__":
    main()
