"""Memory: what a run measures (peak.py) and the planner (`llava-df plan`: dry run, closed form, --budget)."""

from llava_df.memory.peak import LiveTensorPeak, PeakMemory, cpu_peak_rss_mb

__all__ = ["LiveTensorPeak", "PeakMemory", "cpu_peak_rss_mb"]
