"""Samplers and batching: random, repeat-factor, LOCE's class-balanced list, grouped batches.

Every sampler here is rank-aware and deterministic per epoch:

* each rank builds the *same* epoch list from ``(seed, epoch)`` (a ``torch.Generator``
  seeded with ``seed + epoch``, as ``torch.utils.data.DistributedSampler`` does), so the seed
  must be the same on all ranks;
* the list is padded by repeating its head until its length divides by ``world_size``, and
  rank ``r`` takes entries ``r, r + world_size, r + 2 * world_size, ...``, so every rank has
  the same number of samples and the ranks' shards partition the padded list;
* call ``set_epoch(epoch)`` before each epoch to get a new order.

``rank`` and ``world_size`` default to ``torch.distributed``'s when a process group is
initialised, else to 0 and 1.

Batching: :func:`collate_fn` keeps images of different sizes as a list (the model pads), and
:class:`GroupedBatchSampler` puts only images of the same aspect-ratio group (landscape vs
portrait, :func:`aspect_ratio_group_ids`) in a batch, which reduces padding.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence, Sized
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler

__all__ = [
    "GroupedBatchSampler",
    "RandomSampler",
    "RepeatFactorSampler",
    "aspect_ratio_group_ids",
    "class_balanced_image_list",
    "collate_fn",
    "repeat_factors",
]


def _resolve_rank(rank: int | None, world_size: int | None) -> tuple[int, int]:
    dist = torch.distributed
    initialised = dist.is_available() and dist.is_initialized()
    if world_size is None:
        world_size = dist.get_world_size() if initialised else 1
    if rank is None:
        rank = dist.get_rank() if initialised else 0
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size - 1}], got {rank}")
    return int(rank), int(world_size)


def _pad_and_shard(indices: list[int], rank: int, world_size: int) -> list[int]:
    """Pad ``indices`` by repeating from its start to a multiple of ``world_size``; stride."""
    n = len(indices)
    if n == 0:
        return []
    total = math.ceil(n / world_size) * world_size
    if total > n:
        reps = math.ceil((total - n) / n)
        indices = indices + (indices * reps)[: total - n]
    return indices[rank:total:world_size]


class _EpochSampler(Sampler[int]):
    """Shared machinery: seeded epoch list -> padding -> rank stride."""

    def __init__(self, *, seed: int, rank: int | None, world_size: int | None) -> None:
        self.rank, self.world_size = _resolve_rank(rank, world_size)
        self.seed = int(seed)
        self.epoch = 0
        self._cache: tuple[int, list[int]] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next iteration yields."""
        self.epoch = int(epoch)

    def _generator(self) -> torch.Generator:
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        return g

    def epoch_indices(self) -> list[int]:
        """The full (all ranks, unpadded) index list of the current epoch."""
        raise NotImplementedError

    def _shard(self) -> list[int]:
        if self._cache is None or self._cache[0] != self.epoch:
            self._cache = (
                self.epoch,
                _pad_and_shard(self.epoch_indices(), self.rank, self.world_size),
            )
        return self._cache[1]

    def __iter__(self) -> Iterator[int]:
        return iter(self._shard())

    def __len__(self) -> int:
        return len(self._shard())


class RandomSampler(_EpochSampler):
    """Shuffle all items every epoch (LOCE's default sampler, docs/method.md §1).

    The order equals ``torch.utils.data.DistributedSampler(shuffle=..., seed=seed,
    drop_last=False)`` for the same rank and world size.

    Args:
        data: the dataset (anything with ``len``) or its length.
        shuffle: False keeps dataset order (still padded and strided).
        seed: shared by all ranks.
        rank, world_size: see the module docstring.
    """

    def __init__(
        self,
        data: Sized | int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        super().__init__(seed=seed, rank=rank, world_size=world_size)
        self.num_items = int(data) if isinstance(data, int) else len(data)
        if self.num_items < 0:
            raise ValueError(f"dataset size must be >= 0, got {self.num_items}")
        self.shuffle = shuffle

    def epoch_indices(self) -> list[int]:
        if self.shuffle:
            return torch.randperm(self.num_items, generator=self._generator()).tolist()
        return list(range(self.num_items))


def repeat_factors(
    image_labels: Sequence[Sequence[int]], repeat_threshold: float = 0.001
) -> tuple[np.ndarray, dict[int, float]]:
    """LVIS repeat factors (Gupta et al. 2019, docs/methods.md §9.1).

    ``f(c)`` is the fraction of the given images that contain category ``c``;
    ``r(c) = max(1, sqrt(t / f(c)))``; an image's factor is the largest ``r(c)`` over its
    categories, or 1 for an image with none.

    Args:
        image_labels: per image, the labels (or category ids) it contains; duplicates are fine.
        repeat_threshold: ``t``.

    Returns:
        ``(per_image [I] float64, per_category {label: r(c)})``.
    """
    if not (repeat_threshold >= 0 and math.isfinite(repeat_threshold)):
        raise ValueError(f"repeat_threshold must be a finite number >= 0, got {repeat_threshold}")
    n = len(image_labels)
    per_image = np.ones(n, np.float64)
    if n == 0:
        return per_image, {}
    lens = np.fromiter((len(x) for x in image_labels), np.int64, n)
    flat = np.fromiter((int(c) for x in image_labels for c in x), np.int64, int(lens.sum()))
    if flat.size == 0:
        return per_image, {}
    rows = np.repeat(np.arange(n), lens)
    cats, inverse = np.unique(flat, return_inverse=True)
    # one (image, category) pair per image even if the category appears several times
    pairs = np.unique(rows * cats.size + inverse)
    pair_rows, pair_cats = pairs // cats.size, pairs % cats.size
    freq = np.bincount(pair_cats, minlength=cats.size) / n
    r_cat = np.maximum(1.0, np.sqrt(repeat_threshold / freq))
    np.maximum.at(per_image, pair_rows, r_cat[pair_cats])
    return per_image, {int(c): float(r) for c, r in zip(cats, r_cat, strict=True)}


class RepeatFactorSampler(_EpochSampler):
    """Repeat factor sampling (LVIS paper) with stochastic rounding per epoch.

    Each epoch, image ``i`` appears ``floor(r_i) + Bernoulli(frac(r_i))`` times (so ``r_i``
    times in expectation), then the list is shuffled; both draws use the epoch's generator
    (``seed + epoch``), so every rank gets the same list. Epoch lengths vary;
    ``len(sampler)`` is the current epoch's per-rank length. (MMDetection's
    ``ClassBalancedDataset`` rounds up instead, which over-samples.)

    Args:
        image_labels: per dataset item, the labels it contains (e.g.
            ``LVISDataset.image_labels``).
        repeat_threshold: ``t``; 0.001 is the LVIS default.
        shuffle: shuffle the repeated list (False keeps dataset order, repeats adjacent).
        seed: shared by all ranks.
        rank, world_size: see the module docstring.

    Attributes:
        repeat_factors: ``[I]`` float64 per-item factors ``r_i``.
        category_repeat_factors: ``{label: r(c)}``.
    """

    def __init__(
        self,
        image_labels: Sequence[Sequence[int]],
        repeat_threshold: float = 0.001,
        *,
        shuffle: bool = True,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        super().__init__(seed=seed, rank=rank, world_size=world_size)
        self.repeat_threshold = float(repeat_threshold)
        self.repeat_factors, self.category_repeat_factors = repeat_factors(
            image_labels, repeat_threshold
        )
        self.shuffle = shuffle

    def epoch_indices(self) -> list[int]:
        g = self._generator()
        r = torch.from_numpy(self.repeat_factors)
        whole = torch.floor(r)
        u = torch.rand(r.shape, generator=g, dtype=torch.float64)
        reps = (whole + (u < (r - whole)).to(torch.float64)).to(torch.int64)
        idx = torch.repeat_interleave(torch.arange(r.numel()), reps)
        if self.shuffle:
            idx = idx[torch.randperm(idx.numel(), generator=g)]
        return idx.tolist()


def class_balanced_image_list(
    image_labels: Sequence[Sequence[int]],
    num_per_class: int = 5,
    rank: int | None = None,
    world_size: int | None = None,
) -> list[int]:
    """Image list of LOCE's initialisation pass (docs/method.md §5), for one rank.

    Categories are visited in order of first appearance (images in dataset order; within an
    image, in the order ``image_labels`` lists them, ascending for ``LVISDataset``). Each
    category's images, in dataset order, are repeated until there are
    ``num_per_class * world_size`` entries (then truncated to exactly that); rank ``r`` takes
    entries ``r, r + world_size, ...`` (strided, as the original code's HEAD; an earlier
    version took contiguous blocks). The per-category pieces are concatenated, so every rank
    gets ``num_per_class`` images per category.

    Images with no category contribute nothing. (The original code files them under an extra
    "no category" entry; training sets are filtered to images with annotations, so this never
    matters there.)

    Args:
        image_labels: per dataset item, the labels it contains.
        num_per_class: images per category per rank (``queue_size // 16 = 5`` in LOCE).
        rank, world_size: see the module docstring.

    Returns:
        Dataset indices for this rank, ``num_per_class * (number of categories)`` long.
    """
    if num_per_class < 1:
        raise ValueError(f"num_per_class must be >= 1, got {num_per_class}")
    rank, world_size = _resolve_rank(rank, world_size)
    per_cat: dict[int, list[int]] = {}  # insertion order = first appearance
    for i, labels in enumerate(image_labels):
        for c in dict.fromkeys(int(x) for x in labels):
            per_cat.setdefault(c, []).append(i)
    total = num_per_class * world_size
    out: list[int] = []
    for images in per_cat.values():
        full = (images * math.ceil(total / len(images)))[:total]
        out.extend(full[rank::world_size])
    return out


# --------------------------------------------------------------------------------------------
# Batching
# --------------------------------------------------------------------------------------------


def collate_fn(batch: Sequence[tuple[Any, Any]]) -> tuple[list[Any], list[Any]]:
    """``[(image, target), ...] -> ([image, ...], [target, ...])``.

    Images keep their own sizes; the detection model batches and pads them.
    """
    images = [b[0] for b in batch]
    targets = [b[1] for b in batch]
    return images, targets


def aspect_ratio_group_ids(image_sizes: Sequence[tuple[int, int]]) -> list[int]:
    """Group 1 for landscape images (``width / height > 1``), else 0.

    This is MMDetection's group flag (square images fall in group 0). Sizes come from the
    annotation file, so no image is decoded.

    Args:
        image_sizes: ``(height, width)`` per item.
    """
    return [1 if w > h else 0 for h, w in image_sizes]


class GroupedBatchSampler(Sampler[list[int]]):
    """Batches whose images all share a group id (e.g. aspect-ratio group).

    Indices come from ``sampler`` in its order and go to their group's buffer; a batch is
    yielded as soon as a buffer holds ``batch_size`` indices. The number of batches is fixed
    by ``len(sampler)`` alone: ``ceil(len / batch_size)`` (``floor`` with ``drop_last``), so
    all ranks run the same number of iterations. When the stream ends short of that, the
    fullest leftover group is completed with earlier indices of the same group (cycling
    through the group's indices of this epoch) until the count is reached; leftovers beyond
    the count are dropped. All batches have exactly ``batch_size`` indices except when a group
    has fewer than ``batch_size`` indices in the whole epoch (then it repeats indices).

    Args:
        sampler: yields dataset indices (e.g. :class:`RandomSampler`).
        group_ids: group of every dataset index.
        batch_size: images per batch.
        drop_last: use ``floor`` instead of ``ceil`` for the number of batches.
    """

    def __init__(
        self,
        sampler: Sampler[int] | Sequence[int],
        group_ids: Sequence[int],
        batch_size: int,
        drop_last: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.sampler = sampler
        self.group_ids = list(group_ids)
        self.batch_size = int(batch_size)
        self.drop_last = drop_last

    def set_epoch(self, epoch: int) -> None:
        """Forward to the wrapped sampler."""
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        n = len(self.sampler)  # type: ignore[arg-type]
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        target = len(self)
        buffers: dict[int, list[int]] = {}
        seen: dict[int, list[int]] = {}
        emitted = 0
        for idx in self.sampler:
            g = self.group_ids[idx]
            buf = buffers.setdefault(g, [])
            buf.append(idx)
            seen.setdefault(g, []).append(idx)
            if len(buf) == self.batch_size:
                if emitted == target:
                    return
                yield buf
                emitted += 1
                buffers[g] = []
        while emitted < target:
            g = max(buffers, key=lambda k: len(buffers[k]))
            buf = buffers[g]
            if not buf:  # cannot happen: leftovers always cover the missing batches
                return
            pool = seen[g]
            k = 0
            while len(buf) < self.batch_size:
                buf.append(pool[k % len(pool)])
                k += 1
            yield buf
            emitted += 1
            buffers[g] = []
