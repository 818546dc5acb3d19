"""Softmax cross-entropy: hand values, float32 output, large logits, empty batch, errors."""

import math

import pytest
import torch

from loce.losses.cross_entropy import CrossEntropyLoss, cross_entropy_loss

LN2 = math.log(2.0)


def test_hand_computed():
    # Row 0: z = [0, 0, ln 2], y = 2 -> softmax = [1/4, 1/4, 1/2], loss ln 2.
    # Row 1: z = [0, 0, 0],    y = 0 -> loss ln 3.
    logits = torch.tensor([[0.0, 0.0, LN2], [0.0, 0.0, 0.0]], dtype=torch.float16)
    loss = cross_entropy_loss(logits, torch.tensor([2, 0]))
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx((LN2 + math.log(3.0)) / 2, abs=1e-3)


def test_module_loss_weight_and_width():
    assert CrossEntropyLoss.num_logits(5) == 6
    module = CrossEntropyLoss(2, loss_weight=2.0)
    loss = module(torch.zeros(1, 3), torch.tensor([1]))
    assert loss.item() == pytest.approx(2 * math.log(3.0), abs=1e-6)
    torch.testing.assert_close(module.scores(torch.zeros(1, 3)), torch.full((1, 3), 1 / 3))


def test_large_logits_give_finite_gradients():
    logits = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]], requires_grad=True)
    loss = CrossEntropyLoss(2)(logits, torch.tensor([1, 0]))
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx((2e4 + 2e4 + LN2) / 2, rel=1e-6)
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_empty_batch_is_zero_with_gradient():
    logits = torch.zeros(0, 4, requires_grad=True)
    loss = CrossEntropyLoss(3)(logits, torch.zeros(0, dtype=torch.int64))
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad is not None and logits.grad.shape == (0, 4)


def test_errors_name_shapes_and_rows():
    module = CrossEntropyLoss(2)
    with pytest.raises(ValueError, match=r"3 columns.*\[2, 4\]"):
        module(torch.zeros(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"labels must have shape \[N\] = \[2\].*\[3\]"):
        module(torch.zeros(2, 3), torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match=r"0\.\.2.*found 3 at row 1"):
        module(torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="integer"):
        module(torch.zeros(2, 3), torch.tensor([0.0, 1.0]))
