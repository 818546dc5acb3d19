"""The training-time lifecycle of LOCE's state outside the network's weights.

Before the first step the initialisation pass fills the feature memory (docs/method.md §5).
At every checkpoint each rank writes its own memory next to the checkpoint (it is not
synchronised across ranks, docs/method.md §4), and a resume reads it back; the mean scores
need none of this, they are a buffer of the model's state dict. For logging, the mean scores per
frequency group. A model without LOCE's heads passes through every function unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from loce.config import Config
from loce.engine import distributed as dist_utils
from loce.engine.init_pass import run_init_pass
from loce.errors import CheckpointError
from loce.fileio import atomic_write_json, ensure_directory, load_torch, save_torch_atomic
from loce.models.loce_heads import LoceRoIHeads

logger = logging.getLogger(__name__)

__all__ = [
    "before_training",
    "load_rank_state",
    "method_scalars",
    "prune_rank_state",
    "save_rank_state",
]


def _memory_file(name: str, rank: int) -> str:
    return f"{name}.memory.rank{rank}.pth"


def _loce_heads(model: nn.Module):
    heads = getattr(model, "roi_heads", None)
    return heads if isinstance(heads, LoceRoIHeads) else None


def before_training(model: nn.Module, cfg: Config, dataset, device: torch.device, *,
                    resumed: bool) -> None:
    """Work done once before the first step: LOCE's initialisation pass (docs/method.md §5).

    Skipped when ``loce.enabled`` or ``loce.init_pass`` is off, and on a resumed run whose
    state was restored (the scores come with the model's state dict, the memory from the
    per-rank files of :func:`save_rank_state`). A resumed run without a saved memory runs the
    pass to refill the memory and keeps the restored scores.
    """
    if not cfg.loce.enabled:
        return
    heads = _loce_heads(model)
    if heads is None:
        raise TypeError("loce.enabled=true needs a model built with it (LoceRoIHeads), got roi_heads "
                        f"of type {type(getattr(model, 'roi_heads', None)).__name__}")
    main = dist_utils.get_rank() == 0
    if resumed and (not heads.use_feature_memory or heads.memory_restored):
        if main:
            logger.info("LOCE: mean scores and feature memory restored; initialisation pass skipped")
        return
    if not cfg.loce.init_pass:
        return
    if not resumed:
        run_init_pass(model, cfg, dataset, device)
        if main:
            _write_scores(heads, cfg, "mean_scores_init.json")
        return
    if main:
        logger.info("LOCE: no saved feature memory for this checkpoint; re-running the "
              "initialisation pass to refill it (the restored mean scores are kept)")
    scores = heads.score_tracker.scores.clone()
    run_init_pass(model, cfg, dataset, device)
    heads.score_tracker.scores.copy_(scores)


def method_scalars(model: nn.Module, groups: Mapping[str, Sequence[int]]) -> dict[str, float]:
    """Scalars a method tracks during training, for logging (empty for plain Mask R-CNN).

    LOCE: the mean classification score of the rare, common and frequent classes
    (``loce/mean_score_r`` ...; averages of the per-class mean scores of each group).

    Args:
        model: the (unwrapped) model.
        groups: :func:`frequency_groups` of the training set.
    """
    heads = _loce_heads(model)
    if heads is None:
        return {}
    scores = heads.score_tracker.scores.detach().float().cpu()
    return {f"loce/mean_score_{g}": float(scores[list(labels)].mean())
            for g, labels in groups.items() if labels}


def _write_scores(heads, cfg: Config, name: str) -> None:
    """Save the mean scores (labels 0..K, background first) as JSON in the run directory."""
    atomic_write_json(Path(cfg.train.output_dir) / name,
                      {"scores": heads.score_tracker.scores.tolist()}, what="mean scores",
                      indent=None)


def save_rank_state(model: nn.Module, cfg: Config, ckpt_dir, name: str, rank: int) -> None:
    """Write this rank's unsynchronised state next to checkpoint ``name`` (every rank calls).

    LOCE with ``loce.save_memory``: the feature memory (per process, docs/method.md §4) goes to
    ``<ckpt_dir>/<name>.memory.rank<R>.pth``, written atomically and durably. Nothing is
    deleted here: the training loop moves ``last_checkpoint`` to ``name`` afterwards and only
    then calls :func:`prune_rank_state`, so the checkpoint the pointer names always has its
    memory, whenever the run is killed.
    """
    if not (cfg.loce.enabled and cfg.loce.save_memory):
        return
    heads = _loce_heads(model)
    memory = heads.feature_memory if heads is not None else None
    if memory is None:
        return
    ckpt_dir = ensure_directory(Path(ckpt_dir), what="checkpoint folder")
    save_torch_atomic({"feature_memory": memory.get_extra_state(), "rank": rank,
                       "checkpoint": name}, ckpt_dir / _memory_file(name, rank),
                      what="feature memory")


def prune_rank_state(cfg: Config, ckpt_dir, name: str, rank: int) -> None:
    """Delete this rank's per-rank files of checkpoints other than ``name`` (every rank calls,
    after ``last_checkpoint`` names ``name``): a resume only reads the newest, and at LVIS
    scale each memory file is 2.4 GB in float16."""
    if not cfg.loce.enabled:
        return
    keep = _memory_file(name, rank)
    for old in Path(ckpt_dir).glob(_memory_file("*", rank)):
        if old.name != keep:
            old.unlink(missing_ok=True)


def load_rank_state(model: nn.Module, cfg: Config, ckpt_dir, name: str, rank: int) -> None:
    """Read what :func:`save_rank_state` wrote for checkpoint ``name`` (every rank calls).

    A missing memory file is not an error: the run then refills the memory with the
    initialisation pass (see :func:`before_training`).

    Raises:
        CheckpointError: a memory file that cannot be read or does not fit the model.
    """
    heads = _loce_heads(model) if cfg.loce.enabled else None
    if heads is None:
        return
    heads.memory_restored = False
    if not (heads.use_feature_memory and cfg.loce.save_memory):
        return
    path = Path(ckpt_dir) / _memory_file(name, rank)
    if not path.is_file():
        logger.warning("LOCE: rank %d finds no saved feature memory %s", rank, path)
        return
    data = load_torch(path, what="feature memory")
    state = data.get("feature_memory") if isinstance(data, dict) else None
    if state is None:
        raise CheckpointError(f"cannot read the feature memory {path}: it holds no "
                              "'feature_memory' entry; delete it to refill the memory")
    try:
        device = next(model.parameters()).device
        heads.memory_for(device).set_extra_state(state)
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from None
    heads.memory_restored = True
