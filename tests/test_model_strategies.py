"""Strategies decide which parameters train: exactly those, at 16/8/4 bits; flags resolve or fail clearly."""

import json

import pytest
import torch
from tiny_training import build, prepare

from llava_df.model.anatomy import unwrap
from llava_df.model.strategies import REGISTRY, param_groups, projector_parameters, trainable_report
from llava_df.model.tiny import example_batch
from llava_df.spec.args import ModelArguments
from llava_df.spec.strategy import STRATEGIES, resolve_strategy

N_LAYERS = 4
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def strategy_args(strategy: str, bits: int, **extra) -> ModelArguments:
    flags = {
        "projector_only": {"tune_deepfake_mlp_adapter": True},
        "lora": {"lora_enable": True},
        "unfreeze_early": {"lora_enable": True, "num_unfreeze_early_layers": 2},
    }[strategy]
    return ModelArguments(bits=bits, lora_r=4, lora_alpha=8, **flags, **extra)


def expected_trainable(model, strategy: str) -> set[str]:
    names = {n for n, _ in unwrap(model).named_parameters()}
    expected = {n for n in names if n.startswith("model.multi_modal_projector.")}
    n_unfrozen = 2 if strategy == "unfreeze_early" else 0
    if strategy != "projector_only":
        expected |= {
            n
            for n in names
            for i in range(n_unfrozen, N_LAYERS)
            for t in LORA_TARGETS
            for ab in ("lora_A", "lora_B")
            if n.startswith(f"model.language_model.layers.{i}.") and f".{t}.{ab}." in n
        }
    expected |= {
        n for n in names for i in range(n_unfrozen) if n.startswith(f"model.language_model.layers.{i}.")
    }
    return expected


def test_the_registry_applies_exactly_the_specs_strategy_names():
    assert tuple(REGISTRY) == tuple(STRATEGIES)


@pytest.mark.parametrize(
    "flags,expected",
    [
        ({}, "projector_only"),
        ({"tune_mm_mlp_adapter": True}, "projector_only"),
        ({"tune_deepfake_mlp_adapter": True, "freeze_backbone": True}, "projector_only"),
        ({"lora_enable": True}, "lora"),
        ({"lora_enable": True, "num_unfreeze_early_layers": 2}, "unfreeze_early"),
        ({"num_unfreeze_early_layers": 1}, "unfreeze_early"),
        ({"strategy": "lora"}, "lora"),
        ({"strategy": "projector_only", "tune_mm_mlp_adapter": True}, "projector_only"),
        ({"strategy": "unfreeze_early", "num_unfreeze_early_layers": 3}, "unfreeze_early"),
    ],
)
def test_resolve_strategy(flags, expected):
    assert resolve_strategy(ModelArguments(**flags)) == expected


@pytest.mark.parametrize(
    "flags,pattern",
    [
        (
            {"tune_deepfake_mlp_adapter": True, "lora_enable": True},
            r"--tune_deepfake_mlp_adapter True .* contradicts --lora_enable True",
        ),
        (
            {"tune_mm_mlp_adapter": True, "num_unfreeze_early_layers": 2},
            r"--tune_mm_mlp_adapter True .* contradicts --num_unfreeze_early_layers 2",
        ),
        (
            {"strategy": "projector_only", "lora_enable": True},
            r"--strategy projector_only contradicts --lora_enable True",
        ),
        (
            {"strategy": "lora", "num_unfreeze_early_layers": 2},
            r"--strategy lora contradicts --num_unfreeze_early_layers 2",
        ),
        (
            {"strategy": "lora", "tune_mm_mlp_adapter": True},
            r"--strategy lora contradicts --tune_mm_mlp_adapter True",
        ),
        (
            {"strategy": "unfreeze_early"},
            r"--strategy unfreeze_early needs --num_unfreeze_early_layers N with N >= 1",
        ),
        ({"freeze_backbone": False}, r"--freeze_backbone False"),
        ({"num_unfreeze_early_layers": -1}, r"--num_unfreeze_early_layers must be an int >= 0, got -1"),
    ],
)
def test_contradictions_name_both_flags(flags, pattern):
    with pytest.raises(ValueError, match=pattern):
        resolve_strategy(ModelArguments(**flags))


def test_unknown_strategy_lists_valid_ones():
    with pytest.raises(ValueError, match=r"Unknown strategy 'full'.*projector_only, lora, unfreeze_early"):
        resolve_strategy(ModelArguments(strategy="full"))


@pytest.mark.parametrize("bits", [16, 8, 4])
@pytest.mark.parametrize("strategy", ["projector_only", "lora", "unfreeze_early"])
def test_exactly_the_intended_parameters_train(strategy, bits):
    args = strategy_args(strategy, bits)
    model, processor = build(args)
    model = prepare(model, args, verbose=False)
    base = unwrap(model)
    trainable = {n for n, p in base.named_parameters() if p.requires_grad}
    assert trainable == expected_trainable(model, strategy)
    assert not any("lora" in n for n, _ in base.model.vision_tower.named_parameters())  # CLIP has q_proj too
    assert not any("lora" in n for n, _ in base.model.multi_modal_projector.named_parameters())
    if bits < 16:  # HF Trainer accepts only PeftModels on a bitsandbytes base
        assert type(model).__name__.startswith("PeftModel")

    # Two AdamW steps (LoRA B starts at zero, so A gets its first gradient at step 2) change
    # exactly the trainable tensors and nothing else, int8/nf4 weights and their scales included.
    before = {k: v.clone() for k, v in base.state_dict().items()}
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.0)
    batch = example_batch(processor, batch_size=2)
    model.train()
    for _ in range(2):
        model(**batch).loss.backward()
        opt.step()
        opt.zero_grad()
    after = base.state_dict()
    assert after.keys() == before.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == trainable


def test_unfreeze_more_layers_than_exist():
    with pytest.raises(
        ValueError, match=r"--num_unfreeze_early_layers 5 is out of range: the language model has 4"
    ):
        build(ModelArguments(num_unfreeze_early_layers=5))
    model, _ = build(ModelArguments())
    with pytest.raises(
        ValueError, match=r"--num_unfreeze_early_layers 7 is out of range: the language model has 4"
    ):
        prepare(model, ModelArguments(num_unfreeze_early_layers=7), verbose=False)


def test_unfreezing_quantized_layers_is_refused():
    model, _ = build(ModelArguments(bits=8, lora_enable=True))  # layers 0.. loaded as int8
    with pytest.raises(
        ValueError, match=r"Layers to unfreeze are quantized .* --num_unfreeze_early_layers 2"
    ):
        prepare(model, ModelArguments(bits=8, num_unfreeze_early_layers=2), verbose=False)


def test_unfreeze_all_layers_leaves_nothing_for_lora():
    args = ModelArguments(num_unfreeze_early_layers=N_LAYERS)
    model, _ = build(args)
    model = prepare(model, args, verbose=False)
    report = trainable_report(model)
    assert report["components"]["lora"]["total"] == 0
    assert (
        report["components"]["llm_layers_unfrozen"]["trainable"]
        == report["components"]["llm_layers_unfrozen"]["total"]
        > 0
    )
    assert report["components"]["llm_layers_frozen"]["total"] == 0


def test_lora_targets_matching_nothing():
    args = ModelArguments(lora_enable=True, lora_target_modules="q_proj,qkv_proj,out_proj")
    model, _ = build(args)
    # out_proj exists, but only in the CLIP tower: it must not count.
    with pytest.raises(
        ValueError, match=r"\['qkv_proj', 'out_proj'\] match no linear layer.*Available.*down_proj, .*v_proj"
    ):
        prepare(model, args, verbose=False)


def test_lora_bias_all_is_refused():
    args = ModelArguments(lora_enable=True, lora_bias="all")
    model, _ = build(args)
    with pytest.raises(ValueError, match=r"--lora_bias 'all' is not supported"):
        prepare(model, args, verbose=False)


def test_report_param_groups_and_printed_table(capsys):
    args = strategy_args("unfreeze_early", 16)
    model, _ = build(args)
    model = prepare(model, args)
    printed = capsys.readouterr().out
    assert "strategy: unfreeze_early" in printed and "llm_layers_unfrozen" in printed
    base = unwrap(model)
    report = json.loads(json.dumps(trainable_report(model)))  # JSON-serialisable
    rows = report["components"]
    layers = base.model.language_model.layers
    assert rows["llm_layers_unfrozen"]["trainable"] == sum(
        p.numel() for layer in layers[:2] for p in layer.parameters()
    )
    assert rows["projector"]["trainable"] == rows["projector"]["total"] == 33_024  # 128*128*2 + 2*128
    assert rows["vision_tower"]["trainable"] == 0 and rows["vision_tower"]["total"] > 0
    r, hidden, inter = 4, 128, 352  # LoRA: r * (in + out) per adapted matrix, layers 2 and 3
    per_layer = r * (4 * (hidden + hidden) + 2 * (hidden + inter) + (inter + hidden))
    assert rows["lora"]["trainable"] == rows["lora"]["total"] == 2 * per_layer
    assert report["trainable"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert report["unfrozen_layers"] == ["model.language_model.layers.0", "model.language_model.layers.1"]

    groups = param_groups(model, lr=1e-4, projector_lr=1e-3)
    proj_ids = {id(p) for _, p in projector_parameters(model)}
    assert [g["lr"] for g in groups] == [1e-4, 1e-3]
    assert {id(p) for p in groups[1]["params"]} == proj_ids
    # With the Trainer's decay split, biases and norms get no weight decay in either lr group.
    decay = {n for n, _ in model.named_parameters() if not n.endswith(("bias", "norm.weight"))}
    split = param_groups(model, lr=1e-4, projector_lr=1e-3, weight_decay=0.1, decay_names=decay)
    assert [(g["lr"], g["weight_decay"]) for g in split] == [
        (1e-4, 0.1),
        (1e-4, 0.0),
        (1e-3, 0.1),
        (1e-3, 0.0),
    ]
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(names[id(p)] not in decay for g in split if g["weight_decay"] == 0.0 for p in g["params"])
    assert sorted(id(p) for g in split for p in g["params"]) == sorted(
        id(p) for g in groups for p in g["params"]
    )
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(
        id(p) for p in model.parameters() if p.requires_grad
    )  # each exactly once
