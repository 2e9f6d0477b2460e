"""The ``tiny`` preset: a real transformers LLaVA, small enough for CPU tests, built offline.

Interface::

    load_tiny_tokenizer() -> PreTrainedTokenizerFast        # shipped in llava_df/assets/tiny_tokenizer/
    load_tiny_processor() -> LlavaProcessor                  # CLIP image processor (64x64) + that tokenizer
    tiny_config() -> LlavaConfig                             # CLIPVisionConfig + LlamaConfig, LLaVA-1.5 knobs
    materialize_tiny(seed=0, cache_dir=None) -> Path         # a from_pretrained-able checkpoint dir (cached)

``--model_name_or_path tiny`` resolves to :func:`materialize_tiny`: the model is built once from
config objects with seeded random weights (plus the shipped vision-tower weights when present),
saved with ``save_pretrained`` (safetensors) under ``$LLAVA_DF_CACHE`` (default
``~/.cache/llava_df``) in a folder keyed by a hash of everything that defines it, and then loaded
with ``from_pretrained`` like any checkpoint. That is what lets ``--bits 8/4`` run through the
SAME quantization code path as a real LLaVA checkpoint.

Regenerate the shipped tokenizer (only needed when the corpus below changes)::

    python -m llava_df.model.tiny --write_tokenizer

Print the preset (sizes, parameter counts, cache folder)::

    python -m llava_df.model.tiny
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import string
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path

import torch
import transformers
from safetensors.torch import load_file, save_model
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

from llava_df.cli_args import parse_verb
from llava_df.errors import cli_entry
from llava_df.io import build_once, cache_root

ASSETS = Path(__file__).resolve().parents[1] / "assets"
TOKENIZER_DIR = ASSETS / "tiny_tokenizer"
# Written by `python tools/pretrain_vision.py`; random vision weights are used when absent.
VISION_WEIGHTS = ASSETS / "tiny_vision.safetensors"
TINY_SEED = 0
# Bump when build_tiny_model changes how weights are drawn: the cache key cannot see code.
TINY_VERSION = 2

# ---- the preset -----------------------------------------------------------------------------
IMAGE_SIZE = 64  # matches DataArguments.image_size (synthetic benchmark)
PATCH_SIZE = 8  # 64/8 = 8x8 = 64 image tokens after dropping CLS (vision_feature_select_strategy=default)
VISION = dict(
    hidden_size=128, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4, projection_dim=128
)
# Llama-2 / Vicuna shape in miniature: MHA, SiLU MLP, untied head.
TEXT = dict(
    hidden_size=128,
    intermediate_size=352,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=4,
    max_position_embeddings=512,  # >= TrainingArguments.model_max_length default
    rms_norm_eps=1e-5,
    tie_word_embeddings=False,
)

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
# The LLaVA-1.5 conversation the data pipeline builds, the answer words, and enough ordinary
# English that a reworded prompt still tokenizes into words rather than single letters.
_TEMPLATE = "USER: <image>\nIs this face real or fake? Answer with one word. ASSISTANT: {answer}</s>"
_CORPUS = """
Is this face real or fake? Answer with one word. Is this image real or fake? Is the face in this
image real or manipulated? Is this a real photo or a deepfake? Answer Real or Fake. Real Fake real
fake REAL FAKE yes no Yes No. The face is real. The face is fake. This image shows a real person.
This image was generated, edited, swapped, blended or manipulated. Look at the eyes, the mouth,
the skin, the hair, the edges, the lighting, the colour, the color, the texture, the noise, the
background and the boundary of the face. A person, a photo, a picture, a video frame, a camera.
Describe the image. What do you see? Please answer the question with a single word. Question:
Answer: USER: ASSISTANT: SYSTEM: A chat between a curious user and an artificial intelligence
assistant. The assistant gives helpful, detailed, and polite answers to the user's questions.
is are was were be been the a an of in on to for with by from at as and or not this that these
it its he she they we you I my your his her their our one two three four five 0 1 2 3 4 5 6 7 8 9
"""
VOCAB_SIZE = 512  # BPE stops earlier when the corpus has no more merges to offer
# LLaVA-1.5's prompt layout as a chat template, so processor.apply_chat_template works on tiny too.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'].upper() + ': ' }}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' ' }}{% endfor %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


# ---- tokenizer ------------------------------------------------------------------------------
def build_tokenizer() -> PreTrainedTokenizerFast:
    """Train the tiny BPE tokenizer from the corpus above (deterministic; no download).

    Llama-style: SentencePiece-like ``▁`` word prefixes (Metaspace), punctuation and newlines
    split off, printable ASCII as the base alphabet (so any ASCII text encodes without <unk>),
    ``<s>`` prepended by the post-processor. ``Real``/``Fake`` must come out as single tokens:
    evaluation reads the probability of the first answer token.
    """

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split("\n", behavior="isolated"),
            pre_tokenizers.Punctuation("isolated"),
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first"),
        ]
    )
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=list(string.printable),
        min_frequency=1,
        show_progress=False,
    )
    lines = [_TEMPLATE.format(answer=a) for a in ("Real", "Fake")] * 20 + _CORPUS.split("\n")
    tok.train_from_iterator(lines, trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
        padding_side="right",
        model_max_length=TEXT["max_position_embeddings"],
    )
    for word in ("Real", "Fake"):
        ids = fast.encode(word, add_special_tokens=False)
        if len(ids) != 1:
            raise RuntimeError(
                f"Tiny tokenizer splits the answer {word!r} into {fast.convert_ids_to_tokens(ids)}."
            )
    return fast


def write_tokenizer(out_dir: Path = TOKENIZER_DIR) -> Path:
    """Regenerate the shipped tokenizer files (``python -m llava_df.model.tiny --write-tokenizer``)."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    build_tokenizer().save_pretrained(out_dir)
    return out_dir


def load_tiny_tokenizer() -> PreTrainedTokenizerFast:
    if not (TOKENIZER_DIR / "tokenizer.json").is_file():
        raise FileNotFoundError(
            f"Tiny tokenizer missing at {TOKENIZER_DIR}; regenerate it with `python -m llava_df.model.tiny --write-tokenizer`."
        )
    return PreTrainedTokenizerFast.from_pretrained(TOKENIZER_DIR)


def _image_processor():
    # transformers picks a torchvision backend for CLIPImageProcessor and warns when torchvision
    # is missing (CPU-only installs); the PIL one gives the same pixels, so take it explicitly.
    if find_spec("torchvision") is not None:
        from transformers import CLIPImageProcessor as cls  # lazy: needs torchvision, which may be absent
    else:
        from transformers import CLIPImageProcessorPil as cls  # lazy: the class to use without torchvision
    return cls(size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})


def load_tiny_processor() -> LlavaProcessor:
    """CLIP image processor for 64x64 input + the shipped tokenizer; ``<image>`` expands to 64 tokens.

    >>> proc = load_tiny_processor()
    >>> batch = proc(images=[pil_image], text=["USER: <image>\\nIs this face real or fake? ASSISTANT:"], return_tensors="pt")
    >>> batch["pixel_values"].shape  # (1, 3, 64, 64)
    """
    return LlavaProcessor(
        image_processor=_image_processor(),
        tokenizer=load_tiny_tokenizer(),
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token, dropped again by the "default" strategy
        chat_template=CHAT_TEMPLATE,
    )


# ---- model ----------------------------------------------------------------------------------
def num_image_tokens() -> int:
    return (IMAGE_SIZE // PATCH_SIZE) ** 2


def tiny_config(tokenizer: PreTrainedTokenizerFast | None = None) -> LlavaConfig:
    """LLaVA-1.5's layout in miniature (vision_feature_layer=-2, CLS dropped, GELU MLP projector)."""
    tok = tokenizer or load_tiny_tokenizer()
    text = LlamaConfig(
        vocab_size=len(tok),
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        **TEXT,
    )
    vision = CLIPVisionConfig(image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, **VISION)
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        image_seq_length=num_image_tokens(),
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        pad_token_id=tok.pad_token_id,
    )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_tiny_model(seed: int = TINY_SEED, *, vision_weights: bool = True) -> LlavaForConditionalGeneration:
    """The tiny LLaVA in memory: seeded random weights, the shipped vision weights when present.

    ``vision_weights=False`` keeps the random tower (what ``tools/pretrain_vision.py`` starts from).
    The global RNG is left untouched (fork_rng), so building the preset never shifts a run's seed.
    """
    config = tiny_config()
    vision_info: dict = {"source": "random"}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(config)
        # A pretrained LLM's output layer can put most of the probability on one token; a random
        # one drawn at initializer_range=0.02 cannot: with hidden 128 the largest reachable logit
        # is about 0.02 * 128 = 2.6, so p("Real") stays under ~3% of a 500-token vocabulary and
        # the loss floors near 3.8 whatever trains (measured: runs stalled at loss ~4, AUC 0.5).
        # Rows of norm ~1 (std 1/sqrt(hidden)) give the head the reach of a trained one.
        model.lm_head.weight.data.normal_(0.0, config.text_config.hidden_size**-0.5)
    if vision_weights and VISION_WEIGHTS.is_file():
        state = load_file(VISION_WEIGHTS)
        model.model.vision_tower.load_state_dict(state, strict=True)
        vision_info = {"source": f"llava_df/assets/{VISION_WEIGHTS.name}", "sha256": _sha256(VISION_WEIGHTS)}
    # Recorded in config.json so a run (and its saved checkpoints) says what the tower carried.
    model.config.llava_df = {
        "preset": "tiny",
        "version": TINY_VERSION,
        "seed": seed,
        "vision_weights": vision_info,
    }
    return model.eval()


def materialize_tiny(seed: int = TINY_SEED, cache_dir: str | os.PathLike | None = None) -> Path:
    """Save the tiny model (+ processor) once and return its folder, a regular HF checkpoint.

    The folder name hashes the config, the seed, the tokenizer, the vision weights and the
    transformers version, so a change to any of them builds a new one. Built once across processes
    (test workers, torchrun ranks, sweep workers): see :func:`materialize_folder`.
    """
    key = {
        "config": tiny_config().to_dict(),
        "seed": seed,
        "version": TINY_VERSION,
        "tokenizer": _sha256(TOKENIZER_DIR / "tokenizer.json"),
        "vision": _sha256(VISION_WEIGHTS) if VISION_WEIGHTS.is_file() else None,
        "transformers": transformers.__version__,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def write(tmp: Path) -> None:
        save_model_files(build_tiny_model(seed), tmp)
        load_tiny_processor().save_pretrained(tmp)

    return materialize_folder(cache_root(cache_dir) / f"tiny-{digest}", write)


def save_model_files(model, folder: Path) -> None:
    """config.json (+ generation_config.json) and model.safetensors: what from_pretrained loads.

    Written by this process whatever its rank: under torchrun, transformers 5's ``save_pretrained``
    writes nothing on a rank other than 0 once the process group is up (config included), and
    TrainingArguments starts that group at parse time. The cache is shared, so whichever process
    builds it must write all of it.
    """

    folder = Path(folder)
    model.config.save_pretrained(folder)
    if getattr(model, "generation_config", None) is not None and model.can_generate():
        model.generation_config.save_pretrained(folder)
    save_model(
        model, str(folder / "model.safetensors"), metadata={"format": "pt"}
    )  # shared tensors kept once


def checkpoint_problem(folder: Path) -> str | None:
    """Why ``folder`` is not a loadable checkpoint (None: it is): a config.json and weights must be there.

    A check of what the builder wrote (see save_model_files): a folder without them is never kept.
    """
    if not (folder / "config.json").is_file():
        return "no config.json was written"
    if not any(folder.glob("*.safetensors")):
        return "no weights (*.safetensors) were written"
    return None


def materialize_folder(target: Path, write, verify=None) -> Path:
    """``target``, written once by ``write(tmp)`` across processes (llava_df.io.build_once): one process
    builds under a file lock, the others wait; a folder without its completeness marker is rebuilt.
    ``verify(tmp)``: a further reason not to keep it (None: keep), after checkpoint_problem's."""

    def problem(folder: Path) -> str | None:
        return checkpoint_problem(folder) or (verify(folder) if verify is not None else None)

    return build_once(target, write, verify=problem, what="cached checkpoint")


def example_batch(processor: LlavaProcessor | None = None, batch_size: int = 4, seed: int = 0) -> dict:
    """A ready training batch of random images for smoke tests and benchmarks (not the benchmark data).

    Text: LLaVA-1.5's conversation with answers alternating Real/Fake; ``labels`` supervise only
    the answer word and ``</s>`` (-100 elsewhere), as the data collator does.
    """
    processor = processor or load_tiny_processor()
    gen = torch.Generator().manual_seed(seed)
    size = processor.image_processor.crop_size["height"]
    images = (torch.rand(batch_size, size, size, 3, generator=gen) * 255).to(torch.uint8).numpy()
    answers = ["Real" if i % 2 == 0 else "Fake" for i in range(batch_size)]
    texts = [_TEMPLATE.format(answer=a) for a in answers]
    batch = processor(images=list(images), text=texts, return_tensors="pt", padding=True)
    labels = torch.full_like(batch["input_ids"], -100)
    lengths = batch["attention_mask"].sum(1)
    for i, n in enumerate(lengths.tolist()):
        labels[i, n - 2 : n] = batch["input_ids"][i, n - 2 : n]  # answer word, </s>
    batch["labels"] = labels
    return dict(batch)


@dataclass
class TinyArguments:
    """``python -m llava_df.model.tiny``'s flags."""

    write_tokenizer: bool = field(
        default=False,
        metadata={"help": "Regenerate the shipped tokenizer (llava_df/assets/tiny_tokenizer/) first."},
    )


@cli_entry
def main(argv: list[str]) -> None:
    args, _ = parse_verb(
        TinyArguments, argv, prog="python -m llava_df.model.tiny", description=__doc__.split("\n")[0]
    )
    if args.write_tokenizer:
        print(f"wrote {write_tokenizer()}")
    model = build_tiny_model()
    tok = load_tiny_tokenizer()
    parts = {
        "vision tower": model.model.vision_tower,
        "projector": model.model.multi_modal_projector,
        "language model": model.model.language_model,
        "lm_head": model.lm_head,
    }
    print(
        f"tiny LLaVA: {IMAGE_SIZE}x{IMAGE_SIZE} images, patch {PATCH_SIZE} -> {num_image_tokens()} image tokens"
    )
    print(f"vocab {len(tok)} tokens; vision {VISION}; text {TEXT}")
    for name, module in parts.items():
        print(f"  {name:15s} {sum(p.numel() for p in module.parameters()):>10,d} params")
    print(f"vision weights: {model.config.llava_df['vision_weights']}")
    print(f"checkpoint: {materialize_tiny()}")


if __name__ == "__main__":
    main()
