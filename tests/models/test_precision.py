"""Mixed precision keeps box geometry in float32 (CPU autocast has CUDA autocast's dtype rules).

The failures these guard against were measured, not imagined: bfloat16 anchors are up to
7 px off at 1333 px, and ``matched_idxs.to(boxes)`` turns GT index 257 into 256 in bfloat16.
"""

from __future__ import annotations

import pytest
import torch
from test_mask_rcnn import K, small_config
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import project_masks_on_boxes
from torchvision.ops import FrozenBatchNorm2d

from loce.config import load_config
from loce.models import build_mask_rcnn
from loce.models.mmdet_compat import (
    FrozenStatsBatchNorm2d,
    MMDetAnchorGenerator,
    project_masks_aligned,
)
from loce.models.precision import (
    Float32AnchorGenerator,
    FrozenBatchNorm2dKeepDtype,
    amp_context,
    float32_like,
    geometry_dtype,
)

BF16 = torch.bfloat16


def _filled_norm(cls, channels=6):
    g = torch.Generator().manual_seed(3)
    bn = cls(channels)
    bn.running_mean.copy_(torch.randn(channels, generator=g))
    bn.running_var.copy_(torch.rand(channels, generator=g) + 0.5)
    with torch.no_grad():
        bn.weight.copy_(torch.randn(channels, generator=g))
        bn.bias.copy_(torch.randn(channels, generator=g))
    return bn


def test_geometry_dtype():
    assert geometry_dtype(torch.bfloat16) == torch.float32
    assert geometry_dtype(torch.float16) == torch.float32
    assert geometry_dtype(torch.float32) == torch.float32
    assert geometry_dtype(torch.float64) == torch.float64
    f = torch.zeros(2, 3, 5, 7, dtype=BF16)
    stand_in = float32_like(f)
    assert stand_in.shape == f.shape and stand_in.dtype == torch.float32
    assert stand_in.stride() == (0, 0, 0, 0)  # no storage of the map's size
    same = torch.zeros(2, 3)
    assert float32_like(same) is same


@pytest.mark.parametrize("cls", [FrozenBatchNorm2dKeepDtype, FrozenStatsBatchNorm2d])
def test_frozen_batchnorm_keeps_the_input_dtype(cls):
    bn = _filled_norm(cls)
    stock = _filled_norm(FrozenBatchNorm2d)
    x = torch.randn(2, 6, 5, 4, generator=torch.Generator().manual_seed(1))
    # float32: bit for bit torchvision's FrozenBatchNorm2d
    assert torch.equal(bn(x), stock(x))
    y = bn(x.to(BF16))
    assert y.dtype == BF16
    # torchvision's promotes to float32 (why a frozen-BN ResNet never stayed in bf16)
    assert stock(x.to(BF16)).dtype == torch.float32
    # by hand: x * (w / sqrt(var + eps)) + (b - mean * scale), the factors rounded to bf16
    scale = bn.weight.detach() / (bn.running_var + bn.eps).sqrt()
    shift = bn.bias.detach() - bn.running_mean * scale
    expected = x.to(BF16) * scale.to(BF16)[:, None, None] + shift.to(BF16)[:, None, None]
    assert torch.equal(y, expected)
    if cls is FrozenStatsBatchNorm2d:  # affine weights still learn through the cast
        y.float().sum().backward()
        assert bn.weight.grad is not None and bn.weight.grad.abs().sum() > 0


def test_anchors_are_float32_for_16_bit_maps():
    image_list = ImageList(torch.zeros(1, 3, 800, 1344), [(800, 1333)])
    maps32 = [torch.zeros(1, 4, 800 // s, 1344 // s) for s in (4, 8, 16, 32, 64)]
    maps16 = [m.to(BF16) for m in maps32]
    mmdet = MMDetAnchorGenerator()
    a32, a16 = mmdet(image_list, maps32)[0], mmdet(image_list, maps16)[0]
    assert a16.dtype == torch.float32 and torch.equal(a16, a32)
    # what bfloat16 anchors would have been: pixels off at the far edge
    assert float((a32.to(BF16).float() - a32).abs().max()) >= 4.0
    sizes = tuple((s * 8.0,) for s in (4, 8, 16, 32, 64))
    ratios = ((0.5, 1.0, 2.0),) * 5
    stock32 = AnchorGenerator(sizes, ratios)(image_list, maps32)[0]
    ours = Float32AnchorGenerator(sizes, ratios)(image_list, maps16)[0]
    assert ours.dtype == torch.float32 and torch.equal(ours, stock32)


def _numbered_masks(num: int, size: int = 64) -> torch.Tensor:
    """``[num, size, size]`` masks where object ``i`` fills the rows ``< i % size`` and
    column block ``i // size``: each distinct from its neighbours."""
    masks = torch.zeros(num, size, size, dtype=torch.uint8)
    for i in range(num):
        masks[i, : 1 + i % (size - 1), : 8 * (1 + (i // size) % 7)] = 1
    return masks


@pytest.mark.parametrize("aligned", [True, False])
def test_mask_targets_of_object_257_in_bf16(aligned):
    gt = _numbered_masks(300)
    boxes32 = torch.tensor([[0.0, 0.0, 63.0, 63.0]] * 3)
    matched = torch.tensor([255, 256, 257])
    assert int(torch.tensor(257.0).to(BF16)) == 256  # the rounding this guards against
    if aligned:
        expected = project_masks_aligned(gt, boxes32, matched, 28)
        got = project_masks_aligned(gt, boxes32.to(BF16), matched, 28)
    else:
        from loce.models.roi_heads import StepwiseRoIHeads

        expected = project_masks_on_boxes(gt, boxes32, matched, 28)
        got = StepwiseRoIHeads.mask_targets_for(
            type("H", (), {"mask_targets": "legacy"})(), gt, boxes32.to(BF16), matched, 28)
    assert got.dtype == torch.float32
    assert torch.equal(got, expected)
    assert not torch.equal(expected[1], expected[2])  # 256 and 257 are different objects


def test_amp_context():
    with amp_context("cpu", "bf16"):
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == BF16
    with amp_context("cpu", "none"):
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.float32
    with pytest.raises(ValueError, match="'none', 'bf16', 'fp16'"):
        amp_context("cpu", "int8")


def _small_batch():
    """Two images of 64-96 px with two boxes each: bfloat16 convolutions are emulated on CPUs
    without native support (about 100x fp32's time), so the autocast runs stay small."""
    g = torch.Generator().manual_seed(0)
    images, targets = [], []
    for h, w in ((64, 96), (80, 64)):
        images.append(torch.rand(3, h, w, generator=g))
        boxes = torch.tensor([[4.0, 6.0, 40.0, 50.0], [20.0, 10.0, 60.0, 60.0]])
        masks = torch.zeros(2, h, w, dtype=torch.uint8)
        for j, b in enumerate(boxes.long()):
            masks[j, b[1] : b[3], b[0] : b[2]] = 1
        targets.append({"boxes": boxes, "labels": torch.tensor([1, 3]), "masks": masks})
    return images, targets


def _geometry_probe(model):
    """Forward hooks recording the dtypes of every piece of box geometry."""
    seen: dict[str, torch.dtype] = {}

    def anchors(_m, _i, out):
        seen["anchors"] = out[0].dtype

    def rpn(_m, _i, out):
        seen["proposals"] = out[0][0].dtype

    def layer(_m, _i, out):
        seen["layer2"] = out.dtype

    heads = model.roi_heads
    sample = heads.sample_proposals

    def sample_proposals(proposals, targets):
        s = sample(proposals, targets)
        seen["sampled"] = s.proposals[0].dtype
        seen["regression_targets"] = s.regression_targets[0].dtype
        return s

    predict = heads.box_predict

    def box_predict(x):
        out = predict(x)
        seen["head_input"] = x.dtype
        seen["box_regression"] = out[1].dtype
        return out

    heads.sample_proposals = sample_proposals
    heads.box_predict = box_predict
    model.rpn.anchor_generator.register_forward_hook(anchors)
    model.rpn.register_forward_hook(rpn)
    model.backbone.body.layer2.register_forward_hook(layer)
    return seen


@pytest.mark.parametrize("parity", ["original", "torchvision"])
def test_training_step_under_bf16_autocast(parity):
    from loce.config.model import ParityConfig

    cfg = small_config()
    if parity == "torchvision":
        cfg.parity = ParityConfig.torchvision()
    cfg.parity.backbone_norm = "frozen_stats" if parity == "original" else "frozen"
    torch.manual_seed(0)
    model = build_mask_rcnn(cfg, K, load_backbone=False).train()
    seen = _geometry_probe(model)
    images, targets = _small_batch()
    with torch.autocast("cpu", dtype=BF16):
        losses = model(images, targets)
    assert seen["layer2"] == BF16 and seen["head_input"] == BF16  # activations stay bf16
    for key in ("anchors", "proposals", "sampled", "regression_targets", "box_regression"):
        assert seen[key] == torch.float32, (key, seen[key])
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()


def test_inference_amp_from_the_config():
    cfg = small_config()
    cfg.test.amp = "bf16"
    torch.manual_seed(0)
    model = build_mask_rcnn(cfg, K, load_backbone=False).eval()
    assert model.inference_amp == "bf16"
    seen = _geometry_probe(model)
    images, _ = _small_batch()
    with torch.no_grad():
        out = model(images, original_image_sizes=[(128, 192), (160, 128)])
    assert seen["layer2"] == BF16 and seen["proposals"] == torch.float32
    for det in out:
        assert det["boxes"].dtype == torch.float32 and det["scores"].dtype == torch.float32
        assert det["masks"].dtype == torch.bool
    # off by default: the released models' numbers stay exact
    assert build_mask_rcnn(small_config(), K, load_backbone=False).inference_amp == "none"


def test_amp_is_a_checked_config_value():
    from loce.errors import ConfigError

    assert load_config("mask_rcnn_r18_fpn_normed_mask_synthetic").model.test.amp == "none"
    with pytest.raises(ConfigError, match="amp"):
        load_config("mask_rcnn_r18_fpn_normed_mask_synthetic", ["model.test.amp=fp8"])
