"""Stage 1 for the sweep: align each projector on captions before its stage-2 runs (``--stage1``).

How to call (compare_projectors does)::

    files = run_stage1(projectors, runs_dir, train_flags, captions=None, n_captions=1000)
    # {projector: runs_dir/stage1/<projector>/mm_projector.safetensors}
    files = run_stage1(projectors, runs_dir, train_flags, seeds=[0, 1, 2])      # --stage1_per_seed
    # {projector: {seed: runs_dir/stage1/<projector>__seed<seed>/mm_projector.safetensors}}

Each projector trains with the stage-1 recipe (``configs/stage1_tiny.yaml``, or the preset's own:
``stage1_recipe_for``) plus the sweep's own training flags (same model, bits; not its --learning_rate or
--answer_head, which set the detection runs), on ``captions``
(LLaVA-Pretrain format) or on synthetic captions written once to ``runs_dir/stage1/captions``
(at the recipe's --image_size). With ``seeds``, each projector is aligned once per seed (the
run's --seed draws its fresh weights and shuffles the captions), and a cell starts from its own
seed's file: no draw is shared between seeds, on either side of a comparison. A projector whose
stage-1 run finished with the same arguments, captions and code is not trained again
(``stage1_key.txt`` holds ``record.cell_key``). With ``workers`` > 1 the runs share the sweep's worker
pool, that many at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from pathlib import Path

from llava_df.data.captions import write_captions
from llava_df.errors import RunError
from llava_df.spec.resolve import parse_spec
from llava_df.sweep.cells import STAGE1_RECIPE, stage1_recipe_for
from llava_df.sweep.pool import run_pool
from llava_df.sweep.record import cell_key, code_fingerprint
from llava_df.train.workflow import train

logger = logging.getLogger(__name__)
# the recipes live with the sweep's cells, where the flag checks (no torch) find them too
__all__ = ["STAGE1_RECIPE", "run_stage1", "stage1_argv", "stage1_recipe_for"]


# The sweep's flags that set its detection runs, not the model being aligned: stage 1 keeps its recipe's own
# (LLaVA's 1e-3 rate; a caption task has no Real/Fake head). Passed on, they retrained stage 1 under each head
# or rate of a study, over the files its other cells had started from.
STAGE2_ONLY_FLAGS = ("--learning_rate", "--answer_head")


def stage1_flags(train_flags: list[str]) -> list[str]:
    """``train_flags`` without STAGE2_ONLY_FLAGS (as ``--flag value`` or ``--flag=value``)."""
    kept, skip = [], False
    for token in train_flags:
        name = (
            token.split("=", 1)[0].replace("-", "_") if token.startswith("--") else None
        )  # --learning-rate too
        if skip:
            skip = False
        elif name in {f.replace("-", "_") for f in STAGE2_ONLY_FLAGS}:
            skip = "=" not in token
        else:
            kept.append(token)
    return kept


def stage1_argv(
    projector: str, out: Path, captions: Path, train_flags: list[str], recipe: Path = STAGE1_RECIPE
) -> list[str]:
    return [
        "--config", str(recipe), *stage1_flags(train_flags),
        "--mm_projector_type", projector,
        "--data_path", str(captions),
        "--output_dir", str(out),
        "--disable_tqdm", "True",
    ]  # fmt: skip


def _captions(runs_dir: Path, captions: str | None, n: int, image_size: int = 64) -> Path:
    if captions:
        return Path(captions)
    folder = "captions" if image_size == 64 else f"captions_{image_size}px"  # 64: the tiny preset's
    path = runs_dir / "stage1" / folder / "captions.json"
    if not path.is_file():
        write_captions(path.parent, n=n, seed=0, image_size=image_size)
    return path


def run_stage1(
    projectors: list[str],
    runs_dir: Path,
    train_flags: list[str],
    captions: str | None = None,
    n_captions: int = 1000,
    seeds: list[int] | None = None,
    recipe: Path = STAGE1_RECIPE,
    image_size: int = 64,
    workers: int = 1,
) -> dict[str, str] | dict[str, dict[int, str]]:
    """Train (or reuse) one stage-1 projector per name (per name and seed with ``seeds``); returns
    {name: mm_projector.safetensors path} ({name: {seed: path}} with ``seeds``). ``image_size``: the
    synthetic captions' (the sweep's --image_size). ``workers`` > 1: the runs go through the sweep's
    worker pool (sweep/pool.py), that many at once; then every file is read back as up to date."""

    data = _captions(runs_dir, captions, n_captions, image_size=image_size)
    data_sha = hashlib.sha256(data.read_bytes()).hexdigest()
    fingerprint = code_fingerprint()
    runs = [
        (name, seed, runs_dir / "stage1" / (name if seed is None else f"{name}__seed{seed}"),
         train_flags if seed is None else [*train_flags, "--seed", str(seed)])
        for name in projectors
        for seed in (seeds if seeds is not None else [None])
    ]  # fmt: skip
    if workers > 1 and len(runs) > 1:
        jobs = [(f"stage1 {out.name}", (name, str(out), str(data), data_sha, flags, str(recipe), fingerprint))
                for name, _, out, flags in runs]  # fmt: skip
        failures = run_pool(_stage1_job, jobs, workers)
        if failures:
            raise RunError(f"stage 1 failed: {'; '.join(failures)} (logs in {runs_dir / 'stage1'}). Fix the cause and "
                           "run the same command again (finished stage-1 runs are kept).")  # fmt: skip
    files: dict = {}
    for name, seed, out, flags in runs:  # the pool's runs are up to date now; without a pool they train here
        path = _stage1_run(name, out, data, data_sha, flags, recipe, fingerprint)
        if seed is None:
            files[name] = path
        else:
            files.setdefault(name, {})[seed] = path
    return files


def _stage1_job(
    name: str, out: str, data: str, data_sha: str, flags: list[str], recipe: str, fingerprint: str
) -> dict:
    """One stage-1 run in a pool worker; what the pool's progress bar shows."""
    _stage1_run(name, Path(out), Path(data), data_sha, flags, Path(recipe), fingerprint)
    return {"cell": Path(out).name, "auc": float("nan")}


def _stage1_run(
    name: str, out: Path, data: Path, data_sha: str, train_flags: list[str], recipe: Path, fingerprint: str
) -> str:
    """One stage-1 run (or the up-to-date one already there); its mm_projector.safetensors path."""
    argv = stage1_argv(name, out, data, train_flags, recipe)
    spec = parse_spec(argv)
    if spec.data.task != "caption":
        raise RunError(f"stage 1 of {name}: the recipe {recipe} must set version: plain (caption task).")
    config = spec.to_json()
    config["data"]["data_sha256"] = data_sha  # new captions at the same path are a new stage 1
    key = cell_key(config, fingerprint)  # the sweep cells' rule: same settings and code, same run
    weights = out / "mm_projector.safetensors"
    key_file = out / "stage1_key.txt"
    if weights.is_file() and key_file.is_file() and key_file.read_text().strip() == key:
        logger.warning("stage 1 of %s: up to date (%s)", out.name, weights)
        return str(weights)
    spec = parse_spec([*argv, "--overwrite_output_dir", "True"])
    out.parent.mkdir(parents=True, exist_ok=True)
    with (
        open(out.parent / f"{out.name}.log", "w") as log,
        contextlib.redirect_stdout(log),
        contextlib.redirect_stderr(log),
    ):
        results = train(spec)
    key_file.write_text(key + "\n")
    path = results["paths"]["mm_projector"][0]
    print(
        f"stage 1 of {out.name}: val loss {results['best'] and results['best'].get('val_loss')}, test loss "
        f"{results['test'].get('loss'):.3f} -> {path}"
    )
    return path
