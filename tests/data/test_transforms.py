"""Resize (mmcv rounding), multi-scale resize, horizontal flip."""

from __future__ import annotations

import pytest
import torch

from loce.data.transforms import (
    Compose,
    RandomHorizontalFlip,
    RandomShortSideResize,
    Resize,
    hflip,
    rescale_size,
    resize,
)


def _sample(h: int = 6, w: int = 8):
    image = torch.arange(3 * h * w, dtype=torch.float32).reshape(3, h, w) / (3 * h * w)
    masks = torch.zeros(2, h, w, dtype=torch.uint8)
    masks[0, 1:3, 2:5] = 1  # x in [2, 5), y in [1, 3)
    masks[1, 4:6, 0:1] = 1
    target = {
        "boxes": torch.tensor([[2.0, 1.0, 5.0, 3.0], [0.0, 4.0, 1.0, 6.0]]),
        "labels": torch.tensor([3, 1]),
        "masks": masks,
        "image_id": 5,
        "orig_size": torch.tensor([h, w]),
        "scale_factor": torch.ones(4),
    }
    return image, target


@pytest.mark.parametrize(
    ("hw", "short", "cap", "expected"),
    [
        # 500 x 375 (W x H): s = min(1333/500, 800/375) = 2.1333; 500 s = 1066.67 -> 1067
        ((375, 500), 800, 1333, (800, 1067)),
        ((480, 640), 800, 1333, (800, 1067)),  # torchvision's floor would give 1066
        ((360, 640), 800, 1333, (750, 1333)),  # long side capped: s = 1333/640
        ((640, 360), 800, 1333, (1333, 750)),
        ((1, 1), 800, 1333, (800, 800)),
        ((1, 1333), 800, 1333, (1, 1333)),
        ((3000, 4000), 800, 1333, (800, 1067)),
        ((427, 640), 640, 1333, (640, 959)),  # 640 * 640/427 = 959.25
        ((100, 100), 640, 1333, (640, 640)),
        # a side that would round to 0 pixels keeps 1 (s = 160/4000: 2 * 0.04 + 0.5 < 1)
        ((2, 4000), 128, 160, (1, 160)),
        ((4000, 2), 128, 160, (160, 1)),
    ],
)
def test_rescale_size_rounds_half_up(hw, short, cap, expected):
    assert rescale_size(*hw, short, cap) == expected


def test_rescale_size_rejects_bad_input():
    with pytest.raises(ValueError):
        rescale_size(0, 10, 800, 1333)
    with pytest.raises(ValueError, match="max_size"):
        Resize(800, 700)
    with pytest.raises(ValueError, match="at least one"):
        RandomShortSideResize([], 1333)


def test_resize_moves_boxes_and_masks():
    image, target = _sample()
    out_image, out = resize(image, target, (12, 16))  # exactly x2
    assert out_image.shape == (3, 12, 16)
    assert out["boxes"].tolist() == [[4, 2, 10, 6], [0, 8, 2, 12]]
    expect = torch.zeros(12, 16, dtype=torch.uint8)
    expect[2:6, 4:10] = 1  # nearest: the rectangle doubles
    assert torch.equal(out["masks"][0], expect)
    assert out["masks"].dtype == torch.uint8
    assert out["scale_factor"].tolist() == [2, 2, 2, 2]
    assert out["labels"] is target["labels"] and out["image_id"] == 5
    assert target["boxes"][0].tolist() == [2, 1, 5, 3]  # input untouched


def test_resize_scale_factor_is_new_over_orig_in_float32():
    image = torch.zeros(3, 375, 500)
    target = {
        "boxes": torch.tensor([[0.0, 0.0, 500.0, 375.0]]),
        "orig_size": torch.tensor([375, 500]),
    }
    out_image, out = Resize(800, 1333)(image, target)
    assert out_image.shape == (3, 800, 1067)
    sf = torch.tensor([1067 / 500, 800 / 375] * 2, dtype=torch.float32)
    assert torch.equal(out["scale_factor"], sf)
    torch.testing.assert_close(out["boxes"], torch.tensor([[0.0, 0.0, 1067.0, 800.0]]))
    # boxes / scale_factor maps back to the original image
    torch.testing.assert_close(out["boxes"] / out["scale_factor"], target["boxes"])
    # a second resize is still relative to the original image
    _, twice = resize(out_image, out, (400, 533))
    assert torch.equal(twice["scale_factor"], torch.tensor([533 / 500, 400 / 375] * 2))


def test_resize_empty_target_and_no_target():
    image = torch.zeros(3, 6, 8)
    target = {"boxes": torch.zeros(0, 4), "masks": torch.zeros(0, 6, 8, dtype=torch.uint8)}
    _, out = resize(image, target, (3, 4))
    assert out["boxes"].shape == (0, 4) and out["masks"].shape == (0, 3, 4)
    out_image, none = Resize(3, 10)(image)
    assert out_image.shape == (3, 3, 4) and none is None


def test_hflip_arithmetic():
    image, target = _sample()  # W = 8
    out_image, out = hflip(image, target)
    # x1' = W - x2, x2' = W - x1: (2, 5) -> (3, 6); (0, 1) -> (7, 8)
    assert out["boxes"].tolist() == [[3, 1, 6, 3], [7, 4, 8, 6]]
    assert torch.equal(out_image, image.flip(-1))
    assert torch.equal(out["masks"][0, 1:3, 3:6], torch.ones(2, 3, dtype=torch.uint8))
    assert out["masks"][0].sum() == 6
    assert out["masks"][1, 4:6, 7].tolist() == [1, 1]
    back_image, back = hflip(out_image, out)
    assert torch.equal(back_image, image) and torch.equal(back["boxes"], target["boxes"])


def test_flipped_box_still_bounds_flipped_mask():
    image, target = _sample()
    _, out = hflip(image, target)
    for box, mask in zip(out["boxes"], out["masks"], strict=True):
        ys, xs = torch.nonzero(mask, as_tuple=True)
        assert [
            xs.min().item(),
            ys.min().item(),
            xs.max().item() + 1,
            ys.max().item() + 1,
        ] == box.tolist()


def test_random_flip_probability_and_generator():
    image, target = _sample()
    assert RandomHorizontalFlip(0.0)(image, target)[1] is target
    assert RandomHorizontalFlip(1.0)(image, target)[1]["boxes"][0].tolist() == [3, 1, 6, 3]
    flip = RandomHorizontalFlip(0.5, generator=torch.Generator().manual_seed(0))
    flips = [flip(image, target)[1] is not target for _ in range(400)]
    assert 150 < sum(flips) < 250
    again = RandomHorizontalFlip(0.5, generator=torch.Generator().manual_seed(0))
    assert [again(image, target)[1] is not target for _ in range(400)] == flips
    with pytest.raises(ValueError):
        RandomHorizontalFlip(1.5)


def test_random_short_side_resize_picks_from_the_list():
    image = torch.zeros(3, 375, 500)
    t = RandomShortSideResize([640, 800], 1333, generator=torch.Generator().manual_seed(0))
    sizes = {tuple(t(image)[0].shape[-2:]) for _ in range(50)}
    assert sizes == {(640, 853), (800, 1067)}  # 500 * 640/375 = 853.33 -> 853
    g1 = RandomShortSideResize(generator=torch.Generator().manual_seed(3))
    g2 = RandomShortSideResize(generator=torch.Generator().manual_seed(3))
    assert [g1(image)[0].shape for _ in range(10)] == [g2(image)[0].shape for _ in range(10)]
    # global RNG when no generator is given
    torch.manual_seed(7)
    a = [RandomShortSideResize()(image)[0].shape for _ in range(10)]
    torch.manual_seed(7)
    b = [RandomShortSideResize()(image)[0].shape for _ in range(10)]
    assert a == b


def test_compose_runs_in_order():
    image, target = _sample()
    t = Compose([Resize(12, 100), RandomHorizontalFlip(1.0)])
    out_image, out = t(image, target)
    assert out_image.shape == (3, 12, 16)
    assert out["boxes"][0].tolist() == [6, 2, 12, 6]  # (4, 2, 10, 6) flipped in W = 16
    assert "Resize(short=12" in repr(t)


def test_mmcv_resize_is_cv2_on_uint8_with_the_same_targets():
    import cv2
    import numpy as np

    from loce.data.transforms import MMCVResize

    g = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (3, 30, 41), generator=g, dtype=torch.uint8)
    target = {"boxes": torch.tensor([[1.0, 2.0, 30.0, 20.0]]),
              "masks": torch.ones(1, 30, 41, dtype=torch.uint8), "orig_size": torch.tensor([30, 41])}
    out, t = MMCVResize(80, 1333)(pixels, target)
    size = rescale_size(30, 41, 80, 1333)
    assert size == (80, 109) and out.dtype == torch.uint8 and out.shape == (3, *size)
    expected = cv2.resize(np.ascontiguousarray(pixels.permute(1, 2, 0).numpy()), (109, 80),
                          interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(out.permute(1, 2, 0).numpy(), expected)
    # the targets are Resize's
    float_out, float_t = Resize(80, 1333)(pixels.float() / 255, target)
    for key in ("boxes", "masks", "scale_factor"):
        assert torch.equal(t[key], float_t[key]), key
    # a float image in [0, 1] is quantised back to its uint8 pixels first
    assert torch.equal(MMCVResize(80, 1333)(pixels.float() / 255)[0], out)
    # the uint8 kernel rounds differently from the float bilinear resize
    assert not torch.equal((float_out * 255).round().to(torch.uint8), out)
    # no resize needed: the pixels come back unchanged, as uint8
    same, _ = MMCVResize(30, 1333)(pixels)
    assert torch.equal(same, pixels)
    assert "MMCVResize(short=80" in repr(MMCVResize(80, 1333))


def test_build_picks_the_test_pipeline():
    from loce import build
    from loce.config import load_config
    from loce.data.transforms import MMCVResize

    lvis = load_config("loce_mask_rcnn_r50_fpn_normed_mask_mstrain_2x_lvis_v1")
    assert lvis.data.test_resize == "mmcv" and lvis.model.parity.nms == "mmcv"
    assert isinstance(build.build_test_transforms(lvis), MMCVResize)
    assert build.build_test_decoder(lvis) == "opencv"
    synthetic = load_config("loce_mask_rcnn_r18_fpn_normed_mask_synthetic")
    assert synthetic.data.test_resize == "torch"
    assert type(build.build_test_transforms(synthetic)) is Resize
    assert build.build_test_decoder(synthetic) == "pillow"


def test_training_images_leave_the_workers_as_uint8_and_move_by_half_a_grey_level():
    """data.train_image_dtype=uint8: the last training transform quantises; the model's
    uint8 normalisation of it is within 0.5 / (255 * std) of the float path's."""
    from loce import build
    from loce.config import load_config
    from loce.data.transforms import ToUint8
    from loce.models.mask_rcnn import NormalizePadTransform

    cfg = load_config("mask_rcnn_r18_fpn_normed_mask_synthetic", [])
    assert cfg.data.train_image_dtype == "uint8"
    assert isinstance(build.build_train_transforms(cfg).transforms[-1], ToUint8)
    cfg = load_config("mask_rcnn_r18_fpn_normed_mask_synthetic", ["data.train_image_dtype=float32"])
    assert not any(isinstance(t, ToUint8) for t in build.build_train_transforms(cfg).transforms)

    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, 20, 30, generator=g)
    image[0, 0, :4] = torch.tensor([0.0, 1.0, 0.5 / 255, 1.5 / 255])
    q, target = ToUint8()(image, {"x": 1})
    assert q.dtype == torch.uint8 and target == {"x": 1}
    assert q[0, 0, :4].tolist() == [0, 255, 0, 2]  # round half to even, as torch.round
    assert torch.equal(ToUint8()(q)[0], q)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    norm = NormalizePadTransform(mean, std)
    from_float, from_uint8 = norm.normalize(image), norm.normalize(q)
    bound = 0.5 / (255 * torch.tensor(std))[:, None, None] + 1e-5
    assert bool((from_float - from_uint8).abs().le(bound).all())
    assert float((from_float - from_uint8).abs().max()) > 0.5 * 0.5 / (255 * 0.229)


def test_default_workers_follow_the_cpus_per_process(monkeypatch):
    import os

    from loce import build
    from loce.config import load_config

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(12)), raising=False)
    cfg = load_config("mask_rcnn_r18_fpn_normed_mask_synthetic", ["data.workers=null"])
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert build.data_workers(cfg) == 3
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert build.data_workers(cfg) == 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")
    assert build.data_workers(cfg) == 1
    cfg = load_config("mask_rcnn_r18_fpn_normed_mask_synthetic", ["data.workers=0"])
    assert build.data_workers(cfg) == 0
