"""Measure a projector: parameters, multiply-adds per token, saved-for-backward bytes, time.

Shared by ``python -m llava_df.projectors`` and ``benchmarks/``; nothing here is used in tests
as a timing assertion.
"""

from __future__ import annotations

import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def num_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def macs_per_token(module: nn.Module, in_dim: int, tokens: int = 8) -> float:
    """Forward multiply-adds per token, counted at dispatch level (matmuls only).

    FlopCounterMode sees the matmuls inside custom autograd Functions too, so a KAN and an
    MLP are counted by the same rule.
    """
    x = torch.randn(tokens, in_dim)
    with FlopCounterMode(display=False) as counter:
        module(x)
    return counter.get_total_flops() / 2 / tokens


def saved_tensor_bytes(module: nn.Module, x: torch.Tensor) -> int:
    """Bytes of distinct tensors autograd keeps for backward, parameters excluded.

    Counted by storage (views of one tensor count once), through saved_tensors_hooks.
    """
    param_ptrs = {p.untyped_storage().data_ptr() for p in module.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in param_ptrs:
            seen[ptr] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = module(x)
    del out
    return sum(seen.values())


def time_forward_backward(module: nn.Module, x: torch.Tensor, repeats: int = 5, warmup: int = 2) -> float:
    """Median seconds for forward + backward of ``module(x).sum()`` (x as given: frozen or not)."""
    times = []
    for i in range(warmup + repeats):
        module.zero_grad(set_to_none=True)
        if x.is_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        module(x).float().sum().backward()
        if x.is_cuda:
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]
