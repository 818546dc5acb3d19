"""The training-time lifecycle of LOCE's state outside the network's weights.

Before the first step the initialisation pass fills the feature memory (docs/method.md §5).
At every checkpoint each rank writes its own memory next to the checkpoint (it is not
synchronised across ranks, docs/method.md §4), and a resume reads it back; the mean scores
need none of this, they are a buffer of the model's state dict. For logging, the mean scores per
frequency group. A model without LOCE's heads passes through every function unchanged.

Each rank draws its box jitter and its memory classes and slots from its own
``torch.Generator``, seeded from ``(train.seed, rank)`` (:func:`seed_rank_draws`), so that
``W`` ranks draw ``W`` independent sets of classes per step; its state goes into the
checkpoint's per-rank random state (:func:`draws_state`, :func:`restore_draws_state`).

The classification loss's own draws (federated's negative classes, Gumbel's drops) come from
its :class:`~loce.losses.RankGenerator`, seeded with ``seed + rank``; its states go into the
same per-rank entry (:func:`loss_draws_state`, :func:`restore_loss_draws_state`), so a resumed
run continues those streams too.

A resume decides together: the ranks exchange whether they found their memory file, and when
one did not, every rank refills its memory with the initialisation pass (a collective pass:
one rank alone would leave the others waiting in their collectives); a memory file that cannot
be read stops every rank with the same error.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from loce.config import Config
from loce.engine import distributed as dist_utils
from loce.engine.init_pass import run_init_pass
from loce.errors import CheckpointError
from loce.fileio import atomic_write_json, ensure_directory, load_torch, save_torch_atomic
from loce.losses import ClassificationLoss, RankGenerator
from loce.models.loce_heads import LoceRoIHeads

logger = logging.getLogger(__name__)

__all__ = [
    "DRAWS_KEY",
    "LOSS_DRAWS_KEY",
    "before_training",
    "draws_seed",
    "draws_state",
    "load_rank_state",
    "loss_draws_state",
    "method_scalars",
    "prune_rank_state",
    "restore_draws_state",
    "restore_loss_draws_state",
    "save_rank_state",
    "seed_rank_draws",
]

# Key of the draws generator's state in each rank's entry of a checkpoint's ``rng`` list.
DRAWS_KEY = "loce_draws"
# Key of the classification loss's draws generators (a {device: state} dict) in the same entry.
LOSS_DRAWS_KEY = "loss_draws"
# Mixed into the seed so that the draws' stream is not the stream of any other generator
# seeded from train.seed alone ("LOCE" in ASCII).
_DRAWS_TAG = 0x4C4F4345


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
    per-rank files of :func:`save_rank_state`). A resumed run where any rank lacks its saved
    memory (:func:`load_rank_state` decides on every rank alike) runs the pass on every rank,
    each from an empty memory; it keeps the restored scores, the restored draws generator and
    torch's restored global random state, so that the steps after it draw what the
    checkpoint's random state says.
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
                    "initialisation pass on every rank to refill the memories (the restored "
                    "mean scores are kept)")
    if heads.feature_memory is not None:
        heads.feature_memory.reset()  # a rank that found its file starts over with the others
    scores = heads.score_tracker.scores.clone()
    draws = heads.generator.get_state() if heads.generator is not None else None
    device = torch.device(device)
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        run_init_pass(model, cfg, dataset, device)
    heads.score_tracker.scores.copy_(scores)
    if draws is not None:
        heads.generator.set_state(draws)


def draws_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s generator for LOCE's draws, a function of ``(seed, rank)``.

    Mixed by NumPy's ``SeedSequence``: neighbouring seeds and ranks give unrelated streams.
    Returns a non-negative int below ``2**63`` (what ``torch.Generator.manual_seed`` takes).
    """
    entropy = [int(seed) & (2**64 - 1), int(rank), _DRAWS_TAG]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> np.uint64(1))


def seed_rank_draws(model: nn.Module, seed: int, rank: int,
                    device: torch.device | str) -> torch.Generator | None:
    """Give LOCE's heads this rank's generator for the box jitter and the memory draws.

    The generator lives where the draws happen: on the feature memory's device (so that a
    memory on the GPU draws without a copy to the host), on the CPU without a memory. Call
    once, after the model is built and before any draw (the initialisation pass included).

    Args:
        model: the (unwrapped) model; without LOCE's heads nothing happens.
        seed: the run's ``train.seed``.
        rank: this process's rank.
        device: the device the model computes on (where a ``loce.memory_device: model``
            memory lives; the memory is allocated here if it is not yet).

    Returns:
        The generator, seeded with :func:`draws_seed` ``(seed, rank)``, or None.
    """
    heads = _loce_heads(model)
    if heads is None:
        return None
    where = heads.memory_for(device).device if heads.use_feature_memory else torch.device("cpu")
    generator = torch.Generator(device=where)
    generator.manual_seed(draws_seed(seed, rank))
    heads.generator = generator
    return generator


def draws_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{DRAWS_KEY: state}`` for this rank's entry of a checkpoint's random state.

    The state is the generator's own: a uint8 CPU tensor (whatever the generator's device), so
    the checkpoint holds tensors only. Empty without LOCE's heads or their generator.
    """
    heads = _loce_heads(model)
    if heads is None or heads.generator is None:
        return {}
    return {DRAWS_KEY: heads.generator.get_state()}


def restore_draws_state(model: nn.Module, saved: Mapping[str, Any], source: str) -> bool:
    """Put back the draws generator's state from this rank's entry of ``rng``.

    A checkpoint without it (written before the draws had their own generator) or one whose
    state belongs to another kind of generator (written on a CUDA memory, resumed on the CPU)
    keeps the freshly seeded generator, with a warning: the run goes on, but not exactly as the
    one that wrote the checkpoint.

    Returns:
        Whether the state was restored.

    Raises:
        CheckpointError: a state that is not a uint8 tensor.
    """
    heads = _loce_heads(model)
    if heads is None or heads.generator is None:
        return False
    state = saved.get(DRAWS_KEY) if isinstance(saved, Mapping) else None
    if state is None:
        logger.warning("LOCE: %s holds no state for the memory draws (an older checkpoint); "
                       "they continue from a fresh seed, so the resumed run is not exact", source)
        return False
    if not torch.is_tensor(state) or state.dtype != torch.uint8 or state.dim() != 1:
        raise CheckpointError(f"{source}: rng {DRAWS_KEY!r} must be a 1-D uint8 tensor, found "
                              f"{type(state).__name__}; delete last_checkpoint to start over")
    expected = heads.generator.get_state().numel()
    if state.numel() != expected:
        logger.warning("LOCE: %s holds the memory draws' state of another kind of generator "
                       "(%d bytes, this %s generator has %d); they continue from a fresh "
                       "seed, so the resumed run is not exact", source, state.numel(),
                       heads.generator.device.type, expected)
        return False
    heads.generator.set_state(state.cpu())
    return True


def _loss_draws(model: nn.Module) -> tuple[str, RankGenerator] | None:
    """The classification loss's name and generators, or None for a loss that draws nothing."""
    loss = getattr(getattr(model, "roi_heads", None), "cls_loss", None)
    if not isinstance(loss, ClassificationLoss) or loss.draws is None:
        return None
    return type(loss).__name__, loss.draws


def loss_draws_state(model: nn.Module) -> dict[str, dict[str, torch.Tensor]]:
    """``{LOSS_DRAWS_KEY: {device: state}}`` for this rank's entry of a checkpoint's random
    state: the classification loss's generators (:meth:`RankGenerator.get_state`, uint8 CPU
    tensors). Empty for a loss that draws nothing."""
    found = _loss_draws(model)
    return {} if found is None else {LOSS_DRAWS_KEY: found[1].get_state()}


def restore_loss_draws_state(model: nn.Module, saved: Mapping[str, Any], source: str) -> bool:
    """Give the classification loss's generators their states from this rank's entry of
    ``rng``; each continues from it at its next draw.

    A checkpoint without them (written before they were saved), or one whose state belongs to
    a generator this process cannot have (a CUDA one resumed without CUDA), keeps the freshly
    seeded generators, with a warning: the run goes on, but not exactly as the one that wrote
    the checkpoint.

    Returns:
        Whether the states were taken.

    Raises:
        CheckpointError: an entry that is not a mapping of device names to 1-D uint8 tensors.
    """
    found = _loss_draws(model)
    if found is None:
        return False
    name, draws = found
    state = saved.get(LOSS_DRAWS_KEY) if isinstance(saved, Mapping) else None
    if state is None:
        logger.warning("%s holds no state for the random draws of %s (an older checkpoint); "
                       "they continue from a fresh seed, so the resumed run is not exact",
                       source, name)
        return False
    try:
        draws.set_state(state)
    except TypeError as err:
        raise CheckpointError(f"{source}: rng {LOSS_DRAWS_KEY!r}: {err}; delete "
                              "last_checkpoint to start over") from None
    except ValueError as err:
        logger.warning("%s: the random draws of %s continue from a fresh seed, so the resumed "
                       "run is not exact: %s", source, name, err)
        return False
    return True


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

    Collective: the ranks exchange what they found, so they all decide alike.

    * Every rank found its memory file: ``memory_restored`` is set on every rank.
    * Some rank did not: ``memory_restored`` stays False on every rank, and
      :func:`before_training` then refills every rank's memory with the initialisation pass,
      all ranks together (rank 0 names the ranks without a file).
    * Some rank's file cannot be read or does not fit: every rank raises the same error.

    Raises:
        CheckpointError: a memory file that cannot be read or does not fit the model (on
            every rank; with several processes the message names the rank whose file it is).
    """
    heads = _loce_heads(model) if cfg.loce.enabled else None
    if heads is None:
        return
    heads.memory_restored = False
    if not (heads.use_feature_memory and cfg.loce.save_memory):
        return
    path = Path(ckpt_dir) / _memory_file(name, rank)
    found, problem = path.is_file(), None
    if found:
        try:
            _read_memory(heads, model, path)
        except CheckpointError as err:
            problem = str(err)
    outcomes = dist_utils.all_gather_object((found, problem))
    several = len(outcomes) > 1
    errors = [f"rank {r}: {p}" if several else p for r, (_, p) in enumerate(outcomes) if p]
    if errors:
        raise CheckpointError("; ".join(errors))
    missing = [r for r, (ok, _) in enumerate(outcomes) if not ok]
    if missing:
        if rank == 0:
            logger.warning("LOCE: no saved feature memory %s for rank(s) %s",
                           Path(ckpt_dir) / _memory_file(name, missing[0]),
                           ", ".join(map(str, missing)))
        return
    heads.memory_restored = True


def _read_memory(heads: LoceRoIHeads, model: nn.Module, path: Path) -> None:
    """Load one memory file into the heads' memory (allocated on the model's device)."""
    data = load_torch(path, what="feature memory")  # CheckpointError in one line
    state = data.get("feature_memory") if isinstance(data, dict) else None
    if state is None:
        raise CheckpointError(f"cannot read the feature memory {path}: it holds no "
                              "'feature_memory' entry; delete it to refill the memory")
    try:
        device = next(model.parameters()).device
        heads.memory_for(device).set_extra_state(state)
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from None
