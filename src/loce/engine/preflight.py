"""Checks of everything a run will need, made before its first iteration.

A run that trains for hours and then fails on something that could be read at the start
(an evaluation file without the fields evaluation needs, categories that differ between the
splits, images that are not where the config says) is the costliest kind of error. So
:func:`check_run_inputs` reads both annotation files, compares their categories, looks up a
sample of image files of each split and prepares the evaluation ground truth (with the
training split's frequency groups for a file without them) before the model is built.
"""

from __future__ import annotations

import logging
from typing import Any

from loce.config import Config
from loce.errors import DataError

__all__ = ["IMAGE_SAMPLE", "check_run_inputs"]

logger = logging.getLogger(__name__)

#: Image files looked up per split before training (spread over the file, first and last
#: included); a missing file found later still stops the run with its name.
IMAGE_SAMPLE = 32


def _check_images(index, root: str, key: str) -> None:
    from loce.data.summary import missing_image_files

    missing = missing_image_files(index, root, sample=IMAGE_SAMPLE)
    if missing:
        raise DataError(
            f"{index.source}: {len(missing)} of {min(IMAGE_SAMPLE, index.num_images)} sampled "
            f"image files are not under {key}={root} (first: {missing[0]}). Fix: set {key} to "
            "the folder the file names are relative to."
        )


def _check_same_categories(train, val) -> None:
    if train.cat_ids == val.cat_ids:
        return
    only_train = sorted(set(train.cat_ids) - set(val.cat_ids))
    only_val = sorted(set(val.cat_ids) - set(train.cat_ids))
    raise DataError(
        f"{val.source} and {train.source} have different categories (only in train: "
        f"{only_train[:10]}, only in val: {only_val[:10]}). Fix: give both files the same "
        "'categories' list (a class without annotations in one split may stay in it)."
    )


def check_run_inputs(cfg: Config, train_set) -> dict[str, Any]:
    """Check the run's data before training; returns the training split's summary.

    Args:
        cfg: the run's config.
        train_set: the training set built from it (:func:`loce.build.build_train_dataset`),
            whose categories carry the frequency groups.

    Returns:
        :func:`loce.data.summary.summarize_split` of the training split.

    Raises:
        DataError: a sample of image files that cannot be found, a validation file that
            cannot be read or has other categories, or evaluation fields that cannot be
            prepared.
    """
    from loce import build
    from loce.data.lvis.index import LVISIndex
    from loce.data.summary import summarize_split

    _check_images(train_set.index, cfg.data.train_images, "data.train_images")
    if cfg.train.eval_at_end or cfg.train.eval_every_epochs:
        from loce.evaluation.lvis_eval import load_ground_truth

        val = LVISIndex.from_json(cfg.data.val_ann)
        _check_same_categories(train_set.index, val)
        _check_images(val, cfg.data.val_images, "data.val_images")
        load_ground_truth(build.evaluation_ground_truth(cfg, train_set.categories))
    return summarize_split(train_set.index, cfg.data.frequency_thresholds, dataset=train_set)
