"""Inference scores per method on hand examples (docs/methods.md §1.4)."""

import math

import pytest
import torch

from loce.losses.scoring import (
    gumbel_scores,
    objectness_sigmoid_scores,
    scores_from_logits,
    seesaw_scores,
    sigmoid_scores,
    softmax_scores,
)

LN2, LN3 = math.log(2.0), math.log(3.0)


def test_softmax():
    scores = softmax_scores(torch.tensor([[0.0, LN2, 0.0]], dtype=torch.float16))
    assert scores.dtype == torch.float32
    torch.testing.assert_close(scores, torch.tensor([[0.25, 0.5, 0.25]]), rtol=0, atol=1e-3)


def test_sigmoid_zeroes_the_unused_column():
    scores = sigmoid_scores(torch.tensor([[50.0, 0.0, LN3]]))
    torch.testing.assert_close(scores, torch.tensor([[0.0, 0.5, 0.75]]))


def test_objectness_product():
    # sigmoid(ln 3) = 0.75 is the background probability; classes keep 1 - 0.75 of theirs.
    logits = torch.tensor([[LN3, 0.0, LN3]])
    torch.testing.assert_close(
        objectness_sigmoid_scores(logits), torch.tensor([[0.75, 0.125, 0.1875]])
    )
    torch.testing.assert_close(
        objectness_sigmoid_scores(logits, test_with_obj=False), torch.tensor([[0.75, 0.5, 0.75]])
    )


def test_seesaw_objectness_product():
    # [o_bg | u_1, u_2 | o_fg]: softmax(u) = [1/3, 2/3]; softmax(o_fg, o_bg) = [3/4, 1/4].
    logits = torch.tensor([[0.0, 0.0, LN2, LN3]])
    expected = torch.tensor([[0.25, 0.25, 0.5]])
    torch.testing.assert_close(seesaw_scores(logits), expected)
    torch.testing.assert_close(scores_from_logits("seesaw", logits), expected)
    # A plain softmax over the K + 2 columns would give something else (docs/methods.md §4.3).
    assert not torch.allclose(torch.softmax(logits, 1)[:, :3], expected)


def test_gumbel_cdf_without_clamp():
    logits = torch.tensor([[0.0, 0.0, -LN2, 20.0, -1e4]])
    expected = torch.tensor([[0.0, math.exp(-1), math.exp(-2), math.exp(-math.exp(-20)), 0.0]])
    torch.testing.assert_close(gumbel_scores(logits), expected)


@pytest.mark.parametrize(
    ("method", "row"),
    [
        ("cross_entropy", [0.25, 0.25, 0.25, 0.25]),
        ("equilibrium", [0.25, 0.25, 0.25, 0.25]),
        ("eql", [0.0, 0.5, 0.5, 0.5]),
        ("federated", [0.0, 0.5, 0.5, 0.5]),
        ("eqlv2", [0.5, 0.25, 0.25, 0.25]),
        ("ecm", [0.5, 0.25, 0.25, 0.25]),
        ("gumbel", [0.0] + [math.exp(-1)] * 3),
    ],
)
def test_dispatch_on_zero_logits(method, row):
    torch.testing.assert_close(
        scores_from_logits(method, torch.zeros(2, 4)), torch.tensor([row] * 2)
    )


def test_empty_and_errors():
    assert scores_from_logits("eqlv2", torch.zeros(0, 4)).shape == (0, 4)
    assert seesaw_scores(torch.zeros(0, 5)).shape == (0, 4)
    with pytest.raises(
        ValueError, match="unknown classification loss 'bags'; valid: cross_entropy"
    ):
        scores_from_logits("bags", torch.zeros(1, 4))
    with pytest.raises(ValueError, match=r"C' >= 3, got shape \[1, 2\]"):
        seesaw_scores(torch.zeros(1, 2))
    with pytest.raises(ValueError, match=r"got shape \[4\]"):
        softmax_scores(torch.zeros(4))
