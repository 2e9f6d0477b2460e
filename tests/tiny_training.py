"""Shared by the checkpointing and merge tests: a tiny model trained two AdamW steps per strategy."""

import torch

from llava_df.model.build import build_model
from llava_df.model.strategies import apply_strategy
from llava_df.model.tiny import example_batch
from llava_df.spec.args import ModelArguments

FLAGS = {
    "projector_only": {"tune_mm_mlp_adapter": True},
    "lora": {"lora_enable": True},
    "unfreeze_early": {"lora_enable": True, "num_unfreeze_early_layers": 1},
}


def train(strategy: str, bits: int, projector: str = "mlp2x_gelu"):
    """A tiny model after two AdamW steps (LoRA B leaves zero at step 1, so LoRA matters at step 2)."""
    args = ModelArguments(bits=bits, mm_projector_type=projector, lora_r=4, lora_alpha=8, **FLAGS[strategy])
    model, processor = build_model(args)
    model = apply_strategy(model, args, verbose=False)
    batch = example_batch(processor, batch_size=2)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(2):
        model(**batch).loss.backward()
        opt.step()
        opt.zero_grad()
    return model.eval(), batch


@torch.no_grad()
def logits(model, batch):
    return model.eval()(**batch).logits
