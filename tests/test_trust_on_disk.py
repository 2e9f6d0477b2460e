"""What is on disk is checked before it is trusted: a checkpoint's weights are the ones it records, whole,
and finite; a score is never NaN; `plan --check` on something that is not a run is an error.

Each case was a wrong answer with exit 0 before (issue #32): the hostile edits below are the ones it names.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from llava_df import io
from llava_df.apps.predict import main as predict_main
from llava_df.errors import RunError, WeightsError
from llava_df.eval.detector import Detector
from llava_df.memory.__main__ import main as plan_main
from llava_df.model.checkpoint import (
    ADAPTER_FILE,
    CHECKPOINT_JSON,
    COMPLETE_MARKER,
    PROJECTOR_FILE,
    TRAINED_FILES,
    files_sha256,
    read_checkpoint,
    weights_identity,
)
from llava_df.train.workflow import main as train_main


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny LoRA run with checkpoint-2/ and checkpoint-4/ beside best/ and final/, and two test images."""
    root = tmp_path_factory.mktemp("trust")
    out = root / "run"
    train_main(
        ["--output_dir", str(out), "--max_steps", "4", "--synthetic_n", "60", "--report_to", "none",
         "--per_device_train_batch_size", "8", "--eval_strategy", "steps", "--eval_steps", "2",
         "--save_strategy", "steps", "--save_steps", "2", "--lora_enable", "True", "--lora_r", "4",
         "--learning_rate", "5e-3"]
    )  # fmt: skip
    images = root / "images"
    images.mkdir()
    from PIL import Image

    for i, colour in enumerate(((200, 150, 120), (90, 60, 40))):
        Image.new("RGB", (64, 64), colour).save(images / f"face{i}.png")
    return out, images


@pytest.fixture
def copy(run, tmp_path):
    out, _ = run
    target = tmp_path / "run"
    shutil.copytree(out, target)
    return target


def _error(capsys, argv) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        predict_main(argv)
    lines = capsys.readouterr().err.strip().splitlines()
    return info.value.code, lines[-1] if lines else ""


def _reseal(ckpt: Path) -> None:
    """Re-record a checkpoint as if it had been saved with the files it now holds (a diverged run's save)."""
    meta = read_checkpoint(ckpt)
    meta["weights"]["sha256"] = files_sha256(ckpt, meta["files"])
    (ckpt / CHECKPOINT_JSON).write_text(json.dumps(meta))
    io.mark_complete(ckpt, COMPLETE_MARKER, digest=lambda name: name in TRAINED_FILES)


@pytest.mark.slow
def test_best_and_final_carry_a_completeness_record_with_the_weights_digests(run):
    out, _ = run
    for name in ("best", "final", "checkpoint-2", "checkpoint-4"):
        record = json.loads((out / name / COMPLETE_MARKER).read_text())
        assert set(record["sha256"]) == {PROJECTOR_FILE, ADAPTER_FILE}, name
        assert record["files"][ADAPTER_FILE] == (out / name / ADAPTER_FILE).stat().st_size
        assert io.completeness_problem(out / name, COMPLETE_MARKER, digests=True) is None
    assert weights_identity(out / "best")["sha256"] == read_checkpoint(out / "best")["weights"]["sha256"]


@pytest.mark.slow
def test_weights_copied_in_from_another_checkpoint_are_refused_naming_both(run, copy, capsys):
    out, images = run
    other = "checkpoint-4" if read_checkpoint(out / "best")["weights"]["step"] == 2 else "checkpoint-2"
    for name in (ADAPTER_FILE, PROJECTOR_FILE):  # the edit: another checkpoint's files into best/
        shutil.copy(copy / other / name, copy / "best" / name)
    if (copy / "best" / ADAPTER_FILE).stat().st_size != (out / "best" / ADAPTER_FILE).stat().st_size:
        pytest.fail("the two adapters should have one size: the check must not rely on sizes")
    recorded = read_checkpoint(copy / "best")["weights"]
    actual = files_sha256(copy / "best", read_checkpoint(copy / "best")["files"])
    code, err = _error(capsys, ["--run_dir", str(copy), str(images)])
    assert code == 1 and err.startswith("error: ") and "cannot be trusted" in err
    assert f"hash to sha256 {actual[:12]}" in err and f"not the {recorded['sha256'][:12]}" in err
    assert f"step {recorded['step']}" in err and other in err  # the intact checkpoints are named
    with pytest.raises(WeightsError, match="cannot be trusted"):
        Detector.from_pretrained(copy)
    assert (
        len(Detector.from_pretrained(copy, weights="final", threshold=0.5).score([images / "face0.png"])) == 1
    )


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["deleted", "truncated"])
def test_a_half_written_checkpoint_is_refused_not_loaded_without_its_lora(copy, run, damage, capsys):
    _, images = run
    adapter = copy / "best" / ADAPTER_FILE
    if damage == "deleted":
        adapter.unlink()  # PEFT would build a fresh zero LoRA in its place
        expected = f"{ADAPTER_FILE} is missing"
    else:
        adapter.write_bytes(adapter.read_bytes()[:-100])
        expected = f"{ADAPTER_FILE} is .* bytes, .* when written"
    code, err = _error(capsys, ["--run_dir", str(copy), str(images)])
    assert code == 1 and err.startswith("error: ") and "cannot be trusted" in err
    with pytest.raises(WeightsError, match=expected):
        Detector.from_pretrained(copy, threshold=0.5)


@pytest.mark.slow
def test_a_checkpoint_killed_while_best_was_rewritten_is_refused(copy):
    (copy / "best" / COMPLETE_MARKER).unlink()  # save_trainable removes it first and writes it last
    with pytest.raises(WeightsError, match=f"no {COMPLETE_MARKER}"):
        Detector.from_pretrained(copy, threshold=0.5)


@pytest.mark.slow
def test_nan_weights_are_named_as_damaged_weights_not_blamed_on_training(copy, capsys):
    best = copy / "best"
    state = load_file(best / ADAPTER_FILE)
    key = next(k for k in state if "lora_B" in k)
    state[key] = torch.full_like(state[key], float("nan"))
    save_file(state, best / ADAPTER_FILE)
    _reseal(best)
    with pytest.raises(
        WeightsError,
        match=rf"{ADAPTER_FILE} holds \d+ NaN/inf values .*damaged or was written by a diverged run",
    ):
        Detector.from_pretrained(copy, threshold=0.5)


@pytest.mark.slow
def test_a_score_is_never_nan_huge_weights_are_named(copy, run):
    _, images = run
    best = copy / "best"
    state = load_file(best / ADAPTER_FILE)
    for key in state:  # finite, but the answer logits overflow
        state[key] = torch.full_like(state[key], 1e30)
    save_file(state, best / ADAPTER_FILE)
    _reseal(best)
    detector = Detector.from_pretrained(copy, threshold=0.5)
    with pytest.raises(RunError, match=r"non-finite P\(Fake\).*largest \|value\| 1e\+30 in .*lora_.*damaged"):
        detector.score([images / "face0.png", images / "face1.png"])


def test_plan_check_on_things_that_are_not_runs_is_an_error(tmp_path, capsys):
    garbage = tmp_path / "random.bin"
    garbage.write_bytes(os.urandom(512))
    (tmp_path / "garbage.json").write_text('{"hello": [1, 2, 3]}')
    (tmp_path / "empty").mkdir()
    tensorboard = tmp_path / "runs" / "Dec06_01-00-00_host"
    tensorboard.mkdir(parents=True)
    (tensorboard / "events.out.tfevents.1.host").write_bytes(os.urandom(64))
    for paths in ([garbage], [tmp_path / "garbage.json"], [tmp_path / "empty"], [tmp_path / "runs"],
                  [garbage, tmp_path / "empty"]):  # fmt: skip
        with pytest.raises(SystemExit) as info:
            plan_main(["plan", "--check", *map(str, paths)])
        err = capsys.readouterr().err.strip().splitlines()
        assert (
            info.value.code == 1
            and len(err) == 1
            and err[0].startswith("error: --check found no llava_df run")
        )
        assert all(str(p) in err[0] for p in paths)


@pytest.mark.slow
def test_plan_check_reads_a_real_run_beside_garbage(run, tmp_path, capsys):
    out, _ = run
    (tmp_path / "garbage.json").write_text("[]")
    result = plan_main(["plan", "--check", str(out), str(tmp_path / "garbage.json")])
    rows = {r["run"]: r for r in result["runs"]}
    assert rows[out.name]["problem"] is None and rows[out.name]["planned_peak_mb"] > 0
    assert rows["garbage.json"]["problem"].startswith("not a llava_df results.json")
    assert "not a llava_df results.json" in capsys.readouterr().out
