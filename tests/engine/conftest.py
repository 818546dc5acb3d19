"""Shared fixtures for engine tests: a tiny synthetic dataset and a tiny model config."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    from loce.data.synthetic import PRESETS, generate

    root = tmp_path_factory.mktemp("tiny_synth")
    generate(root, PRESETS["tiny"], workers=1)
    return root


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_dataset, tmp_path_factory) -> Path:
    """A checkpoint of a 2-iteration run on the tiny dataset."""
    from engine_utils import SYNTH_CONFIG, tiny_overrides

    from loce.config import load_config
    from loce.engine.train import train

    out = tmp_path_factory.mktemp("tiny_run")
    train(load_config(SYNTH_CONFIG, tiny_overrides(tiny_dataset, out, **{
        "train.max_iters_per_epoch": 2})))
    return out / "checkpoints" / "epoch_1.pth"
