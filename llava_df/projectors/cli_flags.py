"""``llava-df projectors``'s flags, checked before torch loads (llava_df.projectors.__main__ builds the table).

How to call::

    args = parse_args(["--in_dim", "1024", "--out_dim", "4096", "--bench"])   # ProjectorsArguments
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from llava_df.cli_args import parse_verb
from llava_df.errors import UsageError
from llava_df.projectors import resolve
from llava_df.projectors.catalog import GELU_FIT_RANGE

REFERENCE = "mlp2x_gelu"


@dataclass
class ProjectorsArguments:
    """``llava-df projectors``'s flags."""

    in_dim: int = field(default=1024, metadata={"help": "Vision feature width (CLIP ViT-L/14: 1024)."})
    out_dim: int = field(default=4096, metadata={"help": "LLM hidden width (Vicuna/LLaMA-7B: 4096)."})
    also: list[str] = field(
        default_factory=list,
        metadata={"metavar": "NAME", "help": "Extra names beyond the presets, e.g. kan_light_g16."},
    )
    bench: bool = field(
        default=False, metadata={"help": "Also measure fwd+bwd time and bytes saved for backward."}
    )
    tokens: int = field(default=1152, metadata={"help": "Tokens per measured batch (1152 = 2 images x 576)."})
    repeats: int = field(default=5, metadata={"help": "Timed rounds per projector (median reported)."})
    device: str = field(default="cpu", metadata={"help": "Device to measure on: cpu or cuda."})
    dtype: Literal["float32", "bfloat16", "float16"] = field(
        default="float32", metadata={"help": "Parameter and input dtype."}
    )
    seed: int = field(default=0, metadata={"help": "torch.manual_seed before each projector is built."})
    json: Path | None = field(
        default=None, metadata={"metavar": "PATH", "help": "Also write the rows and settings as JSON."}
    )
    argv: list[str] = field(default_factory=list, init=False)  # as given: the --json file records the command
    fit_gelu: bool = field(
        default=False,
        metadata={
            "help": f"Refit kan_light's rational GELU init on {list(GELU_FIT_RANGE)}, print the constants and exit."
        },
    )


def parse_args(argv: list[str]) -> ProjectorsArguments:
    """The flags of ``argv``, every value checked (UsageError) before anything is built."""
    args, _ = parse_verb(
        ProjectorsArguments, argv, prog="llava-df projectors",
        description=f"Table of every projector preset: parameters, forward multiply-adds per token and, with "
        f"--bench, measured forward+backward time and memory saved for backward, each relative to {REFERENCE}.",
    )  # fmt: skip
    args.argv = list(argv)
    for flag in ("in_dim", "out_dim", "tokens", "repeats"):
        if getattr(args, flag) < 1:
            raise UsageError(f"--{flag} {getattr(args, flag)}: expected an integer >= 1.")
    for name in args.also:
        try:
            resolve(name)
        except KeyError as exc:
            raise UsageError(f"--also {name}: {exc.args[0]}") from None
    if not (args.device == "cpu" or args.device == "cuda" or args.device.startswith("cuda:")):
        raise UsageError(f"--device {args.device}: expected cpu, cuda or cuda:N.")
    return args
