"""Shared by the model tests: build a tiny model as training does, and train it two AdamW steps per strategy."""

import dataclasses

import torch

from llava_df.model.build import build_model
from llava_df.model.checkpoint import CheckpointRecord
from llava_df.model.strategies import apply_strategy
from llava_df.model.tiny import example_batch
from llava_df.spec.args import ModelArguments
from llava_df.spec.strategy import resolve_strategy

FLAGS = {
    "projector_only": {"tune_mm_mlp_adapter": True},
    "lora": {"lora_enable": True},
    "unfreeze_early": {"lora_enable": True, "num_unfreeze_early_layers": 1},
}


def build(args: ModelArguments, **kwargs):
    """(model, processor) for ``args``, with the strategy resolved as the spec resolves it."""
    built = build_model(args, resolve_strategy(args), **kwargs)
    return built.model, built.processor


def prepare(model, args: ModelArguments, **kwargs):
    """apply_strategy with the strategy ``args`` resolve to."""
    return apply_strategy(model, args, resolve_strategy(args), **kwargs)


def record(
    args: ModelArguments, run_config: dict | None = None, base: dict | None = None
) -> CheckpointRecord:
    return CheckpointRecord(dataclasses.asdict(args), resolve_strategy(args), base, run_config or {})


def train(strategy: str, bits: int, projector: str = "mlp2x_gelu"):
    """(a tiny model after two AdamW steps, the batch, its CheckpointRecord). LoRA B leaves zero at
    step 1, so LoRA matters at step 2."""
    args = ModelArguments(bits=bits, mm_projector_type=projector, lora_r=4, lora_alpha=8, **FLAGS[strategy])
    built = build_model(args, strategy)
    model = apply_strategy(built.model, args, strategy, verbose=False)
    batch = example_batch(built.processor, batch_size=2)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(2):
        model(**batch).loss.backward()
        opt.step()
        opt.zero_grad()
    return model.eval(), batch, CheckpointRecord(dataclasses.asdict(args), strategy, built.base, {})


@torch.no_grad()
def logits(model, batch):
    return model.eval()(**batch).logits
