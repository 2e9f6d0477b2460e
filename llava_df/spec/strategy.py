"""The training strategies by name, and the one rule for which flags mean which strategy.

How to call (the spec does, once; everything else reads ``RunSpec.strategy``)::

    STRATEGIES                                   # {name: what trains}: the only list of strategy names
    notes = complete_strategy_flags(values, explicit)   # --strategy -> LLaVA's flags, in place on argparse's namespace
    resolve_strategy(model_args) -> str          # flags -> strategy; ValueError naming both flags on a contradiction

The three strategies of the users' notes (seeds/000):

- ``projector_only`` (``--tune_mm_mlp_adapter True`` / ``--tune_deepfake_mlp_adapter True``):
  the projector trains, everything else is frozen.
- ``lora`` (``--lora_enable True``): PEFT LoRA on the LLM's linear layers only, plus the projector.
- ``unfreeze_early`` (``--num_unfreeze_early_layers N``): the first N decoder layers train in
  full (loaded unquantized), LoRA on the others, plus the projector.

What each one does to a model is ``llava_df.model.strategies`` (a registry keyed by these names).
"""

from __future__ import annotations

STRATEGIES: dict[str, str] = {
    "projector_only": "only the projector trains (LLaVA --tune_mm_mlp_adapter)",
    "lora": "LoRA on the LLM's linear layers + the projector",
    "unfreeze_early": "first N LLM layers fully trained, LoRA on the rest, + the projector",
}


def check_name(name: str) -> str:
    if name not in STRATEGIES:
        raise ValueError(
            f"Unknown strategy {name!r}. Valid strategies: {', '.join(STRATEGIES)}. Check --strategy."
        )
    return name


def complete_strategy_flags(values, explicit: set[str]) -> list[str]:
    """Set on ``values`` (argparse's namespace, before any argument dataclass is built) the LLaVA flags
    that ``--strategy`` (or an alias) stands for, unless given; returns notes.

    A flag given explicitly and contradicting the strategy is left alone: resolve_strategy fails on it.
    """
    v, notes = values, []
    if v.strategy in ("lora", "unfreeze_early") and "lora_enable" not in explicit:
        v.lora_enable = True
        notes.append(f"--strategy {v.strategy} -> --lora_enable True")
    if v.strategy == "projector_only" and not {"tune_mm_mlp_adapter", "tune_deepfake_mlp_adapter"} & explicit:
        v.tune_mm_mlp_adapter = True
        notes.append("--strategy projector_only -> --tune_mm_mlp_adapter True")
    if v.num_unfreeze_early_layers and "lora_enable" not in explicit and not v.lora_enable:
        v.lora_enable = True  # unfreeze_early = first N layers + LoRA on the rest (seeds/000, scheme B)
        notes.append(f"--num_unfreeze_early_layers {v.num_unfreeze_early_layers} -> --lora_enable True")
    if v.tune_deepfake_mlp_adapter and not v.tune_mm_mlp_adapter:
        v.tune_mm_mlp_adapter = True
        notes.append("--tune_deepfake_mlp_adapter True -> --tune_mm_mlp_adapter True")
    return notes


def check_completed(model_args) -> None:
    """After complete_strategy_flags: --num_unfreeze_early_layers with LoRA off can only mean that
    --lora_enable False was given, and unfreeze_early needs LoRA on the other layers."""
    n = model_args.num_unfreeze_early_layers
    tune = model_args.tune_mm_mlp_adapter or model_args.tune_deepfake_mlp_adapter
    if isinstance(n, int) and n > 0 and not model_args.lora_enable and not tune:
        raise ValueError(
            f"--num_unfreeze_early_layers {n} trains the first layers and LoRA elsewhere (strategy unfreeze_early), "
            "but --lora_enable is False. Pass --lora_enable True, or --num_unfreeze_early_layers 0 for "
            "projector-only training."
        )


def resolve_strategy(model_args) -> str:
    """``--strategy`` if given, else derived from LLaVA's flags; contradictions raise naming both flags.

    No flag at all means ``projector_only`` (the projector is the one part that always trains).
    """
    tune = bool(model_args.tune_mm_mlp_adapter or model_args.tune_deepfake_mlp_adapter)
    tune_flag = (
        "--tune_deepfake_mlp_adapter" if model_args.tune_deepfake_mlp_adapter else "--tune_mm_mlp_adapter"
    )
    lora = bool(model_args.lora_enable)
    n = model_args.num_unfreeze_early_layers
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"--num_unfreeze_early_layers must be an int >= 0, got {n!r}.")
    if not model_args.freeze_backbone:
        raise ValueError(
            "--freeze_backbone False (full LLM fine-tuning) is not a strategy here: it does not fit the 12-24 GB "
            "target. Use --strategy unfreeze_early --num_unfreeze_early_layers N, or --lora_enable True."
        )
    if tune and lora:
        raise ValueError(
            f"{tune_flag} True (train only the projector) contradicts --lora_enable True; pick one."
        )
    if tune and n > 0:
        raise ValueError(
            f"{tune_flag} True (train only the projector) contradicts --num_unfreeze_early_layers {n}; pick one."
        )
    derived = "unfreeze_early" if n > 0 else "lora" if lora else "projector_only"
    explicit = model_args.strategy
    if explicit is None:
        return derived
    check_name(explicit)
    if explicit == "projector_only" and (lora or n > 0):
        flag = "--lora_enable True" if lora else f"--num_unfreeze_early_layers {n}"
        raise ValueError(f"--strategy projector_only contradicts {flag}; drop one of them.")
    if explicit == "lora" and (tune or n > 0):
        flag = f"{tune_flag} True" if tune else f"--num_unfreeze_early_layers {n}"
        hint = "" if tune else " (use --strategy unfreeze_early)"
        raise ValueError(f"--strategy lora contradicts {flag}{hint}; drop one of them.")
    if explicit == "unfreeze_early":
        if tune:
            raise ValueError(f"--strategy unfreeze_early contradicts {tune_flag} True; drop one of them.")
        if n < 1:
            raise ValueError("--strategy unfreeze_early needs --num_unfreeze_early_layers N with N >= 1.")
    return explicit
