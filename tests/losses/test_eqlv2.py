"""EQLv2: docs/methods.md §3.6 two-iteration hand values, state round trip,
eval mode, ranks, errors."""

import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from loce.errors import CheckpointError
from loce.losses.eqlv2 import EQLv2Loss, eqlv2_loss, eqlv2_weights

LN2 = math.log(2.0)
# docs/methods.md §3.6: K = 2, zero logits [2, 3] (column 0 = objectness), y = [1, 0].
LABELS = [1, 0]
L1 = 3 * LN2  # all weights 1 at the first iteration
# Second iteration weights: q = [0.916827, 6.7724e-5], w+ = [1.332691, 4.999729].
L2 = LN2 * (2 + 1.332691 + 0.916827 + 2 * 6.7724e-5) / 2


def _f64(values):
    return torch.tensor(values, dtype=torch.float64)


def _two_iterations(module):
    logits, labels = torch.zeros(2, 3), torch.tensor(LABELS)
    return module(logits, labels), module(logits, labels)


def test_first_iteration_and_update():
    module = EQLv2Loss(2)
    loss = module(torch.zeros(2, 3), torch.tensor(LABELS))
    assert loss.item() == pytest.approx(L1, abs=1e-6)
    assert loss.item() == pytest.approx(2.079442, abs=1e-6)
    torch.testing.assert_close(module.pos_grad, _f64([0.5, 0.0]))
    torch.testing.assert_close(module.neg_grad, _f64([0.5, 1.0]))
    torch.testing.assert_close(module.pos_neg, _f64([0.5 / (0.5 + 1e-10), 0.0]))


def test_second_iteration_weights_loss_and_update():
    module = EQLv2Loss(2)
    _, loss2 = _two_iterations(module)
    assert loss2.item() == pytest.approx(L2, abs=1e-6)
    assert loss2.item() == pytest.approx(1.472818, abs=1e-6)
    torch.testing.assert_close(module.pos_grad, _f64([1.166345, 0.0]), rtol=0, atol=1e-6)
    torch.testing.assert_close(module.neg_grad, _f64([0.958414, 1.000068]), rtol=0, atol=1e-6)


def test_weights_mapping():
    w_pos, w_neg = eqlv2_weights(_f64([100.0, 1.0, 0.0]))
    # q(100) is exactly 1 in float32: the first iteration is plain BCE.
    assert w_neg[0].item() == 1.0 and w_pos[0].item() == 1.0
    torch.testing.assert_close(w_neg[1:], torch.tensor([0.916827, 6.7724e-5]), rtol=1e-5, atol=0)
    torch.testing.assert_close(w_pos[1:], torch.tensor([1.332691, 4.999729]), rtol=0, atol=1e-6)


def test_unit_weights_equal_sigmoid_bce_with_objectness():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(5, 4, generator=g)
    y = torch.tensor([0, 3, 1, 0, 2])
    bce = F.binary_cross_entropy_with_logits(z, F.one_hot(y, 4).float(), reduction="sum") / 5
    torch.testing.assert_close(eqlv2_loss(z, y, torch.ones(3), torch.ones(3)), bce)


def test_eval_mode_leaves_the_state_alone():
    module = EQLv2Loss(2).eval()
    loss = module(torch.zeros(2, 3), torch.tensor(LABELS))
    assert loss.item() == pytest.approx(L1, abs=1e-6)
    assert module.pos_grad.abs().sum().item() == 0.0
    torch.testing.assert_close(module.pos_neg, torch.full((2,), 100.0, dtype=torch.float64))


def test_state_dict_round_trip_gives_the_same_second_loss():
    first = EQLv2Loss(2)
    first(torch.zeros(2, 3), torch.tensor(LABELS))
    saved = first.state_dict()
    assert set(saved) == {"pos_grad", "neg_grad", "pos_neg"}
    resumed = EQLv2Loss(2)
    resumed.load_state_dict(saved)
    loss2 = resumed(torch.zeros(2, 3), torch.tensor(LABELS))
    assert loss2.item() == pytest.approx(L2, abs=1e-6)
    resumed.reset()
    assert resumed(torch.zeros(2, 3), torch.tensor(LABELS)).item() == pytest.approx(L1, abs=1e-6)
    with pytest.raises(CheckpointError, match=r"'pos_grad'.*\[2\].*3 foreground classes"):
        EQLv2Loss(3).load_state_dict(saved)


def test_scores_on_zero_logits():
    expected = torch.tensor([[0.5, 0.25, 0.25]])
    torch.testing.assert_close(EQLv2Loss(2).scores(torch.zeros(1, 3)), expected)
    plain = EQLv2Loss(2, test_with_obj=False).scores(torch.zeros(1, 3))
    torch.testing.assert_close(plain, torch.tensor([[0.5, 0.5, 0.5]]))


def test_large_logits_give_finite_gradients_and_state():
    module = EQLv2Loss(2)
    logits = torch.tensor([[1e4, -1e4, 1e4], [-1e4, 1e4, -1e4]], requires_grad=True)
    for _ in range(2):
        loss = module(logits, torch.tensor(LABELS))
        assert torch.isfinite(loss)
        loss.backward()
    assert torch.isfinite(logits.grad).all()
    assert torch.isfinite(module.pos_neg).all()


def test_empty_batch_is_zero_with_gradient_and_no_update():
    module = EQLv2Loss(2)
    logits = torch.zeros(0, 3, requires_grad=True)
    loss = module(logits, torch.zeros(0, dtype=torch.int64))
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad.shape == (0, 3)
    assert module.pos_grad.sum().item() == 0.0 and module.neg_grad.sum().item() == 0.0


def test_errors():
    with pytest.raises(ValueError, match=r"3 columns.*\[2, 4\]"):
        EQLv2Loss(2)(torch.zeros(2, 4), torch.tensor(LABELS))
    with pytest.raises(ValueError, match=r"pos_weight must have shape \[K\] = \[2\]"):
        eqlv2_loss(torch.zeros(2, 3), torch.tensor(LABELS), torch.ones(3), torch.ones(2))
    with pytest.raises(ValueError, match=r"increments must have shape \[K\] = \[2\]"):
        EQLv2Loss(2).accumulate(torch.zeros(3), torch.zeros(3))


# ----------------------------------------------------------------------------- distributed


def _worker(rank, world_size, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    try:
        module = EQLv2Loss(2)
        losses = _two_iterations(module)
        torch.save(
            {"losses": torch.stack(losses).detach(), **module.state_dict()},
            f"{out_dir}/rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_two_gloo_processes_sum_the_statistics(tmp_path):
    # docs/methods.md §3.6: both ranks see the same batch, so P and N are exactly double the
    # one-process values, while r, the weights and the losses are unchanged.
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for key in rank0:
        torch.testing.assert_close(rank0[key], rank1[key], rtol=0, atol=0)
    single = EQLv2Loss(2)
    losses = _two_iterations(single)
    torch.testing.assert_close(rank0["losses"], torch.stack(losses).detach())
    torch.testing.assert_close(rank0["pos_grad"], 2 * single.pos_grad)
    torch.testing.assert_close(rank0["neg_grad"], 2 * single.neg_grad)
    torch.testing.assert_close(rank0["pos_neg"], single.pos_neg)
