"""Proxy difficulty calibration of the synthetic benchmark with simple sklearn baselines.

    python benchmarks/bench_synthetic_difficulty.py --n 2000 --difficulties 0 0.25 0.5 0.75 1 \
        --holdout face_swap self_blend gan_upsample expression_warp noise_inconsistency

Logistic regression (StandardScaler + LogisticRegression(C=0.05)) on five feature sets: (a) 2x
down-sampled pixels, (b) log FFT magnitude of the grey image, (c) its azimuthal average (the 1-D
spectrum of Durall et al. 2020), (d) a sorted local noise-level map, (e) c + d. Trained on the
train split, ROC AUC on the test split; per family: test reals vs that family's test fakes,
scored by the (e) model. Held-out rows use the cross-manipulation protocol at difficulty 0.5.

Writes results/synthetic_difficulty.json and results/synthetic_difficulty.md. This is a proxy
for the default's "learnable, not saturated" goal; the LLaVA model is calibrated separately.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
from scipy import ndimage
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from llava_df.data.synthetic import SyntheticConfig, generate

RESULTS = Path(__file__).resolve().parent.parent / "results"
FEATURES = ("pixels", "fft", "spectrum1d", "noise_map", "spectrum+noise")


def features(images: list[np.ndarray]) -> dict[str, np.ndarray]:
    x = np.stack(images).astype(np.float32) / 255.0  # (N, S, S, 3)
    n, s = x.shape[:2]
    pixels = x.reshape(n, s // 2, 2, s // 2, 2, 3).mean((2, 4)).reshape(n, -1)  # 2x down-sampled
    grey = x.mean(-1)
    grey = grey - grey.mean((1, 2), keepdims=True)
    mag = np.log(np.abs(np.fft.fftshift(np.fft.fft2(grey), axes=(1, 2))) + 1e-3)  # (N, S, S)
    yy, xx = np.indices((s, s)) - s // 2
    radius = np.sqrt(yy**2 + xx**2).astype(int).ravel()
    counts = np.bincount(radius)
    spectrum = np.stack([np.bincount(radius, m.ravel()) / counts for m in mag])  # (N, ~0.7 S)
    # Noise-level map: std of the high-pass residual in 8x8 blocks, sorted (position-free), as
    # splicing detectors estimate local noise; sees re-noised, blurred or pasted regions.
    residual = x - ndimage.uniform_filter(x, size=(1, 3, 3, 1))
    b = s // 8
    blocks = residual.reshape(n, 8, b, 8, b, 3).std(axis=(2, 4)).reshape(n, -1)  # (N, 192)
    noise_map = np.sort(np.log(blocks + 1e-4), axis=1)
    combined = np.concatenate([spectrum, noise_map], 1)
    return dict(zip(FEATURES, (pixels, mag.reshape(n, -1), spectrum, noise_map, combined), strict=True))


def evaluate(cfg: SyntheticConfig) -> dict:
    samples = generate(cfg)
    feats = features([np.asarray(s.image) for s in samples])
    y = np.array([s.is_fake for s in samples])
    split = np.array([s.split for s in samples])
    manip = np.array([s.manipulation for s in samples])
    train, test = split == "train", split == "test"
    out: dict = {"test_auc": {}}
    for name, x in feats.items():
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=3000))
        model.fit(x[train], y[train])
        score = model.predict_proba(x[test])[:, 1]
        out["test_auc"][name] = round(float(roc_auc_score(y[test], score)), 3)
    fams = sorted(set(manip[test & (y == 1)]))
    real = manip[test] == "none"
    out["per_family_auc"] = {
        f: round(
            float(roc_auc_score(y[test][real | (manip[test] == f)], score[real | (manip[test] == f)])), 3
        )
        for f in fams
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--difficulties", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    parser.add_argument("--holdout", nargs="*", default=[], help="Families to hold out (at difficulty 0.5).")
    args = parser.parse_args()
    rows = []
    runs = [(d, None) for d in args.difficulties] + [(0.5, f) for f in args.holdout]
    for d, held in runs:
        t = time.time()
        cfg = SyntheticConfig(
            n=args.n, seed=args.seed, image_size=args.image_size, difficulty=d, holdout_manipulation=held
        )
        rows.append({"difficulty": d, "holdout": held, **evaluate(cfg), "seconds": round(time.time() - t, 1)})
        print(rows[-1], flush=True)
    command = f"python benchmarks/bench_synthetic_difficulty.py --n {args.n} --seed {args.seed} --image-size {args.image_size} --difficulties {' '.join(map(str, args.difficulties))}"
    command += f" --holdout {' '.join(args.holdout)}" if args.holdout else ""
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores (shared), {platform.system()}"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "synthetic_difficulty.json").write_text(
        json.dumps({"command": command, "machine": machine, "rows": rows}, indent=2) + "\n"
    )
    lines = [
        "# Synthetic benchmark: proxy difficulty (sklearn logistic regression, test ROC AUC)",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine}. n={args.n} images (1400/300/300), image size {args.image_size}.",
        "",
        "| difficulty | holdout | " + " | ".join(FEATURES) + " | per family (spectrum+noise) |",
        "|---|---|" + "---|" * len(FEATURES) + "---|",
    ]
    for r in rows:
        fam = ", ".join(f"{k} {v:.2f}" for k, v in r["per_family_auc"].items())
        aucs = " | ".join(f"{r['test_auc'][f]:.3f}" for f in FEATURES)
        lines.append(f"| {r['difficulty']} | {r['holdout'] or '-'} | {aucs} | {fam} |")
    (RESULTS / "synthetic_difficulty.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
