"""loce: LOCE and a long-tailed object detection toolkit on PyTorch/torchvision.

The method's building blocks take plain tensors and can be used from any detector::

    from loce import equilibrium_loss, MeanScoreTracker, FeatureMemory, jitter_boxes

``from loce import Detector`` is the inference API (:mod:`loce.inference`). All are imported
lazily (on first attribute access) so that light commands such as
``loce eval`` start without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from loce.errors import LoceError

__version__ = "0.1.0.dev0"

_LAZY = {
    "equilibrium_loss": "loce.losses.equilibrium",
    "EquilibriumLoss": "loce.losses.equilibrium",
    "MeanScoreTracker": "loce.method.score_tracker",
    "FeatureMemory": "loce.method.feature_memory",
    "jitter_boxes": "loce.method.box_jitter",
    "evaluate_lvis": "loce.evaluation",
    "Detector": "loce.inference",
    "DetectionResult": "loce.inference",
}

__all__ = ["LoceError", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'loce' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
