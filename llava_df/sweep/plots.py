"""PNG plots beside the tables: test AUC against trainable parameters and against peak memory.

One panel per strategy, one point per projector, error bars = the 95% interval over seeds.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

PLOTS = {
    "auc_vs_trainable_params.png": ("trainable_params", "trainable parameters", True),
    "auc_vs_peak_memory.png": ("peak_memory_mib", "peak memory (MiB)", False),
}


def write_plots(rows: list[dict], out_dir: Path, title: str) -> list[Path]:
    strategies = sorted({r["strategy"] for r in rows})
    written = []
    for filename, (x_key, x_label, log_x) in PLOTS.items():
        fig, axes = plt.subplots(
            1, len(strategies), figsize=(4.2 * len(strategies), 3.8), squeeze=False, sharey=True
        )
        for ax, strategy in zip(axes[0], strategies, strict=True):
            for r in (r for r in rows if r["strategy"] == strategy):
                err = r["test_auc_ci"] if math.isfinite(r["test_auc_ci"]) else 0.0
                ax.errorbar(r[x_key], r["test_auc"], yerr=err, fmt="o", capsize=3)
                ax.annotate(
                    r["projector"],
                    (r[x_key], r["test_auc"]),
                    fontsize=7,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
            ax.set_title(strategy)
            ax.set_xlabel(x_label)
            if log_x:
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap the major ones
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("test AUC (mean, 95% CI over seeds)")
        fig.suptitle(title, fontsize=9)
        fig.tight_layout()
        path = out_dir / filename
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
