"""Data: the synthetic deepfake benchmark, real folders / JSONL, SBI, prompts and the collator.

Entry points: ``load_splits(data_args, seed)`` (train/val/test FaceDatasets),
``synthetic.generate(SyntheticConfig(...))`` (in-memory benchmark with face attributes),
``labels.label_mapping(...)`` (save it with the run), and the collator in ``collator.py``.
"""

from llava_df.data.collator import DeepfakeCollator, answer_token_ids, make_collator
from llava_df.data.dataset import FaceDataset, Record
from llava_df.data.labels import FAKE, REAL, label_mapping
from llava_df.data.load import load_splits
from llava_df.data.synthetic import Sample, SyntheticConfig, generate

__all__ = [
    "FAKE",
    "REAL",
    "DeepfakeCollator",
    "FaceDataset",
    "Record",
    "Sample",
    "SyntheticConfig",
    "answer_token_ids",
    "generate",
    "label_mapping",
    "load_splits",
    "make_collator",
]
