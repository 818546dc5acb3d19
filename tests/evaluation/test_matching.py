"""Tie-aware one-to-one matching of detection sets."""

from __future__ import annotations

import torch

from loce.evaluation.matching import match_detections

BOXES = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 0.0, 30.0, 10.0], [0.0, 20.0, 10.0, 30.0],
                      [40.0, 40.0, 50.0, 60.0]])
SCORES = torch.tensor([0.9, 0.7, 0.5, 0.5])
LABELS = torch.tensor([1, 2, 2, 3])


def test_same_set_in_another_order_matches():
    perm = torch.tensor([3, 1, 0, 2])
    m = match_detections(BOXES, SCORES, BOXES[perm], SCORES[perm], LABELS, LABELS[perm])
    assert m.all_matched and m.num_matched == 4 and m.cut_score is None
    assert sorted(m.pairs.tolist()) == [[0, 2], [1, 1], [2, 3], [3, 0]]
    assert "matched 4/4" in m.summary()


def test_each_criterion_can_fail():
    shifted = BOXES.clone()
    shifted[1] += torch.tensor([0.02, 0.0, 0.02, 0.0])  # IoU 0.996 < 0.999
    m = match_detections(BOXES, SCORES, shifted, SCORES, LABELS, LABELS)
    assert m.unmatched_reference == [1] and m.unmatched_candidate == [1]
    assert match_detections(BOXES, SCORES, shifted, SCORES, iou_threshold=0.99).all_matched
    scores = SCORES.clone()
    scores[0] += 2e-4
    assert match_detections(BOXES, SCORES, BOXES, scores).unmatched_reference == [0]
    assert match_detections(BOXES, SCORES, BOXES, SCORES + 5e-5).all_matched
    labels = LABELS.clone()
    labels[3] = 1
    assert match_detections(BOXES, SCORES, BOXES, SCORES, LABELS, labels).unmatched_reference == [3]
    assert match_detections(BOXES, SCORES, BOXES, SCORES).all_matched  # labels not given


def test_one_to_one():
    ref = torch.cat([BOXES[:1], BOXES[:1]])
    m = match_detections(ref, torch.tensor([0.9, 0.9]), BOXES[:1], SCORES[:1])
    assert m.num_matched == 1 and len(m.unmatched_reference) == 1 and not m.all_matched


def test_tie_at_the_cut():
    """top_k = 4 with the last score (0.5) tied: only the two above it must match, and a
    candidate that took the other tied slot is fine."""
    other = torch.tensor([[60.0, 0.0, 70.0, 10.0]])
    cand_boxes = torch.cat([BOXES[:2], BOXES[3:], other])
    cand_scores = torch.tensor([0.9, 0.7, 0.5, 0.5])
    m = match_detections(BOXES, SCORES, cand_boxes, cand_scores, top_k=4)
    assert m.cut_score == 0.5 and m.num_reference == 2 and m.all_matched
    # without the cut the two sets differ
    assert not match_detections(BOXES, SCORES, cand_boxes, cand_scores).all_matched
    # negative controls: a missing detection above the cut, an extra one clearly above it
    assert match_detections(BOXES, SCORES, cand_boxes[1:], cand_scores[1:], top_k=4
                            ).unmatched_reference == [0]
    extra = match_detections(BOXES, SCORES, cand_boxes, torch.tensor([0.9, 0.7, 0.5, 0.6]), top_k=4)
    assert extra.unmatched_candidate == [3] and not extra.all_matched
    # a reference set shorter than top_k was not cut: everything must match
    assert match_detections(BOXES, SCORES, cand_boxes, cand_scores, top_k=5).cut_score is None


def test_empty_sets():
    empty = torch.zeros(0, 4)
    assert match_detections(empty, torch.zeros(0), empty, torch.zeros(0)).all_matched
    m = match_detections(BOXES, SCORES, empty, torch.zeros(0))
    assert m.unmatched_reference == [0, 1, 2, 3] and m.pairs.shape == (0, 2)


def test_boxes_without_area_match_by_their_corners():
    flat = torch.tensor([[243.0, 0.0, 243.0, 185.0], [10.0, 185.0, 30.0, 185.0]])
    scores = torch.tensor([0.99, 0.98])
    assert match_detections(flat, scores, flat.flip(0), scores.flip(0)).all_matched
    moved = flat + torch.tensor([0.0, 0.0, 0.0, 0.01])  # 0.01 px off (the second gets an area)
    assert match_detections(flat, scores, moved, scores).unmatched_reference == [0, 1]
