"""Evaluation: the LVIS protocol (box and mask AP) on the hotcoco engine.

Importing this package does not import torch.
"""

from loce.evaluation.lvis_eval import (
    METRIC_KEYS,
    TABLE_KEYS,
    GroundTruth,
    evaluate_lvis,
    evaluate_lvis_multi,
    format_metrics_table,
    load_ground_truth,
)
from loce.evaluation.results import (
    DetectionColumns,
    load_results_json,
    top_k_per_group,
    validate_results,
)

__all__ = [
    "METRIC_KEYS",
    "TABLE_KEYS",
    "DetectionColumns",
    "GroundTruth",
    "evaluate_lvis",
    "evaluate_lvis_multi",
    "format_metrics_table",
    "load_ground_truth",
    "load_results_json",
    "top_k_per_group",
    "validate_results",
]
