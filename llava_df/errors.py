"""One error style for every entry point: ``error: <what was wrong, the bad value, what to do>``.

A user error (bad flag, bad data, a run folder in the wrong state) ends with that one line on
stderr and exit code 2 (usage: the command line or config is wrong) or 1 (run: the inputs or
the folder are wrong). A traceback means a bug in llava_df, or ``--debug`` was given
(or ``LLAVA_DF_DEBUG=1``), which re-raises user errors too.

How to use::

    @cli_entry
    def main(argv: list[str]) -> ...:          # argv without --debug
        parser = ArgumentParser(prog="python -m llava_df.x")   # errors raise UsageError
        ...
        raise RunError("--run_dir x has no final/: train it first, or pass --weights best.")
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable
from typing import Any


class UserError(Exception):
    """A problem with the user's input; its message names the bad value, what was expected, the fix."""

    exit_code = 1


class UsageError(UserError, ValueError):
    """A bad flag, value or combination of flags (exit code 2)."""

    exit_code = 2


class ConfigError(UsageError):
    """A bad flag, value or combination found while parsing; the message says what to change."""


class RunError(UserError, RuntimeError):
    """A run that cannot start or go on: the folder, a checkpoint or a resource is not as needed."""


class DataError(UserError, ValueError):
    """The dataset is wrong: a label, a split, a duplicate, a file. Raised before any model loads."""


class DataNotFoundError(DataError, FileNotFoundError):
    """A data file or folder that does not exist."""


class ModelNotFoundError(UserError, FileNotFoundError):
    """--model_name_or_path names no checkpoint this machine can load."""


class WeightsError(UserError, ValueError):
    """A weights file that cannot be read or does not fit the model; names the file and what to use."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad command line raises UsageError (printed by cli_entry) instead of exiting."""

    def error(self, message: str):
        raise UsageError(f"{message}. Run `{self.prog} --help` for every flag.")


DEBUG_FLAG = "--debug"


def debug_requested(argv: list[str]) -> bool:
    return DEBUG_FLAG in argv or os.environ.get("LLAVA_DF_DEBUG", "") not in ("", "0")


def cli_entry(main: Callable[[list[str]], Any]) -> Callable[[list[str] | None], Any]:
    """Wrap an entry point: strip ``--debug``, end a UserError with one ``error:`` line and its exit code."""

    @functools.wraps(main)
    def wrapper(argv: list[str] | None = None):
        argv = list(sys.argv[1:] if argv is None else argv)
        debug = debug_requested(argv)
        try:
            return main([a for a in argv if a != DEBUG_FLAG])
        except UserError as err:
            if debug:
                raise
            # Under torchrun / accelerate another process than the main one says which it is.
            rank = int(os.environ.get("RANK", "0"))
            print(f"error: {f'[rank {rank}] ' if rank else ''}{err}", file=sys.stderr, flush=True)
            raise SystemExit(err.exit_code) from None

    return wrapper
