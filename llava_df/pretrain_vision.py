"""Pretrain the tiny preset's vision tower on REAL synthetic faces, never on the real/fake label.

    python -m llava_df.pretrain_vision        # ~1-2 min on 2 idle CPU cores
    # -> llava_df/assets/tiny_vision.safetensors (the tower's state dict, fp32, ~1.7 MB)
    #    llava_df/assets/tiny_vision.json      (settings, losses, linear-probe check, command)

Why: in LLaVA the CLIP tower is frozen and arrives pretrained; the tiny preset's random tower
would leave the projector nothing to read. This gives it CLIP's role in miniature: generic
features of faces, learnt without the detection label.

Objective, on the tower's layer -2 patch features (exactly what LLaVA hands the projector):

- masked-patch reconstruction (MAE-style): half of the 8x8 patches are blanked; a linear head
  predicts each blanked patch's normalised pixels from its token. This needs low-level
  texture and colour, where the forgeries leave their traces.
- face-attribute regression: a linear head on the mean patch token predicts the generator's
  (standardised) face parameters: head pose and size, skin/hair/iris colour, eyes, mouth,
  lighting, sensor noise, JPEG quality.

Data: REAL images only, from ``llava_df.data.synthetic`` with seed 1000, disjoint from the
benchmark seeds runs use (default 0). The real/fake label is used once, AFTER training, for a
linear probe (logistic regression on the frozen features' mean and std over patches, benchmark
seed 0: train split -> test split) comparing random and pretrained towers; the result goes to
the json, never into the weights.

The tiny preset loads the file automatically (``llava_df.tiny.build_tiny_model``) and records
its sha256 in the model config (``config.llava_df["vision_weights"]``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from .tiny import PATCH_SIZE, VISION_WEIGHTS, build_tiny_model, load_tiny_processor


@dataclass
class PretrainConfig:
    n_real: int = 1200  # real faces rendered for pretraining
    seed: int = 1000  # synthetic seed of the pretraining faces (benchmarks use 0 by default)
    epochs: int = 8
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    mask_ratio: float = 0.5  # fraction of patches blanked for reconstruction
    attr_weight: float = 1.0  # weight of the attribute loss next to the reconstruction loss
    probe_n: int = 1000  # benchmark images for the linear-probe check (0: skip)
    probe_seed: int = 0
    init_seed: int = 0  # the tiny preset's seed: the random tower this starts from
    out: str = str(VISION_WEIGHTS)


# ---- data -----------------------------------------------------------------------------------
def real_faces(n_real: int, seed: int, image_size: int = 64):
    """(images, attribute matrix, attribute names) of ``n_real`` REAL synthetic faces.

    Fakes are never rendered: only planned samples with ``is_fake == 0`` are drawn.
    """
    from .data.synthetic import SyntheticConfig, plan, render_sample

    cfg = SyntheticConfig(n=2 * n_real + 2, seed=seed, image_size=image_size)
    reals = [p for p in plan(cfg) if p.is_fake == 0][:n_real]
    samples = [render_sample(cfg, p) for p in reals]
    assert all(s.is_fake == 0 for s in samples)
    names = sorted(samples[0].attributes)
    attrs = np.array([[float(s.attributes[k]) for k in names] for s in samples], dtype=np.float32)
    return [s.image for s in samples], attrs, names


def pixels(images, processor) -> torch.Tensor:
    return processor.image_processor(images=images, return_tensors="pt")["pixel_values"]  # (B, 3, 64, 64)


def patchify(x: torch.Tensor, p: int = PATCH_SIZE) -> torch.Tensor:
    """(B, C, H, W) -> (B, H/p * W/p, C*p*p), patches in the same row-major order as CLIP's tokens."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)  # (B, h, w, C, p, p)
    return x.reshape(b, (h // p) * (w // p), c * p * p)


def blank_patches(x: torch.Tensor, mask: torch.Tensor, p: int = PATCH_SIZE) -> torch.Tensor:
    """Zero (= the normalisation mean) the patches where ``mask`` (B, N) is True."""
    b, _, h, w = x.shape
    grid = mask.reshape(b, 1, h // p, 1, w // p, 1).expand(b, 1, h // p, p, w // p, p).reshape(b, 1, h, w)
    return x.masked_fill(grid, 0.0)


# ---- model ----------------------------------------------------------------------------------
class PretrainHeads(nn.Module):
    """Linear heads on layer -2 patch tokens: pixels per patch, attributes from the mean token."""

    def __init__(self, hidden: int, patch_dim: int, n_attr: int):
        super().__init__()
        self.pixels = nn.Linear(hidden, patch_dim)
        self.attributes = nn.Linear(hidden, n_attr)

    def forward(self, tokens: torch.Tensor):  # tokens: (B, N, hidden)
        return self.pixels(tokens), self.attributes(tokens.mean(1))  # (B, N, patch_dim), (B, n_attr)


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
    images, attrs, names = real_faces(cfg.n_real, cfg.seed)
    x = pixels(images, processor)  # (n, 3, 64, 64)
    # Standardise every attribute (pose in image units, colours, JPEG quality 0-100 ...) to unit scale.
    mean, std = attrs.mean(0), attrs.std(0) + 1e-6
    y = torch.from_numpy((attrs - mean) / std)  # (n, n_attr)
    log(f"rendered {len(images)} real faces in {time.perf_counter() - t0:.1f}s")

    tower = build_tiny_model(cfg.init_seed, vision_weights=False).model.vision_tower.float()
    hidden = tower.config.hidden_size
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        heads = PretrainHeads(hidden, 3 * PATCH_SIZE * PATCH_SIZE, y.shape[1])
        params = list(tower.parameters()) + list(heads.parameters())
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        steps_per_epoch = math.ceil(len(x) / cfg.batch_size)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, cfg.lr, total_steps=cfg.epochs * steps_per_epoch, pct_start=0.1
        )
        history = []
        tower.train()
        for epoch in range(cfg.epochs):
            order = torch.randperm(len(x))
            sums = {"reconstruction": 0.0, "attributes": 0.0}
            for start in range(0, len(x), cfg.batch_size):
                idx = order[start : start + cfg.batch_size]
                xb, yb = x[idx], y[idx]
                n_patches = (xb.shape[-1] // PATCH_SIZE) ** 2
                mask = torch.rand(len(idx), n_patches).argsort(1) < int(cfg.mask_ratio * n_patches)  # (B, N)
                pred_pix, pred_attr = heads(layer_minus_2(tower, blank_patches(xb, mask)))
                rec = ((pred_pix - patchify(xb)) ** 2)[mask].mean()
                att = ((pred_attr - yb) ** 2).mean()
                loss = rec + cfg.attr_weight * att
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                sched.step()
                sums["reconstruction"] += rec.item() * len(idx)
                sums["attributes"] += att.item() * len(idx)
            row = {"epoch": epoch + 1, **{k: round(v / len(x), 5) for k, v in sums.items()}}
            history.append(row)
            log(
                f"epoch {row['epoch']:2d}  masked-patch MSE {row['reconstruction']:.4f}  attribute MSE {row['attributes']:.4f}"
            )
    tower.eval()
    state = {k: v.detach().contiguous().clone() for k, v in tower.state_dict().items()}
    summary = {
        "config": asdict(cfg),
        "attributes": names,
        "history": history,
        # Baselines for the two losses: predicting the mean gives MSE = variance (1.0 after standardising).
        "baseline_attribute_mse": 1.0,
        "baseline_patch_mse": round(float(patchify(x).var(dim=(0, 1)).mean()), 5),
        "train_seconds": round(time.perf_counter() - t0, 1),
    }
    return state, summary


# ---- the check ------------------------------------------------------------------------------
@torch.no_grad()
def probe(state: dict[str, torch.Tensor] | None, n: int = 1000, seed: int = 0, init_seed: int = 0) -> dict:
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
    samples = generate(SyntheticConfig(n=n, seed=seed))
    tokens = layer_minus_2(tower, pixels([s.image for s in samples], load_tiny_processor()))  # (n, N, hidden)
    # mean and spread over patches: a local forgery shifts the spread even when the mean barely moves
    feats = torch.cat([tokens.mean(1), tokens.std(1)], dim=1).numpy()
    labels = np.array([s.is_fake for s in samples])
    train = np.array([s.split == "train" for s in samples])
    test = np.array([s.split == "test" for s in samples])
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    clf.fit(feats[train], labels[train])
    scores = clf.predict_proba(feats[test])[:, 1]
    return {
        "test_auc": round(float(roc_auc_score(labels[test], scores)), 4),
        "test_accuracy": round(float(accuracy_score(labels[test], scores > 0.5)), 4),
        "n_train": int(train.sum()),
        "n_test": int(test.sum()),
    }


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(
        prog="python -m llava_df.pretrain_vision", description=__doc__.split("\n")[0]
    )
    for name, default in asdict(PretrainConfig()).items():
        parser.add_argument(f"--{name}", type=type(default), default=default)
    cfg = PretrainConfig(**vars(parser.parse_args(argv)))
    torch.manual_seed(cfg.seed)
    state, summary = pretrain(cfg)
    if cfg.probe_n:
        summary["linear_probe_real_vs_fake"] = {
            "random_tower": probe(None, cfg.probe_n, cfg.probe_seed, cfg.init_seed),
            "pretrained_tower": probe(state, cfg.probe_n, cfg.probe_seed, cfg.init_seed),
        }
        print(json.dumps(summary["linear_probe_real_vs_fake"]))
    args = argv if argv is not None else sys.argv[1:]
    summary["command"] = " ".join(["python -m llava_df.pretrain_vision", *args])
    summary["torch"] = torch.__version__
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        state,
        out,
        metadata={"objective": "masked-patch reconstruction + face-attribute regression, real only"},
    )
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB) and {out.with_suffix('.json')}")
    return out


if __name__ == "__main__":
    main()
