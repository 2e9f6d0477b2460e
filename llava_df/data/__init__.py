"""Data: the synthetic deepfake benchmark, real folders / JSONL, SBI, prompts and the collator.

Entry points: ``load.load_splits(data_args, seed)`` (train/val/test FaceDatasets),
``synthetic.generate(SyntheticConfig(...))`` (in-memory benchmark with face attributes),
``labels.label_mapping(...)`` (save it with the run), and the collator in ``collator.py``.
Nothing is imported here: the conversation templates (``conversation.py``) are read by the flag
checks before torch loads, and importing this package must not load it.
"""
