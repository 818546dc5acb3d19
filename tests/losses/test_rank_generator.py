"""RankGenerator: seeded per rank, lazily created, and its state saved and given back."""

import pytest
import torch

from loce.losses import FederatedLoss, GumbelLoss, RankGenerator
from loce.losses.cross_entropy import CrossEntropyLoss

CPU = torch.device("cpu")


def test_seeded_with_seed_plus_rank_at_the_first_draw():
    draws = RankGenerator(11)
    assert draws.get_state() == {}  # nothing drawn, nothing to save
    g = draws.get(CPU)
    assert draws.get(torch.device("cpu", 0)) is g  # one CPU generator for every CPU device
    expected = torch.Generator().manual_seed(11)  # rank 0 in one process
    assert torch.equal(g.get_state(), expected.get_state())
    assert list(draws.get_state()) == ["cpu"]


def test_state_round_trip_continues_the_stream():
    draws = RankGenerator(3)
    torch.rand(5, generator=draws.get(CPU))
    saved = draws.get_state()
    assert saved["cpu"].dtype == torch.uint8 and saved["cpu"].dim() == 1
    assert saved["cpu"].numel() == torch.Generator().get_state().numel()
    ahead = torch.rand(4, generator=draws.get(CPU))

    # into a live generator: it jumps back to the saved point
    draws.set_state(saved)
    assert torch.equal(torch.rand(4, generator=draws.get(CPU)), ahead)

    # into a fresh holder (a resumed run): taken at the first draw, and saved again as given
    # when the run checkpoints before drawing
    resumed = RankGenerator(3)
    resumed.set_state(saved)
    assert torch.equal(resumed.get_state()["cpu"], saved["cpu"])
    assert torch.equal(torch.rand(4, generator=resumed.get(CPU)), ahead)
    # the continued stream is not the seed's: the first 5 draws were skipped
    assert not torch.equal(ahead, torch.rand(4, generator=torch.Generator().manual_seed(3)))

    # reset forgets generators and given states alike
    resumed.set_state(saved)
    resumed.reset()
    assert resumed.get_state() == {}
    first = torch.rand(4, generator=torch.Generator().manual_seed(3))
    assert torch.equal(torch.rand(4, generator=resumed.get(CPU)), first)


def test_set_state_refuses_what_is_not_a_generator_state_and_takes_nothing():
    draws = RankGenerator(0)
    g = draws.get(CPU)
    before = g.get_state()
    good = torch.Generator().manual_seed(5).get_state()
    with pytest.raises(TypeError, match="mapping of device to tensor, found list"):
        draws.set_state([good])
    with pytest.raises(TypeError, match="state for device 'cpu' must be a 1-D uint8 tensor, "
                                        "found list"):
        draws.set_state({"cpu": [1, 2]})
    with pytest.raises(TypeError, match="1-D uint8 tensor"):
        draws.set_state({"cpu": good.to(torch.int64)})
    # 16 bytes is a CUDA generator's state; the CPU one has 5056
    size = good.numel()
    with pytest.raises(ValueError, match=f"device 'cpu' has 16 bytes, a generator there has "
                                         f"{size}"):
        draws.set_state({"cpu": torch.zeros(16, dtype=torch.uint8)})
    # a device this process has not: nothing is taken, not even the valid CPU state
    with pytest.raises(ValueError, match="cannot create a generator on device 'cuda:99'"):
        draws.set_state({"cpu": good, "cuda:99": torch.zeros(16, dtype=torch.uint8)})
    assert torch.equal(g.get_state(), before)
    assert torch.equal(draws.get_state()["cpu"], before)


# Losses whose value depends on the draws: federated keeps 4 of 6 classes with |U| = 3 (one
# of the 4 others drawn); for Gumbel classes 1-3 are tail and the foreground RoIs are of
# classes 1 and 4, so rho = 1/2 and a background RoI drops each tail negative w.p. 1/2.
@pytest.mark.parametrize("make", [
    lambda: FederatedLoss(6, image_counts=[1.0] * 6, num_sampled=4, seed=7),
    lambda: GumbelLoss(6, image_frequency=[0.0, 0.0, 0.0, 1.0, 1.0, 1.0], freq_threshold=0.5,
                       seed=7),
], ids=["federated", "gumbel"])
def test_a_loss_given_the_state_draws_what_the_original_draws_next(make):
    labels = torch.tensor([1, 4, 0, 0, 0, 0, 0, 0])
    logits = torch.randn(8, 7, generator=torch.Generator().manual_seed(0))
    a = make()
    a(logits, labels)  # one iteration before the checkpoint
    saved = a.draws.get_state()
    b, fresh = make(), make()
    b.draws.set_state(saved)
    went_on = [float(a(logits, labels)) for _ in range(4)]
    assert [float(b(logits, labels)) for _ in range(4)] == went_on  # exact, draw for draw
    # ... where a stream restarted from the seed replays the first iteration's draws instead
    assert [float(fresh(logits, labels)) for _ in range(4)] != went_on


def test_losses_without_draws_say_so():
    assert CrossEntropyLoss(4).draws is None
    assert isinstance(FederatedLoss(3, image_counts=[1.0] * 3).draws, RankGenerator)
