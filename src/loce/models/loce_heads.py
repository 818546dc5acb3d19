"""LOCE's RoI heads: the stage-2 training step (docs/method.md §2-§4, §6), background = class 0.

Shape shorthand:
    N  images                G  ground-truth boxes of the batch (G_i in image i)
    R  sampled proposal rows J  = 16 G jittered ground-truth boxes
    S  memory rows appended  (at most classes_per_step x features_per_class, docs/method.md §8: 32)
    R' = R + S rows through the box head
    K  foreground classes    C = K + 1 logits; background is class 0 (the original: K)
    D  FPN channels (256)    7  box pooling size
    O  mean-score observations of one step (one per GT with positives, one per drawn class)

One training step, in the order of docs/method.md §6 (each a method of :class:`LoceRoIHeads`;
the ones marked "inherited" are :class:`~loce.models.roi_heads.StepwiseRoIHeads`'s)::

    sample_proposals         inherited: proposals + GT -> R sampled RoIs with matched GT
    pool_box_features        inherited: -> [R, D, 7, 7]
    extend_box_rows          jitter_gt_boxes -> J boxes, labels = GT class, targets = encode(J -> GT)
                             pool them (no gradient) -> FeatureMemory.push
                             FeatureMemory.sample with the scores *before* this step's update
                             -> append S rows (features, labels, targets)
    box_head_forward         inherited: [R', D, 7, 7] -> [R', F]
    box_predict              inherited: -> logits [R', C], deltas [R', 4C]
    observe_box_predictions  score_observations -> MeanScoreTracker.update (all ranks) *before*
                             the loss
    classification_loss      equilibrium_loss(logits, labels, s) over all R' rows, s updated
    box_regression_loss      inherited: class-specific deltas of every positive row (memory rows
                             included), summed and divided by R'
    mask_training_step       inherited: positive *proposals* only (never memory rows)

Inference is :class:`StepwiseRoIHeads`'s: a plain softmax, no score adjustment, no memory.

Where the state lives:

* ``score_tracker`` (:class:`~loce.method.MeanScoreTracker`) is a submodule: its ``scores``
  buffer ``[K + 1]`` is in the model's ``state_dict`` (key ``roi_heads.score_tracker.scores``),
  so checkpoints hold it (deliberate fix of docs/method.md §11.4) and every
  rank holds the same values.
* the :class:`~loce.method.FeatureMemory` is deliberately *not* a submodule: it is per process
  (docs/method.md §4), up to 2.4 GB at LVIS scale, and must stay out of the rank-0 checkpoint, out
  of ``model.to()`` and out of DistributedDataParallel's buffer handling. It is allocated on the
  first push (or when a saved memory is loaded) on the configured device; the training engine
  saves it per rank next to each checkpoint (see :func:`loce.engine.method_state.save_rank_state`).

Deliberate deviations from the original code:

* per-GT observations are grouped by the actual assignment (image, matched GT index), not read
  from fixed 512-row offsets per image (docs/method.md §11.2);
* a jittered box that clipping collapses to zero width or height (only possible for a GT box
  thinner than a pixel at the image border) is dropped: its regression target would be
  infinite;
* randomness (jitter, class and slot draws) comes from ``generator`` (torch's global
  generator when None), not NumPy's global state. The training engine gives every rank its
  own generator, seeded from the run's seed and the rank, and saves its state in checkpoints
  (:func:`loce.engine.method_state.seed_rank_draws`): ranks seeded alike would all draw the
  same classes, ``classes_per_step`` distinct draws per global batch instead of that many per
  rank.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from loce.losses.equilibrium import equilibrium_loss
from loce.method.box_jitter import NUM_JITTERS, jitter_boxes
from loce.method.feature_memory import FeatureMemory
from loce.method.score_tracker import MeanScoreTracker
from loce.models.roi_heads import BoxRows, BoxTrainingOutput, RoISamples, StepwiseRoIHeads

__all__ = ["LoceRoIHeads", "LoceStepInfo", "MEMORY_DTYPES", "group_mean"]

MEMORY_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
_MEMORY_DEVICES = ("auto", "cpu", "model")
# Observation keys combine (image index, matched GT index) into one int64.
_GT_KEY_STRIDE = 1 << 32


def memory_device_for(setting: str, model_device: torch.device) -> torch.device:
    """Where the feature memory goes: ``memory_device`` ("auto", "cpu" or "model") for a model
    on ``model_device``; "auto" is the model's device when it is CUDA, else the host."""
    if setting == "cpu" or (setting == "auto" and model_device.type != "cuda"):
        return torch.device("cpu")
    return model_device


@dataclass
class LoceStepInfo:
    """What the last training step did beyond the plain head (for logs, tests, diagnostics).

    Attributes:
        memory_labels: ``[S]`` int64 class of each appended memory row.
        observed_labels: ``[O]`` int64 class of each local mean-score observation, GT
            observations first (image order, then GT order), then one per distinct drawn class
            (ascending).
        observed_values: ``[O]`` float64 observed mean probability of each.
        num_pushed: jittered boxes written to the memory.
    """

    memory_labels: Tensor
    observed_labels: Tensor
    observed_values: Tensor
    num_pushed: int


def group_mean(keys: Tensor, labels: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
    """Mean of ``values`` per distinct key, with the label of each group.

    Args:
        keys: ``[M]`` int64 group key per entry.
        labels: ``[M]`` int64 label per entry (equal within a group).
        values: ``[M]`` float values.

    Returns:
        ``(labels [U] int64, means [U] float64)`` for the ``U`` distinct keys, in ascending
        key order.
    """
    if keys.numel() == 0:
        return labels.new_zeros(0), values.new_zeros(0, dtype=torch.float64)
    uniq, inverse = torch.unique(keys, return_inverse=True)
    counts = torch.bincount(inverse, minlength=uniq.numel()).to(torch.float64)
    sums = torch.zeros(uniq.numel(), dtype=torch.float64, device=values.device)
    sums.index_add_(0, inverse, values.to(torch.float64))
    group_labels = labels.new_zeros(uniq.numel()).scatter_(0, inverse, labels)
    return group_labels, sums / counts


class LoceRoIHeads(StepwiseRoIHeads):
    """RoI heads with LOCE's training step: mean scores, Equilibrium Loss and MFS.

    Takes :class:`StepwiseRoIHeads`'s arguments plus the keyword arguments below;
    :func:`loce.models.build_mask_rcnn` builds it with ``loce=`` the ``loce`` config section.

    Args:
        num_classes: ``K`` foreground classes (the box classifier has ``K + 1`` outputs).
        feature_shape: shape of one pooled box feature, ``(D, 7, 7)``.
        alpha: mean-score EMA momentum per observation (docs/method.md §2: 0.9).
        bg_score: fixed background score (0.01).
        init_score: initial foreground score (0.01).
        use_equilibrium_loss: classification by the Equilibrium Loss; False: ``cls_loss``
            (cross-entropy by default) on the same rows.
        use_feature_memory: jitter, store and append memory features; False: no memory rows.
        memory_capacity: features kept per class (80).
        memory_dtype: storage dtype: "float32", "float16" or "bfloat16".
        memory_device: "auto" (the model's device when it is CUDA, else host memory), "cpu"
            (host memory) or "model" (the device of the pooled features).
        classes_per_step: classes drawn from the memory per step (8).
        features_per_class: features drawn per drawn class (4).
        generator: optional ``torch.Generator`` for the jitter and the memory draws (its
            device is where they are drawn); None: torch's global generator. Also an
            attribute, which the training engine sets to the rank's own generator.

    Attributes:
        score_tracker: the :class:`MeanScoreTracker` (``scores [K + 1]``).
        generator: the generator of the draws (see Args).
        memory_restored: set by the engine on resume when every rank loaded its saved memory.
        last_step: :class:`LoceStepInfo` of the latest training step (None before).
    """

    def __init__(
        self,
        *args,
        num_classes: int,
        feature_shape: Sequence[int],
        alpha: float = 0.9,
        bg_score: float = 0.01,
        init_score: float = 0.01,
        use_equilibrium_loss: bool = True,
        use_feature_memory: bool = True,
        memory_capacity: int = 80,
        memory_dtype: Literal["float32", "float16", "bfloat16"] = "float16",
        memory_device: Literal["auto", "cpu", "model"] = "auto",
        classes_per_step: int = 8,
        features_per_class: int = 4,
        generator: torch.Generator | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        if memory_dtype not in MEMORY_DTYPES:
            raise ValueError(
                f"memory_dtype must be one of {list(MEMORY_DTYPES)}, got {memory_dtype!r}"
            )
        if memory_device not in _MEMORY_DEVICES:
            raise ValueError(
                f"memory_device must be one of {list(_MEMORY_DEVICES)}, got {memory_device!r}"
            )
        if int(memory_capacity) < 1:
            raise ValueError(f"memory_capacity must be >= 1, got {memory_capacity}")
        if classes_per_step < 0 or features_per_class < 0:
            raise ValueError(
                "classes_per_step and features_per_class must be >= 0, got "
                f"{classes_per_step} and {features_per_class}"
            )
        self.num_classes = int(num_classes)
        self.feature_shape = tuple(int(v) for v in feature_shape)
        self.score_tracker = MeanScoreTracker(self.num_classes, alpha, bg_score, init_score)
        self.use_equilibrium_loss = bool(use_equilibrium_loss)
        self.use_feature_memory = bool(use_feature_memory)
        self.memory_capacity = int(memory_capacity)
        self.memory_dtype = memory_dtype
        self.memory_device = memory_device
        self.classes_per_step = int(classes_per_step)
        self.features_per_class = int(features_per_class)
        self.generator = generator
        self.memory_restored = False
        self.last_step: LoceStepInfo | None = None
        # Not a submodule (see the module docstring): bypass nn.Module's registration.
        object.__setattr__(self, "_feature_memory", None)

    # ------------------------------------------------------------------ feature memory

    @property
    def feature_memory(self) -> FeatureMemory | None:
        """The per-process feature memory, or None before it is first needed."""
        return self.__dict__["_feature_memory"]

    def memory_for(self, device: torch.device | str) -> FeatureMemory:
        """The feature memory, allocated on first use.

        Args:
            device: the device the model computes on (used when ``memory_device`` is
                "model", or "auto" and ``device`` is a CUDA device; "cpu" always allocates in
                host memory).
        """
        memory = self.__dict__["_feature_memory"]
        if memory is None:
            where = memory_device_for(self.memory_device, torch.device(device))
            memory = FeatureMemory(
                self.num_classes,
                self.memory_capacity,
                self.feature_shape,
                dtype=MEMORY_DTYPES[self.memory_dtype],
                device=where,
            )
            object.__setattr__(self, "_feature_memory", memory)
        return memory

    def jitter_gt_boxes(
        self, targets: list[dict[str, Tensor]], image_shapes: list[tuple[int, int]]
    ) -> tuple[list[Tensor], Tensor, Tensor]:
        """The 16 jittered copies of every GT box, their labels and targets (docs/method.md §4).

        Every copy keeps its GT's class whatever its IoU (docs/method.md §12.2); its regression
        target is the box coder's encoding of the copy towards its GT box (the same coder, hence the
        same weights, as the proposals' targets).

        Args:
            targets: N dicts with ``boxes [G_i, 4]`` float and ``labels [G_i]`` int64.
            image_shapes: N ``(h, w)`` of the unpadded images (the clipping bounds).

        Returns:
            ``(boxes, labels, regression_targets)``: N tensors ``[J_i, 4]`` (rows ``16 g ..
            16 g + 15`` from GT ``g``), ``[J]`` int64 and ``[J, 4]`` float, ``J = sum J_i``
            (``J_i = 16 G_i`` unless a collapsed copy was dropped).
        """
        boxes, labels, regs = [], [], []
        for target, shape in zip(targets, image_shapes):
            gt = target["boxes"]
            jittered = jitter_boxes(gt, shape, generator=self.generator)
            gt_rep = gt.repeat_interleave(NUM_JITTERS, dim=0)
            lab = target["labels"].repeat_interleave(NUM_JITTERS)
            keep = (jittered[:, 2] > jittered[:, 0]) & (jittered[:, 3] > jittered[:, 1])
            jittered, gt_rep, lab = jittered[keep], gt_rep[keep], lab[keep]
            boxes.append(jittered)
            labels.append(lab)
            regs.append(self.box_coder.encode_single(gt_rep, jittered))
        return boxes, torch.cat(labels), torch.cat(regs)

    def extend_box_rows(
        self,
        rows: BoxRows,
        features: dict[str, Tensor],
        samples: RoISamples,
        targets: list[dict[str, Tensor]],
        image_shapes: list[tuple[int, int]],
    ) -> BoxRows:
        """MFS write then read (docs/method.md §4, §6): push the jittered GT
        features, append samples.

        The memory is written before it is read, so this batch's instances can be drawn in
        the same step; the classes are drawn with the scores from *before* this step's update
        (the update happens later, in :meth:`observe_box_predictions`).

        Returns:
            ``rows`` followed by ``S`` memory rows: features cast to the rows' dtype and device,
            labels in ``1..K``, the stored regression targets.
        """
        # What this step appended, for last_step (read back by observe_box_predictions).
        if not self.use_feature_memory:
            self._pending = (rows.labels.new_zeros(0), 0)
            return rows
        memory = self.memory_for(rows.features.device)
        boxes, labels, regs = self.jitter_gt_boxes(targets, image_shapes)
        if labels.numel() > 0:
            # The stored features are inputs of the box head, constants for the loss.
            with torch.no_grad():
                pooled = self.pool_box_features(features, boxes, image_shapes)
            memory.push(pooled, labels, regs)
        feats, mem_labels, mem_targets = memory.sample(
            self.score_tracker.scores,
            self.classes_per_step,
            self.features_per_class,
            generator=self.generator,
            device=rows.features.device,
            dtype=rows.features.dtype,
        )
        self._pending = (mem_labels, int(labels.numel()))
        return BoxRows(
            features=torch.cat([rows.features, feats], dim=0),
            labels=torch.cat([rows.labels, mem_labels.to(rows.labels.device)], dim=0),
            regression_targets=torch.cat(
                [rows.regression_targets, mem_targets.to(rows.regression_targets)], dim=0
            ),
            num_proposal_rows=rows.num_proposal_rows,
        )

    # ------------------------------------------------------------------ mean score

    def score_observations(self, output: BoxTrainingOutput) -> tuple[Tensor, Tensor]:
        """This step's mean-score observations (docs/method.md §2), vectorised.

        * one per ground truth with at least one positive proposal: the mean, over the positive
          proposals *matched to it* (``samples.matched_idxs``, whatever the number of RoIs per
          image, docs/method.md §11.2), of the raw softmax probability of its class;
        * one per distinct class among the appended memory rows: the mean of that class's
          probability over its rows.

        Probabilities are ``softmax(class_logits)`` over all ``C`` logits, detached, without
        the Equilibrium Loss shift.

        Returns:
            ``(labels [O] int64 in 1..K, values [O] float64)``; GT observations first.
        """
        rows = output.rows
        r = rows.num_proposal_rows
        labels = rows.labels
        probs = F.softmax(output.class_logits.detach().float(), dim=1)
        p_label = probs.gather(1, labels[:, None]).squeeze(1)  # [R'] probability of the row's class

        matched = torch.cat(output.samples.matched_idxs, dim=0)
        image = torch.cat([
            torch.full_like(m, i) for i, m in enumerate(output.samples.matched_idxs)
        ])
        pos = labels[:r] > 0
        gt_key = image[pos] * _GT_KEY_STRIDE + matched[pos]
        gt_labels, gt_values = group_mean(gt_key, labels[:r][pos], p_label[:r][pos])

        mem_labels = labels[r:]
        mem_obs_labels, mem_values = group_mean(mem_labels, mem_labels, p_label[r:])
        return (
            torch.cat([gt_labels, mem_obs_labels]),
            torch.cat([gt_values, mem_values.to(gt_values.device)]),
        )

    def observe_box_predictions(self, output: BoxTrainingOutput) -> None:
        """Update the mean scores before the loss (docs/method.md §2 ordering);
        every rank, every step."""
        labels, values = self.score_observations(output)
        self.score_tracker.update(labels, values)
        mem_labels, pushed = self.__dict__.pop("_pending", (labels.new_zeros(0), 0))
        self.last_step = LoceStepInfo(mem_labels, labels, values, pushed)

    # ------------------------------------------------------------------ losses

    def classification_loss(self, class_logits: Tensor, labels: Tensor) -> Tensor:
        """Equilibrium Loss over all ``R'`` rows with the scores updated by this step
        (docs/method.md §3).

        Args:
            class_logits: ``[R', C]`` float.
            labels: ``[R']`` int64 in ``0..K``.

        Returns:
            Scalar: mean over rows of ``-log softmax(z + log s)[y]``.
        """
        if not self.use_equilibrium_loss:
            return super().classification_loss(class_logits, labels)
        return equilibrium_loss(class_logits, labels, self.score_tracker.scores)

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, equilibrium_loss={self.use_equilibrium_loss}, "
            f"feature_memory={self.use_feature_memory}, capacity={self.memory_capacity}, "
            f"memory_dtype={self.memory_dtype}, memory_device={self.memory_device}, "
            f"draws={self.classes_per_step}x{self.features_per_class}"
        )
