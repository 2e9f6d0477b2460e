"""Resume is honest: changed settings are refused unless named, harmless ones noted, history kept."""

from __future__ import annotations

import json
import shlex

import pytest
from transformers import TrainerCallback

from llava_df.errors import RunError
from llava_df.spec.resolve import parse_spec
from llava_df.train.resume import check_resume_config
from llava_df.train.workflow import train

RUN = shlex.split(
    "--tune_mm_mlp_adapter True --synthetic_n 24 --per_device_train_batch_size 2 --max_steps 4 --eval_strategy steps "
    "--eval_steps 2 --save_strategy steps --save_steps 2 --logging_steps 1 --report_to none --seed 1"
)


class StopAt(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 3:  # checkpoint-2 is written at the end of step 2
            raise KeyboardInterrupt


def test_check_resume_config_sorts_changes_into_refused_allowed_and_harmless():
    old = {
        "model": {"lora_r": 8},
        "data": {"difficulty": 0.5},
        "training": {"learning_rate": 1e-3, "logging_steps": 1},
    }
    new = {
        "model": {"lora_r": 8},
        "data": {"difficulty": 0.7},
        "training": {"learning_rate": 1e-3, "logging_steps": 5},
    }
    with pytest.raises(RunError, match=r"data.difficulty: 0.5 -> 0.7.*--resume_allow_changes difficulty"):
        check_resume_config(old, new)
    changes = check_resume_config(old, new, allow="data.difficulty")
    assert changes["data.difficulty"]["kind"] == "allowed"
    assert changes["training.logging_steps"] == {"from": 1, "to": 5, "kind": "harmless"}


@pytest.mark.slow
def test_resume_refuses_a_changed_learning_rate_unless_allowed_and_records_segments(tmp_path):
    out = tmp_path / "o"
    with pytest.raises(KeyboardInterrupt):
        train(parse_spec([*RUN, "--learning_rate", "1e-3", "--output_dir", str(out)]), (StopAt(),))
    resume = ["--resume_from_checkpoint", "last", "--output_dir", str(out)]
    with pytest.raises(RunError, match=r"training.learning_rate: 0.001 -> 0.002"):
        train(parse_spec([*RUN, "--learning_rate", "2e-3", *resume]))
    results = train(
        parse_spec(
            [
                *RUN,
                "--learning_rate",
                "2e-3",
                "--logging_steps",
                "2",
                "--resume_allow_changes",
                "learning_rate",
                *resume,
            ]
        )
    )
    assert results["steps"] == 4
    segments = json.loads((out / "run_config.json").read_text())["segments"]
    assert [s["from_step"] for s in segments] == [0, 2]
    changes = segments[1]["changes"]
    assert changes["training.learning_rate"] == {"from": 1e-3, "to": 2e-3, "kind": "allowed"}
    assert changes["training.logging_steps"]["kind"] == "harmless"
    assert "--learning_rate" in segments[0]["argv"] and segments[1]["argv"][-1] == str(out)
