"""Checkpoints: atomic writes, exact resume, and clear errors when a checkpoint does not fit.

A training checkpoint is a dict with

- ``model``: the (unwrapped) model's state dict, including running state kept in buffers;
- ``optimizer``, ``scheduler``, ``scaler``: their state dicts (``scaler`` may be None);
- ``epoch``: the epoch in progress (0-based) and ``iter_in_epoch``: iterations of it already
  done; ``global_iter``: iterations done in total;
- ``rng``: Python, NumPy and torch (CPU and CUDA) generator states;
- ``config``: the resolved config as a plain dict;
- ``loce_version``.

Every file is written atomically (:mod:`loce.fileio`: a temporary file, ``fsync``, rename), so
a run killed while saving never leaves a truncated checkpoint; ``last_checkpoint`` (a one-line
text file) names the newest one and moves only after the checkpoint and every per-rank file
that belongs to it are on the disk. A checkpoint is never written with non-finite weights or
optimizer state, and one with non-finite weights is refused on load.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from loce.errors import CheckpointError
from loce.faults import fault_point
from loce.fileio import atomic_write_text, ensure_directory, save_torch_atomic

__all__ = [
    "capture_rng_state",
    "check_resumable",
    "checkpoint_global_iter",
    "find_last_checkpoint",
    "load_checkpoint_file",
    "load_model_weights",
    "non_finite_entries",
    "optimizer_tensors",
    "restore_rng_state",
    "save_checkpoint",
    "set_last_checkpoint",
]

LAST = "last_checkpoint"
# What `--resume` reads from a checkpoint, with the type each must have.
RESUME_KEYS: dict[str, type | tuple[type, ...]] = {
    "model": Mapping,
    "optimizer": Mapping,
    "scheduler": Mapping,
    "epoch": int,
    "iter_in_epoch": int,
    "global_iter": int,
    "rng": (Mapping, list),
}


def non_finite_entries(tensors: Iterable[tuple[str, Any]]) -> list[str]:
    """Names of the floating-point tensors among ``(name, value)`` pairs with a NaN or inf."""
    bad = []
    for name, value in tensors:
        if torch.is_tensor(value) and value.is_floating_point() and value.numel() \
                and not bool(torch.isfinite(value).all()):
            bad.append(name)
    return bad


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> list[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` for every tensor of the optimizer's per-parameter state."""
    out = []
    for i, state in enumerate(optimizer.state.values()):
        for key, value in state.items():
            if torch.is_tensor(value):
                out.append((f"optimizer state {i} {key}", value))
    return out


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
    """Write ``state`` to ``directory/name`` atomically and point ``last_checkpoint`` at it.

    Whatever else belongs to the checkpoint (per-rank files) must be written before this is
    called: the pointer moves last.

    Raises:
        FileWriteError: the folder or a file cannot be written (nothing replaced).
    """
    directory = ensure_directory(directory, what="checkpoint folder")
    path = directory / name
    save_torch_atomic(dict(state), path, what="checkpoint")
    fault_point("checkpoint:after-file")
    set_last_checkpoint(directory, name)
    return path


def set_last_checkpoint(directory: str | os.PathLike, name: str | None) -> None:
    """Point ``directory/last_checkpoint`` at ``name`` atomically (None: remove the pointer)."""
    pointer = Path(directory) / LAST
    if name is None:
        pointer.unlink(missing_ok=True)
        return
    atomic_write_text(pointer, name + "\n", what="checkpoint pointer")


def find_last_checkpoint(directory: str | os.PathLike) -> Path | None:
    """The checkpoint named by ``directory/last_checkpoint``, or None when there is none."""
    pointer = Path(directory) / LAST
    if not pointer.is_file():
        return None
    try:
        name = pointer.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as err:
        raise CheckpointError(f"cannot read {pointer} ({err}); delete it to start over") from None
    path = Path(directory) / name
    if not name or "/" in name or not path.is_file():
        raise CheckpointError(
            f"{pointer} names {name!r}, which is not a checkpoint in {directory}; delete "
            f"{pointer} to start over"
        )
    return path


def checkpoint_global_iter(path: str | os.PathLike) -> int | None:
    """The ``global_iter`` stored in a checkpoint (read lazily), or None when unreadable."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
        value = data.get("global_iter") if isinstance(data, dict) else None
    except Exception:  # noqa: BLE001 - any unreadable file is simply not a candidate
        return None
    return value if isinstance(value, int) else None


def check_resumable(state: Mapping[str, Any], source: str) -> None:
    """Raise unless ``state`` holds everything ``--resume`` restores, with the right types.

    Raises:
        CheckpointError: naming the missing or mistyped entry (a weights-only file is not a
            training checkpoint: it can start a run as ``train.init_from``).
    """
    for key, kind in RESUME_KEYS.items():
        value = state.get(key)
        if value is None:
            raise CheckpointError(
                f"{source} has no {key!r}, so training cannot resume from it (a weights-only "
                "file?); use it as train.init_from in a new output_dir, or delete "
                "last_checkpoint to start over"
            )
        if not isinstance(value, kind) or isinstance(value, bool):
            raise CheckpointError(
                f"{source}: {key!r} is a {type(value).__name__}; it is not a checkpoint written "
                "by `loce train`: delete last_checkpoint to start over"
            )


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
    bad = non_finite_entries((k, v) for k, v in state.items() if k in own)
    if bad:
        raise CheckpointError(
            f"{source} holds non-finite weights ({len(bad)} tensors with NaN or inf, e.g. "
            f"{', '.join(bad[:3])}): it was written by a diverged run; use an earlier checkpoint"
        )
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
