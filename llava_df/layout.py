"""THE list of what a run folder and a checkpoint folder hold: one home, read by code and docs alike.

How to call::

    RUN_FOLDER                 # every file, folder and pattern a training run writes into --output_dir
    CHECKPOINT_FOLDER          # what best/, final/ and checkpoint-N/ hold
    run_artifacts(out)         # the paths of a run in ``out`` (never the user's own files)
    is_finished(out)           # results.json is there: the run wrote its last file
    describe(RUN_FOLDER)       # the text block README's "A run writes" shows (a test keeps them equal)

``llava_df.train.outdir`` moves exactly these aside on ``--overwrite_output_dir`` and counts them to tell
an empty folder from a run; a file missing here would survive a replacement and be read as the
new run's (an old threshold.json labelling the new weights' scores, say).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Entry:
    name: str  # a file or folder name, or a glob pattern
    what: str  # one line: what it holds and who reads it
    folder: bool = False


RUN_FOLDER: tuple[Entry, ...] = (
    Entry("run_config.json", "the resolved run spec; `segments`: what each resumed part of the run used"),
    Entry("config.yaml", "only the keys that were set: rerun with --config output_dir/config.yaml"),
    Entry("env.json", "git commit + dirty flag, package versions, device"),
    Entry(
        "training_history.json", "one entry per evaluation: step, epoch, loss, val loss, lr, accuracy, AUC"
    ),
    Entry(
        "runs", "tensorboard logs (TENSORBOARD_LOGGING_DIR or --logging_dir put them elsewhere)", folder=True
    ),
    Entry(
        "checkpoint-*",
        "the Trainer's resumable checkpoints, with our trained parts (see CHECKPOINT_FOLDER)",
        folder=True,
    ),
    Entry(
        "best", "trained parts at the lowest validation loss (the plateau schedule's criterion)", folder=True
    ),
    Entry("final", "trained parts at the last step", folder=True),
    Entry("mm_projector.safetensors", "the test weights' projector in LLaVA's key layout (stage 2 reads it)"),
    Entry("mm_projector.bin", "the same in LLaVA's torch pickle, with --mm_projector_bin True"),
    Entry("scores.json", "P(Fake) per image of val, test (+ heldout): what paired comparisons resample"),
    Entry(
        "threshold.json",
        "the cut on P(Fake) chosen on validation, naming the weights (step + hash) it is for",
    ),
    Entry("eval_*.json", "metrics written by `llava-df evaluate` for this run"),
    Entry(
        "results.json", "every metric, peak memory, the plan, data skipped; written LAST: the run is finished"
    ),
)
FINISHED = "results.json"  # a run is finished only once its last file is written

CHECKPOINT_FOLDER: tuple[Entry, ...] = (
    Entry(
        "llava_df_checkpoint.json", "model arguments, strategy, base identity, projector, files, weights hash"
    ),
    Entry("mm_projector.safetensors", "the projector's state dict"),
    Entry("mm_projector.json", "projector name, class, in/out widths, parameter count"),
    Entry("adapter_config.json", "PEFT LoRA adapter config (lora, unfreeze_early)"),
    Entry("adapter_model.safetensors", "PEFT LoRA weights (lora, unfreeze_early)"),
    Entry("unfrozen_layers.safetensors", "the first N decoder layers in full (unfreeze_early)"),
    Entry("answer_head.safetensors", "the 2-class head in place of lm_head (--answer_head classifier)"),
    Entry(
        "llava_df_complete.json",
        "written LAST: every file with its size, the trained weights with their SHA-256 (checked on load)",
    ),
)

# Bookkeeping of the folder contract itself (llava_df.train.outdir): never part of a run's results.
LOCK = ".llava_df.lock"  # held (filelock, fcntl) by the live run; the OS releases it when that process dies
LOCK_INFO = ".llava_df.lock.json"  # who holds the lock: pid, host, start time, command
ASIDE = ".replaced_run"  # the replaced run, until the new one has a complete checkpoint


def _is_glob(name: str) -> bool:
    return any(c in name for c in "*?[")


def run_artifacts(out: str | Path) -> list[Path]:
    """The files and folders of a run in ``out``, in RUN_FOLDER's order (not the lock, not the user's files)."""
    out = Path(out)
    if not out.is_dir():
        return []
    found: list[Path] = []
    for entry in RUN_FOLDER:
        matches = sorted(out.glob(entry.name)) if _is_glob(entry.name) else [out / entry.name]
        found += [p for p in matches if (p.exists() or p.is_symlink()) and p not in found]
    return found


def is_finished(out: str | Path) -> bool:
    return (Path(out) / FINISHED).is_file()


def describe(entries: tuple[Entry, ...] = RUN_FOLDER) -> str:
    """The entries as an aligned text block, folders with a trailing slash."""

    def label(e: Entry) -> str:
        return e.name + ("/" if e.folder else "")

    width = max(len(label(e)) for e in entries) + 2
    return "\n".join(f"{label(e):<{width}}{e.what}" for e in entries)
