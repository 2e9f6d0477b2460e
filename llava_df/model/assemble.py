"""A LLaVA from a plain LLM and a CLIP tower (LLaVA's stage-1 starting point), and --vision_tower checks.

How to call::

    tower_config("openai/clip-vit-large-patch14-336")    # CLIPVisionConfig: tiny_clip, a folder, the HF cache, or the table below
    check_tower("openai/clip-vit-large-patch14-336", llava_config, "llava-hf/llava-1.5-7b-hf")  # or UsageError naming both
    assembled_config(llm_path, tower, model_args)         # LlavaConfig, from the two config.json files only
    assembled_processor(llm_path, tower, model_args)      # LlavaProcessor: the LLM's tokenizer + <image>, the tower's image processor
    materialize_assembled(llm_path, tower, model_args)    # the weights, once: a from_pretrained-able LLaVA folder (cached)
    materialize_tiny_part("tiny_llm" | "tiny_clip")       # the tiny preset's LLM / tower as their own checkpoints

LLaVA's ``train.py`` does the same in memory (``initialize_vision_modules``): the LLM, the CLIP
tower from ``--vision_tower``, and a new projector of ``--mm_projector_type``, reading the layer
``--mm_vision_select_layer`` (default -1) without CLS. Here the result is saved once under
``$LLAVA_DF_CACHE/assembled-<hash>`` and loaded with ``from_pretrained`` like any LLaVA checkpoint,
so ``--bits 8/4`` quantize it through the one path every checkpoint takes. Cost: one extra copy
of the LLM on disk (13 GB for a 7B in bf16); the folder name hashes both configs and weight
listings, so a changed LLM or tower builds a new one.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch
from huggingface_hub import snapshot_download
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForCausalLM,
    AutoTokenizer,
    CLIPVisionConfig,
    CLIPVisionModel,
    Dinov2Config,
    Dinov2Model,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
)

from llava_df.errors import ModelNotFoundError, UsageError
from llava_df.io import cache_root
from llava_df.model.tiny import (
    load_tiny_processor,
    materialize_folder,
    materialize_tiny,
    save_model_files,
    tiny_config,
)
from llava_df.spec.args import TINY_PARTS
from llava_df.spec.llava_flags import SELECT_FEATURES

logger = logging.getLogger(__name__)

IMAGE_TOKEN = "<image>"
# Shapes of the towers LLaVA's scripts name, so a mismatch is caught offline, before any download.
SHAPE_KEYS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "image_size",
    "patch_size",
)
KNOWN_TOWERS = {
    name: dict(zip(SHAPE_KEYS, shape, strict=True))
    for name, shape in {
        "openai/clip-vit-large-patch14-336": (1024, 4096, 24, 16, 336, 14),  # LLaVA-1.5
        "openai/clip-vit-large-patch14": (1024, 4096, 24, 16, 224, 14),  # LLaVA-1.0 (finetune_qlora.sh)
        "openai/clip-vit-base-patch32": (768, 3072, 12, 12, 224, 32),
        "openai/clip-vit-base-patch16": (768, 3072, 12, 12, 224, 16),
    }.items()
}
# Vision towers saved on their own, by model_type -> the class that loads one (a whole CLIP checkpoint
# loads its vision half through CLIPVisionModel). DINOv2: the smol preset's (llava_df.model.smol).
TOWER_CLASSES = {"clip_vision_model": CLIPVisionModel, "dinov2": Dinov2Model}
# Text models LLaVA builds on (a Llama-architecture config.json is what the planner and strategies know).
SUPPORTED_LLMS = ("llama", "mistral", "qwen2")


# ---- the tiny preset's parts ----------------------------------------------------------------
def materialize_tiny_part(name: str) -> Path:
    """``tiny_llm`` (LlamaForCausalLM + the shipped tokenizer) or ``tiny_clip`` (CLIPVisionModel +
    image processor), cut out of the tiny preset and saved as their own checkpoints (cached)."""

    root = materialize_tiny()

    def write(tmp: Path) -> None:
        llava = LlavaForConditionalGeneration.from_pretrained(root)
        processor = load_tiny_processor()
        if name == "tiny_llm":
            llm = AutoModelForCausalLM.from_config(llava.config.text_config)
            llm.model.load_state_dict(llava.model.language_model.state_dict())
            llm.lm_head.load_state_dict(llava.lm_head.state_dict())
            save_model_files(llm, tmp)
            processor.tokenizer.save_pretrained(tmp)
        else:
            tower = CLIPVisionModel(llava.config.vision_config)
            tower.load_state_dict(llava.model.vision_tower.state_dict())
            save_model_files(tower, tmp)
            processor.image_processor.save_pretrained(tmp)

    return materialize_folder(root / "parts" / name, write)


def resolve_part(name: str, what: str) -> str:
    """A local folder or hub id for an LLM or tower name; tiny parts are materialized."""
    if name in TINY_PARTS:
        return str(materialize_tiny_part(name))
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(
                f"{what} folder {name} has no config.json; pass a save_pretrained folder."
            )
        return str(path)
    return name


# ---- the tower ------------------------------------------------------------------------------
def tower_config(name: str, cache_dir: str | None = None) -> CLIPVisionConfig:
    """The CLIP vision config ``name`` stands for, without weights."""
    if name in KNOWN_TOWERS and not Path(name).is_dir():
        try:  # the real config when it is at hand (same shapes; carries every other field)
            return _vision_part(AutoConfig.from_pretrained(name, cache_dir=cache_dir), name)
        except (OSError, ValueError):
            return CLIPVisionConfig(**KNOWN_TOWERS[name])
    path = resolve_part(name, "--vision_tower")
    try:
        config = AutoConfig.from_pretrained(path, cache_dir=cache_dir)
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(
            f"--vision_tower {name}: cannot read its config ({type(exc).__name__}). Pass a CLIP checkpoint folder, a hub "
            f"id in the local cache (`hf download {name}`), or tiny_clip."
        ) from None
    return _vision_part(config, name)


def _vision_part(config, name: str) -> CLIPVisionConfig | Dinov2Config:
    if config.model_type == "clip":
        return config.vision_config
    if config.model_type in TOWER_CLASSES:  # a tower saved on its own (tiny_clip, the smol preset's DINOv2)
        return config
    raise UsageError(
        f"--vision_tower {name} is a {config.model_type!r} model, not CLIP (clip / clip_vision_model). Pass a CLIP "
        "tower such as openai/clip-vit-large-patch14-336 (LLaVA-1.5's)."
    )


def _shape(config) -> dict:
    return {k: getattr(config, k, None) for k in SHAPE_KEYS}


def check_tower(name: str, llava_config, checkpoint: str, cache_dir: str | None = None) -> None:
    """Accept ``--vision_tower name`` on a LLaVA checkpoint only when it is the checkpoint's own tower."""
    wanted = _shape(tower_config(name, cache_dir))
    have = _shape(llava_config.vision_config)
    if wanted != have:
        diff = ", ".join(f"{k} {have[k]} vs {wanted[k]}" for k in SHAPE_KEYS if have[k] != wanted[k])
        own = next((known for known, shape in KNOWN_TOWERS.items() if shape == have), None)
        if checkpoint == "tiny" or have == _shape(_tiny_vision()):
            own = "tiny_clip"
        raise UsageError(
            f"--vision_tower {name} is not the tower of checkpoint {checkpoint} ({own or 'its own CLIP tower'}): {diff}. "
            f"A LLaVA checkpoint keeps its tower; drop --vision_tower or pass {own or 'the matching tower'}. To pair a "
            "new tower with an LLM, pass the plain LLM as --model_name_or_path (stage 1)."
        )


def _tiny_vision():

    return tiny_config().vision_config


# ---- LLM + tower -> LLaVA -------------------------------------------------------------------
def llm_config(llm: str, cache_dir: str | None = None):
    config = AutoConfig.from_pretrained(resolve_part(llm, "--model_name_or_path"), cache_dir=cache_dir)
    if config.model_type not in SUPPORTED_LLMS:
        raise UsageError(
            f"--model_name_or_path {llm} is a {config.model_type!r} model. llava_df builds LLaVA from "
            f"{', '.join(SUPPORTED_LLMS)} LLMs (with --vision_tower) or loads LLaVA checkpoints (model_type 'llava')."
        )
    return config


def _tokenizer(llm_path: str, cache_dir: str | None):
    tok = AutoTokenizer.from_pretrained(llm_path, cache_dir=cache_dir)
    if IMAGE_TOKEN not in tok.get_vocab():
        tok.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    if tok.pad_token is None:  # LLaVA v1 pads with unk; an LLM without unk pads with EOS
        tok.pad_token = tok.unk_token or tok.eos_token
    return tok


def assembled_config(llm: str, tower: str, model_args) -> LlavaConfig:
    """The LlavaConfig of LLM ``llm`` + tower ``tower`` (LLaVA's defaults: layer -1, no CLS, GELU MLP)."""
    cache_dir = getattr(model_args, "cache_dir", None)
    text = llm_config(llm, cache_dir)
    vision = tower_config(tower, cache_dir)
    tok = _tokenizer(resolve_part(llm, "--model_name_or_path"), cache_dir)
    text.vocab_size = max(text.vocab_size, len(tok))
    layer = model_args.mm_vision_select_layer
    feature = model_args.mm_vision_select_feature or "patch"
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tok.convert_tokens_to_ids(IMAGE_TOKEN),
        image_seq_length=(vision.image_size // vision.patch_size) ** 2 + (feature == "cls_patch"),
        vision_feature_layer=-1 if layer is None else layer,
        vision_feature_select_strategy=SELECT_FEATURES[feature],
        projector_hidden_act="gelu",
        pad_token_id=tok.pad_token_id,
    )


def assembled_processor(llm: str, tower: str, model_args) -> LlavaProcessor:
    cache_dir = getattr(model_args, "cache_dir", None)
    tok = _tokenizer(resolve_part(llm, "--model_name_or_path"), cache_dir)
    image_processor = AutoImageProcessor.from_pretrained(
        resolve_part(tower, "--vision_tower"), cache_dir=cache_dir
    )
    vision = tower_config(tower, cache_dir)
    feature = model_args.mm_vision_select_feature or "patch"
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=vision.patch_size,
        vision_feature_select_strategy=SELECT_FEATURES[feature],
        num_additional_image_tokens=1,  # CLIP's CLS token
    )


def _listing(path: str, cache_dir: str | None) -> dict:
    """What identifies a checkpoint without hashing its weights: config.json and weight file names + sizes."""
    folder = Path(path)
    if not folder.is_dir():
        folder = Path(
            snapshot_download(
                path, cache_dir=cache_dir, allow_patterns=["*.json", "*.safetensors", "*.bin", "*.model"]
            )
        )
    files = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file()}
    return {"config": (folder / "config.json").read_text(), "files": files}


def materialize_assembled(
    llm: str,
    tower: str,
    model_args,
    dtype: torch.dtype | None = None,
    *,
    info: dict | None = None,
    verify=None,
) -> Path:
    """Save LLM ``llm`` + tower ``tower`` + a new projector as one LLaVA checkpoint; return its folder.

    ``info``: recorded in config.json's ``llava_df`` beside ``assembled_from`` (a preset's sources);
    ``verify(folder)``: why a freshly built folder must not be kept (None: keep it), see build_once.
    """

    cache_dir = getattr(model_args, "cache_dir", None)
    llm_path = resolve_part(llm, "--model_name_or_path")
    tower_path = resolve_part(tower, "--vision_tower")
    config = assembled_config(llm, tower, model_args)
    key = {
        "llm": _listing(llm_path, cache_dir),
        "tower": _listing(tower_path, cache_dir),
        "config": config.to_dict(),
        "dtype": str(dtype),
        **({"info": info} if info else {}),
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    target = cache_root() / f"assembled-{digest}"

    def write(tmp: Path) -> None:
        logger.info("building a LLaVA from %s + %s (once; cached in %s)", llm, tower, target)
        kwargs = {"cache_dir": cache_dir, "dtype": dtype or "auto"}
        language = AutoModelForCausalLM.from_pretrained(llm_path, **kwargs)
        vision = TOWER_CLASSES.get(config.vision_config.model_type, CLIPVisionModel).from_pretrained(
            tower_path, **kwargs
        )
        with torch.device("meta"):
            model = LlavaForConditionalGeneration(config)
        # Real modules replace the meta ones: no second copy of the LLM is ever allocated.
        model.model.language_model = language.model
        model.lm_head = language.lm_head
        model.model.vision_tower = vision
        projector = type(model.model.multi_modal_projector)(config)  # LLaVA's init: nn.Linear defaults
        model.model.multi_modal_projector = projector.to(next(language.parameters()).dtype)
        if config.text_config.vocab_size > language.config.vocab_size:  # <image> was added
            model.resize_token_embeddings(config.text_config.vocab_size, mean_resizing=True)
        model.config.llava_df = {"assembled_from": {"llm": llm, "vision_tower": tower}, **(info or {})}
        save_model_files(model, tmp)
        assembled_processor(llm, tower, model_args).save_pretrained(tmp)

    return materialize_folder(target, write, verify=verify)


def is_llava(config) -> bool:
    return getattr(config, "model_type", None) == "llava"
