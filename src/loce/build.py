"""The one place that turns a config into objects: transforms, datasets, loaders, the model.

Everything else receives built objects; a method (e.g. the LOCE fine-tune) changes what is
built by configuration, never by editing the training loop. Loading weights into the model
is :mod:`loce.models.weights`, freezing :mod:`loce.engine.freeze`, LOCE's training-time
state :mod:`loce.engine.method_state`.

Class statistics. EQL, the federated loss, ECM, Gumbel (GOL) and NorCal are built from
per-class statistics of the *training* annotations (docs/methods.md §1.2). They are an
argument of :func:`build_model`: the engine passes those of the training set it built
(:func:`training_class_statistics` with the dataset) and writes them into every checkpoint;
inference takes them from the checkpoint (:func:`loce.engine.checkpoint.load_trained_model`),
and without any the model builder reads ``data.train_ann`` itself.
"""

from __future__ import annotations

from torch import nn

from loce.config import Config

__all__ = [
    "assign_frequencies",
    "build_model",
    "build_test_decoder",
    "build_test_transforms",
    "build_train_dataset",
    "build_train_transforms",
    "build_val_dataset",
    "check_masks_available",
    "epoch_batches",
    "evaluation_ground_truth",
    "has_masks",
    "needs_class_statistics",
    "train_loader",
    "training_categories",
    "training_class_statistics",
]


# --------------------------------------------------------------------------------------------
# data


def build_train_transforms(cfg: Config):
    from loce.data.transforms import Compose, RandomHorizontalFlip, RandomShortSideResize, ToUint8

    steps = [RandomShortSideResize(cfg.data.train_scales, cfg.data.max_size)]
    if cfg.data.flip_prob > 0:
        steps.append(RandomHorizontalFlip(cfg.data.flip_prob))
    if cfg.data.train_image_dtype == "uint8":
        steps.append(ToUint8())
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


def has_masks(cfg: Config) -> bool:
    """Whether the configured detector has a mask branch (Mask R-CNN, not Faster R-CNN)."""
    return cfg.model.detector == "mask_rcnn"


def check_masks_available(cfg: Config, index) -> None:
    """A Mask R-CNN config needs a segmentation on every non-crowd annotation.

    Raises:
        ConfigError: naming the file, the first annotation without one and the box-only
            config to use instead.
    """
    import numpy as np

    from loce.errors import ConfigError

    if not has_masks(cfg):
        return
    missing = np.flatnonzero(~index.ann_iscrowd & ~index.has_segmentation())
    if missing.size:
        i = int(missing[0])
        raise ConfigError(
            f"{index.source}: {missing.size} of {index.num_annotations} annotations have no "
            f"'segmentation' (first: annotations[{i}]), but model.detector is mask_rcnn. For "
            "boxes only use a Faster R-CNN config (faster_rcnn_r18_fpn_synthetic, "
            "faster_rcnn_r50_fpn_mstrain_2x_lvis_v1 and their loce_ fine-tunes) or "
            "--set model.detector=faster_rcnn"
        )


def assign_frequencies(cfg: Config, dataset) -> list[int]:
    """Give a training set without LVIS ``frequency`` fields the groups of its own counts.

    The groups follow ``data.frequency_thresholds`` applied to each class's number of
    training images (:func:`loce.data.statistics.frequency_of_counts`) and are written into
    ``dataset.index.frequencies``; a file with its own fields keeps them.

    Returns:
        The labels (1..K) of classes with no training image (empty for LVIS files).
    """
    from loce.data.statistics import class_statistics, frequency_of_counts

    counts = class_statistics(dataset).image_counts
    if dataset.index.frequencies is None:
        dataset.index.frequencies = frequency_of_counts(counts, cfg.data.frequency_thresholds)
        dataset.index.frequency_source = "counts"
    return [label for label, n in enumerate(counts, start=1) if n == 0]


def build_train_dataset(cfg: Config):
    """The training set: images with at least one usable annotation, augmented.

    Its categories carry frequency groups (:func:`assign_frequencies`); a Mask R-CNN config
    needs segmentations (:func:`check_masks_available`).
    """
    from loce.data.lvis.dataset import LVISDataset
    from loce.data.lvis.index import LVISIndex

    index = LVISIndex.from_json(cfg.data.train_ann)
    check_masks_available(cfg, index)
    dataset = LVISDataset(index, cfg.data.train_images, train=True,
                          transforms=build_train_transforms(cfg), with_masks=has_masks(cfg))
    assign_frequencies(cfg, dataset)
    return dataset


def evaluation_ground_truth(cfg: Config, train_categories=None):
    """What LVIS evaluation reads for ``data.val_ann``: the path itself when the file has the
    LVIS fields, else a dict with the groups of the training split and COCO's exhaustive
    negatives (:mod:`loce.evaluation.ground_truth`).

    Args:
        train_categories: the training set's category table with its groups (``categories``
            of the dataset built by :func:`build_train_dataset`, or
            :func:`loce.engine.checkpoint.evaluation_categories`); None builds the index of
            ``data.train_ann`` (no image is opened) when a category lacks ``frequency``.
    """
    from loce.data.lvis.validate import load_lvis_json
    from loce.evaluation.ground_truth import needs_evaluation_fields, with_evaluation_fields

    data = load_lvis_json(cfg.data.val_ann)
    if not needs_evaluation_fields(data):
        return cfg.data.val_ann
    if train_categories is None and any("frequency" not in c for c in data["categories"]):
        train_categories = training_categories(cfg)
    groups = {int(c["id"]): c["frequency"] for c in train_categories or ()}
    return with_evaluation_fields(data, groups, str(cfg.data.val_ann))


def training_categories(cfg: Config, *, lacking: str | None = None) -> list[dict]:
    """The training categories with ``frequency``, ``image_count`` and ``instance_count`` as
    this run uses them (from ``data.train_ann``; no image is opened).

    Args:
        lacking: why no stored groups could be used instead (e.g. "ckpt.pth stores none"),
            for the message when ``data.train_ann`` cannot be read.

    Raises:
        ConfigError: ``data.train_ann`` cannot be read or is not an annotation file.
    """
    from loce.data.statistics import class_statistics

    need = (f"evaluating {cfg.data.val_ann} (a file without LVIS's 'frequency' fields) needs "
            "the frequency groups of the training split")
    dataset = _readable_training_set(cfg, need, lacking)
    stats = class_statistics(dataset)
    return [{**c, "image_count": n, "instance_count": m} for c, n, m in
            zip(dataset.categories, stats.image_counts, stats.instance_counts, strict=True)]


def _annotation_only_dataset(cfg: Config):
    """The training set of ``data.train_ann`` for counting, with the groups training gives it
    (:func:`assign_frequencies`): no masks, no image opened (the image root must only exist;
    the annotation file's folder stands in for a missing one)."""
    from pathlib import Path

    from loce.data.lvis.dataset import LVISDataset

    root = Path(cfg.data.train_images)
    root = root if root.is_dir() else Path(cfg.data.train_ann).resolve().parent
    dataset = LVISDataset(cfg.data.train_ann, root, train=True, with_masks=False)
    assign_frequencies(cfg, dataset)
    return dataset


def needs_class_statistics(cfg: Config) -> bool:
    """Whether the model of ``cfg`` is built from per-class training statistics."""
    return bool(_statistics_users(cfg))


def training_class_statistics(cfg: Config, dataset=None, *, fractal: bool | None = None,
                              lacking: str | None = None):
    """The class statistics of the training set (:func:`loce.data.statistics.class_statistics`).

    Args:
        dataset: the training set built from ``cfg`` (the engine passes the one it trains
            on); None reads ``data.train_ann`` (no image is opened).
        fractal: also compute the fractal dimensions; None: when ``model.test.fracal_lambda``
            is set.
        lacking: why no stored statistics could be used instead (e.g. "ckpt.pth stores none"),
            for the message when ``data.train_ann`` cannot be read.

    Raises:
        ConfigError: ``data.train_ann`` cannot be read or is not an annotation file.
    """
    from loce.data.statistics import class_statistics

    if fractal is None:
        fractal = cfg.model.test.fracal_lambda is not None
    if dataset is None:
        need = (f"{_statistics_users(cfg) or 'this model'} needs per-class statistics of the "
                "training annotations")
        dataset = _readable_training_set(cfg, need, lacking)
    return class_statistics(dataset, fractal=fractal)


def _readable_training_set(cfg: Config, need: str, lacking: str | None):
    """:func:`_annotation_only_dataset`, or a one-line error saying what ``need`` s it, why
    nothing stored could be used (``lacking``) and the fix.

    Raises:
        ConfigError: ``data.train_ann`` does not exist or is not an annotation file.
    """
    from pathlib import Path

    from loce.errors import ConfigError, DataError

    path = Path(cfg.data.train_ann)
    reason = None if path.is_file() else f"data.train_ann={path} does not exist"
    if reason is None:
        # Same filtering as the training set; no image is opened (the root must only exist).
        try:
            return _annotation_only_dataset(cfg)
        except DataError as err:
            reason = f"data.train_ann cannot be used: {str(err).rstrip('.')}"
    lacking = f"; {lacking}" if lacking else ""
    raise ConfigError(
        f"{need}{lacking}, and {reason}. Fix: set data.train_ann to the annotation file the "
        "model is (or was) trained on: --set data.train_ann=/path/to/train.json"
    )


def _statistics_users(cfg: Config) -> str:
    """The settings of ``cfg`` that need class statistics, e.g.
    ``"model.test.fracal_lambda=2.0"`` ("" when none)."""
    from loce.losses import needs_class_statistics as loss_needs_statistics

    why = []
    if loss_needs_statistics(cfg.model.roi.cls_loss):
        why.append(f"model.roi.cls_loss={cfg.model.roi.cls_loss!r}")
    if cfg.model.test.norcal_gamma is not None:
        why.append(f"model.test.norcal_gamma={cfg.model.test.norcal_gamma}")
    if cfg.model.test.fracal_lambda is not None:
        why.append(f"model.test.fracal_lambda={cfg.model.test.fracal_lambda}")
    return " and ".join(why)


def build_val_dataset(cfg: Config):
    """The evaluation set: every image, single-scale test resize."""
    from loce.data.lvis.dataset import LVISDataset

    return LVISDataset(cfg.data.val_ann, cfg.data.val_images, train=False, with_masks=False,
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


def train_loader(cfg: Config, dataset, rank: int, world: int, *, pin_memory: bool = False):
    """The run's one training DataLoader: this rank's :func:`epoch_batches` with per-item
    seeded augmentation; ``loader.batch_sampler.set_epoch(epoch, skip)`` before each epoch.

    Its workers (``data.workers``) persist across epochs. ``pin_memory``: page-locked
    batches, for asynchronous copies to a CUDA device.
    """
    from loce.data.seeding import epoch_loader

    return epoch_loader(dataset, lambda epoch: epoch_batches(cfg, dataset, epoch, rank, world),
                        seed=cfg.train.seed, workers=data_workers(cfg),
                        generator_seed=cfg.train.seed * 7919, pin_memory=pin_memory)


def data_workers(cfg: Config) -> int:
    """``data.workers``, or when null the CPUs this process may use divided by the processes
    on this machine (``LOCAL_WORLD_SIZE``, set by torchrun), between 1 and 8."""
    import os

    if cfg.data.workers is not None:
        return cfg.data.workers
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, min(8, cpus // local))


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

    With ``loce.enabled`` the RoI heads are LOCE's
    (:class:`~loce.models.loce_heads.LoceRoIHeads`), otherwise the plain ones. The box
    classification loss is ``model.roi.cls_loss`` (its buffers are in the state dict under
    ``roi_heads.cls_loss.*``); losses built from class statistics and NorCal get them from
    ``class_stats`` or :func:`training_class_statistics`.

    Args:
        load_backbone: load ``model.detector_weights`` (a whole detector, its class-specific
            layers fresh) or else ``model.backbone_weights``; False when a whole checkpoint
            is loaded next (inference, resuming, fine-tuning), which then needs no download.
        class_stats: :class:`loce.models.ClassStatistics` to use instead of those of
            ``data.train_ann``.

    Raises:
        ConfigError: a loss that cannot go with ``loce.enabled``, or class statistics that
            cannot be read.
    """
    from loce.models import build_mask_rcnn

    _check_method_choice(cfg)
    if class_stats is None and needs_class_statistics(cfg):
        class_stats = training_class_statistics(cfg)
    return build_mask_rcnn(cfg.model, num_classes, load_backbone=load_backbone,
                           class_stats=class_stats, seed=cfg.train.seed,
                           loce=cfg.loce if cfg.loce.enabled else None)


