"""``llava-df data extract``'s flags: a plain dataclass (no torch, dlib or PyAV at import), so --help is instant."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Literal

from llava_df.cli_args import install_command, parse_verb
from llava_df.data.face_align import faces_available
from llava_df.errors import UsageError

# FaceForensics++'s manipulated_sequences/ methods (llava_df.data.video_layouts reads them): here, so --methods is
# checked before any heavy import.
FFPP_METHODS = (
    "Deepfakes",
    "Face2Face",
    "FaceSwap",
    "NeuralTextures",
)  # DeepfakeBench's FaceForensics++.json
FFPP_ALL_METHODS = (*FFPP_METHODS, "FaceShifter", "DeepFakeDetection")


@dataclass
class ExtractArguments:
    """``llava-df data extract``: face crops from videos, in DeepfakeBench's folder tree, with metadata.csv."""

    dataset: Literal["ffpp", "celebdf", "dfdc", "videos"] = field(
        metadata={
            "help": "Required. The layout of --root: ffpp (FaceForensics++), celebdf (Celeb-DF v2), dfdc (DFDC parts "
            "and/or test/), videos (your own real/ and fake/[<method>/] folders)."
        }
    )
    root: str = field(metadata={"help": "Required. The folder you downloaded the dataset to."})
    out: str = field(
        metadata={
            "help": "Required. Where the crops go: OUT/<FaceForensics++|Celeb-DF-v2|DFDC|root name>/<sub>/frames/"
            "<video>/<frame:03d>.png (DeepfakeBench's rgb/ tree) + metadata.csv; train with --data_dir on that folder."
        }
    )
    num_frames: int = field(
        default=32, metadata={"help": "Frames per video, evenly spaced (DeepfakeBench's np.linspace pick)."}
    )
    crop: Literal["align", "margin"] = field(
        default="align",
        metadata={
            "help": "align: 5 landmarks onto the ArcFace template (DeepfakeBench's); margin: the detector's box "
            "grown by --margin, squared."
        },
    )
    size: int = field(default=256, metadata={"help": "Side of the saved square crop, pixels."})
    scale: float = field(
        default=1.3, metadata={"help": "align: the margin around the template (DeepfakeBench: 1.3)."}
    )
    margin: float = field(
        default=0.3, metadata={"help": "margin: the box grown by this fraction of its side."}
    )
    recheck: bool = field(
        default=True,
        metadata={
            "help": "align: drop a crop in which the detector finds no face again (DeepfakeBench does)."
        },
    )
    compression: Literal["raw", "c23", "c40"] = field(
        default="c23", metadata={"help": "ffpp: the compression folder to read."}
    )
    methods: str = field(
        default="Deepfakes,Face2Face,FaceSwap,NeuralTextures",
        metadata={
            "help": "ffpp: the manipulated_sequences/ methods to read, comma-separated (FaceShifter too)."
        },
    )
    splits: str | None = field(
        default=None,
        metadata={
            "help": "ffpp: the folder of train.json, val.json, test.json (default: --root, else --root/splits)."
        },
    )
    workers: int = field(default=1, metadata={"help": "Videos processed at once, one process each."})


def check_args(args: ExtractArguments) -> None:
    """UsageError for a bad value or a missing extra, before any video is read."""
    if args.num_frames < 1:
        raise UsageError(f"--num_frames {args.num_frames}: expected an integer >= 1 (DeepfakeBench: 32).")
    if args.size < 32:
        raise UsageError(f"--size {args.size}: expected a crop side >= 32 pixels (DeepfakeBench: 256).")
    if args.scale < 1:
        raise UsageError(f"--scale {args.scale}: expected >= 1 (1 = no margin; DeepfakeBench: 1.3).")
    if args.margin < 0:
        raise UsageError(f"--margin {args.margin}: expected a fraction >= 0, e.g. 0.3.")
    if args.workers < 1:
        raise UsageError(f"--workers {args.workers}: expected an integer >= 1.")
    unknown = [m for m in methods_of(args) if m not in FFPP_ALL_METHODS]
    if unknown:
        raise UsageError(
            f"--methods: {', '.join(unknown)} is not a FaceForensics++ method; expected some of {', '.join(FFPP_ALL_METHODS)}."
        )
    if not faces_available() or find_spec("av") is None:
        raise UsageError(
            f"extracting faces needs dlib, its landmark model and PyAV: {install_command('faces')}."
        )


def methods_of(args: ExtractArguments) -> tuple[str, ...]:
    return tuple(m.strip() for m in args.methods.split(",") if m.strip())


def parse_extract(argv: list[str]) -> ExtractArguments:
    """The flags of ``argv``, every value checked (UsageError) before any video is read."""
    args, _ = parse_verb(
        ExtractArguments, argv, prog="llava-df data extract", description=ExtractArguments.__doc__
    )
    if not Path(args.root).is_dir():
        raise UsageError(
            f"--root {args.root}: no such folder. Pass the folder you downloaded the dataset to."
        )
    check_args(args)
    return args
