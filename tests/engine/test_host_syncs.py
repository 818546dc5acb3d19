"""Host reads of a LOCE training step: one per step (the non-finite loss check) with the
value checks off, the checks' reads every ``train.check_every_iters`` steps."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from loce.checks import checks_enabled, input_checks
from loce.engine.host_syncs import count_host_syncs
from loce.method.feature_memory import FeatureMemory


def test_counter_counts_each_read_once_by_call_site():
    t = torch.arange(3)
    with count_host_syncs() as syncs:
        t.sum().item()
        t.tolist()  # one read, not one per element
        bool(t.any())
        int(t[0])
    assert sum(syncs.values()) == 4
    assert {k.rsplit(" ", 1)[1] for k in syncs} == {"item", "tolist", "__bool__", "__int__"}
    assert all(k.startswith("test_host_syncs.py:") for k in syncs)
    with count_host_syncs() as syncs:
        pass
    t.sum().item()  # outside the block: not counted
    assert not syncs


def test_value_checks_follow_the_switch():
    memory = FeatureMemory(3, 2, (1,), dtype=torch.float32)
    bad = torch.tensor([4])
    assert checks_enabled()
    with pytest.raises(ValueError, match=r"1\.\.3, found 4"):
        memory.push(torch.zeros(1, 1), bad, torch.zeros(1, 4))
    with input_checks(False), count_host_syncs() as syncs:
        assert not checks_enabled()
        memory.push(torch.zeros(2, 1), torch.tensor([1, 2]), torch.zeros(2, 4))
        with input_checks(True):
            assert checks_enabled()
    assert checks_enabled() and not syncs


def _loce_model():
    from loce import build
    from loce.config import load_config
    from loce.engine.freeze import configure_trainable

    cfg = load_config("loce_mask_rcnn_r18_fpn_normed_mask_synthetic", [
        "model.backbone_weights=none", "train.init_from=null", "model.rpn.pre_nms_top_n_train=100",
        "model.rpn.post_nms_top_n_train=50", "model.roi.batch_size_per_image=32",
        "loce.memory_capacity=4"])
    torch.manual_seed(0)
    model = build.build_model(cfg, 8, load_backbone=False)
    configure_trainable(model, cfg)
    heads = model.roi_heads
    memory = heads.memory_for(torch.device("cpu"))
    for c in range(1, 9):  # a filled memory, as after the initialisation pass
        memory.push(torch.randn(2, *heads.feature_shape), torch.full((2,), c), torch.randn(2, 4))
    return cfg, model


def _batch(g):
    images, targets = [], []
    for _ in range(2):
        images.append(torch.rand(3, 96, 96, generator=g))
        xy = torch.rand(3, 2, generator=g) * 40
        boxes = torch.cat([xy, xy + 20 + torch.rand(3, 2, generator=g) * 30], 1)
        masks = torch.zeros(3, 96, 96, dtype=torch.uint8)
        for i, (x1, y1, x2, y2) in enumerate(boxes.int().tolist()):
            masks[i, y1:y2, x1:x2] = 1
        targets.append({"boxes": boxes, "labels": torch.randint(1, 9, (3,), generator=g),
                        "masks": masks})
    return images, targets


def test_a_loce_step_reads_the_host_once_between_checks(tmp_path):
    from loce.engine.train import _check_finite

    cfg, model = _loce_model()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    g = torch.Generator().manual_seed(1)
    counts = []
    for it in range(3):
        images, targets = _batch(g)
        with count_host_syncs() as syncs:
            with input_checks(it % 2 == 0):
                losses = model(images, targets)
            total = sum(losses.values())
            _check_finite(total, losses, 0, it, it, Path(tmp_path), True)
            opt.zero_grad()
            total.backward()
            opt.step()
        counts.append(dict(syncs))
    assert model.roi_heads.last_step.memory_labels.numel() > 0  # memory rows were drawn
    # Without the value checks: only the non-finite loss check.
    assert [k.split(" (")[1] for k in counts[1]] == ["_any_rank) item"]
    assert sum(counts[1].values()) == 1
    # With them: the memory's label and score checks, the tracker's, the Equilibrium Loss's,
    # the boxes' (one per image), and the loss check.
    functions = sorted(k.split(" (")[1].split(")")[0] for k in counts[0])
    assert functions == ["_any_rank", "_check_boxes", "_check_inputs", "push", "sample",
                         "update"]
    assert sum(counts[0].values()) == 7 and counts[2] == counts[0]
