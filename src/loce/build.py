"""The one place that turns a config into objects: datasets, loaders, the model.

Everything else receives built objects. Functions here are small so that a method (e.g. the
LOCE fine-tune) changes what is built by configuration, never by editing the training loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from loce.config import Config

__all__ = [
    "after_resume",
    "before_training",
    "build_model",
    "build_train_dataset",
    "build_train_transforms",
    "build_test_transforms",
    "build_val_dataset",
    "configure_trainable",
    "epoch_batches",
    "has_unused_parameters",
    "load_initial_weights",
    "load_rank_state",
    "save_rank_state",
    "train_loader",
]


# --------------------------------------------------------------------------------------------
# data


def build_train_transforms(cfg: Config):
    from loce.data.transforms import Compose, RandomHorizontalFlip, RandomShortSideResize

    steps = [RandomShortSideResize(cfg.data.train_scales, cfg.data.max_size)]
    if cfg.data.flip_prob > 0:
        steps.append(RandomHorizontalFlip(cfg.data.flip_prob))
    return Compose(steps)


def build_test_transforms(cfg: Config):
    from loce.data.transforms import Resize

    return Resize(cfg.data.test_scale, cfg.data.test_max_size)


def build_train_dataset(cfg: Config):
    """The training set: images with at least one usable annotation, augmented."""
    from loce.data.lvis import LVISDataset

    return LVISDataset(cfg.data.train_ann, cfg.data.train_images, train=True,
                       transforms=build_train_transforms(cfg))


def build_val_dataset(cfg: Config):
    """The evaluation set: every image, single-scale test resize."""
    from loce.data.lvis import LVISDataset

    return LVISDataset(cfg.data.val_ann, cfg.data.val_images, train=False,
                       transforms=build_test_transforms(cfg))


def _train_sampler(cfg: Config, dataset, rank: int, world: int):
    from loce.data.samplers import RandomSampler, RepeatFactorSampler

    if cfg.data.sampler == "repeat_factor":
        return RepeatFactorSampler(dataset.image_labels, cfg.data.repeat_threshold,
                                   seed=cfg.train.seed, rank=rank, world_size=world)
    return RandomSampler(len(dataset), seed=cfg.train.seed, rank=rank, world_size=world)


def epoch_batches(cfg: Config, dataset, epoch: int, rank: int, world: int) -> list[list[int]]:
    """This rank's batches of dataset indices for ``epoch``: a function of (seed, epoch) only.

    Every rank gets the same number of batches; ``train.max_iters_per_epoch`` truncates.
    """
    from loce.data.samplers import GroupedBatchSampler, aspect_ratio_group_ids

    sampler = _train_sampler(cfg, dataset, rank, world)
    sampler.set_epoch(epoch)
    bs = cfg.data.images_per_gpu
    if cfg.data.aspect_ratio_grouping:
        batch_sampler = GroupedBatchSampler(sampler, aspect_ratio_group_ids(dataset.image_sizes), bs)
        batch_sampler.set_epoch(epoch)
        batches = [list(b) for b in batch_sampler]
    else:
        order = list(sampler)
        batches = [order[i:i + bs] for i in range(0, len(order), bs)]
    if cfg.train.max_iters_per_epoch is not None:
        batches = batches[: cfg.train.max_iters_per_epoch]
    return batches


class EpochSeededDataset:
    """Makes item ``i``'s random augmentation a function of (seed, epoch, i).

    The transforms draw from torch's global generator; each item is produced under a forked
    generator seeded from (seed, epoch, i), so the result does not depend on which worker
    loads it or on what ran before — the property exact resume relies on.
    """

    def __init__(self, dataset, seed: int, epoch: int) -> None:
        self.dataset = dataset
        self.seed = int(seed)
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def item_seed(self, i: int) -> int:
        return ((self.seed * 1_000_003 + self.epoch) * 10_000_019 + int(i)) % (2**63 - 1)

    def __getitem__(self, i: int):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.item_seed(i))
            return self.dataset[i]


def train_loader(cfg: Config, dataset, batches: list[list[int]], epoch: int):
    """A DataLoader over precomputed ``batches`` with per-item seeded augmentation."""
    from loce.data.samplers import collate_fn

    # A private generator: creating the loader must not consume the global RNG, or a resumed
    # run (which creates it mid-epoch) would diverge from an uninterrupted one.
    gen = torch.Generator().manual_seed(cfg.train.seed * 7919 + epoch)
    return torch.utils.data.DataLoader(
        EpochSeededDataset(dataset, cfg.train.seed, epoch),
        batch_sampler=batches,
        num_workers=cfg.data.workers,
        collate_fn=collate_fn,
        generator=gen,
        persistent_workers=False,
    )


# --------------------------------------------------------------------------------------------
# model


def build_model(cfg: Config, num_classes: int, *, load_backbone: bool = True) -> nn.Module:
    """Mask R-CNN as configured, for ``num_classes`` foreground classes.

    Args:
        load_backbone: load ``model.backbone_weights``; False when a whole checkpoint is
            loaded next (inference, resuming, fine-tuning), which then needs no download.
    """
    from loce.models import build_mask_rcnn

    return build_mask_rcnn(cfg.model, num_classes, load_backbone=load_backbone)


def load_initial_weights(model: nn.Module, data: Mapping[str, Any], source: str) -> None:
    """Initialise from another run's checkpoint (e.g. stage 1 for a fine-tune)."""
    from loce.engine.checkpoint import load_model_weights

    load_model_weights(model, data, source, strict=True)


def configure_trainable(model: nn.Module, cfg: Config) -> None:
    """Freeze what the config asks (the model builder already froze the first ResNet stage)."""


def has_unused_parameters(cfg: Config) -> bool:
    """Whether DDP must look for parameters that receive no gradient in a step."""
    return False


def before_training(model: nn.Module, cfg: Config, dataset, device: torch.device, *,
                    resumed: bool) -> None:
    """Work done once before the first step (a method's initialisation pass goes here)."""


def after_resume(model: nn.Module, state: Mapping[str, Any]) -> None:
    """Restore state that lives outside the model's state dict after ``--resume``."""


def save_rank_state(model: nn.Module, cfg: Config, ckpt_dir, name: str, rank: int) -> None:
    """Write this rank's unsynchronised state next to checkpoint ``name`` (every rank calls)."""


def load_rank_state(model: nn.Module, cfg: Config, ckpt_dir, name: str, rank: int) -> None:
    """Read what :func:`save_rank_state` wrote for checkpoint ``name`` (every rank calls)."""
