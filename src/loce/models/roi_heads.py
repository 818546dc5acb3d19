"""RoI heads with the box branch split into small overridable steps.

Shape shorthand:
    N  images               R  sampled RoIs (all images concatenated)
    R' rows through the box head (R proposals + rows appended by ``extend_box_rows``)
    K  foreground classes   C = K + 1 logits; background is class 0
    D  channels (256)       S  box pooling size (7)      M  mask resolution (28)
    F  box feature size (1024)

Training, in order (:meth:`StepwiseRoIHeads.box_training_step`)::

    sample_proposals        proposals + GT -> RoISamples (labels, matched GT, box targets)
    pool_box_features       -> pooled [R, D, S, S]
    extend_box_rows         hook: append rows (e.g. memory features) -> BoxRows [R', ...]
    box_head_forward        -> [R', F]
    box_predict             -> class_logits [R', C], box_regression [R', 4C]
    observe_box_predictions hook: see predictions + per-GT assignment before the loss
    classification_loss     cls_loss(class_logits [R', C], labels [R']) -> scalar
    box_regression_loss     class-specific deltas of positive rows -> scalar

then the mask branch on the positive proposals (never on appended rows). Inference:
pool -> head -> predict -> :meth:`postprocess_detections` -> masks of the detections.

With the defaults (cross-entropy, smooth L1 with beta 1/9, torchvision's small-box filter,
unaligned soft mask targets) the losses and detections equal torchvision's ``RoIHeads`` on
the same inputs and random state.

``cls_loss`` is the pluggable classification step, any module of :mod:`loce.losses`; its
width ``C'`` is ``K + 1`` (``K + 2`` for Seesaw), the box deltas always ``K + 1`` classes. At
inference :meth:`StepwiseRoIHeads.class_scores` scores by the loss's own rule, or by NorCal
(:func:`norcal_scores`) once :meth:`StepwiseRoIHeads.set_norcal` turned it on, or by FRACAL
(:func:`loce.losses.scoring.fracal_scores`) once :meth:`StepwiseRoIHeads.set_fracal` did. ``cls_loss``
is a submodule: its buffers (running statistics, constants) are in the state dict under
``roi_heads.cls_loss.*``; how each loss keeps them across ranks and checkpoints is
docs/methods.md §1.7. NorCal's class counts are a non-persistent buffer, a choice made at
inference, so any checkpoint loads with or without them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.roi_heads import (
    RoIHeads,
    project_masks_on_boxes,
)
from torchvision.ops import boxes as box_ops

from loce.losses import CrossEntropyLoss, EquilibriumLoss
from loce.losses.scoring import fracal_scores
from loce.models.mmdet_compat import box_regression_loss_sum, project_masks_aligned
from loce.models.precision import to_geometry

__all__ = [
    "BoxRows",
    "BoxTrainingOutput",
    "StepwiseRoIHeads",
    "RoISamples",
    "class_wise_nms",
    "offset_class_wise_nms",
    "is_softmax_loss",
    "norcal_scores",
]


@dataclass
class RoISamples:
    """Sampled training RoIs, one entry per image (``R_i`` RoIs in image ``i``).

    Attributes:
        proposals: ``[R_i, 4]`` float boxes (image pixels), proposals and GT boxes sampled.
        matched_idxs: ``[R_i]`` int64 index of the matched GT box in ``targets[i]`` (0 for
            background RoIs, whose ``labels`` are 0; check ``labels > 0`` before use).
        labels: ``[R_i]`` int64 class, 0 = background, 1..K.
        regression_targets: ``[R_i, 4]`` float encoded deltas to the matched GT box.
    """

    proposals: list[Tensor]
    matched_idxs: list[Tensor]
    labels: list[Tensor]
    regression_targets: list[Tensor]


@dataclass
class BoxRows:
    """Rows that go through the box head and into the box losses together.

    Attributes:
        features: ``[R', D, S, S]`` pooled features.
        labels: ``[R']`` int64 class per row (0 = background).
        regression_targets: ``[R', 4]`` float targets (ignored where ``labels == 0``).
        num_proposal_rows: rows ``[0, R)`` are sampled proposals (in image order, as in
            :class:`RoISamples`); rows from ``R`` on were appended by ``extend_box_rows``.
    """

    features: Tensor
    labels: Tensor
    regression_targets: Tensor
    num_proposal_rows: int


@dataclass
class BoxTrainingOutput:
    """Everything the box training step computed (for the mask branch and for subclasses).

    Attributes:
        samples: the sampled RoIs per image (with the per-GT assignment ``matched_idxs``).
        pooled: ``[R, D, S, S]`` pooled features of the sampled proposals only.
        rows: the rows through the box head (``pooled`` plus appended rows).
        class_logits: ``[R', C]``.
        box_regression: ``[R', 4C]``.
    """

    samples: RoISamples
    pooled: Tensor
    rows: BoxRows
    class_logits: Tensor
    box_regression: Tensor


def _threshold_in(dtype: torch.dtype, iou_threshold: float) -> float:
    """The largest ``dtype`` value ``t`` with ``x > t`` exactly when ``x > iou_threshold``.

    torchvision's CPU kernel compares the IoU (in the boxes' dtype) with the threshold as a
    double; a threshold that rounds up in float32 (0.3 -> 0.30000001) would flip an IoU equal
    to the rounded value.
    """
    t = torch.tensor(iou_threshold, dtype=torch.float64).to(dtype)
    if t.double() > iou_threshold:
        t = torch.nextafter(t, torch.tensor(-1.0, dtype=dtype))
    return float(t)


#: Same-class box pairs whose IoU is computed at once (memory: ~24 bytes a pair).
NMS_PAIR_CHUNK = 1 << 20


def _suppression_edges(boxes: Tensor, block_end: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    """Pairs ``(i, j)``, ``i < j`` in one class block, whose IoU is above ``threshold``.

    Args:
        boxes: ``[B, 4]`` sorted by class, then by decreasing score.
        block_end: ``[B]`` int64 end (exclusive) of each box's class block.

    Returns:
        ``(src [E], dst [E])`` int64: box ``src`` (higher score) suppresses ``dst`` if kept.
    """
    num = boxes.shape[0]
    position = torch.arange(num, device=boxes.device)
    after = block_end - position - 1  # later boxes of the same class
    first = torch.cumsum(after, 0) - after  # first pair of each box in the flat pair list
    total = int(after.sum())  # host sync: the pair count sets the chunking
    # The IoU exactly as torchvision's CPU kernel computes it, in the boxes' dtype.
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    src_parts, dst_parts = [], []
    for start in range(0, total, NMS_PAIR_CHUNK):
        flat = torch.arange(start, min(total, start + NMS_PAIR_CHUNK), device=boxes.device)
        i = torch.searchsorted(first, flat, right=True) - 1
        j = i + 1 + (flat - first[i])
        a, b = boxes[i], boxes[j]
        w = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp(min=0)
        h = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp(min=0)
        inter = w * h
        hit = inter / (area[i] + area[j] - inter) > threshold
        src_parts.append(i[hit])
        dst_parts.append(j[hit])
    if not src_parts:
        empty = position[:0]
        return empty, empty
    return torch.cat(src_parts), torch.cat(dst_parts)


def class_wise_nms(boxes: Tensor, scores: Tensor, labels: Tensor, iou_threshold: float) -> Tensor:
    """Exact per-class NMS for all classes at once, without a loop over classes.

    Keeps the same boxes as running :func:`torchvision.ops.nms` (CPU kernel) on each class
    separately: the same float arithmetic for the IoU, the same order (decreasing score, ties
    by index). Boxes are sorted by class, then score; the IoU of every same-class pair
    ``(i, j)``, ``i`` ahead of ``j``, gives the suppression edges; greedy NMS is the unique
    fixed point of ``keep[j] = no kept i suppresses j`` on that acyclic graph, reached from
    "all kept" in (longest suppression chain + 1) vectorised sweeps. Host syncs: one for the
    pair count, one per sweep (typically 2-4), one for the output size, whatever the number
    of classes.

    Args:
        boxes: ``[B, 4]`` float ``(x1, y1, x2, y2)``.
        scores: ``[B]`` float.
        labels: ``[B]`` int64 class of each box.
        iou_threshold: boxes with IoU above this with a higher-scoring box of the same class
            are dropped.

    Returns:
        ``[B_kept]`` int64 indices into the inputs, by decreasing score (ties by class, then
        index).
    """
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    order = torch.argsort(scores, descending=True, stable=True)
    order = order[torch.argsort(labels[order], stable=True)]
    sorted_labels = labels[order]
    _, counts = torch.unique_consecutive(sorted_labels, return_counts=True)
    block_end = torch.repeat_interleave(torch.cumsum(counts, 0), counts)
    src, dst = _suppression_edges(boxes[order], block_end, _threshold_in(boxes.dtype, iou_threshold))
    keep = torch.ones(order.shape[0], dtype=torch.bool, device=boxes.device)
    while True:
        suppressed = torch.zeros(order.shape[0], dtype=torch.int32, device=boxes.device)
        suppressed.index_add_(0, dst, keep[src].to(torch.int32))
        swept = suppressed == 0
        if torch.equal(swept, keep):
            break
        keep = swept
    kept = order[keep]
    return kept[torch.argsort(scores[kept], descending=True, stable=True)]


def offset_class_wise_nms(
    boxes: Tensor, scores: Tensor, labels: Tensor, iou_threshold: float, max_coordinate: Tensor,
) -> Tensor:
    """Class-wise NMS as mmcv's ``batched_nms`` computes it (docs/parity.md §4 #24).

    Each box is shifted by ``label * (max_coordinate + 1)``, in float32, and NMS runs on the
    shifted boxes. The shift separates the classes (boxes of different classes never
    overlap), so one NMS over all boxes (mmcv below 10,000 boxes) and one per class (mmcv
    above) keep the same boxes, and this function runs one per class. What differs from
    :func:`class_wise_nms` is the float32 rounding of the shifted coordinates (a ulp of
    0.06-0.125 px at LVIS's offsets of ~1e6), which flips near-threshold pairs.

    Args:
        boxes: ``[B, 4]`` float32 ``(x1, y1, x2, y2)``.
        scores: ``[B]`` float.
        labels: ``[B]`` int64 class as the original counts it (0-based: loce label - 1).
        iou_threshold: boxes with IoU above this with a higher-scoring box of the same class
            are dropped.
        max_coordinate: scalar float32, the largest coordinate of *all* the candidate boxes
            (the original computes it before any top-k), which sets the offsets.

    Returns:
        ``[B_kept]`` int64 indices into the inputs, by decreasing score.
    """
    offsets = labels.to(boxes.dtype) * (max_coordinate.to(boxes.dtype) + 1)
    return class_wise_nms(boxes + offsets[:, None], scores, labels, iou_threshold)


def norcal_scores(logits: Tensor, log_counts: Tensor, gamma: float) -> Tensor:
    """NorCal's calibrated softmax (docs/methods.md §8.1, its default gamma/exps/renorm mode).

    ``p = softmax([z_0, z_c - gamma * ln N_c])``: each foreground exponential is divided by
    ``N_c ** gamma`` and the row renormalised. The background logit is not shifted, but its
    probability changes through the renormalisation. ``gamma = 0`` is the plain softmax.

    Args:
        logits: ``[R, K + 1]`` float, background at column 0.
        log_counts: ``[K]`` float ``ln N_c``, ``N_c`` the training image count of label ``c``
            (``c = 1..K``).
        gamma: calibration strength ``>= 0``.

    Returns:
        ``[R, K + 1]`` float32 probabilities, rows summing to 1.

    Raises:
        ValueError: shapes that do not match.
    """
    if logits.dim() != 2 or log_counts.shape != (logits.shape[1] - 1,):
        raise ValueError(
            f"norcal_scores needs logits [R, K + 1] and log_counts [K], got "
            f"{list(logits.shape)} and {list(log_counts.shape)}"
        )
    z = logits.float()
    shift = torch.cat([z.new_zeros(1), gamma * log_counts.to(device=z.device, dtype=z.dtype)])
    return torch.softmax(z - shift, dim=1)


def is_softmax_loss(module: nn.Module) -> bool:
    """Whether ``module`` is a classification loss scored by a softmax over ``K + 1`` logits."""
    return isinstance(module, (nn.CrossEntropyLoss, CrossEntropyLoss, EquilibriumLoss))


class StepwiseRoIHeads(RoIHeads):
    """torchvision ``RoIHeads`` whose box branch is a chain of small overridable steps.

    Takes ``RoIHeads``'s constructor arguments (box/mask modules, sampler and test settings)
    plus the keyword arguments below. The defaults reproduce torchvision.

    Args:
        cls_loss: module called as ``cls_loss(class_logits [R', C'], labels [R'])`` returning
            a scalar; default :class:`torch.nn.CrossEntropyLoss`. When it has a
            ``scores(logits [R, C']) -> [R, K + 1]`` method (every :mod:`loce.losses` module
            does), inference scores with it; otherwise with a softmax.
        box_loss: "smooth_l1" (torchvision) or "l1" (the original).
        smooth_l1_beta: beta of the smooth L1 loss.
        det_min_size: detections with a side below this (px) are dropped before NMS
            (torchvision 1e-2; the original 0).
        mask_targets: "legacy" (torchvision's soft, unaligned crops) or "aligned_binary"
            (the original: aligned RoIAlign, then ``>= 0.5``).
        select_mask_channels: compute only each RoI's class channel of the mask logits
            (needs a predictor with ``supports_label_selection``; same numbers, less memory).
        nms: the class-wise NMS of the detections: "exact" (each class on its own boxes, in
            the input frame) or "mmcv" (the original: in the original image frame, on boxes
            shifted by ``(label - 1) * (max coordinate + 1)`` in float32,
            :func:`offset_class_wise_nms`). Either way the detections come back in the
            input frame, so the mask branch pools the same boxes.
    """

    def __init__(
        self,
        *args,
        cls_loss: nn.Module | None = None,
        box_loss: Literal["smooth_l1", "l1"] = "smooth_l1",
        smooth_l1_beta: float = 1.0 / 9.0,
        det_min_size: float = 1e-2,
        mask_targets: Literal["legacy", "aligned_binary"] = "legacy",
        select_mask_channels: bool = True,
        nms: Literal["exact", "mmcv"] = "exact",
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        if nms not in ("exact", "mmcv"):
            raise ValueError(f"nms must be one of 'exact', 'mmcv', got {nms!r}")
        self.nms = nms
        if box_loss not in ("smooth_l1", "l1"):
            raise ValueError(f"box_loss must be one of 'smooth_l1', 'l1', got {box_loss!r}")
        if mask_targets not in ("legacy", "aligned_binary"):
            raise ValueError(
                f"mask_targets must be one of 'legacy', 'aligned_binary', got {mask_targets!r}"
            )
        self.cls_loss = cls_loss if cls_loss is not None else nn.CrossEntropyLoss()
        self.box_loss = box_loss
        self.smooth_l1_beta = smooth_l1_beta
        self.det_min_size = det_min_size
        self.mask_targets = mask_targets
        self.select_mask_channels = select_mask_channels
        # NorCal (set_norcal): off until set; the counts are not part of the trained model.
        self.norcal_gamma: float | None = None
        # False: inference skips the mask branch (box-only prediction and evaluation).
        self.infer_masks = True
        #: Candidate (proposal, class) pairs a traced graph takes into NMS
        #: (:meth:`_traced_detections_one_image`); set by the exporter.
        self.traced_candidates = 4 * self.detections_per_img
        # False: training skips the mask branch and its loss (LOCE's initialisation pass,
        # which only fills the feature memory and the mean scores).
        self.train_masks = True
        self.register_buffer("norcal_log_counts", None, persistent=False)
        # FRACAL (set_fracal): off until set; its statistics come from the training set.
        self.fracal_lambda: float | None = None
        self.register_buffer("fracal_logit_offsets", None, persistent=False)
        self.register_buffer("fracal_dims", None, persistent=False)

    def set_norcal(self, image_counts: Tensor | None, gamma: float | None) -> None:
        """Turn NorCal's post-hoc calibration on (or off with ``gamma=None``).

        Args:
            image_counts: ``[K]`` training images per foreground class (labels 1..K). A class
                without training images counts as 1 (``ln 0`` would be infinite; the original
                assumes every class occurs).
            gamma: calibration strength ``>= 0``; ``None`` turns NorCal off.

        Raises:
            ValueError: a classification loss that is not a softmax (NorCal calibrates
                softmax classifiers only, docs/methods.md §8.5), a negative ``gamma`` or counts of
                the wrong shape.
        """
        if gamma is None:
            self.norcal_gamma = None
            self.norcal_log_counts = None
            return
        (counts,) = self._calibration_vectors("NorCal", "gamma", gamma, {
            "image counts": image_counts}, "the training image count of every class")
        self.norcal_log_counts = counts.clamp(min=1.0).log().float()
        self.norcal_gamma = float(gamma)

    def _calibration_vectors(self, method: str, strength_name: str, strength: float,
                             vectors: dict[str, Tensor | None], what: str) -> list[Tensor]:  # fmt: skip
        """The checks a post-hoc calibration's settings share; the ``[K]`` vectors as float64
        on the heads' device.

        Raises:
            ValueError: a classification loss that is not a softmax, a negative strength, a
                vector missing or of the wrong shape.
        """
        if not is_softmax_loss(self.cls_loss):
            raise ValueError(
                f"{method} calibrates softmax classifiers, but this model's classification loss "
                f"is {type(self.cls_loss).__name__}"
            )
        if not strength >= 0.0:
            raise ValueError(f"{method} {strength_name} must be >= 0, got {strength!r}")
        if any(v is None for v in vectors.values()):
            raise ValueError(f"{method} needs {what}")
        device = next((p.device for p in self.parameters()), torch.device("cpu"))
        k = self._num_box_classes() - 1
        out = []
        for name, values in vectors.items():
            v = torch.as_tensor(values, dtype=torch.float64).flatten()
            if k > 0 and v.shape != (k,):
                raise ValueError(
                    f"{method} {name} must have one entry per foreground class, shape [K] = "
                    f"[{k}], got shape {list(v.shape)}"
                )
            out.append(v.to(device))
        return out

    def set_fracal(self, logit_offsets: Tensor | None, fractal_dims: Tensor | None,
                   lam: float | None) -> None:  # fmt: skip
        """Turn FRACAL's post-hoc calibration on (or off with ``lam=None``).

        Args:
            logit_offsets: ``[K]`` frequency term of labels 1..K
                (:func:`loce.losses.scoring.fracal_logit_offsets`).
            fractal_dims: ``[K]`` fractal dimensions of labels 1..K
                (:func:`loce.data.statistics.fractal_dimensions`).
            lam: exponent of the fractal term ``>= 0``; ``None`` turns FRACAL off.

        Raises:
            ValueError: a classification loss that is not a softmax, a negative ``lam`` or
                statistics of the wrong shape.
        """
        if lam is None:
            self.fracal_lambda = None
            self.fracal_logit_offsets = None
            self.fracal_dims = None
            return
        offsets, dims = self._calibration_vectors("FRACAL", "lambda", lam, {
            "frequency term": logit_offsets, "fractal dimensions": fractal_dims},
            "the frequency term and fractal dimension of every class")  # fmt: skip
        self.fracal_logit_offsets = offsets.float()
        self.fracal_dims = dims.float()
        self.fracal_lambda = float(lam)

    def _num_box_classes(self) -> int:
        """``K + 1``, read from the box regressor's width (0 when it cannot be read)."""
        bbox_pred = getattr(self.box_predictor, "bbox_pred", None)
        out = getattr(bbox_pred, "out_features", None)
        return int(out) // 4 if out is not None else 0

    # ------------------------------------------------------------------ box branch steps

    def sample_proposals(self, proposals: list[Tensor], targets: list[dict[str, Tensor]]) -> RoISamples:
        """Add GT boxes to the proposals, match, and sample ``batch_size_per_image`` RoIs.

        Args:
            proposals: N tensors ``[P_i, 4]`` float from the RPN.
            targets: N dicts with ``boxes [G_i, 4]`` float and ``labels [G_i]`` int64.

        Returns:
            :class:`RoISamples` (uses torchvision's ``select_training_samples``).
        """
        props, matched_idxs, labels, regression_targets = self.select_training_samples(proposals, targets)
        return RoISamples(props, matched_idxs, labels, regression_targets)

    def pool_box_features(
        self, features: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]
    ) -> Tensor:
        """RoIAlign of each box on its pyramid level.

        Args:
            features: FPN maps by name, each ``[N, D, H_l, W_l]``.
            boxes: N tensors ``[R_i, 4]`` float in image pixels.
            image_shapes: N ``(h, w)`` sizes of the unpadded input images.

        Returns:
            ``[R, D, S, S]`` with ``R = sum_i R_i``.
        """
        return self.box_roi_pool(features, boxes, image_shapes)

    def extend_box_rows(
        self,
        rows: BoxRows,
        features: dict[str, Tensor],
        samples: RoISamples,
        targets: list[dict[str, Tensor]],
        image_shapes: list[tuple[int, int]],
    ) -> BoxRows:
        """Hook to append rows (features, labels, regression targets) before the box head.

        LOCE's feature memory appends stored GT features here. The default returns ``rows``.

        Args:
            rows: the sampled proposals' rows (``num_proposal_rows == R``).
            features: FPN maps (to pool further boxes, e.g. jittered GT boxes).
            samples: the sampled RoIs.
            targets: the ground truth.
            image_shapes: N ``(h, w)``.

        Returns:
            Rows ``[R', ...]``; the first ``R`` must be ``rows`` unchanged.
        """
        return rows

    def box_head_forward(self, pooled: Tensor) -> Tensor:
        """Shared box head (two FC layers with ReLU): ``[R', D, S, S]`` -> ``[R', F]``."""
        return self.box_head(pooled)

    def box_predict(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Box predictor: ``[R', F]`` -> ``(class_logits [R', C], box_regression [R', 4C])``.

        Both come out in float32 when the head ran in a 16-bit autocast dtype: the deltas are
        decoded against float32 proposals (torchvision's decoder would otherwise cast the
        proposals to the deltas' dtype) and the losses and scores see float32 logits.
        """
        class_logits, box_regression = self.box_predictor(x)
        return to_geometry(class_logits), to_geometry(box_regression)

    def observe_box_predictions(self, output: BoxTrainingOutput) -> None:
        """Hook called after the box predictor and before the losses (default: nothing).

        LOCE updates its mean classification scores here: ``output.class_logits[:R]`` are
        the proposals' logits and ``output.samples.matched_idxs`` / ``labels`` give each
        positive proposal's GT box.
        """

    def classification_loss(self, class_logits: Tensor, labels: Tensor) -> Tensor:
        """``cls_loss(class_logits [R', C'] float, labels [R'] int64)`` -> scalar.

        Stateful losses update their running statistics here (in training mode), once per
        step on every rank: EQLv2's all-reduce is a collective.
        """
        return self.cls_loss(class_logits, labels)

    def box_regression_loss(self, box_regression: Tensor, labels: Tensor, regression_targets: Tensor) -> Tensor:
        """Box loss on the ground-truth class's deltas of positive rows, summed and divided
        by the number of rows (positives and negatives), as both libraries normalise it.

        Args:
            box_regression: ``[R', 4C]`` float.
            labels: ``[R']`` int64.
            regression_targets: ``[R', 4]`` float.

        Returns:
            Scalar.
        """
        pos = torch.where(labels > 0)[0]
        deltas = box_regression.reshape(box_regression.shape[0], -1, 4)[pos, labels[pos]]
        total = box_regression_loss_sum(deltas, regression_targets[pos], self.box_loss, self.smooth_l1_beta)
        return total / labels.numel()

    def box_losses(self, output: BoxTrainingOutput) -> dict[str, Tensor]:
        """``{"loss_classifier", "loss_box_reg"}`` over all rows of ``output``."""
        rows = output.rows
        return {
            "loss_classifier": self.classification_loss(output.class_logits, rows.labels),
            "loss_box_reg": self.box_regression_loss(
                output.box_regression, rows.labels, rows.regression_targets
            ),
        }

    def box_training_step(
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, Tensor]],
    ) -> tuple[dict[str, Tensor], BoxTrainingOutput]:
        """The box branch in training: sample, pool, extend, head, predict, observe, losses.

        Returns:
            ``(losses, output)``: ``{"loss_classifier", "loss_box_reg"}`` and everything
            computed on the way.
        """
        samples = self.sample_proposals(proposals, targets)
        pooled = self.pool_box_features(features, samples.proposals, image_shapes)
        rows = BoxRows(
            features=pooled,
            labels=torch.cat(samples.labels, dim=0),
            regression_targets=torch.cat(samples.regression_targets, dim=0),
            num_proposal_rows=pooled.shape[0],
        )
        rows = self.extend_box_rows(rows, features, samples, targets, image_shapes)
        class_logits, box_regression = self.box_predict(self.box_head_forward(rows.features))
        output = BoxTrainingOutput(samples, pooled, rows, class_logits, box_regression)
        self.observe_box_predictions(output)
        return self.box_losses(output), output

    # ------------------------------------------------------------------ inference

    def class_scores(self, class_logits: Tensor) -> Tensor:
        """Inference scores of each class, background at column 0.

        NorCal when :meth:`set_norcal` turned it on; else the loss's own rule
        (``cls_loss.scores``); else (a loss without one, e.g. ``nn.CrossEntropyLoss``) a
        softmax, as torchvision.

        Args:
            class_logits: ``[R, C']`` float.

        Returns:
            ``[R, K + 1]`` float.
        """
        if self.norcal_gamma is not None:
            return norcal_scores(class_logits, self.norcal_log_counts, self.norcal_gamma)
        if self.fracal_lambda is not None:
            return fracal_scores(class_logits, self.fracal_logit_offsets, self.fracal_dims,
                                 self.fracal_lambda)  # fmt: skip
        scores = getattr(self.cls_loss, "scores", None)
        if callable(scores):
            return scores(class_logits)
        return F.softmax(class_logits, -1)

    def postprocess_detections(
        self,
        class_logits: Tensor,
        box_regression: Tensor,
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
        scale_factors: list[Tensor] | None = None,
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Detections per image: threshold, decode, class-wise NMS, top ``detections_per_img``.

        The same detections as torchvision's ``postprocess_detections`` (when
        ``det_min_size`` is 1e-2), computed in an order that stays fast at LVIS scale
        (1203 classes x 1000 proposals, score threshold 1e-4):

        1. scores (:meth:`class_scores`: softmax for cross-entropy, the method's rule
           otherwise); keep (proposal, class) pairs with ``score > score_thresh``;
        2. take the ``n`` highest-scoring pairs (``n`` starts at 4x the detection cap);
        3. decode, clip and size-filter only those, then exact class-wise NMS;
        4. if fewer than ``detections_per_img`` survive and pairs are left, grow ``n``.

        Step 3 is exact for the taken pairs because a box is only ever suppressed by a
        higher-scoring box of its class, all of which are among the taken pairs. With
        ``nms="mmcv"`` step 3 runs :func:`offset_class_wise_nms` on the boxes divided by the
        image's scale factor, with the offsets set by all pairs above the threshold (as the
        original, which decodes them all).

        Args:
            class_logits: ``[R, C']`` float (``C' = C``, or ``K + 2`` for Seesaw).
            box_regression: ``[R, 4C]`` float.
            proposals: N tensors ``[R_i, 4]`` float.
            image_shapes: N ``(h, w)`` to clip to.
            scale_factors: N ``[4]`` float32 factors from the original image to the input
                (:meth:`loce.models.mask_rcnn.NormalizePadTransform.scale_factors`), used by
                ``nms="mmcv"``; None: the input frame is the original one.

        Returns:
            ``(boxes, scores, labels)``: N tensors each, ``[n_i, 4]`` float (input frame),
            ``[n_i]`` float, ``[n_i]`` int64 in 1..K, by decreasing score.
        """
        scores = self.class_scores(class_logits)
        num_classes = scores.shape[-1]
        assert box_regression.shape[-1] == 4 * num_classes, (
            f"box regression {list(box_regression.shape)} does not match {num_classes} classes"
        )
        counts = [p.shape[0] for p in proposals]
        scores_all = scores.split(counts, 0)
        deltas_all = box_regression.reshape(box_regression.shape[0], num_classes, 4).split(counts, 0)
        if scale_factors is None:
            scale_factors = [torch.ones(4) for _ in proposals]
        out_boxes, out_scores, out_labels = [], [], []
        for scores, deltas, props, shape, factor in zip(scores_all, deltas_all, proposals,
                                                        image_shapes, scale_factors):
            boxes, kept_scores, labels = self._detections_one_image(scores, deltas, props, shape,
                                                                    factor)
            out_boxes.append(boxes)
            out_scores.append(kept_scores)
            out_labels.append(labels)
        return out_boxes, out_scores, out_labels

    def _detections_one_image(
        self, scores: Tensor, deltas: Tensor, proposals: Tensor, image_shape: tuple[int, int],
        scale_factor: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One image of :meth:`postprocess_detections`.

        Args:
            scores: ``[P, C]`` class scores (column 0 background, ignored).
            deltas: ``[P, C, 4]``.
            proposals: ``[P, 4]``.
            image_shape: ``(h, w)``.
            scale_factor: ``[4]`` float32, original frame -> input frame.
        """
        if torch.jit.is_tracing():
            return self._traced_detections_one_image(scores, deltas, proposals, image_shape,
                                                     scale_factor)
        fg = scores[:, 1:]
        cand = torch.where(fg.reshape(-1) > self.score_thresh)[0]  # flat (proposal, class)
        cand_scores = fg.reshape(-1)[cand]
        num_fg = fg.shape[1]
        factor = scale_factor.to(device=proposals.device, dtype=proposals.dtype)

        def decode(flat: Tensor) -> tuple[Tensor, Tensor]:
            prop_idx = torch.div(flat, num_fg, rounding_mode="floor")
            labels = flat % num_fg + 1
            boxes = self.box_coder.decode_single(deltas[prop_idx, labels], proposals[prop_idx])
            return box_ops.clip_boxes_to_image(boxes, image_shape), labels

        max_coordinate = None
        if self.nms == "mmcv" and cand.numel() > 0:
            max_coordinate = (decode(cand)[0] / factor).max()
        limit = self.detections_per_img
        take = min(cand.numel(), 4 * limit)
        while True:
            top_scores, top = torch.topk(cand_scores, take, sorted=True)
            boxes, labels = decode(cand[top])
            if self.det_min_size > 0:
                ok = box_ops.remove_small_boxes(boxes, min_size=self.det_min_size)
                boxes, top_scores, labels = boxes[ok], top_scores[ok], labels[ok]
            if max_coordinate is not None:
                keep = offset_class_wise_nms(boxes / factor, top_scores, labels - 1,
                                             self.nms_thresh, max_coordinate)
            else:
                keep = class_wise_nms(boxes, top_scores, labels, self.nms_thresh)
            if keep.numel() >= limit or take == cand.numel():
                break
            take = min(cand.numel(), 4 * take)
        keep = keep[:limit]
        return boxes[keep], top_scores[keep], labels[keep]

    def _traced_detections_one_image(
        self, scores: Tensor, deltas: Tensor, proposals: Tensor, image_shape: tuple[Tensor, Tensor],
        scale_factor: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """:meth:`_detections_one_image` as a traced graph computes it (ONNX export).

        No host reads and no loop whose length depends on the data: the
        :attr:`traced_candidates` highest-scoring (proposal, class) pairs above the threshold
        are decoded, clipped and size-filtered, and one NMS over the boxes shifted by
        ``(label - 1) * (max coordinate + 1)`` (``torchvision.ops.nms``, ONNX's
        ``NonMaxSuppression``) keeps the same boxes as a class-wise NMS. With ``nms="mmcv"``
        this is :func:`offset_class_wise_nms` in the original frame, as eager inference
        computes it; with ``nms="exact"`` the shift is made in the input frame (float32
        rounding of the shifted boxes can flip a pair within a ulp of the IoU threshold).
        The top ``detections_per_img`` equal eager inference's whenever at least that many
        of the taken pairs survive NMS (eager inference then takes no more pairs either).

        Args:
            scores: ``[P, C]`` class scores (column 0 background, ignored).
            deltas: ``[P, C, 4]``.
            proposals: ``[P, 4]``.
            image_shape: ``(h, w)``, traced sizes.
            scale_factor: ``[4]`` float32, original frame -> input frame.
        """
        fg = scores[:, 1:]
        num_fg = fg.shape[1]
        flat_scores = fg.reshape(-1)
        cand = torch.where(flat_scores > self.score_thresh)[0]
        cand_scores = flat_scores[cand]
        factor = scale_factor.to(dtype=proposals.dtype)

        def decode(flat: Tensor) -> tuple[Tensor, Tensor]:
            prop_idx = torch.div(flat, num_fg, rounding_mode="floor")
            labels = flat % num_fg + 1
            boxes = self.box_coder.decode_single(deltas[prop_idx, labels], proposals[prop_idx])
            return box_ops.clip_boxes_to_image(boxes, image_shape), labels

        frame = factor if self.nms == "mmcv" else torch.ones_like(factor)
        # The largest coordinate of all candidates (0 when there are none: clipped boxes
        # have no negative coordinate, so the appended 0 changes no maximum).
        all_boxes = (decode(cand)[0] / frame).reshape(-1)
        max_coordinate = torch.cat([all_boxes, all_boxes.new_zeros(1)]).max()
        count = torch._shape_as_tensor(cand_scores)[:1]
        cap = torch.full_like(count, self.traced_candidates)
        top_scores, top = torch.topk(cand_scores, torch.minimum(count, cap)[0], sorted=True)
        boxes, labels = decode(cand[top])
        if self.det_min_size > 0:
            ok = box_ops.remove_small_boxes(boxes, min_size=self.det_min_size)
            boxes, top_scores, labels = boxes[ok], top_scores[ok], labels[ok]
        offsets = (labels - 1).to(boxes.dtype) * (max_coordinate + 1)
        keep = box_ops.nms(boxes / frame + offsets[:, None], top_scores, self.nms_thresh)
        keep = keep[: self.detections_per_img]
        return boxes[keep], top_scores[keep], labels[keep]

    # ------------------------------------------------------------------ mask branch

    def predict_masks(self, mask_features: Tensor, labels: Tensor) -> Tensor:
        """Mask logits of each RoI's class.

        Args:
            mask_features: ``[R, D, M/2, M/2]`` mask-head output.
            labels: ``[R]`` int64 class per RoI.

        Returns:
            ``[R, 1, M, M]`` float logits.
        """
        predictor = self.mask_predictor
        if self.select_mask_channels and getattr(predictor, "supports_label_selection", False):
            return predictor(mask_features, labels)
        logits = predictor(mask_features)
        return logits[torch.arange(labels.shape[0], device=labels.device), labels][:, None]

    def mask_features(
        self, features: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]
    ) -> Tensor:
        """RoIAlign + mask head: N tensors ``[R_i, 4]`` -> ``[R, D, M/2, M/2]``."""
        return self.mask_head(self.mask_roi_pool(features, boxes, image_shapes))

    def mask_targets_for(self, gt_masks: Tensor, boxes: Tensor, matched_idxs: Tensor, size: int) -> Tensor:
        """``[P, M, M]`` float targets of one image (see ``mask_targets``), computed in float32
        for 16-bit boxes (the GT index rides in the RoI's first column)."""
        boxes = to_geometry(boxes)
        if self.mask_targets == "aligned_binary":
            return project_masks_aligned(gt_masks, boxes, matched_idxs, size)
        return project_masks_on_boxes(gt_masks, boxes, matched_idxs, size)

    def mask_training_step(
        self,
        features: dict[str, Tensor],
        output: BoxTrainingOutput,
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, Tensor]],
    ) -> dict[str, Tensor]:
        """Binary cross-entropy on the GT-class channel of the positive proposals.

        Returns:
            ``{"loss_mask": scalar}`` (0, with a graph, when there are no positives).
        """
        samples = output.samples
        boxes, matched, labels = [], [], []
        for img_labels, img_props, img_matched, target in zip(
            samples.labels, samples.proposals, samples.matched_idxs, targets
        ):
            pos = torch.where(img_labels > 0)[0]
            boxes.append(img_props[pos])
            matched.append(img_matched[pos])
            labels.append(target["labels"][img_matched[pos]])
        label_cat = torch.cat(labels, dim=0)
        logits = self.predict_masks(self.mask_features(features, boxes, image_shapes), label_cat)
        size = logits.shape[-1]
        mask_targets = [
            self.mask_targets_for(t["masks"], b, m, size) for t, b, m in zip(targets, boxes, matched)
        ]
        target_cat = torch.cat(mask_targets, dim=0)
        if target_cat.numel() == 0:
            return {"loss_mask": logits.sum() * 0}
        return {"loss_mask": F.binary_cross_entropy_with_logits(to_geometry(logits[:, 0]),
                                                                target_cat)}

    def mask_inference_step(
        self, features: dict[str, Tensor], result: list[dict[str, Tensor]],
        image_shapes: list[tuple[int, int]],
    ) -> None:
        """Add ``masks [n_i, 1, M, M]`` probabilities of each detection's class to ``result``."""
        boxes = [r["boxes"] for r in result]
        labels = torch.cat([r["labels"] for r in result], dim=0)
        logits = self.predict_masks(self.mask_features(features, boxes, image_shapes), labels)
        probs = to_geometry(logits).sigmoid().split([b.shape[0] for b in boxes], dim=0)
        for r, p in zip(result, probs):
            r["masks"] = p

    # ------------------------------------------------------------------ forward

    def _check_targets(self, targets: list[dict[str, Tensor]] | None) -> list[dict[str, Tensor]]:
        if targets is None:
            raise ValueError("targets are required in training mode")
        for i, t in enumerate(targets):
            for key in ("boxes", "labels") + (("masks",) if self.has_mask() else ()):
                if key not in t:
                    raise ValueError(f"targets[{i}] has no {key!r} entry")
            if not t["boxes"].is_floating_point():
                raise TypeError(f"targets[{i}]['boxes'] must be float, got {t['boxes'].dtype}")
            if t["labels"].dtype != torch.int64:
                raise TypeError(f"targets[{i}]['labels'] must be int64, got {t['labels'].dtype}")
        return targets

    def forward(
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, Tensor]] | None = None,
        scale_factors: list[Tensor] | None = None,
    ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        """Box (and mask) branch.

        Args:
            features: FPN maps by name, each ``[N, D, H_l, W_l]``.
            proposals: N tensors ``[P_i, 4]`` float from the RPN.
            image_shapes: N ``(h, w)`` of the unpadded input images.
            targets: in training, N dicts with ``boxes``, ``labels`` and ``masks``.
            scale_factors: in eval, optional N ``[4]`` float32 factors from the original
                images to the inputs (see :meth:`postprocess_detections`).

        Returns:
            ``(result, losses)``: in training ``([], {"loss_classifier", "loss_box_reg",
            "loss_mask"})``; in eval one dict per image with ``boxes [n, 4]``, ``labels [n]``,
            ``scores [n]`` and ``masks [n, 1, M, M]`` probabilities, and ``{}``.
        """
        if self.keypoint_predictor is not None:
            raise NotImplementedError("StepwiseRoIHeads has no keypoint branch")
        if self.training:
            targets = self._check_targets(targets)
            losses, output = self.box_training_step(features, proposals, image_shapes, targets)
            if self.has_mask() and self.train_masks:
                losses.update(self.mask_training_step(features, output, image_shapes, targets))
            return [], losses
        pooled = self.pool_box_features(features, proposals, image_shapes)
        class_logits, box_regression = self.box_predict(self.box_head_forward(pooled))
        boxes, scores, labels = self.postprocess_detections(class_logits, box_regression, proposals,
                                                            image_shapes, scale_factors)
        result = [{"boxes": b, "labels": lab, "scores": s} for b, s, lab in zip(boxes, scores, labels)]
        if self.has_mask() and self.infer_masks:
            self.mask_inference_step(features, result, image_shapes)
        return result, {}
