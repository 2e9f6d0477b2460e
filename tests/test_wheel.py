"""The wheel a user installs works on its own: recipes, the tiny preset and the console script ship in it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_wheel_alone_trains_and_plans_from_another_folder(tmp_path):
    dist, site, elsewhere = tmp_path / "dist", tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    pip = [sys.executable, "-m", "pip", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(ROOT)], check=True,
                   capture_output=True, timeout=300)  # fmt: skip
    wheel = next(dist.glob("llava_df-*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True,
                   capture_output=True, timeout=300)  # fmt: skip
    # The wheel's copy first on the path, run from a folder without the checkout: nothing may come
    # from the repository (configs/, assets/, the tokenizer).
    env = dict(os.environ, PYTHONPATH=str(site), OMP_NUM_THREADS="1")
    where = subprocess.run([sys.executable, "-c", "import llava_df; print(llava_df.__file__)"], cwd=elsewhere,
                           env=env, capture_output=True, text=True, check=True)  # fmt: skip
    assert where.stdout.strip().startswith(str(site))
    script = site / "bin" / "llava-df"
    train = subprocess.run(
        [str(script), "train", "--config", "tiny_lora_lowvram", "--max_steps", "2", "--synthetic_n", "40",
         "--eval_strategy", "no", "--save_strategy", "no", "--report_to", "none", "--output_dir", "run"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert train.returncode == 0, train.stderr[-3000:]
    assert (
        "done:" in train.stdout and json.loads((elsewhere / "run" / "results.json").read_text())["steps"] == 2
    )
    plan = subprocess.run(
        [str(script), "plan", "--config", "llava15_7b_12-16gb_lora", "--no_dry_run", "--json"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert json.loads(plan.stdout)["estimate"]["peak_bytes"] > 7 * 2**30  # a 7B INT8 model's weights alone
