"""EQL: docs/methods.md §2.6 hand values and gradients, equivalence with BCE
at lambda = 0, errors."""

import math

import pytest
import torch
import torch.nn.functional as F

from loce.errors import CheckpointError
from loce.losses.eql import EQLLoss, eql_loss, tail_classes

LN2 = math.log(2.0)
# docs/methods.md §2.6: K = 3, f = [0.01, 0.0005, 0.0001], lambda = 0.001 -> T = [0, 1, 1].
FREQ = [0.01, 0.0005, 0.0001]


def _module(threshold=0.001):
    return EQLLoss(3, image_frequency=FREQ, freq_threshold=threshold)


def test_tail_set():
    torch.testing.assert_close(tail_classes(FREQ, 0.001), torch.tensor([0.0, 1.0, 1.0]))
    torch.testing.assert_close(_module().tail, torch.tensor([0.0, 1.0, 1.0]))
    # Default lambda is the published 0.00177.
    assert EQLLoss(3, image_frequency=FREQ).freq_threshold == 0.00177


def test_hand_computed_value_and_gradient():
    logits = torch.zeros(2, 4, requires_grad=True)
    loss = _module()(logits, torch.tensor([1, 0]))
    # Row 0 (class 1): its two tail negatives are dropped -> 1 term; row 1 (bg): 3 terms.
    assert loss.item() == pytest.approx(4 * LN2 / 2, abs=1e-6)
    assert loss.item() == pytest.approx(1.386294, abs=1e-6)
    loss.backward()
    expected = torch.tensor([[0.0, -0.25, 0.0, 0.0], [0.0, 0.25, 0.25, 0.25]])
    torch.testing.assert_close(logits.grad, expected)


def test_lambda_zero_is_sigmoid_bce():
    logits = torch.zeros(2, 4)
    plain = _module(threshold=0.0)(logits, torch.tensor([1, 0]))
    assert plain.item() == pytest.approx(3 * LN2, abs=1e-6)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(6, 4, generator=g) * 3
    y = torch.tensor([0, 1, 2, 3, 0, 2])
    targets = F.one_hot(y, 4).float()[:, 1:]
    bce = F.binary_cross_entropy_with_logits(z[:, 1:], targets, reduction="sum") / 6
    torch.testing.assert_close(_module(threshold=0.0)(z, y), bce)
    # With a tail set the loss is smaller (negatives dropped), never larger.
    assert _module()(z, y).item() < bce.item()


def test_scores_on_zero_logits():
    scores = _module().scores(torch.zeros(1, 4))
    torch.testing.assert_close(scores, torch.tensor([[0.0, 0.5, 0.5, 0.5]]))


def test_large_logits_give_finite_gradients():
    logits = torch.tensor([[1e4, -1e4, 1e4, -1e4], [0.0, 1e4, -1e4, 1e4]], requires_grad=True)
    loss = _module()(logits, torch.tensor([1, 0]))
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    assert (logits.grad[:, 0] == 0).all()


def test_empty_batch_is_zero_with_gradient():
    logits = torch.zeros(0, 4, requires_grad=True)
    loss = _module()(logits, torch.zeros(0, dtype=torch.int64))
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad.shape == (0, 4)


def test_state_dict_round_trip():
    saved = _module().state_dict()
    assert set(saved) == {"tail"}
    other = EQLLoss(3, image_frequency=[1.0, 1.0, 1.0], freq_threshold=0.001)
    other.load_state_dict(saved)
    loss = other(torch.zeros(2, 4), torch.tensor([1, 0]))
    assert loss.item() == pytest.approx(2 * LN2, abs=1e-6)
    with pytest.raises(CheckpointError, match=r"'tail'.*\[3\].*2 foreground classes"):
        EQLLoss(2, image_frequency=[1.0, 1.0]).load_state_dict(saved)


def test_errors():
    with pytest.raises(ValueError, match=r"image_frequency.*\[K\] = \[3\].*\[2\]"):
        EQLLoss(3, image_frequency=[0.1, 0.2])
    with pytest.raises(ValueError, match=r"found -0.1 for class label 2"):
        EQLLoss(3, image_frequency=[0.1, -0.1, 0.2])
    with pytest.raises(ValueError, match=r"tail must have shape \[K\] = \[3\]"):
        eql_loss(torch.zeros(1, 4), torch.tensor([0]), torch.zeros(4))
    with pytest.raises(ValueError, match=r"4 columns.*\[1, 3\]"):
        _module()(torch.zeros(1, 3), torch.tensor([0]))
