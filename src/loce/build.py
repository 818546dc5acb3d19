"""The one place that turns a config into objects: datasets, loaders, the model.

Everything else receives built objects. Functions here are small so that a method (e.g. the
LOCE fine-tune) changes what is built by configuration, never by editing the training loop.

Class statistics. EQL, the federated loss, ECM, Gumbel (GOL) and NorCal are built from
per-class statistics of the *training* annotations (peer-method spec §10.3):
:func:`class_statistics` counts, from the annotations the training set actually uses, the
images containing each class, the instances of each class and the annotated images.
:func:`build_model` takes them from the training set that :func:`build_train_dataset` built in
this process for the same ``data.train_ann`` (the engine builds the dataset first), or reads
``data.train_ann`` itself (inference, e.g. ``loce predict --set model.test.norcal_gamma=0.5``).
"""

from __future__ import annotations

import logging
import os
import re
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from loce.config import Config

logger = logging.getLogger(__name__)

__all__ = [
    "after_resume",
    "before_training",
    "build_model",
    "build_train_dataset",
    "build_train_transforms",
    "build_test_decoder",
    "build_test_transforms",
    "build_val_dataset",
    "check_category_table",
    "class_statistics",
    "check_reinit_trainable",
    "configure_trainable",
    "epoch_batches",
    "frequency_groups",
    "method_scalars",
    "has_unused_parameters",
    "load_initial_weights",
    "load_trained_model",
    "load_rank_state",
    "prune_rank_state",
    "save_rank_state",
    "train_loader",
    "trainable_prefix_choices",
    "training_class_statistics",
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
    """The test-time resize of ``data.test_resize``: :class:`~loce.data.transforms.MMCVResize`
    ("mmcv", uint8 output) or :class:`~loce.data.transforms.Resize` ("torch"). Use it with
    the decoder of :func:`build_test_decoder`."""
    from loce.data.transforms import MMCVResize, Resize

    resize = MMCVResize if cfg.data.test_resize == "mmcv" else Resize
    return resize(cfg.data.test_scale, cfg.data.test_max_size)


def build_test_decoder(cfg: Config) -> str:
    """The image decoder of the test pipeline: "opencv" for ``data.test_resize: mmcv`` (as
    the original decodes), "pillow" for "torch"."""
    return "opencv" if cfg.data.test_resize == "mmcv" else "pillow"


# The training set built last in this process, by annotation file: build_model takes the class
# statistics from it instead of parsing the file again (1 GB for LVIS v1). A weak reference:
# the cache never keeps a dataset alive.
_LAST_TRAIN_SET: dict[str, Any] = {}


def _ann_key(path: str) -> str:
    return os.path.abspath(os.fspath(path))


def build_train_dataset(cfg: Config):
    """The training set: images with at least one usable annotation, augmented."""
    from loce.data.lvis import LVISDataset

    dataset = LVISDataset(cfg.data.train_ann, cfg.data.train_images, train=True,
                          transforms=build_train_transforms(cfg))
    _LAST_TRAIN_SET.clear()
    _LAST_TRAIN_SET[_ann_key(cfg.data.train_ann)] = weakref.ref(dataset)
    return dataset


def class_statistics(dataset):
    """Per-class statistics of a training set, from the annotations it uses.

    Counts what the model is trained on: the usable (non-crowd, non-empty) annotations of the
    dataset's images (an LVIS file's own ``image_count``/``instance_count`` fields, when
    present, count the same for LVIS, where nothing is dropped).

    Args:
        dataset: an :class:`~loce.data.lvis.LVISDataset` (``image_labels``,
            ``annotation_rows``, ``index.ann_labels``, ``num_classes``).

    Returns:
        :class:`loce.models.ClassStatistics`: ``image_counts[c - 1]`` images containing label
        ``c``, ``instance_counts[c - 1]`` its instances, ``num_images`` the images with at
        least one annotation.
    """
    import numpy as np

    from loce.models.mask_rcnn import ClassStatistics

    k = int(dataset.num_classes)
    per_image = dataset.image_labels
    flat = [label for labels in per_image for label in labels]
    image_counts = np.bincount(np.asarray(flat, dtype=np.int64), minlength=k + 1)[1:]
    rows = [dataset.annotation_rows(i) for i in range(len(dataset))]
    ann = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    labels = np.asarray(dataset.index.ann_labels)[ann]
    instance_counts = np.bincount(labels.astype(np.int64), minlength=k + 1)[1:]
    num_images = sum(1 for labels in per_image if len(labels))
    return ClassStatistics(
        image_counts=tuple(int(v) for v in image_counts),
        instance_counts=tuple(int(v) for v in instance_counts),
        num_images=max(num_images, 1),
        source=str(getattr(dataset.index, "source", "the training set")),
    )


def _needs_class_statistics(cfg: Config) -> bool:
    from loce.losses import needs_class_statistics

    return needs_class_statistics(cfg.model.roi.cls_loss) or cfg.model.test.norcal_gamma is not None


def training_class_statistics(cfg: Config):
    """The class statistics of ``data.train_ann`` (see :func:`class_statistics`).

    From the training set :func:`build_train_dataset` built in this process when it is still
    alive, otherwise by reading the annotation file (images are not needed).

    Raises:
        ConfigError: ``data.train_ann`` cannot be read or is not an annotation file.
    """
    from pathlib import Path

    from loce.data.lvis import LVISDataset, LVISIndex
    from loce.errors import ConfigError, DataError

    ref = _LAST_TRAIN_SET.get(_ann_key(cfg.data.train_ann))
    dataset = ref() if ref is not None else None
    if dataset is None:
        why = []
        if cfg.model.roi.cls_loss != "cross_entropy":
            why.append(f"model.roi.cls_loss={cfg.model.roi.cls_loss!r}")
        if cfg.model.test.norcal_gamma is not None:
            why.append(f"model.test.norcal_gamma={cfg.model.test.norcal_gamma}")
        # Same filtering as the training set; no image is opened (the root must only exist).
        root = Path(cfg.data.train_images)
        root = root if root.is_dir() else Path(cfg.data.train_ann).resolve().parent
        try:
            dataset = LVISDataset(LVISIndex.from_json(cfg.data.train_ann), root, train=True,
                                  with_masks=False)
        except DataError as err:
            raise ConfigError(
                f"{' and '.join(why) or 'this model'} needs per-class statistics of the "
                f"training annotations, but data.train_ann cannot be used: {err} Fix: set "
                "data.train_ann to the annotation file the model is (or was) trained on, e.g. "
                "--set data.train_ann=/path/to/lvis_v1_train.json"
            ) from None
    return class_statistics(dataset)


def build_val_dataset(cfg: Config):
    """The evaluation set: every image, single-scale test resize."""
    from loce.data.lvis import LVISDataset

    return LVISDataset(cfg.data.val_ann, cfg.data.val_images, train=False,
                       transforms=build_test_transforms(cfg), decoder=build_test_decoder(cfg))


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


def _check_method_choice(cfg: Config) -> None:
    """LOCE's fine-tune computes its own (equilibrium) loss from softmax scores."""
    from loce.errors import ConfigError

    name = cfg.model.roi.cls_loss
    if name == "equilibrium" and not (cfg.loce.enabled and cfg.loce.equilibrium_loss):
        raise ConfigError(
            "model.roi.cls_loss='equilibrium' is LOCE's loss, computed from the mean scores "
            "that the LOCE fine-tune tracks: set loce.enabled=true (with "
            "loce.equilibrium_loss=true), or choose another model.roi.cls_loss"
        )
    if cfg.loce.enabled and name not in ("cross_entropy", "equilibrium"):
        raise ConfigError(
            f"loce.enabled=true tracks softmax mean scores and replaces the classification "
            f"loss, so it cannot be combined with model.roi.cls_loss={name!r}; set "
            "model.roi.cls_loss=cross_entropy (or equilibrium), or loce.enabled=false"
        )


def build_model(cfg: Config, num_classes: int, *, load_backbone: bool = True,
                class_stats=None) -> nn.Module:
    """Mask R-CNN as configured, for ``num_classes`` foreground classes.

    With ``loce.enabled`` the RoI heads are :class:`~loce.models.loce_heads.EquilibriumRoIHeads`
    built around the same modules (same parameters and initial weights; the state dict gains
    ``roi_heads.score_tracker.scores``); otherwise the plain model, unchanged. The box
    classification loss is ``model.roi.cls_loss`` (its buffers are in the state dict under
    ``roi_heads.cls_loss.*``); losses built from class statistics and NorCal get them from
    ``class_stats`` or :func:`training_class_statistics`.

    Args:
        load_backbone: load ``model.backbone_weights``; False when a whole checkpoint is
            loaded next (inference, resuming, fine-tuning), which then needs no download.
        class_stats: :class:`loce.models.ClassStatistics` to use instead of those of
            ``data.train_ann``.

    Raises:
        ConfigError: a loss that cannot go with ``loce.enabled``, or class statistics that
            cannot be read.
    """
    from loce.models import build_mask_rcnn

    _check_method_choice(cfg)
    if class_stats is None and _needs_class_statistics(cfg):
        class_stats = training_class_statistics(cfg)
    model = build_mask_rcnn(cfg.model, num_classes, load_backbone=load_backbone,
                            class_stats=class_stats, seed=cfg.train.seed)
    if cfg.loce.enabled:
        from loce.models.loce_heads import EquilibriumRoIHeads

        loce = cfg.loce
        heads = model.roi_heads
        model.roi_heads = EquilibriumRoIHeads.from_roi_heads(
            heads,
            num_classes=num_classes,
            feature_shape=(model.backbone.out_channels, *heads.box_roi_pool.output_size),
            alpha=loce.alpha,
            bg_score=loce.bg_score,
            init_score=loce.init_score,
            use_equilibrium_loss=loce.equilibrium_loss,
            use_feature_memory=loce.feature_memory,
            memory_capacity=loce.memory_capacity,
            memory_dtype=loce.memory_dtype,
            memory_device=loce.memory_device,
            classes_per_step=loce.classes_per_step,
            features_per_class=loce.features_per_class,
        )
        # The wrapper is built anew: carry NorCal's inference setting over.
        model.roi_heads.norcal_gamma = heads.norcal_gamma
        model.roi_heads.norcal_log_counts = heads.norcal_log_counts
    return model


def load_trained_model(checkpoint: str | os.PathLike, overrides: Sequence[str] = (),
                       config: str | None = None):
    """A trained model for inference, from a checkpoint written by ``loce train``.

    Args:
        checkpoint: the checkpoint file.
        overrides: ``key=value`` changes to the config (e.g. ``model.test.norcal_gamma=0.5``).
        config: a config name or YAML file to use instead of the one stored in the checkpoint.

    Returns:
        ``(model, cfg, state)``: the model with the checkpoint's weights in eval mode on the
        CPU, its config, and the checkpoint's contents (``category_ids``, ...).

    Raises:
        CheckpointError: a checkpoint without a stored config (and no ``config``), without
            its category table, or whose weights do not fit.
    """
    from loce.config import config_from_dict, load_config
    from loce.engine.checkpoint import load_checkpoint_file, load_model_weights
    from loce.errors import CheckpointError

    state = load_checkpoint_file(checkpoint)
    if config is not None:
        cfg = load_config(config, overrides)
    elif "config" in state:
        cfg = config_from_dict(state["config"], f"{checkpoint} (stored config)", overrides)
    else:
        raise CheckpointError(f"{checkpoint} stores no config; pass --config")
    _check_category_table(state, str(checkpoint))
    model = build_model(cfg, num_classes=len(state["category_ids"]), load_backbone=False)
    load_model_weights(model, state, str(checkpoint))
    return model.eval(), cfg, state


def _check_category_table(state: Mapping[str, Any], source: str) -> None:
    """A checkpoint's ``category_ids`` (unique ints) and ``category_names`` (strs, or absent)."""
    from loce.errors import CheckpointError

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
    from loce.errors import CheckpointError

    if list(dataset.cat_ids) != [int(c) for c in category_ids]:
        raise CheckpointError(
            f"{source} has {len(dataset.cat_ids)} categories but the checkpoint was "
            f"trained on {len(category_ids)} (or in another order); use annotations with "
            "the checkpoint's category set"
        )


# State that belongs to the method, not to the network: a stage-1 checkpoint lacks it and a
# plain model has no place for it (spec c: stage 2 starts from the stage-1 weights). LOCE's
# mean scores and the buffers of the classification loss (EQLv2's gradient statistics,
# Seesaw's counts, the constants of EQL/federated/ECM/Gumbel).
_METHOD_STATE = re.compile(r"(^|\.)(score_tracker|cls_loss)\.")
# Buffers of a classification loss that training accumulates. With train.init_from they
# carry over from a checkpoint of the same method (as the originals' load_from does); every
# other loss buffer is a constant of this run's config and annotations and is kept.
_LOSS_STATE = re.compile(r"(^|\.)cls_loss\.")
_RUNNING_LOSS_STATE = re.compile(r"(^|\.)cls_loss\.(pos_grad|neg_grad|pos_neg|cum_samples)$")


def _model_state(data: Mapping[str, Any]) -> Mapping[str, Any]:
    for key in ("model", "state_dict"):
        if key in data and isinstance(data[key], Mapping):
            return data[key]
    return data


def load_initial_weights(model: nn.Module, data: Mapping[str, Any], source: str,
                         reinit: Sequence[str] = ()) -> None:
    """Initialise from another run's checkpoint (e.g. stage 1 for a fine-tune).

    Every key must match, except the method's state (``*.score_tracker.*``, LOCE's mean
    scores, and ``*.cls_loss.*``, the classification loss's buffers): a stage-1 checkpoint
    loads into a LOCE, EQLv2 or Seesaw model (whose state keeps its initial values) and such
    a checkpoint into a plain model (its state is ignored). Between checkpoint and model of
    the same method the running statistics (EQLv2's ``pos_grad``/``neg_grad``/``pos_neg``,
    Seesaw's ``cum_samples``) and LOCE's scores carry over; a loss's constants (EQL's tail
    set, the federated weights, ECM's margins) stay those built from this run's config and
    annotations.

    ``reinit`` (``train.reinit``) lists module-name prefixes that are not loaded: their
    parameters and buffers keep this model's fresh initialisation, and the checkpoint's
    entries under them are ignored whatever their shape.

    Raises:
        ConfigError: a ``reinit`` prefix that names nothing in the model.
        CheckpointError: other missing or unexpected keys, or shapes that differ.
    """
    from loce.engine.checkpoint import describe_key_mismatch, load_model_weights
    from loce.errors import CheckpointError

    own = set(model.state_dict())
    prefixes = [p.strip().strip(".") for p in reinit]
    for i, prefix in enumerate(prefixes):
        if not any(_matches(k, prefix) for k in own):
            raise _unknown_prefix(model, prefix,
                                  f"train.reinit[{i}] = {reinit[i]!r} names nothing in the model.")
    state = {k: v for k, v in _model_state(data).items()
             if not (_LOSS_STATE.search(k) and not _RUNNING_LOSS_STATE.search(k))
             and not any(_matches(k, p) for p in prefixes)}
    own = {k for k in own if not any(_matches(k, p) for p in prefixes)}
    missing = sorted(k for k in own - set(state) if not _METHOD_STATE.search(k))
    unexpected = sorted(k for k in set(state) - own if not _METHOD_STATE.search(k))
    if missing or unexpected:
        raise CheckpointError(
            f"{source} does not fit the model: {describe_key_mismatch(missing, unexpected)} "
            "keys; train.init_from must be "
            "a checkpoint of the same architecture (model section) and category set"
        )
    load_model_weights(model, {k: v for k, v in state.items() if k in own}, source, strict=False)


def _unknown_prefix(model: nn.Module, prefix: str, message: str):
    """A ConfigError for a module prefix that names nothing: ``message``, the closest valid
    prefix and the list of valid ones."""
    import difflib

    from loce.errors import ConfigError

    valid = trainable_prefix_choices(model)
    close = difflib.get_close_matches(prefix, valid, n=1, cutoff=0.6)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"{message}{hint} Valid prefixes (or any deeper module name): "
                       f"{', '.join(valid)}")


def check_reinit_trainable(model: nn.Module, cfg: Config) -> None:
    """A layer in ``train.reinit`` must be trained: frozen, it would stay random.

    Raises:
        ConfigError: a ``train.reinit`` prefix whose parameters ``train.trainable`` freezes.
    """
    from loce.errors import ConfigError

    for i, prefix in enumerate(p.strip().strip(".") for p in cfg.train.reinit):
        params = [q for n, q in model.named_parameters() if _matches(n, prefix)]
        if params and not any(q.requires_grad for q in params):
            raise ConfigError(
                f"train.reinit[{i}] = {cfg.train.reinit[i]!r} is re-initialised but frozen, so it "
                "would stay random; add it (or a module above it) to train.trainable"
            )


def _matches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def trainable_prefix_choices(model: nn.Module) -> list[str]:
    """Module names one or two levels deep that hold parameters (valid ``train.trainable``)."""
    names = {n for n, _ in model.named_parameters()}
    out = []
    for name, _ in model.named_modules():
        if name and name.count(".") <= 1 and any(_matches(n, name) for n in names):
            out.append(name)
    return out


def _keep_running_stats(module: nn.Module, args) -> None:
    # A BatchNorm layer whose parameters are all frozen is part of the frozen network: it
    # normalises with its running statistics and never updates them, whatever model.train()
    # says (the original's norm_eval, method spec c/d), so that stored memory features and
    # the frozen layers' outputs do not drift with the batches.
    module.training = False


def configure_trainable(model: nn.Module, cfg: Config) -> None:
    """Freeze everything outside ``train.trainable`` (the model builder already froze the
    first ResNet stages).

    A parameter stays trainable when its name equals a prefix or starts with the prefix plus
    "." and the builder left it trainable. BatchNorm layers left without trainable parameters
    then always use their running statistics (see :func:`_keep_running_stats`).

    Raises:
        ConfigError: a prefix that matches no parameter, listing the valid prefixes.
    """
    import warnings

    from torch.nn.modules.batchnorm import _BatchNorm

    prefixes = cfg.train.trainable
    if prefixes is None:
        return
    prefixes = [p.strip().strip(".") for p in prefixes]
    names = [n for n, _ in model.named_parameters()]
    for i, prefix in enumerate(prefixes):
        if not any(_matches(n, prefix) for n in names):
            raise _unknown_prefix(model, prefix, f"train.trainable[{i}] = "
                                  f"{cfg.train.trainable[i]!r} matches no parameter of the model.")
    for name, param in model.named_parameters():
        if not any(_matches(name, p) for p in prefixes):
            param.requires_grad_(False)
    for module in model.modules():
        if isinstance(module, _BatchNorm) and not any(
            p.requires_grad for p in module.parameters()
        ) and not getattr(module, "_loce_running_stats", False):
            module.register_forward_pre_hook(_keep_running_stats)
            module._loce_running_stats = True
    if cfg.loce.enabled and cfg.loce.feature_memory and any(
        p.requires_grad for p in model.backbone.parameters()
    ):
        warnings.warn(
            "train.trainable leaves backbone parameters trainable while LOCE's feature memory "
            "stores features of the backbone/FPN: stored features go stale as it trains "
            "(method spec a.4 freezes the backbone and FPN)",
            stacklevel=2,
        )


def has_unused_parameters(cfg: Config) -> bool:
    """Whether DDP must look for parameters that receive no gradient in a step.

    None here: frozen parameters are not registered with DDP, and every trainable one (the
    RPN, the box predictor, the mask branch, also with LOCE) is in every step's graph, even
    when a batch has no positive RoI.
    """
    return False


def _memory_file(name: str, rank: int) -> str:
    return f"{name}.memory.rank{rank}.pth"


def _loce_heads(model: nn.Module):
    from loce.models.loce_heads import EquilibriumRoIHeads

    heads = getattr(model, "roi_heads", None)
    return heads if isinstance(heads, EquilibriumRoIHeads) else None


def before_training(model: nn.Module, cfg: Config, dataset, device: torch.device, *,
                    resumed: bool) -> None:
    """Work done once before the first step: LOCE's initialisation pass (method spec a.5).

    Skipped when ``loce.enabled`` or ``loce.init_pass`` is off, and on a resumed run whose
    state was restored (the scores come with the model's state dict, the memory from the
    per-rank files of :func:`save_rank_state`). A resumed run without a saved memory runs the
    pass to refill the memory and keeps the restored scores.
    """
    if not cfg.loce.enabled:
        return
    from loce.engine import distributed as dist_utils

    heads = _loce_heads(model)
    assert heads is not None, "loce.enabled but the model has no EquilibriumRoIHeads"
    main = dist_utils.get_rank() == 0
    if resumed and (not heads.use_feature_memory or heads.memory_restored):
        if main:
            logger.info("LOCE: mean scores and feature memory restored; initialisation pass skipped")
        return
    if not cfg.loce.init_pass:
        return
    from loce.engine.init_pass import run_init_pass

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


def frequency_groups(dataset) -> dict[str, list[int]]:
    """Labels (1..K) of the rare, common and frequent classes of an LVIS dataset.

    Returns ``{"r": [...], "c": [...], "f": [...]}`` with the groups the annotations name
    (``frequency``); empty for a dataset without frequencies (COCO).
    """
    groups: dict[str, list[int]] = {}
    for label, c in enumerate(dataset.categories, start=1):
        if c.get("frequency") in ("r", "c", "f"):
            groups.setdefault(c["frequency"], []).append(label)
    return {g: groups[g] for g in ("r", "c", "f") if g in groups}


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
    from pathlib import Path

    from loce.fileio import atomic_write_json

    atomic_write_json(Path(cfg.train.output_dir) / name,
                      {"scores": heads.score_tracker.scores.tolist()}, what="mean scores",
                      indent=None)


def after_resume(model: nn.Module, state: Mapping[str, Any]) -> None:
    """Restore state that lives outside the model's state dict after ``--resume``."""


def save_rank_state(model: nn.Module, cfg: Config, ckpt_dir, name: str, rank: int) -> None:
    """Write this rank's unsynchronised state next to checkpoint ``name`` (every rank calls).

    LOCE with ``loce.save_memory``: the feature memory (per process, spec a.4) goes to
    ``<ckpt_dir>/<name>.memory.rank<R>.pth``, written atomically and durably. Nothing is
    deleted here: the training loop moves ``last_checkpoint`` to ``name`` afterwards and only
    then calls :func:`prune_rank_state`, so the checkpoint the pointer names always has its
    memory, whenever the run is killed.
    """
    if not (cfg.loce.enabled and cfg.loce.save_memory):
        return
    from pathlib import Path

    from loce.fileio import ensure_directory, save_torch_atomic

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
    from pathlib import Path

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
    from pathlib import Path

    from loce.errors import CheckpointError

    path = Path(ckpt_dir) / _memory_file(name, rank)
    if not path.is_file():
        logger.warning("LOCE: rank %d finds no saved feature memory %s", rank, path)
        return
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        state = data["feature_memory"]
    except Exception as err:  # noqa: BLE001 - corrupt or foreign file: one clear message
        raise CheckpointError(f"cannot read the feature memory {path}: "
                              f"{type(err).__name__}: {err}") from None
    try:
        device = next(model.parameters()).device
        heads.memory_for(device).set_extra_state(state)
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from None
    heads.memory_restored = True
