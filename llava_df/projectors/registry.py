"""Projector registry keyed by exact name, plus name patterns parsed for their values.

Two kinds of entries:
- exact names (``linear``, ``identity``): looked up as they are;
- patterns (``mlp{depth}x_gelu``, ``kan_h{hidden}_g{grid}_k{order}``): a name matching the
  pattern is parsed, its integer fields passed to the builder as keyword arguments. This is
  LLaVA's ``mlp2x_gelu`` convention made general, so configs and tables stay readable.

Registering a name or pattern twice raises: a silent overwrite would make a config mean two
different models depending on import order.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ProjectorEntry:
    """One registered family: an exact name or a ``{field}`` pattern."""

    template: str
    builder: Builder
    description: str = ""
    regex: re.Pattern | None = field(default=None, compare=False)
    # (in_dim, out_dim, **fields) -> parameter count without building: sizes are checked before a
    # run builds anything (mlp99999x_gelu has 1.7e12 parameters and takes 14 s to build even on meta).
    params: Callable[..., int] | None = field(default=None, compare=False)

    def match(self, name: str) -> dict[str, int] | None:
        if self.regex is None:
            return {} if name == self.template else None
        m = self.regex.fullmatch(name)
        return None if m is None else {k: int(v) for k, v in m.groupdict().items()}


_ENTRIES: dict[str, ProjectorEntry] = {}
# Concrete names shown by `python -m llava_df.projectors` and swept by default.
PRESETS: list[str] = []

_FIELD = re.compile(r"\{(\w+)\}")


def _compile(template: str) -> re.Pattern | None:
    if not _FIELD.search(template):
        return None
    parts, last = [], 0
    for m in _FIELD.finditer(template):
        parts.append(re.escape(template[last : m.start()]))
        parts.append(rf"(?P<{m.group(1)}>[1-9]\d*)")
        last = m.end()
    parts.append(re.escape(template[last:]))
    return re.compile("".join(parts))


def register_projector(
    template: str,
    *,
    description: str = "",
    presets: tuple[str, ...] = (),
    params: Callable[..., int] | None = None,
):
    """Decorator registering ``builder(in_dim, out_dim, **fields_and_options) -> nn.Module``.

    ``template`` is an exact name or a pattern with ``{field}`` placeholders for positive ints.
    ``presets`` are concrete names of this family listed by the CLI. ``params(in_dim, out_dim,
    **fields)`` gives the parameter count with default options, without building the module.
    """

    def wrap(builder: Builder) -> Builder:
        if template in _ENTRIES:
            raise ValueError(
                f"Projector {template!r} is already registered (by {_ENTRIES[template].builder.__qualname__}); "
                "pick another name or remove the duplicate registration."
            )
        entry = ProjectorEntry(template, builder, description, _compile(template), params)
        for preset in presets:
            if entry.match(preset) is None:
                raise ValueError(f"Preset {preset!r} does not match its template {template!r}.")
        _ENTRIES[template] = entry
        PRESETS.extend(presets or ([template] if entry.regex is None else []))
        return builder

    return wrap


def available_projectors() -> list[str]:
    """Exact names and patterns, in registration order."""
    return list(_ENTRIES)


def resolve(name: str) -> tuple[ProjectorEntry, dict[str, int]]:
    """Find the entry for a concrete name and the values parsed from it."""
    if not isinstance(name, str):
        raise TypeError(f"Projector name must be a str, got {type(name).__name__} {name!r}.")
    hits = [(e, f) for e in _ENTRIES.values() if (f := e.match(name)) is not None]
    if not hits:
        raise KeyError(
            f"Unknown projector {name!r}. Valid names and patterns: {', '.join(available_projectors())} "
            f"(e.g. {', '.join(PRESETS[:4])}); {{field}} values are integers >= 1. Check --mm_projector_type."
        )
    if len(hits) > 1:  # exact names are checked to be unambiguous at registration time below
        raise KeyError(f"Projector name {name!r} matches several entries: {[e.template for e, _ in hits]}.")
    return hits[0]


def count_parameters(name: str, in_dim: int, out_dim: int) -> int:
    """Parameters of ``create_projector(name, in_dim, out_dim)`` with default options, without building it."""
    entry, fields = resolve(name)
    if entry.params is not None:
        return int(entry.params(in_dim, out_dim, **fields))
    with torch.device("meta"):  # no allocation; families without a formula
        return sum(p.numel() for p in entry.builder(in_dim, out_dim, **fields).parameters())


def create_projector(name: str, in_dim: int, out_dim: int, **options) -> nn.Module:
    """Build the projector called ``name`` mapping width ``in_dim`` to ``out_dim``.

    >>> create_projector("mlp2x_gelu", 1024, 4096)  # LLaVA-1.5's projector
    >>> create_projector("kan_h256_g5_k3", 1024, 4096)
    """
    for dim_name, dim in (("in_dim", in_dim), ("out_dim", out_dim)):
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"{dim_name} must be a positive int, got {dim!r}.")
    entry, fields = resolve(name)
    clash = set(fields) & set(options)
    if clash:
        raise ValueError(f"Options {sorted(clash)} are already fixed by the name {name!r}; drop them.")
    module = entry.builder(in_dim, out_dim, **fields, **options)
    module.projector_name = name  # recorded so saved configs and tables can name it
    module.register_forward_pre_hook(functools.partial(_check_input, name=name, in_dim=in_dim))
    return module


def _check_input(module: nn.Module, args: tuple, *, name: str, in_dim: int) -> None:
    """Forward pre-hook on every projector: one clear error for bad input, whatever the family.

    - width: a Linear's own error ("mat1 and mat2 shapes cannot be multiplied") names neither
      the projector nor the expected width;
    - non-finite values: raised for every projector, not only where they break the maths (the
      KAN's grid lookup): NaN/inf features come from the vision tower (fp16 overflow) and would
      otherwise surface steps later as a NaN loss and destroyed weights. Costs one pass over
      the input (nothing next to the projector's matmuls) and, on GPU, one sync per forward.
    """
    if not args or not isinstance(args[0], torch.Tensor):
        return
    x = args[0]
    if x.dim() == 0 or x.shape[-1] != in_dim:
        raise ValueError(
            f"Projector {name!r} expects input of shape (..., {in_dim}), got {tuple(x.shape)}: last dim "
            f"{x.shape[-1] if x.dim() else 'missing'} != in_dim {in_dim}. Build it with in_dim = the vision "
            "feature width (vision hidden size x number of feature layers)."
        )
    if x.is_floating_point() and not torch.isfinite(x).all():
        bad = (~torch.isfinite(x)).sum().item()
        raise ValueError(
            f"Projector {name!r} got {bad} non-finite values (NaN/inf) in its input of shape {tuple(x.shape)}; "
            "check the vision features (fp16 overflow in the vision tower?) before the projector."
        )
