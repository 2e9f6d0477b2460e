"""Which base model a checkpoint's trained parts belong to, so they are never loaded onto another.

How to call::

    identity = base_identity(path_loaded, name)      # {"name": ..., "revision": ...}; build_model records it
    check_base(saved_identity, current_identity, where, allow=False)   # WeightsError naming both, unless allowed

The revision is the hub commit for a hub checkpoint (from its snapshot folder), and for a local
folder a hash of its config.json and of the names and sizes of its weight files (hashing 14 GB
of weights would take minutes; a retrained or resized base changes the listing or the config).
LoRA and projector weights trained on one base are meaningless on another one with the same
shapes, which loads without any error: this check is the only thing that catches it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from llava_df.errors import WeightsError

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def base_identity(path: str, name: str) -> dict:
    folder = Path(path)
    if not folder.is_dir():
        return {"name": name, "revision": "unknown (not a local folder)"}
    parts = folder.parts
    if "snapshots" in parts and parts.index("snapshots") + 1 < len(
        parts
    ):  # the HF cache: .../snapshots/<commit>
        return {"name": name, "revision": parts[parts.index("snapshots") + 1]}
    h = hashlib.sha256((folder / "config.json").read_bytes() if (folder / "config.json").is_file() else b"")
    listing = sorted((p.name, p.stat().st_size) for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES)
    h.update(json.dumps(listing).encode())
    return {"name": name, "revision": f"local:{h.hexdigest()[:16]}"}


def check_base(saved: dict | None, current: dict | None, where: str, allow: bool = False) -> None:
    """Refuse to load ``where``'s trained parts (their base: ``saved``) onto a model built from another
    base (``current``: BuiltModel.base)."""
    if not saved or not current or saved == current:
        return  # checkpoints from before the record existed cannot be checked
    if allow:
        logging.getLogger(__name__).warning(
            "%s was trained on %s (%s), loading onto %s (%s): --allow_base_mismatch",
            where, saved["name"], saved["revision"], current["name"], current["revision"],
        )  # fmt: skip
        return
    raise WeightsError(
        f"{where} was trained on base {saved['name']} (revision {saved['revision']}), but the model built now is "
        f"{current['name']} (revision {current['revision']}). Its LoRA/projector weights would load without error and "
        "mean nothing. Use the base it was trained on, or pass --allow_base_mismatch True if you know they are the same."
    )
