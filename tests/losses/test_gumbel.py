"""GOL (Gumbel + DropLoss): docs/methods.md §7.6 hand values, clamp, drop rule,
seeded draws, errors."""

import math

import pytest
import torch

from loce.losses.gumbel import GumbelLoss, gumbel_bce, gumbel_loss

# docs/methods.md §7.6: K = 3, f = [0.01, 0.0005, 0.0001], lambda = 0.001 -> T = [0, 1, 1].
FREQ = [0.01, 0.0005, 0.0001]
NEG = -math.log(1 - math.exp(-1))  # a negative at z = 0: 0.458675


def _module(**kwargs):
    return GumbelLoss(3, image_frequency=FREQ, freq_threshold=0.001, **kwargs)


def test_elementwise_costs_at_zero():
    costs = gumbel_bce(torch.zeros(2), torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(costs, torch.tensor([1.0, NEG]))
    assert NEG == pytest.approx(0.458675, abs=1e-6)


def test_no_tail_foreground_drops_every_background_tail_negative():
    # y = [1, 0]: rho = 0, so the background row keeps only class 1.
    loss = _module()(torch.zeros(2, 4), torch.tensor([1, 0]))
    assert loss.item() == pytest.approx((1 + NEG) / 2, abs=1e-6)
    assert loss.item() == pytest.approx(0.729338, abs=1e-6)


def test_tail_foreground_keeps_every_background_negative():
    # y = [2, 0]: rho = 1, nothing dropped for the background row; row 0 excludes class 3.
    loss = _module()(torch.zeros(2, 4), torch.tensor([2, 0]))
    assert loss.item() == pytest.approx((NEG + 1 + 3 * NEG) / 2, abs=1e-6)
    assert loss.item() == pytest.approx(1.417350, abs=1e-6)


def test_drop_rate_follows_rho():
    # Two foreground rows, one tail -> rho = 0.5: a background tail negative is kept iff u <= 0.5.
    tail = torch.tensor([0.0, 1.0, 1.0])
    labels = torch.tensor([1, 2, 0])
    u = torch.tensor([[0.9, 0.9, 0.1], [0.9, 0.9, 0.1], [0.9, 0.9, 0.1]])
    loss = gumbel_loss(torch.zeros(3, 4), labels, tail, u)
    # Row 0 (class 1): its positive, tail negatives 2 and 3 excluded -> 1.
    # Row 1 (class 2): non-tail negative 1 and its positive; tail negative 3 excluded.
    # Row 2 (bg): class 1 always kept; class 2 dropped (u = 0.9 > 0.5); class 3 kept (0.1).
    assert loss.item() == pytest.approx((1 + (NEG + 1) + 2 * NEG) / 3, abs=1e-6)
    # Background only: rho undefined -> nothing dropped.
    only_bg = gumbel_loss(torch.zeros(1, 4), torch.tensor([0]), tail, torch.ones(1, 3))
    assert only_bg.item() == pytest.approx(3 * NEG, abs=1e-6)


def test_clamp_gives_constant_cost_and_zero_gradient():
    logits = torch.tensor([[0.0, -5.0, 0.0, 0.0]], requires_grad=True)
    loss = _module()(logits, torch.tensor([1]))
    assert loss.item() == pytest.approx(math.exp(4), rel=1e-6)
    assert loss.item() == pytest.approx(54.598150, abs=1e-4)
    loss.backward()
    assert logits.grad.abs().sum().item() == 0.0


def test_positive_gradient_is_exact_where_phi_is_below_1e_12():
    # z = -3.5 for the positive: phi = exp(-e^3.5) = 4.2e-15, d(-ln phi)/dz = -e^3.5
    # = -33.115452 (binary_cross_entropy's backward, floored at phi (1 - phi) = 1e-12, gives
    # -0.137). The two negatives sit at z = 0; no tail class, N = 1.
    logits = torch.tensor([[0.0, -3.5, 0.0, 0.0]], requires_grad=True)
    gumbel_loss(logits, torch.tensor([1]), torch.zeros(3)).backward()
    assert logits.grad[0, 1].item() == pytest.approx(-33.115452, rel=1e-6)


def test_scores_on_zero_logits():
    scores = _module().scores(torch.zeros(1, 4))
    torch.testing.assert_close(scores, torch.tensor([[0.0] + [math.exp(-1)] * 3]))


def test_draws_repeat_with_the_seed():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(8, 4, generator=g)
    labels = torch.tensor([1, 2, 1, 0, 0, 0, 0, 0])  # rho = 1/3: drops are random
    a, b = _module(seed=5), _module(seed=5)
    losses_a = [a(logits, labels).item() for _ in range(4)]
    losses_b = [b(logits, labels).item() for _ in range(4)]
    assert losses_a == losses_b
    assert len(set(losses_a)) > 1


def test_state_dict_round_trip():
    saved = _module().state_dict()
    assert set(saved) == {"tail"}
    other = GumbelLoss(3, image_frequency=[1.0, 1.0, 1.0])
    other.load_state_dict(saved)
    assert other(torch.zeros(2, 4), torch.tensor([1, 0])).item() == pytest.approx(
        0.729338, abs=1e-6
    )


def test_large_logits_give_finite_gradients():
    logits = torch.tensor([[1e4, -1e4, 1e4, -1e4], [-1e4, 1e4, -1e4, 1e4]], requires_grad=True)
    loss = _module()(logits, torch.tensor([1, 0]))
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    scores = _module().scores(logits.detach())
    assert torch.isfinite(scores).all()


def test_empty_batch_is_zero_with_gradient():
    logits = torch.zeros(0, 4, requires_grad=True)
    loss = _module()(logits, torch.zeros(0, dtype=torch.int64))
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad.shape == (0, 4)


def test_errors():
    with pytest.raises(ValueError, match=r"uniform must have shape \[N, K\] = \[2, 3\]"):
        gumbel_loss(torch.zeros(2, 4), torch.tensor([1, 0]), torch.zeros(3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"image_frequency.*\[K\] = \[3\]"):
        GumbelLoss(3, image_frequency=[0.1])
