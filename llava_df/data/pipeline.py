"""How a run turns an image into a scored answer: its splits, collator and answer token ids.

Shared by training, evaluate, predict, the demo and the probes, so the five preprocess alike.

How to call::

    splits, collator, fake_id, real_id = load_data(data_args, processor, seed, model_max_length)
    collator, fake_id, real_id = load_data_settings(data_args, processor, model_max_length)
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def load_data(data_args, processor, seed: int, model_max_length: int):
    """(splits dict, collator, fake_token_id, real_token_id) from llava_df.data (ids None for captions)."""
    from llava_df.data import load_splits

    splits = load_splits(data_args, seed=seed)
    return (splits, *load_data_settings(data_args, processor, model_max_length))


def load_data_settings(data_args, processor, model_max_length: int):
    """(collator, fake_token_id, real_token_id): how a run turns an image into a scored answer.

    Shared by training, evaluate, predict and the demo, so the four preprocess alike.
    """
    from llava_df.data import answer_token_ids, make_collator
    from llava_df.spec.llava_flags import apply_image_aspect_ratio

    # --image_aspect_ratio on the processor the collator uses; the resolved value is saved with the run.
    processor, data_args.image_aspect_ratio, note = apply_image_aspect_ratio(
        processor, getattr(data_args, "image_aspect_ratio", None), "the checkpoint"
    )
    if note:
        logger.warning("note: %s", note)
    collator = make_collator(processor, data_args, model_max_length=model_max_length)
    if getattr(data_args, "task", None) == "caption":  # captions are trained on, not scored
        return collator, None, None
    answers = [data_args.answer_fake, data_args.answer_real]
    fake_id, real_id = answer_token_ids(processor.tokenizer, answers, data_args.conv_template)
    return collator, fake_id, real_id


def split_of(splits, name: str):
    return splits[name] if isinstance(splits, dict) else getattr(splits, name)


