"""``load_splits``: DataArguments -> train/val/test FaceDatasets, whatever the source.

Source, by precedence: ``data_path`` (LLaVA conversation JSONL, or a DeepfakeBench dataset JSON with
``rgb_root``: llava_df.data.deepfakebench) > ``data_dir`` (image folder,
incl. folders written by the synthetic and SBI CLIs) > the in-memory synthetic benchmark
(``synthetic_n``, ``synthetic_seed``, ``image_size``, ``difficulty``). ``holdout_manipulation``
applies to all three (it needs a manipulation column for real data).

>>> from llava_df.spec.args import DataArguments
>>> splits = load_splits(DataArguments(), seed=0)
>>> splits["train"][0]  # {"image": PIL RGB, "is_fake": 0/1, "manipulation": ..., "id": ..., ...}
"""

from __future__ import annotations

import functools
import logging

from llava_df.data.conversation import CAPTIONS_NEED_DATA_PATH
from llava_df.data.dataset import (
    FaceDataset,
    Record,
    apply_holdout,
    assign_splits,
    parse_fractions,
    split_records,
)
from llava_df.data.deepfakebench import is_deepfakebench_json, load_deepfakebench_records
from llava_df.data.folder import load_folder_records
from llava_df.data.images import LoadSummary
from llava_df.data.index import content_hash, dedupe, describe
from llava_df.data.jsonl import load_jsonl_records
from llava_df.data.synthetic import SyntheticConfig, generate
from llava_df.errors import DataError

logger = logging.getLogger(__name__)


def synthetic_config(data_args) -> SyntheticConfig:
    # Every family in every split: the held-out protocol (apply_holdout) is applied at load time,
    # the same way for every source, so the in-distribution test set keeps all trained families.
    return SyntheticConfig(
        n=data_args.synthetic_n,
        seed=data_args.synthetic_seed,
        image_size=data_args.image_size,
        difficulty=data_args.difficulty,
        fractions=tuple(parse_fractions(data_args.split_fractions).values()),
    ).validate()


@functools.lru_cache(maxsize=2)
def _generated(cfg: SyntheticConfig) -> tuple:
    # A sweep trains many runs on one benchmark in one process: draw it once (a few seconds).
    return tuple(generate(cfg))


def _cross_dataset(
    records: list[Record],
    summary: LoadSummary,
    test_dir: str,
    seed: int,
    fractions: dict,
    *,
    synthetic: bool = False,
) -> tuple:
    """({"train", "val"} from ``records``, "test" = every image of ``test_dir``), the combined summary.

    The training source keeps its own train/val split (or gets one: --split_fractions' train and val, renormalized,
    stratified and grouped); a "test" split of its own would be a second test set, so it is refused, and an image
    found in both sources is refused as a leak."""
    own_test = [r for r in records if r.split == "test"]
    if own_test and synthetic:  # the generator always cuts a test split: unused here, and said so
        summary.skip(
            f"{len(own_test)} images of the synthetic test split", "unused: --test_data_dir is the test set"
        )
        records = [r for r in records if r.split != "test"]
    elif own_test:
        raise DataError(
            f"--test_data_dir {test_dir}: {summary.source} has its own test split ({len(own_test)} images, e.g. "
            f"{own_test[0].id!r}); with --test_data_dir the other folder is the test set. Drop the test split from "
            "the training source (or its test/ folder), or leave --test_data_dir out."
        )
    train_val = {k: fractions[k] / (fractions["train"] + fractions["val"]) for k in ("train", "val")}
    given = [r for r in records if r.split is not None]
    if given and len(given) < len(records):
        split_records(records, seed, fractions)  # names the mixed records (DataError)
    if not given:
        names = assign_splits([r.is_fake for r in records], seed, [r.group for r in records], train_val)
        for r, name in zip(records, names, strict=True):
            r.split = name
    elif not any(r.split == "val" for r in records):  # train/ only: val cut from it, grouped
        pool = [r for r in records if r.split == "train"]
        names = assign_splits([r.is_fake for r in pool], seed, [r.group for r in pool], train_val)
        for r, name in zip(pool, names, strict=True):
            r.split = name
    test, test_summary = load_folder_records(test_dir)
    test = dedupe(test, test_summary)
    own = {content_hash(r): r for r in records}
    leaks = [(own[h], r) for r in test if (h := content_hash(r)) in own]
    if leaks:
        first, other = leaks[0]
        raise DataError(
            f"--test_data_dir {test_dir}: {len(leaks)} images are also in the training source (e.g. {describe(other)} "
            f"= {describe(first)}): a test image seen in training. Remove them from one of the two folders."
        )
    for r in test:
        r.split = "test"
    summary.source = f"{summary.source} (train, val) + {test_summary.source} (test)"
    summary.loaded += len(test)
    summary.duplicates += test_summary.duplicates
    summary.skipped += test_summary.skipped
    by_split = {s: [r for r in records if r.split == s] for s in ("train", "val")} | {"test": test}
    return by_split, summary


def load_splits(data_args, seed: int = 0) -> dict[str, FaceDataset]:
    """{"train", "val", "test"} (+ "heldout" with --holdout_manipulation) -> FaceDataset.

    ``seed`` splits real data that has no splits, with --split_fractions.
    """
    task = getattr(data_args, "task", None) or "detect"
    if task == "caption" and not data_args.data_path:
        raise DataError(CAPTIONS_NEED_DATA_PATH)
    if data_args.data_path and is_deepfakebench_json(data_args.data_path):
        records, summary = load_deepfakebench_records(
            data_args.data_path,
            data_args.rgb_root,
            compression=data_args.compression,
            frame_num=data_args.frame_num,
        )
    elif data_args.data_path:
        records, summary = load_jsonl_records(
            data_args.data_path,
            data_args.answer_real,
            data_args.answer_fake,
            image_root=getattr(data_args, "image_folder", None),
            task=task,
        )
    elif data_args.data_dir:
        records, summary = load_folder_records(data_args.data_dir)
    else:
        cfg = synthetic_config(data_args)
        samples = _generated(cfg)
        records = [Record(s.id, s.is_fake, s.manipulation, s.split, image=s.image) for s in samples]
        summary = LoadSummary(source=f"synthetic benchmark {cfg}", loaded=len(records))
    records = dedupe(records, summary)
    summary.loaded = len(records)
    if summary.duplicates:
        logger.warning(
            "%s: dropped %d duplicate images (named in results.json data.skipped)",
            summary.source,
            summary.duplicates,
        )
    test_dir = getattr(data_args, "test_data_dir", None)
    if test_dir:
        by_split, summary = _cross_dataset(
            records, summary, test_dir, seed, parse_fractions(data_args.split_fractions),
            synthetic=not (data_args.data_path or data_args.data_dir),
        )  # fmt: skip
    else:
        by_split = split_records(records, seed, parse_fractions(data_args.split_fractions))
    if data_args.holdout_manipulation:
        by_split = apply_holdout(by_split, data_args.holdout_manipulation)
    for name in by_split:
        classes = {r.is_fake for r in by_split[name]}
        if task == "caption":
            if not by_split[name]:
                raise DataError(
                    f"Split {name!r} of {summary.source} is empty: add image-caption pairs (at least 3 in all) or "
                    "give each record a 'split'."
                )
            continue
        if classes != {0, 1}:
            raise DataError(
                f"Split {name!r} of {summary.source} has {len(by_split[name])} images and not both classes "
                f"(is_fake values {sorted(classes)}). Add real and fake images to it, or drop the split column/folders."
            )
    out = {name: FaceDataset(records, summary, name) for name, records in by_split.items()}
    for ds in out.values():
        logger.info("%s", ds)
    return out
