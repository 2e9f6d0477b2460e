"""Data is indexed once: duplicates dropped or refused, contradictions refused, odd files named, no stale cache."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from llava_df.data.folder import load_folder_records
from llava_df.data.load import load_splits
from llava_df.errors import DataError
from llava_df.spec.args import DataArguments

RNG = np.random.default_rng(0)


def _img(path, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return path


def _folder(root, n=6):
    for i in range(n):
        _img(root / "real" / f"r{i}.png", seed=i)
        _img(root / "fake" / f"f{i}.png", seed=100 + i)
    return root


def _metadata(root, rows, header="file_name,label"):
    (root / "metadata.csv").write_text(header + "\n" + "\n".join(rows) + "\n")


def test_a_copy_under_another_name_with_the_same_label_is_dropped_and_named(tmp_path):
    root = _folder(tmp_path / "d")
    (root / "real" / "copy_of_r0.png").write_bytes((root / "real" / "r0.png").read_bytes())
    splits = load_splits(DataArguments(data_dir=str(root)), seed=0)
    paths = [r.path for ds in splits.values() for r in ds.records]
    assert len(paths) == 12 and sum(p.endswith(("r0.png", "copy_of_r0.png")) for p in paths) == 1
    summary = splits["train"].summary
    assert summary.duplicates == 1
    ((entry, reason),) = summary.skipped
    assert "r0.png" in entry + reason and "same bytes, same label" in reason


def test_the_same_image_as_real_and_as_fake_is_an_error_naming_both(tmp_path):
    root = _folder(tmp_path / "d")
    (root / "fake" / "f_dup.png").write_bytes((root / "real" / "r3.png").read_bytes())
    with pytest.raises(
        DataError, match=r"labelled (real|fake) in .*(r3|f_dup)\.png.* and (real|fake) in .*(r3|f_dup)\.png"
    ):
        load_splits(DataArguments(data_dir=str(root)), seed=0)


def test_a_copy_in_train_and_test_is_reported_as_a_leak(tmp_path):
    for split, offset in (("train", 0), ("val", 20), ("test", 40)):
        for i in range(4):
            _img(tmp_path / split / "real" / f"r{i}.png", seed=offset + i)
            _img(tmp_path / split / "fake" / f"f{i}.png", seed=offset + 100 + i)
    (tmp_path / "test" / "real" / "leak.png").write_bytes(
        (tmp_path / "train" / "real" / "r1.png").read_bytes()
    )
    splits = load_splits(DataArguments(data_dir=str(tmp_path)), seed=0)
    ((entry, reason),) = splits["test"].summary.skipped
    assert "a leak between splits" in reason
    assert sum(len(ds) for ds in splits.values()) == 24


def test_label_and_is_fake_columns_that_disagree_are_an_error(tmp_path):
    root = tmp_path / "d"
    rows = []
    for i in range(6):
        _img(root / "images" / f"{i}.png", seed=i)
        fake = i % 2
        rows.append(f"images/{i}.png,{'fake' if fake else 'real'},{fake if i != 3 else 0}")
    _metadata(root, rows, header="file_name,label,is_fake")
    with pytest.raises(DataError, match=r"3\.png.*label 'fake' and is_fake '?0'? disagree"):
        load_folder_records(root)


def test_broken_symlinks_and_non_utf8_names_are_named_not_fatal(tmp_path):
    root = _folder(tmp_path / "d")
    os.symlink(tmp_path / "nowhere.png", root / "real" / "gone.png")
    with open(os.path.join(os.fsencode(root / "fake"), b"bad\xffname.png"), "wb") as f:
        f.write((root / "fake" / "f0.png").read_bytes())
    records, summary = load_folder_records(root)
    assert len(records) == 12
    reasons = dict(summary.skipped)
    assert reasons[str(root / "real" / "gone.png")].startswith("broken symlink")
    assert any("not valid UTF-8" in r for r in reasons.values())


def test_an_edited_metadata_csv_is_never_served_from_a_stale_cache(tmp_path):
    root = tmp_path / "d"
    for i in range(6):
        _img(root / "images" / f"{i}.png", seed=i)
    _metadata(root, [f"images/{i}.png,{'fake' if i % 2 else 'real'}" for i in range(6)])
    cache = str(tmp_path / "cache")
    first, _ = load_folder_records(root, cache_dir=cache)
    # Same size, same second: only the content changed (the 5th row's label flips).
    _metadata(root, [f"images/{i}.png,{'fake' if (i % 2) != (i == 4) else 'real'}" for i in range(6)])
    second, _ = load_folder_records(root, cache_dir=cache)
    by_path = lambda rs: {os.path.basename(r.path): r.is_fake for r in rs}  # noqa: E731
    assert by_path(first)["4.png"] == 0 and by_path(second)["4.png"] == 1


def test_llava_image_folder_roots_a_json_list(tmp_path):
    images = tmp_path / "imgs"
    records = []
    for i in range(12):
        _img(images / "sub" / f"{i}.png", seed=i)
        answer = "Fake" if i % 2 else "Real"
        records.append(
            {"id": str(i), "image": f"sub/{i}.png",
             "conversations": [{"from": "human", "value": "<image>\nReal or fake?"}, {"from": "gpt", "value": answer}]}
        )  # fmt: skip
    data = tmp_path / "elsewhere" / "train.json"
    data.parent.mkdir()
    data.write_text(json.dumps(records))
    splits = load_splits(DataArguments(data_path=str(data), image_folder=str(images)), seed=0)
    assert sum(len(ds) for ds in splits.values()) == 12
    assert all(r.path.startswith(str(images)) for ds in splits.values() for r in ds.records)


@pytest.mark.slow
def test_results_json_names_every_skipped_file_with_its_reason(tmp_path):
    from llava_df.spec.resolve import parse_spec
    from llava_df.train.workflow import train

    root = _folder(tmp_path / "d", n=8)
    (root / "fake" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (root / "real" / "copy.png").write_bytes((root / "real" / "r1.png").read_bytes())
    argv = f"--data_dir {root} --tune_mm_mlp_adapter True --max_steps 1 --eval_strategy no --save_strategy no --report_to none"
    results = train(parse_spec([*argv.split(), "--output_dir", str(tmp_path / "o")]))
    skipped = {
        os.path.basename(s["entry"].split(" (")[0].strip("'")): s["reason"]
        for s in results["data"]["skipped"]
    }
    assert set(skipped) == {"corrupt.png", "copy.png"} or set(skipped) == {"corrupt.png", "r1.png"}
    assert results["data"]["duplicates"] == 1 and sum(results["data"]["splits"].values()) == 16
    saved = json.loads((tmp_path / "o" / "results.json").read_text())
    assert saved["data"]["skipped"] == results["data"]["skipped"]
