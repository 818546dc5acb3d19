"""Learning-rate schedule: hand-computed warmup and step values."""

import pytest
import torch

from loce.engine.schedule import WarmupStepSchedule


def _schedule(**kw):
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    return opt, WarmupStepSchedule(opt, 0.02, [16, 22], 0.1, 500, 0.001, **kw)


def test_warmup_is_linear_from_ratio():
    _, s = _schedule()
    assert s.lr_at(0, 0) == pytest.approx(0.02 * 0.001)
    assert s.lr_at(250, 0) == pytest.approx(0.02 * (0.001 + 0.999 * 0.5))
    assert s.lr_at(499, 0) == pytest.approx(0.02 * (0.001 + 0.999 * 499 / 500))
    assert s.lr_at(500, 0) == pytest.approx(0.02)


def test_steps_decay_after_the_named_epochs():
    _, s = _schedule()
    assert s.lr_at(10_000, 15) == pytest.approx(0.02)  # 16th epoch (0-based 15)
    assert s.lr_at(10_000, 16) == pytest.approx(0.002)  # from the 17th epoch
    assert s.lr_at(10_000, 21) == pytest.approx(0.002)
    assert s.lr_at(10_000, 22) == pytest.approx(0.0002)


def test_step_sets_every_group_and_state_round_trips():
    opt, s = _schedule()
    assert s.step(100, 0) == pytest.approx(opt.param_groups[0]["lr"])
    state = s.state_dict()
    _, other = _schedule()
    other.load_state_dict({**state, "base_lr": 0.01})
    assert other.lr_at(10_000, 0) == pytest.approx(0.01)
    assert other.last_lr == pytest.approx(s.last_lr)
