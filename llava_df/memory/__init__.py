"""Measured memory: a run's peak (PeakMemory) and a step's live tensors (LiveTensorPeak), in peak.py."""

from llava_df.memory.peak import LiveTensorPeak, PeakMemory, cpu_peak_rss_mb

__all__ = ["LiveTensorPeak", "PeakMemory", "cpu_peak_rss_mb"]
