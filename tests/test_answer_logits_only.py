"""--answer_logits_only: the LM head from the answer window on gives the same loss and P(Fake), from fewer logits."""

from __future__ import annotations

import dataclasses

import torch

from llava_df.data.collator import make_collator
from llava_df.data.pipeline import prepare_data, split_of
from llava_df.eval.metrics import AnswerScores
from llava_df.model.build import build_model
from llava_df.model.processor import run_processor
from llava_df.spec.resolve import parse_spec


def test_the_answer_window_gives_the_same_loss_and_scores_from_three_positions(tmp_path):
    spec = parse_spec(["--model_name_or_path", "tiny", "--strategy", "lora", "--synthetic_n", "40",
                       "--output_dir", str(tmp_path)])  # fmt: skip
    processor, _ = run_processor(spec.model, spec.data)
    data = prepare_data(spec.data, processor, seed=0, model_max_length=512)
    model = build_model(spec.model, "lora").model.eval()
    items = [split_of(data.splits, "test")[i] for i in range(6)]
    full = make_collator(processor, spec.data)(items)
    window = make_collator(processor, dataclasses.replace(spec.data, answer_logits_only=True))(items)
    assert torch.equal(window["answer_index"], full["answer_index"])  # input_ids' coordinates, unchanged
    start = int(full["answer_index"].min()) - 1
    assert torch.equal(window["labels"], full["labels"][:, start:])
    assert window["logits_to_keep"].tolist() == list(range(start, full["input_ids"].shape[1]))
    scores = AnswerScores(data.fake_id, data.real_id)
    out = {}
    with torch.no_grad():
        for name, batch in (("full", full), ("window", window)):
            result = model(**{k: v for k, v in batch.items() if k not in ("is_fake", "answer_index")})
            out[name] = (result.loss, scores(result.logits, batch["labels"]), result.logits.shape[1])
    assert out["window"][2] == 3 < out["full"][2]  # the logit before the answer, the answer word, EOS
    assert torch.allclose(out["window"][0], out["full"][0], rtol=1e-6, atol=0)
    assert torch.allclose(out["window"][1], out["full"][1], rtol=1e-6, atol=1e-7)
