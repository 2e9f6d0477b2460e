"""Projector registry keyed by exact name, plus name patterns parsed for their values.

Two kinds of entries:
- exact names (``linear``, ``identity``): looked up as they are;
- patterns (``mlp{depth}x_gelu``, ``kan_h{hidden}_g{grid}_k{order}``): a name matching the
  pattern is parsed, its integer fields passed to the builder as keyword arguments. This is
  LLaVA's ``mlp2x_gelu`` convention made general, so configs and tables stay readable.

Registering a name or pattern twice raises: a silent overwrite would make a config mean two
different models depending on import order. Every family is registered in ``catalog.py`` with its
builder named as ``"module:function"``, imported only when a projector is built (as transformers'
auto classes name theirs): checking a name or counting parameters needs no torch, so a command line
with a bad ``--mm_projector_type`` is refused at once.
"""

from __future__ import annotations

import functools
import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ProjectorEntry:
    """One registered family: an exact name or a ``{field}`` pattern."""

    template: str
    builder: str  # "module:function" -> builder(in_dim, out_dim, **fields, **options) -> nn.Module
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
    builder: str,
    *,
    description: str = "",
    presets: tuple[str, ...] = (),
    params: Callable[..., int] | None = None,
) -> ProjectorEntry:
    """Register the family ``template`` built by ``builder`` (``"module:function"``, the function called as
    ``function(in_dim, out_dim, **fields_and_options) -> nn.Module``).

    ``template`` is an exact name or a pattern with ``{field}`` placeholders for positive ints.
    ``presets`` are concrete names of this family listed by the CLI. ``params(in_dim, out_dim,
    **fields)`` gives the parameter count with default options, without building the module.
    """
    if template in _ENTRIES:
        raise ValueError(
            f"Projector {template!r} is already registered (built by {_ENTRIES[template].builder}); "
            "pick another name or remove the duplicate registration."
        )
    if builder.count(":") != 1:
        raise ValueError(f"builder {builder!r} of {template!r}: expected 'module:function'.")
    entry = ProjectorEntry(template, builder, description, _compile(template), params)
    for preset in presets:
        if entry.match(preset) is None:
            raise ValueError(f"Preset {preset!r} does not match its template {template!r}.")
    _ENTRIES[template] = entry
    PRESETS.extend(presets or ([template] if entry.regex is None else []))
    return entry


def builder_of(entry: ProjectorEntry) -> Callable:
    """The builder function of ``entry``, imported now (its module imports torch)."""
    module, function = entry.builder.split(":")
    return getattr(importlib.import_module(module), function)


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
    import torch  # lazy: only families without a formula are built (on meta) to be counted

    with torch.device("meta"):  # no allocation
        return sum(p.numel() for p in builder_of(entry)(in_dim, out_dim, **fields).parameters())


def create_projector(name: str, in_dim: int, out_dim: int, **options):
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
    from llava_df.projectors.input_check import check_input  # lazy: torch, needed only to build

    module = builder_of(entry)(in_dim, out_dim, **fields, **options)
    module.projector_name = name  # recorded so saved configs and tables can name it
    module.register_forward_pre_hook(functools.partial(check_input, name=name, in_dim=in_dim))
    return module
