"""Mean score tracker: closed-form EMA, background, state, errors, two-process gather."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from loce.errors import CheckpointError
from loce.method import MeanScoreTracker


def _t(values, dtype=torch.float32):
    return torch.tensor(values, dtype=dtype)


def test_initial_scores():
    tracker = MeanScoreTracker(3, bg_score=0.05, init_score=0.02)
    torch.testing.assert_close(tracker.scores, _t([0.05, 0.02, 0.02, 0.02]))
    assert tracker.scores.dtype == torch.float32


def test_n_observations_equal_n_sequential_ema_steps():
    # Three observations of class 3 with mean 0.4: alpha**3 = 0.729, so
    # s = 0.729 * 0.01 + 0.271 * 0.4 = 0.11569.
    batched = MeanScoreTracker(4)
    batched.update(torch.tensor([3, 3, 3]), _t([0.2, 0.4, 0.6]))
    assert batched.scores[3].item() == pytest.approx(0.11569, abs=1e-7)

    sequential = MeanScoreTracker(4)
    for _ in range(3):
        sequential.update(torch.tensor([3]), _t([0.4]))
    torch.testing.assert_close(batched.scores, sequential.scores, rtol=0, atol=1e-7)


def test_several_classes_in_one_update_and_untouched_classes():
    tracker = MeanScoreTracker(3)
    tracker.update(torch.tensor([1, 2, 2]), _t([0.5, 0.3, 0.1]))
    # class 1: 0.9 * 0.01 + 0.1 * 0.5 = 0.059
    # class 2: n = 2, mean 0.2: 0.81 * 0.01 + 0.19 * 0.2 = 0.0461
    # class 3: no observation, keeps 0.01; background stays 0.01
    torch.testing.assert_close(tracker.scores, _t([0.01, 0.059, 0.0461, 0.01]), rtol=0, atol=1e-7)
    tracker.update(torch.tensor([1]), _t([0.059]))
    assert tracker.scores[1].item() == pytest.approx(0.059, abs=1e-7)
    assert tracker.scores[2].item() == pytest.approx(0.0461, abs=1e-7)


def test_background_is_held_fixed():
    tracker = MeanScoreTracker(2, bg_score=0.05)
    tracker.scores[0] = 0.7  # even if something overwrote it, the next update resets it
    tracker.update(torch.tensor([1, 2]), _t([0.9, 0.9]))
    assert tracker.scores[0].item() == pytest.approx(0.05)


def test_alpha_zero_takes_the_batch_mean():
    tracker = MeanScoreTracker(2, alpha=0.0)
    tracker.update(torch.tensor([2, 2]), _t([0.3, 0.5]))
    assert tracker.scores[2].item() == pytest.approx(0.4)
    assert tracker.scores[1].item() == pytest.approx(0.01)


def test_empty_update_changes_nothing():
    tracker = MeanScoreTracker(3)
    tracker.update(torch.tensor([2]), _t([0.6]))
    before = tracker.scores.clone()
    tracker.update(torch.zeros(0, dtype=torch.int64), torch.zeros(0))
    torch.testing.assert_close(tracker.scores, before, rtol=0, atol=0)


def test_state_round_trip_and_reset(tmp_path):
    tracker = MeanScoreTracker(3)
    tracker.update(torch.tensor([1, 3]), _t([0.2, 0.8]))
    path = tmp_path / "scores.pt"
    torch.save({"model": torch.nn.ModuleDict({"tracker": tracker}).state_dict()}, path)
    restored = torch.nn.ModuleDict({"tracker": MeanScoreTracker(3)})
    restored.load_state_dict(torch.load(path, weights_only=True)["model"])
    torch.testing.assert_close(restored["tracker"].scores, tracker.scores, rtol=0, atol=0)
    restored["tracker"].reset()
    torch.testing.assert_close(restored["tracker"].scores, _t([0.01] * 4))


def test_state_with_other_class_count_is_a_checkpoint_error():
    state = MeanScoreTracker(5).state_dict()
    with pytest.raises(CheckpointError, match=r"'scores'.*shape \[6\].*3 foreground classes"):
        MeanScoreTracker(3).load_state_dict(state)


@pytest.mark.parametrize(
    ("labels", "values", "message"),
    [
        (
            torch.tensor([1, 4]),
            _t([0.1, 0.2]),
            r"labels must be foreground classes in 1..3.*found 4 at position 1",
        ),
        (torch.tensor([0]), _t([0.1]), r"found 0 at position 0"),
        (
            torch.tensor([1, 2]),
            _t([0.1]),
            r"values must have the same shape as labels \[M\] = \[2\].*\[1\]",
        ),
        (
            torch.tensor([[1, 2]]),
            _t([[0.1, 0.2]]),
            r"labels must have shape \[M\], got shape \[1, 2\]",
        ),
        (_t([1.0]), _t([0.1]), r"labels must be an integer tensor"),
        (torch.tensor([1, 2]), _t([0.1, float("inf")]), r"values must be finite.*position 1"),
    ],
)
def test_update_errors(labels, values, message):
    with pytest.raises(ValueError, match=message):
        MeanScoreTracker(3).update(labels, values)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_classes": 0}, "num_classes must be a positive integer"),
        ({"num_classes": 3, "alpha": 1.0}, r"alpha must lie in \[0, 1\)"),
        ({"num_classes": 3, "bg_score": 0.0}, "bg_score must be > 0"),
        ({"num_classes": 3, "init_score": -1.0}, "init_score must be > 0"),
    ],
)
def test_constructor_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MeanScoreTracker(**kwargs)


# ----------------------------------------------------------------------------- distributed

# Rank 0 and rank 1 observe different, differently sized lists; the second update has no
# observation at all on rank 1 (it must still take part in the gather).
_OBSERVATIONS = {
    0: [([1, 1], [0.5, 0.7]), ([4], [0.5])],
    1: [([1, 2, 3], [0.3, 0.2, 0.9]), ([], [])],
}
# Global first update: class 1 has n = 3, mean 0.5 -> 0.729 * 0.01 + 0.271 * 0.5 = 0.14279;
# class 2: 0.9 * 0.01 + 0.1 * 0.2 = 0.029; class 3: 0.009 + 0.09 = 0.099.
# Second update: class 4: 0.009 + 0.05 = 0.059.
_EXPECTED = [0.01, 0.14279, 0.029, 0.099, 0.059]


def _worker(rank, world_size, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    try:
        tracker = MeanScoreTracker(4)
        for labels, values in _OBSERVATIONS[rank]:
            tracker.update(torch.tensor(labels, dtype=torch.int64), torch.tensor(values))
        torch.save(tracker.scores, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_two_gloo_processes_end_with_identical_scores(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    torch.testing.assert_close(rank0, rank1, rtol=0, atol=0)
    torch.testing.assert_close(rank0, _t(_EXPECTED), rtol=0, atol=1e-7)
