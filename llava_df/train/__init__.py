"""Training: the workflow, the Trainer and its callbacks, the output folder contract, honest resume.

``python -m llava_df.train`` and ``llava-df train`` run ``workflow.main``.
"""
