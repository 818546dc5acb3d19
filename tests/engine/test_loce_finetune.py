"""The LOCE stage-2 recipe through the engine: freezing, stage-1 initialisation, state in
checkpoints, exact resume, and two gloo processes that keep the scores identical."""

from __future__ import annotations

import os

import pytest
import torch
import torch.multiprocessing as mp
from engine_utils import free_port, join_rank_env, logged_losses, tiny_overrides

from loce import build
from loce.config import load_config
from loce.engine.checkpoint import load_checkpoint_file
from loce.engine.freeze import configure_trainable
from loce.engine.method_state import before_training, load_rank_state, save_rank_state
from loce.engine.train import train
from loce.errors import CheckpointError, ConfigError
from loce.models.weights import load_initial_weights

LOCE_SYNTH = "loce_mask_rcnn_r18_fpn_normed_mask_synthetic"
CE_SYNTH = "finetune_ce_mask_rcnn_r18_fpn_normed_mask_synthetic"
TRAINABLE = ["rpn", "roi_heads.box_predictor.cls_score", "roi_heads.box_predictor.bbox_pred",
             "roi_heads.mask_head", "roi_heads.mask_predictor"]


@pytest.fixture(autouse=True)
def _console():
    # Tests here read loce's messages from stdout: show them whatever ran before.
    from loce.logs import setup_console

    setup_console()


def _cfg(name, dataset, out, **extra):
    return load_config(name, tiny_overrides(dataset, out, **extra))


# ---------------------------------------------------------------------------- freezing


@pytest.mark.parametrize("name", [LOCE_SYNTH, CE_SYNTH])
def test_only_the_listed_prefixes_train(tiny_dataset, tmp_path, name):
    cfg = _cfg(name, tiny_dataset, tmp_path)
    assert cfg.train.trainable == TRAINABLE
    model = build.build_model(cfg, 12, load_backbone=False)
    configure_trainable(model, cfg)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    expected = {n for n, _ in model.named_parameters()
                if any(n == p or n.startswith(p + ".") for p in TRAINABLE)}
    assert trainable == expected
    assert any(n.startswith("rpn.head.") for n in trainable)
    assert "roi_heads.box_predictor.cls_score.weight" in trainable
    assert not any(n.startswith(("backbone.", "roi_heads.box_head.")) for n in trainable)
    # Frozen BatchNorm layers keep normalising with (and keeping) their running statistics
    # in train mode: the frozen network computes the same features as at test time.
    bn = model.backbone.body.bn1
    model.train()
    x = torch.randn(2, bn.num_features, 5, 5) * 3 + 1
    mean = bn.running_mean.clone()
    y = bn(x)
    assert torch.equal(bn.running_mean, mean)
    bn.eval()
    torch.testing.assert_close(y, bn(x))


def test_unmatched_prefix_lists_the_valid_ones(tiny_dataset, tmp_path):
    cfg = _cfg(LOCE_SYNTH, tiny_dataset, tmp_path, **{
        "train.trainable": "[rpn,roi_heads.box_predictr]"})
    model = build.build_model(cfg, 12, load_backbone=False)
    with pytest.raises(ConfigError) as err:
        configure_trainable(model, cfg)
    msg = str(err.value)
    assert "train.trainable[1] = 'roi_heads.box_predictr' matches no parameter" in msg
    assert "Did you mean 'roi_heads.box_predictor'?" in msg
    for valid in ("backbone, backbone.body, backbone.fpn, rpn, rpn.head, roi_heads",
                  "roi_heads.box_head", "roi_heads.mask_predictor"):
        assert valid in msg
    # "roi_heads.score_tracker" holds no parameter: not a valid prefix
    assert "score_tracker" not in msg
    with pytest.raises(ConfigError, match="train.trainable must list at least one"):
        _cfg(LOCE_SYNTH, tiny_dataset, tmp_path, **{"train.trainable": "[]"})


def test_trainable_null_leaves_the_builder_settings(tiny_dataset, tmp_path):
    cfg = _cfg(LOCE_SYNTH, tiny_dataset, tmp_path, **{"train.trainable": "null",
                                                      "model.frozen_stages": 1})
    model = build.build_model(cfg, 12, load_backbone=False)
    before = {n: p.requires_grad for n, p in model.named_parameters()}
    configure_trainable(model, cfg)
    assert {n: p.requires_grad for n, p in model.named_parameters()} == before
    assert not before["backbone.body.layer1.0.conv1.weight"]
    # prefixes narrow the builder's choice: frozen ResNet stages stay frozen
    cfg = _cfg(LOCE_SYNTH, tiny_dataset, tmp_path, **{"train.trainable": "[backbone,rpn]",
                                                      "model.frozen_stages": 1})
    model = build.build_model(cfg, 12, load_backbone=False)
    with pytest.warns(UserWarning, match="stored features go stale"):
        configure_trainable(model, cfg)
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    assert not grads["backbone.body.layer1.0.conv1.weight"]
    assert grads["backbone.body.layer2.0.conv1.weight"] and grads["backbone.fpn.inner_blocks.0.0.weight"]
    assert not grads["roi_heads.box_predictor.cls_score.weight"]


# ---------------------------------------------------------------------------- init weights


def test_stage1_checkpoint_loads_into_the_loce_model(tiny_dataset, tiny_checkpoint, tmp_path):
    cfg = _cfg(LOCE_SYNTH, tiny_dataset, tmp_path)
    data = load_checkpoint_file(tiny_checkpoint)
    model = build.build_model(cfg, 12, load_backbone=False)
    load_initial_weights(model, data, str(tiny_checkpoint))
    state = model.state_dict()
    for key, value in data["model"].items():
        assert torch.equal(state[key], value), key
    assert torch.equal(state["roi_heads.score_tracker.scores"], torch.full((13,), 0.01))
    # a LOCE state loads into the plain control model (the scores are ignored)
    plain = build.build_model(_cfg(CE_SYNTH, tiny_dataset, tmp_path), 12, load_backbone=False)
    load_initial_weights(plain, {"model": state}, "loce.pth")
    # any other mismatch is an error naming the key
    broken = dict(data["model"])
    del broken["rpn.head.conv.0.0.weight"]
    broken["roi_heads.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"stage1\.pth does not fit the model: 1 missing "
                       r"\(e\.g\. rpn\.head\.conv\.0\.0\.weight\); 1 unexpected"):
        load_initial_weights(model, {"model": broken}, "stage1.pth")


# ---------------------------------------------------------------------------- end to end


# The Mask R-CNN recipe on the LVIS-format data, and the box-only one (Faster R-CNN) on a
# COCO box-only file: (stage-2 config, dataset fixture, stage-1 checkpoint fixture).
RECIPES = {
    "mask": (LOCE_SYNTH, "tiny_dataset", "tiny_checkpoint"),
    "boxes": ("loce_faster_rcnn_r18_fpn_synthetic", "tiny_coco_boxes", "tiny_faster_checkpoint"),
}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_finetune_from_stage1_saves_state_and_resumes_exactly(recipe, request, tmp_path, capsys):
    name, data_fixture, ckpt_fixture = RECIPES[recipe]
    tiny_dataset = request.getfixturevalue(data_fixture)
    tiny_checkpoint = request.getfixturevalue(ckpt_fixture)
    extra = {"train.init_from": str(tiny_checkpoint), "loce.memory_capacity": 32,
             "solver.steps": "[]", "train.max_iters_per_epoch": 2}
    ref = train(_cfg(name, tiny_dataset, tmp_path / "ref", **{**extra, "solver.epochs": 2}))
    out = capsys.readouterr().out
    assert out.count("LOCE init pass: 24 images") == 1
    ckpts = tmp_path / "ref" / "checkpoints"
    # the scores are in the rank-0 checkpoint, the memory only in its per-rank file (newest only)
    assert sorted(p.name for p in ckpts.glob("*.memory.*")) == ["epoch_2.pth.memory.rank0.pth"]
    state = torch.load(ckpts / "epoch_2.pth", weights_only=False)
    ref_heads = ref.model.roi_heads
    assert torch.equal(state["model"]["roi_heads.score_tracker.scores"],
                       ref_heads.score_tracker.scores)
    assert not any("memory" in k or "extra_state" in k for k in state["model"])
    reference = logged_losses(tmp_path / "ref" / "metrics.jsonl")
    assert sorted(reference) == [1, 2, 3, 4]

    # the same run, stopped after epoch 1 and resumed: state restored, no init pass, same losses
    run = tmp_path / "run"
    train(_cfg(name, tiny_dataset, run, **{**extra, "solver.epochs": 1}))
    capsys.readouterr()
    resumed = train(_cfg(name, tiny_dataset, run, **{**extra, "solver.epochs": 2}),
                    resume=True)
    out = capsys.readouterr().out
    assert "initialisation pass skipped" in out and "LOCE init pass" not in out
    got = logged_losses(run / "metrics.jsonl")
    for it in (3, 4):
        assert got[it].keys() == reference[it].keys()
        for name, value in reference[it].items():
            assert got[it][name] == pytest.approx(value, rel=1e-5, abs=1e-6), (it, name)
    heads = resumed.model.roi_heads
    torch.testing.assert_close(heads.score_tracker.scores, ref_heads.score_tracker.scores)
    torch.testing.assert_close(heads.feature_memory.features, ref_heads.feature_memory.features)
    # the draws continued from the checkpoint's generator state, to the same end state
    assert torch.equal(heads.generator.get_state(), ref_heads.generator.get_state())


def test_resume_without_saved_memory_reruns_the_pass_and_keeps_the_scores(
        tiny_dataset, tmp_path, monkeypatch, capsys):
    import loce.engine.method_state as method_state

    calls = []

    def fake_pass(model, cfg, dataset, device):
        calls.append(1)
        model.roi_heads.memory_for("cpu")
        model.roi_heads.score_tracker.scores.fill_(0.5)

    monkeypatch.setattr(method_state, "run_init_pass", fake_pass)
    cfg = _cfg(LOCE_SYNTH, tiny_dataset, tmp_path, **{"loce.save_memory": False})
    model = build.build_model(cfg, 12, load_backbone=False)
    model.roi_heads.score_tracker.scores[1:] = 0.25  # as restored from a checkpoint
    load_rank_state(model, cfg, tmp_path, "epoch_1.pth", 0)
    before_training(model, cfg, None, torch.device("cpu"), resumed=True)
    assert calls == [1] and "re-running the initialisation pass" in capsys.readouterr().out
    assert model.roi_heads.score_tracker.scores[1:].eq(0.25).all()
    # a fresh run runs it once; a restored one not at all; init_pass=false never
    before_training(model, cfg, None, torch.device("cpu"), resumed=False)
    assert calls == [1, 1]
    model.roi_heads.memory_restored = True
    before_training(model, cfg, None, torch.device("cpu"), resumed=True)
    off = _cfg(LOCE_SYNTH, tiny_dataset, tmp_path, **{"loce.init_pass": False})
    before_training(build.build_model(off, 12, load_backbone=False), off, None,
                          torch.device("cpu"), resumed=False)
    assert calls == [1, 1]
    # a LOCE config with a model built without it
    plain = build.build_model(_cfg(CE_SYNTH, tiny_dataset, tmp_path), 12, load_backbone=False)
    with pytest.raises(TypeError, match=r"needs a model built with it \(LoceRoIHeads\), got "
                                        r"roi_heads of type StepwiseRoIHeads"):
        before_training(plain, cfg, None, torch.device("cpu"), resumed=False)


def test_corrupt_memory_file_is_a_checkpoint_error(tiny_dataset, tmp_path):
    cfg = _cfg(LOCE_SYNTH, tiny_dataset, tmp_path)
    model = build.build_model(cfg, 12, load_backbone=False)
    (tmp_path / "epoch_1.pth.memory.rank0.pth").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match=r"cannot read the feature memory .*rank0\.pth"):
        load_rank_state(model, cfg, tmp_path, "epoch_1.pth", 0)
    other = build.build_model(cfg, 12, load_backbone=False)
    other.roi_heads.memory_for("cpu")
    save_rank_state(other, cfg, tmp_path, "epoch_1.pth", 0)
    small = _cfg(LOCE_SYNTH, tiny_dataset, tmp_path, **{"loce.memory_capacity": 8})
    model = build.build_model(small, 12, load_backbone=False)
    with pytest.raises(CheckpointError, match=r"epoch_1\.pth\.memory\.rank0\.pth: .*capacity: "
                       r"checkpoint 80 vs memory 8"):
        load_rank_state(model, small, tmp_path, "epoch_1.pth", 0)


# ---------------------------------------------------------------------------- two processes


def _worker(rank: int, world: int, port: int, name: str, overrides: list[str], out: str) -> None:
    join_rank_env(rank, world, port)
    from loce.engine import distributed as dist_utils

    result = train(load_config(name, overrides))
    heads = result.model.roi_heads
    torch.save({"scores": heads.score_tracker.scores.clone(),
                "memory": heads.feature_memory.features.clone(),
                "weight": result.model.roi_heads.box_predictor.cls_score.weight.detach().clone()},
               os.path.join(out, f"rank{rank}.pt"))
    dist_utils.cleanup_distributed()


@pytest.mark.distributed
@pytest.mark.parametrize("recipe", ["mask", pytest.param("boxes", marks=pytest.mark.slow)])
def test_two_gloo_processes_keep_identical_scores(recipe, request, tmp_path):
    name, data_fixture, ckpt_fixture = RECIPES[recipe]
    tiny_dataset = request.getfixturevalue(data_fixture)
    tiny_checkpoint = request.getfixturevalue(ckpt_fixture)
    run = tmp_path / "run"
    overrides = tiny_overrides(tiny_dataset, run, **{
        "train.init_from": str(tiny_checkpoint), "loce.memory_capacity": 16,
        "train.max_iters_per_epoch": 2})
    mp.spawn(_worker, args=(2, free_port(), name, overrides, str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt")
    r1 = torch.load(tmp_path / "rank1.pt")
    assert torch.equal(r0["scores"], r1["scores"])
    assert bool((r0["scores"][1:] != 0.01).all())
    assert torch.equal(r0["weight"], r1["weight"])
    # each rank filled its own memory from its own images (docs/method.md §4: not synchronised)
    assert not torch.equal(r0["memory"], r1["memory"])
    names = sorted(p.name for p in (run / "checkpoints").glob("*.memory.*"))
    assert names == ["epoch_1.pth.memory.rank0.pth", "epoch_1.pth.memory.rank1.pth"]
