"""Data loading whose augmentation is a function of (seed, epoch, item), whoever loads it.

Exact resume relies on it: a run restarted mid-epoch draws the same augmentation for every
remaining item as the uninterrupted run, whatever the number of workers.
"""

from __future__ import annotations

import torch

__all__ = ["EpochSeededDataset", "seeded_loader"]


class EpochSeededDataset:
    """Makes item ``i``'s random augmentation a function of (seed, epoch, i).

    The transforms draw from torch's global generator; each item is produced under a forked
    generator seeded from (seed, epoch, i), so the result does not depend on which worker
    loads it or on what ran before.
    """

    def __init__(self, dataset, seed: int, epoch: int) -> None:
        self.dataset = dataset
        self.seed = int(seed)
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def item_seed(self, i: int) -> int:
        return ((self.seed * 1_000_003 + self.epoch) * 10_000_019 + int(i)) % (2**63 - 1)

    def __getitem__(self, i: int):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.item_seed(i))
            return self.dataset[i]


def seeded_loader(dataset, batches: list[list[int]], *, seed: int, epoch: int, workers: int,
                  generator_seed: int, pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """A DataLoader over precomputed ``batches`` of ``dataset`` indices, augmentation seeded
    per item (:class:`EpochSeededDataset`).

    ``generator_seed`` seeds the loader's private generator: creating the loader must not
    consume the global one, or a run that creates it mid-epoch (a resumed one) would diverge.
    """
    from loce.data.samplers import collate_fn

    return torch.utils.data.DataLoader(
        EpochSeededDataset(dataset, seed, epoch),
        batch_sampler=batches,
        num_workers=workers,
        collate_fn=collate_fn,
        generator=torch.Generator().manual_seed(generator_seed),
        persistent_workers=False,
        pin_memory=pin_memory,
    )
