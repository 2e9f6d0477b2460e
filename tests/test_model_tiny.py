"""The tiny preset: shipped tokenizer, processor, config knobs, deterministic cached checkpoint."""

import json

import pytest
import torch
from transformers import AutoProcessor, LlavaForConditionalGeneration

from llava_df.model import tiny

PROMPT = "USER: <image>\nIs this face real or fake? Answer with one word. ASSISTANT:"


@pytest.fixture(scope="module")
def processor():
    return tiny.load_tiny_processor()


def test_answers_and_prompt_words_are_single_tokens(processor):
    tok = processor.tokenizer
    for word in ("Real", "Fake"):
        ids = tok.encode(word, add_special_tokens=False)
        assert len(ids) == 1, word
        # The answer after "ASSISTANT:" is the same token as the word alone (evaluation relies on it).
        assert tok.encode(f"ASSISTANT: {word}", add_special_tokens=False)[-1] == ids[0]
    pieces = tok.convert_ids_to_tokens(tok.encode(PROMPT, add_special_tokens=False))
    for word in (
        "USER",
        "Is",
        "this",
        "face",
        "real",
        "or",
        "fake",
        "Answer",
        "with",
        "one",
        "word",
        "ASSISTANT",
    ):
        assert word in pieces or f"▁{word}" in pieces, (word, pieces)
    assert "<unk>" not in pieces


def test_special_tokens(processor):
    tok = processor.tokenizer
    for t in tiny.SPECIAL_TOKENS:
        assert tok.convert_tokens_to_ids(t) != tok.unk_token_id or t == "<unk>"
    assert (tok.bos_token, tok.eos_token, tok.pad_token, tok.unk_token) == ("<s>", "</s>", "<pad>", "<unk>")
    assert tok("Real")["input_ids"][0] == tok.bos_token_id  # <s> prepended like Llama
    # Arbitrary ASCII text falls back to characters, never to <unk>.
    assert tok.unk_token_id not in tok.encode("zebra-42 {quux}!", add_special_tokens=False)


def test_shipped_tokenizer_matches_its_generator(tmp_path):
    """`python -m llava_df.model.tiny --write_tokenizer` reproduces the shipped files."""
    tiny.write_tokenizer(tmp_path / "tok")
    regenerated = json.loads((tmp_path / "tok" / "tokenizer.json").read_text())
    shipped = json.loads((tiny.TOKENIZER_DIR / "tokenizer.json").read_text())
    assert regenerated["model"]["vocab"] == shipped["model"]["vocab"]
    assert regenerated["model"]["merges"] == shipped["model"]["merges"]


def test_processor_expands_image_token(processor):
    image = (torch.rand(48, 80, 3) * 255).to(torch.uint8).numpy()  # any size: resized + cropped to 64
    batch = processor(images=[image], text=[PROMPT], return_tensors="pt")
    assert batch["pixel_values"].shape == (1, 3, tiny.IMAGE_SIZE, tiny.IMAGE_SIZE)
    n_image = (batch["input_ids"] == processor.image_token_id).sum().item()
    assert n_image == tiny.num_image_tokens() == 64


def test_config_keeps_llava_knobs():
    config = tiny.tiny_config()
    assert config.vision_feature_layer == -2
    assert config.vision_feature_select_strategy == "default"
    assert config.image_seq_length == tiny.num_image_tokens()
    assert config.vision_config.image_size == 64 and config.vision_config.patch_size == 8
    assert config.text_config.vocab_size == len(tiny.load_tiny_tokenizer())


def test_materialized_checkpoint_is_cached_and_deterministic(tmp_path, processor):
    path = tiny.materialize_tiny(cache_dir=tmp_path)
    assert tiny.materialize_tiny(cache_dir=tmp_path) == path  # reused, not rebuilt
    other_seed = tiny.materialize_tiny(seed=1, cache_dir=tmp_path)
    assert other_seed != path
    # A regular HF checkpoint: loads with the stock classes, records its provenance.
    model = LlavaForConditionalGeneration.from_pretrained(path)
    a = model.state_dict()
    b = LlavaForConditionalGeneration.from_pretrained(other_seed).state_dict()
    again = tiny.build_tiny_model(seed=0).state_dict()
    assert a.keys() == again.keys()
    assert all(torch.equal(a[k], again[k]) for k in a)  # same seed -> same weights
    key = "model.language_model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(a[key], b[key])
    assert model.config.llava_df["preset"] == "tiny"
    assert model.config.llava_df["vision_weights"]["source"] in (
        "random",
        "llava_df/assets/tiny_vision.safetensors",
    )
    proc = AutoProcessor.from_pretrained(path)
    assert (
        proc(images=[torch.zeros(64, 64, 3, dtype=torch.uint8).numpy()], text=[PROMPT])["input_ids"]
        == processor(images=[torch.zeros(64, 64, 3, dtype=torch.uint8).numpy()], text=[PROMPT])["input_ids"]
    )


def test_building_does_not_touch_the_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    tiny.build_tiny_model()
    assert torch.equal(torch.rand(3), expected)


def test_example_batch_supervises_answer_only(processor):
    batch = tiny.example_batch(processor, batch_size=2)
    tok = processor.tokenizer
    for i, answer in enumerate(("Real", "Fake")):
        supervised = batch["labels"][i][batch["labels"][i] != -100].tolist()
        assert supervised == [tok.convert_tokens_to_ids(f"▁{answer}"), tok.eos_token_id]
