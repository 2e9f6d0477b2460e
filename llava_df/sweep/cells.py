"""What the sweep runs: one cell per (projector, strategy, seed), with its flags and its name.

The recipe (``configs/sweep_tiny.yaml`` by default, plus the user's extra flags) is the same for
every cell; a cell only adds its projector, strategy and seed. Names are stable and readable:
``kan_h64_g3_k2__lora__seed1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llava_df.spec.strategy import STRATEGIES

PACKAGE = Path(__file__).resolve().parent.parent
DEFAULT_RECIPE = PACKAGE / "configs" / "sweep_tiny.yaml"
STAGE1_RECIPE = PACKAGE / "configs" / "stage1_tiny.yaml"
REFERENCE = "mlp2x_gelu"
DEFAULT_PROJECTORS = ("mlp2x_gelu", "kan_h256_g5_k3", "kan_h128_g5_k3", "kan_h64_g5_k3", "kan_h64_g3_k2", "kan_light", "linear")  # fmt: skip
DEFAULT_STRATEGIES = tuple(STRATEGIES)
DEFAULT_SEEDS = (0, 1, 2)
# Rows beside the comparison, never in its tests: the stage-1 model asked the detection question before
# any detection training, in two forms (sweep/zeroshot.py).
ZERO_SHOT_STRATEGIES = ("zero_shot", "zero_shot_yes_no")
QUICK = {
    "projectors": ("mlp2x_gelu", "kan_h64_g3_k2"),
    "strategies": ("projector_only", "lora"),
    "seeds": (0,),
    # small data and one short epoch: a smoke run of the whole pipeline in about a minute
    "flags": ["--synthetic_n", "120", "--split_fractions", "0.5,0.25,0.25", "--max_steps", "3",
              "--per_device_train_batch_size", "8", "--eval_strategy", "no"],
}  # fmt: skip
# unfreeze_early trains the first N decoder layers in full; the tiny LLM has 4, so 1 is "early".
STRATEGY_FLAGS = {
    "projector_only": ["--strategy", "projector_only"],
    "lora": ["--strategy", "lora"],
    "unfreeze_early": ["--strategy", "unfreeze_early", "--num_unfreeze_early_layers", "1"],
}


def stage1_recipe_for(model_name_or_path: str) -> Path:
    """The stage-1 recipe of a preset (configs/stage1_<preset>.yaml: tiny, smol), else the tiny one's."""
    own = PACKAGE / "configs" / f"stage1_{model_name_or_path}.yaml"
    return own if model_name_or_path.isidentifier() and own.is_file() else STAGE1_RECIPE


@dataclass(frozen=True)
class Cell:
    projector: str
    strategy: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.projector}__{self.strategy}__seed{self.seed}"

    def flags(self, runs_dir: Path, stage1: dict[str, str | dict[int, str]] | None = None) -> list[str]:
        flags = [
            "--mm_projector_type",
            self.projector,
            *STRATEGY_FLAGS[self.strategy],
            "--seed",
            str(self.seed),
        ]
        start = (stage1 or {}).get(self.projector)  # one file, or one per seed (--stage1_per_seed)
        if isinstance(start, dict):
            start = start.get(self.seed)
        if start:
            flags += ["--pretrain_mm_mlp_adapter", start]
        return [*flags, "--output_dir", str(runs_dir / self.name), "--overwrite_output_dir", "True"]


def grid(projectors, strategies, seeds) -> list[Cell]:
    """Every cell, grouped by seed first, so a partial sweep already has every projector at seed 0."""
    return [Cell(p, s, seed) for seed in seeds for s in strategies for p in projectors]
