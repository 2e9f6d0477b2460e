"""--stage1_per_seed: each projector aligned once per seed, each cell starts from its own seed's file;
the zero-shot rows sit beside the comparison and never enter its tests."""

from __future__ import annotations

import hashlib
import json

import pytest

from llava_df.data.captions import write_captions
from llava_df.spec.resolve import parse_spec
from llava_df.sweep.cells import Cell
from llava_df.sweep.compare import main as compare_main
from llava_df.sweep.record import code_fingerprint
from llava_df.sweep.stage1 import stage1_argv


def test_a_cell_takes_its_own_seeds_stage1_file(tmp_path):
    files = {"mlp2x_gelu": {0: "a0.safetensors", 1: "a1.safetensors"}, "linear": "shared.safetensors"}
    flags = {seed: Cell("mlp2x_gelu", "lora", seed).flags(tmp_path, files) for seed in (0, 1)}
    assert flags[0][flags[0].index("--pretrain_mm_mlp_adapter") + 1] == "a0.safetensors"
    assert flags[1][flags[1].index("--pretrain_mm_mlp_adapter") + 1] == "a1.safetensors"
    shared = Cell("linear", "lora", 1).flags(tmp_path, files)
    assert shared[shared.index("--pretrain_mm_mlp_adapter") + 1] == "shared.safetensors"
    assert "--pretrain_mm_mlp_adapter" not in Cell("kan_light", "lora", 0).flags(tmp_path, files)


def test_stage1_keeps_its_own_rate_and_task_whatever_the_detection_runs_use(tmp_path):
    flags = ["--bits", "8", "--learning_rate", "6e-4", "--answer_head=classifier", "--synthetic_seed", "7"]
    argv = stage1_argv("mlp2x_gelu", tmp_path / "o", tmp_path / "c.json", flags)
    assert "--learning_rate" not in argv and not any(a.startswith("--answer_head") for a in argv)
    dashed = stage1_argv(
        "p", tmp_path / "o", tmp_path / "c.json", ["--learning-rate", "6e-4", "--answer-head", "x"]
    )
    assert "6e-4" not in dashed and "--answer-head" not in dashed and "x" not in dashed
    assert argv[argv.index("--bits") + 1] == "8" and argv[argv.index("--synthetic_seed") + 1] == "7"
    spec = parse_spec(
        [*argv[:-2], "--data_path", str(write_captions(tmp_path, n=3))]
    )  # the recipe's rate, LLaVA's
    assert spec.training.learning_rate == pytest.approx(1e-3) and spec.model.answer_head == "generate"


def test_stage1_per_seed_needs_stage1(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        compare_main(["--quick", "--stage1_per_seed", "True", "--results_dir", str(tmp_path / "r")])
    assert stop.value.code == 2 and "add --stage1" in capsys.readouterr().err


@pytest.mark.slow
def test_every_seed_starts_from_its_own_stage1_and_zero_shot_rows_are_beside_the_table(tmp_path):
    summary = compare_main([
        "--quick", "--projectors", "mlp2x_gelu,linear", "--strategies", "projector_only", "--seeds", "0,1",
        "--stage1", "--stage1_per_seed", "True", "--skip_probes", "True", "--workers", "2",  # stage 1 and zero-shot in the pool
        "--results_dir", str(tmp_path / "r"), "--runs_dir", str(tmp_path / "o"),
    ])  # fmt: skip
    runs = tmp_path / "r" / "comparison" / "runs"
    for projector in ("mlp2x_gelu", "linear"):
        for seed in (0, 1):
            stage1 = tmp_path / "o" / "stage1" / f"{projector}__seed{seed}" / "mm_projector.safetensors"
            assert stage1.is_file()
            record = json.loads((runs / f"{projector}__projector_only__seed{seed}.json").read_text())
            assert record["projector_init"] == f"file:{stage1}"
            assert record["config"]["training"]["seed"] == seed
            # what the key hashed beyond the config, so a stale key can be traced (sweep/status.py reads it)
            assert record["key_inputs"] == {
                "code_fingerprint": code_fingerprint(),
                "pretrain_mm_mlp_adapter_sha256": hashlib.sha256(stage1.read_bytes()).hexdigest(),
            }
            for form, answers in (("zero_shot", ("Fake", "Real")), ("zero_shot_yes_no", ("Yes", "No"))):
                zero = json.loads((runs / f"{projector}__{form}__seed{seed}.json").read_text())
                assert zero["projector_init"] == f"file:{stage1}" and "steps" not in zero
                assert (zero["question"]["answer_fake"], zero["question"]["answer_real"]) == answers
                assert len(zero["scores"]["test"]["p_fake"]) == len(record["scores"]["test"]["p_fake"])
    # the two seeds' stage-1 files differ (their own draws), and both the seeds' cells are paired in the test
    a, b = (
        (tmp_path / "o" / "stage1" / f"mlp2x_gelu__seed{s}" / "mm_projector.safetensors").read_bytes()
        for s in (0, 1)
    )
    assert a != b
    rows = {(r["strategy"], r["projector"]): r for r in summary["rows"]}
    assert rows[("zero_shot", "linear")]["vs_ref_verdict"].startswith("beside the comparison")
    assert [c.name for c in summary["family"]] == ["linear vs mlp2x_gelu | projector_only"]
