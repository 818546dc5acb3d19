"""The original's class-wise NMS (``model.parity.nms: mmcv``) against a functional reference
of mmcv's ``batched_nms`` and mmdet's ``multiclass_nms`` written from docs/parity.md
(§4 #24, §5.5, test T7), with K = 8 and K = 1203 and both of mmcv's branches (below and
above 10,000 boxes)."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import nms

from loce.config.model import ModelConfig, ParityConfig
from loce.evaluation.matching import match_detections
from loce.models import build_mask_rcnn
from loce.models.roi_heads import StepwiseRoIHeads, class_wise_nms, offset_class_wise_nms

SPLIT = 10_000
#: mmdet's float32 scale factor of the reference image (300 x 451 -> 800 x 1203).
FACTOR = torch.tensor([1203 / 451, 800 / 300] * 2, dtype=torch.float32)


def reference_batched_nms(boxes, scores, idxs, iou_threshold):
    """mmcv's batched_nms as docs/parity.md describes it: boxes shifted by
    ``idx * (max + 1)`` in float32; one NMS below 10,000 boxes, else one per class on the
    shifted boxes, the kept ones merged and sorted by score."""
    offsets = idxs.to(boxes.dtype) * (boxes.max() + torch.tensor(1.0, dtype=boxes.dtype))
    shifted = boxes + offsets[:, None]
    if shifted.shape[0] < SPLIT:
        return nms(shifted, scores, iou_threshold)
    kept = torch.zeros(scores.shape[0], dtype=torch.bool)
    for c in torch.unique(idxs):
        members = torch.where(idxs == c)[0]
        kept[members[nms(shifted[members], scores[members], iou_threshold)]] = True
    keep = torch.where(kept)[0]
    return keep[torch.argsort(scores[keep], descending=True)]


def reference_detections(scores, boxes, factor, score_thr=1e-4, iou=0.5, max_num=300):
    """mmdet's bbox post-processing after decoding: rescale every (proposal, class) box to
    the original frame, keep scores above the threshold, batched NMS with 0-based labels,
    the first ``max_num``.

    Args:
        scores: ``[P, K + 1]`` probabilities, background at column 0 (loce's order).
        boxes: ``[P, K, 4]`` decoded, clipped boxes of the foreground classes, input frame.
        factor: ``[4]`` float32 scale factor.

    Returns:
        ``(boxes [n, 4] original frame, scores [n], labels [n] 1-based)``.
    """
    num_classes = scores.shape[1] - 1
    b = (boxes / factor).reshape(-1, 4)
    s = scores[:, 1:].reshape(-1)
    labels = torch.arange(num_classes).expand(scores.shape[0], -1).reshape(-1)
    valid = torch.where(s > score_thr)[0]
    b, s, labels = b[valid], s[valid], labels[valid]
    keep = reference_batched_nms(b, s, labels, iou)[:max_num]
    return b[keep], s[keep], labels[keep] + 1


def _crowded_boxes(n: int, spread: float, first_label: int, num_classes: int = 1203, seed: int = 0):
    """Small, heavily overlapping boxes of a few high labels (large offsets): many pairs near
    the IoU threshold."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * spread
    boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 30 + 2], 1)
    return boxes, torch.rand(n, generator=g), torch.randint(first_label, num_classes, (n,), generator=g)


@pytest.mark.parametrize(("n", "spread"), [(2000, 100.0), (12000, 200.0)])
def test_offset_nms_equals_mmcv_reference_in_both_branches(n, spread):
    boxes, scores, labels = _crowded_boxes(n, spread, 1195)
    assert (n >= SPLIT) == (n == 12000)
    ours = offset_class_wise_nms(boxes, scores, labels, 0.5, boxes.max())
    ref = reference_batched_nms(boxes, scores, labels, 0.5)
    assert torch.equal(torch.sort(ours).values, torch.sort(ref).values)
    assert torch.equal(scores[ours], scores[ref])  # the same order: by decreasing score
    # The exact per-class NMS keeps a different set: the float32 shift (ulp 0.125 px at an
    # offset of ~1.4e6) flips pairs near IoU 0.5.
    exact = class_wise_nms(boxes, scores, labels, 0.5)
    differ = set(exact.tolist()) ^ set(ref.tolist())
    assert len(differ) >= 3, len(differ)


def test_offset_nms_needs_the_global_max_coordinate():
    """The offsets come from the max over all candidates, not over the subset kept."""
    boxes, scores, labels = _crowded_boxes(12000, 200.0, 1195)
    boxes[torch.argmin(scores)] = torch.tensor([1000.0, 700.0, 1333.0, 800.0])  # far, low score
    sub = torch.argsort(scores, descending=True)[:3000]
    with_global = offset_class_wise_nms(boxes[sub], scores[sub], labels[sub], 0.5, boxes.max())
    with_local = offset_class_wise_nms(boxes[sub], scores[sub], labels[sub], 0.5, boxes[sub].max())
    ref = reference_batched_nms(boxes, scores, labels, 0.5)
    kept_sub = set(sub[with_global].tolist())
    assert kept_sub == set(ref.tolist()) & set(sub.tolist())
    assert boxes[sub].max() < boxes.max()
    assert set(sub[with_local].tolist()) != kept_sub  # a different offset, other flips


def _heads(num_classes: int, nms_mode: str) -> StepwiseRoIHeads:
    cfg = ModelConfig(backbone="resnet18", backbone_weights="none", fpn_channels=16)
    cfg.roi.representation_size = 16
    cfg.mask.head_layers = [8]
    cfg.mask.upsample_channels = 8
    cfg.parity.nms = nms_mode
    return build_mask_rcnn(cfg, num_classes, load_backbone=False).roi_heads.eval()


def _head_inputs(num_classes: int, strong: int, seed: int = 0, num_props: int = 1000):
    """Proposals crowded in a 100-px square; logits favour the ``strong`` last classes (whose
    offsets are largest) and put the others a few times 1e-4 (~100,000 candidates at K = 1203).
    """
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(num_props, 2, generator=g) * 100 + 500
    props = torch.cat([xy, xy + torch.rand(num_props, 2, generator=g) * 40 + 4], 1)
    logits = torch.randn(num_props, num_classes + 1, generator=g)
    logits[:, num_classes + 1 - strong:] += 6
    logits[:, 1:num_classes + 1 - strong] -= 4
    deltas = torch.randn(num_props, 4 * (num_classes + 1), generator=g) * 0.1
    return props, logits, deltas


def _reference_for(heads, props, logits, deltas, shape):
    scores = torch.softmax(logits, 1)
    k = scores.shape[1] - 1
    d = deltas.reshape(len(props), k + 1, 4)[:, 1:]
    decoded = heads.box_coder.decode_single(d.reshape(-1, 4), props.repeat_interleave(k, 0))
    decoded = decoded.reshape(len(props), k, 4)
    h, w = shape
    decoded[..., 0::2] = decoded[..., 0::2].clamp(0, w)
    decoded[..., 1::2] = decoded[..., 1::2].clamp(0, h)
    return reference_detections(scores, decoded, FACTOR)


@pytest.mark.parametrize(("num_classes", "strong"),
                         [(8, 8), pytest.param(1203, 2, marks=pytest.mark.slow)])
def test_postprocess_equals_mmdet_reference(num_classes, strong):
    """K = 8: 8000 candidates (one NMS); K = 1203: ~100,000 (mmcv's per-class branch)."""
    shape = (800, 1203)
    props, logits, deltas = _head_inputs(num_classes, strong)
    ref_boxes, ref_scores, ref_labels = _reference_for(_heads(num_classes, "mmcv"), props, logits,
                                                       deltas, shape)
    assert len(ref_scores) == 300
    assert (torch.softmax(logits, 1)[:, 1:] > 1e-4).sum() >= (SPLIT if num_classes > 8 else 0)
    results = {}
    for mode in ("mmcv", "exact"):
        heads = _heads(num_classes, mode)
        boxes, scores, labels = heads.postprocess_detections(logits, deltas, [props], [shape],
                                                             [FACTOR])
        results[mode] = match_detections(ref_boxes, ref_scores, boxes[0] / FACTOR, scores[0],
                                         ref_labels, labels[0], iou_threshold=0.99999,
                                         score_tolerance=1e-7, top_k=300)
    assert results["mmcv"].all_matched, results["mmcv"].summary()
    if num_classes == 1203:  # the exact NMS keeps other boxes near the cut of 300
        assert not results["exact"].all_matched


def test_default_heads_keep_the_exact_nms_and_configs_choose():
    assert ModelConfig().parity.nms == "mmcv"
    assert ParityConfig.torchvision().nms == "exact"
    assert _heads(3, "mmcv").nms == "mmcv"
    args = _heads(3, "exact")
    assert args.nms == "exact"
    with pytest.raises(ValueError, match="'exact', 'mmcv'"):
        StepwiseRoIHeads(args.box_roi_pool, args.box_head, args.box_predictor, 0.5, 0.5, 16, 0.25,
                     None, 0.05, 0.5, 10, nms="fast")
