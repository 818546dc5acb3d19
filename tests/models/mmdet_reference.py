"""The recorded MMDetection run in ``tests/fixtures/mmdet_reference``: its weights rebuilt
from the recipe in ``weights_spec.json``, its detections and proposals, and the checks the
fixture's README describes (``meta.weights_sha256``).

The weights are mmdet-named (360 keys, mmdet's order); ``spec_for_classes`` derives a recipe
for another number of classes from the same entries (only the class-sized tensors change
shape), e.g. the full 1203 LVIS v1 classes.
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

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "mmdet_reference"
IMAGE = FIXTURES / "image.jpg"
RESIZED_INPUT = FIXTURES / "mmdet_resized_input.png"

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
