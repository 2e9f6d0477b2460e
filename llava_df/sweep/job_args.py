"""``llava-df compare``'s flags for the sweep's cells as jobs: a SLURM array, submitit's local executor, any scheduler.

How to call (``llava_df.sweep.compare`` does: its flags are the sweep's, then these)::

    @dataclass
    class SweepArguments(JobArguments, CompareArguments): ...   # --help lists CompareArguments' first
    check_job_args(args)                                         # after the sweep's own checks

Light on purpose: nothing here imports torch, so ``llava-df compare --help`` lists these flags
without loading a model library. What the flags do lives in ``jobs.py`` (one cell as a job),
``submit.py`` (submitit) and ``status.py`` (``--status``).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from llava_df.errors import UsageError
from llava_df.sweep.cells import grid

# pool: the process pool on this machine (sweep/pool.py); local: one submitit job per cell on this
# machine; slurm: one SLURM array job, one task per cell (submitit).
EXECUTORS = ("pool", "local", "slurm")
# The settings a --cluster YAML may hold: the flags below of the same name, plus two only a file can
# hold well (shell lines, and any other sbatch option).
CLUSTER_FLAGS = ("partition", "account", "qos", "time_min", "gpus_per_task", "cpus_per_task", "mem_gb",
                 "array_parallelism")  # fmt: skip
CLUSTER_ONLY = ("setup", "sbatch")


@dataclass
class JobArguments:
    """Where the cells run: --executor, its settings (--cluster YAML or flags), --emit_jobs, --status, --cell."""

    executor: str = field(
        default="pool",
        metadata={"choices": EXECUTORS,
                  "help": "pool: a process pool here (--workers at once). local: each cell a submitit job on this "
                          "machine (--workers at once). slurm: one SLURM array job, one task per cell (pip install "
                          "'llava_df[cluster]')."},
    )  # fmt: skip
    cluster: str | None = field(
        default=None,
        metadata={"help": f"A YAML of --executor slurm's settings: {', '.join(CLUSTER_FLAGS)} (as the flags), setup "
                          "(shell lines run before each task) and sbatch (any other sbatch option, name: value). A "
                          "flag given here wins over the file."},
    )  # fmt: skip
    partition: str | None = field(default=None, metadata={"help": "SLURM partition of the cells' jobs."})
    account: str | None = field(default=None, metadata={"help": "SLURM account charged for the cells' jobs."})
    qos: str | None = field(default=None, metadata={"help": "SLURM quality of service of the cells' jobs."})
    time_min: int | None = field(
        default=None,
        metadata={"help": "Time limit of one cell's job, in minutes (SLURM needs one). A cell that outlasts it is "
                          "requeued and resumes from its last checkpoint (--save_strategy steps --save_steps N)."},
    )  # fmt: skip
    gpus_per_task: int | None = field(
        default=None,
        metadata={"help": "GPUs per cell (SLURM --gpus-per-task; default 1, 0 on a CPU partition)."},
    )
    cpus_per_task: int | None = field(
        default=None, metadata={"help": "CPU cores per cell (SLURM --cpus-per-task)."}
    )
    mem_gb: float | None = field(
        default=None, metadata={"help": "Host memory per cell, in GB (SLURM --mem)."}
    )
    array_parallelism: int | None = field(
        default=None,
        metadata={"help": "At most this many cells of the array run at once (SLURM's array throttle)."},
    )
    jobs_dir: str | None = field(
        default=None,
        metadata={"help": "Where the jobs' logs, submitit's files and each cell's job state go (None: "
                          "RUNS_DIR/jobs/<study>)."},
    )  # fmt: skip
    no_wait: bool = field(
        default=False,
        metadata={"help": "--executor slurm: submit and return. Follow with --status; run the same command again "
                          "(without --no_wait) once the jobs ended, for the probes and tables."},
    )  # fmt: skip
    emit_jobs: str | None = field(
        default=None,
        metadata={"help": "Write FILE: the command of every cell not done and not running, one per line, for any "
                          "scheduler (two at a time: xargs -d '\\n' -P 2 -I{} sh -c {} < FILE). Runs nothing."},
    )  # fmt: skip
    status: bool = field(
        default=False,
        metadata={"help": "List the study's cells as done / running / failed / pending (failed: the last error "
                          "line), from the records and the jobs' state files and logs. Runs nothing."},
    )  # fmt: skip
    cell: str | None = field(
        default=None,
        metadata={"help": "Run this one cell here and write its record (a --emit_jobs line); a done cell is "
                          "skipped, an unfinished run folder resumes from its last checkpoint."},
    )  # fmt: skip


def check_job_args(args) -> None:
    """Refuse a bad or contradictory job flag (UsageError) before anything runs; in place on compare's resolved
    ``args``: ``args.jobs_dir`` becomes a Path, ``args.cluster_settings`` the SLURM settings (file, then flags)."""
    verbs = [f"--{name}" for name in ("status", "emit_jobs", "cell") if getattr(args, name)]
    if len(verbs) > 1:
        raise UsageError(f"{' and '.join(verbs)}: each is a command of its own; give one.")
    if verbs and (args.aggregate or args.only_probes):
        what = "--aggregate" if args.aggregate else "--only_probes"
        raise UsageError(f"{verbs[0]} with {what}: {what} runs no cell. Drop one of them.")
    if args.executor != "pool":
        if args.aggregate or args.only_probes:
            raise UsageError(f"--executor {args.executor} with --{'aggregate' if args.aggregate else 'only_probes'}: "
                             "it runs no cell, so there is nothing to submit. Drop --executor.")  # fmt: skip
        if args.emit_jobs or args.cell:
            raise UsageError(f"--executor {args.executor} with {verbs[0]}: {verbs[0]} hands the cells to another "
                             "scheduler or runs one here. Drop --executor.")  # fmt: skip
        if importlib.util.find_spec("submitit") is None:
            raise UsageError(f"--executor {args.executor} needs submitit, which is not installed: "
                             "pip install 'llava_df[cluster]' (or pip install submitit).")  # fmt: skip
    if args.executor == "slurm" and args.workers != 1:
        raise UsageError(f"--workers {args.workers} with --executor slurm: SLURM runs the array's cells as it can. "
                         "Cap them with --array_parallelism instead.")  # fmt: skip
    if args.no_wait and args.executor != "slurm":
        raise UsageError(f"--no_wait with --executor {args.executor}: only SLURM jobs go on without this command "
                         "(the pool and local jobs run here). Use --executor slurm, or drop --no_wait.")  # fmt: skip
    given = {name: getattr(args, name) for name in CLUSTER_FLAGS if getattr(args, name) is not None}
    settings = _read_cluster(Path(args.cluster)) if args.cluster else {}
    settings.update(given)
    slurm_only = sorted(set(settings) - {"time_min"}) + (["cluster"] if args.cluster else [])
    if args.executor != "slurm" and slurm_only and not args.status:
        raise UsageError(f"--{slurm_only[0]} is a SLURM setting; --executor is {args.executor}. Add --executor "
                         "slurm, or drop it.")  # fmt: skip
    for name, low in (("time_min", 1), ("gpus_per_task", 0), ("cpus_per_task", 1), ("mem_gb", 0.001),
                      ("array_parallelism", 1)):  # fmt: skip
        value = settings.get(name)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or value < low
        ):
            raise UsageError(f"{name} {value!r}: expected a number >= {low}.")
    if args.executor == "slurm" and settings.get("time_min") is None:
        raise UsageError("--executor slurm: no time limit per cell. Pass --time_min (e.g. 240 for a 7B cell of a "
                         "few hours), or time_min in the --cluster file; a cell that outlasts it resumes in a "
                         "requeued job.")  # fmt: skip
    if args.executor == "slurm" and args.run_stage1:
        raise UsageError("--stage1 alone with --executor slurm would train stage 1 on this (submitting) machine. "
                         "Train it where the GPUs are first (`srun --gpus-per-task 1 llava-df compare <these flags> "
                         "--stage1 --emit_jobs cells.txt` trains it, then writes each cell's command), or pass "
                         "trained files: --stage1 name=RUNS_DIR/stage1/name/mm_projector.safetensors,...")  # fmt: skip
    args.cluster_settings = settings
    args.jobs_dir = Path(args.jobs_dir) if args.jobs_dir else Path(args.runs_dir) / "jobs" / args.mode
    if args.cell:
        valid = [
            cell.name if variant is None else f"{variant[0]}/{cell.name}"
            for variant in args.variants
            for cell in grid(args.projectors, args.strategies, args.seeds)
        ]
        if args.cell not in valid:
            raise UsageError(f"--cell {args.cell!r} is not a cell of this sweep; its cells: {', '.join(valid[:6])}"
                             f"{', ...' if len(valid) > 6 else ''} (--emit_jobs writes each one's command).")  # fmt: skip


def _read_cluster(path: Path) -> dict:
    """The --cluster YAML: the keys of CLUSTER_FLAGS and CLUSTER_ONLY, each of its type."""
    try:
        values = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise UsageError(f"--cluster {path}: unreadable ({type(err).__name__}: {err}). Pass a YAML of SLURM "
                         "settings, e.g. `partition: gpu`.") from None  # fmt: skip
    if not isinstance(values, dict):
        raise UsageError(f"--cluster {path}: expected a mapping of settings (partition: gpu), got "
                         f"{type(values).__name__}.")  # fmt: skip
    unknown = sorted(set(values) - set(CLUSTER_FLAGS) - set(CLUSTER_ONLY))
    if unknown:
        raise UsageError(f"--cluster {path}: unknown key {unknown[0]!r}; valid: "
                         f"{', '.join(CLUSTER_FLAGS + CLUSTER_ONLY)}.")  # fmt: skip
    for name in ("partition", "account", "qos"):
        if name in values and not isinstance(values[name], str):
            raise UsageError(f"--cluster {path}: {name} {values[name]!r}: expected text.")
    setup = values.get("setup", [])
    if not (isinstance(setup, list) and all(isinstance(line, str) for line in setup)):
        raise UsageError(
            f"--cluster {path}: setup: expected a list of shell lines, e.g. ['module load cuda']."
        )
    sbatch = values.get("sbatch", {})
    if not (isinstance(sbatch, dict) and all(isinstance(v, str | int | float) for v in sbatch.values())):
        raise UsageError(
            f"--cluster {path}: sbatch: expected a mapping of sbatch options, e.g. {{constraint: a100}}."
        )
    return values
