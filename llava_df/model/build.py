"""Build the detector: a transformers LLaVA (tiny preset or checkpoint), projector swapped in, quantized.

Interface::

    build_model(model_args, strategy, *, torch_dtype=None, device_map=None) -> BuiltModel
        # .model (projector swapped, --bits applied; strategy NOT applied), .processor, .base, .projector_init
    resolve_checkpoint(name_or_path) -> str               # local folder of a LLaVA checkpoint, or clear error
    swap_projector(model, name, *, weights=None) -> (module, init)
    load_projector_weights(projector, path) -> None       # LLaVA mm_projector.bin or .safetensors
    load_merged(path, *, torch_dtype=None, device_map=None) -> (model, processor)
        # a `python -m llava_df.apps.merge` output, with its projector class restored

``--model_name_or_path tiny`` is materialized once to a local checkpoint (``llava_df.model.tiny``) and
then loaded exactly like ``llava-hf/llava-1.5-7b-hf``: one ``from_pretrained`` path, with the
same ``quantization_config``, for both.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import huggingface_hub
import torch
from safetensors.torch import load_file
from torch import nn
from transformers import AutoConfig, AutoProcessor, LlavaForConditionalGeneration

from llava_df.errors import ModelNotFoundError, UsageError, WeightsError
from llava_df.model.anatomy import projector as projector_of
from llava_df.model.anatomy import unwrap
from llava_df.model.assemble import (
    SUPPORTED_LLMS,
    TINY_PARTS,
    assembled_config,
    assembled_processor,
    check_tower,
    is_llava,
    materialize_assembled,
    resolve_part,
)
from llava_df.model.base_identity import base_identity
from llava_df.model.quantization import (
    dequantized_int8_on_cpu,
    disable_cpu_4bit_repack,
    is_quantized_linear,
    quantization_config,
    require_bitsandbytes,
    skip_modules,
    validate_bits,
)
from llava_df.model.smol import materialize_smol, smol_config
from llava_df.model.tiny import load_tiny_processor, materialize_tiny, tiny_config
from llava_df.projectors import create_projector
from llava_df.spec.llava_flags import SELECT_FEATURES

logger = logging.getLogger(__name__)

PROJECTOR_JSON_KEY = "mm_projector_type"  # LLaVA's config key, kept so saved configs read the same


# ---- checkpoints ----------------------------------------------------------------------------
def _looks_local(name: str) -> bool:
    # Hub ids are "name" or "org/name"; anything else (./x, /abs, ~/x, a/b/c) is meant as a folder.
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name


def resolve_checkpoint(name_or_path: str, cache_dir: str | None = None) -> str:
    """``tiny`` -> the materialized preset; a folder -> itself; a hub id -> itself if it can be loaded.

    Raises FileNotFoundError naming the path and how to obtain it. With ``HF_HUB_OFFLINE=1`` a
    hub id that is not in the local cache fails at once instead of waiting on the network.
    """
    if name_or_path == "tiny":
        return str(materialize_tiny())
    if name_or_path == "smol":
        return str(materialize_smol())
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(
                f"{path} has no config.json: expected a LLaVA checkpoint folder (save_pretrained output, "
                "e.g. from `hf download llava-hf/llava-1.5-7b-hf --local-dir <dir>`)."
            )
        return str(path)
    if _looks_local(name_or_path):
        raise ModelNotFoundError(
            f"Checkpoint folder {name_or_path!r} does not exist. Check --model_name_or_path."
        )
    try:
        AutoConfig.from_pretrained(name_or_path, cache_dir=cache_dir)
    except (OSError, ValueError) as exc:
        offline = huggingface_hub.is_offline_mode()
        where = (
            "HF_HUB_OFFLINE=1 and it is not in the local Hugging Face cache"
            if offline
            else "it could not be fetched"
        )
        raise ModelNotFoundError(
            f"Cannot load LLaVA checkpoint {name_or_path!r}: {where}. Download it on a machine with network "
            f"access: `hf download {name_or_path}` (older hubs: `huggingface-cli download {name_or_path}`), "
            "or pass a local checkpoint folder / `tiny` to --model_name_or_path. "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None
    return name_or_path


def read_config(path: str | os.PathLike, cache_dir: str | None = None):
    """AutoConfig of a checkpoint folder or cached hub id. A config.json that transformers refuses
    (a negative size, a width not divisible by the heads) is the user's to fix: one error line."""
    try:
        return AutoConfig.from_pretrained(path, cache_dir=cache_dir)
    except OSError:
        raise  # not found or unreadable: the callers say how to get it
    except Exception as exc:  # transformers validates fields with several exception types
        lines = [x.strip() for x in str(exc).strip().splitlines()[:2]]
        raise UsageError(
            f"--model_name_or_path {path}: transformers cannot build a config from its config.json "
            f"({type(exc).__name__}: {' '.join(lines)}). Fix that file, or pass another checkpoint."
        ) from None


def _load_config(path: str, cache_dir: str | None = None):
    config = read_config(path, cache_dir)
    if config.model_type != "llava":
        if config.model_type in SUPPORTED_LLMS:
            raise UsageError(
                f"{path} is a plain {config.model_type!r} LLM, not LLaVA. Add --vision_tower (e.g. "
                "openai/clip-vit-large-patch14-336) to build a LLaVA from it with a new projector, as LLaVA's stage 1 "
                "does, or pass a LLaVA checkpoint such as llava-hf/llava-1.5-7b-hf."
            )
        raise UsageError(
            f"{path} is a {config.model_type!r} checkpoint, not LLaVA (model_type 'llava'). llava_df builds "
            f"LlavaForConditionalGeneration models (e.g. llava-hf/llava-1.5-7b-hf or `tiny`), or a LLaVA from a "
            f"{'/'.join(SUPPORTED_LLMS)} LLM plus --vision_tower."
        )
    return config


def _source(model_args) -> tuple[str, str]:
    """("tiny" | "smol" | "llava", checkpoint path) or ("assembled", LLM path): what --model_name_or_path names."""
    name, cache_dir = model_args.model_name_or_path, model_args.cache_dir
    if name in ("tiny", "smol"):  # presets: materialized only when weights or the processor are needed
        return name, name
    if name in TINY_PARTS:
        return "assembled", resolve_part(name, "--model_name_or_path")
    path = resolve_checkpoint(name, cache_dir)
    if model_args.vision_tower and not is_llava(read_config(path, cache_dir)):
        return "assembled", path
    return "llava", path


def _apply_vision_flags(config, model_args, source: str):
    """--mm_vision_select_layer / --mm_vision_select_feature on a checkpoint's config (logged when changed)."""
    layer, feature = model_args.mm_vision_select_layer, model_args.mm_vision_select_feature
    if layer is not None and layer != config.vision_feature_layer:
        n = config.vision_config.num_hidden_layers
        if not -n - 1 <= layer <= n:
            raise UsageError(
                f"--mm_vision_select_layer {layer}: the tower has {n} layers (hidden states {-n - 1}..{n}); LLaVA-1.5 uses -2."
            )
        logger.warning(
            "--mm_vision_select_layer %d: %s was trained reading layer %s",
            layer,
            source,
            config.vision_feature_layer,
        )
        config.vision_feature_layer = layer
    if feature is not None:
        strategy = SELECT_FEATURES[feature]
        if strategy != config.vision_feature_select_strategy:
            logger.warning(
                "--mm_vision_select_feature %s: %s was trained with %s",
                feature,
                source,
                config.vision_feature_select_strategy,
            )
        config.vision_feature_select_strategy = strategy
    return config


def model_config(model_args):
    """The LlavaConfig that ``build_model(model_args)`` would load, read without any weights."""
    kind, path = _source(model_args)
    if kind == "assembled":
        return assembled_config(path, model_args.vision_tower, model_args)
    presets = {"tiny": tiny_config, "smol": smol_config}
    config = presets[kind]() if kind in presets else _load_config(path, model_args.cache_dir)
    if model_args.vision_tower:
        check_tower(model_args.vision_tower, config, model_args.model_name_or_path, model_args.cache_dir)
    return _apply_vision_flags(config, model_args, model_args.model_name_or_path)


def load_processor(model_args):
    """The processor (tokenizer + image processor) of ``model_args``' checkpoint; no weights."""
    kind, path = _source(model_args)
    if kind == "assembled":
        return assembled_processor(path, model_args.vision_tower, model_args)
    if kind == "smol":  # its tokenizer comes from the GGUF: the preset is built (once) to read it
        path = str(materialize_smol())
    processor = (
        load_tiny_processor()
        if kind == "tiny"
        else AutoProcessor.from_pretrained(path, cache_dir=model_args.cache_dir)
    )
    if model_args.mm_vision_select_feature is not None:
        processor.vision_feature_select_strategy = SELECT_FEATURES[model_args.mm_vision_select_feature]
    return processor


# ---- projector ------------------------------------------------------------------------------
def _cast_to_projector_dtype(module: nn.Module, args):
    # The projector is kept in fp32 (see swap_projector) while the vision tower may emit bf16.
    dtype = next(module.parameters()).dtype
    return tuple(a.to(dtype) if torch.is_tensor(a) and a.is_floating_point() else a for a in args)


def _strip_prefix(key: str) -> str:
    for marker in ("mm_projector.", "multi_modal_projector."):
        if marker in key:
            return key.split(marker, 1)[1]
    return key


def load_projector_weights(projector: nn.Module, path: str | os.PathLike) -> None:
    """Load LLaVA's ``mm_projector.bin`` (keys ``model.mm_projector.0.weight`` ...) or a safetensors file.

    Prefixes up to ``mm_projector.`` / ``multi_modal_projector.`` are stripped; every key of the
    projector must be filled and every key of the file used, with matching shapes.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(
            f"--pretrain_mm_mlp_adapter {str(path)!r} does not exist. Pass a stage-1 mm_projector.bin or "
            ".safetensors file, or leave the flag out to start the projector from random weights."
        )
    try:
        if path.suffix == ".safetensors":
            raw = load_file(path)
        else:  # LLaVA's .bin: a pickled dict of tensors; weights_only refuses anything else
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, not a weights file, or a pickle with code in it
        raise WeightsError(
            f"Projector weights {str(path)!r} cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). "
            "Use an intact mm_projector.bin / .safetensors (e.g. another checkpoint's)."
        ) from None
    state = {_strip_prefix(k): v for k, v in raw.items()}
    expected = projector.state_dict()
    name = getattr(projector, "projector_name", type(projector).__name__)
    bad = {k: int((~torch.isfinite(v)).sum()) for k, v in state.items() if v.is_floating_point()}
    if any(bad.values()):  # trained weights are finite: NaN/inf would make every score NaN, silently
        key = next(k for k, n in bad.items() if n)
        raise WeightsError(
            f"Projector weights {str(path)!r} hold {sum(bad.values())} NaN/inf values (e.g. {bad[key]} in {key!r}): the "
            "file is damaged or was written by a diverged run. Use another checkpoint's projector."
        )
    for key, tensor in state.items():
        if key in expected and tuple(expected[key].shape) != tuple(tensor.shape):
            raise WeightsError(
                f"Projector weights {str(path)!r} do not fit projector {name!r}: key {key!r} has shape "
                f"{tuple(tensor.shape)}, expected {tuple(expected[key].shape)}. Check --mm_projector_type and that "
                "the file was trained for this vision tower / LLM width."
            )
    try:
        result = projector.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatch on a key the projector renames while loading
        raise WeightsError(f"Projector weights {str(path)!r} do not fit projector {name!r}: {exc}") from None
    if result.missing_keys or result.unexpected_keys:
        raise WeightsError(
            f"Projector weights {str(path)!r} do not fit projector {name!r}: missing keys {result.missing_keys}, "
            f"unexpected keys {result.unexpected_keys} (file keys after stripping prefixes: {sorted(state)[:8]})."
        )


def projector_dims(config) -> tuple[int, int]:
    """(in_dim, out_dim) of the projector: vision width x number of feature layers -> LLM width."""
    layers = config.vision_feature_layer
    n = 1 if isinstance(layers, int) else len(layers)
    return config.vision_config.hidden_size * n, config.text_config.hidden_size


def swap_projector(
    model: nn.Module, name: str, *, weights: str | os.PathLike | None = None
) -> tuple[nn.Module, str]:
    """Replace LLaVA's projector by ``create_projector(name, ...)``; return (the new module, where its
    weights came from: random, checkpoint or file:<path>, which results.json records as projector_init).

    Initialisation: ``weights`` if given; else, for ``mlp2x_gelu`` (the very architecture of
    HF's LlavaMultiModalProjector), the checkpoint's trained projector weights; else random.

    Kept in fp32 whatever the LLM dtype: it is always trained, and HF Trainer keeps no fp32
    master copy, so bf16 weights would drop updates below 2^-8 of their magnitude; the B-spline
    bases of the KAN projectors are also sensitive to half precision. It costs little (21M params
    for LLaVA-1.5-7B's MLP). A pre-hook casts its input to fp32; LlavaModel casts the output back
    to the embedding dtype.
    """
    base = unwrap(model)
    old = projector_of(base)
    in_dim, out_dim = projector_dims(base.config)
    new = create_projector(name, in_dim, out_dim)
    source = "random"
    if weights is not None:
        load_projector_weights(new, weights)
        source = f"file:{weights}"
    elif (
        name == "mlp2x_gelu"
        and base.config.projector_hidden_act == "gelu"
        and base.config.multimodal_projector_bias
        and not _is_quantized(old)
        and not any(p.is_meta for p in old.parameters())  # a memory plan's weightless model has none to copy
        # a preset assembled from an LLM and a tower holds LLaVA's fresh init, one draw for every seed
        and (getattr(base.config, "llava_df", None) or {}).get("projector") != "untrained"
    ):
        new.load_state_dict(old.state_dict())  # MLPProjector maps linear_1/linear_2 -> 0/2
        source = "checkpoint"  # the checkpoint's own multi_modal_projector
    device = next((p.device for p in old.parameters()), torch.device("cpu"))
    new.to(device=device, dtype=torch.float32)
    new.register_forward_pre_hook(_cast_to_projector_dtype)
    base.model.multi_modal_projector = new
    setattr(base.config, PROJECTOR_JSON_KEY, name)
    logger.info("projector %s (%d -> %d) initialised from %s", name, in_dim, out_dim, source)
    return new, source


def _is_quantized(module: nn.Module) -> bool:

    return any(is_quantized_linear(m) for m in module.modules())


# ---- build ----------------------------------------------------------------------------------
def materialize_base(model_args, *, torch_dtype: torch.dtype | None = None) -> str:
    """The local folder (or cached hub id) ``build_model`` loads weights from; the tiny preset and a
    LLaVA assembled from LLM + --vision_tower are written to the cache first (once, across processes).

    Any process may build it (torchrun ranks, sweep workers, test workers): one does, under a lock,
    the others wait (llava_df.io.build_once), and it is written rank-independently (tiny.save_model_files).
    """
    kind, path = _source(model_args)
    if kind == "assembled":  # LLM + --vision_tower: saved once as a LLaVA checkpoint, then loaded like one
        return str(materialize_assembled(path, model_args.vision_tower, model_args, dtype=torch_dtype))
    if kind == "tiny":
        return str(materialize_tiny())
    if kind == "smol":
        return str(materialize_smol())
    return path


@dataclass(frozen=True)
class BuiltModel:
    """What build_model returns: the model, its processor, and what a checkpoint must record about them."""

    model: LlavaForConditionalGeneration
    processor: object
    base: dict  # {"name", "revision"} of the base (llava_df.model.base_identity): trained parts belong to it
    projector_init: str  # random, checkpoint (the base's own projector) or file:<path>


def build_model(
    model_args, strategy: str, *, torch_dtype: torch.dtype | None = None, device_map=None
) -> BuiltModel:
    """The model ``model_args`` (llava_df.spec.args.ModelArguments) describe, for ``strategy`` (resolved by
    the spec): projector swapped in, --bits applied; the strategy itself is applied later (model.strategies).

    ``torch_dtype``: dtype of every unquantized part (default: the checkpoint's own, fp32 for
    tiny); also the 4-bit compute dtype. ``device_map``: passed to from_pretrained (bitsandbytes
    places quantized weights on the first GPU when None, on CPU without one).
    The first ``--num_unfreeze_early_layers`` layers load unquantized when the strategy is
    ``unfreeze_early``.
    """
    bits = validate_bits(model_args.bits)
    kind, _ = _source(model_args)
    path = materialize_base(model_args, torch_dtype=torch_dtype)
    config = _apply_vision_flags(
        _load_config(path, model_args.cache_dir), model_args, model_args.model_name_or_path
    )
    n_unfrozen = model_args.num_unfreeze_early_layers if strategy == "unfreeze_early" else 0
    skip = skip_modules(config, n_unfrozen)  # also validates N against the layer count
    quant = None
    if bits < 16:
        require_bitsandbytes(bits)
        quant = quantization_config(
            bits,
            skip=skip,
            compute_dtype=torch_dtype or torch.float32,
            double_quant=model_args.double_quant,
            quant_type=model_args.quant_type,
        )
        # On CPU, LLM.int8 logs a warning on every matmul about casting its input to fp16; expected.
        logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)
    model = LlavaForConditionalGeneration.from_pretrained(
        path,
        config=config,
        dtype=torch_dtype or "auto",
        device_map=device_map,
        quantization_config=quant,
        cache_dir=model_args.cache_dir,
    )
    if bits == 4:
        disable_cpu_4bit_repack(model)
    if bits == 8 and getattr(model_args, "int8_cpu_eval", "dequantize") == "dequantize":
        dequantized_int8_on_cpu(model)
    _, init = swap_projector(model, model_args.mm_projector_type, weights=model_args.pretrain_mm_mlp_adapter)
    name = model_args.model_name_or_path + (f" + {model_args.vision_tower}" if kind == "assembled" else "")
    return BuiltModel(model, load_processor(model_args), base_identity(path, name), init)
