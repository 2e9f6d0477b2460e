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
import contextlib
import hashlib
import json
import logging
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from llava_df.cli_args import bool_value, parse_verb
from llava_df.errors import ConfigError, RunError, UsageError, cli_entry
from llava_df.io import write_json
from llava_df.model.inputs import check_model_inputs
from llava_df.projectors import available_projectors, create_projector, resolve
from llava_df.projectors.profile import macs_per_token
from llava_df.spec import parse_spec
from llava_df.spec.strategy import STRATEGIES
from llava_df.sweep.cells import (
    DEFAULT_PROJECTORS,
    DEFAULT_RECIPE,
    DEFAULT_SEEDS,
    DEFAULT_STRATEGIES,
    QUICK,
    REFERENCE,
    ZERO_SHOT_STRATEGIES,
    Cell,
    grid,
)
from llava_df.sweep.confirm import load_protocol
from llava_df.sweep.lofo import NONE, SBI, SBI_FAMILY, parse_families, sbi_holdout, write_lofo
from llava_df.sweep.lr_grid import load_choice, pair, parse_rates, tag, write_grid
from llava_df.sweep.pool import run_pool, stopping
from llava_df.sweep.probes import PROBES, ProbeBudget, run_probes, tower_features
from llava_df.sweep.record import (
    build_record,
    cell_key,
    code_fingerprint,
    read_records,
    record_path,
    write_record,
)
from llava_df.sweep.report import aggregate, runs_machine
from llava_df.sweep.stage1 import STAGE1_RECIPE, run_stage1, stage1_recipe_for
from llava_df.sweep.zeroshot import zero_shot_records
from llava_df.train.workflow import train

logger = logging.getLogger(__name__)


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
    recipe: str = field(
        default=str(DEFAULT_RECIPE), metadata={"help": "The training config every cell shares."}
    )
    results_dir: str = field(
        default="results", metadata={"help": "Where comparison.{csv,md}, plots and runs/ go."}
    )
    runs_dir: str = field(
        default="outputs/compare", metadata={"help": "Where each run's weights and logs go."}
    )
    workers: int = field(default=1, metadata={"help": "Runs at once: one per CPU core, or one per GPU."})
    quick: bool = field(
        default=False, metadata={"help": "2 projectors x 2 strategies x 1 seed on small data."}
    )
    force: bool = field(default=False, metadata={"help": "Rerun cells even when their record is up to date."})
    aggregate: bool = field(
        default=False, metadata={"help": "Only rebuild tables and plots from the run JSONs."}
    )
    protocol: str | None = field(
        default=None,
        metadata={"help": "The analysis protocol the tables apply (margin, alpha, power, benchmark seed); default "
                          "protocols/confirmatory_v1.yaml of the repository, or its values built in."},
    )  # fmt: skip
    lr_grid: str | None = field(
        default=None,
        metadata={"help": "Comma-separated learning rates: run every cell at each, then choose one per projector and "
                          "strategy on validation (RESULTS_DIR/lr_grid/lr_choice.json; sweep/lr_grid.py). No tables."},
    )  # fmt: skip
    lofo: str | None = field(
        default=None,
        metadata={"help": "Leave one family out: 'all' or comma-separated families; every cell runs with each held out "
                          "in turn and once holding none out (RESULTS_DIR/lofo/lofo.md; sweep/lofo.py). No tables."},
    )  # fmt: skip
    lr_choice: str | None = field(
        default=None,
        metadata={"help": "A choice file of --lr_grid: every cell trains at its projector and strategy's learning rate."},
    )  # fmt: skip
    skip_probes: bool = field(
        default=False,
        metadata={"help": "Do not run the feature probes (linear / MLP / KAN on the frozen tower's features, the "
                          "ceiling rows)."},
    )  # fmt: skip
    only_probes: bool = field(
        default=False,
        metadata={
            "help": "Run (or reuse) only the feature probes of the recipe's data, then rebuild the tables."
        },
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
    stage1_per_seed: bool = field(
        default=False,
        metadata={"help": "With --stage1 (alone): align each projector once per seed, and start each cell from its own "
                          "seed's stage-1 file (no draw shared between seeds, on either side of a comparison)."},
    )  # fmt: skip
    stage1_recipe: str | None = field(
        default=None,
        metadata={"help": "--stage1's training config; None: the preset's own (configs/stage1_smol.yaml for "
                          "--model_name_or_path smol), else configs/stage1_tiny.yaml."},
    )  # fmt: skip
    zero_shot: bool = field(
        default=True,
        metadata={"help": "With stage-1 files: also score each stage-1 model on the detection question before any "
                          "detection training (rows zero_shot and zero_shot_yes_no beside the comparison)."},
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
        raise UsageError(
            f"--stage1_data {args.stage1_data}: no such file. Pass a LLaVA-Pretrain caption JSON."
        )
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
    if args.lr_grid is not None and args.lr_choice is not None:
        raise UsageError(
            "--lr_grid runs the grid that writes a choice file; --lr_choice reads one: pick one."
        )
    sets_lr = _has_flag(train_flags, "--learning_rate")
    if sets_lr and (args.lr_grid is not None or args.lr_choice is not None):
        raise UsageError(
            f"--learning_rate with --{'lr_grid' if args.lr_grid is not None else 'lr_choice'}: the grid or the choice "
            "file sets each cell's learning rate. Drop --learning_rate."
        )
    for mode in ("lr_grid", "lofo"):
        if getattr(args, mode) is not None and (args.aggregate or args.only_probes):
            raise UsageError(f"--{mode} trains its runs: it cannot go with --aggregate or --only_probes.")
    if args.lr_grid is not None and args.lofo is not None:
        raise UsageError("--lr_grid and --lofo are two studies: run one, then the other (--lofo can read the grid's "
                         "choice with --lr_choice).")  # fmt: skip
    if args.lofo is not None and _has_flag(train_flags, "--holdout_manipulation"):
        raise UsageError("--holdout_manipulation with --lofo: --lofo holds out each family in turn. Drop it.")
    args.lr_grid = parse_rates(args.lr_grid) if args.lr_grid is not None else None
    # A study's runs differ from the sweep's by a few flags and live in its own folder (results and runs):
    # the LR grid by --learning_rate, leave-one-family-out by --holdout_manipulation ("" holds none out).
    args.mode = "lr_grid" if args.lr_grid is not None else "lofo" if args.lofo is not None else "comparison"
    if args.lr_grid is not None:
        args.variants = [(tag(r), ["--learning_rate", repr(r)]) for r in args.lr_grid]
    elif args.lofo is not None:
        families = parse_families(args.lofo)
        args.variants = [(f, ["--holdout_manipulation", f]) for f in families] + [
            (NONE, ["--holdout_manipulation", ""])
        ]
        # the SBI protocol: reals + self-blended fakes only, scored on every family
        if SBI_FAMILY in families:
            args.variants.append((SBI, ["--holdout_manipulation", sbi_holdout()]))
    else:
        args.variants = [None]
    args.lr_choices = (
        load_choice(Path(args.lr_choice), args.projectors, args.strategies)
        if args.lr_choice is not None
        else None
    )
    # Every cell's flags go through the training parser now: a typo fails here, not after an hour.
    args.results_dir, args.runs_dir = Path(args.results_dir), Path(args.runs_dir)
    try:
        for cell in grid(args.projectors, args.strategies, args.seeds[:1]):
            for variant in args.variants:
                parse_spec(cell_argv(args, train_flags, cell, variant))
            spec = parse_spec(cell_argv(args, train_flags, cell))
            if cell.projector in args.stage1 and cell.strategy == args.strategies[0]:
                check_model_inputs(spec)  # a stage-1 file that does not fit its projector fails now
    except ConfigError as err:
        raise UsageError(f"a training flag of the sweep: {err}") from None
    if args.stage1_per_seed and not args.run_stage1:
        raise UsageError("--stage1_per_seed runs stage 1 once per seed: add --stage1 (alone).")
    model = parse_spec(
        cell_argv(args, train_flags, grid(args.projectors[:1], args.strategies[:1], args.seeds[:1])[0])
    )
    args.image_size = model.data.image_size  # stage 1's synthetic captions are rendered at the sweep's size
    args.stage1_recipe = (
        Path(args.stage1_recipe) if args.stage1_recipe else stage1_recipe_for(model.model.model_name_or_path)
    )
    if not args.stage1_recipe.is_file():
        raise UsageError(
            f"--stage1_recipe {args.stage1_recipe}: no such file. The default is {STAGE1_RECIPE}."
        )
    unknown = sorted(set(args.stage1) - set(args.projectors))
    if unknown:
        raise UsageError(f"--stage1 names {unknown}, which are not in --projectors {args.projectors}.")
    if args.protocol is not None:
        load_protocol(Path(args.protocol))  # a missing or incomplete protocol is refused before any run
    return args, train_flags


def _has_flag(train_flags: list[str], flag: str) -> bool:
    """Whether the passed-through training flags set ``flag`` (as ``flag value`` or ``flag=value``)."""
    return any(f == flag or f.startswith(f"{flag}=") for f in train_flags)


def cell_argv(
    args, train_flags: list[str], cell: Cell, variant: tuple[str, list[str]] | None = None
) -> list[str]:
    """A cell's training command line: the recipe, the sweep's flags, its --lr_choice learning rate, a study's
    ``variant`` (name, flags: a grid point's LR, a held-out family) with its own runs folder, the cell's flags."""
    choices = getattr(args, "lr_choices", None) or {}
    rate = choices.get(pair(cell.projector, cell.strategy))
    own_lr = ["--learning_rate", repr(rate)] if rate is not None else []
    runs_dir = args.runs_dir / args.mode / variant[0] if variant else args.runs_dir
    extra = variant[1] if variant else []
    return ["--config", str(args.recipe), *train_flags, *own_lr, *extra, *cell.flags(runs_dir, args.stage1)]


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
            adapter = Path(config["model"]["pretrain_mm_mlp_adapter"])
            config["model"]["pretrain_mm_mlp_adapter_sha256"] = hashlib.sha256(
                adapter.read_bytes()
            ).hexdigest()
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
        adapter = config["model"].get("pretrain_mm_mlp_adapter")
        if adapter:  # a new stage-1 file at the same path is a new cell
            config["model"]["pretrain_mm_mlp_adapter_sha256"] = hashlib.sha256(
                Path(adapter).read_bytes()
            ).hexdigest()
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
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    command = "python -m llava_df.compare_projectors" + (" " + shlex.join(argv) if argv else "")
    args, train_flags = parse(argv)
    failures: list[str] = []
    if args.only_probes and (args.aggregate or args.skip_probes):
        raise UsageError("--only_probes runs the probes: it cannot go with --aggregate or --skip_probes.")
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
        print(f"{len(todo)} runs to do, {skipped} up to date ({args.workers} worker(s))", file=sys.stderr)
        start = time.time()
        failures = run_pool(
            run_cell,
            [(cell.name, (cell, argv, str(path), key)) for cell, argv, path, key in todo],
            args.workers,
        )
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
