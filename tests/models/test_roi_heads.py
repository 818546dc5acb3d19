"""StepwiseRoIHeads: equal to torchvision's RoIHeads with default settings, fast post-processing
equal to the stock one, and the hooks LOCE builds on."""

from __future__ import annotations

import copy
from collections import OrderedDict

import pytest
import torch
from torch import nn
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops import MultiScaleRoIAlign, nms

from loce.models import roi_heads as roi_heads_module
from loce.models.predictors import MaskPredictor
from loce.models.roi_heads import BoxRows, StepwiseRoIHeads, class_wise_nms

K = 5
IMAGE_SHAPES = [(128, 160), (96, 128)]


def _parts(seed: int = 0, num_classes: int = K + 1):
    torch.manual_seed(seed)
    box_pool = MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)
    box_head = TwoMLPHead(16 * 7 * 7, 32)
    box_pred = FastRCNNPredictor(32, num_classes)
    mask_pool = MultiScaleRoIAlign(["0", "1", "2", "3"], 14, 2)
    mask_head = MaskRCNNHeads(16, [16, 16], 1)
    mask_pred = MaskRCNNPredictor(16, 16, num_classes)
    return box_pool, box_head, box_pred, mask_pool, mask_head, mask_pred


_SETTINGS = (0.5, 0.5, 64, 0.25, None, 0.05, 0.5, 50)


def _stock_and_ours(**ours_kwargs) -> tuple[RoIHeads, StepwiseRoIHeads]:
    box_pool, box_head, box_pred, mask_pool, mask_head, mask_pred = _parts()
    stock = RoIHeads(box_pool, box_head, box_pred, *_SETTINGS,
                     mask_roi_pool=mask_pool, mask_head=mask_head, mask_predictor=mask_pred)
    # Our own plain mask predictor takes the stock predictor's weights (same names) and
    # computes only the needed channel.
    ours_mask_pred = MaskPredictor(16, 16, K + 1)
    ours_mask_pred.load_state_dict(mask_pred.state_dict())
    ours = StepwiseRoIHeads(copy.deepcopy(box_pool), copy.deepcopy(box_head), copy.deepcopy(box_pred),
                        *_SETTINGS, mask_roi_pool=copy.deepcopy(mask_pool),
                        mask_head=copy.deepcopy(mask_head), mask_predictor=ours_mask_pred,
                        **ours_kwargs)
    return stock, ours


def _inputs(seed: int = 1, empty_second: bool = False):
    g = torch.Generator().manual_seed(seed)
    features = OrderedDict(
        (name, torch.randn(2, 16, 128 // s, 160 // s, generator=g))
        for name, s in (("0", 4), ("1", 8), ("2", 16), ("3", 32))
    )
    proposals, targets = [], []
    for i, (h, w) in enumerate(IMAGE_SHAPES):
        xy = torch.rand(60, 2, generator=g) * torch.tensor([w * 0.7, h * 0.7])
        wh = torch.rand(60, 2, generator=g) * 40 + 4
        proposals.append(torch.cat([xy, xy + wh], 1))
        n = 0 if (empty_second and i == 1) else 3
        gxy = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.5, h * 0.5])
        gwh = torch.rand(n, 2, generator=g) * 40 + 10
        boxes = torch.cat([gxy, gxy + gwh], 1)
        masks = torch.zeros(n, h, w, dtype=torch.uint8)
        for j, b in enumerate(boxes.long()):
            masks[j, b[1] : b[3], b[0] : b[2]] = 1
        labels = torch.randint(1, K + 1, (n,), generator=g)
        targets.append({"boxes": boxes, "labels": labels, "masks": masks})
    return features, proposals, targets


@pytest.mark.parametrize("empty_second", [False, True])
def test_training_losses_equal_stock(empty_second):
    stock, ours = _stock_and_ours()
    features, proposals, targets = _inputs(empty_second=empty_second)
    torch.manual_seed(7)
    _, stock_losses = stock(features, [p.clone() for p in proposals], IMAGE_SHAPES, targets)
    torch.manual_seed(7)
    _, our_losses = ours(features, [p.clone() for p in proposals], IMAGE_SHAPES, targets)
    assert set(our_losses) == set(stock_losses) == {"loss_classifier", "loss_box_reg", "loss_mask"}
    for name in stock_losses:
        torch.testing.assert_close(our_losses[name], stock_losses[name], rtol=1e-6, atol=1e-6)
    # Gradients flow to the same parameters with the same values.
    sum(stock_losses.values()).backward()
    sum(our_losses.values()).backward()
    torch.testing.assert_close(ours.box_predictor.cls_score.weight.grad,
                               stock.box_predictor.cls_score.weight.grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(ours.mask_predictor.mask_fcn_logits.weight.grad,
                               stock.mask_predictor.mask_fcn_logits.weight.grad, rtol=1e-4, atol=1e-7)


def test_eval_detections_equal_stock():
    stock, ours = _stock_and_ours()
    stock.eval()
    ours.eval()
    features, proposals, _ = _inputs(seed=3)
    with torch.no_grad():
        expected, _ = stock(features, proposals, IMAGE_SHAPES)
        got, _ = ours(features, proposals, IMAGE_SHAPES)
    assert len(got) == 2
    for e, g in zip(expected, got):
        assert len(e["boxes"]) > 10
        torch.testing.assert_close(g["labels"], e["labels"])
        torch.testing.assert_close(g["scores"], e["scores"])
        torch.testing.assert_close(g["boxes"], e["boxes"])
        torch.testing.assert_close(g["masks"], e["masks"], rtol=1e-5, atol=1e-6)


def _random_predictions(num_props: int, num_classes: int, seed: int, spread: float = 3.0,
                        same_box: bool = False):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(num_props, num_classes, generator=g) * spread
    deltas = torch.randn(num_props, num_classes * 4, generator=g) * 0.3
    xy = torch.rand(num_props, 2, generator=g) * 150
    wh = torch.rand(num_props, 2, generator=g) * 60 + 2
    props = torch.cat([xy, xy + wh], 1)
    if same_box:  # nearly identical proposals: NMS keeps about one box per class
        props = torch.tensor([[20.0, 30.0, 90.0, 100.0]]) + torch.rand(num_props, 4, generator=g)
        deltas = deltas * 0.01
    return logits, deltas, props


def _as_set(boxes, scores, labels):
    return sorted(zip(labels.tolist(), [round(s, 6) for s in scores.tolist()],
                      [tuple(round(v, 3) for v in b) for b in boxes.tolist()]))


@pytest.mark.parametrize(("seed", "same_box", "limit"), [(0, False, 100), (1, False, 300), (2, True, 100)])
def test_fast_postprocess_equals_stock(seed, same_box, limit):
    num_classes = 51  # K = 50
    _, heads = _stock_and_ours()
    heads.score_thresh, heads.nms_thresh, heads.detections_per_img = 1e-4, 0.5, limit
    logits, deltas, props = _random_predictions(2 * 150, num_classes, seed, same_box=same_box)
    proposals = [props[:150], props[150:]]
    shapes = [(200, 220), (180, 190)]
    fast = heads.postprocess_detections(logits, deltas, proposals, shapes)
    stock = RoIHeads.postprocess_detections(heads, logits, deltas, proposals, shapes)
    for i in range(2):
        got = [t[i] for t in fast]
        exp = [t[i] for t in stock]
        assert len(exp[0]) > 0
        assert _as_set(*got) == _as_set(*exp)
        # Ordered by decreasing score, like the stock path.
        assert torch.all(got[1][:-1] >= got[1][1:])


def test_postprocess_nothing_above_threshold():
    _, heads = _stock_and_ours()
    heads.score_thresh = 0.99
    logits = torch.zeros(10, K + 1)  # uniform scores 1/6
    boxes, scores, labels = heads.postprocess_detections(
        logits, torch.zeros(10, 4 * (K + 1)), [torch.tensor([[0.0, 0.0, 10.0, 10.0]]).repeat(10, 1)],
        [(50, 50)])
    assert boxes[0].shape == (0, 4) and scores[0].shape == (0,) and labels[0].shape == (0,)


def test_det_min_size_zero_keeps_slivers():
    _, heads = _stock_and_ours()
    logits = torch.tensor([[0.0, 5.0] + [0.0] * (K - 1)])
    # A box clipped to a 0.005-px sliver at the image border.
    props = [torch.tensor([[99.995, 10.0, 140.0, 40.0]])]
    deltas = torch.zeros(1, 4 * (K + 1))
    heads.det_min_size = 1e-2
    assert heads.postprocess_detections(logits, deltas, props, [(100, 100)])[0][0].shape[0] == 0
    heads.det_min_size = 0.0
    assert heads.postprocess_detections(logits, deltas, props, [(100, 100)])[0][0].shape[0] == 1


def test_class_wise_nms_matches_per_class_nms():
    g = torch.Generator().manual_seed(5)
    xy = torch.rand(400, 2, generator=g) * 50
    boxes = torch.cat([xy, xy + torch.rand(400, 2, generator=g) * 30 + 1], 1)
    scores = torch.rand(400, generator=g)
    labels = torch.randint(0, 7, (400,), generator=g)
    keep = class_wise_nms(boxes, scores, labels, 0.5)
    expected = []
    for c in range(7):
        idx = torch.where(labels == c)[0]
        expected += idx[nms(boxes[idx], scores[idx], 0.5)].tolist()
    assert sorted(keep.tolist()) == sorted(expected)
    assert torch.all(scores[keep][:-1] >= scores[keep][1:])
    assert class_wise_nms(boxes[:0], scores[:0], labels[:0], 0.5).numel() == 0


def _per_class_nms(boxes, scores, labels, threshold):
    """The reference: torchvision's NMS on each class, merged by decreasing score (stable)."""
    kept = [idx[nms(boxes[idx], scores[idx], threshold)]
            for idx in (torch.where(labels == c)[0] for c in torch.unique(labels))]
    keep = torch.cat(kept)
    return keep[torch.argsort(scores[keep], descending=True, stable=True)]


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
@pytest.mark.parametrize("chunk", [1 << 20, 37])
def test_class_wise_nms_equals_torchvision_per_class_with_ties(monkeypatch, threshold, chunk):
    monkeypatch.setattr(roi_heads_module, "NMS_PAIR_CHUNK", chunk)
    g = torch.Generator().manual_seed(11)
    n = 600
    # Boxes on a 0.5 px grid: many exact ties in IoU, and duplicates with equal scores.
    xy = torch.randint(0, 80, (n, 2), generator=g).float() / 2
    boxes = torch.cat([xy, xy + torch.randint(2, 40, (n, 2), generator=g).float() / 2], 1)
    boxes[1::7] = boxes[0::7][: boxes[1::7].shape[0]]
    scores = torch.randint(0, 50, (n,), generator=g).float() / 50
    labels = torch.randint(0, 120, (n,), generator=g)
    labels[1::7] = labels[0::7][: labels[1::7].shape[0]]
    keep = class_wise_nms(boxes, scores, labels, threshold)
    assert torch.equal(keep, _per_class_nms(boxes, scores, labels, threshold))


def test_class_wise_nms_threshold_is_compared_as_torchvision_compares_it():
    # IoU 1/3 is 0.33333334 in float32; a threshold of 0.33333334 (which float32 rounds to
    # the same value) must keep the second box (torchvision compares in double).
    boxes = torch.tensor([[0.0, 0.0, 2.0, 1.0], [1.0, 0.0, 3.0, 1.0], [0.0, 0.0, 2.0, 1.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    labels = torch.tensor([4, 4, 9])
    for threshold in (0.3333333, 1 / 3, 0.33333334):
        keep = class_wise_nms(boxes, scores, labels, threshold)
        assert torch.equal(keep, _per_class_nms(boxes, scores, labels, threshold))
    assert class_wise_nms(boxes, scores, labels, 0.3).tolist() == [0, 2]


def test_class_wise_nms_host_syncs_do_not_grow_with_the_classes(monkeypatch):
    """The syncs: the pair count, one per sweep, the output size; never one per class."""
    calls = []
    real_equal = torch.equal
    monkeypatch.setattr(torch, "equal", lambda a, b: calls.append(1) or real_equal(a, b))
    # 300 classes, each with three boxes in a chain: 0 suppresses 1, 1 would suppress 2.
    base = torch.tensor([[0.0, 0.0, 10.0, 10.0], [2.0, 0.0, 12.0, 10.0], [4.0, 0.0, 14.0, 10.0]])
    boxes = base.repeat(300, 1)
    scores = torch.tensor([0.9, 0.8, 0.7]).repeat(300)
    labels = torch.arange(300).repeat_interleave(3)
    keep = class_wise_nms(boxes, scores, labels, 0.5)
    assert len(calls) == 3  # sweeps: all kept -> 1, 2 dropped -> 1 dropped, 2 kept -> fixed
    assert keep.shape[0] == 600  # boxes 0 and 2 of each class (IoU(0, 2) = 6/14 < 0.5)
    assert torch.equal(keep, _per_class_nms(boxes, scores, labels, 0.5))


class _RecordingLoss(nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, logits, labels):
        self.calls.append((tuple(logits.shape), labels.clone()))
        return logits.sum() * 0 + 1.25


class _ExtraRows(StepwiseRoIHeads):
    """Appends 4 copies of the first pooled row with label 2 and records the observed output."""

    def extend_box_rows(self, rows, features, samples, targets, image_shapes):
        extra = rows.features[:1].repeat(4, 1, 1, 1)
        return BoxRows(
            torch.cat([rows.features, extra]),
            torch.cat([rows.labels, torch.full((4,), 2)]),
            torch.cat([rows.regression_targets, torch.zeros(4, 4)]),
            rows.num_proposal_rows,
        )

    def observe_box_predictions(self, output):
        self.observed = output


def test_hooks_pluggable_loss_and_extra_rows():
    box_pool, box_head, box_pred, mask_pool, mask_head, _ = _parts()
    loss = _RecordingLoss()
    heads = _ExtraRows(box_pool, box_head, box_pred, *_SETTINGS, mask_roi_pool=mask_pool,
                       mask_head=mask_head, mask_predictor=MaskPredictor(16, 16, K + 1), cls_loss=loss)
    features, proposals, targets = _inputs()
    _, losses = heads(features, proposals, IMAGE_SHAPES, targets)
    out = heads.observed
    num_props = sum(len(p) for p in out.samples.proposals)
    # 60 proposals + 3 GT boxes per image, fewer than the 64 the sampler may take.
    assert out.rows.num_proposal_rows == num_props == out.pooled.shape[0] == 2 * 63
    assert out.class_logits.shape == (num_props + 4, K + 1)
    assert out.box_regression.shape == (num_props + 4, 4 * (K + 1))
    # The pluggable loss saw all rows, appended ones included, and its value is used.
    assert loss.calls[0][0] == (num_props + 4, K + 1)
    assert loss.calls[0][1][-4:].tolist() == [2, 2, 2, 2]
    assert losses["loss_classifier"].item() == 1.25
    # Per-GT assignment is available: positive proposals point at a GT of their class.
    for labels, matched, target in zip(out.samples.labels, out.samples.matched_idxs, targets):
        pos = labels > 0
        if pos.any():
            assert torch.equal(target["labels"][matched[pos]], labels[pos])


def test_l1_box_loss_by_hand():
    _, heads = _stock_and_ours(box_loss="l1")
    box_regression = torch.zeros(3, 4 * (K + 1))
    box_regression[0, 4 * 2 : 4 * 3] = torch.tensor([0.5, -0.5, 1.0, 0.0])
    labels = torch.tensor([2, 0, 0])
    targets = torch.tensor([[0.0, 0.0, 0.0, 2.0], [9.0, 9.0, 9.0, 9.0], [0.0, 0.0, 0.0, 0.0]])
    # |0.5| + |-0.5| + |1| + |0 - 2| = 4, divided by 3 rows; background rows do not count.
    torch.testing.assert_close(heads.box_regression_loss(box_regression, labels, targets),
                               torch.tensor(4.0 / 3.0))


def test_missing_target_key_names_index():
    _, heads = _stock_and_ours()
    features, proposals, targets = _inputs()
    del targets[1]["masks"]
    with pytest.raises(ValueError, match=r"targets\[1\] has no 'masks'"):
        heads(features, proposals, IMAGE_SHAPES, targets)
