"""Answer-token scores and metrics on hand-built logits (no model)."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from transformers import EvalPrediction

from llava_df.eval.metrics import (
    AnswerMetrics,
    AnswerScores,
    NonFiniteScoresError,
    binary_metrics,
    column,
    first_answer_position,
)

FAKE, REAL, V = 7, 5, 11


def _batch(answer_positions, answers, length=8, vocab=V):
    labels = torch.full((len(answers), length), -100)
    for row, (pos, tok) in enumerate(zip(answer_positions, answers, strict=True)):
        labels[row, pos] = tok
        labels[row, pos + 1] = 2  # </s> after the answer is supervised too in some templates
    logits = torch.randn(len(answers), length, vocab)
    return logits, labels


def test_scores_read_the_two_answer_logits_before_the_answer_position():
    logits, labels = _batch([3, 5], [FAKE, REAL])
    logits[0, 2, FAKE], logits[0, 2, REAL] = 2.0, 0.0  # row 0: answer at 3, predicted at 2
    logits[1, 4, FAKE], logits[1, 4, REAL] = -1.0, 1.0  # row 1: answer at 5 (left padding)
    logits[0, 2, 0] = 100.0  # other vocabulary does not dilute the two-way softmax
    out = AnswerScores(FAKE, REAL)((logits, None), labels)
    assert out.shape == (2, 2)
    assert out[0, 0].item() == pytest.approx(1 / (1 + math.exp(-2.0)), rel=1e-5)
    assert out[1, 0].item() == pytest.approx(1 / (1 + math.exp(2.0)), rel=1e-5)
    assert out[:, 1].tolist() == [1.0, 0.0]


def test_unknown_answer_token_is_flagged_then_reported():
    logits, labels = _batch([3], [4])
    out = AnswerScores(FAKE, REAL)(logits, labels)
    assert out[0, 1].item() == -1.0
    with pytest.raises(ValueError, match="neither the 'Real' nor the 'Fake' first token"):
        AnswerMetrics()(EvalPrediction(predictions=out.numpy(), label_ids=None))


def test_rows_without_an_answer_fail_with_the_fix():
    labels = torch.full((2, 6), -100)
    labels[0, 3] = FAKE
    with pytest.raises(ValueError, match=r"Rows \[1\].*--model_max_length"):
        first_answer_position(labels)


def test_same_first_token_for_both_answers_is_rejected():
    with pytest.raises(ValueError, match="same token id"):
        AnswerScores(3, 3)


def test_binary_metrics_match_hand_computed_values():
    p = np.array([0.9, 0.2, 0.6, 0.4])
    y = np.array([1, 0, 0, 1])
    m = binary_metrics(p, y, ["face_swap", "real", "real", "self_blend"])
    assert m["accuracy"] == 0.5  # predictions 1,0,1,0
    assert m["auc"] == 0.75  # fake>real in 3 of 4 pairs
    assert (m["real_accuracy"], m["fake_accuracy"]) == (0.5, 0.5)
    assert (m["acc_face_swap"], m["acc_real"], m["acc_self_blend"]) == (1.0, 0.5, 0.0)


def test_single_class_split_gives_nan_auc_and_a_message(caplog):
    with caplog.at_level(logging.WARNING, logger="llava_df.eval.metrics"):
        m = binary_metrics(np.array([0.1, 0.7]), np.array([0, 0]))
    assert math.isnan(m["auc"]) and m["accuracy"] == 0.5 and math.isnan(m["fake_accuracy"])
    assert "only real images" in caplog.text


def test_non_finite_scores_stop_the_evaluation_naming_the_samples():
    p = np.array([np.nan, 0.7, np.inf, 0.2])
    with pytest.raises(
        NonFiniteScoresError, match=r"2 of 4 samples .*: img_a, img_c\..*--drop_nonfinite_scores True"
    ):
        binary_metrics(p, np.array([0, 1, 1, 0]), ids=["img_a", "img_b", "img_c", "img_d"])
    with pytest.raises(NonFiniteScoresError, match=r"1 of 2 samples .*: #0\."):  # no ids: by index
        binary_metrics(np.array([np.nan, 0.7]), np.array([0, 1]))


def test_dropping_non_finite_scores_counts_them_and_scores_the_rest(caplog):
    p = np.array([np.nan, 0.7, 0.9, 0.2])
    with caplog.at_level(logging.WARNING, logger="llava_df.eval.metrics"):
        m = binary_metrics(
            p, np.array([0, 1, 0, 0]), ["none", "swap", "none", "none"], ids=list("abcd"), drop_nonfinite=True
        )
    # Scored: (0.7, fake), (0.9, real), (0.2, real); the NaN is neither "Real" nor "Fake".
    assert (m["n"], m["n_nonfinite"]) == (3, 1)
    assert m["accuracy"] == pytest.approx(2 / 3) and m["auc"] == 0.5 and m["acc_none"] == 0.5
    assert "1 of 4 samples have a non-finite P(Fake) (NaN or inf): a." in caplog.text


def test_manipulation_names_must_match_predictions():
    with pytest.raises(ValueError, match="3 manipulation names for 2 predictions"):
        binary_metrics(np.array([0.1, 0.7]), np.array([0, 1]), ["a", "b", "c"])


def test_column_reads_lists_of_dicts_and_datasets():
    from datasets import Dataset

    rows = [{"manipulation": "none", "is_fake": 0}, {"manipulation": "face_swap", "is_fake": 1}]
    assert column(rows, "manipulation") == ["none", "face_swap"]
    assert column(Dataset.from_list(rows), "is_fake") == [0, 1]


def test_threshold_eer_ap_balanced_accuracy_and_per_family_auc():
    from llava_df.eval.metrics import equal_error_rate

    p = np.array([0.9, 0.8, 0.35, 0.3, 0.2, 0.6])
    y = np.array([1, 1, 1, 0, 0, 0])
    fam = ["swap", "blend", "blend", "none", "none", "none"]
    m = binary_metrics(p, y, fam, threshold=0.7)
    assert m["threshold"] == 0.7 and m["accuracy"] == pytest.approx(5 / 6)  # 0.9, 0.8 -> fake; 0.35 missed
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1) / 2)
    assert m["auc_swap"] == 1.0 and m["auc_blend"] == pytest.approx(5 / 6)  # 0.8 > 3 reals, 0.35 > 2
    assert m["ap"] == pytest.approx(sklearn_ap(y, p))
    eer, t = equal_error_rate(y, p)
    assert eer == pytest.approx(1 / 3) and 0.35 <= t <= 0.6


def sklearn_ap(y, p):
    from sklearn.metrics import average_precision_score

    return average_precision_score(y, p)
