"""Stage 1 for the sweep: align each projector on captions before its stage-2 runs (``--stage1``).

How to call (compare_projectors does)::

    files = run_stage1(projectors, runs_dir, train_flags, captions=None, n_captions=1000)
    # {projector: runs_dir/stage1/<projector>/mm_projector.safetensors}

Each projector trains with ``configs/stage1_tiny.yaml`` plus the sweep's own training flags
(same model, bits), on ``captions`` (LLaVA-Pretrain format) or on synthetic captions written
once to ``runs_dir/stage1/captions``. A projector whose stage-1 run finished with the same
arguments, captions and code is not trained again (``stage1_key.txt`` holds ``record.cell_key``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from pathlib import Path

from llava_df.data.captions import write_captions
from llava_df.errors import RunError
from llava_df.spec.resolve import parse_spec
from llava_df.sweep.record import cell_key, code_fingerprint
from llava_df.train.workflow import train

logger = logging.getLogger(__name__)
STAGE1_RECIPE = Path(__file__).resolve().parents[1] / "configs" / "stage1_tiny.yaml"


def stage1_argv(
    projector: str, out: Path, captions: Path, train_flags: list[str], recipe: Path = STAGE1_RECIPE
) -> list[str]:
    return [
        "--config", str(recipe), *train_flags,
        "--mm_projector_type", projector,
        "--data_path", str(captions),
        "--output_dir", str(out),
        "--disable_tqdm", "True",
    ]  # fmt: skip


def _captions(runs_dir: Path, captions: str | None, n: int) -> Path:
    if captions:
        return Path(captions)
    path = runs_dir / "stage1" / "captions" / "captions.json"
    if not path.is_file():
        write_captions(path.parent, n=n, seed=0)
    return path


def run_stage1(
    projectors: list[str],
    runs_dir: Path,
    train_flags: list[str],
    captions: str | None = None,
    n_captions: int = 1000,
) -> dict[str, str]:
    """Train (or reuse) one stage-1 projector per name; returns {name: mm_projector.safetensors path}."""

    data = _captions(runs_dir, captions, n_captions)
    data_sha = hashlib.sha256(data.read_bytes()).hexdigest()
    fingerprint = code_fingerprint()
    files = {}
    for name in projectors:
        out = runs_dir / "stage1" / name
        argv = stage1_argv(name, out, data, train_flags)
        spec = parse_spec(argv)
        if spec.data.task != "caption":
            raise RunError(
                f"stage 1 of {name}: the recipe {STAGE1_RECIPE} must set version: plain (caption task)."
            )
        config = spec.to_json()
        config["data"]["data_sha256"] = data_sha  # new captions at the same path are a new stage 1
        key = cell_key(config, fingerprint)  # the sweep cells' rule: same settings and code, same run
        weights = out / "mm_projector.safetensors"
        key_file = out / "stage1_key.txt"
        if weights.is_file() and key_file.is_file() and key_file.read_text().strip() == key:
            files[name] = str(weights)
            logger.warning("stage 1 of %s: up to date (%s)", name, weights)
            continue
        spec = parse_spec([*argv, "--overwrite_output_dir", "True"])
        out.parent.mkdir(parents=True, exist_ok=True)
        with (
            open(out.parent / f"{name}.log", "w") as log,
            contextlib.redirect_stdout(log),
            contextlib.redirect_stderr(log),
        ):
            results = train(spec)
        key_file.write_text(key + "\n")
        files[name] = results["paths"]["mm_projector"][0]
        print(
            f"stage 1 of {name}: val loss {results['best'] and results['best'].get('val_loss')}, test loss "
            f"{results['test'].get('loss'):.3f} -> {files[name]}"
        )
    return files
