"""Peak memory measurement: process RSS peak (reset on Linux) and live tensor storage during a step."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from llava_df.memory.peak import LiveTensorPeak, PeakMemory, cpu_peak_rss_mb


def test_live_tensor_peak_counts_storage_until_it_is_freed():
    with LiveTensorPeak() as meter:
        a = torch.ones(1024, 256)  # 1 MiB, kept
        b = torch.ones(2048, 256)  # 2 MiB, freed below
        del b
        view = a[:10]  # a view adds no storage
        c = torch.ones(256, 256)  # 0.25 MiB
    assert meter.peak_mb == pytest.approx(3.0, abs=0.01)  # a + b alive together
    assert meter.current / 2**20 == pytest.approx(1.25, abs=0.01)  # a + c still alive
    del a, view, c
    assert meter.current == 0


def test_live_tensor_peak_sees_autograd_saved_activations():
    x = torch.randn(512, 512, requires_grad=True)
    with LiveTensorPeak() as kept:
        y = torch.tanh(x @ x)  # tanh saves its output for backward
        z = y.sum()
    with LiveTensorPeak() as dropped:
        with torch.no_grad():
            y2 = torch.tanh(x @ x)
            z2 = y2.sum()
        del y2
    assert kept.current > dropped.current + 0.9 * 512 * 512 * 4
    z.backward()
    del z, z2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM reset is Linux-only")
def test_cpu_peak_rss_is_reset_and_then_tracks_a_new_peak():
    big = np.ones(64 * 2**20 // 8)  # 64 MiB touched
    del big
    meter = PeakMemory("cpu")
    meter.reset()
    after_reset = meter.read()
    assert after_reset["peak_since"] == "reset"
    assert after_reset["peak_rss_mb"] < after_reset["rss_at_reset_mb"] + 32  # the old 64 MiB peak is gone
    big = np.ones(96 * 2**20 // 8)
    peak = meter.read()["peak_rss_mb"]
    del big
    assert peak >= after_reset["rss_at_reset_mb"] + 90
    assert cpu_peak_rss_mb() >= peak - 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_peak_counts_allocations_after_reset():
    meter = PeakMemory("cuda")
    meter.reset()
    x = torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda")
    del x
    read = meter.read()
    assert read["peak_allocated_mb"] >= 256 and read["peak_reserved_mb"] >= read["peak_allocated_mb"]
