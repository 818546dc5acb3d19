"""Feature memory: FIFO order, wrap-around, push caps, sampler statistics, dtypes, state."""

import pytest
import torch

from loce.errors import CheckpointError
from loce.method import FeatureMemory


def _push(memory, labels, values):
    """Push rows whose feature (shape (2,)) is [v, -v] and whose target is [v, 0, 0, 0]."""
    values = torch.tensor(values, dtype=torch.float32)
    features = torch.stack([values, -values], dim=1)
    targets = torch.zeros(len(values), 4)
    targets[:, 0] = values
    memory.push(features, torch.tensor(labels, dtype=torch.int64), targets)


def _values(memory, label):
    features, targets = memory.entries(label)
    torch.testing.assert_close(targets[:, 0], features[:, 0].float())
    return features[:, 0].tolist()


def test_fifo_order_and_wrap_around():
    memory = FeatureMemory(2, capacity=4, feature_shape=(2,))
    _push(memory, [1, 1, 1], [1, 2, 3])  # slots 0, 1, 2
    assert memory.pointer.tolist() == [3, 0] and memory.count.tolist() == [3, 0]
    assert _values(memory, 1) == [1, 2, 3]
    _push(memory, [1, 1, 1], [4, 5, 6])  # slots 3, 0, 1 -> storage [5, 6, 3, 4]
    assert memory.features[0, :, 0].tolist() == [5, 6, 3, 4]
    assert memory.pointer.tolist() == [2, 0] and memory.count.tolist() == [4, 0]
    assert _values(memory, 1) == [3, 4, 5, 6]  # oldest first
    _push(memory, [1], [7])  # slot 2 (the oldest, 3) is overwritten
    assert memory.features[0, :, 0].tolist() == [5, 6, 7, 4]
    assert memory.pointer.tolist() == [3, 0]
    assert _values(memory, 1) == [4, 5, 6, 7]
    assert memory.num_filled.tolist() == [0, 4, 0]
    assert memory.filled.tolist() == [False, True, False]
    assert not memory.is_full


def test_push_keeps_only_the_first_capacity_rows_of_a_class():
    memory = FeatureMemory(2, capacity=4, feature_shape=(2,))
    _push(memory, [2, 2, 2], [1, 2, 3])  # class 2: slots 0..2, pointer 3
    # Interleaved classes; class 2 has 6 new rows: 10, 12, 13, 14 are written (slots 3, 0, 1,
    # 2), 15 and 16 are dropped; class 1 gets 11 at slot 0.
    _push(memory, [2, 1, 2, 2, 2, 2, 2], [10, 11, 12, 13, 14, 15, 16])
    assert memory.features[1, :, 0].tolist() == [12, 13, 14, 10]
    assert _values(memory, 2) == [10, 12, 13, 14]
    assert memory.features[0, 0, 0].item() == 11
    assert memory.pointer.tolist() == [1, 3] and memory.count.tolist() == [1, 4]
    assert memory.is_full is False
    _push(memory, [1, 1, 1], [20, 21, 22])
    assert memory.is_full


def test_features_targets_and_labels_stay_together():
    memory = FeatureMemory(3, capacity=5, feature_shape=(2, 1, 1))
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([3, 1, 3, 2, 1])
    features = torch.randn(5, 2, 1, 1, generator=g)
    targets = torch.randn(5, 4, generator=g)
    memory.push(features, labels, targets)
    for label in (1, 2, 3):
        feats, tgts = memory.entries(label)
        rows = (labels == label).nonzero().flatten()
        torch.testing.assert_close(feats, features[rows])
        torch.testing.assert_close(tgts, targets[rows])


def test_sampling_frequencies_follow_inverse_scores():
    memory = FeatureMemory(4, capacity=2, feature_shape=(2,))
    _push(memory, [1, 2, 3, 4], [1, 2, 3, 4])
    scores = torch.tensor([0.01, 0.1, 0.2, 0.4, 0.05])
    # P(c) proportional to 1 / s: 10, 5, 2.5, 20 -> [0.2667, 0.1333, 0.0667, 0.5333].
    expected = torch.tensor([10.0, 5.0, 2.5, 20.0]) / 37.5
    draws = 20000
    _, labels, _ = memory.sample(
        scores, num_classes=draws, per_class=1, generator=torch.Generator().manual_seed(0)
    )
    assert labels.shape == (draws,) and labels.min() >= 1
    observed = torch.bincount(labels, minlength=5)[1:].double()
    chi2 = ((observed - draws * expected) ** 2 / (draws * expected)).sum().item()
    assert chi2 < 16.27  # 3 degrees of freedom, p = 0.001
    # The opposite law (P proportional to s) would be rejected by the same statistic.
    wrong = scores[1:].double() / scores[1:].sum()
    assert ((observed - draws * wrong) ** 2 / (draws * wrong)).sum().item() > 1000


def test_background_is_never_drawn_and_empty_classes_are_skipped():
    memory = FeatureMemory(3, capacity=4, feature_shape=(2,))
    _push(memory, [2, 2, 2], [1, 2, 3])
    # Background has the smallest score but is not a candidate; class 1 (empty) is the most
    # likely draw: P = [1/0.01, 1/0.1, 1/0.1] / 120 = [0.833, 0.083, 0.083].
    scores = torch.tensor([1e-6, 0.01, 0.1, 0.1])
    feats, labels, targets = memory.sample(
        scores, num_classes=600, per_class=3, generator=torch.Generator().manual_seed(3)
    )
    assert (labels == 2).all()
    assert labels.numel() % 3 == 0
    # About 600 / 12 = 50 draws of class 2 -> about 150 rows, far below 600 * 3.
    assert 60 <= labels.numel() <= 300
    assert feats.shape == (labels.numel(), 2) and targets.shape == (labels.numel(), 4)
    # Nothing stored at all: no rows, correct shapes.
    empty = FeatureMemory(3, capacity=4, feature_shape=(2, 3))
    feats, labels, targets = empty.sample(scores, generator=torch.Generator().manual_seed(0))
    assert feats.shape == (0, 2, 3) and labels.shape == (0,) and targets.shape == (0, 4)
    assert labels.dtype == torch.int64


def test_only_filled_slots_are_drawn_and_all_of_them():
    memory = FeatureMemory(1, capacity=8, feature_shape=(2,))
    _push(memory, [1, 1, 1], [5, 6, 7])
    feats, labels, targets = memory.sample(
        torch.tensor([0.01, 0.5]),
        num_classes=50,
        per_class=4,
        generator=torch.Generator().manual_seed(0),
    )
    assert labels.shape == (200,) and (labels == 1).all()
    values = feats[:, 0]
    assert set(values.tolist()) == {5.0, 6.0, 7.0}
    counts = torch.stack([(values == v).sum() for v in (5.0, 6.0, 7.0)])
    assert counts.min() > 40  # uniform: about 67 each
    torch.testing.assert_close(feats[:, 1], -values)
    torch.testing.assert_close(targets[:, 0], values)


def test_sampling_is_deterministic_with_a_generator():
    memory = FeatureMemory(5, capacity=3, feature_shape=(2,))
    _push(memory, [1, 2, 3, 4, 5, 1, 2], [1, 2, 3, 4, 5, 6, 7])
    scores = torch.tensor([0.01, 0.2, 0.3, 0.1, 0.05, 0.4])
    a = memory.sample(scores, generator=torch.Generator().manual_seed(11))
    b = memory.sample(scores, generator=torch.Generator().manual_seed(11))
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    assert a[0].shape == (32, 2)  # every class filled: 8 classes x 4 features
    # Rows come in groups of per_class with one label per group.
    assert (a[1].view(8, 4) == a[1].view(8, 4)[:, :1]).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_storage(dtype):
    memory = FeatureMemory(2, capacity=4, feature_shape=(3, 2, 2), dtype=dtype)
    features = torch.randn(5, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    targets = torch.randn(5, 4)
    memory.push(features, torch.tensor([1, 2, 1, 2, 1]), targets)
    assert memory.features.dtype == dtype and memory.targets.dtype == torch.float32
    stored, stored_targets = memory.entries(1)
    torch.testing.assert_close(stored, features[[0, 2, 4]].to(dtype))
    torch.testing.assert_close(stored_targets, targets[[0, 2, 4]])  # targets stay float32
    scores = torch.full((3,), 0.01)
    feats, _, _ = memory.sample(scores, generator=torch.Generator().manual_seed(0))
    assert feats.dtype == dtype
    feats32, _, _ = memory.sample(
        scores, generator=torch.Generator().manual_seed(0), dtype=torch.float32
    )
    assert feats32.dtype == torch.float32
    torch.testing.assert_close(feats32, feats.float())
    assert memory.nbytes == FeatureMemory.estimate_bytes(2, 4, (3, 2, 2), dtype)


def test_memory_cost_at_lvis_scale():
    fp32 = FeatureMemory.estimate_bytes(1203, 80, (256, 7, 7), torch.float32)
    fp16 = FeatureMemory.estimate_bytes(1203, 80, (256, 7, 7), torch.float16)
    targets_and_pointers = 1203 * 80 * 16 + 1203 * 16
    assert fp32 == 1203 * 80 * 256 * 49 * 4 + targets_and_pointers == 4_830_497_328
    assert fp16 - targets_and_pointers == (fp32 - targets_and_pointers) // 2
    assert 4.49 < fp32 / 2**30 < 4.51


def test_memory_does_not_follow_the_model_and_has_no_buffers():
    parent = torch.nn.ModuleDict({"memory": FeatureMemory(2, capacity=3, feature_shape=(2,))})
    parent.to(torch.float64)
    memory = parent["memory"]
    assert memory.features.dtype == torch.float32
    assert list(parent.named_buffers()) == [] and list(parent.parameters()) == []


def test_state_round_trip_through_a_checkpoint(tmp_path):
    parent = torch.nn.ModuleDict({"memory": FeatureMemory(3, capacity=4, feature_shape=(2,))})
    _push(parent["memory"], [1, 1, 3], [1, 2, 3])
    _push(parent["memory"], [1, 1, 1], [4, 5, 6])  # class 1 storage [6, 2, 4, 5], pointer 1
    assert list(parent.state_dict()) == ["memory._extra_state"]
    path = tmp_path / "ckpt.pt"
    torch.save(parent.state_dict(), path)
    restored = torch.nn.ModuleDict(
        {"memory": FeatureMemory(3, capacity=4, feature_shape=(2,), dtype=torch.float16)}
    )
    restored.load_state_dict(torch.load(path, weights_only=True))
    memory = restored["memory"]
    assert memory.pointer.tolist() == [1, 0, 1] and memory.count.tolist() == [4, 0, 1]
    assert memory.features.dtype == torch.float16  # the checkpoint's float32 is cast
    assert _values(memory, 1) == [2, 4, 5, 6]
    torch.testing.assert_close(memory.features.float(), parent["memory"].features)
    # Pushing after the restore continues at the restored pointer.
    _push(memory, [1], [9])
    assert _values(memory, 1) == [4, 5, 6, 9]


def test_state_mismatch_is_a_checkpoint_error():
    state = FeatureMemory(3, capacity=4, feature_shape=(2,)).state_dict()
    with pytest.raises(CheckpointError, match=r"capacity: checkpoint 4 vs memory 8"):
        FeatureMemory(3, capacity=8, feature_shape=(2,)).load_state_dict(state)
    with pytest.raises(
        CheckpointError,
        match=r"num_classes: checkpoint 3 vs memory 5.*"
        r"feature_shape: checkpoint \[2\] vs memory \[2, 1\]",
    ):
        FeatureMemory(5, capacity=4, feature_shape=(2, 1)).load_state_dict(state)
    bad = dict(state["_extra_state"])
    bad["targets"] = torch.zeros(3, 4, 5)
    with pytest.raises(
        CheckpointError, match=r"targets: checkpoint shape \[3, 4, 5\] vs memory \[3, 4, 4\]"
    ):
        FeatureMemory(3, capacity=4, feature_shape=(2,)).load_state_dict({"_extra_state": bad})
    with pytest.raises(CheckpointError, match="not written by FeatureMemory"):
        FeatureMemory(3, capacity=4, feature_shape=(2,)).load_state_dict({"_extra_state": {"x": 1}})
    with pytest.raises(RuntimeError, match="Missing key.*_extra_state"):
        FeatureMemory(3, capacity=4, feature_shape=(2,)).load_state_dict({})


def test_push_errors_and_empty_push():
    memory = FeatureMemory(3, capacity=4, feature_shape=(2,))
    memory.push(torch.zeros(0, 2), torch.zeros(0, dtype=torch.int64), torch.zeros(0, 4))
    assert memory.count.tolist() == [0, 0, 0]
    with pytest.raises(
        ValueError, match=r"labels must be foreground classes in 1..3, found 0 at row 1"
    ):
        memory.push(torch.zeros(2, 2), torch.tensor([1, 0]), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"found 4 at row 0"):
        memory.push(torch.zeros(1, 2), torch.tensor([4]), torch.zeros(1, 4))
    with pytest.raises(
        ValueError, match=r"features must have shape \[M, \*feature_shape\] = \[2, 2\].*\[2, 3\]"
    ):
        memory.push(torch.zeros(2, 3), torch.tensor([1, 2]), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"targets must have shape \[M, 4\] = \[2, 4\].*\[2, 3\]"):
        memory.push(torch.zeros(2, 2), torch.tensor([1, 2]), torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"labels must have shape \[M\]"):
        memory.push(torch.zeros(2, 2), torch.tensor([[1, 2]]), torch.zeros(2, 4))
    assert memory.count.tolist() == [0, 0, 0]


def test_sample_and_constructor_errors():
    memory = FeatureMemory(3, capacity=4, feature_shape=(2,))
    with pytest.raises(ValueError, match=r"mean_scores must have shape \[K \+ 1\] = \[4\].*\[3\]"):
        memory.sample(torch.ones(3))
    with pytest.raises(ValueError, match=r"finite and >= 0, found -1.0 at class 2"):
        memory.sample(torch.tensor([0.01, 0.1, -1.0, 0.1]))
    with pytest.raises(ValueError, match="must be >= 0"):
        memory.sample(torch.ones(4), num_classes=-1)
    with pytest.raises(ValueError, match="label must be a foreground class in 1..3, got 0"):
        memory.entries(0)
    with pytest.raises(ValueError, match=r"dtype must be one of.*torch.int8"):
        FeatureMemory(3, dtype=torch.int8)
    with pytest.raises(ValueError, match="capacity must be a positive integer"):
        FeatureMemory(3, capacity=0)
