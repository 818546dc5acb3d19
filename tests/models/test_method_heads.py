"""Long-tail methods as options of the RoI head: predictor width and initialisation per
loss, the normed classifier, scores per method at inference, NorCal, and the config keys."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import MultiScaleRoIAlign

from loce.config import load_config
from loce.config.model import CLS_LOSSES, ModelConfig
from loce.errors import ConfigError
from loce.losses import (
    LOSS_NAMES,
    CrossEntropyLoss,
    ECMLoss,
    EQLLoss,
    EQLv2Loss,
    FederatedLoss,
    GumbelLoss,
    SeesawLoss,
    build_classification_loss,
)
from loce.models import build_mask_rcnn
from loce.models.mask_rcnn import ClassStatistics
from loce.models.predictors import BoxPredictor, NormedLinear
from loce.models.roi_heads import StepwiseRoIHeads, norcal_scores

K = 4
# Class 1 frequent, 4 rare: image frequencies 0.5, 0.25, 0.1, 0.05 of 20 images.
STATS = ClassStatistics(image_counts=(10, 5, 2, 1), instance_counts=(30, 8, 2, 1),
                        num_images=20, source="stats.json")
LOSS_CLASSES = {
    "cross_entropy": CrossEntropyLoss,
    "equilibrium": CrossEntropyLoss,  # the LOCE heads compute it; softmax scores
    "eql": EQLLoss,
    "eqlv2": EQLv2Loss,
    "seesaw": SeesawLoss,
    "federated": FederatedLoss,
    "ecm": ECMLoss,
    "gumbel": GumbelLoss,
}


def small_config(cls_loss: str = "cross_entropy", classifier: str = "linear") -> ModelConfig:
    # The whole ResNet frozen: these tests are about the heads, and its backward is slow.
    cfg = ModelConfig(backbone="resnet18", backbone_weights="none", fpn_channels=32,
                      frozen_stages=4)
    cfg.rpn.pre_nms_top_n_train = cfg.rpn.pre_nms_top_n_test = 100
    cfg.rpn.post_nms_top_n_train = cfg.rpn.post_nms_top_n_test = 30
    cfg.roi.batch_size_per_image = 32
    cfg.roi.representation_size = 32
    cfg.roi.cls_loss = cls_loss
    cfg.roi.classifier = classifier
    cfg.mask.head_layers = [16]
    cfg.mask.upsample_channels = 16
    cfg.test.detections_per_img = 20
    return cfg


def random_batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for h, w, n in ((96, 128, 3), (64, 96, 2)):
        images.append(torch.rand(3, h, w, generator=g))
        xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.5, h * 0.5])
        boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 30 + 16], 1)
        boxes = torch.minimum(boxes, torch.tensor([w, h, w, h], dtype=torch.float32))
        masks = torch.zeros(n, h, w, dtype=torch.uint8)
        for j, b in enumerate(boxes.long()):
            masks[j, b[1] : b[3], b[0] : b[2]] = 1
        targets.append({"boxes": boxes, "labels": torch.randint(1, K + 1, (n,), generator=g),
                        "masks": masks})
    return images, targets


def test_config_names_are_the_factory_names():
    assert CLS_LOSSES == LOSS_NAMES


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_predictor_width_loss_and_initialisation_per_method(name):
    torch.manual_seed(0)
    model = build_mask_rcnn(small_config(name), K, load_backbone=False, class_stats=STATS)
    heads = model.roi_heads
    assert type(heads.cls_loss) is LOSS_CLASSES[name]
    cls_score = heads.box_predictor.cls_score
    width = K + 2 if name == "seesaw" else K + 1
    assert cls_score.out_features == width
    # Box deltas and mask channels stay K + 1 whatever the loss.
    assert heads.box_predictor.bbox_pred.out_features == 4 * (K + 1)
    assert heads.mask_predictor.num_classes == K + 1
    bias, weight = cls_score.bias, cls_score.weight
    if name in ("eql", "eqlv2"):
        torch.testing.assert_close(bias, torch.full((width,), -math.log(999.0)))
        assert 0.008 < weight.std() < 0.012
    elif name == "federated":
        torch.testing.assert_close(bias, torch.full((width,), -math.log(99.0)))
    elif name == "gumbel":
        torch.testing.assert_close(bias, torch.full((width,), -2.0))
        torch.testing.assert_close(weight, torch.full_like(weight, 0.001))
    else:  # the parity (mmdet) initialisation: normal std 0.01, bias 0
        assert bias.abs().max() == 0 and 0.008 < weight.std() < 0.012
    # The loss is a submodule: its buffers are in the state dict under roi_heads.cls_loss.
    buffers = {f"roi_heads.cls_loss.{n}" for n, _ in heads.cls_loss.named_buffers()}
    assert buffers <= set(model.state_dict())


def test_cross_entropy_keeps_torchvisions_predictor():
    model = build_mask_rcnn(small_config(), K, load_backbone=False)
    assert type(model.roi_heads.box_predictor) is FastRCNNPredictor
    assert model.roi_heads.norcal_gamma is None
    assert not any("norcal" in k or "cls_loss" in k for k in model.state_dict())


def test_loss_hyperparameters_come_from_the_config():
    cfg = small_config("seesaw", "normed")
    cfg.roi.seesaw.p, cfg.roi.seesaw.q, cfg.roi.seesaw.sync_counts = 0.5, 1.0, True
    cfg.roi.cls_loss_weight = 2.0
    loss = build_mask_rcnn(cfg, K, load_backbone=False).roi_heads.cls_loss
    assert (loss.p, loss.q, loss.sync_counts, loss.loss_weight) == (0.5, 1.0, True, 2.0)
    cfg = small_config("eql")
    cfg.roi.eql.freq_threshold = 0.2
    loss = build_mask_rcnn(cfg, K, load_backbone=False, class_stats=STATS).roi_heads.cls_loss
    # f = [0.5, 0.25, 0.1, 0.05]: classes 3 and 4 are below 0.2.
    assert loss.tail.tolist() == [0.0, 0.0, 1.0, 1.0]
    cfg = small_config("ecm")
    cfg.roi.ecm.fg_bg_ratio = 2.0
    loss = build_mask_rcnn(cfg, K, load_backbone=False, class_stats=STATS).roi_heads.cls_loss
    # n_0 = 2 * 41 = 82, N = 123: background delta = ln(82 / 41) / 4.
    torch.testing.assert_close(loss.delta[0].item(), math.log(2.0) / 4, rtol=1e-6, atol=1e-6)
    cfg = small_config("federated")
    cfg.roi.federated.freq_weight_power = 1.0
    loss = build_mask_rcnn(cfg, K, load_backbone=False, class_stats=STATS).roi_heads.cls_loss
    assert loss.class_weights.tolist() == [10.0, 5.0, 2.0, 1.0]


@pytest.mark.parametrize("name", ["eql", "federated", "ecm", "gumbel"])
def test_losses_built_from_statistics_need_them(name):
    with pytest.raises(ConfigError, match=rf"model\.roi\.cls_loss='{name}'.*data\.train_ann"):
        build_mask_rcnn(small_config(name), K, load_backbone=False)
    other = ClassStatistics((1, 1), (1, 1), 2, source="other.json")
    with pytest.raises(ConfigError, match=r"other\.json has 2 categories.*built for 4"):
        build_mask_rcnn(small_config(name), K, load_backbone=False, class_stats=other)


def test_class_statistics_checks():
    assert STATS.image_frequency() == [0.5, 0.25, 0.1, 0.05] and STATS.num_classes == 4
    with pytest.raises(ValueError, match=r"s\.json: image_counts\[1\] = 9 exceeds num_images"):
        ClassStatistics((1, 9), (1, 9), 5, source="s.json")
    with pytest.raises(ValueError, match="instance_counts must be >= 0, found -1 for class label 2"):
        ClassStatistics((1, 1), (1, -1), 5)
    with pytest.raises(ValueError, match="2 image counts but 1 instance counts"):
        ClassStatistics((1, 1), (1,), 5)


def test_unknown_loss_and_classifier_names_list_the_valid_ones():
    with pytest.raises(ConfigError, match="cls_loss.*eqlv2"):
        load_config(None, ["model.roi.cls_loss=eqlv3"])
    with pytest.raises(ConfigError, match="classifier.*normed"):
        load_config(None, ["model.roi.classifier=tilted"])
    cfg = ModelConfig()
    cfg.roi.cls_loss = "focal"  # built in Python: checked by validate
    with pytest.raises(ConfigError, match=r"model\.roi\.cls_loss must be one of .*'gumbel'"):
        cfg.validate()
    cfg = ModelConfig()
    cfg.roi.seesaw.eps = 0.0
    with pytest.raises(ConfigError, match=r"model\.roi\.seesaw\.eps must be in \(0, 1\]"):
        cfg.validate()


def test_method_sections_round_trip_through_yaml_overrides():
    cfg = load_config(None, ["model.roi.cls_loss=seesaw", "model.roi.classifier=normed",
                             "model.roi.seesaw.p=0.6", "model.test.norcal_gamma=null"])
    assert (cfg.model.roi.cls_loss, cfg.model.roi.classifier, cfg.model.roi.seesaw.p) == (
        "seesaw", "normed", 0.6)
    merged = OmegaConf.merge(OmegaConf.structured(ModelConfig), {"roi": {"eqlv2": {"mu": 0.7}}})
    assert OmegaConf.to_object(merged).roi.eqlv2.mu == 0.7


@pytest.mark.parametrize(("section", "other"), [("eql", "gumbel"), ("gumbel", "eql")])
def test_tail_threshold_sections_are_separate_and_named(section, other):
    from loce.config import config_from_dict, config_to_dict

    cfg = load_config(None, [f"model.roi.{section}.freq_threshold=0.0011"])
    assert getattr(cfg.model.roi, section).freq_threshold == 0.0011
    assert getattr(cfg.model.roi, other).freq_threshold == 0.00177
    back = config_from_dict(config_to_dict(cfg))
    assert config_to_dict(back) == config_to_dict(cfg)
    assert config_to_dict(cfg)["model"]["roi"][section] == {"freq_threshold": 0.0011}
    with pytest.raises(ConfigError, match=rf"model\.roi\.{section}\.freq_threshold must be in \[0, 1\]"):
        load_config(None, [f"model.roi.{section}.freq_threshold=2"])


# --------------------------------------------------------------------------- normed classifier


def test_normed_linear_by_hand():
    """docs/methods.md §4.6 D: x = [3, 4], W = [[1, 0], [0, 2]], b = 0, tau = 20 -> [12, 16]."""
    layer = NormedLinear(2, 2, scale=20.0)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
    out = layer(torch.tensor([[3.0, 4.0]]))
    torch.testing.assert_close(out, torch.tensor([[12.0, 16.0]]), rtol=0, atol=1e-4)
    with torch.no_grad():
        layer.bias.copy_(torch.tensor([1.0, -1.0]))
    torch.testing.assert_close(layer(torch.tensor([[3.0, 4.0]])), torch.tensor([[13.0, 15.0]]),
                               rtol=0, atol=1e-4)
    # A zero feature (all-ReLU-off) gives the bias, not NaN.
    torch.testing.assert_close(layer(torch.zeros(1, 2)), torch.tensor([[1.0, -1.0]]))
    # The bias is trained.
    layer(torch.tensor([[3.0, 4.0]])).sum().backward()
    assert layer.bias.grad is not None and layer.weight.grad is not None


@pytest.mark.parametrize("name", ["cross_entropy", "eqlv2", "seesaw"])
def test_normed_classifier_is_available_to_any_loss(name):
    torch.manual_seed(0)
    model = build_mask_rcnn(small_config(name, "normed"), K, load_backbone=False)
    pred = model.roi_heads.box_predictor
    assert isinstance(pred, BoxPredictor) and isinstance(pred.cls_score, NormedLinear)
    assert pred.cls_score.scale == 20.0
    if name == "eqlv2":  # the method's bias initialisation also applies to the normed layer
        torch.testing.assert_close(pred.cls_score.bias, torch.full((K + 1,), -math.log(999.0)))
    logits, deltas = pred(torch.randn(3, 32))
    assert logits.shape == (3, K + 2 if name == "seesaw" else K + 1) and deltas.shape == (3, 20)


def test_box_predictor_linear_draws_like_torchvision():
    torch.manual_seed(3)
    stock = FastRCNNPredictor(8, 5)
    torch.manual_seed(3)
    ours = BoxPredictor(8, 5, 5, "linear")
    for a, b in zip(stock.state_dict().items(), ours.state_dict().items(), strict=True):
        assert a[0] == b[0] and torch.equal(a[1], b[1])
    with pytest.raises(ValueError, match="classifier must be one of"):
        BoxPredictor(8, 5, 5, "tilted")


# --------------------------------------------------------------------------- scores per method


def _heads(cls_loss, num_logits: int) -> StepwiseRoIHeads:
    torch.manual_seed(0)
    box_pred = BoxPredictor(32, num_logits, K + 1)
    return StepwiseRoIHeads(MultiScaleRoIAlign(["0"], 7, 2), TwoMLPHead(8 * 49, 32), box_pred,
                        0.5, 0.5, 64, 0.25, None, 1e-4, 0.5, 50, cls_loss=cls_loss)


# Zero logits: the class score of every class under each method's rule
# (docs/methods.md §2.6, 3.6, 4.6 C, 5.3, 6.6, 7.6): softmax 1/(K+1); sigmoid 0.5; sigmoid x (1 -
# sigmoid) 0.25; Gumbel e^-1; Seesaw softmax over K classes x objectness 0.5.
ZERO_LOGIT_SCORE = {
    "cross_entropy": 1 / (K + 1),
    "eql": 0.5,
    "federated": 0.5,
    "eqlv2": 0.25,
    "ecm": 0.25,
    "gumbel": math.exp(-1.0),
    "seesaw": 0.5 / K,
}


@pytest.mark.parametrize("name", list(ZERO_LOGIT_SCORE))
def test_detections_are_scored_by_the_methods_rule(name):
    kwargs = {"eql": {"image_frequency": STATS.image_frequency()},
              "federated": {"image_counts": STATS.image_counts},
              "ecm": {"instance_counts": STATS.instance_counts},
              "gumbel": {"image_frequency": STATS.image_frequency()}}.get(name, {})
    loss = build_classification_loss(name, K, **kwargs)
    width = loss.num_logits(K)
    heads = _heads(loss, width).eval()
    proposals = [torch.tensor([[10.0, 10.0, 50.0, 60.0]]).repeat(3, 1),
                 torch.tensor([[0.0, 0.0, 20.0, 30.0]])]
    logits = torch.zeros(4, width)
    boxes, scores, labels = heads.postprocess_detections(
        logits, torch.zeros(4, 4 * (K + 1)), proposals, [(80, 80), (40, 40)])
    for b, s, lab in zip(boxes, scores, labels):
        # Identical boxes: one detection per class survives NMS, each with the rule's score.
        assert sorted(lab.tolist()) == list(range(1, K + 1))
        torch.testing.assert_close(s, torch.full((K,), ZERO_LOGIT_SCORE[name]))
        assert b.shape == (K, 4)
    # The scores ignore column 0 (background) and any extra column, whatever their value.
    if name in ("eql", "federated", "gumbel"):
        logits[:, 0] = 5.0
        torch.testing.assert_close(heads.class_scores(logits)[:, 1:],
                                   torch.full((4, K), ZERO_LOGIT_SCORE[name]))


def test_objectness_lowers_eqlv2_and_seesaw_scores():
    eqlv2 = _heads(EQLv2Loss(K), K + 1)
    z = torch.zeros(1, K + 1)
    z[0, 0] = math.log(3.0)  # sigmoid(z_0) = 0.75
    torch.testing.assert_close(eqlv2.class_scores(z)[0, 1:], torch.full((K,), 0.5 * 0.25))
    seesaw = _heads(SeesawLoss(K), K + 2)
    z = torch.zeros(1, K + 2)
    z[0, -1] = math.log(3.0)  # objectness softmax(o_fg = ln 3, o_bg = 0)_fg = 0.75
    z[0, 1] = math.log(2.0)  # class 1 twice as likely as each other class
    expected = torch.tensor([2.0, 1.0, 1.0, 1.0]) / 5 * 0.75
    torch.testing.assert_close(seesaw.class_scores(z)[0, 1:], expected)
    torch.testing.assert_close(seesaw.class_scores(z)[0, 0], torch.tensor(0.25))


@pytest.mark.parametrize("name", ["seesaw", "eqlv2"])
def test_train_and_eval_step_through_the_model(name):
    """A K + 2 (Seesaw) or objectness (EQLv2) model trains, updates its state, and detects."""
    torch.manual_seed(1)
    model = build_mask_rcnn(small_config(name, "normed"), K, load_backbone=False)
    loss_module = model.roi_heads.cls_loss
    images, targets = random_batch(2)
    losses = model(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness",
                           "loss_rpn_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    grad = model.roi_heads.box_predictor.cls_score.weight.grad
    assert grad is not None and grad.shape[0] == (K + 2 if name == "seesaw" else K + 1)
    state = {n: b.clone() for n, b in loss_module.named_buffers()}
    if name == "seesaw":
        # the sampled RoIs were counted, background and foreground
        assert state["cum_samples"][0] > 0 and state["cum_samples"][1:].sum() > 0
    else:
        assert state["pos_grad"].sum() > 0 and state["neg_grad"].sum() > 0
    model.eval()
    with torch.no_grad():
        dets = model(images)
    for det in dets:
        assert det["labels"].numel() == 0 or (1 <= det["labels"].min() <= det["labels"].max() <= K)
        assert torch.all((det["scores"] > 0) & (det["scores"] <= 1))
    # Inference changes no running state.
    for n, b in loss_module.named_buffers():
        assert torch.equal(b, state[n]), n


# --------------------------------------------------------------------------- NorCal


def test_norcal_scores_by_hand():
    """docs/methods.md §8.6: K = 2, N = [100, 1], gamma = 0.5, zero logits ->
    [0.476190, 0.047619, 0.476190]."""
    log_n = torch.tensor([100.0, 1.0]).log()
    got = norcal_scores(torch.zeros(1, 3), log_n, 0.5)
    torch.testing.assert_close(got, torch.tensor([[1 / 2.1, 0.1 / 2.1, 1 / 2.1]]))
    z = torch.randn(5, 3)
    torch.testing.assert_close(norcal_scores(z, log_n, 0.0), torch.softmax(z, 1))
    # "probs" mode (softmax, divide by N^gamma, renormalise) gives the same (docs/methods.md §8.6).
    p = torch.softmax(z, 1) * torch.cat([torch.ones(1), torch.tensor([100.0, 1.0]) ** -0.5])
    torch.testing.assert_close(norcal_scores(z, log_n, 0.5), p / p.sum(1, keepdim=True))
    with pytest.raises(ValueError, match=r"log_counts \[K\]"):
        norcal_scores(torch.zeros(1, 3), torch.zeros(3), 0.5)


def test_norcal_in_the_heads_and_the_builder():
    heads = _heads(CrossEntropyLoss(K), K + 1).eval()
    counts = torch.tensor([100.0, 10.0, 0.0, 1.0])  # a class without images counts as 1
    heads.set_norcal(counts, 1.0)
    z = torch.zeros(2, K + 1)
    expected = torch.softmax(-torch.tensor([0.0, math.log(100), math.log(10), 0.0, 0.0]), 0)
    torch.testing.assert_close(heads.class_scores(z), expected.expand(2, -1))
    assert "norcal_log_counts" not in heads.state_dict()  # not part of the trained model
    heads.set_norcal(None, None)
    torch.testing.assert_close(heads.class_scores(z), torch.full((2, K + 1), 1 / (K + 1)))
    with pytest.raises(ValueError, match="NorCal calibrates softmax classifiers.*EQLv2Loss"):
        _heads(EQLv2Loss(K), K + 1).set_norcal(counts, 0.5)
    with pytest.raises(ValueError, match=r"shape \[K\] = \[4\]"):
        heads.set_norcal(torch.ones(3), 0.5)

    cfg = small_config()
    cfg.test.norcal_gamma = 0.5
    model = build_mask_rcnn(cfg, K, load_backbone=False, class_stats=STATS)
    assert model.roi_heads.norcal_gamma == 0.5
    torch.testing.assert_close(model.roi_heads.norcal_log_counts,
                               torch.tensor([10.0, 5.0, 2.0, 1.0]).log())
    plain = build_mask_rcnn(small_config(), K, load_backbone=False)
    assert model.state_dict().keys() == plain.state_dict().keys()
    with pytest.raises(ConfigError, match=r"model\.test\.norcal_gamma needs the training image"):
        build_mask_rcnn(cfg, K, load_backbone=False)


def test_norcal_config_checks():
    cfg = small_config("eqlv2")
    cfg.test.norcal_gamma = 0.5
    with pytest.raises(ConfigError, match=r"model\.test\.norcal_gamma calibrates softmax.*'eqlv2'"):
        cfg.validate()
    cfg = small_config()
    cfg.test.norcal_gamma = -1.0
    with pytest.raises(ConfigError, match=r"model\.test\.norcal_gamma must be a finite number >= 0"):
        cfg.validate()
    cfg = load_config(None, ["model.test.norcal_gamma=0.3"])
    assert cfg.model.test.norcal_gamma == 0.3


def test_classification_step_is_the_configured_loss():
    loss = EQLv2Loss(K)
    heads = _heads(loss, K + 1).train()
    z = torch.zeros(2, K + 1)
    labels = torch.tensor([1, 0])
    # docs/methods.md §3.6 iteration 1 (K = 2 there): 3 ln 2 for K = 2; here K + 1
    # columns all at weight 1.
    got = heads.classification_loss(z, labels)
    torch.testing.assert_close(got, torch.tensor((K + 1) * math.log(2.0)))
    assert loss.pos_grad[0].item() == 0.5  # the state was updated by the step


# --------------------------------------------------------------------------- bundled configs

METHODS = ("eql", "eqlv2", "seesaw", "federated", "ecm", "gumbel", "rfs")


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


@pytest.mark.parametrize("method", METHODS)
def test_synthetic_method_configs_change_only_the_method(method):
    """The study compares methods: each synthetic config is the CE fine-tune of the shared
    stage-1 model with only the classification changed (loss and its section, classifier
    form and restart, or the sampler)."""
    from loce.config import config_to_dict

    base = _flat(config_to_dict(load_config("finetune_ce_mask_rcnn_r18_fpn_normed_mask_synthetic")))
    cfg = load_config(f"{method}_mask_rcnn_r18_fpn_normed_mask_synthetic")
    got = _flat(config_to_dict(cfg))
    changed = {k for k in base if base[k] != got[k]} - {"name", "train.output_dir"}
    if method == "rfs":
        assert changed == {"data.sampler", "data.repeat_threshold"}
        assert cfg.data.sampler == "repeat_factor"
    else:
        assert cfg.model.roi.cls_loss == method
        assert cfg.train.reinit == ["roi_heads.box_predictor.cls_score"]
        assert changed - {"train.reinit"} and all(
            k.startswith("model.roi.") for k in changed - {"train.reinit"}), changed
    if method in ("seesaw", "ecm"):
        assert cfg.model.roi.classifier == "normed"
    assert cfg.train.output_dir == f"runs/{method}_mask_rcnn_r18_fpn_normed_mask_synthetic"


# The published recipe of each method (docs/methods.md §1.8 and the per-method sections).
LVIS_RECIPES = {
    "eql_mask_rcnn_r50_fpn_mstrain_1x_lvis_v1": ("eql", 12, [8, 11], "random", "linear"),
    "eqlv2_mask_rcnn_r50_fpn_mstrain_1x_lvis_v1": ("eqlv2", 12, [8, 11], "random", "linear"),
    "seesaw_mask_rcnn_r50_fpn_normed_mask_rfs_mstrain_2x_lvis_v1":
        ("seesaw", 24, [16, 22], "repeat_factor", "normed"),
    "federated_mask_rcnn_r50_fpn_rfs_mstrain_1x_lvis_v1":
        ("federated", 12, [8, 11], "repeat_factor", "linear"),
    "ecm_mask_rcnn_r50_fpn_normed_mask_rfs_mstrain_2x_lvis_v1":
        ("ecm", 24, [20, 22], "repeat_factor", "normed"),
    "gumbel_mask_rcnn_r50_fpn_normed_mask_rfs_mstrain_2x_lvis_v1":
        ("gumbel", 24, [16, 22], "repeat_factor", "linear"),
    "rfs_mask_rcnn_r50_fpn_normed_mask_mstrain_2x_lvis_v1":
        ("cross_entropy", 24, [16, 22], "repeat_factor", "linear"),
}


@pytest.mark.parametrize("name", list(LVIS_RECIPES))
def test_lvis_v1_method_configs_follow_the_published_recipes(name):
    loss, epochs, steps, sampler, classifier = LVIS_RECIPES[name]
    cfg = load_config(name)
    assert (cfg.model.roi.cls_loss, cfg.solver.epochs, cfg.solver.steps, cfg.data.sampler,
            cfg.model.roi.classifier) == (loss, epochs, steps, sampler, classifier)
    assert cfg.model.backbone == "resnet50" and cfg.data.train_ann.endswith("lvis_v1_train.json")
    assert cfg.model.mask.predictor == ("normed" if "normed_mask" in name else "plain")
    assert cfg.solver.lr == 0.02 and cfg.data.repeat_threshold == 0.001
    # 16 images per step: 8 GPUs x 2, or GOL's 4 x 4.
    assert cfg.data.images_per_gpu == (4 if loss == "gumbel" else 2)
    if loss in ("eql", "gumbel"):
        assert getattr(cfg.model.roi, loss).freq_threshold == 0.0011  # the LVIS v1 lambda
    if loss == "gumbel":
        assert cfg.model.test.nms_thresh == 0.3
    if loss == "ecm":
        assert (cfg.solver.warmup_iters, cfg.solver.warmup_ratio, cfg.solver.grad_clip) == (
            10000, 1e-4, 5.0)
