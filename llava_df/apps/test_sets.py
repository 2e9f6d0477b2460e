"""``llava-df evaluate --test NAME=SOURCE``: one row per test set, in-dataset and cross-dataset side by side.

How to call::

    llava-df evaluate --run_dir outputs/ffpp --test celebdf=data/rgb/Celeb-DF-v2 --test dfdc=data/rgb/DFDC
    llava-df evaluate --run_dir outputs/ffpp --test celebdf=dataset_json/Celeb-DF-v2.json --rgb_root datasets/rgb
    evaluate_test_sets(run_dir, [("celebdf", "data/rgb/Celeb-DF-v2")], weights="best")   # the rows

The first rows are the run's own test split (and ``heldout`` with a held-out family); then one per
``--test``. A SOURCE is an image folder (``llava-df data extract``'s output: its ``test`` split when it
has splits, else all of it), a LLaVA JSON/JSONL (the same), or a DeepfakeBench dataset JSON (its
``test`` split, frames under ``--rgb_root``). Each row: frame- and video-level AUC, AP, EER and
accuracy (the threshold chosen on the run's val by its rule), 95% intervals that resample videos
(llava_df.eval.video), and DeepfakeBench's own video AUC computed its way beside ours.

Every source is loaded and checked before any weight loads; a test set that shares an image with
the run's train or val split is refused, naming the videos.
"""

from __future__ import annotations

import csv
import io
import math
import sys
from pathlib import Path

import numpy as np

from llava_df.data.dataset import FaceDataset
from llava_df.data.deepfakebench import is_deepfakebench_json, load_deepfakebench_records
from llava_df.data.folder import load_folder_records
from llava_df.data.index import content_hash, dedupe, describe
from llava_df.data.jsonl import load_jsonl_records
from llava_df.data.load import load_splits
from llava_df.data.pipeline import split_of
from llava_df.errors import DataError, RunError, UsageError
from llava_df.eval.detector import Detector
from llava_df.eval.scoring import predict_split, scoring_trainer
from llava_df.eval.threshold import choose_threshold
from llava_df.eval.video import bootstrap_ci, deepfakebench_video_auc, groups_of, video_metrics, video_scores
from llava_df.io import write_json, write_text
from llava_df.spec.run_spec import SavedRun


def _test_part(records: list, source: str) -> list:
    """The test split of a source that has splits, else all of it."""
    if not any(r.split for r in records):
        return records
    test = [r for r in records if r.split == "test"]
    if not test:
        raise DataError(f"{source} has splits but no test split: point --test at a test set (or its folder).")
    return test


def load_test_set(name: str, source: str, data_args, *, rgb_root: str | None) -> FaceDataset:
    """One ``--test`` source as a FaceDataset of its test frames (both classes required)."""
    path = Path(source)
    if path.is_dir():
        records, summary = load_folder_records(path)
        records = _test_part(records, source)
    elif is_deepfakebench_json(path):
        records, summary = load_deepfakebench_records(
            path, rgb_root, splits=("test",), compression=data_args.compression, frame_num=data_args.frame_num
        )
    else:
        records, summary = load_jsonl_records(path, data_args.answer_real, data_args.answer_fake)
        records = _test_part(records, source)
    records = dedupe(records, summary)
    classes = {r.is_fake for r in records}
    if classes != {0, 1}:
        raise DataError(
            f"--test {name}={source}: {len(records)} images, not both classes (is_fake {sorted(classes)})."
        )
    return FaceDataset(records, summary, name)


def check_unseen(test: FaceDataset, trained: list, name: str) -> None:
    """DataError when a test image is one of the run's train/val images (same file or same bytes), naming videos."""
    seen = {content_hash(r): r for r in trained}
    shared = [(r, seen[h]) for r in test.records if (h := content_hash(r)) in seen]
    if shared:
        videos = sorted({r.group or r.id for r, _ in shared})
        raise DataError(
            f"--test {name}: {len(shared)} images of {len(videos)} videos (e.g. {', '.join(videos[:3])}) are also in the "
            f"run's train/val split (e.g. {describe(shared[0][0])} = {describe(shared[0][1])}): scores on them are "
            "not a test. Test on videos the run never saw (the source's own test split)."
        )


def row(
    name: str,
    source: str,
    dataset: FaceDataset,
    scores: dict,
    metrics: dict,
    *,
    agg: str,
    n_boot: int,
    seed: int,
) -> dict:
    """One row of the table: frame metrics, video metrics with ``agg``, intervals, DeepfakeBench's figure."""
    p, y = np.asarray(scores["p_fake"]), np.asarray(scores["is_fake"])
    groups = groups_of(dataset) or [str(i) for i in scores["id"]]  # images without videos: each is its own
    keep = np.isfinite(p)  # non-finite frames were refused, or dropped with --drop_nonfinite_scores
    videos = video_scores(p[keep], y[keep], [g for g, ok in zip(groups, keep, strict=True) if ok], agg)
    ci = bootstrap_ci(p, y, groups, agg=agg, n_boot=n_boot, seed=seed)
    dfb_auc, dfb_videos = deepfakebench_video_auc(
        [r.path or r.id for r, ok in zip(dataset.records, keep, strict=True) if ok], p[keep], y[keep]
    )
    return {
        "test_set": name, "source": source, "frames": metrics["n"], **{k: metrics[k] for k in ("auc", "ap", "eer", "accuracy")},
        **video_metrics(p, y, groups, agg=agg, threshold=metrics["threshold"]), "video_agg": agg,
        "videos_real": int((videos.is_fake == 0).sum()), "videos_fake": int((videos.is_fake == 1).sum()),
        "auc_ci": ci["auc"], "video_auc_ci": ci["video_auc"], "threshold": metrics["threshold"],
        "deepfakebench_video_auc": dfb_auc, "deepfakebench_videos": dfb_videos,
    }  # fmt: skip


def _f(value, ci=None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    text = f"{value:.3f}"
    if ci and all(math.isfinite(v) for v in ci):
        text += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
    return text


def format_table(rows: list[dict], header: str) -> str:
    """The rows as a Markdown table, under a line that says how they were made."""
    lines = [
        header, "",
        "| test set | videos (real/fake) | frames | frame AUC [95% CI] | video AUC [95% CI] | video AP | video EER | "
        "video acc | DeepfakeBench video AUC (its videos) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in rows:
        lines.append(
            f"| {r['test_set']} | {r['video_n']} ({r['videos_real']}/{r['videos_fake']}) | {r['frames']} | "
            f"{_f(r['auc'], r['auc_ci'])} | {_f(r['video_auc'], r['video_auc_ci'])} | {_f(r['video_ap'])} | "
            f"{_f(r['video_eer'])} | {_f(r['video_accuracy'])} | {_f(r['deepfakebench_video_auc'])} ({r['deepfakebench_videos']}) |"
        )
    return "\n".join(lines) + "\n"


def rows_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    flat = [{k: (";".join(map(str, v)) if isinstance(v, list) else v) for k, v in r.items()} for r in rows]
    writer = csv.DictWriter(buffer, fieldnames=list(flat[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(flat)
    return buffer.getvalue()


def evaluate_test_sets(
    run_dir: Path,
    tests: list[tuple[str, str]],
    *,
    weights: str = "best",
    batch_size: int = 8,
    agg: str = "mean",
    n_boot: int = 1000,
    seed: int = 0,
    rgb_root: str | None = None,
    drop_nonfinite: bool = False,
    allow_base_mismatch: bool = False,
) -> list[dict]:
    """Score the run's own test split(s) and every ``tests`` source at the run's threshold rule; the rows."""
    saved = SavedRun.read(run_dir)
    if not (Path(run_dir) / weights).is_dir():
        raise UsageError(
            f"{Path(run_dir) / weights} does not exist; try --weights {'final' if weights == 'best' else 'best'}."
        )
    data = saved.data
    splits = load_splits(data, seed=saved.training["seed"])  # the run's data, before any weight loads
    trained = [r for name in ("train", "val") for r in split_of(splits, name).records]
    sets = [(name, f"the run's {name} split", splits[name]) for name in ("test", "heldout") if name in splits]
    for name, source in tests:
        ds = load_test_set(name, source, data, rgb_root=rgb_root or data.rgb_root)
        check_unseen(ds, trained, name)
        sets.append((name, source, ds))
    detector = Detector.from_pretrained(
        run_dir, weights=weights, threshold=None, allow_base_mismatch=allow_base_mismatch
    )
    d = detector
    rows = []
    with scoring_trainer(d.model, d.collator, d.fake_id, d.real_id, batch_size) as trainer:
        _, val_scores = predict_split(trainer, split_of(splits, "val"), "val", drop_nonfinite=drop_nonfinite)
        threshold, rule = choose_threshold(saved.training.get("threshold_rule", "eer"), val_scores)
        for name, source, ds in sets:
            metrics, scores = predict_split(
                trainer, ds, name, threshold=threshold, drop_nonfinite=drop_nonfinite
            )
            metrics = {k.removeprefix(f"{name}_"): v for k, v in metrics.items()}
            rows.append(
                row(name, source, ds, scores, metrics, agg=agg, n_boot=n_boot, seed=seed)
                | {"threshold_rule": rule}
            )
    return rows


def write_outputs(rows: list[dict], json_path: Path, header: str) -> list[Path]:
    """``json_path`` (the rows), and the same stem as .md (the table) and .csv (one line per row)."""
    paths = [json_path, json_path.with_suffix(".md"), json_path.with_suffix(".csv")]
    write_json(paths[0], {"header": header, "rows": rows})
    write_text(paths[1], format_table(rows, header))
    write_text(paths[2], rows_csv(rows))
    return paths


def run_test_sets(args, tests: list[tuple[str, str]]) -> list[dict]:
    """``llava-df evaluate`` with ``--test``: the table printed and written (json, md, csv) beside the run."""
    if args.bootstrap < 0:
        raise UsageError(f"--bootstrap {args.bootstrap}: expected an integer >= 0 (0: no intervals).")
    rows = evaluate_test_sets(
        Path(args.run_dir), tests, weights=args.weights, batch_size=args.batch_size, agg=args.video_agg,
        n_boot=args.bootstrap, rgb_root=args.rgb_root, drop_nonfinite=args.drop_nonfinite_scores,
        allow_base_mismatch=args.allow_base_mismatch,
    )  # fmt: skip
    header = (
        f"llava-df evaluate --run_dir {args.run_dir} --weights {args.weights} "
        + " ".join(f"--test {n}={s}" for n, s in tests)
        + f" (video score: {args.video_agg} of its frames' P(Fake); threshold: {rows[0]['threshold_rule']} on the "
        f"run's val; 95% CI: {args.bootstrap} draws of videos)"
    )
    print(format_table(rows, header), flush=True)
    out = Path(args.output) if args.output else Path(args.run_dir) / f"eval_{args.weights}_tests.json"
    try:
        written = write_outputs(rows, out, header)
    except OSError as err:
        raise RunError(
            f"Cannot write {out} ({err.strerror}); the table is printed above. Pass --output elsewhere."
        ) from None
    print(f"wrote {', '.join(map(str, written))}", file=sys.stderr)
    return rows
