"""Conversation templates (LLaVA's prompt layouts) in a registry keyed by exact name.

A template splits a training text in two: the *prefix* (everything the model reads before it
answers) and the *target* (the answer word and the end-of-sequence token, the only supervised
tokens). The separator space belongs to the target, so tokenizing the prefix alone gives a
prefix of the full tokenization (the collator checks this, and fails loudly if not).

>>> t = get_template("llava_v1")
>>> t.build("<image>\\nIs this face real or fake? Answer with one word.", "Fake", "</s>")
('USER: <image>\\nIs this face real or fake? Answer with one word. ASSISTANT:', ' Fake</s>')
"""

from __future__ import annotations

from dataclasses import dataclass

IMAGE_TOKEN = "<image>"
VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)


@dataclass(frozen=True)
class ConversationTemplate:
    name: str
    prefix: str  # formatted with {prompt}
    target: str  # formatted with {answer} and {eos}
    description: str = ""

    def build(self, prompt: str, answer: str, eos: str) -> tuple[str, str]:
        """(prefix text, target text) for one sample; ``prompt`` must hold exactly one <image>."""
        if prompt.count(IMAGE_TOKEN) != 1:
            raise ValueError(
                f"The prompt must contain {IMAGE_TOKEN!r} exactly once (where the image tokens go), got {prompt!r}. "
                "Fix --prompt or the human turn of the data file."
            )
        return self.prefix.format(prompt=prompt), self.target.format(answer=answer, eos=eos)


_TEMPLATES: dict[str, ConversationTemplate] = {}


def register_template(template: ConversationTemplate) -> ConversationTemplate:
    if template.name in _TEMPLATES:
        raise ValueError(f"Conversation template {template.name!r} is already registered.")
    _TEMPLATES[template.name] = template
    return template


def available_templates() -> list[str]:
    return list(_TEMPLATES)


def get_template(name: str) -> ConversationTemplate:
    if name not in _TEMPLATES:
        raise KeyError(
            f"Unknown conversation template {name!r}. Valid names: {', '.join(_TEMPLATES)}. Check --conv_template."
        )
    return _TEMPLATES[name]


register_template(
    ConversationTemplate(
        "llava_v1", "USER: {prompt} ASSISTANT:", " {answer}{eos}", "LLaVA-1.5 (llava-hf chat template)"
    )
)
register_template(
    ConversationTemplate(
        "vicuna_v1",
        VICUNA_SYSTEM + " USER: {prompt} ASSISTANT:",
        " {answer}{eos}",
        "LLaVA --version v1 (Vicuna system prompt)",
    )
)
register_template(ConversationTemplate("plain", "{prompt}", " {answer}{eos}", "no roles: prompt then answer"))
