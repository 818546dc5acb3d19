"""Mask and box predictors: the normed formula by hand, selected channels == all channels."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor

from loce.models.predictors import (
    CosineBoxPredictor,
    CosineLinear,
    MaskPredictor,
    NormedMaskPredictor,
)


def _tiny_normed(scale: float = 20.0) -> NormedMaskPredictor:
    """D=2 input, D'=2 after the deconvolution, C=3 classes, with hand-set weights."""
    pred = NormedMaskPredictor(2, 2, 3, scale=scale)
    with torch.no_grad():
        # Deconvolution = identity upsampling: each output pixel copies its input pixel.
        pred.conv5_mask.weight.zero_()
        pred.conv5_mask.weight[0, 0] = 1.0
        pred.conv5_mask.weight[1, 1] = 1.0
        pred.conv5_mask.bias.zero_()
        pred.mask_fcn_logits.weight.copy_(torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, -2.0]])[:, :, None, None])
        pred.mask_fcn_logits.bias.copy_(torch.tensor([0.5, -1.0, 2.0]))
    return pred


def test_normed_formula_by_hand():
    pred = _tiny_normed()
    # One RoI, a 1x1 input pixel with feature (3, 4) -> 2x2 upsampled pixels, all (3, 4).
    x = torch.tensor([3.0, 4.0]).view(1, 2, 1, 1)
    logits = pred(x)
    assert logits.shape == (1, 3, 2, 2)
    # f/|f| = (0.6, 0.8); w0/|w0| = (0.6, 0.8) -> cos 1; w1 -> (1, 0): 0.6; w2 -> (0, -1): -0.8.
    expected = torch.tensor([20 * 1.0 + 0.5, 20 * 0.6 - 1.0, 20 * -0.8 + 2.0])
    torch.testing.assert_close(logits[0, :, 0, 0], expected)
    torch.testing.assert_close(logits[0, :, 1, 1], expected)


def test_normed_scale_and_relu():
    pred = _tiny_normed(scale=5.0)
    # Negative feature components are zeroed by the ReLU after the deconvolution: (-1, 2) -> (0, 2).
    x = torch.tensor([-1.0, 2.0]).view(1, 2, 1, 1)
    logits = pred(x)[0, :, 0, 0]
    expected = torch.tensor([5 * 0.8 + 0.5, 5 * 0.0 - 1.0, 5 * -1.0 + 2.0])
    torch.testing.assert_close(logits, expected)


def test_zero_kernel_gives_bias():
    """An imported checkpoint's background row is zero: its logit is just the bias."""
    pred = _tiny_normed()
    with torch.no_grad():
        pred.mask_fcn_logits.weight[0].zero_()
    logits = pred(torch.rand(2, 2, 3, 3))
    torch.testing.assert_close(logits[:, 0], torch.full_like(logits[:, 0], 0.5))


@pytest.mark.parametrize("cls", [MaskPredictor, NormedMaskPredictor])
def test_selected_equals_full_forward_and_backward(cls):
    torch.manual_seed(0)
    pred = cls(8, 6, 11)
    x = torch.randn(5, 8, 4, 4)
    labels = torch.tensor([1, 10, 3, 3, 7])
    target = torch.rand(5, 8, 8)

    full = pred(x)
    assert full.shape == (5, 11, 8, 8)
    full_sel = full[torch.arange(5), labels]
    loss_full = F.binary_cross_entropy_with_logits(full_sel, target)
    grads_full = torch.autograd.grad(loss_full, list(pred.parameters()))

    sel = pred(x, labels)
    assert sel.shape == (5, 1, 8, 8)
    torch.testing.assert_close(sel[:, 0], full_sel, rtol=1e-5, atol=1e-5)
    loss_sel = F.binary_cross_entropy_with_logits(sel[:, 0], target)
    grads_sel = torch.autograd.grad(loss_sel, list(pred.parameters()))
    torch.testing.assert_close(loss_sel, loss_full, rtol=1e-6, atol=1e-6)
    for g_full, g_sel in zip(grads_full, grads_sel):
        torch.testing.assert_close(g_sel, g_full, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("cls", [MaskPredictor, NormedMaskPredictor])
def test_selected_inference_no_grad_and_empty(cls):
    torch.manual_seed(1)
    pred = cls(8, 6, 4).eval()
    x = torch.randn(3, 8, 2, 2)
    labels = torch.tensor([3, 1, 2])
    with torch.no_grad():
        torch.testing.assert_close(pred(x, labels)[:, 0], pred(x)[torch.arange(3), labels],
                                   rtol=1e-5, atol=1e-5)
        empty = pred(torch.zeros(0, 8, 2, 2), torch.zeros(0, dtype=torch.int64))
    assert empty.shape == (0, 1, 4, 4)
    with pytest.raises(ValueError, match=r"labels must have shape \[3\]"):
        pred(x, labels[:2])


def test_plain_predictor_matches_torchvision():
    torch.manual_seed(2)
    ours = MaskPredictor(8, 6, 5)
    stock = MaskRCNNPredictor(8, 6, 5)
    # Same parameter names, so the state dict moves over.
    ours.load_state_dict(stock.state_dict())
    x = torch.randn(2, 8, 3, 3)
    torch.testing.assert_close(ours(x), stock(x))


def test_cosine_linear_by_hand():
    layer = CosineLinear(2, 2, scale=10.0)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[2.0, 0.0], [1.0, 1.0]]))
    out = layer(torch.tensor([[0.0, 3.0]]))
    torch.testing.assert_close(out, torch.tensor([[0.0, 10.0 / math.sqrt(2.0)]]))
    pred = CosineBoxPredictor(2, 3, scale=10.0)
    logits, deltas = pred(torch.randn(4, 2, 1, 1))
    assert logits.shape == (4, 3) and deltas.shape == (4, 12)
    assert logits.abs().max() <= 10.0 + 1e-5
