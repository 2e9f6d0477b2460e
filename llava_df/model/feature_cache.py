"""Frozen-tower feature cache: the vision tower's selected layer, computed once and read back.

A frozen CLIP tower with dropout 0 maps the same pixels to the same hidden states in every
epoch, evaluation and run of a sweep. This module computes them once per (tower weights,
feature layer, device type, images) into ``$LLAVA_DF_CACHE/features/<key>/`` (one writer across
processes, completeness marker last: llava_df.io.build_once) and makes the tower's forward read
them back from a memory map, which every worker of a sweep shares through the page cache.

How to call::

    info = prepare_feature_cache(model, splits, collator, batch_size=64)  # FeatureCacheInfo (builds once)
    info = attach_existing(model)        # predict / evaluate: read the stores already built, build nothing
    info.stats()           # {"store": ..., "hits": ..., "misses": ..., "images": ...} for results.json
    why_not_cacheable(model) -> str | None                               # the reason it is off

Correct by construction: every lookup is keyed by a digest of the exact pixel tensor the tower
receives, so an image the store does not hold (a new folder, another preprocessing) simply runs
the tower (a miss); the store key only decides which store is opened. Never used when the tower
trains (any tower parameter requires grad), when its dropout is active, or with several feature
layers. On CPU the tower's output is bitwise the same for an image alone or in any batch, so
cached features are bitwise what the tower would return (tests/test_feature_cache.py); on CUDA
they are one valid result of the same kernels.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling

from llava_df import io
from llava_df.errors import RunError
from llava_df.io import build_once, is_complete, write_json
from llava_df.model.anatomy import unwrap

logger = logging.getLogger(__name__)

FOLDER = "features"
FEATURES_FILE = "features.npy"  # [N, tokens, hidden] in the tower's dtype (bf16 stored as uint16)
INDEX_FILE = "index.json"  # the pixel digest of each row, the layer, the dtype
DISK_SHARE = 0.5  # never fill more than half the free disk of the cache with features
_STORED = {torch.float32: np.float32, torch.float16: np.float16, torch.bfloat16: np.uint16}


def vision_tower_of(model: nn.Module) -> nn.Module:
    return unwrap(model).model.vision_tower


def why_not_cacheable(model: nn.Module) -> str | None:
    """Why the tower's features cannot be cached for this model (None: they can)."""
    tower, config = vision_tower_of(model), unwrap(model).config
    if any(p.requires_grad for p in tower.parameters()):
        return "the vision tower trains"
    if not isinstance(config.vision_feature_layer, int):
        return f"several feature layers ({config.vision_feature_layer})"
    dropout = getattr(getattr(tower, "config", None), "attention_dropout", 0.0) or 0.0
    if dropout > 0 or any(isinstance(m, nn.Dropout) and m.p > 0 for m in tower.modules()):
        return "the vision tower's dropout makes its output random in training"
    return None


def pixel_digest(pixels: torch.Tensor) -> str:
    """Digest of one image's pixel tensor (dtype, shape and bytes)."""
    array = pixels.detach().to("cpu").contiguous()
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{array.dtype}{tuple(array.shape)}".encode())
    h.update(
        array.view(torch.uint8).numpy().tobytes()
        if array.dtype == torch.bfloat16
        else array.numpy().tobytes()
    )
    return h.hexdigest()


def tower_identity(tower: nn.Module, layer: int) -> str:
    """Digest of the tower's weights, the feature layer and the device type (CPU and CUDA kernels differ)."""
    h = hashlib.sha256()
    for name, tensor in sorted(tower.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}{t.dtype}{tuple(t.shape)}".encode())
        h.update((t.view(torch.uint8) if t.dtype == torch.bfloat16 else t).numpy().tobytes())
    device = next(tower.parameters()).device.type
    h.update(f"layer={layer};device={device};torch={torch.__version__}".encode())
    return h.hexdigest()[:20]


@dataclass
class FeatureStore:
    folder: Path
    rows: dict[str, int]
    features: np.ndarray  # memory map
    dtype: torch.dtype
    n_hidden_states: int
    layer: int

    @classmethod
    def open(cls, folder: Path) -> FeatureStore:
        """The store in ``folder``; RunError when its content is not what was written (see store_problem)."""
        problem = store_problem(folder)
        if problem is not None:
            raise RunError(
                f"feature cache {folder} is damaged: {problem}. Delete the folder; the next run rebuilds it."
            )
        index = json.loads((folder / INDEX_FILE).read_text())
        dtype = getattr(torch, index["dtype"])
        return cls(
            folder,
            {d: i for i, d in enumerate(index["digests"])},
            np.load(folder / FEATURES_FILE, mmap_mode="r"),
            dtype,
            int(index["n_hidden_states"]),
            int(index["layer"]),
        )

    def read(self, digests: list[str]) -> torch.Tensor | None:
        """Features of these images in order, or None when the store lacks any of them."""
        rows = [self.rows.get(d) for d in digests]
        if any(r is None for r in rows):
            return None
        out = torch.from_numpy(np.ascontiguousarray(self.features[rows]))
        return out.view(self.dtype) if self.dtype == torch.bfloat16 else out


@dataclass
class FeatureCacheInfo:
    stores: list[FeatureStore]
    reason: str | None  # why it is off (None when on)
    hits: int = 0
    misses: int = 0
    _original: object = field(default=None, repr=False)

    def stats(self) -> dict:
        if not self.stores:
            return {"on": False, "reason": self.reason}
        return {"on": True, "store": [str(s.folder) for s in self.stores], "images": sum(len(s.rows) for s in self.stores),
                "hits": self.hits, "misses": self.misses}  # fmt: skip

    def read(self, digests: list[str]) -> torch.Tensor | None:
        """Features of these images in order, from whichever store holds them; None when one is missing."""
        if len(self.stores) == 1:
            return self.stores[0].read(digests)
        found = []
        for d in digests:
            one = next((f for f in (s.read([d]) for s in self.stores) if f is not None), None)
            if one is None:
                return None
            found.append(one)
        return torch.cat(found)


_INTACT: set[tuple] = set()  # stores whose content this process has checked: (folder, size, mtime)


def store_problem(folder: Path) -> str | None:
    """Why the store in ``folder`` cannot be trusted (None: complete, and its features and index have the
    SHA-256 recorded when it was built). The sizes are checked on every call, the digests once per process:
    a store damaged in place at the same size (rows reordered, bytes flipped) would otherwise feed the
    projector another image's features without any error."""
    problem = io.completeness_problem(folder)
    if problem is not None:
        return problem
    features = folder / FEATURES_FILE
    key = (str(folder.resolve()), features.stat().st_size, features.stat().st_mtime_ns)
    if key in _INTACT:
        return None
    recorded = json.loads((folder / io.COMPLETE).read_text()).get("sha256") or {}
    if set(recorded) != {FEATURES_FILE, INDEX_FILE}:
        return "its completeness record has no content digest (written by an older llava_df)"
    problem = io.completeness_problem(folder, digests=True)
    if problem is None:
        _INTACT.add(key)
    return problem


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    return io.cache_root(cache_dir) / FOLDER


def _store_key(layer: int, images: list[str]) -> str:
    h = hashlib.sha256(f"{layer}".encode())
    for digest in sorted(set(images)):
        h.update(digest.encode())
    return h.hexdigest()[:24]


@torch.no_grad()
def _write_store(folder: Path, tower, pixel_batches, layer: int) -> None:
    digests, chunks, n_hidden, dtype = [], [], None, None
    seen: set[str] = set()
    for pixels in pixel_batches:
        keep = []
        for i, p in enumerate(pixels):
            d = pixel_digest(p)
            if d not in seen:
                seen.add(d)
                digests.append(d)
                keep.append(i)
        if not keep:
            continue
        out = tower(pixels[keep], output_hidden_states=True, return_dict=True)
        hidden = out.hidden_states[layer]
        n_hidden, dtype = len(out.hidden_states), hidden.dtype
        chunks.append(hidden.detach().to("cpu"))
    features = torch.cat(chunks)
    stored = features.view(torch.uint16) if dtype == torch.bfloat16 else features
    np.save(folder / FEATURES_FILE, stored.numpy().astype(_STORED[dtype], copy=False))
    write_json(folder / INDEX_FILE, {"digests": digests, "layer": layer, "dtype": str(dtype).removeprefix("torch."),
                                     "n_hidden_states": n_hidden, "shape": list(features.shape)})  # fmt: skip


def _pixel_batches(splits: dict, collator, batch_size: int, device):
    """Every image of the splits, as the collator prepares it, in batches (repeats included)."""
    for ds in splits.values():
        for start in range(0, len(ds), batch_size):
            yield collator([ds[i] for i in range(start, min(start + batch_size, len(ds)))])[
                "pixel_values"
            ].to(device)


def prepare_feature_cache(model: nn.Module, splits: dict, collator, *, batch_size: int = 64,
                          cache_dir: str | os.PathLike | None = None) -> FeatureCacheInfo:  # fmt: skip
    """Build (once) or open the store for every image of ``splits`` and make the tower read it."""
    reason = why_not_cacheable(model)
    if reason is not None:
        return FeatureCacheInfo([], reason)
    tower, config = vision_tower_of(model), unwrap(model).config
    layer, device = config.vision_feature_layer, next(tower.parameters()).device
    # Pass 1 digests the pixels only (the key); pass 2, only when the store is missing, runs the tower.
    digests = [
        pixel_digest(p) for pixels in _pixel_batches(splits, collator, batch_size, "cpu") for p in pixels
    ]
    root = cache_root(cache_dir)
    folder = root / tower_identity(tower, layer) / _store_key(layer, digests)
    if not (folder / INDEX_FILE).is_file():
        one = next(_pixel_batches(splits, collator, 1, device))
        need = _estimated_bytes(tower, one, layer) * len(set(digests))
        root.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(root).free
        if need > DISK_SHARE * free:
            return FeatureCacheInfo([], f"the features need {need / 2**30:.1f} GiB, more than half the free "
                                          f"{free / 2**30:.1f} GiB under {root}")  # fmt: skip
    problem = store_problem(folder) if is_complete(folder) else None
    if problem is not None:  # complete by size but not by content: never read, rebuilt now
        logger.warning("feature cache %s is damaged (%s); rebuilding it", folder, problem)
        io.remove_folder(folder)
    was_training = tower.training
    tower.eval()
    try:
        batches = _pixel_batches(splits, collator, batch_size, device)
        build_once(
            folder, lambda tmp: _write_store(tmp, tower, batches, layer), what="feature cache",
            digest=lambda name: name in (FEATURES_FILE, INDEX_FILE),
        )  # fmt: skip
    finally:
        tower.train(was_training)
    info = FeatureCacheInfo([FeatureStore.open(folder)], None)
    attach(tower, info)
    return info


def attach_existing(model: nn.Module, cache_dir: str | os.PathLike | None = None) -> FeatureCacheInfo:
    """Read-only: make the tower read every complete store already built for its weights (predict,
    evaluate: an image some training run cached skips the tower; any other image runs it)."""
    reason = why_not_cacheable(model)
    if reason is not None:
        return FeatureCacheInfo([], reason)
    tower = vision_tower_of(model)
    folder = cache_root(cache_dir) / tower_identity(tower, unwrap(model).config.vision_feature_layer)
    stores = []
    for f in sorted(folder.glob("*")):
        if not (is_complete(f) and (f / INDEX_FILE).is_file()):
            continue
        problem = store_problem(f)
        if problem is not None:  # the images it holds run the tower instead: slower, never wrong
            logger.warning(
                "ignoring feature cache %s: %s (a training run on these images rebuilds it)", f, problem
            )
            continue
        stores.append(FeatureStore.open(f))
    info = FeatureCacheInfo(stores, None if stores else "no store for this tower yet")
    if stores:
        attach(tower, info)
    return info


@torch.no_grad()
def _estimated_bytes(tower, one, layer: int) -> int:
    hidden = tower(one, output_hidden_states=True, return_dict=True).hidden_states[layer]
    return hidden.numel() * hidden.element_size()


def attach(tower: nn.Module, info: FeatureCacheInfo) -> None:
    """Make ``tower``'s forward read ``info.store`` (a batch with any image it lacks runs the tower)."""
    if info._original is not None:
        return
    original, store = tower.forward, info.stores[0]
    index = store.layer % store.n_hidden_states  # every store of a tower has its layer (the folder key)

    def forward(self, pixel_values, *args, **kwargs):
        digests = [pixel_digest(p) for p in pixel_values]
        features = info.read(digests)
        if features is None:
            info.misses += len(digests)
            return original(pixel_values, *args, **kwargs)
        info.hits += len(digests)
        # LLaVA reads hidden_states[vision_feature_layer] only; every other layer is absent.
        hidden = tuple(
            features.to(pixel_values.device) if i == index else None for i in range(store.n_hidden_states)
        )
        return BaseModelOutputWithPooling(hidden_states=hidden)

    info._original = original
    tower.forward = types.MethodType(forward, tower)


def detach(tower: nn.Module, info: FeatureCacheInfo) -> None:
    """Give the tower its own forward back."""
    if info._original is not None:
        tower.forward = info._original
        info._original = None
