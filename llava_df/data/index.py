"""Index hygiene across every source: each image once, contradictions are errors, nothing dropped unnamed.

How to call (``load.load_splits`` does)::

    records = dedupe(records, summary)   # same resolved path or same bytes -> one record

- Same image with the same label (by resolved path, or by content hash: a copy under another
  name): the later entry is dropped and named in ``summary`` with the entry it duplicates. A
  copy that sat in another split than the kept one is said so: it was a train/test leak.
- Same image with conflicting labels: DataError naming both entries, since no label can be
  trusted for it.
"""

from __future__ import annotations

import hashlib
import os

from llava_df.data.dataset import Record
from llava_df.data.images import LoadSummary
from llava_df.data.labels import CLASS_NAMES
from llava_df.errors import DataError


def content_hash(record: Record) -> str:
    """blake2b of the file's bytes (or of an in-memory image's pixels); the same image under two names matches."""
    h = hashlib.blake2b(digest_size=16)
    if record.path is not None:
        with open(record.path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    else:
        img = record.image
        h.update(f"{img.mode}{img.size}".encode())
        h.update(img.tobytes())
    return h.hexdigest()


def describe(record: Record) -> str:
    where = record.path if record.path is not None else "in memory"
    split = f", split {record.split}" if record.split else ""
    return f"{record.id!r} ({where}{split})"


def dedupe(records: list[Record], summary: LoadSummary) -> list[Record]:
    """Records with duplicates dropped (named in ``summary``); DataError on a duplicate with another label."""
    seen: dict[tuple[str, str, str | None], Record] = {}
    keep: list[Record] = []
    for r in records:
        # A caption record is a duplicate only with the same caption: one image may carry several.
        keys = [("content", content_hash(r), r.answer)]
        if r.path is not None:
            keys.insert(0, ("path", os.path.realpath(r.path), r.answer))
        hit = next(((k[0], seen[k]) for k in keys if k in seen), None)
        if hit is None:
            keep.append(r)
            seen.update({k: r for k in keys})
            continue
        kind, first = hit
        same = "file" if kind == "path" else "bytes"
        if first.is_fake != r.is_fake:
            raise DataError(
                f"The same image ({same}) is labelled {CLASS_NAMES[first.is_fake]} in {describe(first)} and "
                f"{CLASS_NAMES[r.is_fake]} in {describe(r)}. Fix the label of one entry, or remove one of them."
            )
        leak = (
            f"; it was in split {r.split} while the kept copy is in {first.split} (a leak between splits)"
            if r.split and first.split and r.split != first.split
            else ""
        )
        what = "same caption" if r.answer is not None else "same label"
        summary.skip(describe(r), f"duplicate of {describe(first)} (same {same}, {what}){leak}")
        summary.duplicates += 1
    return keep
