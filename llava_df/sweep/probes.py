"""Feature probes: what the frozen vision tower's features allow, as reference rows of the comparison.

How to call (compare_projectors --probes does)::

    records = run_probes(argv, seeds=[0, 1, 2])   # argv: the sweep recipe's training flags
    # one record per (probe, seed), in the run-record format (strategy "probe"), so the tables
    # put them beside the LLM pipeline's rows and the notebook reads them like any run

Every probe sees exactly what the projector sees (the tower's selected layer, CLS dropped, the
run's image processor and aspect ratio) on the same splits, and never the LLM:

- ``probe_linear``: logistic regression on the standardized token features (all positions),
  its C chosen on the validation split (scikit-learn);
- ``probe_mlp``: mlp2x_gelu's widths applied to each token, mean over tokens, a linear readout;
- ``probe_kan``: the same with a KAN token map of the comparison's KAN widths (our layer).

The torch probes train with AdamW for a fixed number of epochs and keep the epoch with the best
validation AUC (selection on validation, never test), one run per seed. Their test AUC is the
ceiling a projector + LLM readout is measured against: the gap says how much the readout loses.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler
from torch import nn

from llava_df.data.load import load_splits
from llava_df.data.pipeline import load_data_settings
from llava_df.eval.metrics import binary_metrics
from llava_df.eval.threshold import choose_threshold
from llava_df.model.build import build_model
from llava_df.model.feature_cache import prepare_feature_cache
from llava_df.model.processor import run_processor
from llava_df.projectors import create_projector
from llava_df.provenance import git_state

PROBES = ("probe_linear", "probe_mlp", "probe_kan")
KAN_PROBE = "kan_h64_g3_k2"  # the KAN widths of the default sweep
EPOCHS, BATCH, LR = 40, 64, 1e-3


@torch.no_grad()
def tower_features(spec, batch_size: int = 64) -> dict:
    """{split: (features [N, T, D] float32, is_fake [N], ids, manipulations)} of the recipe's data.

    The pixels are the collator's (what training feeds the tower), so the sweep's feature store,
    built by its cells, serves the probes too (llava_df.model.feature_cache); a missing store is built.
    """
    built = build_model(spec.model, spec.strategy)  # the tower is never quantized; --bits does not change it
    built.model.requires_grad_(False)
    processor, _ = run_processor(spec.model, spec.data, built.processor)  # with --image_aspect_ratio applied
    splits = load_splits(spec.data, seed=spec.training.seed)
    collator, _, _ = load_data_settings(spec.data, processor, spec.training.model_max_length)
    if spec.training.feature_cache == "auto":
        prepare_feature_cache(built.model, splits, collator, batch_size=batch_size)
    tower, config = built.model.model.vision_tower.eval(), built.model.config
    layer, full = config.vision_feature_layer, config.vision_feature_select_strategy == "full"
    out = {}
    for name, ds in splits.items():
        feats = []
        for start in range(0, len(ds), batch_size):
            pixels = collator([ds[i] for i in range(start, min(start + batch_size, len(ds)))])["pixel_values"]
            hidden = tower(pixels, output_hidden_states=True).hidden_states
            picked = torch.cat([hidden[i] for i in layer], -1) if isinstance(layer, list) else hidden[layer]
            feats.append((picked if full else picked[:, 1:]).float())
        out[name] = (
            torch.cat(feats).numpy(),
            np.asarray(ds["is_fake"]),
            list(ds["id"]),
            list(ds["manipulation"]),
        )
    return out


def _auc(y, p) -> float:
    return float(roc_auc_score(y, p)) if len(set(y.tolist())) == 2 else math.nan


def linear_probe(feats: dict) -> dict:
    """{split: P(Fake)} from logistic regression on flattened standardized tokens; C chosen on val."""
    x = {k: v[0].reshape(len(v[0]), -1) for k, v in feats.items()}
    scaler = StandardScaler().fit(x["train"])
    x = {k: scaler.transform(v) for k, v in x.items()}
    best = None
    for c in (1e-4, 1e-3, 1e-2, 1e-1, 1.0):
        clf = LogisticRegression(C=c, max_iter=2000).fit(x["train"], feats["train"][1])
        val = _auc(feats["val"][1], clf.predict_proba(x["val"])[:, 1])
        if best is None or val > best[0]:
            best = (val, clf, c)
    clf = best[1]
    return {k: clf.predict_proba(v)[:, 1] for k, v in x.items()} | {
        "_params": int(clf.coef_.size + 1),
        "_c": best[2],
    }


class TokenProbe(nn.Module):
    """token map (a projector: D -> H per token), mean over tokens, linear readout -> logit."""

    def __init__(self, token_map: nn.Module, hidden: int):
        super().__init__()
        self.token_map, self.readout = token_map, nn.Linear(hidden, 1)

    def forward(self, x):  # x: [B, T, D]
        return self.readout(self.token_map(x).mean(1)).squeeze(-1)


def torch_probe(feats: dict, projector: str, seed: int) -> dict:
    """{split: P(Fake)} from a token probe trained on train, the epoch chosen by val AUC."""

    torch.manual_seed(seed)
    dim = feats["train"][0].shape[-1]
    model = TokenProbe(create_projector(projector, dim, dim), dim)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
    x = {k: torch.from_numpy(v[0]) for k, v in feats.items()}
    y = torch.from_numpy(feats["train"][1]).float()
    gen = torch.Generator().manual_seed(seed)
    best, best_state = -1.0, None
    for _ in range(EPOCHS):
        model.train()
        for idx in torch.randperm(len(y), generator=gen).split(BATCH):
            loss = nn.functional.binary_cross_entropy_with_logits(model(x["train"][idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            val = _auc(feats["val"][1], torch.sigmoid(model(x["val"])).numpy())
        if val > best:
            best, best_state = val, {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    with torch.no_grad():
        scores = {k: torch.sigmoid(model(v)).numpy() for k, v in x.items()}
    return scores | {"_params": sum(p.numel() for p in model.parameters())}


def probe_record(name: str, seed: int, scores: dict, feats: dict, seconds: float, key: str) -> dict:
    """A run record (comparison/record.py's fields that the tables read) for one probe run."""

    # Accuracy at the validation EER point, as the pipeline's runs report it.
    threshold, _ = choose_threshold("eer", {"is_fake": feats["val"][1], "p_fake": scores["val"]})
    metrics, saved = {}, {}
    for split, (_, y, ids, families) in feats.items():
        p = np.asarray(scores[split], dtype=float)
        metrics[split] = binary_metrics(p, y, families, ids=ids, threshold=threshold)
        saved[split] = {"id": [str(i) for i in ids], "p_fake": p.tolist(), "is_fake": y.astype(int).tolist(),
                        "manipulation": [str(f) for f in families]}  # fmt: skip
    return {
        "cell": {"projector": name, "strategy": "probe", "seed": seed},
        "key": key,
        "projector_init": "probe (no LLM)",
        "metrics": metrics,
        "scores": saved,
        "parameters": {"trainable": scores["_params"], "projector": None, "projector_macs_per_token": None},
        "peak_memory": {"device": "cpu", "peak_rss_mb": math.nan},
        "time": {"s_per_step": math.nan, "probe_s": round(seconds, 1)},
        "env": {"git": git_state(), "device": {"type": "cpu"}},
    }


def run_probes(feats: dict, seeds: list[int], key: str) -> list[dict]:
    records = []
    start = time.time()
    records.append(
        probe_record("probe_linear", seeds[0], linear_probe(feats), feats, time.time() - start, key)
    )
    for name, projector in (("probe_mlp", "mlp2x_gelu"), ("probe_kan", KAN_PROBE)):
        for seed in seeds:
            start = time.time()
            scores = torch_probe(feats, projector, seed)
            records.append(probe_record(name, seed, scores, feats, time.time() - start, key))
    return records
