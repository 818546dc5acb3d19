"""The assembled model: build, freezing, BN mode, a train and an eval step, backbone weights."""

from __future__ import annotations

import urllib.error

import pytest
import torch
import torchvision
from torchvision.ops import FrozenBatchNorm2d

from loce.config.model import ModelConfig, ParityConfig
from loce.errors import CheckpointError, ConfigError, LoceError
from loce.models import LoceMaskRCNN, NormedMaskPredictor, StepwiseRoIHeads, build_mask_rcnn
from loce.models.mmdet_compat import (
    FrozenStatsBatchNorm2d,
    MMDetAnchorGenerator,
    MMDetMultiScaleRoIAlign,
)

K = 4


def small_config(**parity) -> ModelConfig:
    cfg = ModelConfig(backbone="resnet18", backbone_weights="none")
    cfg.rpn.pre_nms_top_n_train = cfg.rpn.pre_nms_top_n_test = 200
    cfg.rpn.post_nms_top_n_train = cfg.rpn.post_nms_top_n_test = 50
    cfg.roi.batch_size_per_image = 32
    cfg.roi.representation_size = 64
    cfg.mask.head_layers = [32]
    cfg.test.detections_per_img = 20
    for key, value in parity.items():
        setattr(cfg.parity, key, value)
    return cfg


def random_batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for h, w, n in ((160, 192, 3), (128, 160, 2)):
        images.append(torch.rand(3, h, w, generator=g))
        xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.5, h * 0.5])
        boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 40 + 16], 1)
        masks = torch.zeros(n, h, w, dtype=torch.uint8)
        for j, b in enumerate(boxes.long()):
            masks[j, b[1] : b[3], b[0] : b[2]] = 1
        targets.append({"boxes": boxes, "labels": torch.randint(1, K + 1, (n,), generator=g),
                        "masks": masks})
    return images, targets


def test_build_lvis_defaults_key_names():
    """The default (LVIS R50) model has the 307 state-dict keys of the parity key map (§3)."""
    torch.manual_seed(0)
    model = build_mask_rcnn(ModelConfig(backbone_weights="none"), num_classes=1203)
    assert isinstance(model, LoceMaskRCNN) and isinstance(model, torchvision.models.detection.MaskRCNN)
    sd = model.state_dict()
    assert len(sd) == 307
    shapes = {
        "backbone.body.layer3.5.conv1.weight": (256, 1024, 1, 1),
        "backbone.fpn.inner_blocks.3.0.weight": (256, 2048, 1, 1),
        "backbone.fpn.layer_blocks.0.0.weight": (256, 256, 3, 3),
        "rpn.head.conv.0.0.weight": (256, 256, 3, 3),
        "rpn.head.cls_logits.weight": (3, 256, 1, 1),
        "roi_heads.box_head.fc6.weight": (1024, 12544),
        "roi_heads.box_predictor.cls_score.weight": (1204, 1024),
        "roi_heads.box_predictor.bbox_pred.weight": (4816, 1024),
        "roi_heads.mask_head.3.0.weight": (256, 256, 3, 3),
        "roi_heads.mask_predictor.conv5_mask.weight": (256, 256, 2, 2),
        "roi_heads.mask_predictor.mask_fcn_logits.weight": (1204, 256, 1, 1),
    }
    for key, shape in shapes.items():
        assert tuple(sd[key].shape) == shape, key
    assert not any(k.endswith("num_batches_tracked") for k in sd)
    heads = model.roi_heads
    assert isinstance(heads, StepwiseRoIHeads) and isinstance(heads.mask_predictor, NormedMaskPredictor)
    assert (heads.score_thresh, heads.nms_thresh, heads.detections_per_img) == (1e-4, 0.5, 300)
    assert heads.fg_bg_sampler.batch_size_per_image == 512
    assert heads.fg_bg_sampler.positive_fraction == 0.25
    rpn = model.rpn
    assert rpn._pre_nms_top_n == {"training": 2000, "testing": 1000}
    assert rpn._post_nms_top_n == {"training": 1000, "testing": 1000}
    assert rpn.fg_bg_sampler.batch_size_per_image == 256 and rpn.min_size == 0.0
    assert isinstance(rpn.anchor_generator, MMDetAnchorGenerator)
    assert isinstance(heads.box_roi_pool, MMDetMultiScaleRoIAlign)
    # mmdet initialisation of the classifier: normal with std 0.01, zero bias.
    cls = heads.box_predictor.cls_score
    assert cls.bias.abs().max() == 0 and 0.008 < cls.weight.std() < 0.012


def test_frozen_stage_and_bn_modes():
    model = build_mask_rcnn(small_config(), K)
    body = model.backbone.body
    for name, p in body.named_parameters():
        frozen = name.startswith(("conv1", "bn1", "layer1"))
        assert p.requires_grad != frozen, name
    assert isinstance(body.layer2[0].bn1, FrozenStatsBatchNorm2d)
    stock = build_mask_rcnn(small_config(backbone_norm="frozen"), K)
    assert isinstance(stock.backbone.body.layer2[0].bn1, FrozenBatchNorm2d)
    assert not any("bn" in n for n, _ in stock.backbone.body.named_parameters())
    cfg = small_config()
    cfg.frozen_stages = -1
    everything = build_mask_rcnn(cfg, K)
    assert all(p.requires_grad for p in everything.backbone.body.parameters())


def test_train_step_bn_affine_trains_stats_frozen():
    torch.manual_seed(0)
    model = build_mask_rcnn(small_config(), K)
    bn = model.backbone.body.layer3[0].bn1
    with torch.no_grad():  # non-trivial statistics, as after loading ImageNet weights
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    stats = (bn.running_mean.clone(), bn.running_var.clone())
    weight = bn.weight.detach().clone()
    frozen_w = model.backbone.body.layer1[0].conv1.weight.detach().clone()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    model.train()
    images, targets = random_batch()
    losses = model(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness",
                           "loss_rpn_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert bn.weight.grad is not None and bn.weight.grad.abs().sum() > 0
    optimizer.step()
    assert not torch.equal(bn.weight.detach(), weight)
    assert torch.equal(bn.running_mean, stats[0]) and torch.equal(bn.running_var, stats[1])
    assert torch.equal(model.backbone.body.layer1[0].conv1.weight, frozen_w)


@pytest.mark.parametrize("parity", ["mmdet", "torchvision"])
def test_train_and_eval_step(parity):
    cfg = small_config()
    if parity == "torchvision":
        cfg.parity = ParityConfig.torchvision()
        cfg.mask.predictor = "plain"
        cfg.mask.select_channels = False
    torch.manual_seed(1)
    model = build_mask_rcnn(cfg, K)
    images, targets = random_batch(1)
    losses = model(images, targets)
    assert all(torch.isfinite(v) and v > 0 for v in losses.values()), losses
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        dets = model(images)
        dets_orig = model(images, original_image_sizes=[(320, 384), (128, 160)])
    for det, img in zip(dets, images):
        n = det["boxes"].shape[0]
        assert 0 < n <= 20
        assert det["masks"].shape == (n, 1, *img.shape[-2:]) and det["masks"].dtype == torch.bool
        assert det["labels"].min() >= 1 and det["labels"].max() <= K
        assert torch.all(det["scores"][:-1] >= det["scores"][1:])
    # The first image was "resized" from 320x384: boxes and masks come back in that frame.
    torch.testing.assert_close(dets_orig[0]["boxes"], dets[0]["boxes"] * 2)
    assert dets_orig[0]["masks"].shape[-2:] == (320, 384)
    torch.testing.assert_close(dets_orig[1]["boxes"], dets[1]["boxes"])


def test_empty_targets_and_bad_boxes():
    torch.manual_seed(2)
    model = build_mask_rcnn(small_config(), K)
    images, targets = random_batch(2)
    targets[1] = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
                  "masks": torch.zeros(0, 128, 160, dtype=torch.uint8)}
    losses = model(images, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    targets[0]["boxes"][1, 2] = targets[0]["boxes"][1, 0]
    with pytest.raises(ValueError, match=r"targets\[0\]\['boxes'\]\[1\] .* has no area"):
        model(images, targets)
    with pytest.raises(ValueError, match="targets are required"):
        model(images)


def test_backbone_weights_from_file(tmp_path):
    torch.manual_seed(3)
    resnet = torchvision.models.resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(resnet.state_dict(), path)
    cfg = small_config()
    cfg.backbone_weights = str(path)
    model = build_mask_rcnn(cfg, K)
    body = model.backbone.body
    assert torch.equal(body.layer2[1].conv2.weight, resnet.layer2[1].conv2.weight)
    assert torch.equal(body.layer4[0].bn1.running_var, resnet.layer4[0].bn1.running_var)
    # Wrapped in {"state_dict": ...} with a DataParallel prefix: also accepted.
    torch.save({"state_dict": {f"module.{k}": v for k, v in resnet.state_dict().items()}}, path)
    model = build_mask_rcnn(cfg, K)
    assert torch.equal(model.backbone.body.conv1.weight, resnet.conv1.weight)


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_backbone_weights_errors(tmp_path):
    cfg = small_config()
    cfg.backbone_weights = str(tmp_path / "missing.pth")
    with pytest.raises(ConfigError) as err:
        build_mask_rcnn(cfg, K)
    assert "model.backbone_weights" in _one_line(err) and "missing.pth" in str(err.value)

    bad = tmp_path / "garbage.pth"
    bad.write_bytes(b"not a checkpoint")
    cfg.backbone_weights = str(bad)
    with pytest.raises(CheckpointError) as err:
        build_mask_rcnn(cfg, K)
    assert "garbage.pth" in _one_line(err)

    wrong = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34().state_dict(), wrong)
    cfg.backbone_weights = str(wrong)
    with pytest.raises(CheckpointError) as err:
        build_mask_rcnn(cfg, K)
    msg = _one_line(err)
    assert "80 unexpected" in msg and "layer1.2." in msg and "not a resnet18 state dict" in msg

    r50 = tmp_path / "r50.pth"
    state = {k: v for k, v in torchvision.models.resnet18().state_dict().items()}
    state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    torch.save(state, r50)
    cfg.backbone_weights = str(r50)
    with pytest.raises(CheckpointError) as err:
        build_mask_rcnn(cfg, K)
    assert "layer1.0.conv1.weight has shape (64, 64, 1, 1)" in _one_line(err)


def test_torchvision_weights_without_network(monkeypatch):
    def no_network(url, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    cfg = small_config()
    for spec in ("imagenet", "ResNet18_Weights.IMAGENET1K_V1"):
        cfg.backbone_weights = spec
        with pytest.raises(LoceError) as err:
            build_mask_rcnn(cfg, K)
        msg = _one_line(err)
        assert "cannot download ResNet18_Weights.IMAGENET1K_V1" in msg
        assert "model.backbone_weights=/path/to/resnet18-" in msg and "'none'" in msg
    cfg.backbone_weights = "ResNet18_Weights.NOPE"
    with pytest.raises(ConfigError, match="unknown torchvision weight name"):
        build_mask_rcnn(cfg, K)
    # A full checkpoint is loaded next: no backbone weights needed, nothing downloaded.
    cfg.backbone_weights = "imagenet"
    assert isinstance(build_mask_rcnn(cfg, K, load_backbone=False), LoceMaskRCNN)


def test_num_classes_checked():
    with pytest.raises(ConfigError, match="num_classes must be >= 1"):
        build_mask_rcnn(small_config(), 0)


def test_torchvision_parity_settings_equal_stock_maskrcnn():
    """With every switch at torchvision's behaviour, the whole model equals stock MaskRCNN
    (same weights, same random state): losses in training, detections in eval."""
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

    torch.manual_seed(4)
    stock = MaskRCNN(
        resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=3),
        num_classes=K + 1, min_size=160, max_size=192,  # the 160x192 image is not resized
        rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=50,
        rpn_pre_nms_top_n_test=200, rpn_post_nms_top_n_test=50,
        box_batch_size_per_image=32, box_detections_per_img=20,
    )
    cfg = small_config()
    cfg.parity = ParityConfig.torchvision()
    cfg.roi.representation_size = 1024
    cfg.mask.head_layers = [256, 256, 256, 256]
    cfg.mask.predictor = "plain"
    cfg.test.score_thresh = 0.05
    cfg.test.binarize_masks = False
    ours = build_mask_rcnn(cfg, K)
    ours.load_state_dict(stock.state_dict())
    images, targets = random_batch(5)
    images, targets = images[:1], targets[:1]

    torch.manual_seed(11)
    expected = stock(images, [dict(t) for t in targets])
    torch.manual_seed(11)
    # Stock's transform draws a training scale per image (one uniform_ call); ours does not
    # resize, so draw the same number here to keep the samplers' random state aligned.
    torch.empty(1).uniform_(0.0, 1.0)
    got = ours(images, [dict(t) for t in targets])
    assert set(got) == set(expected)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-6)

    stock.eval()
    ours.eval()
    with torch.no_grad():
        exp = stock(images)[0]
        det = ours(images)[0]
    assert exp["boxes"].shape[0] > 0
    torch.testing.assert_close(det["labels"], exp["labels"])
    torch.testing.assert_close(det["scores"], exp["scores"])
    torch.testing.assert_close(det["boxes"], exp["boxes"])
    torch.testing.assert_close(det["masks"], exp["masks"], rtol=1e-5, atol=1e-6)
