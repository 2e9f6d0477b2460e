"""``llava-df compare``'s flags, checked before torch loads (llava_df.sweep.compare runs the sweep).

The sweep's own flags, then every cell's training flags through the same checks as ``llava-df train``
(llava_df.spec.parse).

How to call::

    args, train_flags = parse(["--quick", "--workers", "2"])   # resolved lists, paths, study variants
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from llava_df.cli_args import bool_value, parse_verb, unknown_flag_message
from llava_df.errors import ConfigError, UsageError
from llava_df.projectors import available_projectors, resolve
from llava_df.spec.parse import parse_flags, train_flag_names
from llava_df.spec.strategy import STRATEGIES
from llava_df.sweep.cells import (
    DEFAULT_PROJECTORS,
    DEFAULT_RECIPE,
    DEFAULT_SEEDS,
    DEFAULT_STRATEGIES,
    QUICK,
    STAGE1_RECIPE,
    Cell,
    grid,
    stage1_recipe_for,
)
from llava_df.sweep.job_args import JobArguments, check_job_args
from llava_df.sweep.lr_grid import load_choice, pair, parse_rates, provenance, tag
from llava_df.sweep.protocol import load_protocol
from llava_df.sweep.variants import NONE, SBI, SBI_FAMILY, parse_families, sbi_holdout

DESCRIPTION = (
    "the sweep that answers the research question: projectors x strategies x seeds, tables and plots."
)


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


@dataclass
class SweepArguments(JobArguments, CompareArguments):
    """Every flag of ``llava-df compare``: the sweep's (listed first in --help), then where its cells run."""


def parse(argv: list[str]):
    """(sweep args, training flags for every cell); UsageError before anything runs."""
    flags, train_flags = parse_verb(
        SweepArguments, argv, prog="llava-df compare", description=DESCRIPTION,
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
    args.lr_choices = None
    # Every cell's flags go through the training checks now (no torch): a typo fails here, not after an hour.
    args.results_dir, args.runs_dir = Path(args.results_dir), Path(args.runs_dir)
    _check_unknown(train_flags)
    try:
        for cell in grid(args.projectors, args.strategies, args.seeds[:1]):
            for variant in args.variants:
                parse_flags(cell_argv(args, train_flags, cell, variant), prog="llava-df compare")
        first = next(iter(grid(args.projectors[:1], args.strategies[:1], args.seeds[:1])))
        parsed = parse_flags(cell_argv(args, train_flags, first), prog="llava-df compare")
    except ConfigError as err:
        raise UsageError(f"a training flag of the sweep: {err}") from None
    if args.lr_choice is not None:  # the rates must come from a grid of this study (its model, data, budget)
        study = provenance(parsed.values) if parsed is not None else None
        args.lr_choices = load_choice(Path(args.lr_choice), args.projectors, args.strategies, study)
    _stage1_settings(args, parsed, train_flags)
    unknown = sorted(set(args.stage1) - set(args.projectors))
    if unknown:
        raise UsageError(f"--stage1 names {unknown}, which are not in --projectors {args.projectors}.")
    if args.protocol is not None:
        load_protocol(Path(args.protocol))  # a missing or incomplete protocol is refused before any run
    check_job_args(args)
    args.argv = list(argv)
    return args, train_flags


def _stage1_settings(args, parsed, train_flags: list[str]) -> None:
    """--stage1_per_seed and --stage1_recipe checked; the sweep's image size and model read for stage 1."""
    if args.stage1_per_seed and not args.run_stage1:
        raise UsageError("--stage1_per_seed runs stage 1 once per seed: add --stage1 (alone).")
    if parsed is not None:
        values = parsed.values
    else:  # no flag table here (see spec.parse): the real parse answers, torch and all
        from llava_df.spec.resolve import parse_spec  # lazy: torch, only where no flag table can be made

        spec = parse_spec(
            cell_argv(args, train_flags, grid(args.projectors[:1], args.strategies[:1], args.seeds[:1])[0])
        )
        values = argparse.Namespace(
            image_size=spec.data.image_size, model_name_or_path=spec.model.model_name_or_path
        )
    args.image_size = values.image_size  # stage 1's synthetic captions are rendered at the sweep's size
    args.stage1_recipe = (
        Path(args.stage1_recipe) if args.stage1_recipe else stage1_recipe_for(values.model_name_or_path)
    )
    if not args.stage1_recipe.is_file():
        raise UsageError(
            f"--stage1_recipe {args.stage1_recipe}: no such file. The default is {STAGE1_RECIPE}."
        )


def _check_unknown(train_flags: list[str]) -> None:
    """A flag neither the sweep's nor training's: suggest from the sweep's own first (--worker -> --workers)."""
    known = train_flag_names()
    if known is None:  # no flag table here: the real parse reports it
        return
    own = [f.name for f in dataclasses.fields(SweepArguments)]
    for token in train_flags:
        if token.startswith("--") and len(token) > 2:
            name = token[2:].split("=", 1)[0].replace("-", "_")
            if name not in known and name not in own:
                raise UsageError(unknown_flag_message(name, own, known, prog="llava-df compare"))


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
