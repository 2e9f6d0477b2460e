"""Real data from an image folder, read with ``datasets``' imagefolder.

Accepted layouts under ``data_dir`` (what imagefolder understands):

- ``real/`` and ``fake/`` class folders (or synonyms, see labels.LABEL_STRINGS), optionally
  inside ``train/``, ``val|validation|valid|dev/``, ``test/`` split folders;
- a ``metadata.csv`` (or .jsonl) with ``file_name`` and ``label`` (real/fake strings) or
  ``is_fake`` (0/1), and optionally ``split``, ``manipulation``, ``group``, ``id``. The folders
  written by ``python -m llava_df.data.synthetic`` and ``llava_df.data.sbi`` are of this kind.

Labels are converted from class *names* (never from datasets' alphabetical indices); splits come
from split folders or the ``split`` column, else the caller splits by seed. Every image is
decoded once here: unreadable files are skipped and named in the returned LoadSummary.
Frames of one video should share a ``group`` in metadata.csv, so no video straddles splits.

>>> records, summary = load_folder_records("data/ffpp_frames")
"""

from __future__ import annotations

import logging
from pathlib import Path

import datasets

from .dataset import REAL_MANIPULATION, UNKNOWN_MANIPULATION, Record, normalize_split
from .images import ImageLoadError, LoadSummary, load_rgb
from .labels import LABEL_STRINGS, is_fake_from_class_label, parse_is_fake, parse_label

logger = logging.getLogger(__name__)

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".jfif", ".jpe"}
_METADATA = ("metadata.csv", "metadata.jsonl", "metadata.parquet")


def _check_layout(root: Path) -> None:
    """Clear errors for what imagefolder would mis-read silently."""
    if not root.is_dir():
        raise FileNotFoundError(
            f"data_dir {str(root)!r} does not exist or is not a folder. Expected real/ and fake/ subfolders or a "
            "metadata.csv; omit --data_dir to use the synthetic benchmark."
        )
    if any((root / m).is_file() for m in _METADATA):
        return
    # An empty class folder makes imagefolder see a single class and silently drop all labels.
    for cls_dir in [p for p in root.iterdir() if p.is_dir()] + [
        p for d in root.iterdir() if d.is_dir() for p in d.iterdir() if p.is_dir()
    ]:
        if cls_dir.name.lower() in LABEL_STRINGS and not any(
            f.suffix.lower() in _IMAGE_SUFFIXES for f in cls_dir.rglob("*") if f.is_file()
        ):
            raise ValueError(f"Class folder {str(cls_dir)!r} holds no images. Add images to it or remove it.")


def _row_label(row: dict, features: datasets.Features, where: str) -> int:
    if "is_fake" in row and row["is_fake"] is not None:
        return parse_is_fake(row["is_fake"], where=where)
    if "label" not in row:
        raise ValueError(
            f"{where}: no 'label' or 'is_fake' column. Add one (label: real/fake) to metadata.csv."
        )
    if isinstance(features["label"], datasets.ClassLabel):  # from class folder names, sorted
        return is_fake_from_class_label(row["label"], features["label"].names, where=where)
    return parse_label(row["label"], where=where)


def load_folder_records(
    data_dir: str | Path, *, validate: bool = True, cache_dir: str | None = None
) -> tuple[list[Record], LoadSummary]:
    """Records (path, is_fake, manipulation, split or None, group) of every readable image."""
    root = Path(data_dir)
    _check_layout(root)
    try:
        loaded = datasets.load_dataset("imagefolder", data_dir=str(root), cache_dir=cache_dir)
    except (FileNotFoundError, ValueError) as err:  # e.g. no image file at all
        raise ValueError(f"Cannot read {str(root)!r} as an image folder: {err}") from err
    summary = LoadSummary(source=f"image folder {root}")
    split_dirs = len(loaded) > 1 or next(iter(loaded)) != "train"
    records: list[Record] = []
    for split_name, ds in loaded.items():
        ds = ds.cast_column("image", datasets.Image(decode=False))
        features = ds.features
        if "label" not in features and "is_fake" not in features:
            raise ValueError(
                f"{root}: imagefolder found no classes. Put images in real/ and fake/ subfolders (all at the same depth) "
                "or add a metadata.csv with file_name and label columns."
            )
        for i, row in enumerate(ds):
            path = row["image"]["path"]
            where = f"{path} (row {i} of split {split_name!r})"
            is_fake = _row_label(row, features, where)
            split = normalize_split(split_name) if split_dirs else row.get("split")
            if split is not None:
                split = normalize_split(split, where=where)
            manipulation = row.get("manipulation") or (UNKNOWN_MANIPULATION if is_fake else REAL_MANIPULATION)
            rel = Path(path).resolve().relative_to(root.resolve()).as_posix()
            record = Record(
                id=str(row.get("id") or rel),
                is_fake=is_fake,
                manipulation=str(manipulation),
                split=split,
                path=path,
            )
            record.group = None if row.get("group") is None else str(row["group"])
            if validate:
                try:
                    load_rgb(path)
                except ImageLoadError as err:
                    summary.skip(path, err.reason)
                    continue
            records.append(record)
    summary.loaded = len(records)
    summary.log()
    if not records:
        raise ValueError(f"No readable image in {str(root)!r}. {summary.line()}")
    return records, summary
