"""``llava-df <verb>``: every application of llava_df behind one command (``python -m llava_df`` too).

    llava-df train --config tiny_lora_lowvram        # INT8 + LoRA fine-tuning (python -m llava_df.train)
    llava-df predict --run_dir outputs/run faces/    # P(Fake) for your images
    llava-df compare --workers 2                     # the projector comparison (python -m llava_df.compare_projectors)
    llava-df <verb> --help                           # the verb's flags, with their defaults

One flag dialect everywhere: ``--flag value``, a boolean as ``--flag`` alone or ``--flag True``.
"""

from __future__ import annotations

import importlib
import sys

# verb -> (module whose main(argv) runs it, arguments put before the user's, one line of help)
VERBS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "train": (
        "llava_df.train.workflow",
        (),
        "train a detector (INT8/NF4/16-bit LLaVA, any strategy and projector)",
    ),
    "evaluate": ("llava_df.apps.evaluate", (), "score one split of a finished run at its threshold rule"),
    "predict": ("llava_df.apps.predict", (), "P(Fake) and a label for your own images"),
    "demo": ("llava_df.apps.demo", (), "a local web page that scores an uploaded face (Gradio)"),
    "merge": ("llava_df.apps.merge", (), "a run as one standalone checkpoint, LoRA folded in"),
    "compare": ("llava_df.sweep.compare", (), "the projector comparison: runs, statistics, tables, plots"),
    "plan": (
        "llava_df.memory.__main__",
        ("plan",),
        "will a training config fit, and where does the memory go",
    ),
    "projectors": ("llava_df.projectors.__main__", (), "the projector zoo: parameters, multiply-adds, speed"),
    "data": (
        "llava_df.data.__main__",
        (),
        "write the synthetic benchmark, its captions, SBI fakes, or face crops from videos to disk",
    ),
}


def usage() -> str:
    width = max(map(len, VERBS))
    lines = [
        __doc__.strip().split("\n")[0],
        "",
        "usage: llava-df <verb> [flags]   (llava-df <verb> --help)",
        "",
    ]
    lines += [f"  {verb:<{width}}  {line}" for verb, (_, _, line) in VERBS.items()]
    return "\n".join(lines)


def run(argv: list[str]):
    """Run ``llava-df`` with ``argv``; returns what the verb returns (a run's results dict, predict's rows...)."""
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return None
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        print(
            f"error: unknown verb {verb!r}; expected one of {', '.join(VERBS)}. Run `llava-df --help`.",
            file=sys.stderr,
        )
        raise SystemExit(2)
    module, prefix, _ = VERBS[verb]
    # Imported only when its verb runs: `llava-df --help` stays instant, and a verb's heavy or
    # optional dependencies (gradio for demo) load only for it.
    return importlib.import_module(module).main([*prefix, *rest])


def main(argv: list[str] | None = None) -> None:
    """The console script: returns nothing, so its exit code is 0 unless a verb exits otherwise."""
    run(list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
