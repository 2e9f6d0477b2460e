"""The memory planner (llava_df.memory): dry run against an independent measurement, the closed form
against the dry run, the facts it must get right, the CLI, --budget and train --plan_only."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from llava_df.memory.budget import search
from llava_df.memory.estimate import optimizer_state_bytes
from llava_df.memory.plan import make_plan
from llava_df.memory.plan_flags import parse_size
from llava_df.memory.tracker import MetaStorageTracker, cuda_dropout, flash_sdpa

ROOT = Path(__file__).resolve().parent.parent

MIB = 2**20
GIB = 2**30
SEVEN_B = ["--model_name_or_path", "llava-hf/llava-1.5-7b-hf", "--bf16", "true", "--model_max_length", "2048"]


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "llava_df.memory", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )


# ---- predicted vs measured ------------------------------------------------------------------
@pytest.mark.parametrize(
    "cell",
    [
        ("lora", "mlp2x_gelu", 8, False),  # LLM.int8 CPU path, LoRA dropout's full-size CPU mask
        ("projector_only", "kan_h64_g3_k2", 4, True),  # NF4, checkpointing, our KAN's custom backward
        ("unfreeze_early", "kan_light", 16, False),  # fp32 island, full-layer gradients
    ],
)
def test_dry_run_matches_the_allocator_within_3_percent(cell):
    # A fresh process per cell, as the benchmark runs it: the allocator counter sees only this cell.
    res = subprocess.run(
        [sys.executable, "benchmarks/memory_validation.py", "--cell", ",".join(str(c).lower() for c in cell)],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    row = json.loads(res.stdout.strip().splitlines()[-1])
    assert row["dry_run_bytes"] == pytest.approx(row["measured_bytes"], rel=0.03)
    # the weights are counted exactly (int8 data + scales, NF4 data + absmax + the nested constants)
    assert row["dry_run_weights_bytes"] == pytest.approx(row["model_bytes"], rel=0.005)
    assert row["estimate_bytes"] == pytest.approx(
        row["measured_bytes"], rel=0.5
    )  # the closed form: same ballpark


def test_7b_plan_counts_the_weights_exactly_and_closed_form_agrees():
    plan = make_plan(SEVEN_B + ["--strategy", "lora", "--bits", "8", "--lora_r", "32", "--gradient_checkpointing", "true",
                                "--per_device_train_batch_size", "2", "--optim", "adamw_bnb_8bit"])  # fmt: skip
    dry, est = plan["dry_run"], plan["estimate"]
    llm = dry["weights"]["llm"]["dtypes"]
    # 32 layers x (4 x 4096^2 + 3 x 4096 x 11008) int8 weights; embeddings + lm_head stay bf16 (32064 x 4096 each)
    assert llm["int8"] == 32 * (4 * 4096 * 4096 + 3 * 4096 * 11008)
    assert llm["bfloat16"] >= 2 * 32064 * 4096 * 2
    # llava_df's preparation keeps the frozen tower in bf16 (peft's prepare_model_for_kbit_training would make it fp32)
    assert set(dry["weights"]["vision_tower"]["dtypes"]) <= {"bfloat16", "int64"}
    assert dry["weights"]["projector"]["dtypes"] == {
        "float32": 4 * 20_979_712
    }  # mlp2x_gelu: 21.0M, not 16.8M
    assert dry["seq_len"] == 576 + 48
    assert est["peak_bytes"] == pytest.approx(dry["peak_bytes"], rel=0.05)
    # 8-bit AdamW: about 2 bytes of state per trained parameter
    assert dry["optimizer_bytes"] == pytest.approx(2.03 * dry["trainable_params"], rel=0.02)


# ---- the facts a plan must get right --------------------------------------------------------
def _saved_bytes(fn, *inputs) -> int:
    """Bytes alive after fn(*inputs) on meta tensors: its output + what its autograd graph keeps."""
    params = list(fn.parameters()) if isinstance(fn, torch.nn.Module) else []
    with MetaStorageTracker() as tracker:
        tracker.ignore([*inputs, *params])  # they exist before the call: views of them are not new memory
        out = fn(*inputs)
        alive = tracker.current
        del out
    return alive


def test_frozen_linear_keeps_no_input_a_trained_one_does():
    x = torch.empty(8, 1024, 256, device="meta", requires_grad=True)
    frozen = torch.nn.Linear(256, 256, bias=False, device="meta").requires_grad_(False)
    trained = torch.nn.Linear(256, 256, bias=False, device="meta")
    out = 8 * 1024 * 256 * 4
    assert _saved_bytes(frozen, x) == out  # only its output: the weight is all the input's gradient needs
    with MetaStorageTracker() as tracker:
        tracker.ignore([x, trained.weight])
        h = x * 2  # a fresh activation, made inside the tracker
        y = trained(h)
        del h  # the caller lets go; the graph keeps it for the weight's gradient
        assert tracker.current == 2 * out  # h (kept by the graph) + y
        assert y.grad_fn is not None
    frozen_graph = frozen(x * 2)
    assert frozen_graph.grad_fn is not None


def test_dropout_mask_is_one_byte_on_cuda_and_a_full_tensor_on_cpu():
    x = torch.empty(4, 512, 1024, device="meta", requires_grad=True)
    n = x.numel()
    drop = torch.nn.Dropout(0.1)
    cpu = _saved_bytes(drop, x)
    with cuda_dropout():
        cuda = _saved_bytes(drop, x)
    assert cpu == 2 * 4 * n  # the noise tensor (fp32) + the output
    assert cuda == 1 * n + 4 * n  # a bool mask + the output


def test_fused_attention_keeps_no_s_by_s_scores():
    b, h, s, d = 1, 8, 2048, 64
    q, k, v = (torch.empty(b, h, s, d, device="meta", requires_grad=True) for _ in range(3))
    sdpa = torch.nn.functional.scaled_dot_product_attention
    math_path = _saved_bytes(lambda *a: sdpa(*a, is_causal=True), q, k, v)
    with flash_sdpa():
        fused = _saved_bytes(
            lambda *a: torch.nn.functional.scaled_dot_product_attention(*a, is_causal=True), q, k, v
        )
    assert fused == b * h * s * d * 4 + b * h * s * 4  # output + log-sum-exp
    assert math_path >= b * h * s * s * 4  # meta's math path would keep the probabilities


def test_int8_checkpointing_reentrant_frees_what_non_reentrant_cannot():
    base = ["--model_name_or_path", "tiny", "--strategy", "lora", "--bits", "8", "--gradient_checkpointing", "true",
            "--per_device_train_batch_size", "8"]  # fmt: skip
    plans = {
        mode: make_plan(
            base + ["--gradient_checkpointing_kwargs", json.dumps({"use_reentrant": mode})], target="cuda"
        )
        for mode in (True, False)
    }
    off = make_plan(
        base[:-4] + ["--gradient_checkpointing", "false", "--per_device_train_batch_size", "8"], target="cuda"
    )
    acts = {k: p["dry_run"]["activations_bytes"] for k, p in plans.items()}
    assert acts[True] < acts[False] < off["dry_run"]["activations_bytes"]
    for plan in (*plans.values(), off):  # the closed form sees the same order
        assert plan["estimate"]["peak_bytes"] == pytest.approx(plan["dry_run"]["peak_bytes"], rel=0.15)


def test_optimizer_state_bytes():
    assert optimizer_state_bytes("adamw_torch") == 8
    assert optimizer_state_bytes("adamw_torch_fused") == 8
    assert optimizer_state_bytes("adamw_bnb_8bit") == 2
    assert optimizer_state_bytes("paged_adamw_8bit") == 2


# ---- CLI ------------------------------------------------------------------------------------
def test_cli_plan_json_and_text():
    res = _run_cli(
        "plan",
        "--model_name_or_path",
        "tiny",
        "--strategy",
        "lora",
        "--bits",
        "8",
        "--json",
        "--target",
        "cpu",
    )
    assert res.returncode == 0, res.stderr
    plan = json.loads(res.stdout)
    assert plan["settings"]["strategy"] == "lora" and plan["target"] == "cpu"
    for key in (
        "peak_bytes",
        "peak_phase",
        "weights",
        "grads_bytes",
        "optimizer_bytes",
        "activations_bytes",
        "temporaries_bytes",
    ):
        assert key in plan["dry_run"] and key in plan["estimate"]
    assert plan["dry_run"]["peak_phase"] in ("forward", "backward", "optimizer")
    text = _run_cli("plan", "--model_name_or_path", "tiny", "--no_dry_run")
    assert text.returncode == 0 and "PEAK" in text.stdout and "closed form" in text.stdout


def test_plain_llama_config_is_planned_with_a_clip_tower(tmp_path):
    cfg = {"model_type": "llama", "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2,
           "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000}  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    res = _run_cli(
        "plan",
        "--model_name_or_path",
        str(tmp_path),
        "--strategy",
        "lora",
        "--bits",
        "4",
        "--json",
        "--model_max_length",
        "1024",
    )
    assert res.returncode == 0, res.stderr
    plan = json.loads(res.stdout)
    assert plan["settings"]["seq_len"] == 576 + 48  # CLIP ViT-L/14-336's patches
    assert any("clip-vit-large-patch14-336" in n for n in plan["notes"])


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--model_name_or_path", "{bert}"], "model_type 'bert'"),
        (["--model_name_or_path", "{badllava}"], "cannot build a config"),  # transformers refuses the file
        (
            ["--model_name_or_path", "{badsize}"],
            "text_config.hidden_size -5: expected an integer in [1, 65536]",
        ),
        (["--model_name_or_path", "/nonexistent/x"], "no weights needed"),
        (["--model_name_or_path", "tiny", "--optim", "adamw_nonsense"], "adamw_nonsense"),
        (["--model_name_or_path", "tiny", "--budget", "lots"], "--budget 'lots'"),
        (["--model_name_or_path", "tiny", "--budget", "1MB"], "smallest configuration"),
        (
            [
                "--model_name_or_path",
                "tiny",
                "--strategy",
                "projector_only",
                "--num_unfreeze_early_layers",
                "2",
            ],
            "contradicts",
        ),
        (SEVEN_B[:2] + ["--model_max_length", "512"], "--model_max_length 512"),
    ],
)
def test_bad_input_is_one_error_line(args, expected, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    bad = tmp_path / "bad_llava"
    bad.mkdir()  # sizes in range, but the width is no multiple of the heads
    (bad / "config.json").write_text(
        json.dumps(
            {
                "model_type": "llava",
                "text_config": {"model_type": "llama", "hidden_size": 250, "num_attention_heads": 4},
            }
        )
    )
    badsize = tmp_path / "bad_size"
    badsize.mkdir()  # checked by the planner before transformers reads it
    (badsize / "config.json").write_text(
        json.dumps({"model_type": "llava", "text_config": {"model_type": "llama", "hidden_size": -5}})
    )
    args = [
        {"{bert}": str(tmp_path), "{badllava}": str(bad), "{badsize}": str(badsize)}.get(a, a) for a in args
    ]
    res = _run_cli("plan", *args)
    assert res.returncode in (1, 2), res.stdout
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and expected in lines[0], res.stderr
    assert "Traceback" not in res.stderr


def test_parse_size():
    assert parse_size("24GB") == parse_size("24 GiB") == parse_size("24") == 24 * GIB
    assert parse_size("16000MB") == 16000 * MIB
    with pytest.raises(ValueError):
        parse_size("-3GB")


# ---- --budget -------------------------------------------------------------------------------
def test_budget_yaml_is_a_ready_config_that_fits(tmp_path):
    argv = ["--model_name_or_path", "tiny", "--strategy", "lora", "--bits", "8", "--per_device_train_batch_size", "16",
            "--learning_rate", "3e-4"]  # fmt: skip
    full = make_plan(argv, target="cpu", dry=False)["estimate"]["peak_bytes"]
    budget = int(full * 0.8)  # the requested batch does not fit; smaller micro-batches with accumulation do
    found = search(argv, budget_bytes=budget, margin=0.0, target="cpu", top=2)
    assert found["candidates"]
    for cand in found["candidates"]:
        assert cand["plan"]["dry_run"]["peak_bytes"] <= budget
        s = cand["settings"]
        assert s["batch_size"] * s["gradient_accumulation_steps"] == 16  # the effective batch is kept
        body = yaml.safe_load(cand["yaml"])
        assert body["learning_rate"] == 3e-4  # the user's own settings are kept
        path = tmp_path / "fit.yaml"
        path.write_text(cand["yaml"])
        replan = make_plan(["--config", str(path)], target="cpu")
        assert replan["dry_run"]["peak_bytes"] == cand["plan"]["dry_run"]["peak_bytes"]
        assert "Predicted peak" in cand["yaml"].splitlines()[0]


# ---- training runs it ------------------------------------------------------------------------
def test_train_plan_only_prints_the_plan_and_writes_nothing(tmp_path):
    out = tmp_path / "run"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "llava_df.train.workflow",
            "--config",
            "configs/tiny_lora_lowvram.yaml",
            "--synthetic_n",
            "64",
            "--output_dir",
            str(out),
            "--plan_only",
            "true",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr
    assert "memory plan for tiny on cpu" in res.stdout and "PEAK" in res.stdout and "dry run" in res.stdout
    assert not out.exists()


# ---- the 7B presets carry their plan ---------------------------------------------------------
@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("llava15_7b_*.yaml")), ids=lambda p: p.name)
def test_7b_presets_state_their_predicted_peak_and_fit_their_tier(path):
    sys.path.insert(0, str(ROOT / "tools"))
    from derive_7b_configs import TIERS

    header = next(ln for ln in path.read_text().splitlines() if ln.startswith("# Predicted peak"))
    dry, closed = (float(x) for x in re.findall(r"([0-9.]+) GiB", header)[:2])
    rel = str(path.relative_to(ROOT))
    plan = make_plan(["--config", rel], target="cuda", dry=False)
    assert plan["estimate"]["peak_bytes"] / GIB == pytest.approx(
        closed, abs=0.01
    )  # the header is this file's plan
    assert dry <= 0.9 * TIERS[rel]  # fits the tier's smaller end with the 10% margin
