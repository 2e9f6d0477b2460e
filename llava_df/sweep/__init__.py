"""The projector comparison: cells, one JSON per run, statistics, tables and plots.

``python -m llava_df.compare_projectors`` is the entry point; these are its parts, each with one
idea: ``cells`` (what runs), ``record`` (the per-run JSON), ``stats`` (intervals and paired
tests), ``tables`` (results/comparison.{csv,md}) and ``plots`` (the PNGs).
"""
