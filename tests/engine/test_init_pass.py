"""LOCE's initialisation pass: fills every queue, warms the scores, builds no graph, leaves the
network untouched."""

from __future__ import annotations

import pytest
import torch
from engine_utils import tiny_overrides

from loce import build
from loce.config import load_config
from loce.engine.checkpoint import load_checkpoint_file
from loce.engine.freeze import configure_trainable
from loce.engine.init_pass import init_pass_batches, run_init_pass
from loce.models.weights import load_initial_weights

LOCE_SYNTH = "loce_mask_rcnn_r18_fpn_normed_mask_synthetic"


def _model(cfg, dataset, checkpoint):
    model = build.build_model(cfg, dataset.num_classes, load_backbone=False)
    load_initial_weights(model, load_checkpoint_file(checkpoint), str(checkpoint))
    configure_trainable(model, cfg)
    return model


def test_init_pass_fills_every_queue_and_warms_scores_without_graphs(
        tiny_dataset, tiny_checkpoint, tmp_path, capsys):
    # capacity 32 -> 32 // 16 = 2 images per class
    cfg = load_config(LOCE_SYNTH, tiny_overrides(tiny_dataset, tmp_path, **{
        "loce.memory_capacity": 32, "train.init_from": str(tiny_checkpoint)}))
    assert cfg.loce.images_per_class == 2
    dataset = build.build_train_dataset(cfg)
    model = _model(cfg, dataset, tiny_checkpoint)
    model.eval()  # the pass must restore whatever mode it finds
    heads = model.roi_heads
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    weights = {k: v.clone() for k, v in model.state_dict().items()}

    seen = []
    step = heads.box_training_step

    def recording_step(*args, **kwargs):
        losses, out = step(*args, **kwargs)
        bn = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        seen.append((torch.is_grad_enabled(), heads.training, any(m.training for m in bn),
                     out.class_logits.requires_grad, losses["loss_classifier"].requires_grad))
        return losses, out

    heads.box_training_step = recording_step
    mask_calls = []
    heads.mask_head.register_forward_hook(lambda *a: mask_calls.append(1))
    result = run_init_pass(model, cfg, dataset, torch.device("cpu"))
    # the mask branch, unused by the pass, does not run; training restores it
    assert not mask_calls and heads.train_masks is True

    classes = {c for labels in dataset.image_labels for c in labels}
    assert classes == set(range(1, dataset.num_classes + 1))
    assert result.iterations == len(seen) == 2 * len(classes) // cfg.data.images_per_gpu
    assert result.images == 2 * len(classes)
    # training forward, no autograd, BatchNorm on running statistics
    assert seen and all(s == (False, True, False, False, False) for s in seen)
    # every queue full, every score warmed away from its initial value, background fixed
    memory = heads.feature_memory
    assert memory.count.tolist() == [32] * dataset.num_classes
    assert result.classes_full == result.classes_filled == dataset.num_classes
    scores = heads.score_tracker.scores
    assert scores[0] == 0.01 and bool((scores[1:] != 0.01).all())
    # the network itself did not change: no gradient, no step, no BatchNorm statistics
    assert all(p.grad is None for p in model.parameters())
    state = model.state_dict()
    for key, value in weights.items():
        if key != "roi_heads.score_tracker.scores":
            assert torch.equal(state[key], value), key
    assert not model.training and not any(m.training for m in model.modules())
    assert "LOCE init pass: 24 images" in capsys.readouterr().out


def test_init_pass_batches_are_balanced_over_ranks():
    labels = [[1], [1, 2], [2], [3], [1, 3]]
    per_rank = [init_pass_batches(labels, 3, 2, r, 2) for r in range(2)]
    # 3 classes x 3 images per rank, in batches of 2: the same number of batches per rank
    assert [len(b) for b in per_rank] == [5, 5]
    assert [sum(map(len, b)) for b in per_rank] == [9, 9]
    # class 1's images, repeated to 3 x 2 = 6 entries and strided: [0, 1, 4, 0, 1, 4]
    assert [i for b in per_rank[0] for i in b][:3] == [0, 4, 1]
    assert [i for b in per_rank[1] for i in b][:3] == [1, 0, 4]


def test_init_pass_needs_the_loce_heads(tiny_dataset, tiny_checkpoint, tmp_path):
    cfg = load_config(LOCE_SYNTH, tiny_overrides(tiny_dataset, tmp_path, **{"loce.enabled": False}))
    dataset = build.build_train_dataset(cfg)
    model = build.build_model(cfg, dataset.num_classes, load_backbone=False)
    with pytest.raises(TypeError, match="loce.enabled=true"):
        run_init_pass(model, cfg, dataset, torch.device("cpu"))
