"""Workarounds for behaviour of a dependency release, each naming the release and the symptom.

Each one is pinned by a test, so that the next release that changes the behaviour shows up.
"""

from __future__ import annotations

import contextlib
import warnings


@contextlib.contextmanager
def quiet_peft_checkpointing_probe():
    """Silence one FutureWarning that PEFT triggers, not llava_df.

    PEFT 0.21 ``PeftModel.__init__`` reads ``model.is_gradient_checkpointing``, which transformers
    5.x deprecated for ``is_activation_checkpointing`` ("will be removed in v6"): every run printed
    it once per PeftModel, with nothing a user could change. Only that message is ignored.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning
        )
        yield
