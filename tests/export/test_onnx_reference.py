"""The exported R50-FPN Mask R-CNN of the mmdet reference weights (K = 8) against PyTorch.

The file and the model (``data.test_resize: torch``, which the graph implements) run on the
reference JPEG: the top-100 detections must match (same label, box IoU > 0.99, |Δscore| <
1e-3) and the matched masks agree on >= 99 % of their pixels. One export of the R50 model
costs about a minute here: it is made once (module fixture).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.ops import box_iou

import mmdet_reference as ref_data
from loce.inference import Detector
from loce.models import build_mask_rcnn
from loce.models.mmdet_weights import mmdet_to_loce_state_dict

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.slow

K = ref_data.NUM_CLASSES
IDS = list(range(1, K + 1))


@pytest.fixture(scope="module")
def reference_model():
    state, _ = mmdet_to_loce_state_dict(ref_data.build_weights(ref_data.load_spec()))
    cfg = ref_data.reference_config(["data.test_resize=torch"])
    model = build_mask_rcnn(cfg.model, K, load_backbone=False)
    model.load_state_dict(state, strict=True)
    return model.eval(), cfg


@pytest.fixture(scope="module")
def exported(reference_model, tmp_path_factory):
    from loce.export.onnx import export_model

    model, cfg = reference_model
    return export_model(model, cfg, IDS, None, tmp_path_factory.mktemp("onnx") / "r50.onnx")


def test_reference_weights_round_trip(reference_model, exported):
    from test_onnx_export import assert_same_detections

    model, cfg = reference_model
    image = np.asarray(Image.open(ref_data.IMAGE).convert("RGB"))
    ref = Detector(model, cfg, IDS, device="cpu")(image)
    ours = Detector.from_onnx(exported.path)(image)
    assert len(ref) >= 100
    matched, required, agreement = assert_same_detections(ours, ref, top_k=100)
    boxes_iou = torch.diag(box_iou(ref.boxes[:100], ours.boxes[:100]))
    print(f"R50 K=8 {image.shape[1]}x{image.shape[0]}: top-100 {matched}/{required} matched, "
          f"masks {agreement:.4%} of pixels agree; same order for "
          f"{int((boxes_iou > 0.99).sum())}/100, max |dscore| "
          f"{float((ref.scores[:100] - ours.scores[:100]).abs().max()):.2e}")
    assert matched >= 99
