"""PNG plots beside the tables, each readable on its own.

- ``auc_vs_planned_7b_peak.png`` (the headline): test AUC (mean, 95% CI over seeds) against the
  memory planner's peak for the same projector and strategy at LLaVA-1.5-7B scale. The x axis is
  a plan, not a measurement, and says so: the tiny runs' own peaks are a CPU process's RSS, which
  is interpreter and library overhead plus seed noise, so they are not plotted.
- ``auc_vs_trainable_params.png``: test AUC against trainable parameters (log axis, labelled ticks).
- ``family_auc.png``: a heatmap of test AUC per manipulation family (each family's fakes against
  all real test images) and of the held-out family, one row per cell, probes included.

One panel per strategy, one point per cell; projectors are told apart by colour and marker in one
legend (text labels beside points overlap where cells sit close). The best feature probe (no LLM)
is drawn as a reference line. No empty panels: a strategy without x values gets none.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")  # files only; no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import EngFormatter, FixedLocator, MaxNLocator, NullLocator  # noqa: E402

from llava_df.sweep.cells import ZERO_SHOT_STRATEGIES  # noqa: E402
from llava_df.sweep.real_scale import REAL_SCALE_LABEL  # noqa: E402

PROBE = "probe"
MARKERS = "osD^vP*Xhp<>"
PLOTS = {
    "auc_vs_planned_7b_peak.png": (
        "planned_7b_peak_gib",
        "planned peak at LLaVA-1.5-7B scale (GiB)",
        False,
        f"x: the memory planner's peak for the cell's projector and strategy ({REAL_SCALE_LABEL}): planned, not "
        "measured. Cells at the same planned peak are set side by side.",
    ),
    "auc_vs_trainable_params.png": (
        "trainable_params",
        "trainable parameters (log scale)",
        True,
        "x: the tiny preset's trainable parameters of each cell (projector + LoRA / unfrozen layers).",
    ),
}
DODGE = 0.012  # share of a panel's x range between cells whose x values coincide (drawn side by side)


def write_plots(rows: list[dict], records: list[dict], out_dir: Path) -> list[Path]:
    what = measured_on(records)
    written = [_scatter(rows, out_dir / name, *spec, what=what) for name, spec in PLOTS.items()]
    heatmap = _family_heatmap(rows, records, out_dir / "family_auc.png")
    return [p for p in [*written, heatmap] if p is not None]


def measured_on(records: list[dict]) -> str:
    """Which model and data the AUCs come from, in words, from the run records (a plot whose x is a LLaVA-1.5-7B
    plan must not read as a 7B experiment)."""
    models = sorted(
        {
            str(m)
            for r in records
            if (m := ((r.get("config") or {}).get("model") or {}).get("model_name_or_path"))
        }
    )
    data = set()
    for r in records:
        d = (r.get("config") or {}).get("data") or {}
        if d.get("data_dir") or d.get("data_path"):
            data.add(str(d.get("data_dir") or d.get("data_path")))
        elif d:
            data.add(f"the synthetic benchmark ({d.get('image_size')} px, seed {d.get('synthetic_seed')})")
    named = [MODEL_WORDS.get(m, m) for m in models]
    return f"AUC of {' / '.join(named) or 'the runs'} on {' / '.join(sorted(data)) or 'their data'}"


MODEL_WORDS = {"tiny": "the tiny preset (random-weight 4-layer LLM, INT8)"}


def _finite(value) -> bool:
    return value is not None and isinstance(value, (int, float)) and math.isfinite(value)


def _style(projectors: list[str]) -> dict[str, tuple]:
    colours = plt.get_cmap("tab10")
    return {p: (colours(i % 10), MARKERS[i % len(MARKERS)]) for i, p in enumerate(projectors)}


def _scatter(
    rows: list[dict], path: Path, x_key: str, x_label: str, log_x: bool, note: str, what: str = ""
) -> Path | None:
    trained = [r for r in rows if r["strategy"] not in (PROBE, *ZERO_SHOT_STRATEGIES)]
    cells = [r for r in trained if _finite(r.get(x_key)) and _finite(r["test_auc"])]
    strategies = sorted({r["strategy"] for r in cells})
    if not strategies:
        return None
    projectors = list(dict.fromkeys(r["projector"] for r in cells))
    style = _style(projectors)
    probes = [r for r in rows if r["strategy"] == PROBE and _finite(r["test_auc"])]
    best_probe = max(probes, key=lambda r: r["test_auc"]) if probes else None
    # One x axis for every panel: the strategies' differences (a few GiB at 7B scale) stay visible beside the
    # projectors' (a few hundred MiB), instead of each panel stretching its own range to fill the width.
    fig, axes = plt.subplots(
        1, len(strategies), figsize=(4.3 * len(strategies), 4.4), squeeze=False, sharey=True, sharex=True
    )
    for ax, strategy in zip(axes[0], strategies, strict=True):
        mine = [r for r in cells if r["strategy"] == strategy]
        spread = _side_by_side([r[x_key] for r in mine], log_x, over=[r[x_key] for r in cells])
        for r, x in zip(mine, spread, strict=True):
            colour, marker = style[r["projector"]]
            err = r["test_auc_ci"] if _finite(r["test_auc_ci"]) else 0.0
            ax.errorbar(x, r["test_auc"], yerr=err, fmt=marker, color=colour, capsize=3, ms=6,
                        label=r["projector"])  # fmt: skip
        if best_probe is not None:
            ax.axhline(best_probe["test_auc"], color="grey", ls="--", lw=1,
                       label=f"best feature probe, no LLM ({best_probe['projector']})")  # fmt: skip
        _x_ticks(ax, [r[x_key] for r in cells], log_x)
        ax.tick_params(labelbottom=True)  # every panel keeps its x tick labels (sharex hides them)
        ax.set_title(strategy)
        ax.set_xlabel(x_label, fontsize=8)
        ax.tick_params(labelleft=True)  # every panel keeps its y tick labels (sharey hides them)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test AUC (mean over seeds, 95% CI)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax in axes[0][1:]:  # one legend for the figure: every projector once
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(
        handles,
        labels,
        loc="lower center",
        bbox_to_anchor=(0.5, 0.04),
        ncol=min(4, len(labels)),
        fontsize=8,
        frameon=False,
    )
    seeds = sorted({r["seeds"] for r in cells})
    fig.suptitle(f"{what}: {len(cells)} cells, {'/'.join(map(str, seeds))} seeds each; error bars: 95% CI over seeds",
                 fontsize=9)  # fmt: skip
    fig.text(0.5, 0.005, note, ha="center", va="bottom", fontsize=7, wrap=True)
    fig.tight_layout(rect=(0, 0.09 + 0.035 * math.ceil(len(labels) / 4), 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _side_by_side(xs: list[float], log_x: bool, over: list[float] | None = None) -> list[float]:
    """The x values, with cells that coincide (closer than DODGE of the range of ``over``, default ``xs``: the
    axis they are drawn on) spread symmetrically."""
    t = np.log(xs) if log_x else np.asarray(xs, dtype=float)
    axis = np.log(over) if log_x and over else np.asarray(over if over else xs, dtype=float)
    step = DODGE * ((axis.max() - axis.min()) or 1.0)
    out = t.copy()
    groups: list[list[int]] = []
    for i in np.argsort(t):
        if groups and t[i] - t[groups[-1][0]] < step:
            groups[-1].append(int(i))
        else:
            groups.append([int(i)])
    for group in groups:
        for rank, i in enumerate(group):
            out[i] = t[group[0]] + (rank - (len(group) - 1) / 2) * step
    return list(np.exp(out) if log_x else out)


def _x_ticks(ax, xs: list[float], log_x: bool) -> None:
    """Labelled ticks on every panel: a narrow log range (one decade or less) would otherwise show none."""
    lo, hi = min(xs), max(xs)
    if log_x:
        ax.set_xscale("log")
        ticks = np.geomspace(lo, hi, 4) if hi > lo else np.array([lo])
        ticks = [float(f"{t:.2g}") for t in ticks]
        ax.xaxis.set_major_locator(FixedLocator(sorted(set(ticks))))
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))
        ax.xaxis.set_minor_locator(NullLocator())
        pad = (hi / lo) ** 0.08 if hi > lo else 1.3
        ax.set_xlim(lo / pad, hi * pad)
    else:
        pad = (hi - lo) * 0.08 or 0.1
        ax.set_xlim(lo - pad, hi + pad)
        ax.xaxis.set_major_locator(MaxNLocator(4))
    ax.tick_params(axis="x", labelsize=8)


def _family_heatmap(rows: list[dict], records: list[dict], path: Path) -> Path | None:
    """Rows: cells (strategy / projector); columns: in-distribution families, then the held-out family."""
    by_cell: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        by_cell.setdefault((r["cell"]["strategy"], r["cell"]["projector"]), []).append(r)
    order = [(r["strategy"], r["projector"]) for r in rows if (r["strategy"], r["projector"]) in by_cell]
    families = sorted(
        {k.removeprefix("auc_") for r in records for k in r["metrics"]["test"] if k.startswith("auc_")}
    )
    # the held-out split's families: its per-family accuracies name them (acc_none is its real faces)
    held = sorted({k.removeprefix("acc_") for r in records for k in (r["metrics"].get("heldout") or {})
                   if k.startswith("acc_") and k != "acc_none"})  # fmt: skip
    columns = [*families, *(f"{h}\n(held out)" for h in held)]
    if not order or not columns:
        return None
    grid = np.full((len(order), len(columns)), np.nan)
    for i, cell in enumerate(order):
        for j, family in enumerate(families):
            grid[i, j] = _mean([(r["metrics"]["test"]).get(f"auc_{family}") for r in by_cell[cell]])
        for j, family in enumerate(held, start=len(families)):
            # one held-out family: the split's AUC is that family's; several: each has its own auc_<family>
            key = "auc" if len(held) == 1 else f"auc_{family}"
            grid[i, j] = _mean([(r["metrics"].get("heldout") or {}).get(key) for r in by_cell[cell]])
    fig, ax = plt.subplots(figsize=(1.3 * len(columns) + 3.2, 0.3 * len(order) + 1.6))
    image = ax.imshow(grid, cmap="viridis", vmin=0.5, vmax=1.0, aspect="auto")
    for (i, j), value in np.ndenumerate(grid):
        if math.isfinite(value):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if value < 0.75 else "black")  # fmt: skip
    ax.set_xticks(range(len(columns)), columns, fontsize=8)
    ax.set_yticks(range(len(order)), [f"{s} / {p}" for s, p in order], fontsize=7)
    if held:
        ax.axvline(len(families) - 0.5, color="white", lw=2)
    fig.colorbar(image, ax=ax, label="test AUC (mean over seeds)")
    ax.set_title("AUC per manipulation family: each family's fakes against all real test faces", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _mean(values: list) -> float:
    finite = [v for v in values if _finite(v)]
    return float(np.mean(finite)) if finite else math.nan


def lofo_heatmap(rows: list[dict], path: Path) -> Path | None:
    """Leave one family out (sweep/lofo.py's rows): per cell (rows) and family (columns), three panels: held out,
    in distribution (the same family trained on), and trained on reals + self-blended fakes only."""
    cells = list(dict.fromkeys((r["strategy"], r["projector"]) for r in rows))
    families = list(dict.fromkeys(r["family"] for r in rows))
    if not cells or not families:
        return None
    panels = [("heldout_auc", "held out"), ("in_distribution_auc", "in distribution"),
              ("self_blend_only_auc", "self-blend only (SBI)")]  # fmt: skip
    panels = [(k, t) for k, t in panels if any(_finite(r.get(k)) for r in rows)]
    fig, axes = plt.subplots(1, len(panels), figsize=(1.1 * len(families) * len(panels) + 3.5, 0.35 * len(cells) + 2.2),
                             squeeze=False, sharey=True)  # fmt: skip
    for ax, (key, title) in zip(axes[0], panels, strict=True):
        grid = np.full((len(cells), len(families)), np.nan)
        for r in rows:
            grid[cells.index((r["strategy"], r["projector"])), families.index(r["family"])] = r.get(
                key, math.nan
            )
        image = ax.imshow(grid, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
        for (i, j), value in np.ndenumerate(grid):
            if math.isfinite(value):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if value < 0.6 else "black")  # fmt: skip
        ax.set_xticks(range(len(families)), [f.replace("_", "\n", 1) for f in families], fontsize=7)
        ax.set_title(title, fontsize=9)
    axes[0][0].set_yticks(range(len(cells)), [f"{s} / {p}" for s, p in cells], fontsize=7)
    fig.colorbar(image, ax=list(axes[0]), label="AUC, mean over seeds (0.5: chance)")
    fig.suptitle("Leave one family out: each family's fakes against the test reals", fontsize=9, y=1.04)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
