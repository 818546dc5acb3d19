"""Equilibrium Loss: equivalence with cross-entropy, hand-computed values, gradient, errors."""

import math

import pytest
import torch
import torch.nn.functional as F

from loce.losses import EquilibriumLoss, equilibrium_loss

# A 2 x 3 example (background at column 0) worked out by hand:
#   s = [0.5, 0.25, 0.25]
#   row 0: z = [0, 0, ln 2], y = 2 -> s * exp(z) = [0.5, 0.25, 0.5], p~ = [0.4, 0.2, 0.4]
#          loss = -ln 0.4 = ln 2.5
#   row 1: z = [ln 2, 0, 0], y = 0 -> s * exp(z) = [1, 0.25, 0.25], p~ = [2/3, 1/6, 1/6]
#          loss = -ln(2/3) = ln 1.5
#   mean = (ln 2.5 + ln 1.5) / 2 = ln(3.75) / 2 = 0.66087...
LN2 = math.log(2.0)
LOGITS = [[0.0, 0.0, LN2], [LN2, 0.0, 0.0]]
LABELS = [2, 0]
SCORES = [0.5, 0.25, 0.25]
P_TILDE = [[0.4, 0.2, 0.4], [2 / 3, 1 / 6, 1 / 6]]


def _example(requires_grad=False):
    logits = torch.tensor(LOGITS, dtype=torch.float64, requires_grad=requires_grad)
    return logits, torch.tensor(LABELS), torch.tensor(SCORES, dtype=torch.float64)


def test_uniform_scores_equal_cross_entropy():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 5, generator=g) * 3
    labels = torch.randint(0, 5, (7,), generator=g)
    for value in (0.01, 0.3, 1.0):
        scores = torch.full((5,), value)
        loss = equilibrium_loss(logits, labels, scores)
        torch.testing.assert_close(loss, F.cross_entropy(logits, labels), rtol=0, atol=1e-6)


def test_hand_computed_two_by_three():
    logits, labels, scores = _example()
    loss = equilibrium_loss(logits, labels, scores)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(math.log(3.75) / 2, abs=1e-6)
    assert loss.item() == pytest.approx(0.6608779, abs=1e-6)
    per_row = equilibrium_loss(logits, labels, scores, reduction="none")
    torch.testing.assert_close(per_row, torch.tensor([math.log(2.5), math.log(1.5)]))
    total = equilibrium_loss(logits, labels, scores, reduction="sum")
    assert total.item() == pytest.approx(math.log(3.75), abs=1e-6)


def test_gradient_is_adjusted_softmax_minus_onehot():
    logits, labels, scores = _example(requires_grad=True)
    equilibrium_loss(logits, labels, scores).backward()
    expected = (torch.tensor(P_TILDE, dtype=torch.float64) - F.one_hot(labels, 3)) / 2
    torch.testing.assert_close(logits.grad, expected, rtol=0, atol=1e-6)


def test_scores_shift_the_margin_against_strong_classes():
    # A weak foreground class (s = 0.01) against a strong one (s = 0.5): its own rows cost more
    # than under plain cross-entropy, by the log-ratio margin of docs/method.md §3.
    logits = torch.zeros(1, 3)
    scores = torch.tensor([0.01, 0.01, 0.5])
    loss = equilibrium_loss(logits, torch.tensor([1]), scores)
    assert loss.item() == pytest.approx(-math.log(0.01 / 0.52), abs=1e-6)
    assert loss.item() > F.cross_entropy(logits, torch.tensor([1])).item()


def test_large_logits_are_finite():
    logits = torch.tensor([[1e4, -1e4, 0.0], [0.0, 1e4, 1e4]], requires_grad=True)
    scores = torch.tensor([0.01, 1e-6, 0.9])
    per_row = equilibrium_loss(logits, torch.tensor([1, 2]), scores, reduction="none")
    assert torch.isfinite(per_row).all()
    # Row 0: the label's adjusted logit trails the top one by 2e4 + ln(0.01 / 1e-6).
    assert per_row[0].item() == pytest.approx(2e4 + math.log(0.01 / 1e-6), rel=1e-6)
    # Row 1: classes 1 and 2 tie on logits; p~_2 = 0.9 / (1e-6 + 0.9).
    assert per_row[1].item() == pytest.approx(-math.log(0.9 / (0.9 + 1e-6)), abs=1e-6)
    per_row.mean().backward()
    assert torch.isfinite(logits.grad).all()


def test_weight_mean_divides_by_row_count():
    logits, labels, scores = _example()
    weighted = equilibrium_loss(logits, labels, scores, weight=torch.tensor([2.0, 0.0]))
    # (2 * ln 2.5 + 0 * ln 1.5) / N with N = 2 rows, not / sum(weight).
    assert weighted.item() == pytest.approx(math.log(2.5), abs=1e-6)
    ones = equilibrium_loss(logits, labels, scores, weight=torch.ones(2))
    torch.testing.assert_close(ones, equilibrium_loss(logits, labels, scores))


def test_half_precision_inputs_are_computed_in_float32():
    logits, labels, scores = _example()
    for dtype in (torch.float16, torch.bfloat16):
        low = logits.to(dtype).requires_grad_()
        loss = equilibrium_loss(low, labels, scores.to(dtype))
        assert loss.dtype == torch.float32
        expected = equilibrium_loss(low.detach().float(), labels, scores.to(dtype).float())
        torch.testing.assert_close(loss, expected)
        loss.backward()
        assert low.grad.dtype == dtype


def test_empty_batch_gives_zero_loss_connected_to_logits():
    logits = torch.zeros(0, 4, requires_grad=True)
    loss = equilibrium_loss(logits, torch.zeros(0, dtype=torch.int64), torch.full((4,), 0.01))
    assert loss.item() == 0.0
    assert loss.grad_fn is not None
    loss.backward()
    assert logits.grad is not None and logits.grad.shape == (0, 4)
    none = equilibrium_loss(
        logits, torch.zeros(0, dtype=torch.int64), torch.ones(4), reduction="none"
    )
    assert none.shape == (0,)


def test_no_gradient_flows_into_scores():
    logits, labels, _ = _example(requires_grad=True)
    scores = torch.tensor(SCORES, requires_grad=True)
    equilibrium_loss(logits, labels, scores).backward()
    assert scores.grad is None
    assert logits.grad is not None


def test_module_matches_function_and_scales():
    logits, labels, scores = _example()
    module = EquilibriumLoss(loss_weight=2.0)
    torch.testing.assert_close(
        module(logits, labels, scores), 2 * equilibrium_loss(logits, labels, scores)
    )
    assert "loss_weight=2.0" in repr(module)
    assert list(module.state_dict()) == []


@pytest.mark.parametrize(
    ("logits", "labels", "scores", "weight", "message"),
    [
        (
            torch.zeros(2, 3, 1),
            torch.zeros(2, dtype=torch.int64),
            torch.ones(3),
            None,
            r"logits must have shape \[N, C\], got shape \[2, 3, 1\]",
        ),
        (
            torch.zeros(2, 3),
            torch.zeros(3, dtype=torch.int64),
            torch.ones(3),
            None,
            r"labels must have shape \[N\] = \[2\].*got shape \[3\]",
        ),
        (
            torch.zeros(2, 3),
            torch.zeros(2),
            torch.ones(3),
            None,
            r"labels must be an integer tensor",
        ),
        (
            torch.zeros(2, 3),
            torch.zeros(2, dtype=torch.int64),
            torch.ones(4),
            None,
            r"mean_scores must have shape \[C\] = \[3\].*got shape \[4\]",
        ),
        (
            torch.zeros(2, 3),
            torch.zeros(2, dtype=torch.int64),
            torch.ones(3),
            torch.ones(3),
            r"weight must have shape \[N\] = \[2\].*got shape \[3\]",
        ),
        (
            torch.zeros(2, 3),
            torch.tensor([0, 3]),
            torch.ones(3),
            None,
            r"labels must lie in 0..2.*found 3 at row 1",
        ),
        (torch.zeros(2, 3), torch.tensor([-1, 0]), torch.ones(3), None, r"found -1 at row 0"),
        (
            torch.zeros(2, 3),
            torch.tensor([0, 1]),
            torch.tensor([0.1, 0.0, 0.2]),
            None,
            r"mean_scores must be finite and > 0.*class index 1",
        ),
        (
            torch.zeros(2, 3),
            torch.tensor([0, 1]),
            torch.tensor([0.1, 0.2, float("nan")]),
            None,
            r"class index 2",
        ),
    ],
)
def test_errors_name_the_argument_and_shape(logits, labels, scores, weight, message):
    with pytest.raises(ValueError, match=message):
        equilibrium_loss(logits, labels, scores, weight)


def test_unknown_reduction_lists_valid_ones():
    logits, labels, scores = _example()
    with pytest.raises(ValueError, match=r"\['mean', 'sum', 'none'\].*'avg'"):
        equilibrium_loss(logits, labels, scores, reduction="avg")
    with pytest.raises(ValueError, match="reduction must be one of"):
        EquilibriumLoss(reduction="avg")
