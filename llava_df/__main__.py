"""``llava-df <verb>``: every application of llava_df behind one command (``python -m llava_df`` too).

    llava-df train --config tiny_lora_lowvram        # INT8 + LoRA fine-tuning (python -m llava_df.train)
    llava-df predict --run_dir outputs/run faces/    # P(Fake) for your images
    llava-df compare --workers 2                     # the projector comparison (python -m llava_df.compare_projectors)
    llava-df <verb> --help                           # the verb's flags, with their defaults

One flag dialect everywhere: ``--flag value``, a boolean as ``--flag`` alone or ``--flag True``.
"""

from __future__ import annotations

import difflib
import sys

from llava_df import __version__
from llava_df.cli_args import run_verb
from llava_df.errors import UsageError, cli_entry

# verb -> (its flags "module:function", which imports no torch; its run "module:function", called with what the
# flags returned; arguments put before the user's; one line of help). llava_df.cli_args.run_verb imports the run's
# module only once the flags are good: --help, --version and every usage error answer at once (tests/test_fast_verbs.py).
VERBS: dict[str, tuple[str, str, tuple[str, ...], str]] = {
    "train": (
        "llava_df.spec.parse:check_train_argv",
        "llava_df.train.workflow:run",
        (),
        "train a detector (INT8/NF4/16-bit LLaVA, any strategy and projector)",
    ),
    "evaluate": (
        "llava_df.apps.evaluate_flags:parse",
        "llava_df.apps.evaluate:run",
        (),
        "score one split of a finished run at its threshold rule",
    ),
    "predict": (
        "llava_df.apps.predict_flags:parse",
        "llava_df.apps.predict:run",
        (),
        "P(Fake) and a label for your own images",
    ),
    "demo": (
        "llava_df.apps.demo_flags:parse",
        "llava_df.apps.demo:run",
        (),
        "a local web page that scores an uploaded face (Gradio)",
    ),
    "merge": (
        "llava_df.apps.merge_flags:parse",
        "llava_df.apps.merge:run",
        (),
        "a run as one standalone checkpoint, LoRA folded in",
    ),
    "compare": (
        "llava_df.sweep.compare_flags:parse",
        "llava_df.sweep.compare:run",
        (),
        "the projector comparison: runs, statistics, tables, plots",
    ),
    "plan": (
        "llava_df.memory.plan_flags:parse",
        "llava_df.memory.__main__:run",
        ("plan",),
        "will a training config fit, and where does the memory go",
    ),
    "projectors": (
        "llava_df.projectors.cli_flags:parse_args",
        "llava_df.projectors.__main__:run",
        (),
        "the projector zoo: parameters, multiply-adds, speed",
    ),
    "data": (
        "llava_df.data.cli_flags:parse",
        "llava_df.data.__main__:run",
        (),
        "write the synthetic benchmark, its captions, SBI fakes, or face crops from videos to disk",
    ),
}


def usage() -> str:
    width = max(map(len, VERBS))
    lines = [
        __doc__.strip().split("\n")[0],
        "",
        "usage: llava-df <verb> [flags]   (llava-df <verb> --help; llava-df --version)",
        "",
    ]
    lines += [f"  {verb:<{width}}  {line}" for verb, (_, _, _, line) in VERBS.items()]
    return "\n".join(lines)


@cli_entry
def run(argv: list[str]):
    """Run ``llava-df`` with ``argv``; returns what the verb returns (a run's results dict, predict's rows...)."""
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return None
    if argv[0] == "--version":
        print(f"llava_df {__version__}")
        return None
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        close = difflib.get_close_matches(verb, VERBS, n=1)
        hint = f" Did you mean `llava-df {close[0]}`?" if close else ""
        raise UsageError(
            f"unknown verb {verb!r}; expected one of {', '.join(VERBS)}.{hint} Run `llava-df --help`."
        )
    flags, runs, prefix, _ = VERBS[verb]
    return run_verb(flags, runs, rest, prefix)


def main(argv: list[str] | None = None) -> None:
    """The console script: returns nothing, so its exit code is 0 unless a verb exits otherwise."""
    run(list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
