"""Plateau LR schedule, early stopping and history callbacks on synthetic evaluation sequences (no model)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import TrainerControl, TrainerState, get_scheduler

from llava_df.train.callbacks import (
    HistoryCallback,
    PlateauCallback,
    PlateauSchedule,
    restore_callback_states,
    scale_lr,
)


def test_schedule_reduces_after_patience_bad_evaluations():
    s = PlateauSchedule(base_lr=1e-3, factor=0.5, patience=1, threshold=0.05)
    decisions = [s.update(v) for v in [1.0, 0.99, 0.90, 0.89, 0.88]]
    # 0.99 is < 5% better than 1.0 -> bad -> reduce; 0.90 is 10% better than best 1.0 -> improvement.
    assert [d.improved for d in decisions] == [True, False, True, False, False]
    assert [d.lr_reduced for d in decisions] == [False, True, False, True, True]
    assert [d.next_lr for d in decisions] == pytest.approx([1e-3, 5e-4, 5e-4, 2.5e-4, 1.25e-4])
    assert s.best == 0.90
    assert all(d.stop_reason is None for d in decisions)


def test_patience_counts_consecutive_bad_evaluations_and_resets_on_improvement():
    s = PlateauSchedule(base_lr=1.0, factor=0.1, patience=2, threshold=0.0)
    reduced = [s.update(v).lr_reduced for v in [1.0, 1.0, 0.5, 0.6, 0.7, 0.8]]
    # bad evals: 1.0(2nd) -> count 1; 0.5 improves -> reset; 0.6 -> 1; 0.7 -> 2 -> reduce; 0.8 -> 1.
    assert reduced == [False, False, False, False, True, False]
    assert s.lr == pytest.approx(0.1)


def test_users_min_lr_stop_from_seed_notes():
    # seeds/003: lr 1e-4, factor 0.5, min_lr 6e-5 -> the first reduction (5e-5) stops training.
    s = PlateauSchedule(base_lr=1e-4, factor=0.5, patience=1, threshold=0.05, min_lr=6e-5, min_val_loss=0.2)
    assert s.update(1.0).stop_reason is None
    d = s.update(0.98)
    assert d.lr_reduced and d.stop_reason is not None and "min_lr" in d.stop_reason


@pytest.mark.parametrize("base_lr", [3e-4, 1e-3, 3e-3])
def test_max_lr_reductions_stops_every_learning_rate_at_the_same_evaluation(base_lr):
    # a learning-rate grid: --min_lr would stop 3e-3 later than 3e-4; a count of reductions stops them alike
    s = PlateauSchedule(base_lr=base_lr, factor=0.5, patience=1, threshold=0.0, max_reductions=2)
    decisions = [s.update(v) for v in [1.0, 0.8, 0.9, 0.7, 0.75, 0.6]]
    assert [d.stop_reason is not None for d in decisions] == [False, False, False, False, True, True]
    assert "reduced 2 times" in decisions[4].stop_reason and s.reductions == 2
    assert s.lr == pytest.approx(base_lr / 4)
    unlimited = PlateauSchedule(base_lr=base_lr, factor=0.5, patience=1, threshold=0.0)
    assert all(unlimited.update(v).stop_reason is None for v in [1.0, 1.1, 1.2, 1.3])


def test_the_reduction_count_survives_a_checkpoint_and_is_read_from_an_old_ones_scale():
    plateau = PlateauCallback(base_lr=1e-3, factor=0.5, patience=1, max_reductions=3)
    for v in (1.0, 1.1, 1.2):
        plateau.schedule.update(v)
    restored = PlateauCallback(base_lr=1e-3, factor=0.5, patience=1, max_reductions=3)
    restored.load_state(plateau.state()["attributes"])
    assert restored.schedule.reductions == 2
    old = {
        k: v for k, v in plateau.state()["attributes"].items() if k != "reductions"
    }  # written before the count
    restored = PlateauCallback(base_lr=1e-3, factor=0.5, patience=1, max_reductions=3)
    restored.load_state(old)
    assert restored.schedule.reductions == 2 and restored.schedule.update(1.3).stop_reason is not None


def test_min_val_loss_stop_and_non_finite_val_loss():
    s = PlateauSchedule(base_lr=1e-4, min_val_loss=0.2)
    assert s.update(0.5).stop_reason is None
    assert "min_val_loss" in s.update(0.19).stop_reason
    assert "nan" in PlateauSchedule(base_lr=1e-4).update(math.nan).stop_reason


def _optimizer_and_scheduler(kind: str = "constant", warmup: int = 0):
    backbone, projector = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([{"params": [backbone], "lr": 1e-3}, {"params": [projector], "lr": 1e-2}], lr=1e-3)
    sched = get_scheduler(kind, optimizer=opt, num_warmup_steps=warmup, num_training_steps=100)
    return opt, sched


def _evaluate(cb, val_loss, opt, sched, step=1):
    state, control = TrainerState(global_step=step, epoch=float(step)), TrainerControl()
    cb.on_evaluate(
        None, state, control, metrics={"eval_loss": val_loss}, optimizer=opt, lr_scheduler=sched, model="M"
    )
    return control


@pytest.mark.parametrize("kind", ["constant", "constant_with_warmup", "linear"])
def test_callback_reduction_survives_scheduler_steps_and_keeps_group_ratio(kind):
    opt, sched = _optimizer_and_scheduler(kind, warmup=2)
    for _ in range(5):
        opt.step()
        sched.step()
    before = [g["lr"] for g in opt.param_groups]
    cb = PlateauCallback(base_lr=1e-3, factor=0.5, patience=1, threshold=0.05)
    _evaluate(cb, 1.0, opt, sched)
    _evaluate(cb, 1.0, opt, sched)  # no improvement -> halve
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([lr * 0.5 for lr in before])
    opt.step()
    sched.step()  # a LambdaLR recomputes lr from base_lrs: the reduction must still be there
    lam = sched.lr_lambdas[0](sched.last_epoch)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.5e-3 * lam, 0.5e-2 * lam])


def test_callback_stops_training_and_calls_on_best_only_on_improvement():
    opt, sched = _optimizer_and_scheduler()
    saved = []
    cb = PlateauCallback(
        base_lr=1e-3,
        factor=0.5,
        patience=1,
        min_lr=3e-4,
        on_best=lambda model, state: saved.append(state.global_step),
    )
    assert not _evaluate(cb, 1.0, opt, sched, step=1).should_training_stop
    assert not _evaluate(cb, 1.0, opt, sched, step=2).should_training_stop  # lr 5e-4
    assert not _evaluate(cb, 0.5, opt, sched, step=3).should_training_stop
    assert _evaluate(cb, 0.5, opt, sched, step=4).should_training_stop  # lr 2.5e-4 < 3e-4
    assert saved == [1, 3]


def test_callback_ignores_test_split_evaluations():
    opt, sched = _optimizer_and_scheduler()
    cb = PlateauCallback(base_lr=1e-3)
    control = TrainerControl()
    cb.on_evaluate(
        None, TrainerState(), control, metrics={"test_loss": 9.0}, optimizer=opt, lr_scheduler=sched
    )
    assert cb.last is None and cb.schedule.best == math.inf


def test_scale_lr_refuses_a_scheduler_it_cannot_steer():
    opt, _ = _optimizer_and_scheduler()
    with pytest.raises(TypeError, match="no base_lrs"):
        scale_lr(opt, object(), 0.5)


def test_history_file_and_state_restore(tmp_path):
    opt, sched = _optimizer_and_scheduler()
    plateau = PlateauCallback(base_lr=1e-3, factor=0.5, patience=1)
    history = HistoryCallback(tmp_path / "training_history.json", plateau=plateau)
    state = TrainerState(global_step=0, epoch=0.0)
    control = TrainerControl()
    for step, (train_loss, val_loss, acc) in enumerate([(0.9, 0.8, 0.6), (0.7, 0.79, 0.7)], start=1):
        state.global_step, state.epoch = step, float(step)
        state.log_history.append({"loss": train_loss, "step": step})
        metrics = {
            "eval_loss": val_loss,
            "eval_accuracy": acc,
            "eval_auc": acc + 0.1,
            "eval_acc_face_swap": 0.5,
        }
        for cb in (plateau, history):  # the order train.py registers them
            cb.on_evaluate(None, state, control, metrics=metrics, optimizer=opt, lr_scheduler=sched)
    entries = json.loads((tmp_path / "training_history.json").read_text())
    assert [e["step"] for e in entries] == [1, 2]
    assert [e["loss"] for e in entries] == [0.9, 0.7]
    assert [e["val_loss"] for e in entries] == [0.8, 0.79]
    assert entries[1]["accuracy"] == 0.7 and entries[1]["auc"] == pytest.approx(0.8)
    assert entries[1]["acc_face_swap"] == 0.5
    assert entries[1]["lr"] == 1e-3 and entries[1]["next_lr"] == 5e-4 and entries[1]["lr_reduced"] is True

    # Save as the Trainer does in checkpoint-N/trainer_state.json, restore into fresh callbacks.
    state.stateful_callbacks = {"PlateauCallback": plateau.state(), "HistoryCallback": history.state()}
    state.save_to_json(str(tmp_path / "trainer_state.json"))
    plateau2 = PlateauCallback(base_lr=1e-3, factor=0.5, patience=1)
    history2 = HistoryCallback(tmp_path / "h2.json", plateau=plateau2)
    assert sorted(restore_callback_states([plateau2, history2], tmp_path)) == [
        "HistoryCallback",
        "PlateauCallback",
    ]
    assert (plateau2.schedule.best, plateau2.schedule.scale, plateau2.schedule.bad_evals) == (0.8, 0.5, 0)
    assert history2.entries == history.entries


def test_history_writes_nan_as_null(tmp_path):
    history = HistoryCallback(tmp_path / "h.json")
    history.on_evaluate(
        None,
        TrainerState(global_step=1, epoch=1.0),
        TrainerControl(),
        metrics={"eval_loss": 0.5, "eval_auc": math.nan},
    )
    text = (tmp_path / "h.json").read_text()
    assert "NaN" not in text and json.loads(text)[0]["auc"] is None
