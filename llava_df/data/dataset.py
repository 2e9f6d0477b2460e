"""One dataset type for every source, split assignment by seed, and the held-out protocol.

A :class:`FaceDataset` is a plain ``torch.utils.data.Dataset`` (not a ``datasets.Dataset``:
HF Trainer would drop its ``image``/``is_fake`` columns as "unused" before the collator sees
them). Item ``i`` is::

    {"image": PIL RGB, "is_fake": 0 or 1, "manipulation": str, "id": str, "path": str or None,
     "prompt": str or None,   # prompt: the record's own user turn (JSONL), None = DataArguments.prompt
     "answer": str or None}   # a caption (--task caption, is_fake -1); None = the Real/Fake word

Images from files are decoded on access with :func:`images.load_rgb` (already validated at load).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from llava_df.data.images import LoadSummary, load_rgb
from llava_df.data.labels import CLASS_NAMES
from llava_df.errors import DataError

SPLITS = ("train", "val", "test")
SPLIT_FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}
# Split names other tools use, mapped to ours (datasets says "validation").
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val", "dev": "val", "test": "test", "testing": "test"}  # fmt: skip
REAL_MANIPULATION = "none"
UNKNOWN_MANIPULATION = "unknown"


@dataclass
class Record:
    """One image and what is known about it; ``path`` or ``image`` is set."""

    id: str
    is_fake: int
    manipulation: str
    split: str | None = None
    path: str | None = None
    image: Image.Image | None = None
    prompt: str | None = None
    group: str | None = None  # images sharing a group (frames of one video) never straddle splits
    answer: str | None = None  # a caption (--task caption); None: the answer is the Real/Fake word


def normalize_split(name: str, *, where: str = "") -> str:
    key = str(name).strip().lower()
    if key not in SPLIT_ALIASES:
        at = f" in {where}" if where else ""
        raise DataError(f"Unknown split {name!r}{at}. Expected one of {sorted(SPLIT_ALIASES)}.")
    return SPLIT_ALIASES[key]


class FaceDataset(torch.utils.data.Dataset):
    """Records of one split; ``summary`` tells what the loader skipped and why."""

    def __init__(self, records: Sequence[Record], summary: LoadSummary | None = None, name: str = ""):
        self.records = list(records)
        self.summary = summary
        self.name = name

    def __len__(self) -> int:
        return len(self.records)

    column_names = ("image", "is_fake", "manipulation", "id", "path", "prompt", "answer")

    def __getitem__(self, i: int | str) -> dict | list:
        """Item ``i`` as a dict, or (like ``datasets``) a whole column by name without decoding images."""
        if isinstance(i, str):
            if i not in self.column_names or i == "image":
                raise KeyError(
                    f"Column {i!r}: use one of {self.column_names[1:]} (images are read per item)."
                )
            return [getattr(r, i) for r in self.records]
        r = self.records[i]
        image = r.image if r.image is not None else load_rgb(r.path)
        return {
            "image": image,
            "is_fake": r.is_fake,
            "manipulation": r.manipulation,
            "id": r.id,
            "path": r.path,
            "prompt": r.prompt,
            "answer": r.answer,
        }

    @property
    def labels(self) -> list[int]:
        return [r.is_fake for r in self.records]

    def counts(self) -> dict[str, int]:
        """Images per class and per manipulation, e.g. {'real': 70, 'fake': 70, 'face_swap': 14, ...}."""
        out = Counter(CLASS_NAMES.get(r.is_fake, "caption") for r in self.records)
        out.update(r.manipulation for r in self.records if r.is_fake)
        return dict(out)

    def __repr__(self) -> str:
        return f"FaceDataset({self.name!r}, n={len(self)}, {self.counts()})"


def split_sizes(m: int, fractions: dict[str, float] = SPLIT_FRACTIONS) -> list[int]:
    """How many of ``m`` items (or groups) go to each split, in ``fractions`` order.

    Every split but the first gets at least one when ``m`` allows, so a small source still has
    a val and a test set of each class; the first split takes the rest.
    """
    names = list(fractions)
    rest = [
        max(1, round(fractions[s] * m)) if m >= len(names) else round(fractions[s] * m) for s in names[1:]
    ]
    return [m - sum(rest), *rest]


def assign_splits(
    labels: Sequence[int],
    seed: int,
    groups: Sequence[str | None] | None = None,
    fractions: dict[str, float] = SPLIT_FRACTIONS,
) -> list[str]:
    """Split names for ``labels`` by ``seed``: stratified by label, and by group when given.

    A group (e.g. one source video, or a real photo and its SBI fake) goes to one split as a
    whole; groups are stratified by their label ("mixed" when they hold both). Each stratum is
    cut by the fractions in ``fractions`` order, so splits are reproducible and disjoint.
    """
    n = len(labels)
    keys = (
        [g if g is not None else f"__item{i}" for i, g in enumerate(groups)]
        if groups
        else [f"__item{i}" for i in range(n)]
    )
    members: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        members.setdefault(key, []).append(i)
    strata: dict[str, list[str]] = {}
    for key, idx in members.items():
        kinds = {labels[i] for i in idx}
        strata.setdefault(str(kinds.pop()) if len(kinds) == 1 else "mixed", []).append(key)
    rng = np.random.default_rng(seed)
    names = list(fractions)
    out = [""] * n
    for stratum in sorted(strata):
        order = [strata[stratum][j] for j in rng.permutation(len(strata[stratum]))]
        start = 0
        for name, size in zip(names, split_sizes(len(order), fractions), strict=True):
            for key in order[start : start + size]:
                for i in members[key]:
                    out[i] = name
            start += size
    return out


def split_records(
    records: Sequence[Record], seed: int, fractions: dict[str, float] = SPLIT_FRACTIONS
) -> dict[str, list[Record]]:
    """Group records by their split; records without one are split by ``seed``.

    A source with only some splits (e.g. train/ and test/ folders) gets the missing ones cut
    from its train split, stratified and grouped, with the same fractions.
    """
    given = {r.split is not None for r in records}
    if given == {True, False}:
        missing = next(r.id for r in records if r.split is None)
        raise DataError(
            f"Some records have a split and some do not (e.g. {missing!r}); give every record a split or none."
        )
    if given == {False}:
        names = assign_splits([r.is_fake for r in records], seed, [r.group for r in records], fractions)
        for r, name in zip(records, names, strict=True):
            r.split = name
    out = {s: [r for r in records if r.split == s] for s in SPLITS}
    missing = [s for s in SPLITS if not out[s]]
    if missing and out["train"] and given == {True}:
        pool = out["train"]
        wanted = {"train": fractions["train"]} | {s: fractions[s] for s in missing}
        total = sum(wanted.values())
        names = assign_splits(
            [r.is_fake for r in pool],
            seed,
            [r.group for r in pool],
            {k: v / total for k, v in wanted.items()},
        )
        for r, name in zip(pool, names, strict=True):
            r.split = name
        out = {s: [r for r in records if r.split == s] for s in SPLITS}
    return out


def holdout_families(text: str | None) -> list[str]:
    """--holdout_manipulation's value -> family names ("a,b" holds out several; None or "" none)."""
    return list(dict.fromkeys(t.strip() for t in (text or "").split(",") if t.strip()))


def apply_holdout(splits: dict[str, list[Record]], families: str) -> dict[str, list[Record]]:
    """Held-out-manipulation protocol: train and val never see ``families`` (one name, or several comma-separated:
    ``face_swap,gan_upsample,expression_warp,noise_inconsistency`` trains on reals + self-blended fakes only, the
    SBI protocol); two test sets.

    - ``test``: the in-distribution test split (the held-out fakes removed): the families trained on;
    - ``heldout``: the test split's real images + every held-out fake of every split (none of them was
      trained or selected on), so generalization to an unseen forgery has enough fakes.
    """
    held_out = set(holdout_families(families))
    present = sorted({r.manipulation for rs in splits.values() for r in rs if r.is_fake})
    missing = sorted(held_out - set(present))
    if missing or not held_out:
        raise DataError(
            f"holdout_manipulation {families!r}: {', '.join(map(repr, missing)) or 'no family'} is not in this data. "
            f"Manipulations present: {present}."
        )
    if set(present) <= held_out:
        raise DataError(
            f"holdout_manipulation {families!r} holds out every fake family of this data ({present}): nothing fake is "
            "left to train on. Keep at least one family in training."
        )
    held = [r for name in SPLITS for r in splits[name] if r.is_fake and r.manipulation in held_out]
    return {
        "train": [r for r in splits["train"] if r.manipulation not in held_out],
        "val": [r for r in splits["val"] if r.manipulation not in held_out],
        "test": [r for r in splits["test"] if r.manipulation not in held_out],
        "heldout": [r for r in splits["test"] if not r.is_fake] + held,
    }


def parse_fractions(text: str | Sequence[float]) -> dict[str, float]:
    """ "0.7,0.15,0.15" -> {"train": 0.7, "val": 0.15, "test": 0.15}; DataError unless 3 positives summing to 1."""
    try:
        values = [float(v) for v in (text.split(",") if isinstance(text, str) else text)]
    except ValueError:
        values = []
    if len(values) != 3 or min(values) <= 0 or abs(sum(values) - 1) > 1e-6:
        raise DataError(
            f"--split_fractions {text!r}: expected three positive fractions for train,val,test summing to 1, "
            "e.g. 0.7,0.15,0.15."
        )
    return dict(zip(SPLITS, values, strict=True))
