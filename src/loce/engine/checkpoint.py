"""Checkpoints: atomic writes, exact resume, and clear errors when a checkpoint does not fit.

A training checkpoint is a dict with

- ``model``: the (unwrapped) model's state dict, including running state kept in buffers;
- ``optimizer``, ``scheduler``, ``scaler``: their state dicts (``scaler`` may be None);
- ``epoch``: the epoch in progress (0-based) and ``iter_in_epoch``: iterations of it already
  done; ``global_iter``: iterations done in total;
- ``rng``: Python, NumPy and torch (CPU and CUDA) generator states;
- ``config``: the resolved config as a plain dict;
- ``num_classes``, ``category_ids``, ``category_names``: the category table, label order;
- ``class_statistics``: the per-class statistics of the training annotations
  (:meth:`loce.data.statistics.ClassStatistics.to_dict`: image and instance counts,
  ``num_images``, fractal dimensions, frequency groups, the annotation file), which the losses
  built from them, NorCal and FRACAL read when the model is built for inference
  (:func:`load_trained_model`), and ``loce test`` for a validation file without LVIS's
  ``frequency`` fields (:func:`evaluation_categories`); checkpoints of earlier versions and
  converted ones have none (or no ``frequencies`` in it);
- ``loce_version``.

Everything in it is a tensor or a plain value (dict, list, tuple, str, int, float, bool, None),
so it loads with ``torch.load(weights_only=True)``, the only way loce loads one
(:func:`loce.fileio.load_torch`): a file holding any other Python object is refused before any
of it runs. Checkpoints of earlier versions stored the NumPy generator state as an array; that
one object is allowed for them (:data:`LEGACY_GLOBALS`).

Every file is written atomically (:mod:`loce.fileio`: a temporary file, ``fsync``, rename), so
a run killed while saving never leaves a truncated checkpoint; ``last_checkpoint`` (a one-line
text file) names the newest one and moves only after the checkpoint and every per-rank file
that belongs to it are on the disk. A checkpoint is never written with non-finite weights or
optimizer state, and one with non-finite weights is refused on load.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from loce.errors import CheckpointError
from loce.faults import fault_point
from loce.fileio import atomic_write_text, ensure_directory, load_torch, save_torch_atomic
from loce.models.weights import load_model_weights, non_finite_entries

__all__ = [
    "CLASS_STATISTICS",
    "LEGACY_GLOBALS",
    "capture_rng_state",
    "check_category_table",
    "check_resumable",
    "checkpoint_global_iter",
    "evaluation_categories",
    "find_last_checkpoint",
    "load_checkpoint_file",
    "load_model_weights",
    "load_trained_model",
    "model_class_statistics",
    "non_finite_entries",
    "optimizer_tensors",
    "restore_rng_state",
    "save_checkpoint",
    "set_last_checkpoint",
    "stored_class_statistics",
]

LAST = "last_checkpoint"
#: The checkpoint entry that holds the training set's class statistics (plain values).
CLASS_STATISTICS = "class_statistics"
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


def _numpy_array_globals() -> list[tuple[Any, str]]:
    """What pickle needs to rebuild a NumPy array, under the names NumPy 1.x and 2.x write."""
    reconstruct = np.ndarray.__reduce__(np.zeros(1, np.uint32))[0]
    dtype_class = type(np.dtype(np.uint32))
    return [(reconstruct, "numpy._core.multiarray._reconstruct"),
            (reconstruct, "numpy.core.multiarray._reconstruct"),
            (np.ndarray, "numpy.ndarray"), (np.dtype, "numpy.dtype"),
            (dtype_class, f"numpy.dtypes.{dtype_class.__name__}")]


#: The objects checkpoints of earlier versions hold besides tensors and plain values: the
#: NumPy generator state (``np.random.get_state()``, a uint32 array). Allowed only when a
#: checkpoint needs them (:func:`loce.fileio.load_torch`).
LEGACY_GLOBALS = _numpy_array_globals()


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> list[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` for every tensor of the optimizer's per-parameter state."""
    out = []
    for i, state in enumerate(optimizer.state.values()):
        for key, value in state.items():
            if torch.is_tensor(value):
                out.append((f"optimizer state {i} {key}", value))
    return out


def capture_rng_state() -> dict[str, Any]:
    """Every global generator's state, in tensors and plain values (``weights_only``-safe).

    ``numpy`` is ``np.random.get_state(legacy=False)`` with its key as a list of ints.
    """
    numpy_state = np.random.get_state(legacy=False)  # noqa: NPY002 - the global state is saved
    numpy_state["state"] = {"key": [int(v) for v in numpy_state["state"]["key"]],
                            "pos": int(numpy_state["state"]["pos"])}
    numpy_state["has_gauss"] = int(numpy_state["has_gauss"])
    numpy_state["gauss"] = float(numpy_state["gauss"])
    state = {
        "python": random.getstate(),
        "numpy": numpy_state,
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`capture_rng_state` captured (also the earlier format, whose
    ``numpy`` entry is the tuple of ``np.random.get_state()``)."""
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    if isinstance(numpy_state, Mapping):
        inner = numpy_state["state"]
        numpy_state = {**numpy_state, "state": {
            "key": np.asarray(inner["key"], dtype=np.uint32), "pos": int(inner["pos"])}}
    np.random.set_state(numpy_state)  # noqa: NPY002
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
        data = load_torch(path, legacy=LEGACY_GLOBALS, mmap=True)
    except CheckpointError:  # an unreadable or refused file is simply not a candidate
        return None
    value = data.get("global_iter") if isinstance(data, dict) else None
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


def load_checkpoint_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint (a loce checkpoint or a bare state dict) onto the CPU, safely.

    Raises:
        CheckpointError: no such file, an unreadable one, one that is not a dict, or one
            holding a Python object other than tensors and plain values (named; nothing of the
            file is run).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    data = load_torch(path, legacy=LEGACY_GLOBALS)
    if not isinstance(data, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(data).__name__}, expected a dict")
    return data


# ---------------------------------------------------------------------- trained models


def load_trained_model(checkpoint: str | os.PathLike, overrides: Sequence[str] = (),
                       config: str | None = None):
    """A trained model for inference, from a checkpoint written by ``loce train``.

    A model built from class statistics (NorCal, FRACAL, EQL, ...) takes those stored in the
    checkpoint (:func:`model_class_statistics`), so no training annotations are needed.

    Args:
        checkpoint: the checkpoint file.
        overrides: ``key=value`` changes to the config (e.g. ``model.test.norcal_gamma=0.5``).
        config: a config name or YAML file to use instead of the one stored in the checkpoint.

    Returns:
        ``(model, cfg, state)``: the model with the checkpoint's weights in eval mode on the
        CPU, its config, and the checkpoint's contents (``category_ids``, ...).

    Raises:
        CheckpointError: a checkpoint without a stored config (and no ``config``), without
            its category table, with malformed class statistics, or whose weights do not fit.
        ConfigError: class statistics that are needed, neither stored nor readable from
            ``data.train_ann``.
    """
    from loce.build import build_model
    from loce.config import config_from_dict, load_config

    state = load_checkpoint_file(checkpoint)
    if config is not None:
        cfg = load_config(config, overrides)
    elif "config" in state:
        cfg = config_from_dict(state["config"], f"{checkpoint} (stored config)", overrides)
    else:
        raise CheckpointError(f"{checkpoint} stores no config; pass --config")
    _check_category_table(state, str(checkpoint))
    class_stats = model_class_statistics(state, cfg, str(checkpoint), overrides)
    model = build_model(cfg, num_classes=len(state["category_ids"]), load_backbone=False,
                        class_stats=class_stats)
    load_model_weights(model, state, str(checkpoint))
    return model.eval(), cfg, state


def stored_class_statistics(state: Mapping[str, Any], source: str):
    """The class statistics a checkpoint stores (:data:`CLASS_STATISTICS`), or None.

    Raises:
        CheckpointError: an entry that is malformed or has not one value per category of
            ``category_ids``.
    """
    from loce.data.statistics import ClassStatistics

    data = state.get(CLASS_STATISTICS)
    if data is None:
        return None
    try:
        stats = ClassStatistics.from_dict(data, f"{source}: {CLASS_STATISTICS}")
    except ValueError as err:
        raise CheckpointError(f"{err}; was it written by `loce train`? Pass the training "
                              "annotations instead with --set data.train_ann=FILE") from None
    ids = state.get("category_ids")
    if isinstance(ids, list | tuple) and stats.num_classes != len(ids):
        raise CheckpointError(
            f"{source}: {CLASS_STATISTICS} counts {stats.num_classes} classes but category_ids "
            f"lists {len(ids)}; pass the training annotations instead with "
            "--set data.train_ann=FILE"
        )
    return stats


def model_class_statistics(state: Mapping[str, Any], cfg, source: str,
                           overrides: Sequence[str] = ()):
    """The class statistics to build the model of ``cfg`` with, for inference; None when it
    needs none.

    Those stored in the checkpoint, unless ``overrides`` set ``data.train_ann`` (then that
    file's) or they lack what ``cfg`` needs (fractal dimensions for FRACAL); otherwise, as
    for checkpoints of earlier versions and converted ones, those of ``data.train_ann``.

    Raises:
        CheckpointError: a malformed stored entry.
        ConfigError: none stored and ``data.train_ann`` unreadable: one line naming the
            checkpoint and ``--set data.train_ann=...``.
    """
    from loce.build import needs_class_statistics, training_class_statistics

    if not needs_class_statistics(cfg):
        return None
    if _sets_train_ann(overrides):
        return training_class_statistics(cfg)
    stats = stored_class_statistics(state, source)
    if stats is not None and (cfg.model.test.fracal_lambda is None
                              or stats.fractal_dims is not None):
        return stats
    lacking = (f"{source} stores them without fractal dimensions" if stats is not None
               else _why_none_stored(state, source))
    return training_class_statistics(cfg, lacking=lacking)


def evaluation_categories(state: Mapping[str, Any], cfg, source: str,
                          overrides: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The training categories with the frequency groups (``{"id", "frequency"}`` per label)
    that evaluating a validation file without LVIS's ``frequency`` fields takes
    (:func:`loce.build.evaluation_ground_truth`).

    The groups stored in the checkpoint (``frequencies`` of :data:`CLASS_STATISTICS`: those
    the run used), unless ``overrides`` set ``data.train_ann`` (then that file's); otherwise,
    as for checkpoints of earlier versions and converted ones, those of ``data.train_ann``.

    Raises:
        CheckpointError: a malformed stored entry.
        ConfigError: no groups stored and ``data.train_ann`` unreadable: one line naming the
            checkpoint and ``--set data.train_ann=...``.
    """
    from loce.build import training_categories

    if _sets_train_ann(overrides):
        return training_categories(cfg)
    stats = stored_class_statistics(state, source)
    if stats is not None and stats.frequencies is not None:
        return [{"id": int(c), "frequency": f}
                for c, f in zip(state["category_ids"], stats.frequencies, strict=True)]
    lacking = (f"{source} stores class statistics without them (written by an earlier "
               "version of loce)" if stats is not None else _why_none_stored(state, source))
    return training_categories(cfg, lacking=lacking)


def _sets_train_ann(overrides: Sequence[str]) -> bool:
    """Whether the ``key=value`` overrides set ``data.train_ann``."""
    return any(item.partition("=")[0].strip() == "data.train_ann" for item in overrides)


def _why_none_stored(state: Mapping[str, Any], source: str) -> str:
    """Why a checkpoint has no :data:`CLASS_STATISTICS`, for messages."""
    if "converted_from" in state:
        return (f"{source} stores none (converted by `loce convert`, which has no training "
                "annotations)")
    return f"{source} stores none (written by an earlier version of loce)"


def _check_category_table(state: Mapping[str, Any], source: str) -> None:
    """A checkpoint's ``category_ids`` (unique ints) and ``category_names`` (strs, or absent)."""
    ids = state.get("category_ids")
    if ids is None:
        raise CheckpointError(f"{source} stores no category table (category_ids); "
                              "was it written by `loce train`?")
    if not isinstance(ids, list | tuple) or not ids or not all(
            isinstance(c, int) and not isinstance(c, bool) for c in ids) \
            or len(set(ids)) != len(ids):
        raise CheckpointError(f"{source}: category_ids must be a non-empty list of distinct "
                              f"integer ids, found {str(ids)[:60]}; was it written by `loce train`?")
    names = state.get("category_names")
    if names is not None and (not isinstance(names, list | tuple) or len(names) != len(ids)
                              or not all(isinstance(n, str) for n in names)):
        raise CheckpointError(f"{source}: category_names must list {len(ids)} strings, one per "
                              f"category id, found {str(names)[:60]}")


def check_category_table(dataset, category_ids: Sequence[int], source: str) -> None:
    """Refuse a dataset whose categories are not the checkpoint's (same ids, same order).

    Raises:
        CheckpointError: naming ``source`` (the annotation file) and both counts.
    """
    if list(dataset.cat_ids) != [int(c) for c in category_ids]:
        raise CheckpointError(
            f"{source} has {len(dataset.cat_ids)} categories but the checkpoint was "
            f"trained on {len(category_ids)} (or in another order); use annotations with "
            "the checkpoint's category set"
        )
