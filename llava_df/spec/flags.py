"""Flag names: the old spellings the parser maps, the flags that map to something else, the message an
unknown flag gets, and the parser class. Shared by the command line, the YAML reader and the flag table."""

from __future__ import annotations

import difflib

from transformers import HfArgumentParser

from llava_df.errors import ConfigError

CONFIG_HELP = "YAML of flags (flat keys or sections); command-line flags override it. See configs/."


class TrainParser(HfArgumentParser):
    """transformers' HfArgumentParser whose errors raise ConfigError (one ``error:`` line, exit 2) instead of exiting."""

    def error(self, message: str):
        raise ConfigError(f"{message}\nRun `llava-df train --help` for every flag.")


# Old or foreign spelling -> schema field. Each use is reported in RunSpec.notes.
RENAMED = {
    "evaluation_strategy": "eval_strategy",  # transformers 5 renamed it
    "warmup_ratio": "warmup_steps",  # transformers 5: warmup_steps < 1 is a fraction of all steps
    "gradient_checkpointing": "activation_checkpointing",  # deprecated alias in transformers 5.x
    "gradient_checkpointing_kwargs": "activation_checkpointing_kwargs",
    "batch_size": "per_device_train_batch_size",  # seeds/003 YAML
    "num_epochs": "num_train_epochs",  # seeds/003 YAML
    "max_length": "model_max_length",  # seeds/003 YAML
}
# Flags that map to something other than one field (handled in _apply_special).
SPECIAL = ("logging_dir", "load_in_8bit", "load_in_4bit")


def unknown_message(name: str, flags: list[str], where: str) -> str:
    close = difflib.get_close_matches(name, flags, n=4, cutoff=0.6)
    hint = f" Did you mean: {', '.join('--' + c for c in close)}?" if close else ""
    return f"{where}: unknown flag --{name}.{hint} Run `llava-df train --help` for every flag."
