"""Peak memory of a run, measured, on CUDA or CPU.

How to call::

    meter = PeakMemory()      # or PeakMemory("cpu") / PeakMemory("cuda")
    meter.reset()             # before the model loads, so the peak covers weights + training
    ...                       # build, train
    meter.read()              # {'device': 'cuda', 'peak_allocated_mb': ..., 'peak_reserved_mb': ...}
    meter.take_interval()     # the peak since the last interval (or reset), then the counters restart;
                              # read() still covers the whole run (the intervals' maxima are carried)

CUDA: torch's allocator counters (max_memory_allocated / max_memory_reserved), reset by
reset_peak_memory_stats. CPU: the process peak resident set size, VmHWM in /proc/self/status.
Linux resets it when "5" is written to /proc/self/clear_refs, so the CPU peak also starts at
reset(); where that is not possible (not Linux, a restricted /proc) the figure is the peak since
the process started, and the result says so (``peak_since``).
"""

from __future__ import annotations

import resource
import sys
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

MB = 2**20


class PeakMemory:
    def __init__(self, device: str | torch.device | None = None):
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.peak_since = "process start"
        self.rss_at_reset_mb: float | None = None
        self._carried: dict[str, float] = {}  # the largest interval peaks taken so far

    def _counters(self) -> dict[str, float]:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return {"peak_allocated_mb": torch.cuda.max_memory_allocated(self.device) / MB,
                    "peak_reserved_mb": torch.cuda.max_memory_reserved(self.device) / MB}  # fmt: skip
        return {"peak_rss_mb": cpu_peak_rss_mb()}

    def take_interval(self) -> dict[str, float]:
        """The peak figures since the previous interval (MiB), and restart the device's counters."""
        now = self._counters()
        for key, value in now.items():
            self._carried[key] = max(self._carried.get(key, 0.0), value)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            _reset_linux_peak_rss()  # where it cannot, the next interval repeats the process peak
        return now

    def reset(self) -> None:
        self._carried = {}
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.peak_since = "reset"
            return
        self.peak_since = "reset" if _reset_linux_peak_rss() else "process start"
        self.rss_at_reset_mb = _proc_status_mb("VmRSS")

    def read(self) -> dict:
        """Peak figures in MiB since reset(), intervals included; also the metric names logged (peak_*_mb)."""
        peaks = {k: max(v, self._carried.get(k, 0.0)) for k, v in self._counters().items()}
        if self.device.type == "cuda":
            return {"device": "cuda", **peaks, "peak_since": self.peak_since}
        return {
            "device": "cpu",
            **peaks,
            "rss_at_reset_mb": self.rss_at_reset_mb,
            "peak_since": self.peak_since,
        }


def cpu_peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (since the last reset on Linux)."""
    peak = _proc_status_mb("VmHWM")
    if peak is not None:
        return peak
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / MB if sys.platform == "darwin" else maxrss / 1024  # bytes on macOS, KiB on Linux


def _reset_linux_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # 5: reset the peak RSS (VmHWM) to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def _proc_status_mb(key: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024  # kB -> MiB
    except OSError:
        pass
    return None


class LiveTensorPeak(TorchDispatchMode):
    """Peak bytes of tensor storage alive at once, among tensors created inside the ``with`` block.

    How to call::

        with LiveTensorPeak() as meter:
            model(**batch).loss.backward()
        meter.peak_mb

    Every op output passes through ``__torch_dispatch__``; its storage is counted until the
    storage is freed (a weakref finalizer), whoever holds it: autograd's saved tensors, a custom
    autograd Function's ``ctx`` attributes (which saved_tensors_hooks never see), gradients. So it
    is the activation + gradient + temporary memory of the step, device-independent and exact at
    tensor granularity; parameters that exist before the block are not counted. It does not see
    allocator overhead (fragmentation, CUDA caching), which is what PeakMemory measures.
    """

    def __init__(self):
        super().__init__()
        self._live: dict[int, int] = {}
        self.current = 0
        self.peak = 0

    @property
    def peak_mb(self) -> float:
        return self.peak / MB

    def _free(self, key: int) -> None:
        self.current -= self._live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or t.is_meta:
                continue
            storage = t.untyped_storage()
            key, size = storage.data_ptr(), storage.nbytes()
            if size == 0 or key in self._live:  # a view of a storage already counted
                continue
            self._live[key] = size
            self.current += size
            self.peak = max(self.peak, self.current)
            weakref.finalize(storage, self._free, key)
        return out
