"""Federated loss: docs/methods.md §5.6 subset and values, small K, seeded draws, errors."""

import math

import pytest
import torch

from loce.losses.federated import FederatedLoss, federated_loss, sample_federated_classes

LN2 = math.log(2.0)
# docs/methods.md §5.6: K = 5 and only class 4 has a positive weight; with beta = 0.5 an image
# count of 9 gives w = 3.
COUNTS = [0, 0, 0, 9, 0]
LABELS = [2, 2, 0]


def _module(num_sampled=3, **kwargs):
    return FederatedLoss(5, image_counts=COUNTS, num_sampled=num_sampled, **kwargs)


def test_weights_are_square_root_of_image_counts():
    torch.testing.assert_close(_module().class_weights, torch.tensor([0.0, 0.0, 0.0, 3.0, 0.0]))


def test_subset_value_and_gradient():
    module = _module()
    mask = module.sample_classes(torch.tensor(LABELS))
    # U = {0, 2}: one extra class, the only one with weight -> F = {2, 4}.
    assert torch.nonzero(mask).flatten().tolist() == [2, 4]
    logits = torch.zeros(3, 6, requires_grad=True)
    loss = module(logits, torch.tensor(LABELS))
    assert loss.item() == pytest.approx(2 * LN2, abs=1e-6)
    loss.backward()
    assert (logits.grad[:, [0, 1, 3, 5]] == 0).all()
    assert (logits.grad[:, [2, 4]] != 0).all()
    # Without the subset (all classes): 5 ln 2.
    full = federated_loss(torch.zeros(3, 6), torch.tensor(LABELS), torch.ones(6, dtype=torch.bool))
    assert full.item() == pytest.approx(5 * LN2, abs=1e-6)


def test_no_sampling_when_the_batch_fills_the_slots():
    module = _module(num_sampled=2)
    assert torch.nonzero(module.sample_classes(torch.tensor(LABELS))).flatten().tolist() == [2]
    assert module(torch.zeros(3, 6), torch.tensor(LABELS)).item() == pytest.approx(LN2, abs=1e-6)


def test_more_slots_than_classes_does_not_crash():
    module = _module(num_sampled=50)
    assert torch.nonzero(module.sample_classes(torch.tensor(LABELS))).flatten().tolist() == [2, 4]


def test_draws_follow_the_weights_and_repeat_with_the_seed():
    counts = [1.0, 1.0, 1e6, 1.0, 1.0, 1.0]  # class 3 dominates the draw
    labels = torch.tensor([1, 0])
    masks = [
        sample_federated_classes(labels, torch.tensor(counts), 3, torch.Generator().manual_seed(s))
        for s in range(20)
    ]
    assert all(bool(m[1]) and bool(m[3]) and int(m.sum()) == 2 for m in masks)
    a = FederatedLoss(6, image_counts=[1.0] * 6, num_sampled=4, seed=7)
    b = FederatedLoss(6, image_counts=[1.0] * 6, num_sampled=4, seed=7)
    draws_a = [a.sample_classes(labels) for _ in range(5)]
    draws_b = [b.sample_classes(labels) for _ in range(5)]
    assert all(torch.equal(x, y) for x, y in zip(draws_a, draws_b, strict=True))
    assert len({tuple(m.tolist()) for m in draws_a}) > 1


def test_scores_on_zero_logits():
    torch.testing.assert_close(
        _module().scores(torch.zeros(1, 6)), torch.tensor([[0.0] + [0.5] * 5])
    )


def test_state_dict_round_trip():
    saved = _module().state_dict()
    assert set(saved) == {"class_weights"}
    other = FederatedLoss(5, image_counts=[1.0] * 5, num_sampled=3)
    other.load_state_dict(saved)
    assert other(torch.zeros(3, 6), torch.tensor(LABELS)).item() == pytest.approx(2 * LN2, abs=1e-6)


def test_large_logits_give_finite_gradients():
    logits = torch.full((3, 6), 1e4)
    logits[1] = -1e4
    logits.requires_grad_(True)
    loss = _module()(logits, torch.tensor(LABELS))
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_empty_batch_is_zero_with_gradient():
    logits = torch.zeros(0, 6, requires_grad=True)
    loss = _module()(logits, torch.zeros(0, dtype=torch.int64))
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad.shape == (0, 6)


def test_errors():
    with pytest.raises(ValueError, match=r"image_counts.*\[K\] = \[5\].*\[4\]"):
        FederatedLoss(5, image_counts=[1, 1, 1, 1])
    with pytest.raises(ValueError, match="num_sampled"):
        FederatedLoss(5, image_counts=COUNTS, num_sampled=0)
    with pytest.raises(ValueError, match=r"class_mask must have shape \[K \+ 1\] = \[6\]"):
        federated_loss(torch.zeros(1, 6), torch.tensor([0]), torch.ones(5, dtype=torch.bool))


def test_equals_the_masked_sum_over_all_classes():
    """Only the selected columns are computed; value and gradient equal the dense definition
    L = (1/N) sum_i sum_c m_c BCE(z_ic, t_ic) on random logits."""
    g = torch.Generator().manual_seed(3)
    n, k = 9, 20
    logits = (4 * torch.randn(n, k + 1, generator=g)).requires_grad_(True)
    labels = torch.randint(0, k + 1, (n,), generator=g)
    mask = torch.rand(k + 1, generator=g) < 0.4
    mask[0] = True  # ignored: column 0 is never trained
    target = torch.nn.functional.one_hot(labels, k + 1).float()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    dense = (bce[:, 1:] * mask[None, 1:].float()).sum() / n
    (grad_dense,) = torch.autograd.grad(dense, logits)
    loss = federated_loss(logits, labels, mask)
    (grad,) = torch.autograd.grad(loss, logits)
    torch.testing.assert_close(loss, dense)
    torch.testing.assert_close(grad, grad_dense)
    assert (grad[:, 0] == 0).all() and (grad[:, 1:][:, ~mask[1:]] == 0).all()
