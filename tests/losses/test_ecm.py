"""ECM: docs/methods.md §6.6 constants and value, LVIS-scale constants, margin form, errors."""

import math

import pytest
import torch
import torch.nn.functional as F

from loce.losses.ecm import ECMLoss, ecm_constants, ecm_loss

LN2 = math.log(2.0)


def test_hand_computed_constants_and_loss():
    # docs/methods.md §6.6: K = 1, n_1 = 1, rho = 16 -> n_0 = 16, total 17.
    module = ECMLoss(1, instance_counts=[1], fg_bg_ratio=16.0)
    torch.testing.assert_close(module.delta, torch.tensor([LN2, -LN2]))
    torch.testing.assert_close(
        module.omega, torch.tensor([math.log(17) / 16, 16 * math.log(17 / 16)])
    )
    torch.testing.assert_close(module.omega, torch.tensor([0.177076, 0.969994]), rtol=0, atol=1e-6)
    logits = torch.zeros(1, 2, requires_grad=True)
    loss = module(logits, torch.tensor([1]))
    # Both columns cost BCE(-/+ ln 2, 1/0) = ln 3.
    assert loss.item() == pytest.approx((0.969994 + 0.177076) * math.log(3.0), abs=1e-6)
    assert loss.item() == pytest.approx(1.260185, abs=1e-6)
    loss.backward()
    # d/dz of w * BCE(2z + d, t) = 2w (sigmoid(2z + d) - t): column 0 sigmoid(ln 2) = 2/3.
    expected = torch.tensor([[2 * 0.177076 * (2 / 3), 2 * 0.969994 * (1 / 3 - 1)]])
    torch.testing.assert_close(logits.grad, expected, rtol=0, atol=1e-6)


def test_lvis_scale_constants():
    # docs/methods.md §6.1 table: a class with 109 of LVIS v1's 1,270,141 instances, rho = 6.3313.
    delta, omega = ecm_constants([109.0, 1270141.0 - 109.0])
    assert delta[1].item() == pytest.approx(-2.839, abs=1e-3)
    assert delta[0].item() == pytest.approx(0.461, abs=1e-3)
    assert omega[0].item() == pytest.approx(0.3147, abs=1e-4)
    assert omega[1].item() == pytest.approx(1.0, abs=1e-4)


def test_equals_weighted_bce_on_margin_logits():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(6, 4, generator=g)
    y = torch.tensor([0, 1, 2, 3, 0, 0])
    delta, omega = ecm_constants([5.0, 50.0, 500.0])
    t = F.one_hot(y, 4).float()
    bce = F.binary_cross_entropy_with_logits(
        2 * z + delta.float(), t, weight=omega.float().expand(6, 4), reduction="sum"
    )
    torch.testing.assert_close(ecm_loss(z, y, delta, omega), bce / 6)


def test_zero_counts_are_raised_to_one():
    delta, omega = ecm_constants([0.0, 4.0])
    same_delta, same_omega = ecm_constants([1.0, 4.0])
    torch.testing.assert_close(delta, same_delta)
    assert torch.isfinite(omega).all()


def test_scores_ignore_the_margin():
    module = ECMLoss(1, instance_counts=[1], fg_bg_ratio=16.0)
    torch.testing.assert_close(module.scores(torch.zeros(1, 2)), torch.tensor([[0.5, 0.25]]))


def test_state_dict_round_trip():
    saved = ECMLoss(1, instance_counts=[1], fg_bg_ratio=16.0).state_dict()
    assert set(saved) == {"delta", "omega"}
    other = ECMLoss(1, instance_counts=[1000])
    other.load_state_dict(saved)
    assert other(torch.zeros(1, 2), torch.tensor([1])).item() == pytest.approx(1.260185, abs=1e-6)


def test_large_logits_give_finite_gradients_in_half_precision():
    module = ECMLoss(2, instance_counts=[3, 3000])
    logits = torch.tensor([[1e4, -1e4, 1e4], [-1e4, 1e4, -1e4]], dtype=torch.float16)
    logits.requires_grad_(True)
    loss = module(logits, torch.tensor([1, 0]))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_empty_batch_is_zero_with_gradient():
    logits = torch.zeros(0, 3, requires_grad=True)
    loss = ECMLoss(2, instance_counts=[3, 30])(logits, torch.zeros(0, dtype=torch.int64))
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad.shape == (0, 3)


def test_errors():
    with pytest.raises(ValueError, match=r"instance_counts.*\[K\] = \[2\].*\[3\]"):
        ECMLoss(2, instance_counts=[1, 2, 3])
    with pytest.raises(ValueError, match="fg_bg_ratio"):
        ECMLoss(2, instance_counts=[1, 2], fg_bg_ratio=0.0)
    with pytest.raises(ValueError, match=r"omega must have shape \[K \+ 1\] = \[3\]"):
        ecm_loss(torch.zeros(1, 3), torch.tensor([0]), torch.zeros(3), torch.zeros(2))
