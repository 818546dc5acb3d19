"""Learning-rate schedule (LambdaLR) and the linear scaling rule: hand-computed values."""

import pytest
import torch

from loce.config import load_config
from loce.engine.schedule import (
    WarmupStepFactor,
    apply_auto_scale_lr,
    build_lr_scheduler,
    load_scheduler_state,
    scaled_lr,
    step_milestones,
)
from loce.errors import CheckpointError


def _solver(**kw):
    cfg = load_config(None, [f"solver.{k}={v}" for k, v in kw.items()])
    return cfg.solver


def _optimizer(lr=0.02):
    return torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)


def _rates(scheduler, n):
    """The rate each of the first ``n`` iterations runs at."""
    out = []
    for _ in range(n):
        out.append(scheduler.optimizer.param_groups[0]["lr"])
        scheduler.optimizer.step()
        scheduler.step()
    return out


def test_warmup_is_linear_from_ratio():
    f = WarmupStepFactor([], 0.1, 500, 0.001)
    assert f(0) == pytest.approx(0.001)
    assert f(250) == pytest.approx(0.001 + 0.999 * 0.5)
    assert f(499) == pytest.approx(0.001 + 0.999 * 499 / 500)
    assert f(500) == 1.0
    assert WarmupStepFactor([], 0.1, 0, 0.001)(0) == 1.0


def test_steps_decay_from_the_first_iteration_of_the_next_epoch():
    # epochs of 10, 12 and 11 iterations; steps after epochs 1 and 2
    assert step_milestones([1, 2], [10, 12, 11]) == [10, 22]
    f = WarmupStepFactor([10, 22], 0.1, 0, 0.001)
    assert [f(i) for i in (9, 10, 21, 22, 32)] == pytest.approx([1, 0.1, 0.1, 0.01, 0.01])


def test_warmup_and_decay_multiply_where_they_overlap():
    f = WarmupStepFactor([2], 0.5, 4, 0.2)
    # iteration 3: warmup 0.2 + 0.8 * 3 / 4 = 0.8, one decay: 0.4
    assert f(3) == pytest.approx(0.4)


def test_scheduler_sets_the_rate_of_every_iteration():
    opt = _optimizer()
    sched = build_lr_scheduler(opt, _solver(lr=0.02, epochs=3, steps="[1,2]", gamma=0.1,
                                            warmup_iters=4, warmup_ratio=0.25), [3, 3, 3])
    expected = [0.02 * (0.25 + 0.75 * i / 4) for i in range(3)]  # epoch 1: warmup
    expected += [0.002 * (0.25 + 0.75 * 3 / 4), 0.002, 0.002]    # epoch 2: decayed once
    expected += [0.0002] * 3                                     # epoch 3: twice
    assert _rates(sched, 9) == pytest.approx(expected)


def test_state_round_trip_continues_exactly():
    solver = _solver(lr=0.02, epochs=2, steps="[1]", warmup_iters=3, warmup_ratio=0.1)
    ref = build_lr_scheduler(_optimizer(), solver, [4, 4])
    reference = _rates(ref, 8)
    first = build_lr_scheduler(_optimizer(), solver, [4, 4])
    _rates(first, 5)
    state, opt_state = first.state_dict(), first.optimizer.state_dict()
    assert set(state["lr_lambdas"][0]) == {"milestones", "gamma", "warmup_iters", "warmup_ratio"}
    again = build_lr_scheduler(_optimizer(), solver, [4, 4])
    again.optimizer.load_state_dict(opt_state)
    load_scheduler_state(again, state, 5, solver, "x.pth")
    assert _rates(again, 3) == reference[5:]


def test_old_checkpoint_schedule_resumes_and_the_config_wins():
    solver = _solver(lr=0.02, epochs=2, steps="[1]", warmup_iters=3, warmup_ratio=0.1)
    reference = _rates(build_lr_scheduler(_optimizer(), solver, [4, 4]), 8)
    legacy = {"base_lr": 0.02, "steps": [1], "gamma": 0.1, "warmup_iters": 3,
              "warmup_ratio": 0.1, "last_lr": 0.02}
    sched = build_lr_scheduler(_optimizer(), solver, [4, 4])
    assert load_scheduler_state(sched, legacy, 2, solver, "old.pth") == []
    assert _rates(sched, 6) == pytest.approx(reference[2:])
    # A schedule that differs from the config's: the config's goes on from iteration 2, and
    # the notes say what changed.
    lower = _solver(lr=0.01, epochs=2, steps="[1]", warmup_iters=3, warmup_ratio=0.1)
    sched = build_lr_scheduler(_optimizer(lr=0.01), lower, [4, 4])
    notes = load_scheduler_state(sched, {**legacy, "gamma": 0.5}, 2, lower, "old.pth")
    assert any("solver.lr is 0.01 now, 0.02 in old.pth" in n for n in notes)
    assert any("gamma" in n for n in notes)
    assert _rates(sched, 6) == pytest.approx([r / 2 for r in reference[2:]])
    with pytest.raises(CheckpointError, match="not a learning-rate schedule"):
        load_scheduler_state(sched, {"foo": 1}, 2, solver, "old.pth")


def test_current_checkpoint_schedule_takes_the_configs_rate():
    solver = _solver(lr=0.02, epochs=2, steps="[1]", warmup_iters=3, warmup_ratio=0.1)
    first = build_lr_scheduler(_optimizer(), solver, [4, 4])
    reference = _rates(build_lr_scheduler(_optimizer(), solver, [4, 4]), 8)
    _rates(first, 3)
    saved = first.state_dict()
    same = build_lr_scheduler(_optimizer(), solver, [4, 4])
    assert load_scheduler_state(same, saved, 3, solver, "a.pth") == []
    assert _rates(same, 5) == pytest.approx(reference[3:])
    lower = _solver(lr=0.002, epochs=2, steps="[1]", warmup_iters=3, warmup_ratio=0.1)
    resumed = build_lr_scheduler(_optimizer(lr=0.002), lower, [4, 4])
    notes = load_scheduler_state(resumed, saved, 3, lower, "a.pth")
    assert notes and "continuing with 0.002" in notes[0]
    assert _rates(resumed, 5) == pytest.approx([r / 10 for r in reference[3:]])


def test_linear_scaling_rule_by_hand():
    # LVIS recipe: 0.02 for 16 images; 1 GPU x 2 images -> 0.0025, 4 GPUs x 2 -> 0.01
    assert scaled_lr(0.02, 16, 1, 2) == pytest.approx(0.0025)
    assert scaled_lr(0.02, 16, 4, 2) == pytest.approx(0.01)
    assert scaled_lr(0.02, 16, 8, 2) == pytest.approx(0.02)


def test_auto_scale_lr_is_off_by_default_and_idempotent():
    cfg = load_config(None)
    assert apply_auto_scale_lr(cfg, 4) is cfg and cfg.solver.lr == 0.02
    on = load_config(None, ["solver.auto_scale_lr=true"])
    scaled = apply_auto_scale_lr(on, 4)  # 4 processes x 2 images of the reference 16
    assert scaled.solver.lr == pytest.approx(0.01) and scaled.solver.lr_scaled_from == 0.02
    assert apply_auto_scale_lr(scaled, 4).solver.lr == pytest.approx(0.01)
    assert apply_auto_scale_lr(scaled, 1).solver.lr == pytest.approx(0.0025)
    synth = load_config("mask_rcnn_r18_fpn_normed_mask_synthetic", ["solver.auto_scale_lr=true"])
    assert synth.solver.reference_batch == 4
    assert apply_auto_scale_lr(synth, 2).solver.lr == pytest.approx(0.04)
