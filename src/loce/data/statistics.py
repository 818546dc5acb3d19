"""Per-class statistics of a training set, from the annotations it actually uses."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

__all__ = [
    "FRACTAL_MAX_GRID",
    "FREQUENCY_GROUPS",
    "LVIS_THRESHOLDS",
    "ClassStatistics",
    "class_statistics",
    "fractal_dimensions",
    "frequency_groups",
    "frequency_of_counts",
]

#: LVIS's groups by training images per class: rare 1-10, common 11-100, frequent > 100.
LVIS_THRESHOLDS: tuple[int, int] = (10, 100)
#: LVIS's frequency group codes: rare, common, frequent.
FREQUENCY_GROUPS: tuple[str, ...] = ("r", "c", "f")


@dataclass(frozen=True)
class ClassStatistics:
    """Per-class statistics of the training set, in label order (label 1 first).

    What each method takes (docs/methods.md §1.2): EQL and Gumbel the image frequency
    ``image_count / num_images``; federated loss and NorCal ``image_count``; ECM
    ``instance_count``; FRACAL the image frequency and ``fractal_dims``. Evaluation on a
    validation file without LVIS's fields takes the groups of ``frequencies``.

    Attributes:
        image_counts: ``K`` numbers of training images that contain each class.
        instance_counts: ``K`` numbers of training instances of each class.
        num_images: training images with at least one annotation (``N_img``).
        source: where they come from (the annotation file), for messages.
        fractal_dims: ``K`` box-counting dimensions of each class's box centres
            (:func:`fractal_dimensions`), or None when not computed.
        frequencies: ``K`` LVIS groups (``"r"``/``"c"``/``"f"``) the run gave the classes
            (the file's ``frequency`` fields, or :func:`frequency_of_counts`), or None when
            not known.
    """

    image_counts: tuple[int, ...]
    instance_counts: tuple[int, ...]
    num_images: int
    source: str = "<class statistics>"
    fractal_dims: tuple[float, ...] | None = None
    frequencies: tuple[str, ...] | None = None

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
        if self.fractal_dims is not None and len(self.fractal_dims) != len(self.image_counts):
            raise ValueError(
                f"{self.source}: {len(self.fractal_dims)} fractal dimensions for "
                f"{len(self.image_counts)} classes; expected one per class"
            )
        if self.frequencies is not None:
            if len(self.frequencies) != len(self.image_counts):
                raise ValueError(
                    f"{self.source}: {len(self.frequencies)} frequency groups for "
                    f"{len(self.image_counts)} classes; expected one per class"
                )
            bad = [i for i, f in enumerate(self.frequencies) if f not in FREQUENCY_GROUPS]
            if bad:
                raise ValueError(
                    f"{self.source}: frequencies[{bad[0]}] is {self.frequencies[bad[0]]!r} "
                    f"(class label {bad[0] + 1}); expected one of 'r', 'c', 'f'"
                )

    @property
    def num_classes(self) -> int:
        """``K``."""
        return len(self.image_counts)

    def image_frequency(self) -> list[float]:
        """``[K]`` image frequencies ``f_c = image_count_c / num_images``."""
        return [c / self.num_images for c in self.image_counts]

    def to_dict(self) -> dict[str, Any]:
        """The statistics as plain lists, numbers and strings (what a checkpoint stores, so
        that it loads with ``weights_only=True``); :meth:`from_dict` reads them back."""
        return {
            "image_counts": [int(v) for v in self.image_counts],
            "instance_counts": [int(v) for v in self.instance_counts],
            "num_images": int(self.num_images),
            "fractal_dims": (None if self.fractal_dims is None
                             else [float(v) for v in self.fractal_dims]),
            "frequencies": None if self.frequencies is None else list(self.frequencies),
            "source": str(self.source),
        }

    @classmethod
    def from_dict(cls, data: Any, where: str) -> ClassStatistics:
        """The statistics written by :meth:`to_dict`, checked.

        Args:
            data: the stored dict.
            where: what holds it (e.g. ``"ckpt.pth: class_statistics"``), for messages; the
                result's ``source`` says where the statistics were counted.

        Raises:
            ValueError: a missing or mistyped entry, or values that do not fit together,
                naming ``where`` and the entry.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"{where} is a {type(data).__name__}, expected a dict")

        def numbers(key: str, kind: type, optional: bool = False):
            values = data.get(key)
            if values is None and optional:
                return None
            ok = (kind,) if kind is int else (int, float)
            if not isinstance(values, list | tuple) or not all(
                    isinstance(v, ok) and not isinstance(v, bool) for v in values):
                raise ValueError(f"{where}: {key!r} must be a list of {kind.__name__}s, found "
                                 f"{str(values)[:60]}")
            return tuple(kind(v) for v in values)

        num_images = data.get("num_images")
        if not isinstance(num_images, int) or isinstance(num_images, bool):
            raise ValueError(f"{where}: 'num_images' must be an int, found {num_images!r}")
        dims = numbers("fractal_dims", float, optional=True)
        if dims is not None and not all(math.isfinite(d) for d in dims):
            raise ValueError(f"{where}: 'fractal_dims' must be finite numbers")
        groups = data.get("frequencies")  # absent from checkpoints of earlier versions
        if groups is not None and not (isinstance(groups, list | tuple)
                                       and all(isinstance(g, str) for g in groups)):
            raise ValueError(f"{where}: 'frequencies' must be a list of 'r', 'c' or 'f', "
                             f"found {str(groups)[:60]}")
        # Checked under ``where`` (so that a message names what holds them), then given the
        # annotation file they were counted from.
        stats = cls(image_counts=numbers("image_counts", int),
                    instance_counts=numbers("instance_counts", int), num_images=num_images,
                    source=where, fractal_dims=dims,
                    frequencies=None if groups is None else tuple(groups))
        return replace(stats, source=str(data.get("source") or where))


FRACTAL_MAX_GRID = 64
"""Largest box-counting grid of :func:`fractal_dimensions` (64 x 64 cells, as FRACAL)."""


def fractal_dimensions(
    cx: np.ndarray, cy: np.ndarray, labels: np.ndarray, num_classes: int,
    max_grid: int = FRACTAL_MAX_GRID,
) -> np.ndarray:  # fmt: skip
    """Box-counting dimension of each class's box centres in the unit square (FRACAL).

    For each grid of ``g x g`` cells, ``g = 1..max_grid``, ``N_c(g)`` counts the cells
    ``[i/g, (i+1)/g) x [j/g, (j+1)/g)`` holding at least one centre of class ``c`` (a centre
    at 1.0 or outside [0, 1) falls in none, as in FRACAL's statistics). The dimension is the
    least-squares slope of ``ln N_c(g)`` against ``ln g`` over the grids with
    ``g * g <= n_c``, ``n_c`` the class's instances; 1 for a class with fewer than 4
    instances, and at least 1 (FRACAL's box-counting variant).

    Args:
        cx, cy: ``[A]`` float64 box centres, divided by their image's width and height.
        labels: ``[A]`` int64 class labels in ``1..K``.
        num_classes: ``K``.
        max_grid: the largest grid.

    Returns:
        ``[K]`` float64 dimensions in [1, 2] (label order).
    """
    k = int(num_classes)
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels, minlength=k + 1)[1:]
    grids = np.arange(1, max_grid + 1)
    boxes = np.zeros((max_grid, k), dtype=np.int64)
    for g in grids:
        # The cell edges i * (1 / g), computed as FRACAL computes them.
        edges = np.arange(g + 1) * (1.0 / g)
        col = np.searchsorted(edges, cx, side="right") - 1
        row = np.searchsorted(edges, cy, side="right") - 1
        inside = (col >= 0) & (col < g) & (row >= 0) & (row < g)
        # Mark the occupied (class, cell) pairs, then count each class's marks.
        occupied = np.zeros((k + 1) * g * g, dtype=bool)
        occupied[(labels[inside] * g + row[inside]) * g + col[inside]] = True
        boxes[g - 1] = occupied.reshape(k + 1, g * g).sum(axis=1)[1:]
    dims = np.ones(k, dtype=np.float64)
    log_g = np.log(grids.astype(np.float64))
    for c in np.flatnonzero(counts >= 4):
        use = (grids * grids <= counts[c]) & (boxes[:, c] > 0)
        if use.sum() < 2:
            continue
        x, y = log_g[use], np.log(boxes[use, c].astype(np.float64))
        slope = float(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum())
        dims[c] = max(slope, 1.0)
    return dims


def _fractal_dimensions_of(dataset, ann: np.ndarray) -> tuple[float, ...]:
    """:func:`fractal_dimensions` of the annotations a training set uses (``ann``: their
    ``[A]`` rows in the index)."""
    index = dataset.index
    box = np.asarray(index.ann_bbox, dtype=np.float64)[ann]
    image = np.asarray(index.ann_image_rows)[ann]
    width = np.asarray(index.widths, dtype=np.float64)[image]
    height = np.asarray(index.heights, dtype=np.float64)[image]
    # FRACAL's normalised centre: x / W + (w / W) / 2.
    cx = box[:, 0] / width + box[:, 2] / width / 2
    cy = box[:, 1] / height + box[:, 3] / height / 2
    labels = np.asarray(index.ann_labels)[ann]
    dims = fractal_dimensions(cx, cy, labels, int(dataset.num_classes))
    return tuple(float(v) for v in dims)


def class_statistics(dataset, *, fractal: bool = False):
    """Per-class statistics of a training set, from the annotations it uses.

    Counts what the model is trained on: the usable (non-crowd, non-empty) annotations of the
    dataset's images (an LVIS file's own ``image_count``/``instance_count`` fields, when
    present, count the same for LVIS, where nothing is dropped).

    Args:
        dataset: an :class:`~loce.data.lvis.LVISDataset` (``image_labels``,
            ``annotation_rows``, ``index.ann_labels``, ``num_classes``).
        fractal: also compute each class's fractal dimension (FRACAL), from the boxes and
            image sizes of the index.

    Returns:
        :class:`ClassStatistics`: ``image_counts[c - 1]`` images containing label
        ``c``, ``instance_counts[c - 1]`` its instances, ``num_images`` the images with at
        least one annotation, ``frequencies`` the dataset's groups (None when its categories
        have none yet: :func:`loce.build.assign_frequencies` gives them).
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
        fractal_dims=_fractal_dimensions_of(dataset, ann) if fractal else None,
        frequencies=None if dataset.frequencies is None else tuple(dataset.frequencies),
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
