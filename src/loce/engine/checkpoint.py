"""Checkpoints: atomic writes, exact resume, and clear errors when a checkpoint does not fit.

A training checkpoint is a dict with

- ``model``: the (unwrapped) model's state dict, including running state kept in buffers;
- ``optimizer``, ``scheduler``, ``scaler``: their state dicts (``scaler`` may be None);
- ``epoch``: the epoch in progress (0-based) and ``iter_in_epoch``: iterations of it already
  done; ``global_iter``: iterations done in total;
- ``rng``: Python, NumPy and torch (CPU and CUDA) generator states;
- ``config``: the resolved config as a plain dict;
- ``loce_version``.

Files are written to ``NAME.tmp`` and renamed, so a run killed while saving never leaves a
truncated checkpoint; ``last_checkpoint`` (a one-line text file) names the newest one.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from loce.errors import CheckpointError

__all__ = [
    "capture_rng_state",
    "find_last_checkpoint",
    "load_checkpoint_file",
    "load_model_weights",
    "restore_rng_state",
    "save_checkpoint",
]

LAST = "last_checkpoint"


def capture_rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),  # noqa: NPY002 - the global state is what we save
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(state: Mapping[str, Any], directory: str | os.PathLike, name: str) -> Path:
    """Write ``state`` to ``directory/name`` atomically and point ``last_checkpoint`` at it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    tmp = directory / (name + ".tmp")
    torch.save(dict(state), tmp)
    os.replace(tmp, path)
    pointer_tmp = directory / (LAST + ".tmp")
    pointer_tmp.write_text(name + "\n")
    os.replace(pointer_tmp, directory / LAST)
    return path


def find_last_checkpoint(directory: str | os.PathLike) -> Path | None:
    """The checkpoint named by ``directory/last_checkpoint``, or None when there is none."""
    pointer = Path(directory) / LAST
    if not pointer.is_file():
        return None
    path = Path(directory) / pointer.read_text().strip()
    if not path.is_file():
        raise CheckpointError(
            f"{pointer} names {path.name}, which does not exist; delete {pointer} to start over"
        )
    return path


def describe_key_mismatch(missing: list[str], unexpected: list[str]) -> str:
    """``"2 missing (e.g. a, b); 1 unexpected (e.g. c)"`` for a state-dict error message."""
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
    return "; ".join(parts)


def load_checkpoint_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint (a loce checkpoint or a bare state dict) onto the CPU."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # corrupt or foreign file: report, never a traceback
        raise CheckpointError(f"cannot read checkpoint {path}: {type(err).__name__}: {err}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(data).__name__}, expected a dict")
    return data


def _model_state(data: Mapping[str, Any]) -> Mapping[str, Any]:
    for key in ("model", "state_dict"):
        if key in data and isinstance(data[key], Mapping):
            return data[key]
    return data


def load_model_weights(
    model: nn.Module,
    data: Mapping[str, Any],
    source: str,
    *,
    strict: bool = True,
) -> tuple[list[str], list[str]]:
    """Load model weights from a checkpoint dict with checked shapes.

    Args:
        model: the (unwrapped) model.
        data: a loce checkpoint (``{"model": ...}``), ``{"state_dict": ...}`` or a state dict.
        source: the file name, for messages.
        strict: require the same set of keys.

    Returns:
        (missing keys, unexpected keys) — both empty when ``strict``.

    Raises:
        CheckpointError: a tensor whose shape differs from the model's (names the layer and
            both shapes — typically another number of classes), or missing/unexpected keys
            when ``strict``.
    """
    state = _model_state(data)
    own = model.state_dict()
    for key, value in state.items():
        if key in own and hasattr(value, "shape") and tuple(value.shape) != tuple(own[key].shape):
            raise CheckpointError(
                f"{source}: layer {key!r} has shape {tuple(value.shape)} in the checkpoint but "
                f"{tuple(own[key].shape)} in the model built from the config; check the number "
                "of classes and the model settings, or initialise that layer anew"
            )
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if strict and (missing or unexpected):
        raise CheckpointError(
            f"{source} does not fit the model: {describe_key_mismatch(missing, unexpected)} "
            "keys; is it a checkpoint of "
            "this architecture?"
        )
    model.load_state_dict(state, strict=False)
    return missing, unexpected
