"""LLaVA's own training scripts run as typed (issue 13): their flag lines, with only the tiny preset swapped in.

The scripts are in tests/data/llava_scripts/ verbatim. What is swapped, and why:
- model, tower, data and output paths: the tiny preset's parts and tiny files (no download);
- --bf16/--tf32 False: CPU-safe precision; --report_to none: wandb is not installed;
- --deepspeed dropped: DeepSpeed's launcher is issue 11's;
- --max_steps 1 --per_device_train_batch_size 2: one step each.
Every other flag is LLaVA's, with LLaVA's meaning.
"""

from __future__ import annotations

import json
import shlex
from importlib.util import find_spec
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_training import build

from llava_df.data.synthetic import SyntheticConfig, generate
from llava_df.errors import ConfigError, UsageError
from llava_df.spec.args import ModelArguments
from llava_df.spec.resolve import parse_spec
from llava_df.train.workflow import main as train_main
from llava_df.train.workflow import train

SCRIPTS = Path(__file__).parent / "data" / "llava_scripts"
LLAVA_CHECKPOINTS = (
    "liuhaotian/llava-v1.5-13b",
)  # LLaVA checkpoints -> tiny; everything else is a plain LLM


def script_flags(name: str, **env: str) -> list[str]:
    """The flags of the script's `deepspeed llava/train/train_mem.py ...` line, $VARIABLES substituted."""
    text = (SCRIPTS / name).read_text()
    for var, value in env.items():
        text = text.replace(f"${var}", value)
    lines = [line for line in text.replace("\\\n", " ").splitlines() if line.strip().startswith("deepspeed")]
    assert len(lines) == 1, name
    tokens = shlex.split(lines[0])
    assert tokens[:2] == ["deepspeed", "llava/train/train_mem.py"]
    return tokens[2:]


def swap(flags: list[str], **values: str) -> list[str]:
    """Replace the values of the named flags; a value None drops the flag."""
    out, i = [], 0
    while i < len(flags):
        name = flags[i][2:]
        value = flags[i + 1]
        if name in values:
            if values[name] is not None:
                out += [flags[i], values[name]]
        else:
            out += [flags[i], value]
        i += 2
    return out


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """A detection set in LLaVA's conversation format and a caption set in LLaVA-Pretrain's."""
    from llava_df.data.captions import write_captions

    root = tmp_path_factory.mktemp("llava_data")
    write_captions(root / "captions", n=12)
    (root / "det").mkdir()
    records = []
    for s in generate(SyntheticConfig(n=24, seed=3)):
        # non-square images, so --image_aspect_ratio pad has something to do
        s.image.crop((0, 8, 64, 56)).save(root / "det" / f"{s.id}.png")
        records.append(
            {
                "id": s.id,
                "image": f"{s.id}.png",
                "conversations": [
                    {"from": "human", "value": "<image>\nIs this face real or fake?"},
                    {"from": "gpt", "value": "Fake" if s.is_fake else "Real"},
                ],
            }
        )
    (root / "det" / "data.json").write_text(json.dumps(records))
    return root


def _cpu(flags: list[str], out: Path, **values) -> list[str]:
    model = values.pop("model_name_or_path")
    return [
        *swap(
            flags,
            deepspeed=None,
            model_name_or_path=model,
            vision_tower="tiny_clip",
            output_dir=str(out),
            bf16="False",
            tf32="False",
            report_to="none",
            per_device_train_batch_size="2",
            **values,
        ),
        "--max_steps",
        "1",
    ]


@pytest.fixture(scope="module")
def pretrained(tiny_data, tmp_path_factory):
    """scripts/v1_5/pretrain.sh: stage 1 on captions."""
    out = tmp_path_factory.mktemp("runs") / "llava-v1.5-13b-pretrain"
    flags = _cpu(
        script_flags("pretrain.sh"),
        out,
        model_name_or_path="tiny_llm",
        data_path=str(tiny_data / "captions" / "captions.json"),
        image_folder=str(tiny_data / "captions"),
    )
    return train_main(flags), out


@pytest.mark.slow
def test_pretrain_sh_is_stage1_on_captions(pretrained):
    results, out = pretrained
    assert results["task"] == "caption" and results["strategy"] == "projector_only" and results["steps"] == 1
    assert results["config"]["data"]["conv_template"] == "plain"
    assert (out / "mm_projector.safetensors").is_file() and not (out / "scores.json").exists()
    state = load_file(out / "mm_projector.safetensors")
    assert all(k.startswith("model.mm_projector.") for k in state)  # LLaVA's stage-1 key layout
    assert results["config"]["model"]["mm_vision_select_layer"] == -2
    assert json.loads((out / "results.json").read_text())["test"]["loss"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("script", ["finetune_lora.sh", "finetune_task_lora.sh"])
def test_v1_5_finetune_scripts_run_as_typed(script, tiny_data, pretrained, tmp_path):
    flags = script_flags(script)
    model = flags[flags.index("--model_name_or_path") + 1]
    values = {
        "model_name_or_path": "tiny" if model in LLAVA_CHECKPOINTS else "tiny_llm",
        "data_path": str(tiny_data / "det" / "data.json"),
        "image_folder": str(tiny_data / "det"),
        "dataloader_num_workers": "0",
    }
    if "--pretrain_mm_mlp_adapter" in flags:  # LLaVA's path names the .bin; stage 1 here wrote .safetensors
        values["pretrain_mm_mlp_adapter"] = str(pretrained[1] / "mm_projector.bin")
    results = train_main(_cpu(flags, tmp_path / "run", **values))
    config = results["config"]
    assert results["steps"] == 1 and results["strategy"] == "lora" and results["task"] == "detect"
    assert config["data"]["conv_template"] == "vicuna_v1"  # --version v1
    assert config["data"]["image_aspect_ratio"] == "pad"
    assert config["model"]["lora_r"] == 128 and config["training"]["mm_projector_lr"] == 2e-5
    if "pretrain_mm_mlp_adapter" in values:
        assert results["projector_init"] == f"file:{pretrained[1] / 'mm_projector.safetensors'}"
        assert any("mm_projector.bin: not there" in n for n in config["notes"])
    else:
        assert results["projector_init"] == "checkpoint"  # the LLaVA checkpoint's own mlp2x_gelu


@pytest.mark.slow
@pytest.mark.parametrize("prompt_version", ["v1", "llava_llama_2"])
def test_original_llava_qlora_script(prompt_version, tiny_data, pretrained, tmp_path):
    flags = script_flags("finetune_qlora.sh", PROMPT_VERSION=prompt_version, MODEL_VERSION="tiny")
    run = _cpu(
        flags,
        tmp_path / "run",
        model_name_or_path="tiny_llm",
        data_path=str(tiny_data / "det" / "data.json"),
        image_folder=str(tiny_data / "det"),
        pretrain_mm_mlp_adapter=str(pretrained[1] / "mm_projector.safetensors"),
    )
    results = train_main(run)
    assert results["bits"] == 4 and results["steps"] == 1
    assert results["config"]["data"]["conv_template"] == {"v1": "vicuna_v1"}.get(
        prompt_version, prompt_version
    )


@pytest.mark.slow
def test_stage2_projector_starts_equal_to_stage1_output(pretrained):
    _, out = pretrained
    args = ModelArguments(
        model_name_or_path="tiny_llm",
        vision_tower="tiny_clip",
        mm_vision_select_layer=-2,
        pretrain_mm_mlp_adapter=str(out / "mm_projector.safetensors"),
    )
    model, _ = build(args)
    saved = load_file(out / "mm_projector.safetensors")
    own = model.model.multi_modal_projector.state_dict()
    assert set(own) == {k.removeprefix("model.mm_projector.") for k in saved}
    for key, value in own.items():
        assert torch.equal(value, saved[f"model.mm_projector.{key}"])


# ---- LLaVA's image and vision-layer semantics ----------------------------------------------
def expand2square(img, background_color):
    """LLaVA's llava/mm_utils.py expand2square, written out as the reference."""
    from PIL import Image

    width, height = img.size
    if width == height:
        return img
    size = max(width, height)
    result = Image.new(img.mode, (size, size), background_color)
    result.paste(img, (0, (width - height) // 2) if width > height else ((height - width) // 2, 0))
    return result


@pytest.mark.parametrize("size", [(64, 37), (21, 50)])
def test_image_aspect_ratio_pad_is_llava_expand2square(size):
    import numpy as np
    from PIL import Image

    from llava_df.model.processor import apply_image_aspect_ratio, image_aspect_ratio
    from llava_df.model.tiny import load_tiny_processor

    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    square = load_tiny_processor()
    assert image_aspect_ratio(square) == "square"
    padded, ratio, note = apply_image_aspect_ratio(load_tiny_processor(), "pad", "tiny")
    assert ratio == "pad" and "resizes without padding" in note
    mean = tuple(int(x * 255) for x in square.image_processor.image_mean)
    reference = square.image_processor(expand2square(img, mean), return_tensors="pt")["pixel_values"]
    ours = padded.image_processor(img, return_tensors="pt")["pixel_values"]
    plain = square.image_processor(img, return_tensors="pt")["pixel_values"]
    assert torch.allclose(ours, reference, atol=1e-6)
    assert not torch.allclose(plain, reference, atol=1e-2)  # padding changes the features' input
    # "square" on the converted processor is the original pixels again
    back, _, _ = apply_image_aspect_ratio(padded, "square", "run")
    assert torch.allclose(back.image_processor(img, return_tensors="pt")["pixel_values"], plain, atol=1e-6)


@pytest.mark.parametrize("layer", [-1, -2, 1])
def test_mm_vision_select_layer_picks_that_hidden_state(layer):
    from llava_df.model.tiny import example_batch

    model, processor = build(ModelArguments(mm_vision_select_layer=layer))
    assert model.config.vision_feature_layer == layer
    pixels = example_batch(processor, batch_size=1)["pixel_values"]
    with torch.no_grad():
        hidden = model.model.vision_tower(pixels, output_hidden_states=True).hidden_states[layer][:, 1:]
        expected = model.model.multi_modal_projector(hidden)
        got = model.model.get_image_features(pixel_values=pixels)
    got = got.pooler_output if hasattr(got, "pooler_output") else got
    got = torch.cat(list(got)) if isinstance(got, (list, tuple)) else got
    assert torch.allclose(got.reshape(expected.shape), expected, atol=1e-5)


# ---- refusals, before anything loads --------------------------------------------------------
@pytest.mark.parametrize(
    "flags, message",
    [
        (["--mm_use_im_start_end", "True"], "HF LLaVA has no image start/end tokens"),
        (["--mm_use_im_patch_token", "True"], "no image patch token"),
        (["--image_aspect_ratio", "anyres"], "anyres is LLaVA-1.6's tiling"),
        (["--version", "v0"], "LLaVA-v0's '###' layout"),
        (["--version", "v1", "--conv_template", "llava_v1"], "name different templates"),
        (["--model_name_or_path", "tiny_llm"], "add --vision_tower tiny_clip"),
        (["--model_name_or_path", "tiny_clip"], "is a vision tower"),
        (["--mm_patch_merge_type", "spatial_unpad"], "only flat"),
        (["--freeze_mm_mlp_adapter", "True"], "always trains the projector"),
        (["--task", "captions"], "expected detect"),
        (["--deepspeed", "./scripts/zero2.json"], "no such file. Pass a DeepSpeed JSON, or zero2 / zero3"),
        pytest.param(
            ["--report_to", "wandb"],
            "--report_to wandb: not installed here",
            marks=pytest.mark.skipif(find_spec("wandb") is not None, reason="wandb is installed"),
        ),
        pytest.param(
            ["--deepspeed", "zero2"],
            "needs DeepSpeed, which is not installed",
            marks=pytest.mark.skipif(find_spec("deepspeed") is not None, reason="DeepSpeed is installed"),
        ),
    ],
)
def test_llava_flags_that_hf_llava_cannot_honour_are_refused(flags, message):
    with pytest.raises(ConfigError, match=message):
        parse_spec(flags)


def test_version_is_the_conv_template_registry(tiny_data):
    parsed = parse_spec(["--version", "v1"])
    assert parsed.data.conv_template == "vicuna_v1" and parsed.data.task == "detect"
    parsed = parse_spec(["--version", "plain", "--data_path", str(tiny_data / "captions" / "captions.json")])
    assert parsed.data.conv_template == "plain" and parsed.data.task == "caption"
    assert parse_spec(["--version", "plain", "--task", "detect"]).data.task == "detect"


def test_vision_tower_must_be_the_checkpoints_own():
    from llava_df.model.build import model_config

    assert model_config(ModelArguments(vision_tower="tiny_clip")).vision_config.hidden_size == 128
    with pytest.raises(UsageError) as err:
        model_config(ModelArguments(vision_tower="openai/clip-vit-large-patch14-336"))
    text = str(err.value)
    assert (
        "openai/clip-vit-large-patch14-336" in text
        and "tiny_clip" in text
        and "hidden_size 128 vs 1024" in text
    )


def test_plain_llm_plus_tower_is_a_llava_with_llavas_defaults():
    from llava_df.model.build import load_processor, model_config

    args = ModelArguments(model_name_or_path="tiny_llm", vision_tower="tiny_clip")
    config = model_config(args)
    assert config.model_type == "llava" and config.vision_feature_layer == -1  # LLaVA's default
    assert config.vision_feature_select_strategy == "default"
    processor = load_processor(args)
    assert processor.tokenizer.convert_tokens_to_ids("<image>") == config.image_token_index


def test_caption_task_needs_caption_records(tiny_data, tmp_path):
    from llava_df.errors import DataError

    with pytest.raises(ConfigError, match="reads image-caption pairs from --data_path"):
        parse_spec(["--version", "plain", "--output_dir", str(tmp_path / "o")])
    multi = json.loads((tiny_data / "captions" / "captions.json").read_text())
    multi[0]["conversations"] += [{"from": "human", "value": "More?"}, {"from": "gpt", "value": "No."}]
    bad = tmp_path / "multi.json"
    bad.write_text(json.dumps(multi))
    with pytest.raises(DataError, match=r"multi.json\[0\]: a caption record has one human turn"):
        train(parse_spec(
            ["--version", "plain", "--data_path", str(bad), "--image_folder", str(tiny_data / "captions"),
             "--output_dir", str(tmp_path / "o")]
        ))  # fmt: skip
    assert not (tmp_path / "o").exists()  # nothing written before the data is valid
