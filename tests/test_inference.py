"""``loce.Detector``: inputs of every accepted kind, results, options, pictures, input errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from loce import build
from loce.config import config_to_dict, load_config
from loce.errors import DataError

CATEGORY_IDS = [10, 20, 35]
NAMES = ["cat", "dog", "fox"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An untrained (seeded) ResNet-18 Mask R-CNN saved in `loce train`'s format."""
    cfg = load_config("mask_rcnn_r18_fpn_normed_mask_synthetic",
                      ["data.test_scale=96", "data.test_max_size=128",
                       "model.rpn.pre_nms_top_n_test=200", "model.rpn.post_nms_top_n_test=100",
                       "model.test.detections_per_img=50"])
    torch.manual_seed(0)
    model = build.build_model(cfg, num_classes=3, load_backbone=False)
    path = tmp_path_factory.mktemp("ckpt") / "model.pth"
    torch.save({"model": model.state_dict(), "config": config_to_dict(cfg), "num_classes": 3,
                "category_ids": CATEGORY_IDS, "category_names": NAMES}, path)
    return path


@pytest.fixture(scope="module")
def detector(checkpoint):
    from loce import Detector

    return Detector.from_checkpoint(checkpoint, device="cpu")


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, size=(60, 80, 3), dtype=np.uint8)
    arr[10:40, 20:60] = (230, 40, 40)
    path = tmp_path_factory.mktemp("img") / "street.png"
    Image.fromarray(arr).save(path)
    return path, arr


def _same(a, b) -> bool:
    return (torch.equal(a.boxes, b.boxes) and torch.equal(a.scores, b.scores)
            and torch.equal(a.labels, b.labels))


def test_every_input_kind_gives_the_same_detections(detector, image):
    path, arr = image
    by_path = detector(path)
    assert len(by_path) > 0, "an untrained model at score threshold 1e-4 detects something"
    for other in (str(path), Image.open(path), arr, torch.from_numpy(arr).permute(2, 0, 1),
                  torch.from_numpy(arr).permute(2, 0, 1).float() / 255.0):
        assert _same(detector(other), by_path), type(other)


def test_result_fields(detector, image):
    path, arr = image
    r = detector(path)
    n = len(r)
    assert r.boxes.shape == (n, 4) and r.boxes.dtype == torch.float32
    assert r.scores.shape == (n,) and bool((r.scores[:-1] >= r.scores[1:]).all())
    assert r.labels.dtype == torch.int64 and set(r.labels.tolist()) <= {1, 2, 3}
    expected_ids = [CATEGORY_IDS[j - 1] for j in r.labels.tolist()]
    assert r.category_ids.tolist() == expected_ids
    assert r.names == [NAMES[j - 1] for j in r.labels.tolist()]
    assert r.masks.shape == (n, 60, 80) and r.masks.dtype == torch.bool
    assert r.image_size == (60, 80) and r.note is None
    assert float(r.boxes[:, 2].max()) <= 80 and float(r.boxes[:, 3].max()) <= 60
    assert n <= detector.cfg.model.test.detections_per_img
    lvis = r.to_lvis(7)
    assert [d["category_id"] for d in lvis] == expected_ids and lvis[0]["image_id"] == 7


def test_lists_and_batches(detector, image):
    path, arr = image
    flipped = np.ascontiguousarray(arr[:, ::-1])
    singles = [detector(path), detector(flipped), detector(arr[:40])]
    one_by_one = detector([path, flipped, arr[:40]])
    assert isinstance(one_by_one, list) and len(one_by_one) == 3
    assert all(_same(a, b) for a, b in zip(singles, one_by_one))
    batched = detector([path, flipped, arr[:40]], batch_size=2)
    assert len(batched) == 3 and [b.image_size for b in batched] == [(60, 80), (60, 80), (40, 80)]
    # Images of one size batch without padding: the same detections up to float rounding
    # (batched convolutions may sum in another order).
    for b, s in zip(batched[:2], singles[:2]):
        assert torch.allclose(b.scores[:10], s.scores[:10], atol=1e-4)
        assert torch.allclose(b.boxes[:10], s.boxes[:10], atol=1e-2)


def test_options_score_threshold_top_k_and_box_only(checkpoint, detector, image):
    from loce import Detector

    path, _ = image
    full = detector(path)
    top = Detector.from_checkpoint(checkpoint, device="cpu", top_k=5)(path)
    assert len(top) == min(5, len(full))
    assert torch.equal(top.scores, full.scores[: len(top)])
    thr = float(full.scores[len(full) // 2])
    high = Detector.from_checkpoint(checkpoint, device="cpu", score_threshold=thr)(path)
    assert len(high) > 0 and bool((high.scores > thr).all())
    boxes_only = Detector.from_checkpoint(checkpoint, device="cpu", with_masks=False)(path)
    assert boxes_only.masks is None and _same(boxes_only, full)
    legacy = Detector.from_checkpoint(checkpoint, device="cpu",
                                      overrides=["model.parity.mask_paste=legacy"])
    assert legacy.cfg.model.parity.mask_paste == "legacy"


def test_predict_command_writes_what_the_detector_returns(checkpoint, detector, image, tmp_path):
    from loce.cli import main

    path, _ = image
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / path.name).write_bytes(path.read_bytes())
    out = tmp_path / "results.json"
    assert main(["predict", "--checkpoint", str(checkpoint), "--images", str(folder),
                 "--out", str(out), "--device", "cpu"]) == 0
    written = json.loads(out.read_text())
    expected = detector(path).to_lvis(1)
    assert [(d["category_id"], d["bbox"], d["segmentation"]) for d in written] == \
        [(d["category_id"], d["bbox"], d["segmentation"]) for d in expected]


def test_draw_writes_the_picture(detector, image, tmp_path):
    path, _ = image
    result = detector(path)
    picture = detector.draw(result, path, tmp_path / "out" / "pred.png", score_threshold=0.0)
    assert picture.size == (80, 60)
    with Image.open(tmp_path / "out" / "pred.png") as saved:
        assert saved.size == (80, 60)
        assert np.asarray(saved).tolist() == np.asarray(picture).tolist()
    with pytest.raises(DataError, match="the result is for a 80x60 image"):
        detector.draw(result, np.zeros((10, 10, 3), np.uint8))


def test_grey_and_rgba_are_converted_with_a_note(detector, image):
    _, arr = image
    grey = arr[..., 0]
    as_rgb = detector(np.repeat(grey[..., None], 3, axis=2))
    for source in (Image.fromarray(grey), grey, torch.from_numpy(grey)[None]):
        r = detector(source)
        assert r.note is not None and "grey" in r.note
        assert _same(r, as_rgb)
    rgba = np.concatenate([arr, np.full((60, 80, 1), 7, np.uint8)], axis=2)
    r = detector(rgba)
    assert "RGBA" in r.note and _same(r, detector(arr))
    assert "RGBA" in detector(Image.fromarray(rgba)).note


def test_input_errors_are_one_line(detector, tmp_path):
    text = tmp_path / "not_an_image.jpg"
    text.write_text("hello")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    bomb = tmp_path / "bomb.png"
    Image.new("1", (14000, 14000)).save(bomb)  # 14000 x 14000 pixels in a few kB
    cases = [
        (text, "not_an_image.jpg: cannot read the image"),
        (empty, "empty.png: cannot read the image"),
        (tmp_path / "missing.jpg", "no such image file"),
        (bomb, "14000x14000 (196.0 megapixels), over the 89.5-megapixel limit"),
        (np.zeros((0, 10, 3), np.uint8), "zero side"),
        (torch.zeros(3, 5, 0), "zero side"),
        (np.zeros((8, 8, 3), np.float64), "expected uint8"),
        (torch.zeros(8, 8, 3), "image.permute(2, 0, 1)"),
        (np.zeros((8, 8, 2), np.uint8), "shape [8, 8, 2]"),
        (12, "expected a file path"),
    ]
    for source, message in cases:
        with pytest.raises(DataError) as err:
            detector(source)
        assert message in str(err.value) and "\n" not in str(err.value), (source, err.value)


def test_detector_is_exported_lazily():
    import loce

    assert "Detector" in dir(loce)
    from loce.inference import Detector

    assert loce.Detector is Detector
