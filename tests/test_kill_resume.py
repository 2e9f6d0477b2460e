"""A process killed at the worst moment leaves nothing that a later run trusts wrongly (issue #32): SIGTERM during
a run's final evaluation, then --resume_from_checkpoint last; SIGKILL while the feature store is written, then a
new run on the same cache. Each ends as an uninterrupted run would."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from llava_df.io import completeness_problem
from llava_df.model.feature_cache import FOLDER, store_problem
from llava_df.spec.resolve import parse_spec
from llava_df.train.workflow import train

REPO = Path(__file__).resolve().parent.parent
RUN = shlex.split(
    "--tune_mm_mlp_adapter True --synthetic_n 24 --per_device_train_batch_size 2 --max_steps 4 --eval_strategy steps "
    "--eval_steps 2 --save_strategy steps --save_steps 2 --logging_steps 1 --report_to none --learning_rate 1e-3 --seed 1"
)


def _killed(script: str, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "LLAVA_DF_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=600)  # fmt: skip


@pytest.mark.slow
def test_sigterm_during_the_final_evaluation_then_resume_ends_as_an_uninterrupted_run(tmp_path):
    reference = train(parse_spec([*RUN, "--output_dir", str(tmp_path / "ref")]))
    out = tmp_path / "o"
    script = f"""
import os, signal
import llava_df.train.workflow as workflow
real = workflow.evaluate_final
def terminated(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)  # what a scheduler's time limit or `kill` sends
    return real(*args, **kwargs)
workflow.evaluate_final = terminated
workflow.main({[*RUN, "--output_dir", str(out)]!r})
"""
    done = _killed(script, Path(os.environ["LLAVA_DF_CACHE"]))
    assert done.returncode == -signal.SIGTERM, done.stderr[-2000:]
    assert not (out / "results.json").exists()  # not finished: nothing claims it is
    assert (out / "final").is_dir() and (out / "checkpoint-4").is_dir()
    resumed = train(parse_spec([*RUN, "--output_dir", str(out), "--resume_from_checkpoint", "last"]))
    assert resumed["steps"] == 4 and (out / "results.json").is_file() and (out / "threshold.json").is_file()
    assert resumed["test"]["auc"] == pytest.approx(reference["test"]["auc"], abs=1e-6)
    assert json.loads((out / "threshold.json").read_text())["value"] == pytest.approx(
        json.loads((tmp_path / "ref" / "threshold.json").read_text())["value"], abs=1e-6
    )


@pytest.mark.slow
def test_sigkill_while_the_feature_store_is_written_then_a_new_run_on_the_same_cache(tmp_path):
    cache = tmp_path / "cache"
    script = f"""
import os, signal
import numpy as np
import llava_df.model.feature_cache as fc
def killed(folder, tower, batches, layer):
    np.save(folder / fc.FEATURES_FILE, np.zeros((3, 4), np.float32))  # half written
    os.kill(os.getpid(), signal.SIGKILL)
fc._write_store = killed
from llava_df.train.workflow import main
main({[*RUN, "--output_dir", str(tmp_path / "killed")]!r})
"""
    done = _killed(script, cache)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    left = [p for p in (cache / FOLDER).rglob(".*") if p.is_dir()]
    assert left, "the killed build left its temporary folder (what this test is about)"
    env = {"LLAVA_DF_CACHE": str(cache)}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        results = train(parse_spec([*RUN, "--output_dir", str(tmp_path / "after")]))
    finally:
        for k, v in saved.items():
            os.environ[k] = v
    store = Path(results["feature_cache"]["store"][0])
    assert store_problem(store) is None and completeness_problem(store, digests=True) is None
    assert not [
        p for p in (cache / FOLDER).rglob(".*") if p.is_dir()
    ]  # the killed build's leftovers are gone
    reference = train(parse_spec([*RUN, "--output_dir", str(tmp_path / "ref"), "--feature_cache", "off"]))
    assert results["test"]["auc"] == pytest.approx(reference["test"]["auc"], abs=1e-6)
