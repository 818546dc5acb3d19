"""Data loading whose augmentation is a function of (seed, epoch, item), whoever loads it.

Exact resume relies on it: a run restarted mid-epoch draws the same augmentation for every
remaining item as the uninterrupted run, whatever the number of workers.

The epoch travels with every index: the batch sampler (:class:`EpochBatchSampler`, in the
main process) yields ``(epoch, i)`` pairs, so workers started once and kept across epochs
(``persistent_workers``) seed each item from the epoch it belongs to without being told of
the new epoch themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

__all__ = ["EpochBatchSampler", "EpochSeededDataset", "epoch_loader", "seeded_loader"]


class EpochSeededDataset:
    """Makes item ``i``'s random augmentation of epoch ``e`` a function of (seed, e, i).

    The transforms draw from torch's global generator; each item is produced under a forked
    generator seeded from (seed, epoch, i), so the result does not depend on which worker
    loads it or on what ran before. Indexed by ``(epoch, i)`` pairs.
    """

    def __init__(self, dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.dataset)

    def item_seed(self, epoch: int, i: int) -> int:
        return ((self.seed * 1_000_003 + int(epoch)) * 10_000_019 + int(i)) % (2**63 - 1)

    def __getitem__(self, key: tuple[int, int]):
        epoch, i = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.item_seed(epoch, i))
            return self.dataset[i]


class EpochBatchSampler:
    """The batches of one epoch at a time, as lists of ``(epoch, index)`` pairs.

    Args:
        batches_of: ``epoch -> [[index, ...], ...]``, a function of the epoch only (the
            run's data order, :func:`loce.build.epoch_batches`).

    :meth:`set_epoch` picks the epoch and how many of its first batches to skip (a run
    resumed mid-epoch); call it before each ``iter(loader)``.
    """

    def __init__(self, batches_of: Callable[[int], list[list[int]]]) -> None:
        self.batches_of = batches_of
        self.epoch: int | None = None
        self._batches: list[list[int]] = []

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch = int(epoch)
        self._batches = self.batches_of(self.epoch)[skip:]

    def __len__(self) -> int:
        return len(self._batches)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        if self.epoch is None:
            raise RuntimeError("EpochBatchSampler: call set_epoch(epoch) before iterating")
        epoch = self.epoch
        for batch in self._batches:
            yield [(epoch, i) for i in batch]


def epoch_loader(dataset, batches_of: Callable[[int], list[list[int]]], *, seed: int,
                 workers: int, generator_seed: int, pin_memory: bool = False,
                 persistent: bool = True) -> torch.utils.data.DataLoader:
    """One DataLoader for the whole run; its ``batch_sampler`` is an :class:`EpochBatchSampler`
    over ``batches_of`` (``loader.batch_sampler.set_epoch(epoch, skip)`` before each epoch).

    With ``workers > 0`` and ``persistent`` the workers persist across epochs (started by the
    first epoch's ``iter``, stopped when the loader is released). ``generator_seed`` seeds the
    loader's private generator: creating or iterating the loader must not consume the global
    one, or a run that creates it mid-epoch (a resumed one) would diverge.
    """
    from loce.data.samplers import collate_fn

    return torch.utils.data.DataLoader(
        EpochSeededDataset(dataset, seed),
        batch_sampler=EpochBatchSampler(batches_of),
        num_workers=workers,
        collate_fn=collate_fn,
        generator=torch.Generator().manual_seed(generator_seed),
        persistent_workers=persistent and workers > 0,
        pin_memory=pin_memory,
    )


def seeded_loader(dataset, batches: list[list[int]], *, seed: int, epoch: int, workers: int,
                  generator_seed: int, pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """A one-pass DataLoader over precomputed ``batches`` of ``dataset`` indices for
    ``epoch``, augmentation seeded per item (:class:`EpochSeededDataset`); its workers stop
    at the end of the pass."""
    loader = epoch_loader(dataset, lambda _epoch: batches, seed=seed, workers=workers,
                          generator_seed=generator_seed, pin_memory=pin_memory, persistent=False)
    loader.batch_sampler.set_epoch(epoch)
    return loader
