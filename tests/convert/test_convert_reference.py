"""``loce convert`` + :class:`loce.Detector` against a real MMDetection run.

tests/fixtures/mmdet_reference/ holds one run of MMDetection 2.28 (mmcv-full 1.7.2's compiled
kernels) with the original's stage-1 config at K = 8 on one image, and a recipe for its exact
weights. Here the weights are rebuilt from the recipe, saved as MMDetection saves a checkpoint
(with a config text carrying the run's test settings), converted with ``loce convert`` and run
through the Detector — the code path of ``loce predict`` — on the image MMDetection fed its
network (``mmdet_resized_input.png``, 800 x 1203: loce's resize leaves it as it is). The
detections are compared with MMDetection's, mapped back by its scale factor: same label, box
IoU > 0.999, |score difference| < 1e-4, for every detection scoring above the 300th (the cut
itself is tie-prone).
"""

from __future__ import annotations

import hashlib
import json
import zlib
from pathlib import Path

import pytest
import torch
from mmdet_fakes import mmdet_config, write_mmdet_checkpoint

REFERENCE = Path(__file__).parents[1] / "fixtures" / "mmdet_reference"


def rebuild_reference_weights(spec: dict) -> dict[str, torch.Tensor]:
    """The MMDetection state dict the reference run used, from ``weights_spec.json``."""
    seed = int(spec["seed"])
    out = {}
    for key, entry in spec["tensors"].items():
        shape = tuple(entry["shape"])
        if entry["kind"] == "zeros_int64":
            out[key] = torch.zeros(shape, dtype=torch.int64)
            continue
        g = torch.Generator().manual_seed((seed * 1000003 + zlib.crc32(key.encode("utf-8")))
                                          % 2**62)
        f = lambda v: torch.tensor(float(v), dtype=torch.float32)  # noqa: E731
        if entry["kind"] == "normal":
            value = torch.randn(shape, generator=g) * f(entry["std"]) + f(entry["mean"])
        else:
            value = (torch.rand(shape, generator=g) * f(entry["high"] - entry["low"])
                     + f(entry["low"]))
        out[key] = value * f(entry["scale"])
    return out


def weights_digest(sd: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(sd):
        t = sd[key].contiguous()
        h.update(key.encode("utf-8"))
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def _iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    from torchvision.ops import box_iou

    return box_iou(a[None], b[None])[0, 0]


@pytest.mark.slow
def test_converted_reference_checkpoint_reproduces_mmdetection(tmp_path):
    from loce import Detector
    from loce.convert import mmdet_to_loce

    spec = json.loads((REFERENCE / "weights_spec.json").read_text())
    reference = json.loads((REFERENCE / "detections.json").read_text())
    meta = reference["meta"]
    sd = rebuild_reference_weights(spec)
    assert weights_digest(sd) == meta["weights_sha256"]

    # The run's config: the original's stage-1 config at K = 8 with its test settings
    # (MMDetection 2.28 spelling; min_bbox_size -1 keeps every proposal, as 2.8 does).
    text = mmdet_config(50, 8).replace("min_bbox_size=0", "min_bbox_size=-1")
    src = write_mmdet_checkpoint(tmp_path / "reference.pth", sd, text,
                                 classes=[f"class_{i}" for i in range(8)])
    out = tmp_path / "converted.pth"
    lines: list[str] = []
    mmdet_to_loce(src, out, log=lines.append)
    assert any("MASK HEAD  normed" in line for line in lines)

    h, w = meta["img_shape"][:2]
    dets = reference["detections"]
    cut = min(d["score"] for d in dets)
    above = [d for d in dets if d["score"] > cut]
    assert len(above) >= 290

    def matched(overrides: list[str]) -> int:
        det = Detector.from_checkpoint(out, device="cpu", with_masks=False, overrides=overrides)
        result = det(REFERENCE / "mmdet_resized_input.png")
        assert result.image_size == (h, w)
        # Category ids of LVIS files: label j is id j.
        assert result.category_ids.tolist() == result.labels.tolist()
        sx, sy = meta["scale_factor"][:2]
        ours = result.boxes / torch.tensor([sx, sy, sx, sy])
        used: set[int] = set()
        for d in above:
            box = torch.tensor(d["bbox"], dtype=torch.float32)
            for j in range(len(result)):
                if j in used or int(result.labels[j]) != d["label"] + 1:
                    continue
                if abs(float(result.scores[j]) - d["score"]) < 1e-4 and _iou(ours[j], box) > 0.999:
                    used.add(j)
                    break
        return len(used)

    parity = matched([])
    print(f"reference: {parity}/{len(above)} detections above the cut matched")
    assert parity == len(above)
    # Negative control: torchvision's own pooling, anchors and size filters, same weights.
    stock = matched(["model.parity.roi_align=torchvision", "model.parity.anchors=torchvision",
                     "model.parity.rpn_min_size=0.001", "model.parity.det_min_size=0.01"])
    print(f"reference, torchvision settings: {stock}/{len(above)} matched")
    assert stock < len(above) // 2
