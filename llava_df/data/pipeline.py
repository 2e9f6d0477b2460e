"""How a run turns an image into a scored answer: its splits, collator and answer token ids.

Shared by training, evaluate, predict, the demo and the probes, so the five preprocess alike.
The processor comes in ready (llava_df.model.processor.run_processor: the run's aspect ratio).

How to call::

    data = prepare_data(data_args, processor, seed=0, model_max_length=512)   # PreparedData; the whole dataset checked
    collator, fake_id, real_id = load_data_settings(data_args, processor, model_max_length)
"""

from __future__ import annotations

from dataclasses import dataclass

from llava_df.data.collator import answer_token_ids, make_collator
from llava_df.data.load import load_splits
from llava_df.errors import DataError


@dataclass(frozen=True)
class PreparedData:
    splits: dict
    collator: object
    fake_id: int | None  # None for captions (stage 1): nothing is scored
    real_id: int | None

    def summary(self) -> dict:
        """For results.json: split sizes and every skipped entry with its reason."""
        loaded = self.splits["train"].summary
        info = loaded.to_dict() if loaded is not None else {}
        return info | {"splits": {name: len(ds) for name, ds in self.splits.items()}}


def load_data_settings(data_args, processor, model_max_length: int, answer_head: str = "generate"):
    """(collator, fake_token_id, real_token_id): how a run turns an image into a scored answer.
    ``answer_head``: the run's --answer_head (classifier: the loss on the first answer token only)."""
    collator = make_collator(processor, data_args, model_max_length=model_max_length, answer_head=answer_head)
    if getattr(data_args, "task", None) == "caption":  # captions are trained on, not scored
        return collator, None, None
    answers = [data_args.answer_fake, data_args.answer_real]
    fake_id, real_id = answer_token_ids(processor.tokenizer, answers, data_args.conv_template)
    return collator, fake_id, real_id


def prepare_data(
    data_args, processor, *, seed: int, model_max_length: int, answer_head: str = "generate"
) -> PreparedData:
    """Index and check the whole dataset with the tokenizer only (no model weights): labels, splits,
    duplicates, readable files, and one sample through the collator (a prompt that
    --model_max_length truncates fails here, not at step 1)."""
    try:
        splits = load_splits(data_args, seed=seed)
        collator, fake_id, real_id = load_data_settings(data_args, processor, model_max_length, answer_head)
    except DataError:
        raise
    except (ValueError, KeyError, FileNotFoundError) as err:  # a loader's message, written for the user
        raise DataError(str(err).strip("'\"")) from None
    collator([split_of(splits, "train")[0]])
    return PreparedData(splits, collator, fake_id, real_id)


def split_of(splits, name: str):
    return splits[name] if isinstance(splits, dict) else getattr(splits, name)
