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

- ``probe_mlp_matched``: ``probe_mlp`` at the pipelines' training budget instead of the ceiling's
  40 epochs: the recipe's batch size, epoch cap and learning rate (mlp2x_gelu / projector_only's,
  after --lr_choice), the plateau schedule's halving and stop (``max_lr_reductions``), and the
  weights of the lowest validation loss, as a pipeline run selects them. If the pipeline falls
  short of this row, the LLM readout loses; if only of ``probe_mlp``, the budget does (issue #24).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

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
from llava_df.train.callbacks import PlateauSchedule

PROBES = ("probe_linear", "probe_mlp", "probe_kan", "probe_mlp_matched")
KAN_PROBE = "kan_h64_g3_k2"  # the KAN widths of the default sweep


@dataclass(frozen=True)
class ProbeBudget:
    """How a torch probe trains. The default is the ceiling's (long, the best validation AUC kept);
    ``matched`` is a pipeline run's (its batch, cap, LR and plateau stop, the lowest validation loss kept)."""

    epochs: int = 40
    batch: int = 64
    lr: float = 1e-3
    select: str = "val_auc"  # or "val_loss", a pipeline's criterion
    max_lr_reductions: int = 0  # 0: a fixed number of epochs

    @classmethod
    def matched(cls, training) -> ProbeBudget:
        """The budget of a pipeline run with these TrainingArguments (epoch-wise evaluation assumed)."""
        return cls(
            epochs=max(1, math.ceil(training.num_train_epochs)),
            batch=training.per_device_train_batch_size * training.gradient_accumulation_steps,
            lr=training.learning_rate,
            select="val_loss",
            max_lr_reductions=training.max_lr_reductions,
        )


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


def torch_probe(feats: dict, projector: str, seed: int, budget: ProbeBudget = ProbeBudget()) -> dict:
    """{split: P(Fake)} from a token probe trained on train, the epoch chosen on val by ``budget.select``."""

    torch.manual_seed(seed)
    dim = feats["train"][0].shape[-1]
    model = TokenProbe(create_projector(projector, dim, dim), dim)
    opt = torch.optim.AdamW(model.parameters(), lr=budget.lr, weight_decay=0.01)
    plateau = PlateauSchedule(budget.lr, factor=0.5, patience=1, threshold=0.0,
                              max_reductions=budget.max_lr_reductions)  # fmt: skip
    x = {k: torch.from_numpy(v[0]) for k, v in feats.items()}
    y = torch.from_numpy(feats["train"][1]).float()
    y_val = torch.from_numpy(feats["val"][1]).float()
    gen = torch.Generator().manual_seed(seed)
    best, best_state, epochs = -math.inf, None, 0
    for _ in range(budget.epochs):
        model.train()
        for idx in torch.randperm(len(y), generator=gen).split(budget.batch):
            loss = nn.functional.binary_cross_entropy_with_logits(model(x["train"][idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        epochs += 1
        model.eval()
        with torch.no_grad():
            logits = model(x["val"])
            val_loss = float(nn.functional.binary_cross_entropy_with_logits(logits, y_val))
            score = (
                _auc(feats["val"][1], torch.sigmoid(logits).numpy())
                if budget.select == "val_auc"
                else -val_loss
            )
        if score > best:
            best, best_state = score, {k: v.clone() for k, v in model.state_dict().items()}
        if budget.max_lr_reductions:
            decision = plateau.update(val_loss)
            if decision.lr_reduced:
                for group in opt.param_groups:
                    group["lr"] = decision.next_lr
            if decision.stop_reason:
                break
    model.load_state_dict(best_state)
    with torch.no_grad():
        scores = {k: torch.sigmoid(model(v)).numpy() for k, v in x.items()}
    return scores | {"_params": sum(p.numel() for p in model.parameters()), "_epochs": epochs}


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
        "time": {"s_per_step": math.nan, "probe_s": round(seconds, 1), "epochs": scores.get("_epochs")},
        "env": {"git": git_state(), "device": {"type": "cpu"}},
    }


def run_probes(feats: dict, seeds: list[int], key: str, matched: ProbeBudget | None = None) -> list[dict]:
    """Every probe of PROBES at each seed (the linear one at the first); ``matched``: the pipelines' budget
    (None: probe_mlp_matched is not run)."""
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
    for seed in seeds if matched is not None else []:
        start = time.time()
        scores = torch_probe(feats, "mlp2x_gelu", seed, matched)
        records.append(probe_record("probe_mlp_matched", seed, scores, feats, time.time() - start, key))
    return records
