"""Detection models: Mask R-CNN (torchvision) with LOCE's RoI heads and predictors.

``build_mask_rcnn(cfg.model, num_classes=K)`` is the entry point; see
:mod:`loce.models.mask_rcnn` for the input/output frames and
:mod:`loce.models.mmdet_compat` for the switches that reproduce the original MMDetection
computations.
"""

from loce.models.loce_heads import LoceRoIHeads
from loce.models.mask_rcnn import (
    ClassStatistics,
    LoceMaskRCNN,
    NormalizePadTransform,
    build_mask_rcnn,
    load_backbone_weights,
)
from loce.models.predictors import (
    BoxPredictor,
    CosineBoxPredictor,
    CosineLinear,
    MaskPredictor,
    NormedLinear,
    NormedMaskPredictor,
)
from loce.models.roi_heads import (
    BoxRows,
    BoxTrainingOutput,
    RoISamples,
    StepwiseRoIHeads,
    norcal_scores,
)
from loce.models.weights import load_detector_weights

__all__ = [
    "BoxPredictor",
    "BoxRows",
    "ClassStatistics",
    "LoceRoIHeads",
    "NormedLinear",
    "norcal_scores",
    "BoxTrainingOutput",
    "CosineBoxPredictor",
    "CosineLinear",
    "LoceMaskRCNN",
    "StepwiseRoIHeads",
    "NormalizePadTransform",
    "MaskPredictor",
    "NormedMaskPredictor",
    "RoISamples",
    "build_mask_rcnn",
    "load_backbone_weights",
    "load_detector_weights",
]
