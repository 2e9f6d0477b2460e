"""Leave-one-family-out with the best feature probe: can this benchmark rank generalization at all?

    python benchmarks/lofo_probes.py                       # development benchmark (--synthetic_seed 0), seeds 0,1,2
    python benchmarks/lofo_probes.py --seeds 0 --synthetic_seed 0

The comparison's held-out column (face_swap) reads 0.58-0.64 AUC in every cell, so it cannot rank
projectors. Before the pipeline runs leave-one-family-out (#24), this asks the cheap question
first, with the strongest reader the frozen tower's features allow (the MLP token probe of
llava_df.sweep.probes, the same tower features, splits and selection on validation as the
comparison's probe rows) on the sweep recipe's benchmark:

- for each of the five manipulation families F: train with F removed from train and val
  (``--holdout_manipulation F``), and score the held-out split (the test reals + every F fake);
- the in-distribution control: one training with no family held out, each family's test AUC
  (its test fakes against all test reals).

The protocol asks for a benchmark where the best probe's held-out AUC lies between 0.65 and 0.95
for at least three families; the last line says whether this one does. Exploratory: the
development seed, never the confirmatory one. Writes results/lofo_probes.md and .json.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from llava_df.data.synthetic import available_manipulations
from llava_df.provenance import git_state, run_environment
from llava_df.spec.resolve import parse_spec
from llava_df.sweep.cells import DEFAULT_RECIPE
from llava_df.sweep.probes import torch_probe, tower_features

ROOT = Path(__file__).resolve().parent.parent
BAND = (0.65, 0.95)  # the protocol's band for a held-out family that can rank readers
PROBE = "mlp2x_gelu"  # probe_mlp: the best probe of the comparison


def features(holdout: str, synthetic_seed: int, scratch: Path) -> dict:
    argv = ["--config", str(DEFAULT_RECIPE), "--holdout_manipulation", holdout,
            "--synthetic_seed", str(synthetic_seed), "--output_dir", str(scratch / (holdout or "none"))]  # fmt: skip
    return tower_features(parse_spec(argv))


def family_aucs(split: tuple, scores: np.ndarray) -> dict[str, float]:
    """Each family's fakes against every real of the split."""
    _, y, _, families = split
    families = np.asarray(families)
    out = {}
    for family in sorted({f for f, label in zip(families, y, strict=True) if label == 1}):
        keep = (y == 0) | (families == family)
        out[family] = float(roc_auc_score(y[keep], scores[keep]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--synthetic_seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "results" / "lofo_probes"))
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    families = sorted(available_manipulations())
    started = time.time()
    in_dist: dict[str, list[float]] = {f: [] for f in families}
    held: dict[str, list[float]] = {f: [] for f in families}
    with tempfile.TemporaryDirectory(prefix="llava_df_lofo_") as tmp:
        scratch = Path(tmp)
        feats = features("", args.synthetic_seed, scratch)
        for seed in seeds:
            scores = torch_probe(feats, PROBE, seed)
            for family, auc in family_aucs(feats["test"], np.asarray(scores["test"])).items():
                in_dist[family].append(auc)
            print(
                f"no holdout, seed {seed}: " + ", ".join(f"{f} {v[-1]:.3f}" for f, v in in_dist.items()),
                flush=True,
            )
        for family in families:
            feats = features(family, args.synthetic_seed, scratch)
            for seed in seeds:
                scores = torch_probe(feats, PROBE, seed)
                y = feats["heldout"][1]
                held[family].append(float(roc_auc_score(y, scores["heldout"])))
                print(f"{family} held out, seed {seed}: held-out AUC {held[family][-1]:.3f}", flush=True)
    rows = []
    for family in families:
        h, d = np.asarray(held[family]), np.asarray(in_dist[family])
        rows.append({"family": family, "heldout_auc": float(h.mean()), "heldout_sd": float(h.std(ddof=1)) if len(h) > 1 else None,
                     "in_distribution_auc": float(d.mean()), "in_distribution_sd": float(d.std(ddof=1)) if len(d) > 1 else None,
                     "gap": float(d.mean() - h.mean()), "in_band": bool(BAND[0] <= h.mean() <= BAND[1]),
                     "heldout_per_seed": h.tolist(), "in_distribution_per_seed": d.tolist()})  # fmt: skip
    ranked = sum(r["in_band"] for r in rows)
    env = run_environment()
    device = env["device"]
    command = shlex.join(["python", "benchmarks/lofo_probes.py", *sys.argv[1:]])
    git = git_state()
    sd = lambda v: f" ± {v:.3f}" if v is not None else ""  # noqa: E731
    lines = [
        "# Leave-one-family-out with the best feature probe (exploratory)",
        "",
        f"Command: `{command}` ({time.time() - started:.0f} s); code: git {str(git.get('commit'))[:10]}"
        f"{' (dirty)' if git.get('dirty') else ''}; machine: {device.get('cpu_model')}, {device.get('cpu_count')} cores, no GPU.",
        f"Benchmark: the sweep recipe's (configs/sweep_tiny.yaml: synthetic faces, its splits), --synthetic_seed "
        f"{args.synthetic_seed}; reader: the MLP token probe on the frozen tiny tower's features (probe_mlp), "
        f"seeds {args.seeds}, epoch chosen on validation AUC.",
        "Held out: the family is removed from train and validation; its AUC is every fake of that family (all splits) "
        "against the test reals. In-distribution: one training with no family held out; the family's test fakes "
        "against all test reals. Mean ± SD over seeds.",
        "",
        "| family | in-distribution AUC | held-out AUC | gap | held-out AUC in [0.65, 0.95] |",
        "|---|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(f"| {r['family']} | {r['in_distribution_auc']:.3f}{sd(r['in_distribution_sd'])} | "
                     f"{r['heldout_auc']:.3f}{sd(r['heldout_sd'])} | {r['gap']:+.3f} | {'yes' if r['in_band'] else 'no'} |")  # fmt: skip
    verdict = "meets" if ranked >= 3 else "does not meet"
    lines += ["", f"**{ranked} of {len(rows)} families have a held-out AUC in [{BAND[0]}, {BAND[1]}]: this benchmark "
              f"{verdict} the protocol's bar (at least 3) for a held-out column that can rank readers.**", ""]  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text("\n".join(lines))
    out.with_suffix(".json").write_text(
        json.dumps({"command": command, "git": git, "rows": rows}, indent=1) + "\n"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
