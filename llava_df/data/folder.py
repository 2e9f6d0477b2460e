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

import csv
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

import datasets

from llava_df.data.dataset import REAL_MANIPULATION, UNKNOWN_MANIPULATION, Record, normalize_split
from llava_df.data.images import ImageLoadError, LoadSummary, load_rgb
from llava_df.data.labels import LABEL_STRINGS, is_fake_from_class_label, parse_is_fake, parse_label
from llava_df.errors import DataError, DataNotFoundError

logger = logging.getLogger(__name__)

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".jfif", ".jpe"}
_METADATA = ("metadata.csv", "metadata.jsonl", "metadata.parquet")


def _check_layout(root: Path) -> None:
    """Clear errors for what imagefolder would mis-read silently."""
    if not root.is_dir():
        raise DataNotFoundError(
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
            raise DataError(f"Class folder {str(cls_dir)!r} holds no images. Add images to it or remove it.")


def _row_label(row: dict, features: datasets.Features, where: str) -> int:
    from_is_fake = None
    if "is_fake" in row and row["is_fake"] is not None:
        from_is_fake = parse_is_fake(row["is_fake"], where=where)
    if "label" not in row or row["label"] is None:
        if from_is_fake is None:
            raise DataError(
                f"{where}: no 'label' or 'is_fake' column. Add one (label: real/fake) to metadata.csv."
            )
        return from_is_fake
    if isinstance(features["label"], datasets.ClassLabel):  # from class folder names, sorted
        from_label = is_fake_from_class_label(row["label"], features["label"].names, where=where)
    else:
        from_label = parse_label(row["label"], where=where)
    if from_is_fake is not None and from_is_fake != from_label:
        raise DataError(
            f"{where}: label {row['label']!r} and is_fake {row['is_fake']!r} disagree. Keep one column, or fix the row."
        )
    return from_label


def _unreadable_names(root: Path) -> list[tuple[Path, str]]:
    """Files imagefolder cannot take: names that are not UTF-8 (it crashes on them) and broken symlinks."""
    bad = []
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            try:
                str(path).encode("utf-8")
            except UnicodeEncodeError:
                bad.append((path, "file name is not valid UTF-8; rename it"))
                continue
            if path.is_symlink() and not path.exists():
                bad.append((path, f"broken symlink to {os.readlink(path)}"))
    return bad


def _clean_view(root: Path, bad: set[Path], view: Path) -> None:
    """A tree of symlinks to every file of ``root`` but ``bad``, for imagefolder to read."""
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            if path in bad:
                continue
            target = view / path.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path.resolve())


def _splits_in_metadata(root: Path) -> bool:
    """True when the root metadata.csv / .jsonl names each image's split (``llava-df data extract`` writes one).

    Folder names must then not split the data again: imagefolder reads a ``test/`` or ``*_train_*``
    folder (DFDC's ``test/``, ``dfdc_train_part_0/``) as a split of its own and leaves the metadata out.
    """
    if (root / "metadata.csv").is_file():
        with open(root / "metadata.csv", newline="", encoding="utf-8") as f:
            return "split" in next(csv.reader(f), [])
    if (root / "metadata.jsonl").is_file():
        with open(root / "metadata.jsonl", encoding="utf-8") as f:
            first = f.readline()
        try:
            return isinstance(row := json.loads(first), dict) and "split" in row
        except ValueError:
            return False
    return False


def _index_key(root: Path) -> str:
    """Content hash of what decides the index: every file's relative name and every metadata file's bytes.

    The imagefolder cache lives under this key, so an edited metadata.csv can never be served from
    a stale cache (datasets alone keys local files on modification times).
    """
    h = hashlib.blake2b(digest_size=12)
    for dirpath, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = Path(dirpath) / name
            h.update(os.fsencode(path.relative_to(root)) + b"\0")
            if name in _METADATA and path.is_file():
                h.update(path.read_bytes())
    return h.hexdigest()


def load_folder_records(
    data_dir: str | Path, *, validate: bool = True, cache_dir: str | None = None
) -> tuple[list[Record], LoadSummary]:
    """Records (path, is_fake, manipulation, split or None, group) of every readable image."""
    root = Path(data_dir)
    _check_layout(root)
    summary = LoadSummary(source=f"image folder {root}")
    bad = _unreadable_names(root)
    for path, reason in bad:
        summary.skip(os.fsdecode(path), reason)
    base = Path(cache_dir or datasets.config.HF_DATASETS_CACHE)  # datasets' own default (HF_HOME aware)
    with tempfile.TemporaryDirectory(prefix="llava_df_view_") as tmp:
        read_root = root
        if bad:  # imagefolder would crash (non-UTF-8) or stop on them: let it read a view without them
            read_root = Path(tmp) / "view"
            _clean_view(root, {p for p, _ in bad}, read_root)
        bars = datasets.is_progress_bar_enabled()
        datasets.disable_progress_bars()  # an index, not a download: no bars between the log lines
        try:
            loaded = datasets.load_dataset(
                "imagefolder",
                data_dir=str(read_root),
                cache_dir=str(base / "llava_df_index" / _index_key(root)),
                # a split column in metadata.csv: one split, the column's (never folder names)
                **({"data_files": {"train": "**"}} if _splits_in_metadata(root) else {}),
            )
        except (FileNotFoundError, ValueError) as err:  # e.g. no image file at all
            raise DataError(f"Cannot read {str(root)!r} as an image folder: {err}") from err
        finally:
            if bars:
                datasets.enable_progress_bars()
        return _records(root, read_root, loaded, summary, validate)


def _records(root: Path, read_root: Path, loaded, summary: LoadSummary, validate: bool):
    split_dirs = len(loaded) > 1 or next(iter(loaded)) != "train"
    records: list[Record] = []
    for split_name, ds in loaded.items():
        ds = ds.cast_column("image", datasets.Image(decode=False))
        features = ds.features
        if "label" not in features and "is_fake" not in features:
            raise DataError(
                f"{root}: imagefolder found no classes. Put images in real/ and fake/ subfolders (all at the same depth) "
                "or add a metadata.csv with file_name and label columns."
            )
        for i, row in enumerate(ds):
            path = row["image"]["path"]
            if read_root != root:  # back from the view to the user's own file
                path = str(root / Path(path).relative_to(read_root))
            where = f"{path} (row {i} of split {split_name!r})"
            is_fake = _row_label(row, features, where)
            split = normalize_split(split_name) if split_dirs else row.get("split")
            if split is not None:
                split = normalize_split(split, where=where)
            manipulation = row.get("manipulation") or (UNKNOWN_MANIPULATION if is_fake else REAL_MANIPULATION)
            rel = Path(os.path.relpath(path, root)).as_posix()
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
        raise DataError(f"No readable image in {str(root)!r}. {summary.line()}")
    return records, summary
