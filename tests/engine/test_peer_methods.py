"""Long-tail methods through the engine: class statistics from the training annotations,
stage-1 initialisation of stateful models, loss state and loss draws restored by --resume,
NorCal at prediction time, and two gloo processes (EQLv2's state identical, Seesaw's per
rank)."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import socket
from collections import defaultdict
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from engine_utils import SYNTH_CONFIG, json_class_statistics, tiny_overrides
from torch import nn

from loce import build
from loce.cli import main as cli_main
from loce.config import load_config
from loce.data.statistics import class_statistics
from loce.engine.checkpoint import load_checkpoint_file
from loce.engine.freeze import check_reinit_trainable, configure_trainable
from loce.engine.method_state import (
    LOSS_DRAWS_KEY,
    loss_draws_state,
    restore_loss_draws_state,
)
from loce.engine.train import train
from loce.errors import CheckpointError, ConfigError
from loce.losses import CrossEntropyLoss, FederatedLoss
from loce.models.weights import load_initial_weights

K = 12  # classes of the tiny synthetic preset


def _cfg(dataset, out, **extra):
    return load_config(SYNTH_CONFIG, tiny_overrides(dataset, out, **extra))


def _loss_state(model) -> dict[str, torch.Tensor]:
    heads = getattr(model, "module", model).roi_heads
    return {n: b.detach().clone() for n, b in heads.cls_loss.named_buffers()}


# ---------------------------------------------------------------------------- statistics


def test_class_statistics_are_counted_from_the_training_annotations(tiny_dataset, tmp_path):
    data = json.loads((tiny_dataset / "annotations/train.json").read_text())
    images_of = defaultdict(set)
    instances = defaultdict(int)
    for ann in data["annotations"]:
        images_of[ann["category_id"]].add(ann["image_id"])
        instances[ann["category_id"]] += 1
    cat_ids = sorted(c["id"] for c in data["categories"])
    annotated = len({a["image_id"] for a in data["annotations"]})
    cfg = _cfg(tiny_dataset, tmp_path)
    stats = class_statistics(build.build_train_dataset(cfg))
    assert stats.image_counts == tuple(len(images_of[c]) for c in cat_ids)
    assert stats.instance_counts == tuple(instances[c] for c in cat_ids)
    assert stats.num_images == annotated
    # The generator also writes LVIS's own fields; they agree.
    fields = {c["id"]: c for c in data["categories"]}
    assert stats.image_counts == tuple(fields[c]["image_count"] for c in cat_ids)
    assert stats.instance_counts == tuple(fields[c]["instance_count"] for c in cat_ids)
    # Read from the file when no training set is given; the same from the dataset.
    assert build.training_class_statistics(cfg) == stats
    assert build.training_class_statistics(cfg, build.build_train_dataset(cfg)) == stats


def test_losses_and_norcal_take_the_statistics_of_data_train_ann(tiny_dataset, tmp_path):
    cfg = _cfg(tiny_dataset, tmp_path, **{"model.roi.cls_loss": "eql",
                                          "model.roi.eql.freq_threshold": 0.2})
    model = build.build_model(cfg, K, load_backbone=False)
    stats = build.training_class_statistics(cfg)
    expected = [1.0 if c / stats.num_images < 0.2 else 0.0 for c in stats.image_counts]
    assert model.roi_heads.cls_loss.tail.tolist() == expected
    assert 0 < sum(expected) < K  # the tiny preset has head and tail classes at 0.2
    cfg = _cfg(tiny_dataset, tmp_path, **{"model.test.norcal_gamma": 0.5})
    model = build.build_model(cfg, K, load_backbone=False)
    torch.testing.assert_close(model.roi_heads.norcal_log_counts,
                               torch.tensor(stats.image_counts, dtype=torch.float32).log())
    missing = tmp_path / "nowhere.json"
    cfg = _cfg(tiny_dataset, tmp_path, **{"model.roi.cls_loss": "federated",
                                          "data.train_ann": str(missing)})
    with pytest.raises(ConfigError, match=r"model\.roi\.cls_loss='federated'.*data\.train_ann.*"
                                          r"nowhere\.json"):
        build.build_model(cfg, K, load_backbone=False)


def test_loce_goes_with_softmax_losses_only(tiny_dataset, tmp_path):
    with pytest.raises(ConfigError, match=r"loce\.enabled=true .* model\.roi\.cls_loss='eqlv2'"):
        build.build_model(_cfg(tiny_dataset, tmp_path, **{"loce.enabled": True,
                                                          "model.roi.cls_loss": "eqlv2"}), K)
    with pytest.raises(ConfigError, match=r"'equilibrium' is LOCE's loss.*loce\.enabled=true"):
        build.build_model(_cfg(tiny_dataset, tmp_path, **{"model.roi.cls_loss": "equilibrium"}),
                          K)
    cfg = _cfg(tiny_dataset, tmp_path, **{"loce.enabled": True,
                                          "model.roi.cls_loss": "equilibrium",
                                          "model.test.norcal_gamma": 0.5})
    model = build.build_model(cfg, K, load_backbone=False)
    heads = model.roi_heads
    assert type(heads).__name__ == "LoceRoIHeads" and heads.use_equilibrium_loss
    # NorCal survives the LOCE wrapper (LOCE models are softmax models).
    assert heads.norcal_gamma == 0.5 and heads.norcal_log_counts.shape == (K,)


# ---------------------------------------------------------------------------- checkpoints


def test_stage1_checkpoint_initialises_stateful_models_and_back(tiny_dataset, tiny_checkpoint,
                                                                tmp_path):
    data = load_checkpoint_file(tiny_checkpoint)
    key = "roi_heads.box_head.fc6.weight"
    for name in ("eqlv2", "ecm"):
        cfg = _cfg(tiny_dataset, tmp_path, **{"model.roi.cls_loss": name})
        model = build.build_model(cfg, K, load_backbone=False)
        fresh = _loss_state(model)
        load_initial_weights(model, data, str(tiny_checkpoint))
        assert torch.equal(model.state_dict()[key], data["model"][key])
        for n, b in _loss_state(model).items():  # the method's state starts fresh
            assert torch.equal(b, fresh[n]), n
    # Seesaw's classifier has K + 2 outputs: a K + 1 classifier cannot initialise it.
    seesaw = build.build_model(_cfg(tiny_dataset, tmp_path, **{"model.roi.cls_loss": "seesaw"}),
                               K, load_backbone=False)
    with pytest.raises(CheckpointError, match=r"cls_score\.weight' has shape \(13, 64\).*\(14, 64\)"):
        load_initial_weights(seesaw, data, str(tiny_checkpoint))
    # An EQLv2 model's running state carries over to another EQLv2 model and is ignored by a
    # plain one.
    cfg = _cfg(tiny_dataset, tmp_path, **{"model.roi.cls_loss": "eqlv2"})
    state = build.build_model(cfg, K, load_backbone=False).state_dict()
    state["roi_heads.cls_loss.pos_grad"] = torch.arange(K, dtype=torch.float64)
    other = build.build_model(cfg, K, load_backbone=False)
    load_initial_weights(other, {"model": state}, "eqlv2.pth")
    assert other.roi_heads.cls_loss.pos_grad.tolist() == list(range(K))
    plain = build.build_model(_cfg(tiny_dataset, tmp_path), K, load_backbone=False)
    load_initial_weights(plain, {"model": state}, "eqlv2.pth")
    # Constants of the loss (EQL's tail set) follow this run's config, not the checkpoint's.
    eql = {"model.roi.cls_loss": "eql"}
    low = build.build_model(_cfg(tiny_dataset, tmp_path, **eql,
                                 **{"model.roi.eql.freq_threshold": 0.0}), K, load_backbone=False)
    high = build.build_model(_cfg(tiny_dataset, tmp_path, **eql,
                                  **{"model.roi.eql.freq_threshold": 1.0}), K, load_backbone=False)
    load_initial_weights(high, {"model": low.state_dict()}, "eql.pth")
    assert high.roi_heads.cls_loss.tail.tolist() == [1.0] * K
    # Everything else must still fit.
    broken = {k: v for k, v in data["model"].items() if k != key}
    with pytest.raises(CheckpointError, match="1 missing.*fc6"):
        load_initial_weights(other, {"model": broken}, "stage1.pth")


def test_reinit_keeps_fresh_layers_and_loads_the_rest(tiny_dataset, tiny_checkpoint, tmp_path):
    """train.reinit: a softmax stage-1 checkpoint initialises Seesaw's K + 2 normed classifier
    and a sigmoid EQLv2 model; the named layer keeps its fresh initialisation."""
    data = load_checkpoint_file(tiny_checkpoint)
    prefix = "roi_heads.box_predictor.cls_score"
    for extra in ({"model.roi.cls_loss": "seesaw", "model.roi.classifier": "normed"},
                  {"model.roi.cls_loss": "eqlv2"}):
        model = build.build_model(_cfg(tiny_dataset, tmp_path, **extra), K, load_backbone=False)
        fresh = {k: v.clone() for k, v in model.state_dict().items() if k.startswith(prefix)}
        load_initial_weights(model, data, str(tiny_checkpoint), reinit=[prefix])
        state = model.state_dict()
        for key, value in fresh.items():
            assert torch.equal(state[key], value), key
        for key in ("roi_heads.box_head.fc6.weight", "roi_heads.box_predictor.bbox_pred.weight"):
            assert torch.equal(state[key], data["model"][key]), key
    # EQLv2's classifier starts from its sigmoid prior: bias -log((1 - 0.001) / 0.001).
    bias = model.state_dict()[prefix + ".bias"]
    assert torch.allclose(bias, torch.full_like(bias, -math.log(999.0)))
    # A prefix naming nothing is a config error with a suggestion; so is a frozen fresh layer.
    with pytest.raises(ConfigError, match=r"train.reinit\[0\].*names nothing.*Did you mean"):
        load_initial_weights(model, data, str(tiny_checkpoint), reinit=["roi_heads.box_predictr"])
    cfg = _cfg(tiny_dataset, tmp_path, **{"train.reinit": f"[{prefix}]", "train.trainable": "[rpn]"})
    model = build.build_model(cfg, K, load_backbone=False)
    configure_trainable(model, cfg)
    with pytest.raises(ConfigError, match=r"train.reinit\[0\].*frozen.*train.trainable"):
        check_reinit_trainable(model, cfg)


def _resume_with(checkpoint: Path | dict, cfg):
    """``--resume`` a fresh run (``cfg``'s output_dir) whose only checkpoint is ``checkpoint``,
    a file (copied) or a checkpoint's contents."""
    ckpts = Path(cfg.train.output_dir) / "checkpoints"
    ckpts.mkdir(parents=True)
    if isinstance(checkpoint, dict):
        torch.save(checkpoint, ckpts / "epoch_1.pth")
    else:
        shutil.copy(checkpoint, ckpts / "epoch_1.pth")
    (ckpts / "last_checkpoint").write_text("epoch_1.pth\n")
    return train(cfg, resume=True)


@pytest.mark.parametrize("name", ["eqlv2", "seesaw"])
def test_resume_restores_the_loss_state(tiny_dataset, tmp_path, name):
    """Interrupt after epoch 1 (copy its checkpoint to a fresh run) and --resume: the loss
    state at the end equals an uninterrupted run's."""
    extra = {"model.roi.cls_loss": name, "solver.epochs": 2, "solver.steps": "[2]",
             "train.max_iters_per_epoch": 2}
    ref = train(_cfg(tiny_dataset, tmp_path / "ref", **extra))
    expected = _loss_state(ref.model)
    after_one = load_checkpoint_file(tmp_path / "ref/checkpoints/epoch_1.pth")["model"]
    resumed = _resume_with(tmp_path / "ref/checkpoints/epoch_1.pth",
                           _cfg(tiny_dataset, tmp_path / "resumed", **extra))
    assert resumed.global_iter == 4
    got = _loss_state(resumed.model)
    assert got.keys() == expected.keys() and got
    for n in expected:
        torch.testing.assert_close(got[n], expected[n], rtol=1e-9, atol=0, msg=n)
        # ... and epoch 2 moved it past the checkpoint, so the equality is of restored state.
        assert not torch.equal(after_one[f"roi_heads.cls_loss.{n}"], expected[n]), n
    if name == "seesaw":
        assert expected["cum_samples"].sum() > after_one["roi_heads.cls_loss.cum_samples"].sum()


# Settings under which each loss really draws on the tiny preset (K = 12): federated keeps
# M = 7 classes, background's slot included, so 7 - |U| negatives are drawn from the others;
# Gumbel's threshold 0.2 makes the 7 classes seen in fewer than 5 of the 24 training images
# tail, so background rows drop some of them.
DRAWING_LOSSES = {
    "federated": {"model.roi.federated.num_sampled": 7},
    "gumbel": {"model.roi.gumbel.freq_threshold": 0.2},
}


@pytest.mark.parametrize("name", sorted(DRAWING_LOSSES))
def test_resume_continues_the_loss_draws_exactly(tiny_dataset, tmp_path, caplog, name):
    """Stop after epoch 1 of 2 (its checkpoint copied to a fresh run) and --resume: the weights
    at the end are those of the uninterrupted run, bit for bit, because each rank's generator
    of the loss's draws continues from the checkpoint instead of restarting from the seed."""
    extra = {"model.roi.cls_loss": name, "solver.epochs": 2, "solver.steps": "[]",
             "train.max_iters_per_epoch": 2, **DRAWING_LOSSES[name]}
    ref = train(_cfg(tiny_dataset, tmp_path / "ref", **extra))
    ckpt = load_checkpoint_file(tmp_path / "ref/checkpoints/epoch_1.pth")
    assert list(ckpt["rng"][0][LOSS_DRAWS_KEY]) == ["cpu"]
    resumed = _resume_with(tmp_path / "ref/checkpoints/epoch_1.pth",
                           _cfg(tiny_dataset, tmp_path / "resumed", **extra))
    assert resumed.global_iter == 4
    expected, got = ref.model.state_dict(), resumed.model.state_dict()
    assert got.keys() == expected.keys()
    assert [k for k in expected if not torch.equal(got[k], expected[k])] == []
    # ... and the draws of epoch 2 were not those of epoch 1 replayed: a run that restarts
    # the loss's stream at the resume (what a checkpoint without the state gives) ends apart.
    del ckpt["rng"][0][LOSS_DRAWS_KEY]
    with caplog.at_level(logging.WARNING, logger="loce"):
        restarted = _resume_with(ckpt, _cfg(tiny_dataset, tmp_path / "fresh", **extra))
    restarted = restarted.model.state_dict()
    loss_class = {"federated": "FederatedLoss", "gumbel": "GumbelLoss"}[name]
    assert f"holds no state for the random draws of {loss_class} (an older checkpoint)" \
        in caplog.text
    assert any(not torch.equal(restarted[k], expected[k]) for k in expected)


def test_loss_draws_state_and_what_a_checkpoint_may_hold(caplog):
    """The engine finds the loss's generators through ``cls_loss.draws``, whatever the loss."""
    def model_with(loss):
        model = nn.Module()
        model.roi_heads = nn.Module()
        model.roi_heads.cls_loss = loss
        return model

    model = model_with(FederatedLoss(K, image_counts=[1.0] * K, num_sampled=5, seed=3))
    draws = model.roi_heads.cls_loss.draws
    assert loss_draws_state(model) == {LOSS_DRAWS_KEY: {}}  # nothing drawn yet
    g = draws.get(torch.device("cpu"))
    saved = loss_draws_state(model)
    assert torch.equal(saved[LOSS_DRAWS_KEY]["cpu"], g.get_state())
    ahead = torch.rand(3, generator=g)
    assert restore_loss_draws_state(model, {"torch": torch.get_rng_state(), **saved}, "ck.pth")
    assert torch.equal(torch.rand(3, generator=g), ahead)

    # an older checkpoint, or one of a generator this process cannot have: a warning and the
    # generator as it is
    state = g.get_state()
    with caplog.at_level(logging.WARNING, logger="loce"):
        assert not restore_loss_draws_state(model, {"torch": torch.get_rng_state()}, "old.pth")
        assert not restore_loss_draws_state(
            model, {LOSS_DRAWS_KEY: {"cpu": torch.zeros(16, dtype=torch.uint8)}}, "gpu.pth")
    assert "old.pth holds no state for the random draws of FederatedLoss (an older " \
        "checkpoint); they continue from a fresh seed" in caplog.text
    assert "gpu.pth: the random draws of FederatedLoss continue from a fresh seed, so the " \
        "resumed run is not exact: the state for device 'cpu' has 16 bytes" in caplog.text
    assert torch.equal(g.get_state(), state)
    with pytest.raises(CheckpointError, match=r"bad\.pth: rng 'loss_draws': the state for "
                                              r"device 'cpu' must be a 1-D uint8 tensor"):
        restore_loss_draws_state(model, {LOSS_DRAWS_KEY: {"cpu": [1, 2]}}, "bad.pth")

    # a loss without draws writes and reads nothing
    plain = model_with(CrossEntropyLoss(K))
    assert loss_draws_state(plain) == {}
    caplog.clear()
    assert not restore_loss_draws_state(plain, {}, "ck.pth") and not caplog.text


# ---------------------------------------------------------------------------- NorCal


def test_norcal_at_prediction_time(tiny_dataset, tiny_checkpoint, tmp_path, capsys):
    def predict(name, *sets):
        out = tmp_path / f"{name}.json"
        args = ["predict", "--checkpoint", str(tiny_checkpoint), "--gt",
                str(tiny_dataset / "annotations/val.json"), "--image-root", str(tiny_dataset),
                "--out", str(out), "--no-masks", "--set", "model.test.score_thresh=0.0"]
        for s in sets:
            args += ["--set", s]
        return cli_main(args), out

    code, plain = predict("plain")
    assert code == 0, capsys.readouterr().err
    code, zero = predict("zero", "model.test.norcal_gamma=0")
    assert code == 0, capsys.readouterr().err
    code, calibrated = predict("calibrated", "model.test.norcal_gamma=1.0")
    assert code == 0, capsys.readouterr().err
    a, b, c = (json.loads(p.read_text()) for p in (plain, zero, calibrated))
    assert a == b  # gamma 0 is the plain softmax
    assert a != c and all(0.0 <= r["score"] <= 1.0 for r in c)
    # Calibration divides each class's exponential by its image count: the rarer half of
    # the classes takes a larger share of the detection scores.
    stats = class_statistics(build.build_train_dataset(load_config(
        SYNTH_CONFIG, tiny_overrides(tiny_dataset, tmp_path))))
    train_json = json.loads((tiny_dataset / "annotations/train.json").read_text())
    cat_ids = sorted(c["id"] for c in train_json["categories"])
    rare = set(sorted(cat_ids, key=dict(zip(cat_ids, stats.image_counts, strict=True)).get)
               [: len(cat_ids) // 2])

    def rare_share(results):
        total = sum(r["score"] for r in results)
        return sum(r["score"] for r in results if r["category_id"] in rare) / total

    assert rare_share(c) > rare_share(a)
    # Sigmoid models cannot be calibrated this way; the statistics must be readable.
    code, _ = predict("bad", "model.roi.cls_loss=eqlv2", "model.test.norcal_gamma=1.0")
    assert code == 2 and "model.test.norcal_gamma calibrates softmax" in capsys.readouterr().err
    code, _ = predict("missing", "model.test.norcal_gamma=1.0",
                      f"data.train_ann={tmp_path / 'gone.json'}")
    err = capsys.readouterr().err
    assert code == 2 and "data.train_ann" in err and "gone.json" in err


# ---------------------------------------------------------------------------- two processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, runs: dict[str, list[str]], out: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)})
    from loce.engine import distributed as dist_utils

    states = {}
    for name, overrides in runs.items():
        result = train(load_config(SYNTH_CONFIG, overrides))
        states[name] = _loss_state(result.model)
    torch.save(states, os.path.join(out, f"rank{rank}.pt"))
    dist_utils.cleanup_distributed()


@pytest.mark.distributed
@pytest.mark.slow
def test_two_process_gloo_loss_state(tiny_dataset, tmp_path):
    """EQLv2's statistics are all-reduced (identical on both ranks); Seesaw's counts stay per
    rank (DDP does not let rank 0 overwrite them) and the checkpoint holds rank 0's."""
    runs = {
        name: tiny_overrides(tiny_dataset, tmp_path / name, **{
            "model.roi.cls_loss": name, "train.max_iters_per_epoch": 3})
        for name in ("eqlv2", "seesaw")
    }
    mp.spawn(_worker, args=(2, _free_port(), runs, str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=False)
    eqlv2_0, eqlv2_1 = r0["eqlv2"], r1["eqlv2"]
    assert set(eqlv2_0) == {"pos_grad", "neg_grad", "pos_neg"}
    for n in eqlv2_0:
        torch.testing.assert_close(eqlv2_0[n], eqlv2_1[n], rtol=0, atol=0, msg=n)
    assert eqlv2_0["pos_grad"].sum() > 0 and eqlv2_0["neg_grad"].sum() > 0
    # The weights that the next step would use are therefore the same on both ranks.
    assert not torch.equal(eqlv2_0["pos_neg"], torch.full((K,), 100.0, dtype=torch.float64))
    seesaw_0, seesaw_1 = r0["seesaw"]["cum_samples"], r1["seesaw"]["cum_samples"]
    assert seesaw_0.sum() > 0 and seesaw_1.sum() > 0
    assert not torch.equal(seesaw_0, seesaw_1)  # each rank counted its own RoIs
    saved = load_checkpoint_file(tmp_path / "seesaw/checkpoints/epoch_1.pth")["model"]
    assert torch.equal(saved["roi_heads.cls_loss.cum_samples"], seesaw_0)
    saved = load_checkpoint_file(tmp_path / "eqlv2/checkpoints/epoch_1.pth")["model"]
    assert math.isclose(saved["roi_heads.cls_loss.pos_grad"].sum().item(),
                        eqlv2_0["pos_grad"].sum().item(), rel_tol=0, abs_tol=0)


# ---------------------------------------------------------------------------- FRACAL


def test_fracal_takes_its_statistics_from_data_train_ann_and_predicts(tiny_dataset,
                                                                      tiny_checkpoint, tmp_path,
                                                                      capsys):  # fmt: skip
    from loce.losses.scoring import fracal_logit_offsets

    cfg = _cfg(tiny_dataset, tmp_path, **{"model.test.fracal_lambda": 2.0})
    model = build.build_model(cfg, K, load_backbone=False)
    # The dimensions, computed here from the json: centres divided by the image size.
    expected = json_class_statistics(tiny_dataset / "annotations/train.json")["fractal_dims"]
    heads = model.roi_heads
    torch.testing.assert_close(heads.fracal_dims, torch.tensor(expected, dtype=torch.float32))
    assert max(expected) > 1.0
    stats = build.training_class_statistics(cfg)
    torch.testing.assert_close(
        heads.fracal_logit_offsets,
        fracal_logit_offsets(torch.tensor(stats.image_counts), stats.num_images).float())
    # At prediction time, by --set, on a model trained without it.
    out = tmp_path / "fracal.json"
    code = cli_main(["predict", "--checkpoint", str(tiny_checkpoint), "--gt",
                     str(tiny_dataset / "annotations/val.json"), "--image-root",
                     str(tiny_dataset), "--out", str(out), "--no-masks",
                     "--set", "model.test.fracal_lambda=2.0"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert all(0.0 <= r["score"] <= 1.0 for r in json.loads(out.read_text()))
