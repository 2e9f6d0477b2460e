"""Conversation templates (LLaVA's prompt layouts) in a registry keyed by exact name.

A template splits a training text in two: the *prefix* (everything the model reads before it
answers) and the *target* (the answer word and the end-of-sequence token, the only supervised
tokens). The separator space belongs to the target, so tokenizing the prefix alone gives a
prefix of the full tokenization (the collator checks this, and fails loudly if not).

>>> t = get_template("llava_v1")
>>> t.build("<image>\\nIs this face real or fake? Answer with one word.", "Fake", "</s>")
('USER: <image>\\nIs this face real or fake? Answer with one word. ASSISTANT:', ' Fake</s>')

One registry serves ``--conv_template`` and LLaVA's ``--version``: LLaVA's names are aliases
(``v1`` -> ``vicuna_v1``). ``plain`` is LLaVA's caption-pretraining layout: the image alone,
then the caption and a newline (LLaVA's ``preprocess_plain`` drops the human text and adds no
EOS). Note: this project's ``llava_v1`` is the llava-hf chat template (no system prompt); LLaVA's
own ``--version llava_v1`` (a different system prompt) is not registered, so it fails by name.
"""

from __future__ import annotations

from dataclasses import dataclass

IMAGE_TOKEN = "<image>"
# Stage 1 (the plain template's caption task) needs caption data; said by the flag checks and by the loader.
CAPTIONS_NEED_DATA_PATH = (
    "--task caption (stage 1) reads image-caption pairs from --data_path (LLaVA-Pretrain format). Write a "
    "synthetic set with `llava-df data synthetic --captions --out DIR`, or pass --task detect."
)
VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)


@dataclass(frozen=True)
class ConversationTemplate:
    name: str
    prefix: str  # formatted with {prompt} (and {image} when keep_prompt is False)
    target: str  # formatted with {answer} and {eos}
    description: str = ""
    keep_prompt: bool = True  # False: the human text is dropped, only the image stays (LLaVA plain)

    def build(self, prompt: str, answer: str, eos: str) -> tuple[str, str]:
        """(prefix text, target text) for one sample; ``prompt`` must hold exactly one <image>."""
        if prompt.count(IMAGE_TOKEN) != 1:
            raise ValueError(
                f"The prompt must contain {IMAGE_TOKEN!r} exactly once (where the image tokens go), got {prompt!r}. "
                "Fix --prompt or the human turn of the data file."
            )
        prefix = self.prefix.format(prompt=prompt if self.keep_prompt else IMAGE_TOKEN)
        return prefix, self.target.format(answer=answer, eos=eos)


_TEMPLATES: dict[str, ConversationTemplate] = {}
# LLaVA's --version names -> the template here with LLaVA's layout.
ALIASES = {"v1": "vicuna_v1", "llama_2": "llava_llama_2"}
# LLaVA --version values with no template here, and why (named in the error).
UNSUPPORTED = {
    "v0": "LLaVA-v0's '###' layout (use v1)",
    "llava_v0": "LLaVA-v0's '###' layout (use v1)",
    "v0_plain": "LLaVA-v0 pretraining (use plain)",
    "v0_mmtag": "needs image start/end tags (use v1)",
    "v1_mmtag": "needs image start/end tags (use v1)",
    "mpt": "MPT models (llava_df builds Llama-architecture LLMs)",
    "chatml_direct": "LLaVA-1.6 ChatML (use v1 or llava_llama_2)",
    "mistral_instruct": "LLaVA-1.6 Mistral (use v1 or llava_llama_2)",
    "mistral_direct": "LLaVA-1.6 Mistral (use v1 or llava_llama_2)",
}


def register_template(template: ConversationTemplate) -> ConversationTemplate:
    if template.name in _TEMPLATES:
        raise ValueError(f"Conversation template {template.name!r} is already registered.")
    _TEMPLATES[template.name] = template
    return template


def available_templates() -> list[str]:
    return list(_TEMPLATES)


def canonical_name(name: str) -> str:
    """Registry name of ``name`` (a template name or one of LLaVA's --version aliases)."""
    name = ALIASES.get(name, name)
    if name not in _TEMPLATES:
        why = f" ({UNSUPPORTED[name]})" if name in UNSUPPORTED else ""
        raise KeyError(
            f"Unknown conversation template {name!r}{why}. Valid names: {', '.join(_TEMPLATES)}, and LLaVA's "
            f"--version aliases {', '.join(ALIASES)}. Check --conv_template / --version."
        )
    return name


def get_template(name: str) -> ConversationTemplate:
    return _TEMPLATES[canonical_name(name)]


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
register_template(
    ConversationTemplate(
        "plain",
        "{prompt}",
        "{answer}\n",
        "LLaVA --version plain: caption pretraining (stage 1), the image then the caption",
        keep_prompt=False,
    )
)
LLAMA_2_SYSTEM = (
    "You are a helpful language and vision assistant. You are able to understand the visual content that the "
    "user provides, and assist the user with a variety of tasks using natural language."
)
register_template(
    ConversationTemplate(
        "llava_llama_2",
        "[INST] <<SYS>>\n" + LLAMA_2_SYSTEM + "\n<</SYS>>\n\n{prompt} [/INST]",
        " {answer} {eos}",
        "LLaVA --version llava_llama_2 (Llama-2-chat layout)",
    )
)
# SmolLM2-Instruct (the smol preset, llava_df.model.smol): ChatML, the answer at the start of the
# assistant's line (so "real" / "fake" are single tokens there, "Fake" is two: F + ake).
SMOLLM2_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
CHATML_TURNS = "<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"
register_template(
    ConversationTemplate(
        "smollm2",
        "<|im_start|>system\n" + SMOLLM2_SYSTEM + "<|im_end|>\n" + CHATML_TURNS,
        "{answer}{eos}",
        "SmolLM2-Instruct's chat template as it renders a user turn (its default system turn included)",
    )
)
register_template(
    ConversationTemplate(
        "chatml",
        CHATML_TURNS,
        "{answer}{eos}",
        "ChatML without a system turn (SmolLM2's layout, 21 tokens shorter than smollm2): the smol recipe's",
    )
)
