"""Prompt templates and the collator: the loss mask must sit exactly on the answer tokens."""

from __future__ import annotations

import copy

import pytest
import torch

from llava_df.data.collator import (
    IGNORE_INDEX,
    DeepfakeCollator,
    _target_ids,
    answer_token_ids,
    make_collator,
)
from llava_df.data.conversation import available_templates, get_template
from llava_df.data.load import load_splits
from llava_df.model.tiny import build_tiny_model, load_tiny_processor, num_image_tokens
from llava_df.spec.args import DataArguments


@pytest.fixture(scope="module")
def processor():
    return load_tiny_processor()


@pytest.fixture(scope="module")
def items():
    splits = load_splits(DataArguments(synthetic_n=40), seed=0)
    train = splits["train"]
    reals = [train[i] for i in range(len(train)) if not train[i]["is_fake"]][:2]
    fakes = [train[i] for i in range(len(train)) if train[i]["is_fake"]][:2]
    return [reals[0], fakes[0], reals[1], fakes[1]]


def _supervised_text(tok, batch, row):
    labels = batch["labels"][row]
    return tok.decode(labels[labels != IGNORE_INDEX])


@pytest.mark.parametrize("template", available_templates())
def test_labels_decode_to_exactly_the_answer(processor, items, template):
    collator = make_collator(processor, DataArguments(conv_template=template), model_max_length=512)
    batch = collator(items)
    tok = processor.tokenizer
    assert set(batch) == {"input_ids", "attention_mask", "pixel_values", "labels", "is_fake", "answer_index"}
    assert batch["pixel_values"].shape == (4, 3, 64, 64)
    assert batch["is_fake"].tolist() == [0, 1, 0, 1]
    for row, expected in enumerate(["Real", "Fake", "Real", "Fake"]):
        target = get_template(template).target.format(answer=expected, eos=tok.eos_token)
        assert _supervised_text(tok, batch, row).strip() == target.strip()
        labels = batch["labels"][row]
        idx = int(batch["answer_index"][row])
        first = tok.decode([int(labels[idx])]).strip()
        # the first supervised token is the answer word (its first piece when no space precedes it: plain,
        # chatml, smollm2; the tiny tokenizer learned the words with their leading space)
        spaced = get_template(template).target.startswith(" ")
        assert first == expected if spaced else expected.startswith(first) and first
        assert (labels[:idx] == IGNORE_INDEX).all()
        image_positions = batch["input_ids"][row] == processor.image_token_id
        assert int(image_positions.sum()) == num_image_tokens()
        assert (labels[image_positions] == IGNORE_INDEX).all()


def test_per_item_prompts_padding_and_eos_option(processor, items):
    tok = processor.tokenizer
    mixed = [
        dict(items[0], prompt="<image>\nIs the face in this image real or manipulated? Answer Real or Fake."),
        items[1],
    ]
    for side in ("right", "left"):
        proc = copy.deepcopy(processor)
        proc.tokenizer.padding_side = side
        collator = DeepfakeCollator(proc, prompt=DataArguments().prompt, supervise_eos=False)
        batch = collator(mixed)
        assert [_supervised_text(tok, batch, r) for r in range(2)] == ["Real", "Fake"]
        pad = batch["attention_mask"] == 0
        assert pad.any() and (batch["labels"][pad] == IGNORE_INDEX).all()
        assert (batch["input_ids"][pad] == tok.pad_token_id).all()


def test_loss_is_the_cross_entropy_of_the_answer_tokens(processor, items):
    collator = make_collator(processor, DataArguments(), model_max_length=512)
    batch = collator(items)
    model = build_tiny_model()
    with torch.no_grad():
        out = model(**{k: v for k, v in batch.items() if k not in collator.extra_keys})
    rows = torch.arange(len(items))
    logits = out.logits  # [B, T, V]
    # answer word and </s>, each predicted from the previous position
    pos = torch.stack([batch["answer_index"], batch["answer_index"] + 1], 1)  # [B, 2]
    picked = logits[rows[:, None], pos - 1]  # [B, 2, V]
    target = batch["input_ids"][rows[:, None], pos]  # [B, 2]
    expected = torch.nn.functional.cross_entropy(picked.reshape(-1, picked.shape[-1]), target.reshape(-1))
    assert torch.isclose(out.loss, expected, atol=1e-5)


def test_answer_token_ids_distinct_or_clear_error(processor):
    tok = processor.tokenizer
    fake_id, real_id = answer_token_ids(tok, ["Fake", "Real"])
    assert tok.convert_ids_to_tokens([fake_id, real_id]) == ["▁Fake", "▁Real"]
    with pytest.raises(ValueError, match="do not start with distinct tokens"):
        answer_token_ids(tok, ["Fake", "Fake news"])
    with pytest.raises(ValueError, match="distinct tokens"):
        DeepfakeCollator(
            processor, prompt=DataArguments().prompt, answer_real="Fake news", answer_fake="Fake"
        )


def test_model_max_length_is_respected_with_clear_errors(processor, items):
    prompt = DataArguments().prompt
    with pytest.raises(ValueError, match=r"cannot hold even the image tokens.*64 image"):
        DeepfakeCollator(processor, prompt=prompt, model_max_length=50)(items[:1])
    with pytest.raises(ValueError, match=r"over model_max_length=70.*Nothing is truncated"):
        DeepfakeCollator(processor, prompt=prompt, model_max_length=70)(items[:1])
    n = DeepfakeCollator(processor, prompt=prompt, model_max_length=512)(items[:1])["input_ids"].shape[1]
    assert (
        DeepfakeCollator(processor, prompt=prompt, model_max_length=n)(items[:1])["input_ids"].shape[1] == n
    )
    with pytest.raises(ValueError, match=f"raise --model_max_length to {n}"):
        DeepfakeCollator(processor, prompt=prompt, model_max_length=n - 1)(items[:1])


def test_templates_and_prompts_are_checked(processor, items):
    with pytest.raises(KeyError, match=r"Unknown conversation template 'llava_v2'.*llava_v1"):
        get_template("llava_v2")
    with pytest.raises(ValueError, match="exactly once"):
        DeepfakeCollator(processor, prompt="Is this face real?")(items[:1])
    assert get_template("llava_v1").build("<image>\nQ", "Fake", "</s>") == (
        "USER: <image>\nQ ASSISTANT:",
        " Fake</s>",
    )


def test_boundary_mismatch_is_detected(processor):
    # A prefix ending inside the answer word tokenizes differently alone ("▁F") and in context ("▁Fake").
    with pytest.raises(ValueError, match="Tokenization mismatch"):
        _target_ids(processor.tokenizer, "USER: <image> ASSISTANT: F", "ake</s>", "broken")
