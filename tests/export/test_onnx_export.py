"""``loce export`` round trips on the CPU: the ONNX file run by onnxruntime against the
PyTorch model on the same image (``data.test_resize: torch``, which the graph implements).

A detection of the file must match one of PyTorch's (same label, box IoU > 0.99, |Δscore| <
1e-3, :func:`loce.evaluation.matching.match_detections`, tie-aware at the top-k cut) and the
matched masks must agree on >= 99 % of their pixels. Small seeded models keep the exports to
a few seconds; the R50 reference weights are in test_onnx_reference.py (slow).
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from loce import build
from loce.config import config_to_dict, load_config
from loce.errors import ConfigError, LoceError
from loce.evaluation.matching import match_detections
from loce.inference import Detector

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

CATEGORY_IDS = [10, 20, 35]
NAMES = ["cat", "dog", "fox"]
TINY = ["data.test_scale=96", "data.test_max_size=128", "model.rpn.pre_nms_top_n_test=200",
        "model.rpn.post_nms_top_n_test=100", "model.test.detections_per_img=50"]


def _tiny_model(config: str, overrides=()):
    cfg = load_config(config, [*TINY, *overrides])
    torch.manual_seed(0)
    return build.build_model(cfg, num_classes=3, load_backbone=False).eval(), cfg


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A seeded, untrained ResNet-18 Mask R-CNN in `loce train`'s format."""
    model, cfg = _tiny_model("mask_rcnn_r18_fpn_normed_mask_synthetic")
    path = tmp_path_factory.mktemp("ckpt") / "model.pth"
    torch.save({"model": model.state_dict(), "config": config_to_dict(cfg), "num_classes": 3,
                "category_ids": CATEGORY_IDS, "category_names": NAMES}, path)
    return path


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory):
    from loce.export.onnx import export_onnx

    return export_onnx(checkpoint, tmp_path_factory.mktemp("onnx") / "model.onnx")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A portrait and a landscape image (other sizes than the trace's example)."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for name, shape in (("a_portrait.png", (120, 80, 3)), ("b_landscape.png", (60, 100, 3))):
        arr = rng.integers(0, 256, size=shape, dtype=np.uint8)
        arr[shape[0] // 4: shape[0] // 2, shape[1] // 4: shape[1] // 2] = (230, 40, 40)
        Image.fromarray(arr).save(folder / name)
    return folder


def assert_same_detections(onnx_result, torch_result, top_k: int):
    """The match rule of the module docstring; returns (matched, required, mask agreement)."""
    assert onnx_result.image_size == torch_result.image_size
    match = match_detections(torch_result.boxes[:top_k], torch_result.scores[:top_k],
                             onnx_result.boxes[:top_k], onnx_result.scores[:top_k],
                             torch_result.labels[:top_k], onnx_result.labels[:top_k],
                             iou_threshold=0.99, score_tolerance=1e-3, top_k=top_k)
    assert match.all_matched, match.summary()
    agreement = 1.0
    if torch_result.masks is not None and match.num_matched:
        r, c = match.pairs[:, 0], match.pairs[:, 1]
        same = (torch_result.masks[r] == onnx_result.masks[c]).float().mean()
        agreement = float(same)
        assert agreement >= 0.99
    return match.num_matched, match.num_reference, agreement


def test_portrait_and_landscape_through_one_file(exported, checkpoint, images):
    onnx_det = Detector.from_onnx(exported.path)
    torch_det = Detector.from_checkpoint(checkpoint, device="cpu",
                                         overrides=["data.test_resize=torch"])
    for path in sorted(images.iterdir()):
        ours, ref = onnx_det(path), torch_det(path)
        assert len(ref) > 0, "a seeded untrained model at threshold 1e-4 detects something"
        assert ours.masks is not None and ours.masks.shape == ref.masks.shape
        h, w = np.asarray(Image.open(path)).shape[:2]
        assert ours.masks.shape[1:] == (h, w) and ours.masks.dtype == torch.bool
        assert ours.names == [NAMES[j - 1] for j in ours.labels.tolist()]
        assert ours.category_ids.tolist() == [CATEGORY_IDS[j - 1] for j in ours.labels.tolist()]
        assert torch.all(ours.scores[:-1] >= ours.scores[1:])
        matched, required, agreement = assert_same_detections(ours, ref, top_k=50)
        print(f"{path.name} {w}x{h}: {matched}/{required} matched, masks {agreement:.4%}")


def test_metadata_names_the_labels(exported):
    from loce import __version__

    proto = onnx.load(str(exported.path))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["loce.category_ids"]) == CATEGORY_IDS
    assert json.loads(meta["loce.category_names"]) == NAMES
    assert meta["loce.config"] == "mask_rcnn_r18_fpn_normed_mask_synthetic"
    assert meta["loce.version"] == __version__
    assert meta["loce.method"] == "cross_entropy"
    assert json.loads(meta["loce.test_size"]) == [96, 128]
    assert [o.name for o in proto.graph.output] == ["boxes", "scores", "labels", "masks"]
    assert [i.name for i in proto.graph.input] == ["image"]
    assert proto.opset_import[0].version == 17


def test_no_detection_above_the_threshold(checkpoint, images, tmp_path):
    """Zero detections is a result: [0, 4] boxes and [0, H, W] masks, from both paths."""
    from loce.export.onnx import OnnxRunner, export_onnx

    out = export_onnx(checkpoint, tmp_path / "strict.onnx",
                      overrides=["model.test.score_thresh=0.999"])
    image = np.asarray(Image.open(images / "b_landscape.png"))
    raw = OnnxRunner(out.path).run(image)
    assert raw["boxes"].shape == (0, 4) and raw["scores"].shape == (0,)
    assert raw["labels"].shape == (0,) and raw["masks"].shape == (0, 60, 100)
    ref = Detector.from_checkpoint(checkpoint, device="cpu", score_threshold=0.999,
                                   overrides=["data.test_resize=torch"])(image)
    assert len(ref) == 0


@pytest.mark.parametrize("method, overrides", [
    ("eqlv2", ["model.roi.cls_loss=eqlv2"]),  # sigmoid with the objectness product
    ("seesaw", ["model.roi.cls_loss=seesaw"]),  # K + 2 logits
    ("norcal", ["model.test.norcal_gamma=0.5"]),  # calibrated softmax
])
def test_method_scorings_round_trip(method, overrides, images, tmp_path):
    """Box-only models of each scoring rule: the file reproduces the model's detections."""
    from loce.export.onnx import export_model

    model, cfg = _tiny_model("faster_rcnn_r18_fpn_synthetic",
                             [] if method == "norcal" else overrides)
    if method == "norcal":  # the counts come from training annotations; given by hand here
        cfg.model.test.norcal_gamma = 0.5
        model.roi_heads.set_norcal(torch.tensor([100, 10, 1]), 0.5)
    cls_score = model.roi_heads.box_predictor.cls_score
    with torch.no_grad():  # a classifier that separates the classes (random init scores flat)
        cls_score.weight.mul_(10)
        if method == "seesaw":  # and calls the RoIs foreground: o_fg (last column) up
            cls_score.bias[-1] = 5.0
    out = export_model(model, cfg, CATEGORY_IDS, NAMES, tmp_path / f"{method}.onnx",
                       with_masks=True)
    assert out.outputs == ("boxes", "scores", "labels")  # Faster R-CNN: no masks
    assert out.metadata["loce.method"] == {"eqlv2": "eqlv2", "seesaw": "seesaw",
                                           "norcal": "cross_entropy + NorCal gamma=0.5"}[method]
    onnx_det = Detector.from_onnx(out.path)
    torch_det = Detector(model, cfg, CATEGORY_IDS, NAMES, device="cpu")
    for path in sorted(images.iterdir()):
        ours, ref = onnx_det(path), torch_det(path)
        assert len(ref) > 0 and ours.masks is None
        assert_same_detections(ours, ref, top_k=50)


def test_norcal_changes_what_the_file_scores(images, tmp_path):
    """The calibration is in the graph: the same weights exported with and without NorCal
    give other scores."""
    from loce.export.onnx import OnnxRunner, export_model

    image = np.asarray(Image.open(images / "a_portrait.png"))
    scores = []
    for gamma in (None, 1.0):
        model, cfg = _tiny_model("faster_rcnn_r18_fpn_synthetic")
        if gamma is not None:
            model.roi_heads.set_norcal(torch.tensor([1000, 10, 1]), gamma)
        out = export_model(model, cfg, CATEGORY_IDS, NAMES, tmp_path / f"{gamma}.onnx")
        scores.append(OnnxRunner(out.path).run(image)["scores"])
    assert scores[0].shape != scores[1].shape or not np.allclose(scores[0], scores[1])


def test_refusals_are_one_line(tmp_path):
    from loce.export.onnx import export_model

    model, cfg = _tiny_model("faster_rcnn_r18_fpn_synthetic")

    class MyLoss(torch.nn.Module):
        def scores(self, logits):
            return logits.softmax(-1)

    model.roi_heads.cls_loss = MyLoss()
    with pytest.raises(ConfigError, match="cannot export the classification loss MyLoss"):
        export_model(model, cfg, CATEGORY_IDS, NAMES, tmp_path / "x.onnx")
    with pytest.raises(ConfigError, match=r"--opset 15: the graph needs opset >= 16"):
        export_model(model, cfg, CATEGORY_IDS, NAMES, tmp_path / "x.onnx", opset=15)
    mask_model, mask_cfg = _tiny_model("mask_rcnn_r18_fpn_normed_mask_synthetic",
                                       ["model.parity.mask_paste=legacy"])
    with pytest.raises(ConfigError, match="mask_paste=legacy"):
        export_model(mask_model, mask_cfg, CATEGORY_IDS, NAMES, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_without_onnxruntime_one_line_says_how_to_get_it(exported, monkeypatch, capsys):
    from loce.cli import main

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails
    with pytest.raises(LoceError, match=r"pip install 'loce\[onnx\]'"):
        Detector.from_onnx(exported.path)
    code = main(["predict", "--onnx", str(exported.path), "--images", ".", "--out", "r.json"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "pip install 'loce[onnx]'" in err[0]


def test_cli_export_and_predict_write_the_same_files(checkpoint, images, tmp_path):
    """`loce export --no-masks` then `loce predict --onnx`: the LVIS results file of the
    PyTorch path, detection for detection."""
    from loce.cli import main

    model_file = tmp_path / "boxes.onnx"
    assert main(["export", str(checkpoint), str(model_file), "--no-masks", "--opset", "17"]) == 0
    proto = onnx.load(str(model_file))
    assert [o.name for o in proto.graph.output] == ["boxes", "scores", "labels"]
    for kind, source in (("onnx", ["--onnx", str(model_file)]),
                         ("torch", ["--checkpoint", str(checkpoint), "--device", "cpu",
                                    "--set", "data.test_resize=torch"])):
        assert main(["predict", *source, "--images", str(images), "--no-masks",
                     "--out", str(tmp_path / f"{kind}.json")]) == 0
    ours = json.loads((tmp_path / "onnx.json").read_text())
    ref = json.loads((tmp_path / "torch.json").read_text())
    assert len(ref) > 0 and all("segmentation" not in d for d in ours)
    for image_id in (1, 2):
        a = [d for d in ours if d["image_id"] == image_id]
        b = [d for d in ref if d["image_id"] == image_id]

        def xyxy(dets):
            return torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (d["bbox"] for d in dets)])

        match = match_detections(xyxy(b), torch.tensor([d["score"] for d in b]), xyxy(a),
                                 torch.tensor([d["score"] for d in a]),
                                 torch.tensor([d["category_id"] for d in b]),
                                 torch.tensor([d["category_id"] for d in a]),
                                 iou_threshold=0.99, score_tolerance=1e-3, top_k=50)
        assert match.all_matched, match.summary()


def test_cli_refuses_checkpoint_options_with_onnx(exported, capsys):
    from loce.cli import main

    code = main(["predict", "--onnx", str(exported.path), "--images", ".", "--out", "r.json",
                 "--set", "model.test.score_thresh=0.5"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "re-export" in err[0]
