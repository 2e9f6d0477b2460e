"""`llava-df merge`: LoRA folded into a 16-bit base; the result loads standalone."""

import numpy as np
import pytest
import torch
from tiny_training import logits, train
from transformers import AutoProcessor, LlavaForConditionalGeneration

from llava_df.apps.merge import main
from llava_df.model.checkpoint import load_trained, save_trainable
from llava_df.model.merged import load_merged


@pytest.mark.parametrize(
    "strategy,bits,projector,plain_loads",
    [
        ("lora", 16, "mlp2x_gelu", True),  # stored as HF's own projector
        ("projector_only", 8, "linear", True),  # linear -> linear_1 = W, identity, linear_2 = I
        ("unfreeze_early", 8, "mlp3x_gelu", False),  # no HF form: needs load_merged
    ],
)
def test_merged_checkpoint_equals_base_plus_adapter(strategy, bits, projector, plain_loads, tmp_path):
    model, batch, rec = train(strategy, bits, projector=projector)
    save_trainable(model, tmp_path / "run" / "final", rec)
    main(["--run_dir", str(tmp_path / "run"), "--output_dir", str(tmp_path / "merged")])

    # Reference: the same trained weights on a 16-bit base, LoRA unmerged (INT8 runs merge into 16-bit).
    unmerged, _ = load_trained(tmp_path / "run", bits=16)
    reference = logits(unmerged, batch)

    merged, processor = load_merged(tmp_path / "merged")
    assert merged.config.mm_projector_type == projector
    assert not any("lora" in n for n, _ in merged.named_parameters())
    torch.testing.assert_close(logits(merged, batch), reference, rtol=1e-5, atol=1e-5)
    encoded = processor(images=[np.zeros((64, 64, 3), np.uint8)], text=["<image>"], return_tensors="pt")
    assert (encoded["input_ids"] == merged.config.image_token_id).sum() == 64  # processor saved alongside

    plain = LlavaForConditionalGeneration.from_pretrained(tmp_path / "merged")
    assert (tmp_path / "merged" / "mm_projector.safetensors").is_file() != plain_loads
    if plain_loads:
        torch.testing.assert_close(logits(plain, batch), reference, rtol=1e-5, atol=1e-5)
        assert AutoProcessor.from_pretrained(tmp_path / "merged").tokenizer.convert_tokens_to_ids(
            "<image>"
        ) == (plain.config.image_token_id)
    else:  # plain from_pretrained cannot know the mlp3x_gelu class: its output differs
        assert not torch.allclose(logits(plain, batch), reference, atol=1e-3)


def test_merge_dtype_option(tmp_path):
    model, batch, rec = train("lora", 16)
    save_trainable(model, tmp_path / "run", rec)
    main(
        ["--run_dir", str(tmp_path / "run"), "--output_dir", str(tmp_path / "merged"), "--dtype", "bfloat16"]
    )
    merged = LlavaForConditionalGeneration.from_pretrained(tmp_path / "merged")
    assert {p.dtype for p in merged.parameters()} == {torch.bfloat16}
