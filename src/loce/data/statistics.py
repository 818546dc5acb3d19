"""Per-class statistics of a training set, from the annotations it actually uses."""

from __future__ import annotations

import numpy as np

__all__ = ["class_statistics", "frequency_groups"]


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
