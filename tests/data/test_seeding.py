"""One training loader for the whole run: per-item seeded augmentation, epochs set on the batch
sampler, workers that persist across epochs."""

from __future__ import annotations

import os

import pytest
import torch

from loce.data.seeding import EpochBatchSampler, epoch_loader, seeded_loader

SEED = 5


class Draws:
    """Item ``i`` is a draw of torch's global generator (what the augmentation does), with the
    index and the process that produced it."""

    def __len__(self) -> int:
        return 6

    def __getitem__(self, i: int):
        return torch.rand(3), {"i": i, "pid": os.getpid()}


def _batches_of(epoch: int) -> list[list[int]]:
    # a different order and number of batches every epoch
    return [[5, 0], [3, 1], [2, 4]][epoch % 3:] + [[epoch % 6]]


def _expected(epoch: int, i: int) -> torch.Tensor:
    # the item seed, by hand: ((seed * 1_000_003 + epoch) * 10_000_019 + i) mod (2^63 - 1)
    seed = ((SEED * 1_000_003 + epoch) * 10_000_019 + i) % (2**63 - 1)
    return torch.rand(3, generator=torch.Generator().manual_seed(seed))


def _check_epoch(loader, epoch: int, skip: int = 0) -> set[int]:
    loader.batch_sampler.set_epoch(epoch, skip)
    got = list(loader)
    want = _batches_of(epoch)[skip:]
    assert len(loader) == len(want)
    assert [[t["i"] for t in targets] for _, targets in got] == want
    for (images, _), batch in zip(got, want, strict=True):
        for image, i in zip(images, batch, strict=True):
            assert torch.equal(image, _expected(epoch, i)), (epoch, i)
    return {t["pid"] for _, targets in got for t in targets}


def test_workers_persist_across_epochs_and_items_follow_their_epoch():
    loader = epoch_loader(Draws(), _batches_of, seed=SEED, workers=2, generator_seed=1)
    assert loader.persistent_workers
    pids = [_check_epoch(loader, epoch) for epoch in range(4)]
    assert os.getpid() not in pids[0] and len(pids[0]) == 2
    assert all(p == pids[0] for p in pids)  # the same two processes every epoch


def test_a_resumed_epoch_gives_the_uninterrupted_epochs_remaining_items():
    for workers in (0, 2):
        loader = epoch_loader(Draws(), _batches_of, seed=SEED, workers=workers, generator_seed=1)
        assert loader.persistent_workers is (workers > 0)
        _check_epoch(loader, 1, skip=1)  # [[2, 4], [1]] of epoch 1, seeded as epoch 1
        _check_epoch(loader, 2)


def test_loading_leaves_the_global_generator_alone():
    state = torch.get_rng_state()
    loader = epoch_loader(Draws(), _batches_of, seed=SEED, workers=0, generator_seed=1)
    loader.batch_sampler.set_epoch(0)
    list(loader)
    one_pass = seeded_loader(Draws(), [[0, 1]], seed=SEED, epoch=-1, workers=0, generator_seed=1)
    (images, _), = list(one_pass)
    assert torch.equal(images[1], _expected(-1, 1))
    assert torch.equal(torch.get_rng_state(), state)


def test_sampler_yields_epoch_index_pairs_and_needs_an_epoch():
    sampler = EpochBatchSampler(_batches_of)
    with pytest.raises(RuntimeError, match="set_epoch"):
        list(sampler)
    sampler.set_epoch(4, skip=1)
    assert list(sampler) == [[(4, 2), (4, 4)], [(4, 4)]]
    assert len(sampler) == 2
