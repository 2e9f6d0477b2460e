"""Training: the workflow (``workflow.train``), the Trainer and its callbacks, the output folder contract
and honest resume. ``python -m llava_df.train`` and ``llava-df train`` run ``workflow.main``."""
