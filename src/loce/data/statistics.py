"""Per-class statistics of a training set, from the annotations it actually uses."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "LVIS_THRESHOLDS",
    "ClassStatistics",
    "class_statistics",
    "frequency_groups",
    "frequency_of_counts",
]

#: LVIS's groups by training images per class: rare 1-10, common 11-100, frequent > 100.
LVIS_THRESHOLDS: tuple[int, int] = (10, 100)


@dataclass(frozen=True)
class ClassStatistics:
    """Per-class statistics of the training set, in label order (label 1 first).

    What each method takes (docs/methods.md §1.2): EQL and Gumbel the image frequency
    ``image_count / num_images``; federated loss and NorCal ``image_count``; ECM
    ``instance_count``.

    Attributes:
        image_counts: ``K`` numbers of training images that contain each class.
        instance_counts: ``K`` numbers of training instances of each class.
        num_images: training images with at least one annotation (``N_img``).
        source: where they come from (the annotation file), for messages.
    """

    image_counts: tuple[int, ...]
    instance_counts: tuple[int, ...]
    num_images: int
    source: str = "<class statistics>"

    def __post_init__(self) -> None:
        if len(self.image_counts) != len(self.instance_counts):
            raise ValueError(
                f"{self.source}: {len(self.image_counts)} image counts but "
                f"{len(self.instance_counts)} instance counts; expected one of each per class"
            )
        if int(self.num_images) < 1:
            raise ValueError(f"{self.source}: num_images must be >= 1, got {self.num_images}")
        for name in ("image_counts", "instance_counts"):
            values = getattr(self, name)
            bad = [i for i, v in enumerate(values) if v < 0]
            if bad:
                raise ValueError(
                    f"{self.source}: {name} must be >= 0, found {values[bad[0]]} for class "
                    f"label {bad[0] + 1}"
                )
        big = [i for i, v in enumerate(self.image_counts) if v > self.num_images]
        if big:
            raise ValueError(
                f"{self.source}: image_counts[{big[0]}] = {self.image_counts[big[0]]} exceeds "
                f"num_images = {self.num_images} (class label {big[0] + 1})"
            )

    @property
    def num_classes(self) -> int:
        """``K``."""
        return len(self.image_counts)

    def image_frequency(self) -> list[float]:
        """``[K]`` image frequencies ``f_c = image_count_c / num_images``."""
        return [c / self.num_images for c in self.image_counts]


def class_statistics(dataset):
    """Per-class statistics of a training set, from the annotations it uses.

    Counts what the model is trained on: the usable (non-crowd, non-empty) annotations of the
    dataset's images (an LVIS file's own ``image_count``/``instance_count`` fields, when
    present, count the same for LVIS, where nothing is dropped).

    Args:
        dataset: an :class:`~loce.data.lvis.LVISDataset` (``image_labels``,
            ``annotation_rows``, ``index.ann_labels``, ``num_classes``).

    Returns:
        :class:`ClassStatistics`: ``image_counts[c - 1]`` images containing label
        ``c``, ``instance_counts[c - 1]`` its instances, ``num_images`` the images with at
        least one annotation.
    """
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


def frequency_of_counts(image_counts, thresholds=LVIS_THRESHOLDS) -> list[str]:
    """The LVIS group of each class from its number of training images.

    A class is rare (``"r"``) with at most ``rare_max`` images, common (``"c"``) with at
    most ``common_max``, frequent (``"f"``) above: LVIS's rule with ``(10, 100)``. A class
    with no training image is rare (no evidence of it); callers report such classes.

    Args:
        image_counts: ``K`` training image counts, label order.
        thresholds: ``(rare_max, common_max)``, ``1 <= rare_max < common_max``.

    Returns:
        ``K`` group codes, label order.
    """
    rare_max, common_max = (int(t) for t in thresholds)
    if not 1 <= rare_max < common_max:
        raise ValueError(f"thresholds must be 1 <= rare_max < common_max, got {tuple(thresholds)}")
    return ["r" if n <= rare_max else "c" if n <= common_max else "f" for n in image_counts]


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
