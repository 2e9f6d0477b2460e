"""`--answer_head classifier`: a 2-class head on the LLM's last hidden state in the place of lm_head.

Why: the generative detector reads P(Fake) from the LLM's own vocabulary head at the answer
position (softmax over the "Real" and "Fake" token logits). Whether the language model adds
anything over a plain classifier on its features is a question of its own (issue #24); the
comparison is a sequence-classification head (ms-swift's ``task_type seq_cls``: a linear layer
on the last prompt token's hidden state, trained with 2-class cross-entropy) under the same
strategy, data and budget.

How: the head replaces lm_head and returns full-vocabulary logits whose "Real" and "Fake"
columns are its two class logits and every other column is ``FILL`` (-1e4). So everything that
reads the answer position's Real/Fake logits (AnswerScores, predict, the demo, the sweep) works
unchanged, and with labels on the first answer token only (the collator's ``answer_head``
setting) the LM loss is exactly the 2-class cross-entropy: exp(-1e4 - logit) is 0 in fp32.
It costs 2 x hidden trainable parameters (8,192 on LLaVA-1.5-7B) and no memory beyond the
generative run's (the logits have the same shape, in fp32 as the LM loss upcasts them anyway).

Interface::

    install_answer_head(model, real_id, fake_id) -> ClassifierHead   # replaces lm_head (seeded by the caller)
    answer_head_of(model) -> ClassifierHead | None
    # the names --answer_head takes: llava_df.spec.args.ANSWER_HEADS
"""

from __future__ import annotations

import torch
from torch import nn

from llava_df.model.anatomy import unwrap

FILL = -1.0e4  # the logit of every non-answer token: far below any class logit, finite (no NaN in a loss)


class ClassifierHead(nn.Module):
    """Linear(hidden, 2) over (Real, Fake), scattered into full-vocabulary logits (see the module doc)."""

    def __init__(self, hidden_size: int, vocab_size: int, real_id: int, fake_id: int, init_std: float = 0.02):
        super().__init__()
        if real_id == fake_id or not (0 <= real_id < vocab_size and 0 <= fake_id < vocab_size):
            raise ValueError(
                f"answer token ids real={real_id}, fake={fake_id} must differ and lie in [0, {vocab_size})."
            )
        self.vocab_size, self.real_id, self.fake_id = int(vocab_size), int(real_id), int(fake_id)
        # No bias, initialised as transformers initialises a sequence-classification score layer.
        self.classes = nn.Linear(hidden_size, 2, bias=False)  # rows: (Real, Fake)
        nn.init.normal_(self.classes.weight, std=init_std)
        self.register_buffer("answer_ids", torch.tensor([self.real_id, self.fake_id]), persistent=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        two = self.classes(hidden.to(self.classes.weight.dtype))  # [..., 2]
        full = two.new_full((*two.shape[:-1], self.vocab_size), FILL)
        return full.index_copy(
            -1, self.answer_ids.to(two.device), two
        )  # out of place: autograd keeps the head's grads

    def extra_repr(self) -> str:
        return f"real_id={self.real_id}, fake_id={self.fake_id}, vocab_size={self.vocab_size}"


def answer_head_of(model: nn.Module) -> ClassifierHead | None:
    head = unwrap(model).get_output_embeddings()
    return head if isinstance(head, ClassifierHead) else None


def install_answer_head(model: nn.Module, real_id: int, fake_id: int) -> ClassifierHead:
    """Replace the LLaVA model's lm_head by a ClassifierHead on the same device, in fp32 (it always
    trains; see build.swap_projector for why trained parts stay fp32). Initialised under the
    caller's seed (the run's set_seed), so a run is reproducible."""
    base = unwrap(model)
    old = base.get_output_embeddings()
    if isinstance(old, ClassifierHead):
        return old
    text = base.config.text_config
    vocab = getattr(old, "out_features", text.vocab_size)  # the logits' width the loss and scores expect
    device = next((p.device for p in old.parameters() if not p.is_meta), torch.device("cpu"))
    std = getattr(text, "initializer_range", 0.02)
    head = ClassifierHead(text.hidden_size, vocab, real_id, fake_id, init_std=std)
    head.to(device=device, dtype=torch.float32)
    base.set_output_embeddings(head)
    return head
