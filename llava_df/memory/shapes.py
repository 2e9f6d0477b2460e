"""The LlavaConfig a plan is made for, read without weights and without a network.

How to call::

    config, notes = plan_config(model_args)   # model_args: llava_df.spec.args.ModelArguments

``--model_name_or_path`` may be:
- ``tiny`` / ``tiny_llm`` (+ tower): the offline preset, as training builds it;
- ``smol``: the pretrained CPU preset (llava_df.model.smol), its shapes written there (no wheel needed);
- a name in :data:`KNOWN_MODELS` (LLaVA-1.5 7B/13B): shapes written here, so a plan for the model
  the users train needs no download;
- a folder with a LLaVA ``config.json`` (weights not needed);
- a folder with a Llama-architecture LLM ``config.json`` (llama, mistral, qwen2): the LLaVA that
  ``--vision_tower`` (default LLaVA-1.5's CLIP ViT-L/14-336) + a new projector would make.
Anything else is refused with what is supported.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

from llava_df.errors import UsageError, UserError
from llava_df.model.assemble import KNOWN_TOWERS, SUPPORTED_LLMS, tower_config
from llava_df.model.build import _apply_vision_flags, model_config, read_config
from llava_df.spec.llava_flags import SELECT_FEATURES
from llava_df.spec.ranges import check_config_sizes

DEFAULT_TOWER = "openai/clip-vit-large-patch14-336"  # LLaVA-1.5's


def _llava15(hidden: int, intermediate: int, layers: int, heads: int) -> LlavaConfig:
    # llava-hf/llava-1.5-{7b,13b}-hf's config.json: Vicuna (Llama) + CLIP ViT-L/14-336, layer -2, no CLS.
    text = LlamaConfig(
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        vocab_size=32064,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        pad_token_id=32001,
    )
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**KNOWN_TOWERS[DEFAULT_TOWER], projection_dim=768),
        text_config=text,
        image_token_index=32000,
        image_seq_length=576,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        pad_token_id=32001,
    )
    config.dtype = torch.float16  # the hub config's torch_dtype: what from_pretrained(dtype="auto") loads
    return config


KNOWN_MODELS = {
    "llava-hf/llava-1.5-7b-hf": lambda: _llava15(4096, 11008, 32, 32),
    "llava-hf/llava-1.5-13b-hf": lambda: _llava15(5120, 13824, 40, 40),
}


# LLaVA-1.5 trains at 2048 tokens (its scripts pass --model_max_length 2048) although Vicuna's
# position table holds 4096: the plan's default cap, as the checkpoint was trained.
LLAVA_MAX_LENGTH = 2048


def checkpoint_max_length(config, folder: str | Path | None = None) -> tuple[int, str]:
    """(tokens, why): the --model_max_length to assume when none was given.

    The rule: LLaVA-1.5's 2048, but never more than the LLM's position table
    (``text_config.max_position_embeddings``) nor, when ``folder`` has a tokenizer_config.json with
    a real ``model_max_length`` (not transformers' 1e30 "unset"), what the tokenizer says. The tiny
    preset (512 positions) gets 512, the training default.
    """
    limits = {"LLaVA-1.5's training length": LLAVA_MAX_LENGTH}
    positions = getattr(config.text_config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        limits["text_config.max_position_embeddings"] = positions
    if folder is not None and Path(folder, "tokenizer_config.json").is_file():
        try:
            tokens = json.loads(Path(folder, "tokenizer_config.json").read_text()).get("model_max_length")
        except (OSError, ValueError, AttributeError):
            tokens = None  # the tokenizer is not the plan's to check; training's loader reports it
        if isinstance(tokens, int) and 0 < tokens <= 2**24:
            limits["tokenizer_config.json's model_max_length"] = tokens
    why, tokens = min(limits.items(), key=lambda kv: kv[1])
    return tokens, why


def _read_config_json(path: Path) -> dict:
    try:
        return json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"--model_name_or_path {path}: cannot read {path / 'config.json'} ({type(exc).__name__}). "
            "Pass a folder with a LLaVA or Llama-architecture config.json (weights are not needed), `tiny`, or one of: "
            f"{', '.join(KNOWN_MODELS)}."
        ) from None


def _auto_config(path: Path):

    return read_config(path)


def _tower(model_args, notes: list[str]) -> CLIPVisionConfig:

    name = model_args.vision_tower or DEFAULT_TOWER
    if not model_args.vision_tower:
        notes.append(f"no --vision_tower: planned with LLaVA-1.5's {DEFAULT_TOWER}")
    if name in KNOWN_TOWERS and not Path(name).is_dir():
        return CLIPVisionConfig(
            **KNOWN_TOWERS[name]
        )  # shapes are all a plan needs: no hub lookup, no retries
    tower = tower_config(name, model_args.cache_dir)
    check_config_sizes(tower.to_dict(), f"--vision_tower {name}: its config.json")  # before its patch count
    return tower


def _from_llm(text, model_args, notes: list[str]) -> LlavaConfig:
    vision = _tower(model_args, notes)
    feature = model_args.mm_vision_select_feature or "patch"
    layer = model_args.mm_vision_select_layer
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=text.vocab_size - 1,  # any id will do: a plan reads shapes only
        image_seq_length=(vision.image_size // vision.patch_size) ** 2 + (feature == "cls_patch"),
        vision_feature_layer=-1 if layer is None else layer,
        vision_feature_select_strategy=SELECT_FEATURES[feature],
        projector_hidden_act="gelu",
    )


def plan_config(model_args) -> tuple[LlavaConfig, list[str]]:
    """(config, notes) for ``model_args``; see the module docstring. Every size is checked
    (``validation.check_config_sizes``) before anything is built from it."""
    config, notes = _plan_config(model_args)
    # Defaults transformers filled in, a cached hub config, the presets: the same check as the file's.
    check_config_sizes(
        config.to_dict(),
        f"--model_name_or_path {model_args.model_name_or_path} (as transformers reads it, defaults and derived values "
        "included)",
    )
    return config, notes


def _plan_config(model_args) -> tuple[LlavaConfig, list[str]]:

    name, notes = model_args.model_name_or_path, []
    if name in ("tiny", "tiny_llm", "smol"):  # presets: shapes written in code, no wheel or weights read
        return model_config(model_args), notes
    if name in KNOWN_MODELS and not Path(name).is_dir():
        return _apply_vision_flags(KNOWN_MODELS[name](), model_args, name), notes
    path = Path(name).expanduser()
    if not path.is_dir():
        try:  # a hub id already in the local cache: the config training would load
            return model_config(model_args), notes
        except UserError:
            pass
        raise UsageError(
            f"--model_name_or_path {name}: the planner reads shapes offline; it knows `tiny`, "
            f"{', '.join(KNOWN_MODELS)}, and any local folder with a config.json (no weights needed). "
            f"Download the config first (`hf download {name} config.json --local-dir DIR`) and pass DIR."
        )
    raw = _read_config_json(path)
    if not isinstance(raw, dict):
        raise UsageError(
            f"--model_name_or_path {name}: {path / 'config.json'} holds a {type(raw).__name__}, not a JSON object. "
            "Pass a folder with a LLaVA or Llama-architecture config.json."
        )
    # The file's own values, before transformers builds (or trips over) them: the error names the file.
    check_config_sizes(raw, str(path / "config.json"))
    kind = raw.get("model_type")
    if kind == "llava":
        return _apply_vision_flags(_auto_config(path), model_args, name), notes
    if kind in SUPPORTED_LLMS:
        return _from_llm(_auto_config(path), model_args, notes), notes
    raise UsageError(
        f"--model_name_or_path {name}: config.json has model_type {kind!r}; the planner supports LLaVA "
        f"(model_type 'llava') and Llama-architecture LLMs ({', '.join(SUPPORTED_LLMS)}, planned with a CLIP tower). "
        "Pass one of those, or `tiny`."
    )
