"""Parity components: anchors, RoIAlign, mask paste, mask targets, BN, losses."""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import paste_masks_in_image, project_masks_on_boxes
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.ops import MultiScaleRoIAlign, roi_align

from loce.models.mmdet_compat import (
    FrozenStatsBatchNorm2d,
    MMDetAnchorGenerator,
    MMDetMultiScaleRoIAlign,
    ParityRPN,
    box_regression_loss_sum,
    paste_masks_grid_sample,
    project_masks_aligned,
)

STRIDES = (4, 8, 16, 32, 64)


def _pyramid_shapes(h: int, w: int) -> list[tuple[int, int]]:
    """FPN map sizes of a padded h x w input: P2..P5 by stride, P6 = ceil(P5 / 2)."""
    shapes = [(h // s, w // s) for s in STRIDES[:4]]
    p5 = shapes[-1]
    return shapes + [(math.ceil(p5[0] / 2), math.ceil(p5[1] / 2))]


def _anchor_steps(generator, h: int, w: int) -> list[tuple[float, float]]:
    shapes = _pyramid_shapes(h, w)
    feats = [torch.zeros(1, 1, fh, fw) for fh, fw in shapes]
    anchors = generator(ImageList(torch.zeros(1, 3, h, w), [(h, w)]), feats)[0]
    steps = []
    start = 0
    for fh, fw in shapes:
        level = anchors[start : start + fh * fw * 3].reshape(fh, fw, 3, 4)
        start += fh * fw * 3
        cx = (level[..., 0] + level[..., 2]) / 2
        cy = (level[..., 1] + level[..., 3]) / 2
        steps.append((float(cy[1, 0, 0] - cy[0, 0, 0]), float(cx[0, 1, 0] - cx[0, 0, 0])))
    assert start == anchors.shape[0]
    return steps


def test_anchor_strides_fixed_on_800_side():
    ours = MMDetAnchorGenerator(STRIDES, (8.0,), (0.5, 1.0, 2.0))
    stock = AnchorGenerator(tuple((s * 8,) for s in STRIDES), ((0.5, 1.0, 2.0),) * 5)
    steps = _anchor_steps(ours, 800, 1088)
    assert steps == [(float(s), float(s)) for s in STRIDES]
    stock_steps = _anchor_steps(stock, 800, 1088)
    assert stock_steps[:4] == [(float(s), float(s)) for s in STRIDES[:4]]
    assert stock_steps[4] == (61.0, 64.0)  # 800 // 13 = 61 on the height


def _reference_anchors(h: int, w: int) -> torch.Tensor:
    """Grid anchors written from the original's rule: centre (x * stride, y * stride), base
    anchors +-0.5 * stride * scale * (1/sqrt(r), sqrt(r)), ratio-major, x fastest."""
    out = []
    for stride, (fh, fw) in zip(STRIDES, _pyramid_shapes(h, w)):
        base = []
        for r in (0.5, 1.0, 2.0):
            hr = torch.tensor(r).sqrt()
            ws, hs = stride * (1 / hr) * 8.0, stride * hr * 8.0
            base.append(torch.stack([-0.5 * ws, -0.5 * hs, 0.5 * ws, 0.5 * hs]))
        base = torch.stack(base)
        for y in range(fh):
            ys = torch.full((fw,), float(y * stride))
            xs = torch.arange(fw, dtype=torch.float32) * stride
            shifts = torch.stack([xs, ys, xs, ys], 1)
            out.append((shifts[:, None, :] + base[None]).reshape(-1, 4))
    return torch.cat(out)


@pytest.mark.parametrize("size", [(800, 1088), (1088, 800), (800, 800), (768, 1344), (1344, 800)])
def test_anchors_equal_reference(size):
    h, w = size
    ours = MMDetAnchorGenerator()
    feats = [torch.zeros(1, 1, fh, fw) for fh, fw in _pyramid_shapes(h, w)]
    images = ImageList(torch.zeros(2, 3, h, w), [(h, w), (h - 10, w - 20)])
    anchors = ours(images, feats)
    assert len(anchors) == 2
    expected = _reference_anchors(h, w)
    torch.testing.assert_close(anchors[0], expected, rtol=0, atol=0)
    torch.testing.assert_close(anchors[1], expected, rtol=0, atol=0)


def test_base_anchors_unrounded():
    base = MMDetAnchorGenerator.base_anchors(4, (8.0,), (0.5, 1.0, 2.0))
    half_w = 0.5 * 4 * 8 / math.sqrt(0.5)  # ratio h/w = 0.5: wider than tall
    half_h = 0.5 * 4 * 8 * math.sqrt(0.5)
    torch.testing.assert_close(base[0], torch.tensor([-half_w, -half_h, half_w, half_h]))
    torch.testing.assert_close(base[1], torch.tensor([-16.0, -16.0, 16.0, 16.0]))
    stock = AnchorGenerator(((32,),), ((0.5, 1.0, 2.0),)).cell_anchors[0]
    assert stock[0, 2].item() == 23.0 and abs(base[0, 2].item() - 22.627) < 1e-3


def _features(seed: int = 0, h: int = 128, w: int = 160):
    g = torch.Generator().manual_seed(seed)
    return OrderedDict(
        (name, torch.randn(2, 3, h // s, w // s, generator=g))
        for name, s in (("0", 4), ("1", 8), ("2", 16), ("3", 32))
    )


def test_roi_align_matches_aligned_reference():
    feats = _features()
    # sqrt(area) around the level boundaries 112, 224, 448 (levels by floor(log2(s/56 + 1e-6))).
    boxes0 = torch.tensor([
        [10.0, 10.0, 20.0, 20.0],       # s = 10   -> level 0
        [0.0, 0.0, 112.0, 112.0],       # s = 112  -> level 1
        [0.0, 0.0, 111.9, 112.0],       # s < 112  -> level 0
        [5.0, 3.0, 155.0, 127.0],       # s ~ 136  -> level 1
        [0.0, 0.0, 224.0, 224.0],       # s = 224  -> level 2
        [0.0, 0.0, 500.0, 500.0],       # s = 500  -> level 3
        [30.0, 40.0, 30.5, 40.7],       # tiny, below one feature pixel
    ])
    boxes1 = torch.tensor([[3.3, 7.7, 60.1, 90.2]])  # s ~ 68 -> level 0
    pooler = MMDetMultiScaleRoIAlign(["0", "1", "2", "3"], 7, (4, 8, 16, 32))
    out = pooler(feats, [boxes0, boxes1], [(128, 160), (128, 160)])
    assert out.shape == (8, 3, 7, 7)
    expected_levels = [0, 1, 0, 1, 2, 3, 0, 0]
    for i, (img, box) in enumerate([(0, b) for b in boxes0] + [(1, boxes1[0])]):
        s = math.sqrt(float((box[2] - box[0]) * (box[3] - box[1])))
        level = min(max(math.floor(math.log2(s / 56 + 1e-6)), 0), 3)
        assert level == expected_levels[i]
        feat = feats[str(level)]
        ref = roi_align(feat, torch.cat([torch.tensor([[float(img)]]), box[None]], 1), 7,
                        spatial_scale=1.0 / (4 * 2**level), sampling_ratio=0, aligned=True)
        torch.testing.assert_close(out[i], ref[0], rtol=0, atol=0)
    # Negative control: torchvision's pooler (aligned=False, sampling_ratio=2) differs.
    stock = MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)(feats, [boxes0, boxes1], [(128, 160)] * 2)
    assert (stock - out).abs().max() > 0.1


def test_roi_align_empty_and_missing_level():
    feats = _features()
    pooler = MMDetMultiScaleRoIAlign(["0", "1", "2", "3"], 5)
    assert pooler(feats, [torch.zeros(0, 4), torch.zeros(0, 4)], [(128, 160)] * 2).shape == (0, 3, 5, 5)
    del feats["3"]
    with pytest.raises(KeyError, match=r"\['3'\] not found"):
        pooler(feats, [torch.zeros(1, 4)], [(128, 160)])


def test_grid_sample_paste_by_hand():
    # A 2x2 mask whose top-left cell is 1 over a box covering pixels [0, 4) x [0, 4).
    mask = torch.tensor([[1.0, 0.0], [0.0, 0.0]]).view(1, 1, 2, 2)
    box = torch.tensor([[0.0, 0.0, 4.0, 4.0]])
    probs = paste_masks_grid_sample(mask, box, (5, 6))
    # Pixel centres 0.5..3.5 sample mask coordinates -0.25, 0.25, 0.75, 1.25 (cell centres 0, 1):
    # weights of the top-left cell along one axis are 0.75, 0.75, 0.25, 0 (zero padding outside).
    w = torch.tensor([0.75, 0.75, 0.25, 0.0])
    expected = torch.zeros(5, 6)
    expected[:4, :4] = w[:, None] * w[None, :]
    torch.testing.assert_close(probs[0, 0], expected)
    binary = paste_masks_grid_sample(mask, box, (5, 6), threshold=0.5)
    assert binary.dtype == torch.bool
    assert binary[0, 0].nonzero().tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]


def test_grid_sample_paste_region_equals_full_image():
    """The CPU path samples only around each box; thresholded it equals a full-image paste."""
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(6, 1, 28, 28, generator=g)
    xy = torch.rand(6, 2, generator=g) * 40 - 5
    boxes = torch.cat([xy, xy + torch.rand(6, 2, generator=g) * 30 + 0.5], 1)
    region = paste_masks_grid_sample(masks, boxes, (48, 52), threshold=0.5)
    # Full-image reference: one grid over every pixel centre.
    ys = torch.arange(48.0) + 0.5
    xs = torch.arange(52.0) + 0.5
    gy = (ys[None] - boxes[:, 1:2]) / (boxes[:, 3:4] - boxes[:, 1:2]) * 2 - 1
    gx = (xs[None] - boxes[:, 0:1]) / (boxes[:, 2:3] - boxes[:, 0:1]) * 2 - 1
    grid = torch.stack([gx[:, None, :].expand(6, 48, 52), gy[:, :, None].expand(6, 48, 52)], 3)
    full = torch.nn.functional.grid_sample(masks, grid, align_corners=False) >= 0.5
    assert torch.equal(region, full)
    assert region.any()
    # The whole-image path (used on GPUs), in several chunks, gives the same masks.
    chunked = paste_masks_grid_sample(masks, boxes, (48, 52), threshold=0.5, per_box=False,
                                      chunk_bytes=2 * 4 * 48 * 52)
    assert torch.equal(chunked, full)


def test_legacy_paste_is_larger():
    masks = torch.ones(1, 1, 28, 28)
    box = torch.tensor([[10.2, 10.2, 18.6, 18.6]])  # an 8.4-px box
    ours = paste_masks_grid_sample(masks, box, (40, 40), threshold=0.5)
    legacy = paste_masks_in_image(masks, box, (40, 40)) >= 0.5
    assert ours.sum() < legacy.sum()
    assert ours.sum().item() == 81  # pixels 10..18 (centres 10.5..18.5 inside the box)


def test_paste_empty():
    out = paste_masks_grid_sample(torch.zeros(0, 1, 28, 28), torch.zeros(0, 4), (10, 12), 0.5)
    assert out.shape == (0, 1, 10, 12) and out.dtype == torch.bool


def test_aligned_binary_mask_targets():
    gt = torch.zeros(1, 32, 32, dtype=torch.uint8)
    gt[0, 8:24, 8:24] = 1
    box = torch.tensor([[0.0, 0.0, 16.0, 16.0]])
    ours = project_masks_aligned(gt, box, torch.tensor([0]), 4)[0]
    # Bins of 4 px: [0,4) and [4,8) are outside the object, [8,12) and [12,16) inside.
    inside = torch.tensor([0.0, 0.0, 1.0, 1.0])
    torch.testing.assert_close(ours, inside[:, None] * inside[None, :])
    # torchvision's unaligned crop samples half a pixel later: soft values at the edge.
    legacy = project_masks_on_boxes(gt, box, torch.tensor([0]), 4)[0]
    assert 0.0 < legacy[1, 2].item() < 1.0
    assert set(ours.unique().tolist()) <= {0.0, 1.0}


def test_frozen_stats_batchnorm():
    bn = FrozenStatsBatchNorm2d(3)
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([1.0, 2.0, 3.0]))
        bn.running_var.copy_(torch.tensor([4.0, 1.0, 0.25]))
        bn.weight.copy_(torch.tensor([2.0, 1.0, 1.0]))
        bn.bias.copy_(torch.tensor([0.0, 1.0, -1.0]))
    assert {n for n, _ in bn.named_parameters()} == {"weight", "bias"}
    assert {n for n, _ in bn.named_buffers()} == {"running_mean", "running_var"}
    bn.train()
    x = torch.randn(2, 3, 4, 4)
    y = bn(x)
    ref = torch.nn.functional.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias,
                                         training=False, eps=1e-5)
    torch.testing.assert_close(y, ref)
    y.sum().backward()
    assert bn.weight.grad is not None and bn.bias.grad is not None
    assert bn.running_mean.tolist() == [1.0, 2.0, 3.0]
    # A torchvision BatchNorm state dict (with num_batches_tracked) loads.
    sd = torch.nn.BatchNorm2d(3).state_dict()
    bn.load_state_dict(sd)
    assert bn.running_var.tolist() == [1.0, 1.0, 1.0]


def _rpn(cls, **kwargs):
    torch.manual_seed(0)
    anchors = AnchorGenerator(((32,),), ((0.5, 1.0, 2.0),))
    head = RPNHead(4, 3)
    return cls(anchors, head, 0.7, 0.3, 16, 0.5, {"training": 50, "testing": 50},
               {"training": 20, "testing": 20}, 0.7, **kwargs)


def _rpn_loss_inputs():
    g = torch.Generator().manual_seed(1)
    labels = [torch.randint(-1, 2, (60,), generator=g).float() for _ in range(2)]
    targets = [torch.randn(60, 4, generator=g) for _ in range(2)]
    return torch.randn(120, 1, generator=g), torch.randn(120, 4, generator=g), labels, targets


def test_rpn_loss_smooth_l1_equals_stock_and_l1_by_hand():
    objectness, deltas, labels, targets = _rpn_loss_inputs()
    stock, ours = _rpn(RegionProposalNetwork), _rpn(ParityRPN, box_loss="smooth_l1")
    torch.manual_seed(3)
    expected = stock.compute_loss(objectness, deltas, labels, targets)
    torch.manual_seed(3)
    got = ours.compute_loss(objectness, deltas, labels, targets)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    # L1: the same sampled anchors (same seed), sum |delta - target| over positives / sampled.
    rpn = _rpn(ParityRPN, box_loss="l1")
    torch.manual_seed(3)
    pos, neg = rpn.fg_bg_sampler(labels)
    pos = torch.where(torch.cat(pos))[0]
    num_sampled = pos.numel() + int(torch.cat(neg).sum())
    manual = (deltas[pos] - torch.cat(targets)[pos]).abs().sum() / num_sampled
    torch.manual_seed(3)
    _, box_loss = rpn.compute_loss(objectness, deltas, labels, targets)
    torch.testing.assert_close(box_loss, manual)


def test_box_loss_kinds():
    pred = torch.tensor([[0.0, 0.05, 1.0, -2.0]])
    target = torch.zeros(1, 4)
    torch.testing.assert_close(box_regression_loss_sum(pred, target, "l1"), torch.tensor(3.05))
    beta = 1 / 9
    expected = 0.5 * 0.05**2 / beta + (1.0 - 0.5 * beta) + (2.0 - 0.5 * beta)
    torch.testing.assert_close(box_regression_loss_sum(pred, target, "smooth_l1", beta),
                               torch.tensor(expected))
    with pytest.raises(ValueError, match="'l1', 'smooth_l1'"):
        box_regression_loss_sum(pred, target, "l2")  # type: ignore[arg-type]
