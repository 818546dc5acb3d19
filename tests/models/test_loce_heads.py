"""LoceRoIHeads: the LOCE training step checked by hand, and equal to the plain heads
where LOCE is switched off."""

from __future__ import annotations

import copy
import math
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import MultiScaleRoIAlign

from loce.losses.equilibrium import equilibrium_loss
from loce.method.box_jitter import jitter_boxes
from loce.models.loce_heads import LoceRoIHeads, group_mean
from loce.models.predictors import MaskPredictor
from loce.models.roi_heads import BoxRows, BoxTrainingOutput, RoISamples, StepwiseRoIHeads

K = 5
D = 16
IMAGE_SHAPES = [(128, 160), (96, 128)]
_SETTINGS = (0.5, 0.5, 64, 0.25, None, 0.05, 0.5, 50)


def _parts(seed: int = 0):
    torch.manual_seed(seed)
    return dict(
        box_roi_pool=MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2),
        box_head=TwoMLPHead(D * 7 * 7, 32),
        box_predictor=FastRCNNPredictor(32, K + 1),
        mask_roi_pool=MultiScaleRoIAlign(["0", "1", "2", "3"], 14, 2),
        mask_head=torch.nn.Sequential(torch.nn.Conv2d(D, D, 3, padding=1), torch.nn.ReLU()),
        mask_predictor=MaskPredictor(D, D, K + 1),
    )


def _plain_heads(**kwargs) -> StepwiseRoIHeads:
    return _heads_from(StepwiseRoIHeads, _parts(), **kwargs)


def _heads_from(cls, parts, **kwargs):
    return cls(parts["box_roi_pool"], parts["box_head"], parts["box_predictor"], *_SETTINGS,
               mask_roi_pool=parts["mask_roi_pool"], mask_head=parts["mask_head"],
               mask_predictor=parts["mask_predictor"], **kwargs)


def _loce_heads(seed: int = 5, **kwargs) -> LoceRoIHeads:
    options = dict(num_classes=K, feature_shape=(D, 7, 7), memory_dtype="float32",
                   generator=torch.Generator().manual_seed(seed))
    options.update(kwargs)
    return _heads_from(LoceRoIHeads, _parts(), **options)


def _inputs(seed: int = 1, empty_second: bool = False):
    g = torch.Generator().manual_seed(seed)
    features = OrderedDict(
        (name, torch.randn(2, D, 128 // s, 160 // s, generator=g))
        for name, s in (("0", 4), ("1", 8), ("2", 16), ("3", 32))
    )
    proposals, targets = [], []
    for i, (h, w) in enumerate(IMAGE_SHAPES):
        n_props = 60 if i == 0 else 25  # different RoI counts per image (docs/method.md §11.2)
        xy = torch.rand(n_props, 2, generator=g) * torch.tensor([w * 0.7, h * 0.7])
        wh = torch.rand(n_props, 2, generator=g) * 40 + 4
        proposals.append(torch.cat([xy, xy + wh], 1))
        n = 0 if (empty_second and i == 1) else 3
        gxy = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.5, h * 0.5])
        gwh = torch.rand(n, 2, generator=g) * 40 + 10
        boxes = torch.cat([gxy, gxy + gwh], 1)
        masks = torch.zeros(n, h, w, dtype=torch.uint8)
        for j, b in enumerate(boxes.long()):
            masks[j, b[1] : b[3], b[0] : b[2]] = 1
        labels = torch.tensor([2, 4, 2][:n] if i == 0 else [1, 4, 5][:n], dtype=torch.int64)
        targets.append({"boxes": boxes, "labels": labels, "masks": masks})
    return features, proposals, targets


def _log_probs(rows: list[tuple[int, float]]) -> torch.Tensor:
    """Logits whose softmax gives probability ``v`` to class ``c`` and shares the rest."""
    out = torch.empty(len(rows), K + 1)
    for i, (c, v) in enumerate(rows):
        p = torch.full((K + 1,), (1.0 - v) / K)
        p[c] = v
        out[i] = p.log()
    return out


# ---------------------------------------------------------------------------- mean score


def _hand_output() -> BoxTrainingOutput:
    """Image 0: 3 RoIs, GTs (class 2, class 3); image 1: 4 RoIs, GTs (2, 4, 1); 3 memory rows.

    Positive RoIs are not grouped at the front of their image, and image 0 has fewer RoIs than
    image 1, as happens when an image runs out of negatives.
    """
    labels = [torch.tensor([2, 0, 3]), torch.tensor([4, 2, 4, 0])]
    matched = [torch.tensor([0, 0, 1]), torch.tensor([1, 0, 1, 0])]
    samples = RoISamples([torch.zeros(3, 4), torch.zeros(4, 4)], matched, labels,
                         [torch.zeros(3, 4), torch.zeros(4, 4)])
    logits = _log_probs([(2, 0.5), (0, 0.9), (3, 0.2),  # image 0
                         (4, 0.6), (2, 0.3), (4, 0.8), (0, 0.7),  # image 1
                         (5, 0.1), (5, 0.3), (1, 0.4)])  # memory rows: classes 5, 5, 1
    row_labels = torch.cat([*labels, torch.tensor([5, 5, 1])])
    rows = BoxRows(torch.zeros(10, D, 7, 7), row_labels, torch.zeros(10, 4), num_proposal_rows=7)
    return BoxTrainingOutput(samples, rows.features[:7], rows, logits, torch.zeros(10, 4 * (K + 1)))


def test_per_gt_observations_follow_the_assignment_not_fixed_offsets():
    heads = _loce_heads()
    output = _hand_output()
    labels, values = heads.score_observations(output)
    # Per GT: image 0 GT 0 (class 2) <- row 0; GT 1 (class 3) <- row 2; image 1 GT 0
    # (class 2) <- row 1; GT 1 (class 4) <- rows 0 and 2: (0.6 + 0.8) / 2; GT 2: no positive.
    # Then one per drawn class: class 1 <- 0.4; class 5 <- (0.1 + 0.3) / 2.
    assert labels.tolist() == [2, 3, 2, 4, 1, 5]
    torch.testing.assert_close(values, torch.tensor([0.5, 0.2, 0.3, 0.7, 0.4, 0.2],
                                                    dtype=torch.float64), rtol=0, atol=1e-6)
    # The original slices image i's rows from offset batch_size_per_image * i
    # (docs/method.md §11.2). With 4 RoIs per image and 3 in image 0, image 1's GT 1 would be read
    # from rows 4 + [0, 2] (image 1's rows 1 and 3: a class-2 RoI and a background RoI)
    # instead of rows 3 and 5.
    probs = F.softmax(output.class_logits, dim=1)
    fixed_offset = float(probs[[4 + 0, 4 + 2], 4].mean())
    assert abs(fixed_offset - 0.7) > 0.5


def test_tracker_gets_gt_and_drawn_class_observations():
    heads = _loce_heads()
    heads.observe_box_predictions(_hand_output())
    s = heads.score_tracker.scores
    a = 0.9

    def ema(n, mean, old=0.01):
        return a**n * old + (1 - a**n) * mean

    expected = torch.tensor([0.01, ema(1, 0.4), ema(2, 0.4), ema(1, 0.2), ema(1, 0.7), ema(1, 0.2)])
    torch.testing.assert_close(s, expected, rtol=0, atol=1e-6)
    assert heads.last_step.observed_labels.tolist() == [2, 3, 2, 4, 1, 5]


def test_group_mean_and_empty_groups():
    labels, means = group_mean(torch.tensor([7, 3, 7]), torch.tensor([1, 2, 1]),
                               torch.tensor([0.2, 0.5, 0.4]))
    assert labels.tolist() == [2, 1]
    torch.testing.assert_close(means, torch.tensor([0.5, 0.3], dtype=torch.float64))
    labels, means = group_mean(torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64),
                               torch.zeros(0))
    assert labels.shape == (0,) and means.shape == (0,)


# ---------------------------------------------------------------------------- the full step


def _prefill(heads: LoceRoIHeads, per_class: int = 3) -> None:
    g = torch.Generator().manual_seed(11)
    memory = heads.memory_for("cpu")
    labels = torch.arange(1, K + 1).repeat_interleave(per_class)
    memory.push(torch.randn(len(labels), D, 7, 7, generator=g), labels,
                torch.randn(len(labels), 4, generator=g))


class _Spy:
    def __init__(self, fn):
        self.fn = fn
        self.calls = []

    def __call__(self, *args, **kwargs):
        # copies: the scores tensor is updated in place later in the step
        seen = tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in args)
        out = self.fn(*args, **kwargs)
        self.calls.append((seen, kwargs, out))
        return out


@pytest.mark.parametrize("empty_second", [False, True])
def test_training_step_by_hand(empty_second):
    heads = _loce_heads()
    heads.train()
    _prefill(heads)
    memory = heads.feature_memory
    features, proposals, targets = _inputs(empty_second=empty_second)
    before = heads.score_tracker.scores.clone()
    old_count = memory.count.clone()
    sample_spy = _Spy(memory.sample)
    memory.sample = sample_spy
    mask_spy = _Spy(heads.mask_features)
    heads.mask_features = mask_spy

    losses, out = heads.box_training_step(features, proposals, IMAGE_SHAPES, targets)
    losses.update(heads.mask_training_step(features, out, IMAGE_SHAPES, targets))
    r = out.rows.num_proposal_rows
    assert r == sum(len(p) for p in out.samples.proposals)

    # MFS write: 16 jittered boxes per GT, labelled with its class, targets encode jitter -> GT,
    # features pooled from the same maps. Recompute them with the same generator.
    g = torch.Generator().manual_seed(5)
    jittered = [jitter_boxes(t["boxes"], s, generator=g) for t, s in zip(targets, IMAGE_SHAPES)]
    gt_rep = torch.cat([t["boxes"].repeat_interleave(16, 0) for t in targets])
    jit_labels = torch.cat([t["labels"].repeat_interleave(16) for t in targets])
    jit_targets = heads.box_coder.encode_single(gt_rep, torch.cat(jittered))
    jit_feats = heads.box_roi_pool(features, jittered, IMAGE_SHAPES)
    counts = torch.bincount(jit_labels, minlength=K + 1)[1:]
    torch.testing.assert_close(memory.count, torch.clamp(old_count + counts, max=80))
    for c in range(1, K + 1):
        n = int(counts[c - 1])
        feats, tgts = memory.entries(c)
        sel = jit_labels == c
        torch.testing.assert_close(tgts[-n:] if n else tgts[:0], jit_targets[sel])
        torch.testing.assert_close(feats[-n:] if n else feats[:0], jit_feats[sel])
    # decoding a stored target on its jittered box gives back the GT box
    torch.testing.assert_close(heads.box_coder.decode_single(jit_targets, torch.cat(jittered)),
                               gt_rep, rtol=0, atol=1e-3)

    # MFS read with the scores from before the update; rows appended in order, aligned.
    (args, kwargs, (m_feats, m_labels, m_targets)), = sample_spy.calls
    torch.testing.assert_close(args[0], before)
    assert (args[1], args[2]) == (8, 4)
    assert m_labels.numel() == 32  # every class has stored features
    assert out.rows.labels.shape[0] == r + 32
    assert torch.equal(out.rows.labels[r:], m_labels)
    assert torch.equal(out.rows.regression_targets[r:], m_targets)
    assert torch.equal(out.rows.features[r:], m_feats)
    assert torch.equal(out.rows.features[:r], out.pooled)
    assert torch.equal(heads.last_step.memory_labels, m_labels)
    assert heads.last_step.num_pushed == len(jit_labels)

    # The scores moved before the loss; the loss uses the updated scores on all rows.
    after = heads.score_tracker.scores
    assert not torch.equal(after, before) and after[0] == 0.01
    obs_labels, obs_values = heads.score_observations(out)
    assert set(m_labels.tolist()) <= set(obs_labels.tolist())
    torch.testing.assert_close(
        losses["loss_classifier"], equilibrium_loss(out.class_logits, out.rows.labels, after))

    # Box loss: class-specific deltas of every positive row (memory rows too), smooth L1 with
    # beta 1/9 (these heads' setting), summed and divided by all rows, proposals + memory.
    labels = out.rows.labels
    pos = torch.where(labels > 0)[0]
    assert (pos >= r).sum() == 32
    deltas = out.box_regression.reshape(len(labels), K + 1, 4)[pos, labels[pos]]
    expected = F.smooth_l1_loss(deltas, out.rows.regression_targets[pos], beta=1 / 9,
                                reduction="sum") / len(labels)
    torch.testing.assert_close(losses["loss_box_reg"], expected)

    # Mask branch: positive proposals only, never memory rows.
    (m_args, _, _), = mask_spy.calls
    n_mask = sum(len(b) for b in m_args[1])
    assert n_mask == int((labels[:r] > 0).sum()) and n_mask < len(pos)
    assert torch.isfinite(sum(losses.values()))
    sum(losses.values()).backward()


def test_equilibrium_loss_with_uniform_scores_is_cross_entropy_on_all_rows():
    heads = _loce_heads()
    _prefill(heads)
    features, proposals, targets = _inputs()
    _, out = heads.box_training_step(features, proposals, IMAGE_SHAPES, targets)
    assert out.rows.labels.shape[0] > out.rows.num_proposal_rows
    heads.score_tracker.scores.fill_(0.37)
    ce = F.cross_entropy(out.class_logits, out.rows.labels)
    torch.testing.assert_close(heads.classification_loss(out.class_logits, out.rows.labels), ce)
    heads.score_tracker.scores[1] = 0.001
    assert not torch.allclose(heads.classification_loss(out.class_logits, out.rows.labels), ce)


def test_switched_off_equals_plain_heads():
    plain = _plain_heads()
    loce = _heads_from(LoceRoIHeads, copy.deepcopy(dict(plain.named_children())),
                       num_classes=K, feature_shape=(D, 7, 7), use_equilibrium_loss=False,
                       use_feature_memory=False)
    features, proposals, targets = _inputs()
    torch.manual_seed(3)
    _, expected = plain(features, [p.clone() for p in proposals], IMAGE_SHAPES, targets)
    torch.manual_seed(3)
    _, got = loce(features, [p.clone() for p in proposals], IMAGE_SHAPES, targets)
    assert set(got) == set(expected) == {"loss_classifier", "loss_box_reg", "loss_mask"}
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0)
    assert loce.feature_memory is None
    # the scores are still tracked (they would drive the memory sampler)
    assert not torch.equal(loce.score_tracker.scores, torch.full((K + 1,), 0.01))


def test_inference_is_the_plain_softmax_path():
    plain = _plain_heads().eval()
    loce = _heads_from(LoceRoIHeads, copy.deepcopy(dict(plain.named_children())),
                       num_classes=K, feature_shape=(D, 7, 7)).eval()
    loce.score_tracker.scores.uniform_(0.1, 0.9)  # must not matter at test time
    assert not loce.training
    features, proposals, _ = _inputs(seed=4)
    with torch.no_grad():
        expected, _ = plain(features, proposals, IMAGE_SHAPES)
        got, _ = loce(features, proposals, IMAGE_SHAPES)
    for e, g in zip(expected, got):
        assert len(e["boxes"]) > 0
        for key in ("boxes", "labels", "scores", "masks"):
            torch.testing.assert_close(g[key], e[key], rtol=0, atol=0)
    assert loce.feature_memory is None


def test_memory_stays_out_of_state_dict_and_dtype_moves():
    heads = _loce_heads(memory_dtype="float16")
    _prefill(heads)
    keys = set(heads.state_dict())
    assert "score_tracker.scores" in keys
    assert not any("memory" in k or "extra_state" in k for k in keys)
    assert all(not isinstance(m, type(heads.feature_memory)) for m in heads.modules())
    heads.to(torch.float64)
    assert heads.feature_memory.features.dtype == torch.float16
    assert heads.score_tracker.scores.dtype == torch.float64


def test_collapsed_jitter_is_dropped():
    heads = _loce_heads()
    # 0.5 px wide at the right border of a 100-px image: every jitter clips to x = 99.
    targets = [{"boxes": torch.tensor([[99.5, 10.0, 100.0, 40.0], [10.0, 10.0, 50.0, 60.0]]),
                "labels": torch.tensor([1, 2])}]
    boxes, labels, regs = heads.jitter_gt_boxes(targets, [(100, 100)])
    assert labels.tolist() == [2] * 16
    assert boxes[0].shape == (16, 4) and torch.isfinite(regs).all()


def test_loce_model_has_every_setting_and_weight_of_the_plain_model():
    from loce.config import load_config
    from loce.config.method import LoceConfig
    from loce.models import build_mask_rcnn

    cfg = load_config("mask_rcnn_r18_fpn_normed_mask_synthetic", [
        "model.roi.batch_size_per_image=77", "model.parity.box_loss=smooth_l1",
        "model.parity.det_min_size=0.5", "model.test.score_thresh=0.2"])
    torch.manual_seed(0)
    base = build_mask_rcnn(cfg.model, 7, load_backbone=False)
    torch.manual_seed(0)
    model = build_mask_rcnn(cfg.model, 7, load_backbone=False, loce=LoceConfig(enabled=True))
    loce = model.roi_heads
    assert type(base.roi_heads) is StepwiseRoIHeads and type(loce) is LoceRoIHeads
    assert loce.feature_shape == (64, 7, 7) and loce.num_classes == 7
    plain_values = {k: v for k, v in vars(base.roi_heads).items()
                    if not k.startswith("_") and k != "training"}
    assert plain_values, "nothing compared"
    for name, value in plain_values.items():
        theirs = getattr(loce, name)
        if isinstance(value, torch.nn.Module):
            assert type(theirs) is type(value), name
        else:
            assert vars(theirs) == vars(value) if hasattr(value, "__dict__") else theirs == value, name
    assert dict(loce.named_children()).keys() == {*dict(base.roi_heads.named_children()),
                                                  "score_tracker"}
    expected = base.state_dict()
    got = model.state_dict()
    assert set(got) == {*expected, "roi_heads.score_tracker.scores"}
    for key, value in expected.items():
        assert torch.equal(got[key], value), key
    assert loce.fg_bg_sampler.batch_size_per_image == 77 and loce.score_thresh == 0.2
    assert math.isclose(loce.det_min_size, 0.5)


def test_bad_memory_settings():
    with pytest.raises(ValueError, match="memory_dtype must be one of"):
        _loce_heads(memory_dtype="float8")
    with pytest.raises(ValueError, match="memory_device must be one of"):
        _loce_heads(memory_device="gpu")


def _small_cfg(*extra: str):
    from loce.config import load_config

    return load_config("loce_mask_rcnn_r18_fpn_normed_mask_synthetic", [
        "model.roi.representation_size=32", "model.mask.head_layers=[8]",
        "model.fpn_channels=16", *extra])


def test_build_model_with_loce_disabled_is_the_stage1_model():
    from loce.build import build_model
    from loce.models import build_mask_rcnn

    cfg = _small_cfg("loce.enabled=false")
    torch.manual_seed(0)
    stage1 = build_mask_rcnn(cfg.model, 4, load_backbone=False)
    torch.manual_seed(0)
    model = build_model(cfg, 4, load_backbone=False)
    assert type(model.roi_heads) is StepwiseRoIHeads
    assert str(model) == str(stage1)
    a, b = stage1.state_dict(), model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_build_model_with_loce_adds_only_the_scores():
    from loce.build import build_model
    from loce.models import build_mask_rcnn

    cfg = _small_cfg("loce.alpha=0.8", "loce.memory_capacity=12", "loce.classes_per_step=3")
    torch.manual_seed(0)
    stage1 = build_mask_rcnn(cfg.model, 4, load_backbone=False).state_dict()
    torch.manual_seed(0)
    model = build_model(cfg, 4, load_backbone=False)
    heads = model.roi_heads
    assert isinstance(heads, LoceRoIHeads)
    assert heads.feature_shape == (16, 7, 7)
    assert (heads.score_tracker.alpha, heads.memory_capacity, heads.classes_per_step) == (0.8, 12, 3)
    state = model.state_dict()
    assert set(state) - set(stage1) == {"roi_heads.score_tracker.scores"}
    assert set(stage1) <= set(state)
    assert all(torch.equal(stage1[k], state[k]) for k in stage1)
    # the same randomness was consumed: the next draw equals a stage-1 build's next draw
    torch.manual_seed(0)
    build_mask_rcnn(cfg.model, 4, load_backbone=False)
    expected = torch.rand(3)
    torch.manual_seed(0)
    build_model(cfg, 4, load_backbone=False)
    assert torch.equal(torch.rand(3), expected)


def test_memory_device_auto_is_the_gpu_when_training_on_cuda_else_the_host():
    from loce.models.loce_heads import memory_device_for

    cuda, cpu, meta = torch.device("cuda", 1), torch.device("cpu"), torch.device("meta")
    assert memory_device_for("auto", cuda) == cuda
    assert memory_device_for("auto", cpu) == cpu and memory_device_for("auto", meta) == cpu
    assert memory_device_for("cpu", cuda) == cpu
    assert memory_device_for("model", cuda) == cuda and memory_device_for("model", meta) == meta
