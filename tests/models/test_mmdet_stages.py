"""Stage by stage, loce's Mask R-CNN against functional references of the original's test
path that read the *mmdet-named* state dict directly (docs/parity.md §6: T1 backbone,
T2 FPN and RPN head, T4 proposals, T6 box head, T8 mask head), on the reference run's weights
(tests/fixtures/mmdet_reference) and a small input. The references share nothing with loce's
model code except ``torchvision.ops.nms`` / ``roi_align`` as stand-ins for mmcv's kernels.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import nms

import mmdet_reference as ref_data
from loce.evaluation.matching import match_detections
from loce.models import build_mask_rcnn
from loce.models.mmdet_weights import mmdet_to_loce_state_dict

pytestmark = pytest.mark.slow  # building the R50 and the reference weights: 10-20 s here

K = 8
H, W = 192, 256  # a padded input size (multiples of 32)
BLOCKS = (3, 4, 6, 3)


@pytest.fixture(scope="module")
def mm():
    return ref_data.build_weights(ref_data.load_spec())


@pytest.fixture(scope="module")
def model(mm):
    net = build_mask_rcnn(ref_data.reference_config().model, K, load_backbone=False)
    net.load_state_dict(mmdet_to_loce_state_dict(mm)[0], strict=True)
    return net.eval()


@pytest.fixture(scope="module")
def image():
    g = torch.Generator().manual_seed(0)
    return torch.randn(1, 3, H, W, generator=g)


# ---------------------------------------------------------------- functional references


def _bn(x, mm, p):
    return F.batch_norm(x, mm[f"{p}.running_mean"], mm[f"{p}.running_var"], mm[f"{p}.weight"],
                        mm[f"{p}.bias"], training=False, eps=1e-5)


def ref_resnet(mm, x):
    """mmdet ResNet-50, style='pytorch' (stride on the 3x3 conv), BN in eval mode: C2..C5."""
    x = F.relu(_bn(F.conv2d(x, mm["backbone.conv1.weight"], stride=2, padding=3), mm, "backbone.bn1"))
    x = F.max_pool2d(x, 3, stride=2, padding=1)
    outs = []
    for stage, blocks in enumerate(BLOCKS, 1):
        for b in range(blocks):
            p = f"backbone.layer{stage}.{b}"
            stride = 2 if b == 0 and stage > 1 else 1
            out = F.relu(_bn(F.conv2d(x, mm[f"{p}.conv1.weight"]), mm, f"{p}.bn1"))
            out = F.relu(_bn(F.conv2d(out, mm[f"{p}.conv2.weight"], stride=stride, padding=1), mm, f"{p}.bn2"))
            out = _bn(F.conv2d(out, mm[f"{p}.conv3.weight"]), mm, f"{p}.bn3")
            if b == 0:
                x = _bn(F.conv2d(x, mm[f"{p}.downsample.0.weight"], stride=stride), mm, f"{p}.downsample.1")
            x = F.relu(out + x)
        outs.append(x)
    return outs


def ref_fpn(mm, feats):
    """mmdet FPN, add_extra_convs=False, 5 outputs (P6 = max_pool(P5, 1, stride 2))."""
    lat = [F.conv2d(f, mm[f"neck.lateral_convs.{i}.conv.weight"], mm[f"neck.lateral_convs.{i}.conv.bias"])
           for i, f in enumerate(feats)]
    for i in range(len(lat) - 1, 0, -1):
        lat[i - 1] = lat[i - 1] + F.interpolate(lat[i], size=lat[i - 1].shape[2:], mode="nearest")
    outs = [F.conv2d(t, mm[f"neck.fpn_convs.{i}.conv.weight"], mm[f"neck.fpn_convs.{i}.conv.bias"],
                     padding=1) for i, t in enumerate(lat)]
    return outs + [F.max_pool2d(outs[-1], 1, stride=2)]


def ref_rpn_head(mm, p):
    x = F.relu(F.conv2d(p, mm["rpn_head.rpn_conv.weight"], mm["rpn_head.rpn_conv.bias"], padding=1))
    return (F.conv2d(x, mm["rpn_head.rpn_cls.weight"], mm["rpn_head.rpn_cls.bias"]),
            F.conv2d(x, mm["rpn_head.rpn_reg.weight"], mm["rpn_head.rpn_reg.bias"]))


def ref_anchors(stride, fh, fw):
    """mmdet AnchorGenerator(scales=[8], ratios=[0.5, 1, 2]): centres (x*s, y*s), unrounded
    base anchors, ratio-major, x fastest."""
    r = torch.tensor([0.5, 1.0, 2.0])
    hr = r.sqrt()
    ws, hs = stride * (1 / hr) * 8.0, stride * hr * 8.0
    base = torch.stack([-0.5 * ws, -0.5 * hs, 0.5 * ws, 0.5 * hs], 1)
    ys, xs = torch.meshgrid(torch.arange(fh) * stride, torch.arange(fw) * stride, indexing="ij")
    shifts = torch.stack([xs, ys, xs, ys], -1).reshape(-1, 1, 4).float()
    return (shifts + base[None]).reshape(-1, 4)


def delta2bbox(anchors, deltas, stds, max_shape):
    """mmdet's DeltaXYWHBBoxCoder.decode (means 0): dw, dh clamped to +-log(1000/16)."""
    d = deltas * torch.tensor(stds)
    clamp = abs(math.log(16.0 / 1000))
    dw, dh = d[:, 2].clamp(-clamp, clamp), d[:, 3].clamp(-clamp, clamp)
    pw, ph = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    px, py = (anchors[:, 0] + anchors[:, 2]) * 0.5, (anchors[:, 1] + anchors[:, 3]) * 0.5
    gw, gh = pw * dw.exp(), ph * dh.exp()
    gx, gy = px + pw * d[:, 0], py + ph * d[:, 1]
    out = torch.stack([gx - gw * 0.5, gy - gh * 0.5, gx + gw * 0.5, gy + gh * 0.5], 1)
    h, w = max_shape
    return torch.stack([out[:, 0].clamp(0, w), out[:, 1].clamp(0, h),
                        out[:, 2].clamp(0, w), out[:, 3].clamp(0, h)], 1)


def ref_proposals(mm, pyramid, img_shape, nms_pre=1000, max_per_img=1000):
    """mmdet RPNHead._get_bboxes_single (test): per level sigmoid, top nms_pre, decode; then
    batched NMS 0.7 over levels (offset trick, < 10,000 boxes); the best max_per_img."""
    scores, boxes, ids = [], [], []
    for level, (p, stride) in enumerate(zip(pyramid, (4, 8, 16, 32, 64))):
        cls, reg = ref_rpn_head(mm, p)
        s = cls[0].permute(1, 2, 0).reshape(-1).sigmoid()
        d = reg[0].permute(1, 2, 0).reshape(-1, 4)
        a = ref_anchors(stride, p.shape[2], p.shape[3])
        if s.numel() > nms_pre:
            s, order = s.sort(descending=True)
            s, d, a = s[:nms_pre], d[order[:nms_pre]], a[order[:nms_pre]]
        scores.append(s)
        boxes.append(delta2bbox(a, d, (1.0, 1.0, 1.0, 1.0), img_shape))
        ids.append(torch.full_like(s, level, dtype=torch.int64))
    s, b, i = torch.cat(scores), torch.cat(boxes), torch.cat(ids)
    shifted = b + (i.to(b) * (b.max() + 1))[:, None]
    keep = nms(shifted, s, 0.7)[:max_per_img]
    return b[keep], s[keep]


def ref_box_head(mm, pooled):
    x = pooled.flatten(1)
    for i in (0, 1):
        x = F.relu(F.linear(x, mm[f"roi_head.bbox_head.shared_fcs.{i}.weight"],
                            mm[f"roi_head.bbox_head.shared_fcs.{i}.bias"]))
    cls = F.linear(x, mm["roi_head.bbox_head.fc_cls.weight"], mm["roi_head.bbox_head.fc_cls.bias"])
    reg = F.linear(x, mm["roi_head.bbox_head.fc_reg.weight"], mm["roi_head.bbox_head.fc_reg.bias"])
    return F.softmax(cls, dim=1), reg


def ref_normed_mask_head(mm, pooled):
    """FCNNormMaskHead: 4 convs, deconv, ReLU, conv(20 * normalize(x), normalize(W)) + b."""
    x = pooled
    for i in range(4):
        x = F.relu(F.conv2d(x, mm[f"roi_head.mask_head.convs.{i}.conv.weight"],
                            mm[f"roi_head.mask_head.convs.{i}.conv.bias"], padding=1))
    x = F.relu(F.conv_transpose2d(x, mm["roi_head.mask_head.upsample.weight"],
                                  mm["roi_head.mask_head.upsample.bias"], stride=2))
    w = F.normalize(mm["roi_head.mask_head.conv_logits.weight"], dim=1)
    return F.conv2d(20 * F.normalize(x, dim=1), w, mm["roi_head.mask_head.conv_logits.bias"])


# ---------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def stages(mm, model, image):
    with torch.no_grad():
        c = ref_resnet(mm, image)
        body = model.backbone.body(image)
        pyramid = ref_fpn(mm, c)
        fpn = model.backbone.fpn(OrderedDict((str(i), t) for i, t in enumerate(c)))
    return {"c": c, "body": list(body.values()), "pyramid": pyramid, "fpn": list(fpn.values())}


def test_t1_backbone_within_1e5(stages):
    for ref, ours in zip(stages["c"], stages["body"]):
        rel = (ours - ref).abs().max() / ref.abs().max()
        assert float(rel) <= 1e-5, float(rel)


def test_t2_fpn_and_rpn_head_exact(mm, model, stages):
    for ref, ours in zip(stages["pyramid"], stages["fpn"]):
        assert torch.equal(ref, ours)
    with torch.no_grad():
        cls, reg = model.rpn.head(stages["pyramid"])
        for level, p in enumerate(stages["pyramid"]):
            ref_cls, ref_reg = ref_rpn_head(mm, p)
            assert torch.equal(cls[level], ref_cls) and torch.equal(reg[level], ref_reg)


def test_t4_proposals_equal_as_sets(mm, model, stages):
    img_shape = (H - 7, W - 13)  # unpadded size: proposals are clipped to it
    features = OrderedDict((str(i), t) for i, t in enumerate(stages["pyramid"]))
    captured = []
    filter_proposals = model.rpn.filter_proposals

    def capture(*args, **kwargs):
        out = filter_proposals(*args, **kwargs)
        captured.append(out)
        return out

    model.rpn.filter_proposals = capture
    try:
        with torch.no_grad():
            model.rpn(ImageList(torch.zeros(1, 3, H, W), [img_shape]), features)
    finally:
        del model.rpn.filter_proposals
    boxes, scores = captured[0][0][0], captured[0][1][0]
    ref_boxes, ref_scores = ref_proposals(mm, stages["pyramid"], img_shape)
    assert len(ref_boxes) == len(boxes) == 1000
    # IoU 0.999: the box decode differs in ulps (torchvision's coder), which on a 0.03-px
    # sliver is an IoU of 0.9998.
    m = match_detections(ref_boxes, ref_scores, boxes, scores, iou_threshold=0.999,
                         score_tolerance=1e-5, top_k=1000)
    assert m.all_matched and m.num_reference >= 900, m.summary()


def _rois():
    g = torch.Generator().manual_seed(1)
    xy = torch.rand(40, 2, generator=g) * torch.tensor([W - 60.0, H - 60.0])
    return torch.cat([xy, xy + torch.rand(40, 2, generator=g) * 55 + 3], 1)


def test_t6_box_head_probabilities_and_deltas(mm, model, stages):
    heads = model.roi_heads
    features = OrderedDict((str(i), t) for i, t in enumerate(stages["pyramid"]))
    with torch.no_grad():
        pooled = heads.box_roi_pool(features, [_rois()], [(H, W)])
        logits, deltas = heads.box_predict(heads.box_head_forward(pooled))
        probs = heads.class_scores(logits)
        ref_probs, ref_deltas = ref_box_head(mm, pooled)
    # background: loce column 0, mmdet column K
    torch.testing.assert_close(probs[:, 0], ref_probs[:, K], rtol=0, atol=1e-6)
    torch.testing.assert_close(probs[:, 1:], ref_probs[:, :K], rtol=0, atol=1e-6)
    assert torch.equal(deltas[:, 4:], ref_deltas)  # the padded background rows skipped


def test_t8_normed_mask_head_channels(mm, model, stages):
    heads = model.roi_heads
    features = OrderedDict((str(i), t) for i, t in enumerate(stages["pyramid"]))
    with torch.no_grad():
        pooled = heads.mask_roi_pool(features, [_rois()], [(H, W)])
        ours = heads.mask_predictor(heads.mask_head(pooled))  # all K + 1 channels
        ref = ref_normed_mask_head(mm, pooled)
        labels = torch.arange(40) % K + 1
        selected = heads.predict_masks(heads.mask_head(pooled), labels)
    torch.testing.assert_close(ours[:, 1:], ref, rtol=0, atol=1e-5)
    assert torch.equal(ours[:, 0], torch.zeros_like(ours[:, 0]))  # background: zero kernel, bias 0
    # loce label c + 1 selects mmdet channel c
    torch.testing.assert_close(selected[:, 0], ref[torch.arange(40), labels - 1], rtol=0, atol=1e-5)
