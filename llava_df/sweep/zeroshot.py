"""The zero-shot rows: each stage-1 model asked the detection question before any detection training.

How to call (``llava-df compare`` does, after stage 1)::

    records = zero_shot_records(spec, seed=0, key=key)   # spec: the cell's RunSpec with its stage-1 projector
    # two records in the run-record format: strategy "zero_shot" and "zero_shot_yes_no"

What LLaVA's stage 1 alone gives: the LLM, the tower and the caption-aligned projector, nothing
trained on real or fake. Scored as the trained cells are (the same splits, the same collator and
answer position, validation's threshold rule for accuracy; llava_df.eval.scoring.evaluate_final),
in two forms:

- ``zero_shot``: the sweep's own prompt and answer words; P(Fake) is the softmax over the first
  tokens of the two answers at the answer position (the recipe's --answer_fake / --answer_real);
- ``zero_shot_yes_no``: "Is this face fake? Answer yes or no."; P(Fake) = P(Yes) against P(No).

An instruction-tuned LLM (the smol preset's SmolLM2-Instruct) can answer either question; a random
one (the tiny preset) cannot, and its rows show chance. Nothing here trains, so the records have no
``steps`` (the tables count them beside the comparison, never in its tests).
"""

from __future__ import annotations

import dataclasses
import time

import torch

from llava_df.data.pipeline import prepare_data
from llava_df.eval.scoring import evaluate_final, scoring_trainer
from llava_df.model.anatomy import projector as projector_of
from llava_df.model.build import build_model
from llava_df.model.feature_cache import prepare_feature_cache
from llava_df.model.processor import run_processor
from llava_df.model.strategies import apply_strategy
from llava_df.provenance import run_environment
from llava_df.sweep.cells import ZERO_SHOT_STRATEGIES

ZERO_SHOT, ZERO_SHOT_YES_NO = ZERO_SHOT_STRATEGIES
YES_NO = {
    "prompt": "<image>\nIs this face fake? Answer yes or no.",
    "answer_fake": "Yes",
    "answer_real": "No",
}


def question(data_args, form: str):
    """The data settings that ask ``form``'s question (zero_shot: the run's own)."""
    return data_args if form == ZERO_SHOT else dataclasses.replace(data_args, **YES_NO)


@torch.no_grad()
def zero_shot_records(spec, *, seed: int, key: str) -> list[dict]:
    """One record per form for the model ``spec`` builds (its --pretrain_mm_mlp_adapter: a stage-1 file)."""
    t, m = spec.training, spec.model
    processor, _ = run_processor(m, spec.data)
    dtype = torch.bfloat16 if t.bf16 else torch.float16 if t.fp16 else None
    built = build_model(m, "projector_only", torch_dtype=dtype)
    # Nothing trains here; projector-only freezing (as a stage-2 cell starts) makes the tower's features
    # cacheable and gives the scoring Trainer the PEFT-wrapped model it accepts at --bits 8.
    model = apply_strategy(built.model, m, "projector_only", verbose=False).eval()
    records = []
    for form in ZERO_SHOT_STRATEGIES:
        start = time.time()
        data = prepare_data(
            question(spec.data, form), processor, seed=t.seed, model_max_length=t.model_max_length
        )
        features = prepare_feature_cache(
            model, data.splits, data.collator, batch_size=t.per_device_eval_batch_size
        )
        with scoring_trainer(
            model, data.collator, data.fake_id, data.real_id, t.per_device_eval_batch_size
        ) as trainer:
            final = evaluate_final(
                trainer, data.splits, caption=False, threshold_rule=t.threshold_rule, drop_nonfinite=t.drop_nonfinite_scores
            )  # fmt: skip
        metrics = {
            split: {k.removeprefix(f"{split}_"): v for k, v in values.items()}
            for split, values in final.evaluated.items()
        }
        records.append({
            "cell": {"projector": m.mm_projector_type, "strategy": form, "seed": seed,
                     "name": f"{m.mm_projector_type}__{form}__seed{seed}"},
            "key": key,
            "projector_init": built.projector_init,
            "question": {"prompt": data.collator.prompt, "answer_fake": data.collator.answer_fake,
                         "answer_real": data.collator.answer_real, "template": data.collator.template.name},
            "metrics": metrics | {"threshold": final.threshold},
            "scores": final.scores,
            "parameters": {"trainable": 0, "projector": sum(p.numel() for p in projector_of(model).parameters()),
                           "projector_macs_per_token": None},
            "peak_memory": {"device": "cpu", "peak_rss_mb": None},
            "time": {"s_per_step": None, "scoring_s": round(time.time() - start, 1)},
            "feature_cache": features.stats(),
            "env": run_environment(),
            "config": {"model": dataclasses.asdict(m), "data": dataclasses.asdict(question(spec.data, form)),
                       "training": t.to_dict()},
        })  # fmt: skip
    return records
