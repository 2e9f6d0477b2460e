"""Training strategies: each one only decides which parameters train.

Interface::

    apply_strategy(model, model_args, strategy, *, gradient_checkpointing=False, verbose=True) -> model
        # may return a PeftModel; trainable params in fp32 (llava_df.model.quantization.prepare_for_kbit_training)
    projector_parameters(model) -> list[(name, param)]     # trainable projector params (own LR group)
    param_groups(model, lr, projector_lr=None, weight_decay=0.0, decay_names=None) -> list[dict]
    trainable_report(model) -> dict ; format_report(report) -> str
    REGISTRY: dict[str, Strategy]                          # keyed by llava_df.spec.strategy.STRATEGIES' names

The strategy's name is resolved once, from the flags, by llava_df.spec (RunSpec.strategy); this
module only applies it. The three strategies of the users' notes (seeds/000):

- ``projector_only`` (``--tune_mm_mlp_adapter True`` / ``--tune_deepfake_mlp_adapter True``):
  the projector trains, everything else is frozen.
- ``lora`` (``--lora_enable True``): PEFT LoRA on the LLM's linear layers only, plus the projector.
- ``unfreeze_early`` (``--num_unfreeze_early_layers N``): the first N decoder layers train in
  full (loaded unquantized), LoRA on the others, plus the projector.

The projector trains through plain ``requires_grad`` rather than PEFT ``modules_to_save``:
modules_to_save would keep a frozen copy of it next to the trained one, and the projector is
saved the same way for all three strategies by ``llava_df.model.checkpoint`` (the adapter files
then hold LoRA only). The unfrozen layers are handled the same way, where a second copy of two
7B decoder layers would cost ~0.8 GB.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from dataclasses import dataclass

from peft import LoraConfig, get_peft_model
from peft.utils.constants import DUMMY_TARGET_MODULES
from torch import nn

from llava_df.model.anatomy import component_of, component_paths, decoder_layers, layers_path, unwrap
from llava_df.model.anatomy import projector as projector_of
from llava_df.model.answer_head import answer_head_of
from llava_df.model.compat import quiet_peft_checkpointing_probe
from llava_df.model.quantization import prepare_for_kbit_training, quantized_module_names
from llava_df.spec.strategy import STRATEGIES


# ---- registry -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Strategy:
    name: str
    description: str
    apply: Callable[[nn.Module, object], nn.Module]


REGISTRY: dict[str, Strategy] = {}


def register_strategy(name: str):
    """Register what strategy ``name`` (one of llava_df.spec.strategy.STRATEGIES) does to a model."""

    def wrap(fn):
        if name not in STRATEGIES:
            raise ValueError(
                f"Strategy {name!r} is not one of {', '.join(STRATEGIES)}: add it to llava_df.spec.strategy first."
            )
        if name in REGISTRY:
            raise ValueError(f"Strategy {name!r} is already registered; pick another name.")
        REGISTRY[name] = Strategy(name, STRATEGIES[name], fn)
        return fn

    return wrap


def get_strategy(name: str) -> Strategy:
    if name not in REGISTRY:
        raise KeyError(
            f"Unknown strategy {name!r}. Valid strategies: {', '.join(REGISTRY)}. Check --strategy."
        )
    return REGISTRY[name]


# ---- LoRA -----------------------------------------------------------------------------------
def lora_targets(model_args) -> list[str]:
    targets = [t.strip() for t in model_args.lora_target_modules.split(",") if t.strip()]
    if not targets:
        raise ValueError("--lora_target_modules is empty; give comma-separated names such as q_proj,v_proj.")
    return targets


def lora_target_regex(model: nn.Module, targets: list[str], layer_indices: list[int]) -> str:
    """A regex PEFT full-matches against module names: ``targets`` inside the chosen LLM layers only.

    Anchored at the language model's layer path, so CLIP's own q_proj/k_proj/v_proj/out_proj
    and the projector can never be adapted.
    """
    idx = "|".join(str(i) for i in layer_indices)
    names = "|".join(re.escape(t) for t in targets)
    return rf"{re.escape(layers_path(model))}\.(?:{idx})\.(?:.+\.)?(?:{names})"


def _check_targets(model: nn.Module, targets: list[str], layer_indices: list[int]) -> None:
    layers = decoder_layers(model)
    available = sorted(
        {
            name.rsplit(".", 1)[-1]
            for i in layer_indices
            for name, m in layers[i].named_modules()
            if isinstance(m, nn.Linear)
        }
    )
    missing = [t for t in targets if t not in available]
    if missing:
        raise ValueError(
            f"--lora_target_modules {missing} match no linear layer of the language model. "
            f"Available linear module names: {', '.join(available)}."
        )


def _add_lora(model: nn.Module, model_args, layer_indices: list[int]) -> nn.Module:

    if model_args.lora_bias not in ("none", "lora_only"):
        raise ValueError(
            f"--lora_bias {model_args.lora_bias!r} is not supported: 'all' would train every bias in the model, "
            "the CLIP tower's included. Use 'none' or 'lora_only'."
        )
    targets = lora_targets(model_args)
    _check_targets(model, targets, layer_indices)
    config = LoraConfig(
        r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha,
        lora_dropout=model_args.lora_dropout,
        bias=model_args.lora_bias,
        target_modules=lora_target_regex(model, targets, layer_indices),
        task_type="CAUSAL_LM",
    )
    with quiet_peft_checkpointing_probe():
        return get_peft_model(model, config)  # freezes every non-LoRA parameter


def _empty_peft(model: nn.Module) -> nn.Module:
    # HF Trainer refuses a bitsandbytes model that is not a PeftModel, even when nothing
    # quantized trains (transformers.trainer_utils.validate_quantization_for_training). An
    # adapter-free PeftModel (PEFT's own dummy target) satisfies it and changes nothing else.

    with quiet_peft_checkpointing_probe():
        return get_peft_model(model, LoraConfig(target_modules=DUMMY_TARGET_MODULES))


# ---- the strategies -------------------------------------------------------------------------
@register_strategy("projector_only")
def _projector_only(model: nn.Module, model_args) -> nn.Module:
    model.requires_grad_(False)
    if quantized_module_names(model):
        model = _empty_peft(model)
    projector_of(model).requires_grad_(True)
    return model


@register_strategy("lora")
def _lora(model: nn.Module, model_args) -> nn.Module:
    model.requires_grad_(False)
    model = _add_lora(model, model_args, list(range(len(decoder_layers(model)))))
    projector_of(model).requires_grad_(True)
    return model


@register_strategy("unfreeze_early")
def _unfreeze_early(model: nn.Module, model_args) -> nn.Module:
    layers = decoder_layers(model)
    n, total = model_args.num_unfreeze_early_layers, len(layers)
    if not 1 <= n <= total:
        raise ValueError(
            f"--num_unfreeze_early_layers {n} is out of range: the language model has {total} decoder layers "
            f"(valid: 1..{total})."
        )
    quantized = [name for name in quantized_module_names(model) if name.startswith(f"{layers_path(model)}.")]
    early = [name for name in quantized if int(name.split(".")[len(layers_path(model).split("."))]) < n]
    if early:
        raise ValueError(
            f"Layers to unfreeze are quantized ({early[:3]} ...): build the model with the same "
            f"--num_unfreeze_early_layers {n} so llava_df.model.build loads them unquantized."
        )
    model.requires_grad_(False)
    if n < total:  # with N == all layers there is nothing left for LoRA
        model = _add_lora(model, model_args, list(range(n, total)))
    elif quantized_module_names(model):
        model = _empty_peft(model)
    for layer in decoder_layers(model)[:n]:
        layer.requires_grad_(True)
    projector_of(model).requires_grad_(True)
    return model


def apply_strategy(
    model: nn.Module, model_args, strategy: str, *, gradient_checkpointing: bool = False, verbose: bool = True
):
    """Apply ``strategy`` (resolved once, by the spec), then prepare for training (fp32 trainables, checkpointing).

    Returns the model to train (a PeftModel for lora/unfreeze_early, and for projector_only on a
    quantized model). Prints the trainable-parameter table unless ``verbose=False``.
    """
    model = get_strategy(strategy).apply(model, model_args)
    head = answer_head_of(model)
    if head is not None:  # --answer_head classifier: the head trains under every strategy, like the projector
        head.requires_grad_(True)
    prepare_for_kbit_training(model, gradient_checkpointing=gradient_checkpointing)
    if verbose:
        print(f"strategy: {strategy} ({STRATEGIES[strategy]})")
        print(format_report(trainable_report(model)))
    return model


# ---- what trains ----------------------------------------------------------------------------
def projector_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """Trainable projector parameters with their names, for the ``--mm_projector_lr`` group."""
    return [(n, p) for n, p in projector_of(model).named_parameters() if p.requires_grad]


def param_groups(
    model: nn.Module,
    lr: float,
    projector_lr: float | None = None,
    weight_decay: float = 0.0,
    decay_names: Collection[str] | None = None,
) -> list[dict]:
    """Optimizer parameter groups: (projector | rest) x (decayed | not decayed), empty groups dropped.

    ``decay_names``: the parameter names that get ``weight_decay``; pass the Trainer's own split
    (``Trainer.get_decay_parameter_names``: no decay on biases and norms), as LLaVA's
    ``create_optimizer`` does. None decays every parameter.
    """
    proj_ids = {id(p) for _, p in projector_parameters(model)}
    groups: list[dict] = []
    for is_proj, group_lr in ((False, lr), (True, projector_lr if projector_lr is not None else lr)):
        for decayed in (True, False):
            params = [
                p
                for n, p in model.named_parameters()
                if p.requires_grad
                and (id(p) in proj_ids) == is_proj
                and (decay_names is None or n in decay_names) == decayed
            ]
            if params:
                groups.append(
                    {"params": params, "lr": group_lr, "weight_decay": weight_decay if decayed else 0.0}
                )
    return groups


def _numel(p: nn.Parameter) -> int:
    # 4-bit weights are packed two per byte; the logical size is in their quant_state.
    state = getattr(p, "quant_state", None)
    return int(state.shape.numel()) if state is not None else p.numel()


REPORT_ROWS = ("vision_tower", "projector", "llm_layers_unfrozen", "llm_layers_frozen", "lora", "other")


def trainable_report(model: nn.Module) -> dict:
    """Trainable and total parameters by component. JSON-serialisable.

    Rows: vision_tower, projector, llm_layers_unfrozen (decoder layers whose every base weight
    trains), llm_layers_frozen, lora (adapter weights), other (embeddings, final norm, lm_head or the
    --answer_head classifier head).
    """
    base = unwrap(model)
    paths = component_paths(base)
    layer_prefix = layers_path(base)
    unfrozen = {
        f"{layer_prefix}.{i}"
        for i, layer in enumerate(decoder_layers(base))
        if all(p.requires_grad for n, p in layer.named_parameters() if "lora_" not in n)
    }
    rows = {r: {"trainable": 0, "total": 0} for r in REPORT_ROWS}
    for name, p in base.named_parameters():
        comp = component_of(name, paths)
        if "lora_" in name:
            row = "lora"
        elif comp in ("vision_tower", "projector"):
            row = comp
        elif name.startswith(layer_prefix + "."):
            layer = ".".join(name.split(".")[: len(layer_prefix.split(".")) + 1])
            row = "llm_layers_unfrozen" if layer in unfrozen else "llm_layers_frozen"
        else:
            row = "other"
        rows[row]["total"] += _numel(p)
        rows[row]["trainable"] += _numel(p) if p.requires_grad else 0
    trainable = sum(r["trainable"] for r in rows.values())
    total = sum(r["total"] - (r["total"] if k == "lora" else 0) for k, r in rows.items())  # base model size
    return {
        "components": rows,
        "trainable": trainable,
        "total_base": total,
        "trainable_percent": 100.0 * trainable / max(total, 1),
        "quantized_modules": len(quantized_module_names(base)),
        "unfrozen_layers": sorted(unfrozen, key=lambda s: int(s.rsplit(".", 1)[1])),
    }


def format_report(report: dict) -> str:
    lines = [f"{'component':22s} {'trainable':>14s} {'total':>14s}"]
    for name, row in report["components"].items():
        lines.append(f"{name:22s} {row['trainable']:>14,d} {row['total']:>14,d}")
    lines.append(
        f"{'trainable / base':22s} {report['trainable']:>14,d} {report['total_base']:>14,d}"
        f"  ({report['trainable_percent']:.3f}%, {report['quantized_modules']} quantized modules)"
    )
    return "\n".join(lines)
