"""The feature probes: the ceiling probe and the one at the pipelines' training budget."""

from __future__ import annotations


def test_a_budget_matched_probe_trains_as_a_pipeline_run_and_stops_by_its_plateau_rule():
    import numpy as np

    from llava_df.spec.resolve import parse_spec
    from llava_df.sweep.probes import ProbeBudget, torch_probe

    spec = parse_spec(["--config", "llava_df/configs/confirmatory_v2.yaml", "--learning_rate", "3e-3"])
    budget = ProbeBudget.matched(spec.training)
    assert budget == ProbeBudget(epochs=10, batch=16, lr=3e-3, select="val_loss", max_lr_reductions=2)
    rng = np.random.default_rng(0)

    def split(n):  # pure noise: validation loss stops improving at once, so the plateau rule stops it early
        y = rng.integers(0, 2, n)
        return rng.normal(size=(n, 4, 8)).astype(np.float32), y, [str(i) for i in range(n)], ["x"] * n

    feats = {"train": split(64), "val": split(32), "test": split(32)}
    scores = torch_probe(feats, "mlp2x_gelu", 0, budget)
    assert 3 <= scores["_epochs"] < 10 and scores["test"].shape == (32,)
    assert torch_probe(feats, "mlp2x_gelu", 0, ProbeBudget(epochs=3))["_epochs"] == 3
