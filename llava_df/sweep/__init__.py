"""The projector comparison (``llava-df compare``): cells, one JSON per run, probes, statistics, tables, plots.

Each module has one idea: ``compare`` (the command), ``cells`` (what runs), ``record`` (the per-run
JSON), ``probes`` (feature probes, the ceiling rows), ``stage1`` (caption alignment first),
``stats`` (intervals and paired tests), ``delong`` / ``inference`` / ``confirm`` (the
protocol's analysis: DeLong + seed error, Holm/BH, TOST, the minimum detectable difference), ``tables`` (results/comparison.{csv,md}), ``plots`` (the
PNGs), ``real_scale`` (the planner's LLaVA-1.5-7B peak per cell).
"""
