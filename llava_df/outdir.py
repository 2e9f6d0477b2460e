"""The output folder contract: one run per folder, nothing finished is lost, nothing half-written is trusted.

How to call (``llava_df.train`` does, after validating every flag and the whole dataset)::

    with claim_output_dir(out, overwrite=..., resume=...) as claim:
        claim.resume            # a complete checkpoint folder to resume from, or None
        trainer = Trainer(..., callbacks=[claim.callback(), ...])
        ...

- **Lock.** ``.llava_df.lock`` holds the owner's pid, host, start time and command. A second run
  into a folder a live run holds is refused, naming that process; a lock left by a dead process
  is taken over with a warning.
- **States.** empty (or only the user's own files) -> a new run. A finished run (``final/``) is
  refused unless ``--overwrite_output_dir``. An unfinished run (checkpoints, ``best/``, history,
  no ``final/``: it crashed or was killed) is refused unless ``--resume_from_checkpoint`` or
  ``--overwrite_output_dir``: a new run there would report the old run's ``best/`` as its own.
- **Overwrite.** The old run's files are moved into ``.replaced_run/`` and deleted only once the
  new run has written its first complete checkpoint (or ``final/``, with checkpoints off). If the
  new run fails before that, the old run is moved back. A ``.replaced_run/`` left by a killed
  process is resolved the same way at the next start.
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

from transformers import TrainerCallback

from .errors import RunError

logger = logging.getLogger(__name__)

LOCK = ".llava_df.lock"
ASIDE = ".replaced_run"
MARKER = "llava_df_complete.json"
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
# What a run writes; anything else in the folder is the user's and is never moved or deleted.
RUN_FILES = ("final", "best", "runs", "training_history.json", "results.json", "run_config.json", "config.yaml", "env.json")  # fmt: skip
RUN_GLOBS = ("checkpoint-*", "eval_*.json")


def is_main_process() -> bool:
    # Launchers (torchrun, accelerate, deepspeed) set RANK; only rank 0 owns the folder.
    return int(os.environ.get("RANK", "0")) == 0


# ---- lock -----------------------------------------------------------------------------------
def _process_start(pid: int) -> float | None:
    try:
        import psutil

        return psutil.Process(pid).create_time()
    except Exception:
        return None


def _lock_owner_alive(info: dict) -> bool:
    if info.get("host") != socket.gethostname():
        return True  # cannot check another machine's processes: assume alive, say how to clear it
    started = _process_start(int(info.get("pid", -1)))
    # A recycled pid belongs to a process that started after the lock was written.
    return started is not None and started <= float(info.get("process_started", started)) + 1


def acquire_lock(out: Path) -> Path:
    """Create ``out/.llava_df.lock`` atomically; RunError if a live run holds it."""
    path = out / LOCK
    me = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "process_started": _process_start(os.getpid()),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]]),
    }
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                info = json.loads(path.read_text() or "{}")
            except (OSError, ValueError):
                info = {}
            if info and _lock_owner_alive(info):
                where = "" if info.get("host") == me["host"] else f" on host {info.get('host')}"
                raise RunError(
                    f"--output_dir {out} is in use by a live run: pid {info.get('pid')}{where}, started "
                    f"{info.get('started')}, command `{info.get('command')}`. Wait for it to finish, or choose another "
                    f"--output_dir. (If that process is gone, delete {path}.)"
                ) from None
            logger.warning(
                "taking over a stale lock in %s (pid %s, started %s, is not running)",
                out, info.get("pid"), info.get("started"),
            )  # fmt: skip
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        return path
    raise RunError(
        f"Could not lock --output_dir {out}: another run keeps taking it. Choose another --output_dir."
    )


# ---- folder state ---------------------------------------------------------------------------
def run_artifacts(out: Path) -> list[Path]:
    """The files and folders of a run in ``out`` (not the lock, not the user's own files)."""
    if not out.is_dir():
        return []
    found = [out / n for n in RUN_FILES if (out / n).exists()]
    for pattern in RUN_GLOBS:
        found += sorted(p for p in out.glob(pattern) if p not in found)
    return found


def checkpoint_dirs(out: Path) -> list[Path]:
    """checkpoint-N folders, newest (highest N) first."""
    if not out.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in out.iterdir() if p.is_dir() and (m := CHECKPOINT.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def mark_complete(checkpoint: Path) -> None:
    """Write the marker listing every file of a checkpoint the Trainer finished writing, with sizes."""
    files = {
        str(p.relative_to(checkpoint)): p.stat().st_size
        for p in sorted(checkpoint.rglob("*"))
        if p.is_file() and p.name != MARKER
    }
    tmp = checkpoint / f".{MARKER}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"files": files, "written": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=1))
    os.replace(tmp, checkpoint / MARKER)


def checkpoint_problem(checkpoint: Path) -> str | None:
    """Why ``checkpoint`` cannot be resumed from (None: complete and intact)."""
    marker = checkpoint / MARKER
    if not marker.is_file():
        return f"incomplete: no {MARKER} (the run stopped while writing it)"
    try:
        files = json.loads(marker.read_text())["files"]
    except (OSError, ValueError, KeyError):
        return f"its {MARKER} is unreadable"
    for name, size in files.items():
        path = checkpoint / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} is {path.stat().st_size} bytes, {size} when written (truncated or overwritten)"
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
    lock: Path | None = None
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
    if (out / "final").exists() or any(checkpoint_problem(c) is None for c in checkpoint_dirs(out)):
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
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _check_state(out: Path, artifacts: list[Path], *, overwrite: bool, resume: str | None) -> None:
    """RunError when the folder's state and the flags disagree (every process checks the same)."""
    names = sorted(p.name for p in artifacts)
    wants_resume = resume_request(resume) is not None
    if (out / "final").exists():
        if not overwrite:
            raise RunError(
                f"--output_dir {out} holds a finished run (final/ exists). Pass --overwrite_output_dir True to "
                "replace it, or choose another --output_dir."
            )
        if wants_resume:
            raise RunError(f"--resume_from_checkpoint with --overwrite_output_dir on finished run {out}: pick one.")
    elif artifacts and not (overwrite or wants_resume):
        raise RunError(
            f"--output_dir {out} holds an unfinished run ({', '.join(names)}; no final/): it crashed or was "
            "stopped. Pass --resume_from_checkpoint last to continue it, --overwrite_output_dir True to replace "
            "it, or choose another --output_dir."
        )


@contextlib.contextmanager
def claim_output_dir(out: Path, *, overwrite: bool, resume: str | None):
    """Lock ``out``, check its state against the flags, set a replaced run aside; see the module doc."""
    out = Path(out)
    if out.is_dir():  # every process checks the same state before the main one changes anything
        _check_state(out, run_artifacts(out), overwrite=overwrite, resume=resume)
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
        _check_state(out, artifacts, overwrite=overwrite, resume=resume)  # again: the aside may have changed it
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
            claim.lock.unlink(missing_ok=True)
