"""The MMDetection ↔ loce state-dict key map (docs/parity.md §3, test T0)."""

from __future__ import annotations

import pytest
import torch

from loce.config.model import ModelConfig
from loce.errors import CheckpointError
from loce.models import build_mask_rcnn
from loce.models.mmdet_weights import (
    loce_to_mmdet_state_dict,
    mmdet_key_shapes,
    mmdet_to_loce_state_dict,
)


def _random_state(depth: int, k: int, num_logits: int | None = None, seed: int = 0,
                  zeros: bool = False) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in mmdet_key_shapes(depth, k, num_logits=num_logits).items():
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(7, dtype=torch.int64)
        elif zeros and not key.startswith("roi_head.bbox_head.fc_"):
            out[key] = torch.zeros(shape)
        else:
            out[key] = torch.randn(shape, generator=g)
    return out


@pytest.mark.parametrize(("depth", "mmdet_keys", "loce_keys"), [(50, 360, 307), (101, 666, 562)])
def test_key_counts(depth, mmdet_keys, loce_keys):
    table = mmdet_key_shapes(depth, 1203)
    assert len(table) == mmdet_keys
    assert sum(k.endswith("num_batches_tracked") for k in table) == mmdet_keys - loce_keys


def test_table_order_matches_reference_spec():
    import json
    from pathlib import Path

    spec = Path(__file__).parents[1] / "fixtures" / "mmdet_reference" / "weights_spec.json"
    if not spec.is_file():
        pytest.skip("reference fixture not present")
    tensors = json.loads(spec.read_text())["tensors"]
    table = mmdet_key_shapes(50, 8)
    assert list(tensors) == list(table)
    assert all(tuple(v["shape"]) == table[k] for k, v in tensors.items())


@pytest.mark.parametrize("depth", [50, 101])
@pytest.mark.parametrize("k", [1203, 1230])
def test_strict_load_into_loce_model(depth, k):
    sd, info = mmdet_to_loce_state_dict(_random_state(depth, k, zeros=True))
    assert (info.depth, info.num_classes, info.num_logits) == (depth, k, k + 1)
    assert (info.mmdet_keys, info.loce_keys) == ((360, 307) if depth == 50 else (666, 562))
    model = build_mask_rcnn(ModelConfig(backbone=f"resnet{depth}", backbone_weights="none"), k,
                            load_backbone=False)
    expected = {n: tuple(t.shape) for n, t in model.state_dict().items()}
    assert {n: tuple(t.shape) for n, t in sd.items()} == expected
    model.load_state_dict(sd, strict=True)


def test_reindexed_families_by_hand():
    k = 3
    mm = _random_state(50, k, zeros=True)
    sd, _ = mmdet_to_loce_state_dict(mm)
    w = mm["roi_head.bbox_head.fc_cls.weight"]
    cls = sd["roi_heads.box_predictor.cls_score.weight"]
    assert torch.equal(cls[0], w[k])  # mmdet background (last) -> loce row 0
    assert torch.equal(cls[1:], w[:k])
    reg = sd["roi_heads.box_predictor.bbox_pred.weight"]
    assert torch.equal(reg[:4], torch.zeros(4, 1024))
    assert torch.equal(reg[4 * 2: 4 * 3], mm["roi_head.bbox_head.fc_reg.weight"][4: 8])  # class 2 = mmdet 1
    logits = sd["roi_heads.mask_predictor.mask_fcn_logits.bias"]
    assert logits[0] == 0 and torch.equal(logits[1:], mm["roi_head.mask_head.conv_logits.bias"])
    assert "backbone.body.layer1.0.bn1.num_batches_tracked" not in sd
    assert torch.equal(sd["rpn.head.cls_logits.weight"], mm["rpn_head.rpn_cls.weight"])


def test_seesaw_classifier_moves_background_objectness_first():
    k = 4
    mm = _random_state(50, k, num_logits=k + 2, zeros=True)
    sd, info = mmdet_to_loce_state_dict(mm)
    assert info.num_logits == k + 2
    w = mm["roi_head.bbox_head.fc_cls.weight"]  # [u_1..u_K, o_fg, o_bg]
    cls = sd["roi_heads.box_predictor.cls_score.weight"]  # [o_bg, u_1..u_K, o_fg]
    assert torch.equal(cls[0], w[k + 1]) and torch.equal(cls[1:k + 1], w[:k])
    assert torch.equal(cls[k + 1], w[k])


@pytest.mark.parametrize("num_logits", [None, 10])
def test_round_trip_bit_exact(num_logits):
    mm = _random_state(50, 8, num_logits=num_logits, seed=3)
    mm_counter_free = {k: (torch.zeros((), dtype=torch.int64) if k.endswith("num_batches_tracked")
                           else v) for k, v in mm.items()}
    back = loce_to_mmdet_state_dict(mmdet_to_loce_state_dict(mm)[0])
    assert list(back) == list(mm)
    for key, value in mm_counter_free.items():
        assert back[key].dtype == value.dtype and torch.equal(back[key], value), key


def test_module_prefix_and_dtype():
    mm = {f"module.{k}": v.half() if v.is_floating_point() else v
          for k, v in _random_state(50, 2, zeros=True).items()}
    sd, _ = mmdet_to_loce_state_dict(mm)
    assert all(t.dtype == torch.float32 for t in sd.values())


def test_errors_name_the_key():
    good = _random_state(50, 2, zeros=True)
    bad = dict(good, **{"neck.fpn_convs.4.conv.weight": torch.zeros(256, 256, 3, 3)})
    with pytest.raises(CheckpointError, match=r"neck\.fpn_convs\.4.*extra convolutions"):
        mmdet_to_loce_state_dict(bad, source="x.pth")
    missing = {k: v for k, v in good.items() if k != "rpn_head.rpn_reg.bias"}
    with pytest.raises(CheckpointError, match=r"x\.pth: missing key 'rpn_head\.rpn_reg\.bias'"):
        mmdet_to_loce_state_dict(missing, source="x.pth")
    shaped = dict(good, **{"rpn_head.rpn_conv.bias": torch.zeros(255)})
    with pytest.raises(CheckpointError, match=r"'rpn_head\.rpn_conv\.bias' has shape \(255,\)"):
        mmdet_to_loce_state_dict(shaped, source="x.pth")
    cascade = {k.replace("roi_head.bbox_head.", "roi_head.bbox_head.0."): v for k, v in good.items()}
    with pytest.raises(CheckpointError, match="missing 'roi_head.bbox_head.fc_cls.weight'"):
        mmdet_to_loce_state_dict(cascade)
    retina = {k: v for k, v in good.items() if k.startswith(("backbone.", "neck."))}
    retina["bbox_head.retina_cls.weight"] = torch.zeros(9 * 80, 256, 3, 3)
    with pytest.raises(CheckpointError, match="missing 'roi_head.bbox_head.fc_cls.weight'"):
        mmdet_to_loce_state_dict(retina)
    with pytest.raises(CheckpointError, match="not a ResNet"):
        mmdet_to_loce_state_dict({"foo.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="expected a state dict"):
        mmdet_to_loce_state_dict([1, 2])  # type: ignore[arg-type]


def test_inverse_refuses_foreign_keys():
    sd, _ = mmdet_to_loce_state_dict(_random_state(50, 2, zeros=True))
    sd["roi_heads.mean_scores"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match="roi_heads.mean_scores"):
        loce_to_mmdet_state_dict(sd)
