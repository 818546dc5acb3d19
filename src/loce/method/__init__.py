"""LOCE's running state and box generator: mean classification score, feature memory, jitter.

These take plain tensors, so any detector (this package's, MMDetection's, detectron2's) can use
them.
"""

from loce.method.box_jitter import NUM_JITTERS, jitter_boxes, jitter_signs
from loce.method.feature_memory import FeatureMemory
from loce.method.score_tracker import MeanScoreTracker

__all__ = ["NUM_JITTERS", "FeatureMemory", "MeanScoreTracker", "jitter_boxes", "jitter_signs"]
