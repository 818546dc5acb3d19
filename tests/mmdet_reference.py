"""The recorded MMDetection run in ``tests/fixtures/mmdet_reference``: its weights rebuilt
from the recipe in ``weights_spec.json``, its detections and proposals, and the checks the
fixture's README describes (``meta.weights_sha256``).

The weights are mmdet-named (360 keys, mmdet's order); ``spec_for_classes`` derives a recipe
for another number of classes from the same entries (only the class-sized tensors change
shape), e.g. the full 1203 LVIS v1 classes. ``run_reference_image`` runs loce on the JPEG
through its own input path and ``compare_with_reference`` gives the match figures (used by
the tests and by ``benchmarks/mmdet_reference_match.py``).
"""

from __future__ import annotations

import copy
import hashlib
import json
import zlib
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "mmdet_reference"
IMAGE = FIXTURES / "image.jpg"
RESIZED_INPUT = FIXTURES / "mmdet_resized_input.png"
#: The bundled config whose model and test settings the reference run used, and its K.
CONFIG = "mask_rcnn_r50_fpn_normed_mask_mstrain_2x_lvis_v1"
NUM_CLASSES = 8

#: mmdet keys whose first dimension counts classes, and how: rows = a * K + b.
_CLASS_SIZED = {
    "roi_head.bbox_head.fc_cls.weight": (1, 1),
    "roi_head.bbox_head.fc_cls.bias": (1, 1),
    "roi_head.bbox_head.fc_reg.weight": (4, 0),
    "roi_head.bbox_head.fc_reg.bias": (4, 0),
    "roi_head.mask_head.conv_logits.weight": (1, 0),
    "roi_head.mask_head.conv_logits.bias": (1, 0),
}


def load_spec() -> dict[str, Any]:
    """``weights_spec.json``: ``{"seed": S, "tensors": {key: entry}}`` in mmdet order."""
    return json.loads((FIXTURES / "weights_spec.json").read_text())


def load_reference() -> dict[str, Any]:
    """``detections.json``: ``meta``, ``detections`` (300) and ``proposals`` (1000)."""
    return json.loads((FIXTURES / "detections.json").read_text())


def spec_for_classes(spec: Mapping[str, Any], num_classes: int) -> dict[str, Any]:
    """The recipe with every class-sized tensor resized for ``num_classes`` foreground classes
    (fc_cls K + 1 rows, fc_reg 4K, conv_logits K); every other entry is unchanged."""
    out = copy.deepcopy(dict(spec))
    for key, (a, b) in _CLASS_SIZED.items():
        shape = out["tensors"][key]["shape"]
        out["tensors"][key]["shape"] = [a * num_classes + b, *shape[1:]]
    return out


def _seed(seed: int, key: str) -> int:
    return (seed * 1000003 + zlib.crc32(key.encode("utf-8"))) % 2**62


def build_tensor(seed: int, key: str, entry: Mapping[str, Any]) -> Tensor:
    """One tensor of the recipe (float32 arithmetic throughout)."""
    g = torch.Generator().manual_seed(_seed(seed, key))
    shape = tuple(entry["shape"])
    kind = entry["kind"]
    f32 = lambda v: torch.tensor(v, dtype=torch.float32)  # noqa: E731
    if kind == "zeros_int64":
        return torch.zeros(shape, dtype=torch.int64)
    if kind == "normal":
        t = torch.randn(shape, generator=g) * f32(entry["std"]) + f32(entry["mean"])
    elif kind == "uniform":
        low, high = entry["low"], entry["high"]
        t = torch.rand(shape, generator=g) * f32(high - low) + f32(low)
    else:
        raise ValueError(f"{key}: unknown kind {kind!r} in the weights recipe")
    return t * f32(entry["scale"])


def build_weights(spec: Mapping[str, Any]) -> OrderedDict[str, Tensor]:
    """The mmdet-named state dict of a recipe, in its key order."""
    seed = int(spec["seed"])
    return OrderedDict((k, build_tensor(seed, k, e)) for k, e in spec["tensors"].items())


def weights_sha256(state: Mapping[str, Tensor]) -> str:
    """The digest of ``meta.weights_sha256``: keys sorted; per key its UTF-8 bytes,
    ``str(tuple(shape))``, ``str(dtype)`` and the raw contiguous bytes."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].contiguous()
        h.update(key.encode("utf-8"))
        h.update(str(tuple(t.shape)).encode("utf-8"))
        h.update(str(t.dtype).encode("utf-8"))
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def reference_config(overrides=(), parity=None):
    """The bundled LVIS v1 config (no backbone download), with overrides and optionally
    another :class:`~loce.config.model.ParityConfig`."""
    from loce.config import load_config

    cfg = load_config(CONFIG, ["model.backbone_weights=none", *overrides])
    if parity is not None:
        cfg.model.parity = parity
    return cfg


def image_folder(cfg, image_dir):
    """``loce predict --images``'s dataset for ``image_dir`` with ``cfg``'s test pipeline."""
    from loce import build
    from loce.engine.predict import ImageFolder

    return ImageFolder(image_dir, build.build_test_transforms(cfg), list(range(1, NUM_CLASSES + 1)),
                       decoder=build.build_test_decoder(cfg))


def run_reference_image(cfg, state: Mapping[str, Tensor], image_dir, device: str = "cpu",
                        image: Tensor | None = None) -> dict[str, Any]:
    """One forward on the first image of ``image_dir`` through loce's input path.

    Args:
        cfg: the config (model and test pipeline).
        state: the converted (loce-named) weights.
        image_dir: a folder holding ``image.jpg``.
        device: where to run.
        image: feed this model input instead of the pipeline's (same original size).

    Returns:
        ``{"image": model input, "det": detections (CPU), "proposals": (boxes [1000, 4],
        scores [1000]) of the RPN (CPU)}``.
    """
    from loce.models import build_mask_rcnn

    model = build_mask_rcnn(cfg.model, NUM_CLASSES, load_backbone=False)
    model.load_state_dict(state, strict=True)
    model.eval().to(device)
    pipeline_image, target = image_folder(cfg, image_dir)[0]
    image = pipeline_image if image is None else image
    captured = []
    filter_proposals = model.rpn.filter_proposals

    def capture(*args, **kwargs):
        boxes, scores = filter_proposals(*args, **kwargs)
        captured.append((boxes[0].cpu(), scores[0].cpu()))
        return boxes, scores

    model.rpn.filter_proposals = capture
    with torch.no_grad():
        det = model([image.to(device)],
                    original_image_sizes=[tuple(int(v) for v in target["orig_size"])])[0]
    return {"image": image, "det": {k: v.cpu() for k, v in det.items()}, "proposals": captured[0]}


def compare_with_reference(run: Mapping[str, Any], reference: Mapping[str, Any]) -> dict[str, Any]:
    """Match figures of a run: ``detections`` (tie-aware at the 300th score; same label,
    IoU > 0.999, |Δscore| < 1e-4), ``mask_pixels`` ``(differing, total)`` over the matched
    pairs, ``proposals`` (all 1000, IoU > 0.999, |Δscore| < 1e-4)."""
    from pycocotools import mask as mask_utils

    from loce.evaluation.matching import match_detections

    dets = reference["detections"]
    det = run["det"]
    match = match_detections(
        torch.tensor([d["bbox"] for d in dets]), torch.tensor([d["score"] for d in dets]),
        det["boxes"], det["scores"],
        torch.tensor([d["label"] + 1 for d in dets]), det["labels"], top_k=300)
    ref_masks = mask_utils.decode([d["segmentation"] for d in dets])  # [H, W, 300]
    differing = total = 0
    for r, c in match.pairs.tolist():
        ours = det["masks"][c, 0].numpy()
        differing += int((ours != ref_masks[:, :, r].astype(bool)).sum())
        total += ours.size
    props = torch.tensor(reference["proposals"])
    boxes, scores = run["proposals"]
    # No cut here: all 1000 must be found (the 1000th's score is not tied in this run).
    proposals = match_detections(props[:, :4], props[:, 4], boxes, scores)
    return {"detections": match, "mask_pixels": (differing, total), "proposals": proposals}
