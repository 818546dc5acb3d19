"""Seesaw: docs/methods.md §4.6 mitigation and compensation values, p = q =
0 equivalence, counts."""

import math

import pytest
import torch
import torch.nn.functional as F

from loce.errors import CheckpointError
from loce.losses.seesaw import SeesawLoss, seesaw_loss, seesaw_loss_terms

LN2 = math.log(2.0)


def _counts(values):
    return torch.tensor(values, dtype=torch.float64)


def test_num_logits_is_k_plus_two():
    assert SeesawLoss.num_logits(3) == 5
    assert SeesawLoss(3).num_logits(1203) == 1205


def test_mitigation_hand_values_and_count_update():
    # docs/methods.md §4.6 A: K = 3, y = [1, 0], zero logits, counts [99,
    # 10, 1000] before the batch.
    module = SeesawLoss(3)
    module.cum_samples.copy_(_counts([0, 99, 10, 1000]))
    loss_cls, loss_obj = module.loss_terms(torch.zeros(2, 5), torch.tensor([1, 0]))
    # After the update N_1 = 100: S_1. = [-, (10/100)^0.8 = 0.158489, 1].
    assert loss_cls.item() == pytest.approx(math.log(1 + 0.1**0.8 + 1) / 2, abs=1e-6)
    assert loss_cls.item() == pytest.approx(0.384704, abs=1e-6)
    assert loss_obj.item() == pytest.approx(LN2, abs=1e-6)
    torch.testing.assert_close(module.cum_samples, _counts([1, 100, 10, 1000]))
    module.cum_samples.copy_(_counts([0, 99, 10, 1000]))
    total = module(torch.zeros(2, 5), torch.tensor([1, 0]))
    assert total.item() == pytest.approx(1.077851, abs=1e-6)


def test_compensation_hand_value():
    # docs/methods.md §4.6 B: p = 0, y = [1], class logits [0, 0, ln 4] -> C_13 = 4^2 = 16.
    logits = torch.tensor([[0.0, 0.0, 0.0, math.log(4.0), 0.0]])
    loss_cls, loss_obj = seesaw_loss_terms(logits, torch.tensor([1]), _counts([0, 1, 1, 1]), p=0.0)
    assert loss_cls.item() == pytest.approx(math.log(66.0), abs=1e-5)
    assert loss_cls.item() == pytest.approx(4.189655, abs=1e-5)
    plain, _ = seesaw_loss_terms(logits, torch.tensor([1]), _counts([0, 1, 1, 1]), p=0.0, q=0.0)
    assert plain.item() == pytest.approx(math.log(6.0), abs=1e-6)
    assert loss_obj.item() == pytest.approx(LN2, abs=1e-6)


def test_p_q_zero_is_softmax_ce_plus_objectness():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 6, generator=g) * 2
    labels = torch.tensor([0, 1, 4, 0, 2, 2, 3])
    counts = _counts([50, 1, 1000, 7, 3])
    loss = seesaw_loss(logits, labels, counts, p=0.0, q=0.0)
    pos = labels > 0
    ce = F.cross_entropy(logits[pos, 1:-1], labels[pos] - 1, reduction="sum") / 7
    obj = torch.stack([logits[:, -1], logits[:, 0]], dim=1)  # (o_fg, o_bg), target 1 = bg
    obj_ce = F.cross_entropy(obj, (labels == 0).long())
    torch.testing.assert_close(loss, ce + obj_ce)
    # With the published p, q the rare-class negatives of frequent positives weigh less.
    assert seesaw_loss(logits, labels, counts).item() != pytest.approx(loss.item(), abs=1e-4)


def test_no_positives_gives_only_objectness():
    loss_cls, loss_obj = seesaw_loss_terms(
        torch.zeros(3, 4), torch.zeros(3, dtype=torch.int64), _counts([3, 0, 0])
    )
    assert loss_cls.item() == 0.0
    assert loss_obj.item() == pytest.approx(LN2, abs=1e-6)


def test_scores_on_zero_logits():
    scores = SeesawLoss(3).scores(torch.zeros(1, 5))
    torch.testing.assert_close(scores, torch.tensor([[0.5, 1 / 6, 1 / 6, 1 / 6]]))


def test_eval_mode_does_not_count():
    module = SeesawLoss(2).eval()
    module(torch.zeros(2, 4), torch.tensor([1, 0]))
    assert module.cum_samples.sum().item() == 0.0


def test_state_dict_round_trip():
    first = SeesawLoss(3)
    first.cum_samples.copy_(_counts([0, 99, 10, 1000]))
    saved = first.state_dict()
    assert set(saved) == {"cum_samples"}
    resumed = SeesawLoss(3)
    resumed.load_state_dict(saved)
    assert resumed(torch.zeros(2, 5), torch.tensor([1, 0])).item() == pytest.approx(
        1.077851, abs=1e-6
    )
    with pytest.raises(CheckpointError, match=r"'cum_samples'.*\[4\].*2 foreground classes"):
        SeesawLoss(2).load_state_dict(saved)


def test_large_logits_give_finite_gradients():
    module = SeesawLoss(3)
    module.cum_samples.copy_(_counts([0, 1000, 1, 5]))
    logits = torch.tensor(
        [[1e4, -1e4, 1e4, -1e4, 1e4], [-1e4, 1e4, -1e4, 1e4, -1e4], [0.0, 1e4, 0.0, 0.0, -1e4]],
        requires_grad=True,
    )
    loss = module(logits, torch.tensor([1, 3, 0]))
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_empty_batch_is_zero_with_gradient():
    logits = torch.zeros(0, 5, requires_grad=True)
    loss = SeesawLoss(3)(logits, torch.zeros(0, dtype=torch.int64))
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad.shape == (0, 5)


def test_errors():
    with pytest.raises(ValueError, match=r"5 columns.*\[2, 4\]"):
        SeesawLoss(3)(torch.zeros(2, 4), torch.tensor([1, 0]))
    with pytest.raises(ValueError, match=r"counts must have shape \[K \+ 1\] = \[4\]"):
        seesaw_loss(torch.zeros(1, 5), torch.tensor([1]), _counts([1, 1, 1]))
    with pytest.raises(ValueError, match=r"0\.\.3.*found 4 at row 0"):
        seesaw_loss(torch.zeros(1, 5), torch.tensor([4]), _counts([1, 1, 1, 1]))
    with pytest.raises(ValueError, match="p and q"):
        SeesawLoss(3, p=-1.0)
