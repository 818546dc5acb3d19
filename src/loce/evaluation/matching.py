"""Comparing two detection sets as sets, tie-aware at a top-k cut.

Two detectors that compute the same numbers can still list their detections in different
orders (scores tie often in float32, and sort/NMS implementations break ties differently),
and a top-k cut through a tied score can swap which of the tied detections survive. So the
comparison here is one-to-one matching of *sets*, and at a cut it compares only the reference
detections scoring strictly above the last kept score. Used to check loce against recorded
MMDetection outputs (tests) and usable by benchmarks.

Example::

    m = match_detections(ref_boxes, ref_scores, boxes, scores, ref_labels, labels, top_k=300)
    assert m.all_matched, m.summary()
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.ops import box_iou

__all__ = ["DEGENERATE_TOLERANCE", "DetectionMatch", "match_detections"]

#: Pixels within which the corners of two zero-area boxes must agree for them to match.
DEGENERATE_TOLERANCE = 1e-3


@dataclass(frozen=True)
class DetectionMatch:
    """The result of :func:`match_detections`.

    Attributes:
        pairs: ``[M, 2]`` int64 ``(reference index, candidate index)`` of the matches.
        num_reference: reference detections that had to be matched (above the cut).
        unmatched_reference: indices of those left without a match.
        unmatched_candidate: indices of candidate detections scoring clearly above the cut
            (by more than the score tolerance) that match no reference detection.
        cut_score: the score at the cut (None when there was no cut).
    """

    pairs: Tensor
    num_reference: int
    unmatched_reference: list[int]
    unmatched_candidate: list[int]
    cut_score: float | None

    @property
    def num_matched(self) -> int:
        return int(self.pairs.shape[0])

    @property
    def all_matched(self) -> bool:
        """Every reference detection above the cut matched, and no candidate is left over."""
        return not self.unmatched_reference and not self.unmatched_candidate

    def summary(self) -> str:
        """One line: ``matched a/b`` and what is left over."""
        cut = "" if self.cut_score is None else f" above the cut score {self.cut_score:.6g}"
        return (f"matched {self.num_matched}/{self.num_reference} reference detections{cut}; "
                f"unmatched reference {self.unmatched_reference[:10]}, unmatched candidate "
                f"{self.unmatched_candidate[:10]}")


def match_detections(
    ref_boxes: Tensor,
    ref_scores: Tensor,
    boxes: Tensor,
    scores: Tensor,
    ref_labels: Tensor | None = None,
    labels: Tensor | None = None,
    *,
    iou_threshold: float = 0.999,
    score_tolerance: float = 1e-4,
    top_k: int | None = None,
) -> DetectionMatch:
    """Match a candidate detection set to a reference set one-to-one.

    A pair matches when the labels are equal (if given), the box IoU is above
    ``iou_threshold`` (for two boxes without area: corners within
    :data:`DEGENERATE_TOLERANCE` px) and the scores differ by less than ``score_tolerance``. Among the
    pairs that qualify, the matching is greedy by decreasing IoU, each detection used once.

    With ``top_k`` (both sets were cut to their ``top_k`` best) and a full reference set
    (``top_k`` entries), only reference detections scoring strictly above the reference's
    lowest score must be matched: any of the detections tied with the last one may have
    made it in. Candidates that must find a partner are those scoring above that cut by more
    than ``score_tolerance``.

    Args:
        ref_boxes: ``[R, 4]`` float ``(x1, y1, x2, y2)``.
        ref_scores: ``[R]`` float.
        boxes: ``[C, 4]`` float, the same frame.
        scores: ``[C]`` float.
        ref_labels: ``[R]`` int, optional (compared with ``labels`` when both are given).
        labels: ``[C]`` int, optional.
        iou_threshold: minimum IoU (exclusive).
        score_tolerance: maximum score difference (exclusive).
        top_k: the cut both sets were made with, if any.

    Returns:
        A :class:`DetectionMatch`.
    """
    ref_boxes, boxes = (b.detach().cpu().double().reshape(-1, 4) for b in (ref_boxes, boxes))
    ref_scores, scores = (s.detach().cpu().double().reshape(-1) for s in (ref_scores, scores))
    cut: float | None = None
    ref_idx = torch.arange(ref_scores.numel())
    cand_required = torch.ones(scores.numel(), dtype=torch.bool)
    if top_k is not None and ref_scores.numel() >= top_k > 0:
        cut = float(ref_scores.min())
        ref_idx = torch.where(ref_scores > cut)[0]
        cand_required = scores > cut + score_tolerance
    iou = box_iou(ref_boxes[ref_idx], boxes)
    # Two boxes without area (e.g. proposals clipped flat at the border) have no IoU (0 / 0):
    # they match when their corners agree within DEGENERATE_TOLERANCE pixels.
    both_flat = torch.isnan(iou)
    if both_flat.any():
        close = torch.cdist(ref_boxes[ref_idx], boxes, p=float("inf")) < DEGENERATE_TOLERANCE
        iou = torch.where(both_flat, close.to(iou.dtype), iou)
    ok = (iou > iou_threshold) & ((ref_scores[ref_idx, None] - scores[None, :]).abs() < score_tolerance)
    if ref_labels is not None and labels is not None:
        ok &= ref_labels.cpu().reshape(-1)[ref_idx, None] == labels.cpu().reshape(-1)[None, :]
    rows, cols = torch.where(ok)
    order = torch.argsort(iou[rows, cols], descending=True, stable=True)
    used_ref = torch.zeros(ref_idx.numel(), dtype=torch.bool)
    used_cand = torch.zeros(scores.numel(), dtype=torch.bool)
    pairs = []
    for r, c in zip(rows[order].tolist(), cols[order].tolist()):
        if not used_ref[r] and not used_cand[c]:
            used_ref[r] = used_cand[c] = True
            pairs.append((int(ref_idx[r]), c))
    return DetectionMatch(
        pairs=torch.tensor(pairs, dtype=torch.int64).reshape(-1, 2),
        num_reference=int(ref_idx.numel()),
        unmatched_reference=ref_idx[~used_ref].tolist(),
        unmatched_candidate=torch.where(cand_required & ~used_cand)[0].tolist(),
        cut_score=cut,
    )
