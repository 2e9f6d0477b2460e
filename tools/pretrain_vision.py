"""Pretrain the tiny preset's vision tower on REAL synthetic faces, never on the real/fake label.

    python tools/pretrain_vision.py        # ~3 min on 1 CPU core
    # -> llava_df/assets/tiny_vision.safetensors (the tower's state dict, fp32, ~1.7 MB)
    #    llava_df/assets/tiny_vision.json      (settings, losses, linear-probe check, command)

Why: in LLaVA the CLIP tower is frozen and arrives pretrained, and a linear probe on frozen CLIP
features already detects fakes (Ojha et al. 2023, "Towards Universal Fake Image Detectors"):
web-scale pretraining keeps low-level evidence in the patch features. The tiny tower plays
that forensics-aware CLIP. A random tower, or one pretrained for semantics (masked-patch
reconstruction + face attributes: probe AUC 0.52), gives the projector nothing to read.

Objective, a forensic self-supervised pretext (``tools/vision_pretext.py``, after Huh et al.
2018, "Fighting Fake News"), on the tower's layer -2 patch tokens (what LLaVA hands the
projector). Each real face gets one generic operation (resampling, blur, sharpening, noise,
median denoising, JPEG, colour gain, a pixel shift) inside a random soft ellipse, then the
camera's JPEG; three linear heads per patch token predict:

- which operation touched the patch (cross-entropy; "none" outside the region, down-weighted);
- how much of the patch the region covers (MSE): where the processing's boundary runs;
- the patch's high-pass residual (image minus its Gaussian blur, MSE): local noise and texture
  must survive in every token, not only in processed ones.

Why this is not the label: no image here is a fake. The operations are textbook processing,
not the benchmark's manipulation functions (``llava_df.data.manipulations`` is never called),
regions are random ellipses rather than face masks, and the faces come from seed 1000,
disjoint from the benchmark seeds runs use (default 0). The real/fake label is used once,
AFTER training, for a linear probe (logistic regression on the frozen features' mean and std
over patches, benchmark seed 0 at difficulty 0.5: train split -> test split, also per family)
comparing random and pretrained towers; the result goes to the json, never into the weights.

The tiny preset loads the file automatically (``llava_df.model.tiny.build_tiny_model``) and records
its sha256 in the model config (``config.llava_df["vision_weights"]``), so new weights
invalidate cached tiny models.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from scipy import ndimage
from torch import nn
from vision_pretext import OPS, processed_reals  # tools/, beside this file

from llava_df.errors import ArgumentParser, cli_entry
from llava_df.model.tiny import PATCH_SIZE, VISION_WEIGHTS, build_tiny_model, load_tiny_processor


@dataclass
class PretrainConfig:
    n_real: int = 1200  # real faces rendered for pretraining
    variants: int = 4  # random local processings of each real face
    seed: int = 1000  # synthetic seed of the pretraining faces (benchmarks use 0 by default)
    epochs: int = 12
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.05
    residual_weight: float = 1.0  # high-pass reconstruction next to the per-patch op classification
    coverage_weight: float = 1.0  # per-patch region coverage regression
    none_weight: float = 0.2  # CE weight of unprocessed patches (~85% of them), so the ops are learnt
    probe_n: int = 1000  # benchmark images for the linear-probe check (0: skip)
    probe_seed: int = 0
    probe_difficulty: float = 0.5  # the benchmark's default
    init_seed: int = 0  # the tiny preset's seed: the random tower this starts from
    out: str = str(VISION_WEIGHTS)


# ---- data -----------------------------------------------------------------------------------
def pixels(images, processor) -> torch.Tensor:
    return processor.image_processor(images=images, return_tensors="pt")["pixel_values"]  # (B, 3, 64, 64)


def patchify(x: torch.Tensor, p: int = PATCH_SIZE) -> torch.Tensor:
    """(B, C, H, W) -> (B, H/p * W/p, C*p*p), patches in the same row-major order as CLIP's tokens."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)  # (B, h, w, C, p, p)
    return x.reshape(b, (h // p) * (w // p), c * p * p)


def high_pass(x: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """(B, C, H, W) minus its Gaussian blur: the noise/texture residual forensics reads."""
    return x - torch.from_numpy(ndimage.gaussian_filter(x.numpy(), (0, 0, sigma, sigma)))


def patch_targets(ops: np.ndarray, cover: np.ndarray, p: int = PATCH_SIZE):
    """Per-patch op id (the image's op where its region covers >= half the patch, else "none")
    and per-patch coverage, both (n, N) in CLIP's token order."""
    frac = patchify(torch.from_numpy(cover)[:, None], p).mean(-1)  # (n, N)
    labels = torch.where(
        frac >= 0.5, torch.from_numpy(ops)[:, None], torch.zeros_like(frac, dtype=torch.long)
    )
    return labels, frac


# ---- model ----------------------------------------------------------------------------------
class PretrainHeads(nn.Module):
    """Linear heads on each layer -2 patch token: op class, region coverage, high-pass residual."""

    def __init__(self, hidden: int, patch_dim: int, n_ops: int):
        super().__init__()
        self.op = nn.Linear(hidden, n_ops)
        self.coverage = nn.Linear(hidden, 1)
        self.residual = nn.Linear(hidden, patch_dim)

    def forward(self, tokens: torch.Tensor):  # tokens: (B, N, hidden)
        return self.op(tokens), self.coverage(tokens).squeeze(-1), self.residual(tokens)


def layer_minus_2(tower: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """LLaVA's features: hidden_states[-2] without CLS (vision_feature_select_strategy='default').

    The last encoder layer does not contribute to them, so it is left out of the forward pass
    (a third of the compute of the tiny tower); its weights stay as initialised.
    """
    layers = tower.encoder.layers
    tower.encoder.layers = layers[:-1]
    try:  # with the last layer gone, the final hidden state IS the full tower's hidden_states[-2]
        return tower(pixel_values, output_hidden_states=True).hidden_states[-1][:, 1:]  # (B, N, hidden)
    finally:
        tower.encoder.layers = layers


def pretrain(cfg: PretrainConfig, log=print) -> tuple[dict[str, torch.Tensor], dict]:
    """Train and return (tower state dict, summary). The global RNG is left untouched."""
    processor = load_tiny_processor()
    t0 = time.perf_counter()
    images, ops, cover = processed_reals(cfg.n_real, cfg.variants, cfg.seed)
    x = pixels(images, processor)  # (n, 3, 64, 64)
    labels, frac = patch_targets(ops, cover)  # (n, N) each
    residual = patchify(high_pass(x))  # (n, N, 3*p*p)
    residual = residual / residual.std()  # unit scale, so its MSE baseline is ~1
    log(f"rendered {len(images)} locally processed real faces in {time.perf_counter() - t0:.1f}s")

    tower = build_tiny_model(cfg.init_seed, vision_weights=False).model.vision_tower.float()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        heads = PretrainHeads(tower.config.hidden_size, residual.shape[-1], len(OPS))
        params = list(tower.parameters()) + list(heads.parameters())
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        steps_per_epoch = math.ceil(len(x) / cfg.batch_size)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, cfg.lr, total_steps=cfg.epochs * steps_per_epoch, pct_start=0.1
        )
        class_weight = torch.ones(len(OPS))
        class_weight[0] = cfg.none_weight
        history = []
        tower.train()
        for epoch in range(cfg.epochs):
            order = torch.randperm(len(x))
            sums = {"op_ce": 0.0, "op_accuracy": 0.0, "coverage_mse": 0.0, "residual_mse": 0.0}
            for start in range(0, len(x), cfg.batch_size):
                idx = order[start : start + cfg.batch_size]
                logits, pred_cov, pred_res = heads(layer_minus_2(tower, x[idx]))  # (B, N, n_ops) ...
                ce = nn.functional.cross_entropy(
                    logits.flatten(0, 1), labels[idx].flatten(), weight=class_weight
                )
                cov = ((pred_cov - frac[idx]) ** 2).mean()
                res = ((pred_res - residual[idx]) ** 2).mean()
                loss = ce + cfg.coverage_weight * cov + cfg.residual_weight * res
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                sched.step()
                acc = (logits.argmax(-1) == labels[idx]).float().mean()
                for k, v in zip(sums, (ce, acc, cov, res), strict=True):
                    sums[k] += v.item() * len(idx)
            row = {"epoch": epoch + 1, **{k: round(v / len(x), 5) for k, v in sums.items()}}
            history.append(row)
            log("  ".join(f"{k} {v}" for k, v in row.items()))
    tower.eval()
    state = {k: v.detach().contiguous().clone() for k, v in tower.state_dict().items()}
    summary = {
        "config": asdict(cfg),
        "ops": list(OPS),
        "history": history,
        # Baselines: always "none" per patch, mean coverage, zero residual (MSE 1 after scaling).
        "baseline_op_accuracy": round(float((labels == 0).float().mean()), 5),
        "baseline_coverage_mse": round(float(frac.var()), 5),
        "baseline_residual_mse": 1.0,
        "train_seconds": round(time.perf_counter() - t0, 1),
    }
    return state, summary


# ---- the check ------------------------------------------------------------------------------
@torch.no_grad()
def probe(
    state: dict[str, torch.Tensor] | None,
    n: int = 1000,
    seed: int = 0,
    init_seed: int = 0,
    difficulty: float = 0.5,
) -> dict:
    """Real/fake linear probe on frozen layer -2 features pooled over patches (mean, std).

    Measures whether features carry signal; the label never reaches the tower's weights.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from .data.synthetic import SyntheticConfig, generate

    tower = build_tiny_model(init_seed, vision_weights=False).model.vision_tower.float().eval()
    if state is not None:
        tower.load_state_dict(state)
    samples = generate(SyntheticConfig(n=n, seed=seed, difficulty=difficulty))
    tokens = layer_minus_2(tower, pixels([s.image for s in samples], load_tiny_processor()))  # (n, N, hidden)
    # mean and spread over patches: a local forgery shifts the spread even when the mean barely moves
    feats = torch.cat([tokens.mean(1), tokens.std(1)], dim=1).numpy()
    labels = np.array([s.is_fake for s in samples])
    train = np.array([s.split == "train" for s in samples])
    test = np.array([s.split == "test" for s in samples])
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    clf.fit(feats[train], labels[train])
    scores = clf.predict_proba(feats[test])[:, 1]
    families = np.array([s.manipulation for s in samples])[test]
    real = labels[test] == 0
    per_family = {  # test reals vs that family's test fakes
        f: round(
            float(roc_auc_score(labels[test][real | (families == f)], scores[real | (families == f)])), 4
        )
        for f in sorted(set(families[~real]))
    }
    return {
        "test_auc": round(float(roc_auc_score(labels[test], scores)), 4),
        "per_family_auc": per_family,
        "test_accuracy": round(float(accuracy_score(labels[test], scores > 0.5)), 4),
        "n_train": int(train.sum()),
        "n_test": int(test.sum()),
    }


@cli_entry
def main(argv: list[str]) -> Path:
    parser = ArgumentParser(prog="python tools/pretrain_vision.py", description=__doc__.split("\n")[0])
    for name, default in asdict(PretrainConfig()).items():
        parser.add_argument(f"--{name}", type=type(default), default=default)
    cfg = PretrainConfig(**vars(parser.parse_args(argv)))
    torch.manual_seed(cfg.seed)
    state, summary = pretrain(cfg)
    if cfg.probe_n:
        summary["linear_probe_real_vs_fake"] = {
            "random_tower": probe(None, cfg.probe_n, cfg.probe_seed, cfg.init_seed, cfg.probe_difficulty),
            "pretrained_tower": probe(
                state, cfg.probe_n, cfg.probe_seed, cfg.init_seed, cfg.probe_difficulty
            ),
        }
        print(json.dumps(summary["linear_probe_real_vs_fake"]))
    summary["command"] = " ".join(["python tools/pretrain_vision.py", *argv])
    summary["torch"] = torch.__version__
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        state,
        out,
        metadata={
            "objective": "per-patch local-processing classification + high-pass reconstruction, real only"
        },
    )
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB) and {out.with_suffix('.json')}")
    return out


if __name__ == "__main__":
    main()
