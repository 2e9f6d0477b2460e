"""The suite's deprecation policy (tests/conftest.py) and the one PEFT warning we silence."""

from __future__ import annotations

import warnings

import pytest
from tiny_training import build, prepare

from llava_df.spec.args import ModelArguments


def test_a_deprecated_call_of_ours_is_an_error():
    model, _ = build(ModelArguments())
    with pytest.raises(
        FutureWarning, match="is_gradient_checkpointing.*raised by our call at .*test_warnings_policy"
    ):
        _ = model.is_gradient_checkpointing  # transformers 5.x: use is_activation_checkpointing


def test_a_librarys_own_deprecated_call_stays_a_warning():
    # PEFT 0.21 reads transformers' deprecated is_gradient_checkpointing inside PeftModel.__init__.
    # When this stops warning, PEFT has fixed it: drop llava_df.model.compat.quiet_peft_checkpointing_probe.
    from peft import LoraConfig, get_peft_model

    model, _ = build(ModelArguments())
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))
    assert any("is_gradient_checkpointing" in str(w.message) for w in seen)


def test_our_strategies_print_no_deprecation():
    args = ModelArguments(bits=8, lora_enable=True, lora_r=2)
    model, _ = build(args)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        model = prepare(model, args, verbose=False)
    deprecations = [w for w in seen if issubclass(w.category, DeprecationWarning | FutureWarning)]
    assert deprecations == [], [str(w.message) for w in deprecations]
    assert any(p.requires_grad for p in model.parameters())
