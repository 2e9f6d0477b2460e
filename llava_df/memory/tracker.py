"""Live tensor storage on the meta device, by phase: the dry run's bookkeeping.

How to call::

    with MetaStorageTracker() as tracker:
        tracker.phase = "forward"
        loss = model(**batch).loss
        tracker.phase = "backward"
        loss.backward()
    tracker.peak, tracker.peak_phase, tracker.at_peak   # bytes; 'backward'; {storage id: (bytes, phase, serial)}

Every op output's storage is counted from the op that creates it until Python frees it (a
weakref finalizer on the storage object), whoever holds it: autograd's saved tensors, a custom
Function's ``ctx`` attributes (bitsandbytes keeps its int8 matmul input there), gradients,
optimizer states. Meta tensors allocate nothing, so a 7B step is "run" in seconds.

Meta tensors hold no data, so three kinds of op cannot run on them and are answered here
(plus :func:`flash_sdpa`, for the attention kernel meta cannot choose):

- bitsandbytes' int8 quantizers return the outlier columns of their input, whose number depends
  on the data (their fake kernels need a FakeTensor shape environment). The dry run answers with
  no outliers: LLM.int8 keeps a handful of columns per layer (threshold 6.0), a few KiB.
- ``Tensor.item()`` / ``bool(tensor)`` (LLaVA checks that the image tokens match the features):
  answered with 1 / True, counted in ``data_reads``.
- ``torch.nn.functional.dropout`` on a non-CUDA tensor keeps its mask as a full tensor of the
  input's dtype; CUDA's fused kernel keeps one byte per element. :func:`cuda_dropout` swaps in
  the fused op (``native_dropout``, whose meta kernel has CUDA's shapes) when predicting for CUDA.
"""

from __future__ import annotations

import contextlib
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes
from torch.utils._pytree import tree_flatten


def _bnb_ops() -> dict:
    """bitsandbytes ops whose output size depends on the data -> a data-free answer (no outliers)."""
    try:
        ops = torch.ops.bitsandbytes
        quant, mixed, double = (
            ops.int8_vectorwise_quant.default,
            ops.int8_mixed_scaled_mm.default,
            ops.int8_double_quant.default,
        )
    except (AttributeError, RuntimeError):
        return {}

    def vectorwise_quant(A, threshold=0.0):
        rows = A.numel() // A.shape[-1]
        no_cols = None if threshold == 0.0 else A.new_empty(0, dtype=torch.int64)
        return (
            torch.empty(A.shape, dtype=torch.int8, device=A.device),
            A.new_empty(rows, dtype=torch.float32),
            no_cols,
        )

    def mixed_scaled_mm(A, CA, CB, SCA, SCB, outlier_cols=None, bias=None):
        out = torch.ops.bitsandbytes.int8_scaled_mm.default(CA, CB, SCA, SCB, bias=bias, dtype=A.dtype)
        return out, A.new_empty((A.shape[0], 0))

    def double_quant(A, threshold=0.0):
        rows = A.numel() // A.shape[-1]
        return (
            torch.empty(A.shape, dtype=torch.int8, device=A.device),
            torch.empty(A.shape, dtype=torch.int8, device=A.device),
            A.new_empty(rows, dtype=torch.float32),
            A.new_empty(A.shape[-1], dtype=torch.float32),
            A.new_empty(0, dtype=torch.int64),
        )

    return {quant: vectorwise_quant, mixed: mixed_scaled_mm, double: double_quant}


class MetaStorageTracker(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        # storage id -> (bytes, phase it was allocated in, serial). Python reuses the id of a freed
        # object; the serial is unique for the tracker's life, so "is this the gradient seen then" holds.
        self._live: dict[int, tuple[int, str, int]] = {}
        self._serial = 0
        self._known: set[int] = set()
        self._answers = _bnb_ops()
        self.phase = "setup"
        self.current = 0
        self.peak = 0
        self.peak_phase = "setup"
        self.at_peak: dict[int, tuple[int, str, int]] = {}
        self.phase_peaks: dict[str, int] = {}
        self.data_reads = 0

    def _free(self, key: int) -> None:
        size = self._live.pop(key, (0, "", 0))[0]
        self.current -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self._answers:
            with self.__class__._disabled():
                out = self._answers[func](*args, **kwargs)
        elif func is torch.ops.aten._local_scalar_dense.default:
            self.data_reads += 1
            return True if args[0].dtype == torch.bool else 1
        else:
            out = func(*args, **kwargs)
        self._count(out)
        return out

    @classmethod
    @contextlib.contextmanager
    def _disabled(cls):
        # The stand-in ops build their outputs with ordinary factory calls; they are counted once, below.

        with _disable_current_modes():
            yield

    def live_serials(self, phase: str) -> set[int]:
        """Serials of the storages allocated in ``phase`` that are alive now."""
        return {serial for _, p, serial in self._live.values() if p == phase}

    def serials(self, tensors) -> set[int]:
        """The serials of the (live) storages of ``tensors``; untracked ones are skipped."""
        found = (self._live.get(id(t.untyped_storage())) for t in tensors if isinstance(t, torch.Tensor))
        return {entry[2] for entry in found if entry is not None}

    def ignore(self, tensors) -> None:
        """Storages that exist before the step (weights): views of them are not new memory."""
        self._known.update(id(t.untyped_storage()) for t in tensors if isinstance(t, torch.Tensor))

    def _count(self, out) -> None:
        grew = False
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            key, size = id(storage), storage.nbytes()
            if size == 0 or key in self._live or key in self._known:  # a view of a storage already counted
                continue
            self._serial += 1
            self._live[key] = (size, self.phase, self._serial)
            self.current += size
            weakref.finalize(storage, self._free, key)
            grew = True
        if grew:
            self.phase_peaks[self.phase] = max(self.phase_peaks.get(self.phase, 0), self.current)
            if self.current > self.peak:
                self.peak, self.peak_phase = self.current, self.phase
                self.at_peak = dict(self._live)


@contextlib.contextmanager
def flash_sdpa():
    """F.scaled_dot_product_attention as a fused kernel runs it: no s-by-s scores kept for backward.

    Meta has no kernel choice and takes the math path, which keeps the attention probabilities
    (b x heads x s x s). CUDA's flash / memory-efficient kernels and CPU's flash kernel keep the
    output and its log-sum-exp instead; their memory is that of ``_scaled_dot_product_flash_attention_for_cpu``,
    whose meta kernel and derivative torch ships, so the dry run calls it.
    """
    original = torch.nn.functional.scaled_dot_product_attention

    def sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        if not query.is_meta:
            return original(
                query, key, value, attn_mask, dropout_p, is_causal, scale=scale, enable_gqa=enable_gqa
            )
        if key.shape[-3] != query.shape[-3]:  # grouped-query attention: what enable_gqa expands
            key = key.repeat_interleave(query.shape[-3] // key.shape[-3], dim=-3)
            value = value.repeat_interleave(query.shape[-3] // value.shape[-3], dim=-3)
        if attn_mask is not None and attn_mask.dtype == torch.bool:
            attn_mask = torch.zeros(attn_mask.shape, dtype=query.dtype, device=query.device)
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            query, key, value, dropout_p, is_causal, attn_mask=attn_mask, scale=scale
        )[0]

    torch.nn.functional.scaled_dot_product_attention = sdpa
    try:
        yield
    finally:
        torch.nn.functional.scaled_dot_product_attention = original


@contextlib.contextmanager
def cuda_dropout():
    """F.dropout as CUDA runs it: the fused kernel, whose saved mask is bool (1 byte per element)."""
    original = torch.nn.functional.dropout

    def dropout(input, p=0.5, training=True, inplace=False):
        if not training or p == 0.0:
            return input
        return torch.native_dropout(input, p, True)[0]

    torch.nn.functional.dropout = dropout
    try:
        yield
    finally:
        torch.nn.functional.dropout = original
