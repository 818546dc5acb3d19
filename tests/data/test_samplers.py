"""Random, repeat-factor and class-balanced samplers; grouped batching."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from torch.utils.data import DistributedSampler

from loce.data.lvis import LVISIndex
from loce.data.samplers import (
    GroupedBatchSampler,
    RandomSampler,
    RepeatFactorSampler,
    aspect_ratio_group_ids,
    class_balanced_image_list,
    collate_fn,
    repeat_factors,
)

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "lvis_v0.5_val_100.json"

# 5 images; class 1 in 3 of them (f = 0.6), classes 2 and 3 in one each (f = 0.2)
TOY = [[1], [1, 2], [1, 1], [3], []]


def _shards(make, world_size):
    return [list(make(rank)) for rank in range(world_size)]


# ---- RandomSampler -------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "ws"), [(10, 1), (10, 3), (7, 4), (2, 5)])
def test_random_sampler_equals_torch_distributed_sampler(n, ws):
    for epoch in (0, 3):
        for rank in range(ws):
            ours = RandomSampler(n, seed=11, rank=rank, world_size=ws)
            ours.set_epoch(epoch)
            ref = DistributedSampler(range(n), num_replicas=ws, rank=rank, shuffle=True, seed=11)
            ref.set_epoch(epoch)
            assert list(ours) == list(ref) and len(ours) == len(ref)


def test_random_sampler_shards_partition_and_epochs_differ():
    n, ws = 11, 3
    shards = _shards(lambda r: RandomSampler(n, seed=0, rank=r, world_size=ws), ws)
    assert [len(s) for s in shards] == [4, 4, 4]
    padded = [shards[i % ws][i // ws] for i in range(12)]  # interleave the strides back
    assert sorted(padded[:n]) == list(range(n))  # one full permutation ...
    assert padded[n:] == padded[: 12 - n]  # ... padded with its head
    s = RandomSampler(n, seed=0, rank=0, world_size=1)
    e0 = list(s)
    assert list(s) == e0
    s.set_epoch(1)
    assert list(s) != e0 and sorted(s) == list(range(n))
    assert list(RandomSampler(4, shuffle=False)) == [0, 1, 2, 3]
    assert list(RandomSampler(0)) == [] and len(RandomSampler(0)) == 0


def test_rank_arguments_are_checked():
    with pytest.raises(ValueError, match="rank"):
        RandomSampler(4, rank=2, world_size=2)
    with pytest.raises(ValueError, match="world_size"):
        RandomSampler(4, rank=0, world_size=0)
    s = RandomSampler(4)
    assert (s.rank, s.world_size) == (0, 1)  # no process group


# ---- repeat factors ------------------------------------------------------------------------


def test_repeat_factors_by_hand():
    # t = 0.8: r(1) = sqrt(0.8 / 0.6) = 1.1547, r(2) = r(3) = sqrt(0.8 / 0.2) = 2
    per_image, per_cat = repeat_factors(TOY, 0.8)
    r1 = math.sqrt(0.8 / 0.6)
    np.testing.assert_allclose(per_image, [r1, 2.0, r1, 2.0, 1.0], rtol=0, atol=1e-15)
    assert per_cat == pytest.approx({1: r1, 2: 2.0, 3: 2.0}, abs=1e-15)
    # t = 0.5: r(1) = max(1, sqrt(0.5 / 0.6)) = 1, r(2) = sqrt(2.5)
    per_image, _ = repeat_factors(TOY, 0.5)
    np.testing.assert_allclose(per_image, [1, math.sqrt(2.5), 1, math.sqrt(2.5), 1], atol=1e-15)
    # t = 0: no repetition
    assert repeat_factors(TOY, 0.0)[0].tolist() == [1, 1, 1, 1, 1]
    assert repeat_factors([], 0.001)[0].size == 0
    assert repeat_factors([[], []], 0.5)[0].tolist() == [1, 1]
    with pytest.raises(ValueError):
        repeat_factors(TOY, -1)


def test_repeat_factor_epoch_lists():
    # docs/methods.md 9.5: class A in all 8 images, B only in image 0; t = 0.5 -> r = [2, 1...]
    labels = [[1, 2]] + [[1]] * 7
    s = RepeatFactorSampler(labels, 0.5, seed=3)
    assert s.repeat_factors.tolist() == [2, 1, 1, 1, 1, 1, 1, 1]
    for epoch in range(5):
        s.set_epoch(epoch)
        assert len(s) == 9 and Counter(s) == Counter([0, 0, 1, 2, 3, 4, 5, 6, 7])


def test_repeat_factor_expected_count_and_determinism():
    labels = TOY * 20  # same frequencies, 20 images per factor value
    s = RepeatFactorSampler(labels, 0.8, seed=5)
    r = s.repeat_factors
    epochs = 500
    counts = np.zeros((epochs, len(labels)))
    for epoch in range(epochs):
        s.set_epoch(epoch)
        counts[epoch] = np.bincount(list(s), minlength=len(labels))
    assert np.isin(counts - np.floor(r), [0, 1]).all()  # stochastic rounding: floor or ceil
    assert (counts[:, r == 2] == 2).all()
    # images with r = 1.1547: 40 images x 500 epochs of 1 + Bernoulli(0.1547), std 0.0018
    np.testing.assert_allclose(counts.mean(0), r, atol=0.06)
    assert abs(counts[:, np.isclose(r, math.sqrt(0.8 / 0.6))].mean() - math.sqrt(0.8 / 0.6)) < 0.01
    a = RepeatFactorSampler(TOY, 0.8, seed=5)
    b = RepeatFactorSampler(TOY, 0.8, seed=5)
    a.set_epoch(7)
    b.set_epoch(7)
    assert list(a) == list(b)
    b.set_epoch(8)
    assert list(a) != list(b)


def test_repeat_factor_rank_shards_partition_the_epoch():
    labels = [[i % 7] for i in range(40)] + [[99]]
    ws = 3
    samplers = [RepeatFactorSampler(labels, 0.2, seed=1, rank=r, world_size=ws) for r in range(ws)]
    full = RepeatFactorSampler(labels, 0.2, seed=1)
    for epoch in (0, 1):
        for s in [*samplers, full]:
            s.set_epoch(epoch)
        epoch_list = full.epoch_indices()
        shards = [list(s) for s in samplers]
        assert len({len(x) for x in shards}) == 1  # same length on every rank
        assert len(shards[0]) == math.ceil(len(epoch_list) / ws)
        merged = [shards[i % ws][i // ws] for i in range(len(shards[0]) * ws)]
        assert merged[: len(epoch_list)] == epoch_list
        assert merged[len(epoch_list) :] == epoch_list[: len(merged) - len(epoch_list)]


def test_repeat_factors_on_real_lvis_fixture():
    data = json.loads(FIXTURE.read_text())
    index = LVISIndex.from_json(data)
    s = RepeatFactorSampler([x.tolist() for x in index.image_labels()], 0.1)
    # straightforward computation from the raw file
    cats_of = {im["id"]: set() for im in data["images"]}
    for a in data["annotations"]:
        cats_of[a["image_id"]].add(a["category_id"])
    n = len(data["images"])
    count = Counter(c for cats in cats_of.values() for c in cats)
    r_cat = {c: max(1.0, math.sqrt(0.1 / (k / n))) for c, k in count.items()}
    expect = [max((r_cat[c] for c in cats_of[im["id"]]), default=1.0) for im in data["images"]]
    np.testing.assert_allclose(s.repeat_factors, expect, rtol=1e-14)
    assert s.repeat_factors.max() > 1 and (s.repeat_factors == 1).any()
    assert {index.cat_ids[lab - 1]: r for lab, r in s.category_repeat_factors.items()} == (
        pytest.approx(r_cat, rel=1e-14)
    )


# ---- class-balanced list (LOCE a.5) --------------------------------------------------------


def test_class_balanced_image_list_by_hand():
    labels = [[3, 1], [1], [2, 3], []]
    # first appearance: 3 (image 0), 1 (image 0), 2 (image 2)
    # 2 per class x 2 ranks = 4 entries: cat 3 -> [0, 2, 0, 2], cat 1 -> [0, 1, 0, 1],
    # cat 2 -> [2, 2, 2, 2]; rank r takes entries r, r + 2
    assert class_balanced_image_list(labels, 2, rank=0, world_size=2) == [0, 0, 0, 0, 2, 2]
    assert class_balanced_image_list(labels, 2, rank=1, world_size=2) == [2, 2, 1, 1, 2, 2]
    # one rank, 3 per class: [0, 2, 0], [0, 1, 0], [2, 2, 2]
    assert class_balanced_image_list(labels, 3, rank=0, world_size=1) == [0, 2, 0, 0, 1, 0, 2, 2, 2]
    # more images than needed: truncate, then stride
    many = [[5]] * 7
    assert class_balanced_image_list(many, 2, rank=1, world_size=2) == [1, 3]
    assert class_balanced_image_list([], 5, rank=0, world_size=1) == []
    with pytest.raises(ValueError):
        class_balanced_image_list(labels, 0, rank=0, world_size=1)


def test_class_balanced_list_covers_every_class_on_every_rank():
    rng = np.random.default_rng(0)
    labels = [sorted(set(rng.integers(1, 30, rng.integers(1, 4)).tolist())) for _ in range(60)]
    n_cat = len({c for x in labels for c in x})
    for rank in range(4):
        out = class_balanced_image_list(labels, 5, rank=rank, world_size=4)
        assert len(out) == 5 * n_cat


# ---- grouped batches -----------------------------------------------------------------------


def test_aspect_ratio_groups_and_collate():
    assert aspect_ratio_group_ids([(30, 40), (40, 30), (30, 30)]) == [1, 0, 0]
    images, targets = collate_fn([("a", {"x": 1}), ("b", {"x": 2})])
    assert images == ["a", "b"] and targets == [{"x": 1}, {"x": 2}]


def test_grouped_batches_by_hand():
    groups = [0, 1, 0, 1, 0, 0, 1]
    # stream 0..6: [0, 2] (g0) when 2 arrives, [1, 3] (g1), [4, 5] (g0); leftover g1: [6]
    # ceil(7 / 2) = 4 batches: the leftover is completed with g1's first index, 1
    b = GroupedBatchSampler(range(7), groups, 2)
    assert list(b) == [[0, 2], [1, 3], [4, 5], [6, 1]] and len(b) == 4
    b = GroupedBatchSampler(range(7), groups, 2, drop_last=True)
    assert list(b) == [[0, 2], [1, 3], [4, 5]] and len(b) == 3
    # two leftover groups but only one batch to go: the fuller one is completed
    b = GroupedBatchSampler(range(5), [0, 0, 1, 0, 0], 3)
    assert list(b) == [[0, 1, 3], [4, 0, 1]]
    with pytest.raises(ValueError):
        GroupedBatchSampler(range(3), [0, 0, 0], 0)


def test_grouped_batches_same_count_on_every_rank():
    rng = np.random.default_rng(1)
    groups = rng.integers(0, 2, 101).tolist()
    ws, bs = 4, 3
    lengths = set()
    for rank in range(ws):
        sampler = RandomSampler(101, seed=2, rank=rank, world_size=ws)
        batches = GroupedBatchSampler(sampler, groups, bs)
        batches.set_epoch(5)
        out = list(batches)
        lengths.add(len(out))
        assert len(out) == len(batches) == math.ceil(26 / bs)
        for batch in out:
            assert len(batch) == bs and len({groups[i] for i in batch}) == 1
        # every index of the shard is used, except at most one leftover group
        used = Counter(i for batch in out for i in batch)
        assert len(set(sampler) - set(used)) < bs
    assert lengths == {9}


def test_grouped_batches_follow_the_sampler_epoch():
    s = RandomSampler(20, seed=0)
    b = GroupedBatchSampler(s, [0] * 20, 5)
    e0 = list(b)
    b.set_epoch(1)
    assert s.epoch == 1 and list(b) != e0
    assert sorted(i for batch in list(b) for i in batch) == list(range(20))
