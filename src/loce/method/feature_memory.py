"""Per-class feature memory and probabilistic sampler of MFS (docs/method.md §4.2, §4.3).

Shape shorthand:
    K: foreground classes (labels 1..K; background 0 is never stored or drawn).
    Q: queue capacity per class (docs/method.md §8: 80).
    F: feature shape of one RoI, ``(256, 7, 7)`` for the box head input.
    M: rows in one push (16 jitters per ground truth of the batch).
    S: rows returned by one sample, at most ``num_classes * per_class``
    (docs/method.md §8: 8 x 4 = 32).

Storage: ``features [K, Q, *F]`` in the chosen dtype on the chosen device, regression
``targets [K, Q, 4]`` float32 next to them, and per class a write ``pointer [K]`` and fill
``count [K]``. Row ``c - 1`` holds class ``c``.

Memory cost is ``K * Q * prod(F) * itemsize`` plus ``K * Q * 16`` bytes of targets. At LVIS v1
scale (K = 1203, Q = 80, F = 256 x 7 x 7) the features take 1203 * 80 * 12544 * 4 B = 4.83 GB
(4.5 GiB) in float32, as in the original, or 2.41 GB (2.25 GiB) in float16/bfloat16; the
targets add 1.5 MB. The memory is per process (docs/method.md §4: not synchronised across ranks).

Why the tensors are not registered buffers: the memory's device and dtype come from the
config and must not follow ``model.to("cuda")`` or ``model.half()`` (a 2.4 GB CPU memory
would otherwise be copied to the GPU), and DistributedDataParallel broadcasts registered
buffers from rank 0 at every forward, which would overwrite every rank's memory with rank 0's.
The state is saved instead through ``get_extra_state`` / ``set_extra_state``, so it still
appears in ``state_dict()`` (key ``"<prefix>_extra_state"``) and in checkpoints.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from loce.checks import checks_enabled
from loce.errors import CheckpointError

__all__ = ["FeatureMemory"]

_STORAGE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# docs/method.md §4: P(c) is proportional to 1 / (s_c + 1e-7).
_SCORE_EPS = 1e-7


class FeatureMemory(nn.Module):
    """Per-class FIFO ring buffers of RoI features and their regression targets.

    Args:
        num_classes: ``K``, the number of foreground classes.
        capacity: ``Q``, features kept per class (docs/method.md §8: 80).
        feature_shape: shape of one stored feature (docs/method.md §8: ``(256, 7, 7)``).
        dtype: storage dtype of the features: ``torch.float32``, ``torch.float16`` or
            ``torch.bfloat16``. Half precision halves the memory (2.25 GiB instead of 4.5 GiB
            at LVIS scale) and is the recommended setting for LVIS.
        device: where the storage lives (docs/method.md §8: host memory). Fixed at construction:
            moving the parent model does not move the memory.
    """

    def __init__(
        self,
        num_classes: int,
        capacity: int = 80,
        feature_shape: Sequence[int] = (256, 7, 7),
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__()
        if int(num_classes) != num_classes or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        if int(capacity) != capacity or capacity < 1:
            raise ValueError(f"capacity must be a positive integer, got {capacity!r}")
        shape = tuple(int(v) for v in feature_shape)
        if any(v < 1 for v in shape):
            raise ValueError(
                f"feature_shape must hold positive sizes, got {tuple(feature_shape)!r}"
            )
        if dtype not in _STORAGE_DTYPES:
            raise ValueError(
                f"dtype must be one of {[str(d) for d in _STORAGE_DTYPES]}, got {dtype!r}"
            )
        self.num_classes = int(num_classes)
        self.capacity = int(capacity)
        self.feature_shape: tuple[int, ...] = shape
        self.dtype = dtype
        self.device = torch.device(device)
        k, q = self.num_classes, self.capacity
        self.features = torch.zeros((k, q, *shape), dtype=dtype, device=self.device)
        self.targets = torch.zeros((k, q, 4), dtype=torch.float32, device=self.device)
        self.pointer = torch.zeros(k, dtype=torch.int64, device=self.device)
        self.count = torch.zeros(k, dtype=torch.int64, device=self.device)
        self.device = self.features.device  # normalised, e.g. "cuda" -> cuda:0

    # ----------------------------------------------------------------------------- sizes

    @staticmethod
    def estimate_bytes(
        num_classes: int,
        capacity: int = 80,
        feature_shape: Sequence[int] = (256, 7, 7),
        dtype: torch.dtype = torch.float32,
    ) -> int:
        """Bytes a memory with these settings holds, without allocating it.

        For LVIS v1 (1203 classes, capacity 80, ``(256, 7, 7)``): 4,829,675,520 feature bytes
        in float32 (4.5 GiB) and half that in float16/bfloat16, plus 1.5 MB of targets and
        pointers: 4,830,497,328 bytes in all in float32.
        """
        itemsize = torch.empty((), dtype=dtype).element_size()
        features = num_classes * capacity * math.prod(feature_shape) * itemsize
        return features + num_classes * capacity * 4 * 4 + 2 * num_classes * 8

    @property
    def nbytes(self) -> int:
        """Bytes held by this memory's tensors."""
        return sum(
            t.numel() * t.element_size()
            for t in (self.features, self.targets, self.pointer, self.count)
        )

    @property
    def num_filled(self) -> Tensor:
        """``[K + 1]`` int64 number of stored features per class, indexed by label (index 0,
        background, is always 0)."""
        return torch.cat([self.count.new_zeros(1), self.count])

    @property
    def filled(self) -> Tensor:
        """``[K + 1]`` bool: class has at least one stored feature (index 0 always False)."""
        return self.num_filled > 0

    @property
    def is_full(self) -> bool:
        """Whether every class queue holds ``capacity`` features."""
        return bool((self.count == self.capacity).all())

    # ----------------------------------------------------------------------------- write

    @torch.no_grad()
    def reset(self) -> None:
        """Empty every queue (storage is kept, pointers and counts are zeroed)."""
        self.features.zero_()
        self.targets.zero_()
        self.pointer.zero_()
        self.count.zero_()

    @torch.no_grad()
    def push(self, features: Tensor, labels: Tensor, targets: Tensor) -> None:
        """Write new features at each class pointer, first in, first out (docs/method.md §4).

        For every class present in the push, at most its first ``capacity`` rows (in row order)
        are written, starting at the class pointer and wrapping around; the pointer then moves
        past them. A class with ``capacity`` or more new rows therefore replaces its whole queue.
        Vectorised: each row's rank within its class comes from a stable sort, and all kept rows
        are written with one indexed assignment.

        Args:
            features: ``[M, *F]`` float features (detached; any device and float dtype, cast to
                the storage dtype and device).
            labels: ``[M]`` int64 foreground class of each row, in ``1..K``.
            targets: ``[M, 4]`` float regression target of each row.

        Raises:
            ValueError: shapes that do not match or labels outside ``1..K``.
        """
        if labels.dim() != 1:
            raise ValueError(f"labels must have shape [M], got shape {list(labels.shape)}")
        m = labels.shape[0]
        if labels.is_floating_point() or labels.dtype == torch.bool:
            raise ValueError(f"labels must be an integer tensor (int64), got dtype {labels.dtype}")
        if tuple(features.shape) != (m, *self.feature_shape):
            raise ValueError(
                f"features must have shape [M, *feature_shape] = {[m, *self.feature_shape]}, "
                f"got shape {list(features.shape)}"
            )
        if tuple(targets.shape) != (m, 4):
            raise ValueError(
                f"targets must have shape [M, 4] = {[m, 4]}, got shape {list(targets.shape)}"
            )
        if m == 0:
            return
        k, q = self.num_classes, self.capacity
        bad = (labels < 1) | (labels > k)
        if checks_enabled() and bool(bad.any()):  # a host sync: every check_every_iters steps
            i = int(torch.nonzero(bad)[0])
            raise ValueError(
                f"labels must be foreground classes in 1..{k}, found {int(labels[i])} at row {i}"
            )

        # Rank of every row among the rows of its class, in row order (stable sort).
        cls = labels.to(torch.int64) - 1
        order = torch.sort(cls, stable=True).indices
        per_class = torch.bincount(cls, minlength=k)
        first = torch.cumsum(per_class, 0) - per_class  # row of each class's first entry in `order`
        rank = torch.empty_like(cls)
        rank[order] = torch.arange(m, device=cls.device) - first[cls[order]]
        keep = rank < q

        cls_kept = cls[keep].to(self.device)
        slot = (self.pointer[cls_kept] + rank[keep].to(self.device)) % q
        features, targets = features.detach(), targets.detach()
        if cls_kept.numel() < m:  # some class overflowed: drop its rows past the capacity
            features, targets = features[keep.to(features.device)], targets[keep.to(targets.device)]
        # Cast before the transfer so that only the storage dtype crosses devices.
        self.features[cls_kept, slot] = features.to(self.dtype).to(self.device)
        self.targets[cls_kept, slot] = targets.to(self.device, torch.float32)

        written = per_class.clamp(max=q).to(self.device)
        self.pointer.copy_((self.pointer + written) % q)
        self.count.copy_((self.count + written).clamp(max=q))

    # ----------------------------------------------------------------------------- read

    @torch.no_grad()
    def sample(
        self,
        mean_scores: Tensor,
        num_classes: int = 8,
        per_class: int = 4,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Draw features of weak classes (docs/method.md §4.3).

        ``num_classes`` classes are drawn i.i.d. with replacement (duplicates allowed) over the
        foreground classes with ``P(c)`` proportional to ``1 / (s_c + 1e-7)``. A draw of a class
        whose queue is empty yields no rows (as in the original, docs/method.md §12.6), so fewer
        than ``num_classes * per_class`` rows can come back. For each remaining draw, ``per_class``
        slots are drawn uniformly with replacement from that class's filled slots.

        Args:
            mean_scores: ``[K + 1]`` float mean scores from the tracker, background at index 0
                (never drawn). Use the scores from *before* this iteration's update
                (docs/method.md §2).
            num_classes: class draws per call (docs/method.md §8: 8).
            per_class: features drawn per drawn class (docs/method.md §8: 4).
            generator: optional ``torch.Generator``; draws happen on its device (default: the
                memory's device).
            device: device of the returned tensors (default: the memory's).
            dtype: dtype of the returned features (default: the storage dtype).

        Returns:
            ``features [S, *F]``, ``labels [S]`` int64 in ``1..K`` and ``targets [S, 4]`` float32,
            with ``S = per_class * (number of draws of non-empty classes)``. Rows
            ``per_class * j .. per_class * j + per_class - 1`` come from the j-th kept draw.

        Raises:
            ValueError: ``mean_scores`` not ``[K + 1]``, negative or non-finite, or negative
                counts.
        """
        k = self.num_classes
        if mean_scores.shape != (k + 1,):
            raise ValueError(
                f"mean_scores must have shape [K + 1] = [{k + 1}] (background at index 0), "
                f"got shape {list(mean_scores.shape)}"
            )
        if num_classes < 0 or per_class < 0:
            raise ValueError(
                "num_classes and per_class must be >= 0, "
                f"got num_classes={num_classes}, per_class={per_class}"
            )
        out_device = torch.device(device) if device is not None else self.device
        out_dtype = dtype if dtype is not None else self.dtype
        draw_device = generator.device if generator is not None else self.device

        s = mean_scores.detach()[1:].to(draw_device, torch.float64)
        if checks_enabled() and not bool((torch.isfinite(s) & (s >= 0)).all()):
            j = int(torch.nonzero(~(torch.isfinite(s) & (s >= 0)))[0]) + 1
            raise ValueError(
                f"mean_scores must be finite and >= 0, found {float(mean_scores[j])} at class {j}"
            )
        if num_classes == 0 or per_class == 0:
            return self._empty(out_device, out_dtype)

        weights = 1.0 / (s + _SCORE_EPS)
        drawn = torch.multinomial(weights, num_classes, replacement=True, generator=generator)
        drawn = drawn.to(self.device)
        n_filled = self.count[drawn]
        drawn, n_filled = drawn[n_filled > 0], n_filled[n_filled > 0]
        if drawn.numel() == 0:
            return self._empty(out_device, out_dtype)

        # Uniform slot in 0..count-1 (the filled slots: a queue fills from slot 0 and only
        # wraps once full). float64 keeps floor(u * count) below count.
        u = torch.rand(
            (drawn.numel(), per_class), generator=generator, device=draw_device, dtype=torch.float64
        )
        u = u.to(self.device)
        slot = (u * n_filled[:, None].to(torch.float64)).floor().long()
        slot = torch.minimum(slot, n_filled[:, None] - 1).flatten()
        rows = drawn.repeat_interleave(per_class)

        feats = self.features[rows, slot].to(out_dtype).to(out_device)
        tgts = self.targets[rows, slot].to(out_device)
        return feats, (rows + 1).to(out_device), tgts

    def _empty(self, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
        return (
            torch.zeros((0, *self.feature_shape), dtype=dtype, device=device),
            torch.zeros(0, dtype=torch.int64, device=device),
            torch.zeros((0, 4), dtype=torch.float32, device=device),
        )

    def entries(self, label: int) -> tuple[Tensor, Tensor]:
        """Stored features and targets of one class, oldest first.

        Args:
            label: foreground class in ``1..K``.

        Returns:
            ``features [n, *F]`` (storage dtype) and ``targets [n, 4]`` float32, ``n`` =
            number of stored features of the class, views into the storage order rotated so
            that row 0 is the oldest entry.
        """
        if not 1 <= int(label) <= self.num_classes:
            raise ValueError(
                f"label must be a foreground class in 1..{self.num_classes}, got {label}"
            )
        c = int(label) - 1
        n = int(self.count[c])
        # When full the oldest entry sits at the pointer; before that the queue fills 0..n-1.
        start = int(self.pointer[c]) if n == self.capacity else 0
        idx = (torch.arange(n, device=self.device) + start) % self.capacity
        return self.features[c, idx], self.targets[c, idx]

    # ----------------------------------------------------------------------------- state

    def get_extra_state(self) -> dict[str, Any]:
        """State saved in ``state_dict()`` under ``"<prefix>_extra_state"``."""
        return {
            "num_classes": self.num_classes,
            "capacity": self.capacity,
            "feature_shape": list(self.feature_shape),
            "features": self.features,
            "targets": self.targets,
            "pointer": self.pointer,
            "count": self.count,
        }

    @torch.no_grad()
    def set_extra_state(self, state: Any) -> None:
        """Restore a state from :meth:`get_extra_state`, copying into this memory's storage.

        The stored features are cast to this memory's dtype (a float32 checkpoint can be loaded
        into a float16 memory) and copied to its device.

        Raises:
            CheckpointError: a state that is not a memory state, or whose number of classes,
                capacity or feature shape differs from this memory's.
        """
        required = (
            "num_classes",
            "capacity",
            "feature_shape",
            "features",
            "targets",
            "pointer",
            "count",
        )
        if not isinstance(state, dict) or any(key not in state for key in required):
            have = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise CheckpointError(
                f"feature memory state must be a dict with keys {list(required)}, found {have}; "
                "the checkpoint was not written by FeatureMemory"
            )
        mine = {
            "num_classes": self.num_classes,
            "capacity": self.capacity,
            "feature_shape": list(self.feature_shape),
        }
        theirs = {
            "num_classes": int(state["num_classes"]),
            "capacity": int(state["capacity"]),
            "feature_shape": [int(v) for v in state["feature_shape"]],
        }
        diff = [
            f"{key}: checkpoint {theirs[key]} vs memory {mine[key]}"
            for key in mine
            if mine[key] != theirs[key]
        ]
        k, q = self.num_classes, self.capacity
        expected = {
            "features": (k, q, *self.feature_shape),
            "targets": (k, q, 4),
            "pointer": (k,),
            "count": (k,),
        }
        if not diff:
            diff = [
                f"{key}: checkpoint shape {list(state[key].shape)} vs memory {list(shape)}"
                for key, shape in expected.items()
                if tuple(state[key].shape) != shape
            ]
        if diff:
            raise CheckpointError(
                "feature memory in the checkpoint does not fit this memory ("
                + "; ".join(diff)
                + "); build the memory with the checkpoint's settings or load the checkpoint "
                "without its memory state"
            )
        pointer = state["pointer"].to(torch.int64)
        count = state["count"].to(torch.int64)
        if bool(((count < 0) | (count > q) | (pointer < 0) | (pointer >= q)).any()):
            raise CheckpointError(
                f"feature memory in the checkpoint has pointers or counts outside 0..{q}: "
                "the state is corrupt"
            )
        self.features.copy_(state["features"])
        self.targets.copy_(state["targets"])
        self.pointer.copy_(pointer)
        self.count.copy_(count)

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, capacity={self.capacity}, "
            f"feature_shape={self.feature_shape}, dtype={self.dtype}, device={self.device}, "
            f"nbytes={self.nbytes}"
        )
