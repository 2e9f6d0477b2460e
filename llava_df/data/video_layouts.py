"""The raw video datasets as their owners ship them: which files, which label, which official split.

How to call (``llava-df data extract`` does)::

    videos, notes = list_videos("ffpp", Path("FaceForensics++"), compression="c23")
    videos[0].group        # "ffpp:Deepfakes:000_003": <dataset>:<method>:<video>, one per video
    videos[0].sub          # "manipulated_sequences/Deepfakes/c23": DeepfakeBench's folder, frames/ go under it

Layouts (each checked against the owners' releases and DeepfakeBench's preprocessing/rearrange.py):

- ``ffpp``: ``original_sequences/youtube/<comp>/videos/*.mp4`` (real) and
  ``manipulated_sequences/<Method>/<comp>/videos/*.mp4``; the official split is FaceForensics'
  ``train.json``, ``val.json``, ``test.json`` (in ``--splits``, else the root or ``root/splits``):
  lists of id pairs, ``[a, b]`` putting ``a``, ``b``, ``a_b`` and ``b_a`` in that split.
- ``celebdf``: ``Celeb-real/``, ``YouTube-real/``, ``Celeb-synthesis/`` (videos anywhere below) and
  ``List_of_testing_videos.txt``: 518 lines ``1|0 <folder>/<name>.mp4`` (1 = real) that are the
  test split; every other video is train (the caller cuts val from it, by video).
- ``dfdc``: training parts ``dfdc_train_part_*/metadata.json`` (``label`` REAL/FAKE,
  ``original``) and the test set ``test/labels.csv`` (``filename``, ``label`` 1 = fake); parts
  are train, test/ is test.
- ``videos``: your own ``real/`` and ``fake/`` folders (``fake/<method>/`` names the method); no split.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llava_df.data.dataset import REAL_MANIPULATION
from llava_df.data.extract_args import FFPP_METHODS
from llava_df.data.labels import LABEL_STRINGS
from llava_df.data.video_frames import VIDEO_SUFFIXES
from llava_df.errors import DataError, DataNotFoundError

CELEBDF_FOLDERS = {"Celeb-real": 0, "YouTube-real": 0, "Celeb-synthesis": 1}
# The folder each dataset's tree starts with under --out: the names DeepfakeBench's rgb/ uses.
OUT_NAMES = {"ffpp": "FaceForensics++", "celebdf": "Celeb-DF-v2", "dfdc": "DFDC"}


@dataclass(frozen=True)
class Video:
    """One video file and what its dataset says about it."""

    path: Path
    dataset: str  # ffpp, celebdf, dfdc or the folder name of your own videos
    method: str  # the fake's manipulation, or the real video's source folder (youtube, Celeb-real...)
    name: str  # the file's stem: DeepfakeBench's frame folder name
    is_fake: int
    split: str | None  # the official split, None when the dataset has none
    sub: str  # the folder (relative to the dataset's output) whose frames/ holds this video's frames

    @property
    def group(self) -> str:
        """``<dataset>:<method>:<video>``: frames of one video never straddle splits, and are one video in metrics."""
        return f"{self.dataset}:{self.method}:{self.name}"

    @property
    def manipulation(self) -> str:
        return self.method if self.is_fake else REAL_MANIPULATION


def _videos_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise DataNotFoundError(f"{path} does not exist: expected {what}.")
    return path


# ---- FaceForensics++ ------------------------------------------------------------------------
def ffpp_splits(split_dir: Path) -> dict[str, str]:
    """{video name: split} from FaceForensics' train/val/test.json id pairs (a, b, a_b, b_a per pair)."""
    out: dict[str, str] = {}
    for split in ("train", "val", "test"):
        path = _need(
            split_dir / f"{split}.json",
            "FaceForensics' official split files train.json, val.json, test.json (lists of id pairs, from the "
            "FaceForensics repository's dataset/splits/); pass their folder with --splits",
        )
        try:
            pairs = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{err.lineno}: invalid JSON ({err.msg}).") from None
        for i, pair in enumerate(pairs):
            if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(v, str) for v in pair)):
                raise DataError(f'{path}[{i}]: {pair!r} is not a pair of video ids like ["953", "974"].')
            a, b = pair
            for name in (a, b, f"{a}_{b}", f"{b}_{a}"):
                if out.get(name, split) != split:
                    raise DataError(
                        f"{path}[{i}]: video {name} is also in the {out[name]} split. Use the official files."
                    )
                out[name] = split
    return out


def _ffpp(
    root: Path, *, compression: str, methods: tuple[str, ...], split_dir: Path | None
) -> tuple[list[Video], list[str]]:
    if split_dir is None:
        split_dir = root if (root / "train.json").is_file() else root / "splits"
    splits = ffpp_splits(split_dir)
    real_dir = _need(
        root / "original_sequences" / "youtube" / compression / "videos",
        f"FaceForensics++'s real videos (original_sequences/youtube/{compression}/videos; --compression picks c23/c40/raw)",
    )
    folders = [("youtube", 0, real_dir, f"original_sequences/youtube/{compression}")]
    for method in methods:
        folder = root / "manipulated_sequences" / method / compression / "videos"
        folders.append((method, 1, _need(folder, f"the {method} videos (--methods names the methods to read)"),
                        f"manipulated_sequences/{method}/{compression}"))  # fmt: skip
    videos, notes = [], []
    for method, is_fake, folder, sub in folders:
        for path in _videos_under(folder):
            split = splits.get(path.stem)
            if split is None:
                notes.append(f"{path}: not in the official split files, not extracted")
                continue
            videos.append(Video(path, "ffpp", method, path.stem, is_fake, split, sub))
    return videos, notes


# ---- Celeb-DF v2 ----------------------------------------------------------------------------
def celebdf_test_list(path: Path) -> dict[str, int]:
    """{"<folder>/<name>": is_fake} of List_of_testing_videos.txt (``1|0 <folder>/<name>.mp4``, 1 = real)."""
    out = {}
    for lineno, line in enumerate(
        _need(path, "Celeb-DF's List_of_testing_videos.txt").read_text().splitlines(), 1
    ):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[0] not in ("0", "1") or "/" not in parts[1]:
            raise DataError(f"{path}:{lineno}: {line!r} is not '1|0 <folder>/<name>.mp4' (1 = real).")
        folder, name = parts[1].split("/", 1)
        if folder not in CELEBDF_FOLDERS:
            raise DataError(f"{path}:{lineno}: folder {folder!r} is none of {sorted(CELEBDF_FOLDERS)}.")
        is_fake = 1 - int(parts[0])
        if is_fake != CELEBDF_FOLDERS[folder]:
            raise DataError(
                f"{path}:{lineno}: {parts[1]} is labelled {'fake' if is_fake else 'real'} but {folder}/ holds "
                f"{'fake' if CELEBDF_FOLDERS[folder] else 'real'} videos. Fix the line (1 = real, 0 = fake)."
            )
        out[f"{folder}/{Path(name).stem}"] = is_fake
    return out


def _celebdf(root: Path, **_) -> tuple[list[Video], list[str]]:
    test = celebdf_test_list(root / "List_of_testing_videos.txt")
    videos = []
    for folder, is_fake in CELEBDF_FOLDERS.items():
        for path in _videos_under(_need(root / folder, f"Celeb-DF's {folder}/ folder of videos")):
            split = "test" if f"{folder}/{path.stem}" in test else "train"
            videos.append(Video(path, "celebdf", folder, path.stem, is_fake, split, folder))
    found = {f"{v.method}/{v.name}" for v in videos}
    missing = sorted(set(test) - found)
    notes = [f"{root / name}.mp4: in List_of_testing_videos.txt but not found" for name in missing]
    return videos, notes


# ---- DFDC -----------------------------------------------------------------------------------
def _dfdc_label(value: str, where: str) -> int:
    if value not in ("REAL", "FAKE"):
        raise DataError(f"{where}: label {value!r} is neither REAL nor FAKE.")
    return int(value == "FAKE")


def _dfdc(root: Path, **_) -> tuple[list[Video], list[str]]:
    videos, notes = [], []
    parts = sorted(p for p in root.iterdir() if p.is_dir() and (p / "metadata.json").is_file())
    for part in parts:
        meta_path = part / "metadata.json"
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as err:
            raise DataError(f"{meta_path}:{err.lineno}: invalid JSON ({err.msg}).") from None
        for path in _videos_under(part):
            entry = meta.get(path.name)
            if entry is None:
                notes.append(f"{path}: not in {meta_path}, not extracted")
                continue
            is_fake = _dfdc_label(entry.get("label"), f"{meta_path} {path.name}")
            method = "DFDC" if is_fake else "real"
            videos.append(Video(path, "dfdc", method, path.stem, is_fake, "train", part.name))
    test = root / "test"
    if (test / "labels.csv").is_file():
        with open(test / "labels.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        if rows and not {"filename", "label"} <= set(rows[0]):
            raise DataError(
                f"{test / 'labels.csv'}: expected columns filename,label (1 = fake); got {list(rows[0])}."
            )
        labels = {}
        for i, row in enumerate(rows, 2):
            if row["label"] not in ("0", "1"):
                raise DataError(
                    f"{test / 'labels.csv'}:{i}: label {row['label']!r} is not 0 (real) or 1 (fake)."
                )
            labels[Path(row["filename"]).stem] = int(row["label"])
        for path in _videos_under(test):
            if path.stem not in labels:
                notes.append(f"{path}: not in {test / 'labels.csv'}, not extracted")
                continue
            is_fake = labels[path.stem]
            videos.append(
                Video(path, "dfdc", "DFDC" if is_fake else "real", path.stem, is_fake, "test", "test")
            )
    if not parts and not (test / "labels.csv").is_file():
        raise DataNotFoundError(
            f"{root}: no dfdc_train_part_*/metadata.json and no test/labels.csv. Pass the folder that holds DFDC's "
            "parts (each with metadata.json) and/or test/ (with labels.csv)."
        )
    return videos, notes


# ---- your own videos ------------------------------------------------------------------------
def _own(root: Path, **_) -> tuple[list[Video], list[str]]:
    videos = []
    classes = [p for p in sorted(root.iterdir()) if p.is_dir() and p.name.lower() in LABEL_STRINGS]
    if not classes:
        raise DataNotFoundError(
            f"{root}: no class folder. Put videos in real/ and fake/ (fake/<method>/ names the method), or pass "
            "--dataset ffpp|celebdf|dfdc for those datasets' own layouts."
        )
    for folder in classes:
        is_fake = LABEL_STRINGS[folder.name.lower()]
        for path in _videos_under(folder):
            rel = path.parent.relative_to(root)
            method = (
                rel.parts[1] if is_fake and len(rel.parts) > 1 else ("unknown" if is_fake else folder.name)
            )
            videos.append(Video(path, root.name, method, path.stem, is_fake, None, rel.as_posix()))
    return videos, []


LAYOUTS: dict[str, Callable[..., tuple[list[Video], list[str]]]] = {
    "ffpp": _ffpp,
    "celebdf": _celebdf,
    "dfdc": _dfdc,
    "videos": _own,
}


def list_videos(
    dataset: str,
    root: Path,
    *,
    compression: str = "c23",
    methods: tuple[str, ...] = FFPP_METHODS,
    split_dir: Path | None = None,
) -> tuple[list[Video], list[str]]:
    """(every video of the dataset with its label, method and split; notes naming files left out and why)."""
    if dataset not in LAYOUTS:
        raise DataError(f"--dataset {dataset!r}: expected one of {', '.join(LAYOUTS)}.")
    root = Path(root)
    if not root.is_dir():
        raise DataNotFoundError(
            f"--root {root}: no such folder. Pass the folder you downloaded the dataset to."
        )
    videos, notes = LAYOUTS[dataset](root, compression=compression, methods=methods, split_dir=split_dir)
    seen: dict[tuple[str, str], Video] = {}
    for v in videos:
        key = (v.sub, v.name)  # one frames/<name>/ folder each
        if key in seen:
            raise DataError(
                f"{v.path} and {seen[key].path} would write the same frames folder {v.sub}/frames/{v.name}/. Rename one."
            )
        seen[key] = v
    if not videos:
        raise DataNotFoundError(
            f"{root}: no video found for --dataset {dataset} ({', '.join(VIDEO_SUFFIXES)})."
        )
    return videos, notes


def out_name(dataset: str, root: Path) -> str:
    """The folder the dataset's tree starts with under --out (DeepfakeBench's names; your folder's own name)."""
    return OUT_NAMES.get(dataset, Path(root).resolve().name)
