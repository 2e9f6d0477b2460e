"""The CPU a run is on: its model name and whether it computes bf16 natively, read without torch.

The flag parser reads them before torch loads (a note for bf16 on a CPU that would emulate it)."""

from __future__ import annotations

import platform
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")


def cpu_model(cpuinfo: Path = CPUINFO) -> str:
    """The CPU's marketing name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_native_bf16(cpuinfo: Path = CPUINFO) -> bool | None:
    """Whether the CPU computes bf16 natively (AVX512-BF16 or AMX-BF16, ``/proc/cpuinfo``'s flags); None where
    unknown (no /proc). Without it, CPU autocast emulates bf16: ~3x slower than fp32 (results/smol/xeon_2.80GHz)."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return None
