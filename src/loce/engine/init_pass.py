"""LOCE's initialisation pass (docs/method.md §5): fill the feature memory, warm up the scores.

Before the first stage-2 step every process runs the *training* forward of the model, without
gradients and without optimizer steps, over a class-balanced image list: for each category (in
order of first appearance) ``images_per_class`` of its images, strided over the ranks
(:func:`loce.data.samplers.class_balanced_image_list`). Each image gives 16 jittered boxes per
instance, so 5 images fill a queue of 80. The images go through the training pipeline
(multi-scale resize, flip), seeded per item like training epochs, and the RoI heads run their
full LOCE step: memory push, memory draw and the mean-score update (all-gathered across ranks,
which is why every rank gets the same number of batches).

Mode. The original calls its training forward with the model in ``eval()`` mode. In
MMDetection that forward does not look at ``self.training``, so ``eval()`` only changed the
BatchNorm layers: they normalise with their running statistics and do not update them. Here
torchvision's RPN and RoI heads select the training branch (proposal counts, RoI sampling,
losses) by ``self.training``, so the pass puts the model in ``train()`` mode and every
BatchNorm layer in ``eval()`` mode, which reproduces what the original computes:

* with the LVIS configs (``FrozenStatsBatchNorm2d``/``FrozenBatchNorm2d``) there is no
  difference, those layers always use their stored statistics;
* with ``model.parity.backbone_norm: batch`` (the synthetic presets) the running statistics
  are used and left untouched, so the pass changes nothing but the memory and the scores, and
  the stored features are those the frozen network computes during the fine-tune (where
  :func:`loce.engine.freeze.configure_trainable` keeps frozen BatchNorm layers in the same mode).

Every module's mode is restored afterwards.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

logger = logging.getLogger(__name__)

__all__ = ["INIT_PASS_EPOCH", "InitPassResult", "init_pass_batches", "run_init_pass"]

# The "epoch" that seeds the pass's per-item augmentation (training epochs are 0, 1, ...).
INIT_PASS_EPOCH = -1


@dataclass
class InitPassResult:
    """Summary of one process's initialisation pass.

    Attributes:
        images: images this process forwarded.
        iterations: batches this process forwarded.
        classes_filled: foreground classes with at least one stored feature.
        classes_full: classes whose queue holds ``capacity`` features.
        num_classes: ``K``.
        seconds: wall time of the pass.
    """

    images: int
    iterations: int
    classes_filled: int
    classes_full: int
    num_classes: int
    seconds: float


def init_pass_batches(
    image_labels: list[list[int]],
    images_per_class: int,
    images_per_batch: int,
    rank: int,
    world_size: int,
) -> list[list[int]]:
    """This rank's batches of dataset indices, in order (every rank gets as many).

    Args:
        image_labels: per dataset item, the labels it contains.
        images_per_class: images per category per rank.
        images_per_batch: images per forward pass.
        rank, world_size: this process and the number of processes.
    """
    from loce.data.samplers import class_balanced_image_list

    order = class_balanced_image_list(image_labels, images_per_class, rank, world_size)
    return [order[i : i + images_per_batch] for i in range(0, len(order), images_per_batch)]


def run_init_pass(model: nn.Module, cfg, dataset, device: torch.device | str) -> InitPassResult:
    """Forward the class-balanced images through the training step, without gradients.

    Args:
        model: the (unwrapped) Mask R-CNN with :class:`~loce.models.loce_heads.LoceRoIHeads`,
            on ``device``.
        cfg: the run's :class:`~loce.config.Config` (``loce``, ``data``, ``train.seed``,
            ``solver.amp``).
        dataset: the training dataset (with its training transforms and ``image_labels``).
        device: where the model runs.

    Returns:
        This process's :class:`InitPassResult` (rank 0 also prints a one-line summary).
    """
    from tqdm.auto import tqdm

    from loce import build
    from loce.data.seeding import seeded_loader
    from loce.engine import distributed as dist_utils
    from loce.engine.device import autocast, to_device
    from loce.logs import progress_bars
    from loce.models.loce_heads import LoceRoIHeads

    heads = getattr(model, "roi_heads", None)
    if not isinstance(heads, LoceRoIHeads):
        raise TypeError(
            "the initialisation pass needs a model built with loce.enabled=true "
            f"(LoceRoIHeads), got roi_heads of type {type(heads).__name__}"
        )
    device = torch.device(device)
    rank, world = dist_utils.get_rank(), dist_utils.get_world_size()
    batches = init_pass_batches(dataset.image_labels, cfg.loce.images_per_class,
                                cfg.data.images_per_gpu, rank, world)
    # the loader's private generator must not consume the global one
    loader = seeded_loader(dataset, batches, seed=cfg.train.seed, epoch=INIT_PASS_EPOCH,
                           workers=build.data_workers(cfg), generator_seed=cfg.train.seed,
                           pin_memory=device.type == "cuda")

    modes = [(m, m.training) for m in model.modules()]
    train_masks = heads.train_masks
    heads.train_masks = False  # the pass reads the box branch only
    model.train()
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            m.eval()
    start = time.perf_counter()
    images_seen = 0
    try:
        with torch.no_grad():
            bar = tqdm(loader, total=len(batches), desc="LOCE init pass",
                       disable=rank != 0 or not progress_bars(),
                       dynamic_ncols=True, leave=False, mininterval=1.0)
            for images, targets in bar:
                images, targets = to_device(images, targets, device)
                with autocast(device, cfg.solver.amp):
                    model(images, targets)
                images_seen += len(images)
            bar.close()
    finally:
        heads.train_masks = train_masks
        for m, mode in modes:
            m.training = mode
    seconds = time.perf_counter() - start

    memory = heads.feature_memory
    filled = int((memory.count > 0).sum()) if memory is not None else 0
    full = int((memory.count == memory.capacity).sum()) if memory is not None else 0
    result = InitPassResult(images_seen, len(batches), filled, full, heads.num_classes, seconds)
    if rank == 0:
        logger.info("LOCE init pass: %d images in %d batches per process (%.1f s); memory: "
                    "%d/%d classes full, %d non-empty", images_seen, len(batches), seconds, full,
                    heads.num_classes, filled)
    return result
