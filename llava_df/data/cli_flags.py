"""``llava-df data``'s flags, checked before torch loads (llava_df.data.__main__ writes the data).

How to call::

    kind, args = parse(["synthetic", "--out", "data/synth", "--n", "2000"])   # ("synthetic", SyntheticArguments)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from llava_df.cli_args import parse_verb
from llava_df.data.extract_args import parse_extract
from llava_df.data.manipulations import available_manipulations
from llava_df.errors import UsageError

USAGE = """``llava-df data <what>``: the datasets llava_df generates, written to disk as image folders.

llava-df data synthetic --out data/synth [--n 2000 --seed 0 --difficulty 0.5]   # the benchmark (+ --captions)
llava-df data sbi --real_dir faces/real --out data/sbi                         # self-blended fakes of real faces
llava-df data extract --dataset ffpp --root FaceForensics++ --out data/rgb     # face crops from videos (+ [faces] extra)
"""


@dataclass
class SyntheticArguments:
    """``llava-df data synthetic``'s flags."""

    out: str = field(metadata={"help": "Required: output folder (images/, metadata.csv, benchmark.json)."})
    n: int = field(default=2000, metadata={"help": "Number of images in all splits (half fake)."})
    seed: int = field(default=0, metadata={"help": "Generation and split seed."})
    image_size: int = field(default=64, metadata={"help": "Image side in pixels."})
    difficulty: float = field(default=0.5, metadata={"help": "0 (obvious fakes) .. 1 (subtle)."})
    holdout_manipulation: str | None = field(
        default=None,
        metadata={"help": "Family seen only in test (cross-manipulation protocol); one of "
                          f"{', '.join(available_manipulations())}."},
    )  # fmt: skip
    captions: bool = field(
        default=False,
        metadata={"help": "Write image-caption pairs (LLaVA-Pretrain format: captions.json + images/) for stage 1 "
                          "instead."},
    )  # fmt: skip


@dataclass
class SbiArguments:
    """``llava-df data sbi``'s flags."""

    real_dir: str = field(metadata={"help": "Required: folder of real face crops (searched recursively)."})
    out: str = field(metadata={"help": "Required: output image folder (real/, fake/, metadata.csv)."})
    seed: int = field(default=0, metadata={"help": "Seed of the blends (one stream per source image)."})
    difficulty: float = field(default=0.5, metadata={"help": "0 (obvious blend) .. 1 (subtle)."})
    per_image: int = field(default=1, metadata={"help": "SBI fakes per real image."})


def parse_synthetic(argv: list[str]) -> SyntheticArguments:
    args, _ = parse_verb(
        SyntheticArguments, argv, prog="llava-df data synthetic",
        description="The synthetic benchmark: procedural faces, five fake families, splits by seed.",
    )  # fmt: skip
    if args.holdout_manipulation is not None and args.holdout_manipulation not in available_manipulations():
        raise UsageError(
            f"--holdout_manipulation {args.holdout_manipulation}: expected one of {', '.join(available_manipulations())}."
        )
    return args


def parse_sbi(argv: list[str]) -> SbiArguments:
    args, _ = parse_verb(
        SbiArguments, argv, prog="llava-df data sbi",
        description="Self-blended fakes (SBI, Shiohara & Yamasaki 2022) from a folder of REAL face images only.",
    )  # fmt: skip
    if not Path(args.real_dir).is_dir():
        raise UsageError(f"--real_dir {args.real_dir}: no such folder. Pass a folder of real face crops.")
    if args.per_image < 1:
        raise UsageError(f"--per_image {args.per_image}: expected an integer >= 1.")
    return args


KINDS = {"synthetic": parse_synthetic, "sbi": parse_sbi, "extract": parse_extract}


def parse(argv: list[str]) -> tuple[str, object] | None:
    """(what to write, its flags), every value checked (UsageError); None after printing the usage."""
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE.strip())
        return None
    kind, rest = argv[0], argv[1:]
    if kind not in KINDS:
        raise UsageError(
            f"llava-df data {kind!r}: expected one of {', '.join(KINDS)}. Run `llava-df data --help`."
        )
    return kind, KINDS[kind](rest)
