"""Files that several processes may write or read at once: atomic writes, and folders built once.

How to call::

    write_text(path, text)            # temporary name in the same folder, then rename: never half a file
    write_json(path, payload)         # the same, JSON (NaN/inf as null)
    build_once(target, write)         # a folder that one process builds and every other one waits for

``build_once`` is for shared caches (the tiny preset, its parts, an assembled LLaVA): any number
of processes (test workers, sweep workers, torchrun / accelerate ranks) may ask for the same
folder at the same time. One builds it, under a file lock next to it; the others wait on that
lock. The builder writes into a temporary sibling, checks it (``verify``), writes the completeness
marker LAST and only then renames it into place. A folder without the marker (a crash, a killed
process, an older llava_df that wrote no marker, a rank whose ``save_pretrained`` skipped the
weights) is never used: it is rebuilt, with a warning naming it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from filelock import FileLock, Timeout

from llava_df.errors import RunError

logger = logging.getLogger(__name__)

COMPLETE = ".llava_df_complete.json"  # written last into a folder built by build_once
_WAIT_NOTICE_S = 10.0  # say once that we wait for another process after this long

_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read the process umask (the only way is to set it and put it back)


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """llava_df's shared cache: ``cache_dir``, else $LLAVA_DF_CACHE, else ~/.cache/llava_df."""
    return Path(cache_dir or os.environ.get("LLAVA_DF_CACHE") or Path.home() / ".cache" / "llava_df")


def follow_umask(path: str | os.PathLike) -> None:
    """Give ``path`` (a file, or a folder and everything under it) the permissions the umask says (0644 / 0755
    under the usual 022). safetensors writes 0600 and mkdtemp makes 0700: a lab's shared cache or run folder
    would be unreadable to the colleagues it is shared with."""
    path = Path(path)
    for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
        if not p.is_symlink():
            os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~_UMASK)


# ---- atomic files ---------------------------------------------------------------------------
def write_text(path: str | os.PathLike, text: str) -> None:
    """Write via a uniquely named temporary file in the same folder, then rename: a killed run or a
    second process never leaves or reads half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are meant to be shared like any file
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, payload) -> None:
    """JSON (NaN/inf as null) written atomically, see write_text."""
    write_text(path, json.dumps(_finite_or_none(payload), indent=2, default=_json_default, allow_nan=False))


def _finite_or_none(value):
    """NaN/inf -> null: strict JSON readers (jq, JavaScript) reject NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_none(v) for v in value]
    return value


def _json_default(value):
    if isinstance(value, float | int):
        return value
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    return str(value)


# ---- completeness records -------------------------------------------------------------------
# A folder several files make up (a cache entry, a checkpoint) is trusted only through a record
# written LAST, listing each file with its size and, for the files whose content decides an answer
# (weights, cached features), its SHA-256. Sizes are checked on every use (cheap); digests when a
# process first opens the folder (verify_digests), so same-size damage (rows reversed in place, a
# file copied in from another checkpoint) is caught too.
def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):  # 16 MiB at a time: cached features and unfrozen layers are GBs
            h.update(chunk)
    return h.hexdigest()


def mark_complete(folder: str | os.PathLike, marker: str = COMPLETE, *, digest=lambda name: False) -> None:
    """Write ``folder/marker`` (atomically, last) listing every file of ``folder`` with its size, and the
    SHA-256 of each file ``digest(relative name)`` selects."""
    folder = Path(folder)
    files, digests = {}, {}
    for p in sorted(folder.rglob("*")):
        name = str(p.relative_to(folder))
        if not p.is_file() or name == marker or p.name.startswith(f".{marker}"):
            continue
        files[name] = p.stat().st_size
        if digest(name):
            digests[name] = file_sha256(p)
    write_json(
        folder / marker,
        {
            "files": files,
            "sha256": digests,
            "written": time.strftime("%Y-%m-%d %H:%M:%S"),
            "pid": os.getpid(),
        },
    )


def completeness_problem(
    folder: str | os.PathLike, marker: str = COMPLETE, *, digests: bool = False
) -> str | None:
    """Why ``folder`` is not complete and intact (None: it is): no record, a listed file missing or of
    another size, or (``digests``) a listed file whose content changed since the record was written."""
    folder = Path(folder)
    try:
        record = json.loads((folder / marker).read_text())
        listed, recorded = record["files"], record.get("sha256") or {}
    except FileNotFoundError:
        return f"incomplete: no {marker} (the process writing it stopped before the end)"
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"its {marker} is unreadable ({type(err).__name__})"
    for name, size in listed.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing (listed in {marker})"
        if path.stat().st_size != size:
            return f"{name} is {path.stat().st_size} bytes, {size} when written (truncated or overwritten)"
    if digests:
        for name, sha in recorded.items():
            actual = file_sha256(folder / name)
            if actual != sha:
                return (
                    f"{name} changed since it was written (sha256 {actual[:12]}, recorded {sha[:12]}): damaged "
                    "or replaced in place"
                )
    return None


def is_complete(folder: Path) -> bool:
    """True when ``folder`` was finished by build_once and every file it lists still has its size."""
    return completeness_problem(folder) is None


# ---- folders built once ---------------------------------------------------------------------
def remove_folder(folder: Path) -> None:
    """Move ``folder`` out of the way (one rename, atomic), then delete it."""
    trash = Path(tempfile.mkdtemp(prefix=f".{folder.name}-stale-", dir=folder.parent))
    os.replace(folder, trash / folder.name)
    shutil.rmtree(trash, ignore_errors=True)


def build_once(
    target: str | os.PathLike,
    write: Callable[[Path], None],
    *,
    verify: Callable[[Path], str | None] | None = None,
    what: str = "folder",
    digest: Callable[[str], bool] = lambda name: False,
) -> Path:
    """``target``, built by ``write(tmp)`` once across processes; see the module docstring.

    ``verify(tmp)`` returns why a freshly written folder is unusable (None: fine); the build then
    fails with that reason instead of leaving a broken folder for every later run. ``digest(name)``
    selects the files whose SHA-256 the completeness record keeps (see completeness_problem).
    """
    target = Path(target)
    if is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(target.parent / f".{target.name}.lock"))
    try:
        lock.acquire(timeout=_WAIT_NOTICE_S)
    except Timeout:
        logger.warning("waiting for another process that is building %s %s", what, target)
        lock.acquire()
    try:
        if is_complete(target):  # the other process finished it while we waited
            return target
        if target.exists():
            logger.warning(
                "%s %s is incomplete (no %s: a crash, a killed process or an older llava_df); rebuilding it",
                what, target, COMPLETE,
            )  # fmt: skip
            remove_folder(target)
        # A builder writes only while holding the lock: a temporary sibling found now is what a killed one left.
        for stale in target.parent.glob(f".{target.name}-*"):
            if stale.is_dir() and not stale.name.startswith(f".{target.name}-stale-"):
                logger.warning("removing %s, left by a build that was killed", stale)
                shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            write(tmp)
            follow_umask(tmp)  # a shared cache is read by everyone who shares it
            problem = verify(tmp) if verify is not None else None
            if problem is not None:
                raise RunError(f"building {what} {target} failed: {problem}. Nothing was kept; run again.")
            mark_complete(tmp, digest=digest)  # last: a folder without it is never used
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        lock.release()
    return target
