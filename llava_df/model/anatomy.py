"""Where things live inside a transformers ``LlavaForConditionalGeneration`` (5.x), by identity.

Interface::

    unwrap(model) -> LlavaForConditionalGeneration         # a PeftModel's base model, else model
    component_paths(model) -> dict[str, str]              # {"vision_tower": "model.vision_tower", ...}
    decoder_layers(model) -> nn.ModuleList                # the LLM's decoder layers
    layers_path(model) -> str                             # "model.language_model.layers"
    projector(model) -> nn.Module                         # the (swapped) multi-modal projector
    component_of(name, paths) -> str                      # which component a parameter name belongs to

Paths are found by walking ``named_modules`` and matching the module objects the model
exposes (``model.model.vision_tower`` ...), never by guessing strings, so a renamed attribute
in a later transformers version fails here loudly instead of silently skipping nothing. In
transformers 5.23 the paths are ``model.vision_tower``, ``model.multi_modal_projector``,
``model.language_model`` (layers at ``model.language_model.layers.{i}``) and ``lm_head``.
"""

from __future__ import annotations

from accelerate.utils import extract_model_from_parallel
from torch import nn

COMPONENTS = ("vision_tower", "projector", "language_model", "lm_head")


def unwrap(model: nn.Module) -> nn.Module:
    """The LlavaForConditionalGeneration inside DDP / DeepSpeed / torch.compile wrappers (accelerate's
    public ``extract_model_from_parallel``) and a PeftModel (LoRA layers injected), or the model."""

    model = extract_model_from_parallel(model)
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _llava(model: nn.Module) -> nn.Module:
    base = unwrap(model)
    inner = getattr(base, "model", None)
    if inner is None or not all(
        hasattr(inner, a) for a in ("vision_tower", "multi_modal_projector", "language_model")
    ):
        raise TypeError(
            f"Expected a transformers LlavaForConditionalGeneration (model.vision_tower, model.multi_modal_projector, "
            f"model.language_model), got {type(base).__name__}."
        )
    return inner


def component_paths(model: nn.Module) -> dict[str, str]:
    """Full module paths (relative to the unwrapped model) of the four LLaVA components."""
    base, llava = unwrap(model), _llava(model)
    wanted = {
        id(llava.vision_tower): "vision_tower",
        id(llava.multi_modal_projector): "projector",
        id(llava.language_model): "language_model",
        id(base.get_output_embeddings()): "lm_head",
    }
    paths: dict[str, str] = {}
    for name, module in base.named_modules():
        key = wanted.get(id(module))
        if key is not None and key not in paths:
            paths[key] = name
    missing = [c for c in COMPONENTS if c not in paths]
    if missing:
        raise RuntimeError(f"Could not locate {missing} in {type(base).__name__}; is this a LLaVA model?")
    return paths


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    layers = getattr(_llava(model).language_model, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise TypeError(
            "The language model has no `.layers` ModuleList (Llama/Mistral/Qwen2-style decoders have one)."
        )
    return layers


def layers_path(model: nn.Module) -> str:
    return f"{component_paths(model)['language_model']}.layers"


def projector(model: nn.Module) -> nn.Module:
    return _llava(model).multi_modal_projector


def component_of(name: str, paths: dict[str, str]) -> str:
    """Component of a parameter/module name given :func:`component_paths` (``other`` if none)."""
    for component, path in paths.items():
        if name == path or name.startswith(path + "."):
            return component
    return "other"
