"""``llava-df data extract``'s flags: a plain dataclass (no torch, dlib or PyAV at import), so --help is instant."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


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
