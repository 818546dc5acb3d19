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
