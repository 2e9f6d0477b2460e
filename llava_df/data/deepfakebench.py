"""DeepfakeBench's preprocessed release read as it is: its dataset JSON, frame pick, label names and traps.

How to call (``load_splits`` does, for ``--data_path <DeepfakeBench JSON> --rgb_root <its rgb/ folder>``)::

    records, summary = load_deepfakebench_records("dataset_json/FaceForensics++.json", rgb_root="datasets/rgb")
    records, summary = load_deepfakebench_records("dataset_json/Celeb-DF-v2.json", rgb_root=..., splits=("test",))

The JSON (``preprocessing/rearrange.py``): ``{dataset: {label_name: {split: [compression:] {video:
{"label", "frames"[, "masks"]}}}}}``. Read as DeepfakeBench's ``abstract_dataset.py`` reads it:

- the class is ``label_dict[video["label"]]`` (its train/test_config.yaml, copied in LABEL_DICT);
  a label name it does not know is an error, as there;
- FF++ datasets (FF_FAMILY) keep a compression level under each split (``--compression``);
- frames are sorted by the number in their file name, and with more frames than ``frame_num``
  it takes the FIRST ``frame_num`` (its even-spacing code has step ``frame_num // frame_num`` = 1);
- paths may use backslashes and are relative to its ``rgb_dir`` (``--rgb_root``); an absolute
  path from another machine is found under ``--rgb_root`` by its trailing components.

Its traps, each refused or named, never read silently:

- Celeb-DF puts every video in ``train``, the 518 test videos included; DFD, UADFV and
  DeeperForensics put their real videos in every split; DFDC puts its training videos in ``val``
  too. Splits that share a video are refused, naming the videos: read such a file as a test set
  only (``llava-df evaluate --test NAME=FILE`` reads its ``test`` split).
- DFDC's ``val`` entry is one video's ``{"label", "frames"}`` written where the split's videos
  belong; it is skipped and named in the summary.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from pathlib import Path

from llava_df.data.dataset import REAL_MANIPULATION, Record
from llava_df.data.images import ImageLoadError, LoadSummary, load_rgb
from llava_df.errors import DataError, DataNotFoundError

# DeepfakeBench training/config/train_config.yaml and test_config.yaml (identical label_dict): name -> is_fake.
LABEL_DICT = {
    "DFD_fake": 1, "DFD_real": 0,
    "FF-SH": 1, "FF-F2F": 1, "FF-DF": 1, "FF-FS": 1, "FF-NT": 1, "FF-FH": 1, "FF-real": 0,
    "CelebDFv1_real": 0, "CelebDFv1_fake": 1, "CelebDFv2_real": 0, "CelebDFv2_fake": 1,
    "DFDCP_Real": 0, "DFDCP_FakeA": 1, "DFDCP_FakeB": 1,
    "DFDC_Fake": 1, "DFDC_Real": 0,
    "DF_fake": 1, "DF_real": 0,
    "UADFV_Fake": 1, "UADFV_Real": 0,
    "roop_Real": 0, "roop_Fake": 1,
}  # fmt: skip
# Datasets whose splits hold compression levels (abstract_dataset.py's list).
FF_FAMILY = ("FF-DF", "FF-F2F", "FF-FS", "FF-NT", "FaceForensics++", "DeepFakeDetection", "FaceShifter")
SPLITS = ("train", "val", "test")
TEST_ONLY = "read it as a test set only: llava-df evaluate --run_dir RUN --test NAME={path} (its test split)"


@functools.lru_cache(maxsize=4)
def _parsed(path: str, stamp: tuple) -> object:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None


def read_json(path: str | os.PathLike) -> object:
    """The parsed file (None when it is not one JSON document), parsed once per version of the file."""
    st = os.stat(path)
    return _parsed(str(path), (st.st_mtime_ns, st.st_size))


def is_deepfakebench_json(path: str | os.PathLike) -> bool:
    """True for ``{dataset: {label_name: {"train"|"val"|"test": ...}}}`` (a LLaVA JSON is a list, JSONL is lines)."""
    path = Path(path)
    if not path.is_file():
        return False
    with open(path, "rb") as f:
        if f.read(64).lstrip()[:1] != b"{":
            return False
    data = read_json(path)
    return (
        isinstance(data, dict)
        and bool(data)
        and all(
            isinstance(labels, dict) and labels
            and all(isinstance(s, dict) and set(s) & set(SPLITS) for s in labels.values())
            for labels in data.values()
        )
    )  # fmt: skip


def frame_pick(frames: Sequence[str], frame_num: int) -> list[str]:
    """DeepfakeBench's pick: sorted by the number in the file name, then the first ``frame_num`` when there are more."""
    sep = "\\" if frames and "\\" in frames[0] else "/"
    try:
        ordered = sorted(frames, key=lambda x: int(x.split(sep)[-1].split(".")[0]))
    except ValueError as err:
        raise DataError(
            f"frame names must be numbers (000.png ...), as DeepfakeBench sorts them: {err}"
        ) from None
    return ordered[:frame_num] if frame_num < len(ordered) else ordered


class _Resolver:
    """DeepfakeBench frame paths -> files under ``rgb_root``: backslashes read as separators, leading components
    that are not under ``rgb_root`` (another machine's prefix) cut once per prefix."""

    def __init__(self, rgb_root: Path | None):
        self.root = rgb_root
        self.cut: dict[tuple[str, ...], int] = {}

    def __call__(self, raw: str) -> Path | None:
        posix = raw.replace("\\", "/")
        if Path(posix).is_absolute() and Path(posix).is_file():
            return Path(posix)
        parts = [p for p in posix.split("/") if p not in ("", ".")]
        if self.root is None:
            return Path(posix) if Path(posix).is_file() else None
        for prefix, k in self.cut.items():
            if tuple(parts[:k]) == prefix and (hit := self.root.joinpath(*parts[k:])).is_file():
                return hit
        for k in range(len(parts)):
            if (hit := self.root.joinpath(*parts[k:])).is_file():
                self.cut[tuple(parts[:k])] = k
                return hit
        return None


def _videos_of(
    entry: object, dataset: str, compression: str, where: str, summary: LoadSummary
) -> dict | None:
    """The {video: info} of one split entry, or None (named in ``summary``) when it is DFDC's malformed kind."""
    if isinstance(entry, dict) and isinstance(entry.get("frames"), list) and "label" in entry:
        summary.skip(where, "malformed in DeepfakeBench's JSON: one video's {label, frames} written where the split's "
                            "videos belong (its rearrange.py does this to DFDC's val); not read")  # fmt: skip
        return None
    if dataset in FF_FAMILY:
        if not isinstance(entry, dict) or compression not in entry:
            levels = sorted(entry) if isinstance(entry, dict) else []
            raise DataError(
                f"{where}: no compression level {compression!r} (has {levels}). Pass --compression one of them."
            )
        entry = entry[compression]
    if not isinstance(entry, dict):
        raise DataError(f"{where}: expected {{video: {{label, frames}}}}, got {type(entry).__name__}.")
    return entry


def load_deepfakebench_records(
    path: str | os.PathLike,
    rgb_root: str | os.PathLike | None = None,
    *,
    splits: Sequence[str] = SPLITS,
    compression: str = "c23",
    frame_num: int = 32,
    validate: bool = True,
) -> tuple[list[Record], LoadSummary]:
    """Records (one per picked frame: is_fake, manipulation = label name, split, path, group) of ``splits``.

    ``group`` is ``<dataset>:<label name>:<video>`` (DeepfakeBench's unique video name, with the dataset).
    Videos found in two of ``splits`` are refused by name (DataError).
    """
    path = Path(path)
    if not is_deepfakebench_json(path):
        raise DataNotFoundError(
            f"{path}: not a DeepfakeBench dataset JSON ({{dataset: {{label: {{split: ...}}}}}})."
        )
    if rgb_root is not None and not Path(rgb_root).is_dir():
        raise DataNotFoundError(
            f"--rgb_root {rgb_root}: no such folder. Pass DeepfakeBench's rgb/ folder (its rgb_dir)."
        )
    if frame_num < 1:
        raise DataError(f"--frame_num {frame_num}: expected an integer >= 1 (DeepfakeBench: 32).")
    resolve = _Resolver(Path(rgb_root) if rgb_root is not None else None)
    summary = LoadSummary(source=f"DeepfakeBench JSON {path}")
    records: list[Record] = []
    where_is: dict[str, list[str]] = {}  # group -> splits it appears in
    for dataset, labels in read_json(path).items():
        for label_key, by_split in labels.items():
            for split in splits:
                where = f"{path} {dataset}/{label_key}/{split}"
                if split not in by_split:
                    continue
                videos = _videos_of(by_split[split], dataset, compression, where, summary)
                for video, info in (videos or {}).items():
                    records += _video_records(
                        dataset, video, info, split, f"{where}/{video}", frame_num, resolve, summary
                    )
                    if isinstance(info, dict) and "label" in info:
                        where_is.setdefault(f"{dataset}:{info['label']}:{video}", []).append(split)
    shared = {g: s for g, s in where_is.items() if len(s) > 1}
    if shared:
        named = ", ".join(f"{g} ({'+'.join(s)})" for g, s in list(shared.items())[:5])
        raise DataError(
            f"{path}: {len(shared)} videos are in more than one split (e.g. {named}): a model would be tested or "
            f"selected on videos it trained on (DeepfakeBench's Celeb-DF, DFD, UADFV, DeeperForensics and DFDC files do "
            f"this). Train on another source and {TEST_ONLY.format(path=path)}."
        )
    if validate:
        kept = []
        for r in records:
            try:
                load_rgb(r.path)
                kept.append(r)
            except ImageLoadError as err:
                summary.skip(r.path, err.reason)
        records = kept
    summary.loaded = len(records)
    summary.log()
    if not records:
        hint = (
            f" under --rgb_root {rgb_root}"
            if rgb_root is not None
            else "; pass --rgb_root, DeepfakeBench's rgb/ folder"
        )
        raise DataError(f"{path}: no frame of splits {list(splits)} found{hint}. {summary.line()}")
    return records, summary


def _video_records(dataset, video, info, split, where, frame_num, resolve, summary) -> list[Record]:
    if not isinstance(info, dict) or "label" not in info or not isinstance(info.get("frames"), list):
        raise DataError(f'{where}: expected {{"label": ..., "frames": [...]}}, got {str(info)[:80]!r}.')
    label = info["label"]
    if label not in LABEL_DICT:
        raise DataError(
            f"{where}: label {label!r} is not in DeepfakeBench's label_dict ({', '.join(LABEL_DICT)}); add it there "
            "and here (llava_df.data.deepfakebench.LABEL_DICT), or fix the JSON."
        )
    if not info["frames"]:
        summary.skip(where, "no frames listed")
        return []
    is_fake = LABEL_DICT[label]
    group = f"{dataset}:{label}:{video}"
    out = []
    for raw in frame_pick(info["frames"], frame_num):
        file = resolve(raw)
        if file is None:
            summary.skip(f"{where} {raw}", "frame file not found under --rgb_root")
            continue
        out.append(Record(
            id=f"{group}/{Path(file).name}", is_fake=is_fake, manipulation=label if is_fake else REAL_MANIPULATION,
            split=split, path=str(file), group=group,
        ))  # fmt: skip
    return out
