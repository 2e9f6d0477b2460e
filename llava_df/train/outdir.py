"""The output folder contract: one run per folder, nothing finished is lost, nothing half-written is trusted.

How to call (``llava_df.train.workflow`` does)::

    check_output_dir(out, overwrite=..., resume=...)   # first of all, read-only: one error line or nothing
    ...                                                # validate flags and data, plan memory
    with claim_output_dir(out, overwrite=..., resume=...) as claim:
        claim.resume            # a complete checkpoint folder to resume from, or None
        trainer = Trainer(..., callbacks=[claim.callback(), ...])
        ...

What a run folder holds is listed once, in ``llava_df.layout``.

- **Checked first.** ``check_output_dir`` runs before anything else of a run is validated: a path
  that is a file, lies under a file or cannot be written, a live run holding the folder, and a
  folder state the flags do not fit each end in one ``error:`` line at once.
- **Lock.** ``.llava_df.lock`` is an OS file lock (``filelock``): held while the run lives and
  released by the operating system when its process dies, so a dead run never blocks a folder and
  two live runs can never both hold it. ``.llava_df.lock.json`` names the holder (pid, host,
  start, command) for the message a second run gets.
- **States.** empty (or only the user's own files) -> a new run. A finished run (``results.json``,
  the last file a run writes) is refused unless ``--overwrite_output_dir``. An unfinished run
  (any other file of ``layout.RUN_FOLDER``: it crashed, was killed, or died in its final
  evaluation) is refused unless ``--resume_from_checkpoint`` or ``--overwrite_output_dir``: a new
  run there would report the old run's ``best/`` as its own.
- **Overwrite.** Every file of ``layout.RUN_FOLDER`` is moved into ``.replaced_run/`` and deleted
  only once the new run has written its first complete checkpoint (or its results, with
  checkpoints off). If the new run fails before that, the old run is moved back. A
  ``.replaced_run/`` left by a killed process is resolved the same way at the next start.
- **Complete checkpoints.** ``checkpoint-N/llava_df_complete.json`` is written after the Trainer
  has written everything else (``on_save``), with each file's size. Resuming takes the newest
  checkpoint whose marker is there and whose files still have those sizes; partial ones (a
  run killed mid-write, a full disk) are named and removed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch.distributed as dist
from filelock import FileLock, Timeout
from transformers import TrainerCallback

from llava_df import io
from llava_df.errors import RunError
from llava_df.io import write_json
from llava_df.layout import ASIDE, LOCK, LOCK_INFO, is_finished, run_artifacts
from llava_df.model.checkpoint import COMPLETE_MARKER as MARKER
from llava_df.model.checkpoint import TRAINED_FILES

logger = logging.getLogger(__name__)
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def is_main_process() -> bool:
    # Launchers (torchrun, accelerate, deepspeed) set RANK; only rank 0 owns the folder.
    return int(os.environ.get("RANK", "0")) == 0


# ---- lock -----------------------------------------------------------------------------------
def _holder(out: Path) -> dict:
    try:
        return json.loads((out / LOCK_INFO).read_text() or "{}")
    except (OSError, ValueError):
        return {}


def _live_message(out: Path, info: dict) -> str:
    if not info:
        return (
            f"--output_dir {out} is in use by a live run (it holds {out / LOCK} and has not named itself yet). "
            "Wait for it to finish, or choose another --output_dir."
        )
    where = "" if info.get("host") == socket.gethostname() else f" on host {info.get('host')}"
    return (
        f"--output_dir {out} is in use by a live run: pid {info.get('pid')}{where}, started {info.get('started')}, "
        f"command `{info.get('command')}`. Wait for it to finish, or choose another --output_dir."
    )


PROBE_WINDOW_S = 1.0  # a probe holds the lock for microseconds; a run holds it for its whole life


def live_run(out: Path) -> dict | None:
    """Who holds ``out``'s lock right now ({} when it has not named itself), or None when nobody does.

    The probe itself takes the lock for an instant, so two processes probing at once (every rank of
    a torchrun checks its folder) can each see the other's probe. A lock counts as a run's only if
    it stays held for ``PROBE_WINDOW_S``; a probe's is gone within microseconds."""
    if not (Path(out) / LOCK).exists():
        return None
    probe = FileLock(str(Path(out) / LOCK))
    deadline = time.monotonic() + PROBE_WINDOW_S
    while True:
        try:
            probe.acquire(timeout=0)
        except Timeout:
            if time.monotonic() >= deadline:
                return _holder(Path(out))
            time.sleep(0.02)
            continue
        probe.release()
        return None


def acquire_lock(out: Path) -> FileLock:
    """Hold ``out/.llava_df.lock`` (the OS releases it if this process dies); RunError if a live run holds it."""
    lock = FileLock(str(Path(out) / LOCK))
    try:
        lock.acquire(timeout=PROBE_WINDOW_S)  # outwaits another process's probe, never a run
    except Timeout:
        raise RunError(_live_message(out, _holder(Path(out)))) from None
    me = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]]),
    }
    write_json(Path(out) / LOCK_INFO, me)
    return lock


def release_lock(out: Path, lock: FileLock) -> None:
    (Path(out) / LOCK_INFO).unlink(missing_ok=True)
    lock.release()


# ---- folder state ---------------------------------------------------------------------------
def checkpoint_dirs(out: Path) -> list[Path]:
    """checkpoint-N folders, newest (highest N) first."""
    if not out.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in out.iterdir() if p.is_dir() and (m := CHECKPOINT.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def mark_complete(checkpoint: Path) -> None:
    """Write the marker listing every file of a checkpoint the Trainer finished writing, with sizes
    (the trained weights with their SHA-256: llava_df.model.checkpoint.TRAINED_FILES)."""
    io.mark_complete(checkpoint, MARKER, digest=lambda name: name in TRAINED_FILES)


def checkpoint_problem(checkpoint: Path) -> str | None:
    """Why ``checkpoint`` cannot be resumed from (None: complete and intact)."""
    problem = io.completeness_problem(checkpoint, MARKER)
    if problem is not None:
        return problem
    try:
        json.loads((checkpoint / "trainer_state.json").read_text())
    except (OSError, ValueError) as err:
        return f"trainer_state.json is unreadable ({type(err).__name__})"
    return None


def resume_request(resume) -> str | None:
    """--resume_from_checkpoint's value read once: None (a new run), "last" (True/last), or a folder."""
    word = "" if resume is None else str(resume).strip()
    if word.lower() in ("", "false", "none"):
        return None
    return "last" if word.lower() in ("true", "last") else word


def resolve_resume(out: Path, resume: str | None, *, remove_partial: bool = True) -> str | None:
    """--resume_from_checkpoint -> a complete checkpoint folder; partial ones are named and removed
    (by the main process only: ``remove_partial``)."""
    request = resume_request(resume)
    if request is None:
        return None
    if request == "last":
        skipped = []
        for ckpt in checkpoint_dirs(out):
            problem = checkpoint_problem(ckpt)
            if problem is None:
                for bad, why in skipped:
                    logger.warning("skipped %s: %s%s", bad, why, "; removing it" if remove_partial else "")
                    if remove_partial:
                        shutil.rmtree(bad, ignore_errors=True)
                return str(ckpt)
            skipped.append((ckpt, problem))
        named = "; ".join(f"{p.name}: {why}" for p, why in skipped) or "none"
        raise RunError(
            f"--resume_from_checkpoint {resume}: no complete checkpoint-N folder in {out} (found: {named}). "
            "Start a new run with --overwrite_output_dir True, or pass a complete checkpoint folder."
        )
    ckpt = Path(resume)
    if not ckpt.is_dir():
        raise RunError(
            f"--resume_from_checkpoint {resume}: no such folder. Pass a checkpoint-N folder, or 'last'."
        )
    problem = checkpoint_problem(ckpt)
    if problem is not None:
        others = [p.name for p in checkpoint_dirs(ckpt.parent) if checkpoint_problem(p) is None]
        hint = f"complete ones next to it: {others}" if others else "no complete checkpoint next to it"
        raise RunError(
            f"--resume_from_checkpoint {resume}: {problem}. Resume from another checkpoint ({hint})."
        )
    return str(ckpt)


# ---- the claim ------------------------------------------------------------------------------
@dataclass
class Claim:
    out: Path
    resume: str | None = None
    aside: Path | None = None  # the replaced run, until the new run has a complete checkpoint
    lock: FileLock | None = None
    notes: list[str] = field(default_factory=list)

    def discard_aside(self) -> None:
        if self.aside is not None and self.aside.exists():
            shutil.rmtree(self.aside)
            logger.warning(
                "--overwrite_output_dir: the new run has a complete checkpoint; deleted the replaced run"
            )
        self.aside = None

    def restore_aside(self) -> None:
        if self.aside is None or not self.aside.exists():
            return
        for item in self.aside.iterdir():
            target = self.out / item.name
            if target.exists():  # the failed new run's own file: the old run's wins
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            os.replace(item, target)
        self.aside.rmdir()
        self.aside = None
        logger.warning(
            "the new run stopped before its first checkpoint; restored the replaced run in %s", self.out
        )

    def callback(self) -> TrainerCallback:
        return OutputDirCallback(self)


class OutputDirCallback(TrainerCallback):
    """Marks each checkpoint complete once the Trainer has written it; then the replaced run may go."""

    def __init__(self, claim: Claim):
        self.claim = claim

    def on_save(self, args, state, control, **kwargs):
        if args.should_save:
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if ckpt.is_dir():
                mark_complete(ckpt)
                self.claim.discard_aside()


def _resolve_leftover_aside(out: Path) -> None:
    aside = out / ASIDE
    if not aside.exists():
        return
    if (
        (out / "final").exists()
        or is_finished(out)
        or any(checkpoint_problem(c) is None for c in checkpoint_dirs(out))
    ):
        shutil.rmtree(aside)  # the replacing run got far enough; it was killed just before deleting this
        logger.warning("deleted %s: the run that replaced it has a complete checkpoint", aside)
    else:
        Claim(out, aside=aside).restore_aside()


def _set_aside(out: Path, artifacts: list[Path]) -> Path:
    aside = out / ASIDE
    aside.mkdir()
    for item in artifacts:
        os.replace(item, aside / item.name)
    return aside


def _wait_for_everyone() -> None:
    """A barrier when several processes run (torchrun / accelerate): every process has checked the
    folder before the main one writes to it, so none sees a half-claimed folder."""

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _check_state(out: Path, artifacts: list[Path], *, overwrite: bool, resume: str | None) -> None:
    """RunError when the folder's state and the flags disagree (every process checks the same)."""
    names = sorted(p.name for p in artifacts)
    wants_resume = resume_request(resume) is not None
    if is_finished(out):
        if not overwrite:
            raise RunError(
                f"--output_dir {out} holds a finished run (results.json exists). Pass --overwrite_output_dir True to "
                "replace it, or choose another --output_dir."
            )
        if wants_resume:
            raise RunError(
                f"--resume_from_checkpoint with --overwrite_output_dir on finished run {out}: pick one."
            )
    elif artifacts and not (overwrite or wants_resume):
        raise RunError(
            f"--output_dir {out} holds an unfinished run ({', '.join(names)}; no results.json): it crashed, was "
            "stopped, or died in its final evaluation. Pass --resume_from_checkpoint last to continue it, "
            "--overwrite_output_dir True to replace it, or choose another --output_dir."
        )


def _check_path(out: Path) -> None:
    """RunError when ``out`` cannot become a run folder: a file, a path under a file, or unwritable."""
    if out.exists() and not out.is_dir():
        raise RunError(f"--output_dir {out} is a file, expected a folder. Choose another --output_dir.")
    existing = out
    while not existing.exists():  # the nearest folder that exists: mkdir starts there
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise RunError(
            f"--output_dir {out}: {existing} is a file, so no folder can be made under it. Choose another --output_dir."
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "" if existing == out else f": {existing} (where it would be made)"
        raise RunError(
            f"--output_dir {out} is not writable by this user{what}. Choose a folder you can write to, or fix its "
            "permissions."
        )


def check_output_dir(out: Path, *, overwrite: bool, resume: str | None) -> None:
    """Read-only, before anything else of a run: RunError when ``out`` cannot take this run (see the module doc)."""
    out = Path(out)
    _check_path(out)
    if not out.is_dir():
        return
    holder = live_run(out)
    if holder is not None:  # first: a live run is neither crashed nor finished
        raise RunError(_live_message(out, holder))
    _check_state(out, run_artifacts(out), overwrite=overwrite, resume=resume)


@contextlib.contextmanager
def claim_output_dir(out: Path, *, overwrite: bool, resume: str | None):
    """Lock ``out``, check its state against the flags, set a replaced run aside; see the module doc."""
    out = Path(out)
    check_output_dir(
        out, overwrite=overwrite, resume=resume
    )  # every process, before the main one changes anything
    _wait_for_everyone()
    if not is_main_process():  # rank 0 owns the folder; the others only read it
        yield Claim(out, resume=resolve_resume(out, resume, remove_partial=False) if resume else None)
        return
    out.mkdir(parents=True, exist_ok=True)
    claim = Claim(out, lock=acquire_lock(out))
    finished = False
    try:
        _resolve_leftover_aside(out)
        artifacts = run_artifacts(out)
        names = sorted(p.name for p in artifacts)
        _check_state(
            out, artifacts, overwrite=overwrite, resume=resume
        )  # again: the aside may have changed it
        if overwrite and artifacts and resume_request(resume) is None:
            claim.aside = _set_aside(out, artifacts)
            claim.notes.append(
                f"--overwrite_output_dir: moved the previous run ({', '.join(names)}) into {ASIDE}/"
            )
            logger.warning("%s; it is deleted once this run has a complete checkpoint", claim.notes[-1])
        claim.resume = resolve_resume(out, resume)
        yield claim
        finished = True
    finally:
        if finished:
            claim.discard_aside()
        else:
            claim.restore_aside()
        if claim.lock is not None:
            release_lock(out, claim.lock)
