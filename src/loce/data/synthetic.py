"""A synthetic long-tailed instance-segmentation dataset in LVIS v1 format.

This is the project's embedded default dataset: the demo, the tests and the long-tail benchmark
run on it, so it is built to make long-tail methods *matter*:

* **Families of confusable classes.** Every class is a (shape, colour, pattern) triple. Classes
  of one family share the shape (circle, triangle, star, ring, cross, crescent, heart, ...) and
  differ in colour or surface pattern (solid, striped, dotted, checkered, gradient), laid out on
  a small colour x pattern grid: a rare "blue striped star" has a sibling of the same colour
  ("blue solid star") and one of the same pattern ("red striped star"). Frequency ranks are
  dealt so that every family holds at least one frequent, one common and one rare class, so
  every rare class has frequent siblings a biased classifier will confuse it with.
* **A real long tail on the training split.** The number of training images per class falls
  geometrically with its frequency rank, from ``n_max`` (the head class) down to 1 image: log
  image count is linear in rank, the concave rank-frequency curve of LVIS v1's train split. (A
  pure power law ``n ∝ rank^-a`` between the same end points would leave only a handful of
  frequent classes.) ``n_max`` is solved so that a training image holds
  ``SynthConfig.train_classes_per_image`` distinct classes on average.
* **Frequency groups scaled to the dataset.** LVIS calls a class rare with 1-10 training images,
  common with 11-100 and frequent above 100. Those absolute numbers do not fit a dataset of a
  few thousand images, so the thresholds are placed in log space at the positions that give
  LVIS v1's group shares (28% r, 38% c, 34% f): ``rare_max = round(n_max ** 0.28)``,
  ``common_max = round(n_max ** 0.66)``. For the ``default`` preset (``n_max`` = 569) that is
  **r: 1-6 images, c: 7-66, f: > 66** (14 r, 18 c, 16 f of 48 classes); for ``tiny`` it is
  r: 1-2, c: 3-6, f: > 6 (4 of each). The
  thresholds are written to ``summary.json`` and printed with the class table; the
  ``frequency`` field of every category follows them.
* **A class-balanced validation split.** Every class appears in the same number of val images
  (± 1): ``val_images * val_classes_per_image / num_classes``, i.e. 30 images and about 40
  instances per class in ``default``, so APr is measured on as many instances as APf.
  The val file's categories carry the *training* ``frequency``, ``image_count`` and
  ``instance_count``, as LVIS's do.
* **Realistic clutter.** Backgrounds are crops of scikit-image's bundled public-domain/CC0
  photographs and textures (astronaut, coffee, chelsea, rocket, hubble_deep_field, camera,
  brick, grass, gravel) or smooth colour noise, overlaid with irregular blobs and strokes that
  are not categories. Objects vary in size (``min_object_px`` to ``max_object_frac`` of the
  side, log-uniform), aspect, rotation and position, overlap and occlude each other.
* **Exact masks.** Each object's visible silhouette (its shape minus every object above it,
  clipped to the image) is turned into polygons along pixel borders; a component with holes
  becomes one polygon joined to each hole by a doubled "keyhole" bridge, which pycocotools'
  even-odd polygon fill cancels, so decoding an annotation with pycocotools at the image size
  gives back exactly the visible pixels. An object is only placed where it leaves every object
  below it at least ``min_visible`` of its area visible, so no drawn object goes unannotated.
* **Honest federated fields.** Annotation is exhaustive (``not_exhaustive_category_ids`` is
  always empty); ``neg_category_ids`` lists a random ``neg_fraction`` of the categories absent
  from the image, each of them verifiably absent.
* **Deterministic.** The plan (which classes go in which image) comes from one generator seeded
  by ``seed``; each image is rendered by its own generator seeded by ``(seed, split, index)``,
  so images can be rendered in parallel and the output is byte-identical for a seed.

Layout written by :func:`generate`::

    DIR/train/000000000001.jpg ...        training images
    DIR/val/000000001501.jpg ...          validation images (ids continue after train)
    DIR/annotations/train.json            LVIS v1 annotations
    DIR/annotations/val.json
    DIR/summary.json                      class-frequency table, thresholds, config

The images root is ``DIR``. As in LVIS v1, images are named by ``coco_url``; its last two path
components (``train/000000000001.jpg``) resolve under the images root, and its basename resolves
under ``DIR/<split>``. The URL host (``loce.invalid``) is a reserved name that never resolves:
nothing is downloaded. Like LVIS v1 images, they carry no ``file_name`` (loaders take its
presence as the mark of LVIS v0.5 or COCO).
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from loce.errors import LoceError
from loce.fileio import atomic_write, atomic_write_json, ensure_directory

__all__ = [
    "COLOURS",
    "PATTERNS",
    "PRESETS",
    "SHAPES",
    "DatasetPlan",
    "ImagePlan",
    "RenderedImage",
    "SynthCategory",
    "SynthConfig",
    "class_frequency_summary",
    "format_summary",
    "frequency_thresholds",
    "generate",
    "make_categories",
    "mask_to_polygons",
    "plan_dataset",
    "render_image",
]

SPLITS: tuple[str, str] = ("train", "val")
_SPLIT_CODE = {"train": 0, "val": 1}
URL_PREFIX = "http://loce.invalid/synthetic/"

# Family shapes, in the order families take them (a dataset with n families uses the first n).
SHAPES: tuple[str, ...] = (
    "circle",
    "triangle",
    "square",
    "star",
    "ring",
    "cross",
    "crescent",
    "hexagon",
    "arrow",
    "heart",
    "semicircle",
    "ell",
    "teardrop",
    "flower",
    "hourglass",
    "lightning",
    "gear",
    "frame",
)

# Base colours (RGB in [0, 1]); far apart in hue so that colour alone separates siblings once
# the detector looks at it.
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.13, 0.13),
    "orange": (0.96, 0.55, 0.08),
    "yellow": (0.93, 0.86, 0.15),
    "green": (0.13, 0.63, 0.22),
    "cyan": (0.10, 0.76, 0.82),
    "blue": (0.14, 0.28, 0.86),
    "purple": (0.55, 0.18, 0.76),
    "pink": (0.96, 0.46, 0.72),
}
# Colours on which a light secondary colour has too little contrast get a dark one.
_LIGHT_COLOURS = frozenset({"orange", "yellow", "cyan", "pink"})
_LIGHT = np.array([0.96, 0.96, 0.93], dtype=np.float32)
_DARK = np.array([0.10, 0.10, 0.12], dtype=np.float32)

PATTERNS: tuple[str, ...] = ("solid", "striped", "dotted", "checkered", "gradient")

_PATTERN_WORDS = {
    "solid": "plain",
    "striped": "with stripes",
    "dotted": "with dots",
    "checkered": "with a checker pattern",
    "gradient": "fading to a second tone",
}

# Category appearance (colours, patterns) is a fixed catalogue: it depends on the family sizes
# only, never on the seed, so class names stay stable across seeds.
_CATALOGUE_SEED = 20210907
# LVIS v1's group shares (337 r, 461 c, 405 f of 1203) reached on a log-linear curve when the
# thresholds sit at these fractions of log(n_max).
_RARE_EXPONENT = 0.28
_COMMON_EXPONENT = 0.66
# Instances of one class in one image: mostly one, sometimes a small group.
_MULTIPLICITY = (1, 2, 3)
_MULTIPLICITY_P = (0.75, 0.18, 0.07)
_MAX_OBJECTS_PER_IMAGE = 10
_PLACEMENT_TRIES = 40
_MIN_VISIBLE_PIXELS = 40
_MIN_IN_FRAME = 0.75


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SynthConfig:
    """Settings of the synthetic dataset.

    Attributes:
        num_classes: number of categories K (ids 1..K).
        family_size: classes per family (same shape); families are ``num_classes //
            family_size``, the remainder is spread over the first families. At least 3, so a
            family can hold a frequent, a common and a rare class.
        train_images: number of training images.
        val_images: number of validation images.
        image_size: side of the square images, in pixels.
        seed: seed of the dataset (plan and rendering).
        train_classes_per_image: mean number of distinct classes per training image; sets the
            image count of the head class.
        val_classes_per_image: mean number of distinct classes per val image; sets how many val
            images each class gets.
        min_object_px: smallest object extent (its diameter before aspect changes), pixels.
        max_object_frac: largest object extent as a fraction of the image side.
        min_visible: an object is placed only where every object below it keeps at least this
            fraction of its area visible.
        neg_fraction: fraction of the categories absent from an image listed in its
            ``neg_category_ids``.
        jpeg_quality: JPEG quality of the images.
        rare_max_images: largest training image count of a rare class; ``None`` derives it from
            the head class (see the module docstring).
        common_max_images: largest training image count of a common class; ``None`` derives it.
    """

    num_classes: int = 48
    family_size: int = 4
    train_images: int = 1500
    val_images: int = 480
    image_size: int = 224
    seed: int = 0
    train_classes_per_image: float = 3.0
    val_classes_per_image: float = 3.0
    min_object_px: int = 18
    max_object_frac: float = 0.6
    min_visible: float = 0.5
    neg_fraction: float = 0.5
    jpeg_quality: int = 90
    rare_max_images: int | None = None
    common_max_images: int | None = None

    def validate(self) -> None:
        """Check the settings; raises :class:`LoceError` naming the bad field and the fix."""

        def bad(name: str, expected: str) -> LoceError:
            return LoceError(
                f"synthetic dataset setting {name}={getattr(self, name)!r}: expected {expected}"
            )

        for name in ("num_classes", "family_size", "train_images", "val_images", "image_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise bad(name, "an integer")
        if self.family_size < 3:
            raise bad(
                "family_size",
                "at least 3 (a family must hold a frequent, a common and a rare class)",
            )
        if self.num_classes < self.family_size:
            raise bad(
                "num_classes",
                f"at least family_size={self.family_size} (one family); use --num-classes "
                f"{self.family_size} or more",
            )
        max_classes = len(SHAPES) * self.family_size
        if self.num_classes > max_classes:
            raise bad(
                "num_classes",
                f"at most {max_classes} ({len(SHAPES)} shape families of {self.family_size})",
            )
        if self.train_images < 1:
            raise bad("train_images", "a positive number of images")
        if self.val_images < 1:
            raise bad("val_images", "a positive number of images")
        if self.image_size < 64 or self.image_size > 4096:
            raise bad("image_size", "between 64 and 4096 pixels")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise bad("seed", "a non-negative integer")
        if not 1.0 <= self.train_classes_per_image <= 8.0:
            raise bad("train_classes_per_image", "between 1 and 8")
        if not 1.0 <= self.val_classes_per_image <= 8.0:
            raise bad("val_classes_per_image", "between 1 and 8")
        if self.val_images * self.val_classes_per_image < self.num_classes:
            raise bad(
                "val_images",
                f"at least {math.ceil(self.num_classes / self.val_classes_per_image)} so that "
                f"each of the {self.num_classes} classes appears in val",
            )
        if not 4 <= self.min_object_px <= self.image_size // 2:
            raise bad("min_object_px", f"between 4 and image_size/2={self.image_size // 2}")
        if not self.min_object_px < self.max_object_frac * self.image_size <= self.image_size:
            raise bad(
                "max_object_frac",
                f"a fraction in (min_object_px/image_size={self.min_object_px / self.image_size:.3f}, 1]",
            )
        if not 0.05 <= self.min_visible <= 1.0:
            raise bad("min_visible", "a fraction in [0.05, 1]")
        if not 0.0 <= self.neg_fraction <= 1.0:
            raise bad("neg_fraction", "a fraction in [0, 1]")
        if not 1 <= self.jpeg_quality <= 100:
            raise bad("jpeg_quality", "an integer in [1, 100]")
        for name in ("rare_max_images", "common_max_images"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise bad(name, "None or a positive integer")


PRESETS: dict[str, SynthConfig] = {
    # A few seconds: tests. 3 families x 4 classes, r/c/f all present.
    "tiny": SynthConfig(
        num_classes=12,
        train_images=24,
        val_images=12,
        image_size=128,
        train_classes_per_image=2.5,
        min_object_px=14,
        max_object_frac=0.5,
    ),
    # The demo and the benchmark: 12 families x 4 classes.
    "default": SynthConfig(),
}


def frequency_thresholds(n_max: float) -> tuple[int, int]:
    """LVIS's r/c/f thresholds scaled to a dataset whose head class has ``n_max`` images.

    Args:
        n_max: training image count of the most frequent class.

    Returns:
        ``(rare_max, common_max)``: a class is rare with at most ``rare_max`` training images,
        common with at most ``common_max``, frequent above.
    """
    rare_max = max(1, round(n_max**_RARE_EXPONENT))
    common_max = max(rare_max + 1, round(n_max**_COMMON_EXPONENT))
    return rare_max, common_max


def _frequency_of(image_count: int, rare_max: int, common_max: int) -> str:
    if image_count <= rare_max:
        return "r"
    if image_count <= common_max:
        return "c"
    return "f"


# --------------------------------------------------------------------------------------------
# Categories and plan
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SynthCategory:
    """One category: a (shape, colour, pattern) triple.

    Attributes:
        id: LVIS category id, 1..K.
        name: ``"<colour>_<pattern>_<shape>"``.
        family: family index (0-based); all classes of a family share ``shape``.
        shape: one of :data:`SHAPES`.
        colour: one of :data:`COLOURS`.
        pattern: one of :data:`PATTERNS`.
        rank: frequency rank on the training split, 0 = most frequent.
        planned_train_images: training images the plan puts the class in.
        frequency: ``"r"``, ``"c"`` or ``"f"`` from ``planned_train_images``.
    """

    id: int
    name: str
    family: int
    shape: str
    colour: str
    pattern: str
    rank: int
    planned_train_images: int
    frequency: str

    def lvis_dict(self, image_count: int, instance_count: int, frequency: str) -> dict[str, Any]:
        """The LVIS v1 ``categories`` entry with the given training statistics."""
        pattern_word = _PATTERN_WORDS[self.pattern]
        return {
            "id": self.id,
            "name": self.name,
            "synonyms": [self.name, f"{self.colour} {self.pattern} {self.shape}"],
            "def": f"a synthetic {self.colour} {self.shape}, {pattern_word}",
            "frequency": frequency,
            "image_count": image_count,
            "instance_count": instance_count,
        }


@dataclass(frozen=True)
class ImagePlan:
    """What one image holds, decided before rendering.

    Attributes:
        split: ``"train"`` or ``"val"``.
        index: position in its split (0-based); seeds the renderer with the split and the seed.
        image_id: LVIS image id (train 1..N, val N+1..N+M).
        category_ids: one entry per object instance, grouped by class.
        neg_category_ids: categories verifiably absent from the image (sorted).
    """

    split: str
    index: int
    image_id: int
    category_ids: tuple[int, ...]
    neg_category_ids: tuple[int, ...]

    @property
    def relative_path(self) -> str:
        """Path of the image under the images root, e.g. ``train/000000000001.jpg``."""
        return f"{self.split}/{self.image_id:012d}.jpg"


@dataclass(frozen=True)
class DatasetPlan:
    """The whole dataset before rendering: categories, thresholds and per-image contents."""

    config: SynthConfig
    categories: tuple[SynthCategory, ...]
    head_images: float
    rare_max: int
    common_max: int
    train: tuple[ImagePlan, ...]
    val: tuple[ImagePlan, ...]

    def split(self, name: str) -> tuple[ImagePlan, ...]:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; valid: {', '.join(SPLITS)}")
        return self.train if name == "train" else self.val


def _family_sizes(config: SynthConfig) -> list[int]:
    n_families = config.num_classes // config.family_size
    sizes = [config.family_size] * n_families
    for i in range(config.num_classes - n_families * config.family_size):
        sizes[i % n_families] += 1
    return sizes


def _catalogue(sizes: Sequence[int]) -> list[list[tuple[str, str]]]:
    """The (colour, pattern) grid of each family: siblings share a colour or a pattern.

    A family of ``n`` classes uses ``ceil(sqrt(n))`` colours and enough patterns to fill a grid.
    Families take the least-used colours and patterns so far (ties broken at random), so every
    colour and pattern recurs across families and neither alone identifies a class.
    """
    colour_names = list(COLOURS)
    colour_use = np.zeros(len(colour_names))
    pattern_use = np.zeros(len(PATTERNS))
    families = []
    for fam, size in enumerate(sizes):
        rng = np.random.default_rng([_CATALOGUE_SEED, fam])
        n_colours = math.ceil(math.sqrt(size))
        n_patterns = math.ceil(size / n_colours)
        ci = np.argsort(colour_use + 0.5 * rng.random(len(colour_names)), kind="stable")[:n_colours]
        pi = np.argsort(pattern_use + 0.5 * rng.random(len(PATTERNS)), kind="stable")[:n_patterns]
        colour_use[ci] += 1
        pattern_use[pi] += 1
        grid = [(colour_names[c], PATTERNS[p]) for c in ci for p in pi]
        keep = sorted(rng.choice(len(grid), size, replace=False).tolist())
        families.append([grid[i] for i in keep])
    return families


def _log_linear_counts(n_max: float, k: int) -> np.ndarray:
    """Image counts per frequency rank: ``n_max`` falling geometrically to 1 over ``k`` ranks."""
    if k == 1:
        return np.array([max(1, round(n_max))], dtype=np.int64)
    x = np.arange(k, dtype=np.float64) / (k - 1)
    return np.maximum(1, np.floor(n_max ** (1.0 - x) + 0.5)).astype(np.int64)


def _solve_head_images(config: SynthConfig) -> float:
    """Head-class image count giving ``train_classes_per_image`` classes per training image."""
    target = config.train_classes_per_image * config.train_images
    k = config.num_classes

    def total(n_max: float) -> float:
        x = np.arange(k, dtype=np.float64) / max(k - 1, 1)
        return float(np.sum(n_max ** (1.0 - x)))

    lo, hi = 1.0, float(config.train_images)
    if total(hi) <= target:
        return hi
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if total(mid) < target else (lo, mid)
    return 0.5 * (lo + hi)


def make_categories(config: SynthConfig) -> tuple[list[SynthCategory], float, int, int]:
    """Build the categories with their frequency ranks and planned training image counts.

    Ranks are dealt to families so that each family gets one frequent, one common and one rare
    class first (at random within the group), then the remaining ranks at random.

    Args:
        config: dataset settings (validated here).

    Returns:
        ``(categories, head_images, rare_max, common_max)``: categories ordered by id; the head
        class's (real-valued) image count; the frequency thresholds.

    Raises:
        LoceError: bad settings, or settings under which a frequency group has fewer classes
            than there are families.
    """
    config.validate()
    k = config.num_classes
    sizes = _family_sizes(config)
    n_families = len(sizes)
    head = _solve_head_images(config)
    counts = _log_linear_counts(head, k)
    auto_rare, auto_common = frequency_thresholds(head)
    rare_max = config.rare_max_images if config.rare_max_images is not None else auto_rare
    common_max = config.common_max_images if config.common_max_images is not None else auto_common
    if common_max <= rare_max:
        raise LoceError(
            f"synthetic dataset thresholds: common_max_images={common_max} must exceed "
            f"rare_max_images={rare_max}"
        )
    groups = {
        g: [r for r in range(k) if _frequency_of(int(counts[r]), rare_max, common_max) == g]
        for g in "fcr"
    }
    for g, members in groups.items():
        if len(members) < n_families:
            raise LoceError(
                f"synthetic dataset: only {len(members)} '{g}' classes for {n_families} families "
                f"(thresholds r <= {rare_max}, c <= {common_max} training images; head class "
                f"{head:.0f} images). Every family needs a frequent, a common and a rare class: "
                "use more --train-images or fewer --num-classes"
            )

    rng = np.random.default_rng([config.seed, 101])
    family_ranks: list[list[int]] = [[] for _ in range(n_families)]
    leftover: list[int] = []
    for g in "fcr":
        members = [groups[g][i] for i in rng.permutation(len(groups[g]))]
        for fam, rank in enumerate(members[:n_families]):
            family_ranks[fam].append(rank)
        leftover.extend(members[n_families:])
    leftover = [leftover[i] for i in rng.permutation(len(leftover))]
    for fam in range(n_families):
        while len(family_ranks[fam]) < sizes[fam]:
            family_ranks[fam].append(leftover.pop())
    assert not leftover

    categories: list[SynthCategory] = []
    for fam, (size, appearances) in enumerate(zip(sizes, _catalogue(sizes))):
        ranks = [family_ranks[fam][i] for i in rng.permutation(size)]
        for (colour, pattern), rank in zip(appearances, ranks):
            shape = SHAPES[fam]
            n = int(counts[rank])
            categories.append(
                SynthCategory(
                    id=len(categories) + 1,
                    name=f"{colour}_{pattern}_{shape}",
                    family=fam,
                    shape=shape,
                    colour=colour,
                    pattern=pattern,
                    rank=rank,
                    planned_train_images=n,
                    frequency=_frequency_of(n, rare_max, common_max),
                )
            )
    return categories, head, rare_max, common_max


def _assign(counts: np.ndarray, num_images: int, rng: np.random.Generator) -> list[list[int]]:
    """Put class ``c`` in exactly ``counts[c]`` distinct images.

    Each image gets a capacity ``1 + Poisson`` (scaled so capacities sum to ``counts.sum()``),
    so images hold from one to about eight classes. Classes are placed from the most to the
    least frequent into images drawn without replacement with weights equal to their remaining
    capacity (exponential race); images left empty then take a class from the fullest images
    (moving a class between images keeps every class's image count).
    """
    assert counts.max() <= num_images and counts.sum() >= num_images
    mean = counts.sum() / num_images
    capacity = 1.0 + rng.poisson(mean - 1.0, num_images) if mean > 1 else np.ones(num_images)
    remaining = capacity * (counts.sum() / capacity.sum())
    members: list[list[int]] = [[] for _ in range(num_images)]
    for c in np.argsort(-counts, kind="stable"):
        n = int(counts[c])
        key = rng.exponential(size=num_images) / np.maximum(remaining, 1e-3)
        chosen = np.argpartition(key, n - 1)[:n] if n < num_images else np.arange(num_images)
        for i in np.sort(chosen):
            members[i].append(int(c))
        remaining[chosen] -= 1.0
    load = np.array([len(m) for m in members])
    for i in np.flatnonzero(load == 0):
        donor = int(np.argmax(load))
        members[i].append(members[donor].pop(int(rng.integers(len(members[donor])))))
        load[donor] -= 1
        load[i] += 1
    return [sorted(m) for m in members]


def _instances(classes: Sequence[int], rng: np.random.Generator) -> list[int]:
    """Expand distinct classes into instances (1-3 per class), at most 10 per image."""
    mult = rng.choice(_MULTIPLICITY, size=len(classes), p=_MULTIPLICITY_P)
    while mult.sum() > max(_MAX_OBJECTS_PER_IMAGE, len(classes)) and mult.max() > 1:
        mult[int(np.argmax(mult))] -= 1
    return [c for c, m in zip(classes, mult) for _ in range(int(m))]


def plan_dataset(config: SynthConfig) -> DatasetPlan:
    """Decide categories and the contents of every image, without rendering anything.

    Train: class ``c`` goes in exactly ``planned_train_images`` images (the long tail). Val:
    every class goes in ``val_images * val_classes_per_image / K`` images, ± 1 (balanced).

    Args:
        config: dataset settings.

    Returns:
        The :class:`DatasetPlan`; deterministic for ``config``.

    Raises:
        LoceError: bad settings (see :meth:`SynthConfig.validate`), or too few classes to give
            every training image at least one object.
    """
    categories, head, rare_max, common_max = make_categories(config)
    k = config.num_classes
    by_id = np.array([c.id for c in categories])
    train_counts = np.array([c.planned_train_images for c in categories], dtype=np.int64)
    if train_counts.sum() < config.train_images:
        raise LoceError(
            f"synthetic dataset: {k} classes fill only {int(train_counts.sum())} class-image "
            f"pairs for {config.train_images} training images; use more --num-classes or fewer "
            "--train-images"
        )
    val_pairs = round(config.val_images * config.val_classes_per_image)
    rng = np.random.default_rng([config.seed, 102])
    val_counts = np.full(k, val_pairs // k, dtype=np.int64)
    val_counts[rng.permutation(k)[: val_pairs - int(val_counts.sum())]] += 1
    val_counts = np.minimum(val_counts, config.val_images)

    splits: dict[str, list[ImagePlan]] = {}
    first_id = {"train": 1, "val": config.train_images + 1}
    for split, counts, n_images in (
        ("train", train_counts, config.train_images),
        ("val", val_counts, config.val_images),
    ):
        rng = np.random.default_rng([config.seed, 103, _SPLIT_CODE[split]])
        members = _assign(counts, n_images, rng)
        plans = []
        for index, classes in enumerate(members):
            instances = _instances(classes, rng)
            absent = np.setdiff1d(np.arange(k), classes)
            n_neg = round(config.neg_fraction * len(absent))
            neg = np.sort(rng.choice(absent, n_neg, replace=False)) if n_neg else absent[:0]
            plans.append(
                ImagePlan(
                    split=split,
                    index=index,
                    image_id=first_id[split] + index,
                    category_ids=tuple(int(by_id[c]) for c in instances),
                    neg_category_ids=tuple(int(by_id[c]) for c in neg),
                )
            )
        splits[split] = plans
    return DatasetPlan(
        config=config,
        categories=tuple(categories),
        head_images=head,
        rare_max=rare_max,
        common_max=common_max,
        train=tuple(splits["train"]),
        val=tuple(splits["val"]),
    )


# --------------------------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------------------------


def _circle(n: int = 48, r: float = 1.0, cx: float = 0.0, cy: float = 0.0) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1)


def _regular(n: int, r: float = 1.0, phase: float = -np.pi / 2) -> np.ndarray:
    t = phase + np.arange(n) * 2 * np.pi / n
    return np.stack([r * np.cos(t), r * np.sin(t)], 1)


def _radial(radii: np.ndarray, phase: float = -np.pi / 2) -> np.ndarray:
    t = phase + np.arange(len(radii)) * 2 * np.pi / len(radii)
    return np.stack([radii * np.cos(t), radii * np.sin(t)], 1)


def _shape_ops(shape: str) -> list[tuple[np.ndarray, int]]:
    """Unit-size drawing operations ``(polygon [P,2] xy, fill 1 or 0)`` of a shape.

    Coordinates are in about ``[-1, 1]``, y pointing down; fill 0 cuts holes.
    """
    p = np.array
    if shape == "circle":
        return [(_circle(), 1)]
    if shape == "triangle":
        return [(_regular(3) + p([0.0, 0.25]), 1)]
    if shape == "square":
        return [(p([[-0.8, -0.8], [0.8, -0.8], [0.8, 0.8], [-0.8, 0.8]]), 1)]
    if shape == "star":
        return [(_radial(np.tile([1.0, 0.45], 5)), 1)]
    if shape == "ring":
        return [(_circle(), 1), (_circle(r=0.55), 0)]
    if shape == "cross":
        a = 0.32
        pts = [
            [-a, -1],
            [a, -1],
            [a, -a],
            [1, -a],
            [1, a],
            [a, a],
            [a, 1],
            [-a, 1],
            [-a, a],
            [-1, a],
            [-1, -a],
            [-a, -a],
        ]
        return [(p(pts, dtype=np.float64), 1)]
    if shape == "crescent":
        return [(_circle(), 1), (_circle(r=0.82, cx=0.45, cy=-0.1), 0)]
    if shape == "hexagon":
        return [(_regular(6, phase=0.0), 1)]
    if shape == "arrow":
        pts = [
            [-1, -0.28],
            [0.15, -0.28],
            [0.15, -0.7],
            [1, 0],
            [0.15, 0.7],
            [0.15, 0.28],
            [-1, 0.28],
        ]
        return [(p(pts, dtype=np.float64), 1)]
    if shape == "heart":
        t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        return [(np.stack([x / 17.0, (y + 2.5) / 17.0], 1), 1)]
    if shape == "semicircle":
        t = np.linspace(np.pi, 2 * np.pi, 33)
        return [(np.stack([np.cos(t), np.sin(t) + 0.45], 1), 1)]
    if shape == "ell":
        pts = [[-0.75, -1], [-0.15, -1], [-0.15, 0.4], [0.75, 0.4], [0.75, 1], [-0.75, 1]]
        return [(p(pts, dtype=np.float64), 1)]
    if shape == "teardrop":
        t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        return [(np.stack([np.cos(t) * 0.9, np.sin(t) * np.sin(t / 2) * 0.9], 1) * 1.1, 1)]
    if shape == "flower":
        t = np.arange(72) * 2 * np.pi / 72
        return [(_radial(0.72 + 0.28 * np.cos(6 * t)), 1)]
    if shape == "hourglass":
        pts = [[-0.8, -1], [0.8, -1], [0.16, 0], [0.8, 1], [-0.8, 1], [-0.16, 0]]
        return [(p(pts, dtype=np.float64), 1)]
    if shape == "lightning":
        pts = [
            [-0.15, -1],
            [0.6, -1],
            [0.2, -0.2],
            [0.6, -0.2],
            [-0.35, 1],
            [-0.05, 0.15],
            [-0.5, 0.15],
        ]
        return [(p(pts, dtype=np.float64), 1)]
    if shape == "gear":
        radii = np.tile([1.0, 1.0, 0.74, 0.74], 8)
        return [(_radial(radii, phase=0.0), 1), (_circle(r=0.3), 0)]
    if shape == "frame":
        outer = p([[-0.9, -0.9], [0.9, -0.9], [0.9, 0.9], [-0.9, 0.9]])
        return [(outer, 1), (outer * 0.55, 0)]
    raise ValueError(f"unknown shape {shape!r}; valid: {', '.join(SHAPES)}")


_SHAPE_CACHE: dict[str, list[tuple[np.ndarray, int]]] = {}


def _shape(shape: str) -> list[tuple[np.ndarray, int]]:
    if shape not in _SHAPE_CACHE:
        _SHAPE_CACHE[shape] = _shape_ops(shape)
    return _SHAPE_CACHE[shape]


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------

# scikit-image's bundled images: all public domain or CC0 (see their docstrings).
_PHOTO_NAMES = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field")
_TEXTURE_NAMES = ("camera", "brick", "grass", "gravel")
_PHOTO_CACHE: list[np.ndarray] = []


def _photos() -> list[np.ndarray]:
    """Bundled images as uint8 arrays (grey ones as [H,W]); loaded once per process."""
    if not _PHOTO_CACHE:
        import skimage.data

        for name in _PHOTO_NAMES + _TEXTURE_NAMES:
            _PHOTO_CACHE.append(np.ascontiguousarray(getattr(skimage.data, name)()))
    return _PHOTO_CACHE


def _smooth_noise(rng: np.random.Generator, size: int, cells: int, channels: int) -> np.ndarray:
    """Smooth random field in [0, 1], [size, size, channels] float32 (bicubic upsampling)."""
    from PIL import Image

    low = (rng.random((cells, cells, channels)) * 255).astype(np.uint8)
    img = Image.fromarray(low if channels == 3 else low[:, :, 0])
    up = np.asarray(img.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32) / 255.0
    return up if channels == 3 else up[:, :, None]


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A cluttered background, [S, S, 3] float32 in [0, 1]."""
    from PIL import Image, ImageDraw

    if rng.random() < 0.7:
        photos = _photos()
        src = photos[int(rng.integers(len(photos)))]
        h, w = src.shape[:2]
        side = int(rng.uniform(0.25, 1.0) * min(h, w))
        y0 = int(rng.integers(0, h - side + 1))
        x0 = int(rng.integers(0, w - side + 1))
        crop = Image.fromarray(src[y0 : y0 + side, x0 : x0 + side])
        crop = crop.resize((size, size), Image.Resampling.BILINEAR)
        bg = np.asarray(crop, dtype=np.float32) / 255.0
        if bg.ndim == 2:  # grey texture: tint it
            bg = bg[:, :, None] * rng.uniform(0.5, 1.0, 3).astype(np.float32)
        if rng.random() < 0.5:
            bg = bg[:, ::-1]
        mix = rng.uniform(0.0, 0.35)
    else:
        bg = _smooth_noise(rng, size, int(rng.integers(3, 9)), 3)
        mix = rng.uniform(0.2, 0.5)
    noise = _smooth_noise(rng, size, int(rng.integers(4, 16)), 3)
    bg = (1 - mix) * bg + mix * noise
    bg = (bg - 0.5) * rng.uniform(0.6, 1.1) + 0.5 + rng.uniform(-0.12, 0.12)

    # Distractors that are not categories: irregular blobs and strokes.
    img = Image.fromarray((np.clip(bg, 0, 1) * 255).astype(np.uint8))
    for _ in range(int(rng.integers(0, 4))):
        blob = _smooth_noise(rng, size, int(rng.integers(3, 7)), 1)[:, :, 0]
        level = rng.uniform(0.7, 0.85)
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        img.paste(colour, mask=Image.fromarray(((blob > level) * 255).astype(np.uint8)))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(2, 8))):
        n_pts = int(rng.integers(2, 6))
        pts = [tuple(float(v) for v in rng.uniform(-0.1, 1.1, 2) * size) for _ in range(n_pts)]
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        width = int(rng.integers(1, max(2, size // 56) + 1))
        draw.line(pts, fill=colour, width=width, joint="curve")
    return np.asarray(img, dtype=np.float32) / 255.0


@dataclass
class _Object:
    category: SynthCategory
    x0: int  # local canvas origin in image coordinates (may be outside the image)
    y0: int
    mask: np.ndarray  # [h, w] bool, the full (unoccluded, unclipped) shape
    cx: float
    cy: float
    diameter: float
    angle: float
    full_area: int = 0
    visible: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), bool))  # [S, S]


def _rasterize(
    ops: list[tuple[np.ndarray, int]], cx: float, cy: float, sx: float, sy: float, angle: float
) -> tuple[int, int, np.ndarray]:
    """Rasterize a unit shape scaled by (sx, sy), rotated and centred at (cx, cy).

    Returns:
        ``(x0, y0, mask)``: the local canvas origin and its [h, w] bool mask.
    """
    from PIL import Image, ImageDraw

    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    polys = [((pts * np.array([sx, sy])) @ rot.T + np.array([cx, cy]), fill) for pts, fill in ops]
    allpts = np.concatenate([q for q, _ in polys])
    x0 = int(math.floor(allpts[:, 0].min())) - 1
    y0 = int(math.floor(allpts[:, 1].min())) - 1
    w = int(math.ceil(allpts[:, 0].max())) - x0 + 2
    h = int(math.ceil(allpts[:, 1].max())) - y0 + 2
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    for q, fill in polys:
        # PIL samples pixel (i, j) at its centre (i + 0.5, j + 0.5) in continuous coordinates;
        # shifting by 0.5 makes the fill follow the continuous polygon.
        local = q - np.array([x0 + 0.5, y0 + 0.5])
        draw.polygon([tuple(v) for v in local.tolist()], fill=255 * fill)
    return x0, y0, np.asarray(canvas) > 0


def _place(
    rng: np.random.Generator, config: SynthConfig, category: SynthCategory, small: bool
) -> tuple[int, int, np.ndarray, float, float, float, float]:
    """Draw a random pose for an object and rasterize it.

    The extent is log-uniform in ``[min_object_px, max_object_frac * S]`` (``small``: in the
    lower half of that range, in log scale), the aspect ratio in ``[0.7, 1.4]``, the rotation
    uniform; the centre keeps most of the object inside the frame.
    """
    size = config.image_size
    lo, hi = math.log(config.min_object_px), math.log(config.max_object_frac * size)
    if small:
        hi = 0.5 * (lo + hi)
    diameter = math.exp(rng.uniform(lo, hi))
    aspect = math.exp(rng.uniform(math.log(0.7), math.log(1.4)))
    angle = rng.uniform(0, 2 * math.pi)
    margin = 0.3 * diameter
    cx = rng.uniform(margin, size - margin)
    cy = rng.uniform(margin, size - margin)
    sx, sy = 0.5 * diameter * math.sqrt(aspect), 0.5 * diameter / math.sqrt(aspect)
    x0, y0, mask = _rasterize(_shape(category.shape), cx, cy, sx, sy, angle)
    return x0, y0, mask, cx, cy, diameter, angle


def _in_frame(x0: int, y0: int, mask: np.ndarray, size: int) -> np.ndarray:
    """Paste a local mask into a [size, size] bool frame (clipping at the borders)."""
    frame = np.zeros((size, size), dtype=bool)
    h, w = mask.shape
    fx0, fy0 = max(x0, 0), max(y0, 0)
    fx1, fy1 = min(x0 + w, size), min(y0 + h, size)
    if fx1 > fx0 and fy1 > fy0:
        frame[fy0:fy1, fx0:fx1] = mask[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0]
    return frame


def _texture(
    rng: np.random.Generator, obj: _Object, size: int
) -> tuple[np.ndarray, tuple[slice, slice]]:
    """Colour of the object over its in-frame bounding box, [h, w, 3] float32."""
    h, w = obj.mask.shape
    fx0, fy0 = max(obj.x0, 0), max(obj.y0, 0)
    fx1, fy1 = min(obj.x0 + w, size), min(obj.y0 + h, size)
    ys = np.arange(fy0, fy1, dtype=np.float32)[:, None] + 0.5 - obj.cy
    xs = np.arange(fx0, fx1, dtype=np.float32)[None, :] + 0.5 - obj.cx
    # Pattern frame: rotates with the object, plus a per-instance offset.
    phi = obj.angle + rng.uniform(0, math.pi)
    pu = xs * math.cos(phi) + ys * math.sin(phi)
    pv = -xs * math.sin(phi) + ys * math.cos(phi)
    cat = obj.category
    base = np.array(COLOURS[cat.colour], dtype=np.float32)
    base = np.clip(base * rng.uniform(0.85, 1.1) + rng.normal(0, 0.025, 3), 0, 1).astype(np.float32)
    second = _DARK if cat.colour in _LIGHT_COLOURS else _LIGHT
    d = obj.diameter
    if cat.pattern == "solid":
        t = np.zeros(pu.shape, dtype=np.float32)
    elif cat.pattern == "striped":
        period = max(6.0, d / rng.uniform(2.5, 4.0))
        t = (np.floor((pu + rng.uniform(0, period)) / (period / 2)) % 2).astype(np.float32)
    elif cat.pattern == "dotted":
        period = max(6.0, d / rng.uniform(3.0, 4.5))
        du = np.mod(pu + rng.uniform(0, period), period) - period / 2
        dv = np.mod(pv + rng.uniform(0, period), period) - period / 2
        t = (du**2 + dv**2 < (0.3 * period) ** 2).astype(np.float32)
    elif cat.pattern == "checkered":
        cell = max(4.0, d / rng.uniform(3.0, 5.0))
        t = ((np.floor(pu / cell) + np.floor(pv / cell)) % 2).astype(np.float32)
    elif cat.pattern == "gradient":
        t = np.clip(pu / d + 0.5, 0.0, 1.0).astype(np.float32) * 0.9
    else:  # pragma: no cover - PATTERNS is closed
        raise AssertionError(cat.pattern)
    colour = base * (1 - t[..., None]) + second * t[..., None]
    # Soft lighting and sensor noise so no two instances are pixel-identical.
    light_dir = rng.uniform(0, 2 * math.pi)
    light = 1.0 + 0.12 * (xs * math.cos(light_dir) + ys * math.sin(light_dir)) / max(d, 1.0)
    colour = colour * light[..., None] + rng.normal(0, 0.02, colour.shape).astype(np.float32)
    return colour.astype(np.float32), (slice(fy0, fy1), slice(fx0, fx1))


@dataclass
class RenderedImage:
    """Output of :func:`render_image`.

    Attributes:
        image: [S, S, 3] uint8 RGB image.
        category_ids: category of each annotated instance, bottom to top.
        visible_masks: [S, S] bool visible silhouette of each instance (same order).
        full_areas: pixel area of each instance's whole shape, before occlusion and clipping.
        dropped: planned instances that could not be placed without hiding others.
    """

    image: np.ndarray
    category_ids: list[int]
    visible_masks: list[np.ndarray]
    full_areas: list[int]
    dropped: int


def render_image(
    plan: ImagePlan, categories: Sequence[SynthCategory], config: SynthConfig
) -> RenderedImage:
    """Render one planned image with its exact visible masks.

    The objects are placed in a random z-order, each on top of the ones before. A position is
    accepted when the new object is at least 75% inside the frame and leaves every object below
    it at least ``min_visible`` of its area (and 40 pixels) visible; after 40 rejected tries
    (shrinking the object as it goes) the object is tried underneath all others, and only then
    dropped.

    Args:
        plan: the image's plan.
        categories: all categories, ordered by id.
        config: dataset settings.

    Returns:
        The :class:`RenderedImage`; deterministic for ``(config.seed, plan.split, plan.index)``.
    """
    size = config.image_size
    rng = np.random.default_rng([config.seed, 104, _SPLIT_CODE[plan.split], plan.index])
    by_id = {c.id: c for c in categories}
    canvas = _background(rng, size)
    order = [plan.category_ids[i] for i in rng.permutation(len(plan.category_ids))]
    objects: list[_Object] = []  # bottom to top
    dropped = 0

    for cat_id in order:
        category = by_id[cat_id]
        placed = None
        for attempt in range(2 * _PLACEMENT_TRIES):
            # Half-way through each phase, retry smaller: small objects fit more easily.
            small = attempt % _PLACEMENT_TRIES >= _PLACEMENT_TRIES // 2
            x0, y0, mask, cx, cy, diameter, angle = _place(rng, config, category, small)
            full_area = int(mask.sum())
            frame = _in_frame(x0, y0, mask, size)
            in_frame = int(frame.sum())
            if in_frame < _MIN_VISIBLE_PIXELS or in_frame < _MIN_IN_FRAME * full_area:
                continue
            on_top = attempt < _PLACEMENT_TRIES
            if on_top:
                ok = all(
                    _enough_visible(int((o.visible & ~frame).sum()), o.full_area, config)
                    for o in objects
                )
                if not ok:
                    continue
            else:
                covered = np.zeros((size, size), dtype=bool)
                for o in objects:
                    covered |= o.visible
                if not _enough_visible(int((frame & ~covered).sum()), full_area, config):
                    continue
            obj = _Object(category, x0, y0, mask, cx, cy, diameter, angle, full_area, frame)
            if on_top:
                for o in objects:
                    o.visible = o.visible & ~frame
                objects.append(obj)
            else:
                obj.visible = frame & ~covered
                objects.insert(0, obj)
            placed = obj
            break
        if placed is None:
            dropped += 1

    # Paint bottom to top; the visible masks were kept up to date while placing.
    for obj in objects:
        colour, (sy, sx) = _texture(rng, obj, size)
        local = obj.mask[sy.start - obj.y0 : sy.stop - obj.y0, sx.start - obj.x0 : sx.stop - obj.x0]
        region = canvas[sy, sx]
        region[local] = colour[local]
    canvas += rng.normal(0, 0.015, canvas.shape).astype(np.float32)
    image = (np.clip(canvas, 0, 1) * 255 + 0.5).astype(np.uint8)
    return RenderedImage(
        image=image,
        category_ids=[o.category.id for o in objects],
        visible_masks=[o.visible for o in objects],
        full_areas=[o.full_area for o in objects],
        dropped=dropped,
    )


def _enough_visible(visible: int, full_area: int, config: SynthConfig) -> bool:
    return visible >= config.min_visible * full_area and visible >= _MIN_VISIBLE_PIXELS


# --------------------------------------------------------------------------------------------
# Masks to polygons
# --------------------------------------------------------------------------------------------


def _drop_collinear(ring: np.ndarray) -> np.ndarray:
    """Remove vertices lying on the straight line through their neighbours (exact test)."""
    prev = np.roll(ring, 1, axis=0)
    nxt = np.roll(ring, -1, axis=0)
    cross = (ring[:, 0] - prev[:, 0]) * (nxt[:, 1] - ring[:, 1]) - (ring[:, 1] - prev[:, 1]) * (
        nxt[:, 0] - ring[:, 0]
    )
    keep = cross != 0
    return ring[keep] if keep.sum() >= 3 else ring


def mask_to_polygons(mask: np.ndarray) -> list[list[float]]:
    """Polygons (LVIS/COCO ``segmentation``) whose pycocotools decoding equals ``mask``.

    Each 4-connected component gives one polygon along its pixel borders. Holes are joined to
    their component's outer boundary by a bridge walked there and back: pycocotools fills
    polygons with the even-odd rule, so the doubled bridge cancels and the hole stays empty.

    Args:
        mask: [H, W] bool mask.

    Returns:
        A list of flat ``[x1, y1, x2, y2, ...]`` lists (coordinates are multiples of 0.5); empty
        for an empty mask.
    """
    from skimage.measure import find_contours, label, regionprops

    mask = np.asarray(mask, dtype=bool)
    polygons: list[list[float]] = []
    if not mask.any():
        return polygons
    # find_contours(fully_connected="low") treats foreground as 4-connected: label the same way.
    labels = label(mask, connectivity=1)
    for region in regionprops(labels):
        r0, c0, r1, c1 = region.bbox
        sub = np.pad(labels[r0:r1, c0:c1] == region.label, 1).astype(np.float32)
        rings = []
        for contour in find_contours(sub, 0.5):
            # (row, col) on the padded crop -> (x, y) in COCO pixel coordinates, where pixel
            # (i, j) covers [j, j + 1) x [i, i + 1): contour points fall on pixel borders.
            ring = np.stack([contour[:-1, 1] + c0 - 0.5, contour[:-1, 0] + r0 - 0.5], axis=1)
            rings.append(_drop_collinear(ring))
        areas = [
            abs(
                float(np.dot(r[:, 0], np.roll(r[:, 1], -1)) - np.dot(r[:, 1], np.roll(r[:, 0], -1)))
            )
            for r in rings
        ]
        outer_index = int(np.argmax(areas))
        outer = rings[outer_index]
        bridges: dict[int, list[np.ndarray]] = {}
        for i, hole in enumerate(rings):
            if i != outer_index:
                j = int(np.argmin(((outer - hole[0]) ** 2).sum(axis=1)))
                bridges.setdefault(j, []).append(hole)
        points: list[np.ndarray] = []
        for j, vertex in enumerate(outer):
            points.append(vertex)
            for hole in bridges.get(j, []):
                points.extend(hole)
                points.append(hole[0])
                points.append(vertex)
        flat = np.round(np.asarray(points) * 2) / 2
        polygons.append([float(v) for v in flat.ravel()])
    return polygons


# --------------------------------------------------------------------------------------------
# Writing the dataset
# --------------------------------------------------------------------------------------------


def _annotate(polygons: list[list[float]], size: int) -> tuple[float, list[float]]:
    """Area and xywh box of the mask the polygons decode to (pycocotools)."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.merge(mask_utils.frPyObjects(polygons, size, size))
    area = float(mask_utils.area(rle))
    bbox = [float(v) for v in mask_utils.toBbox(rle)]
    return area, bbox


# Per-process state of the rendering workers.
_WORKER: dict[str, Any] = {}


def _init_worker(plan: DatasetPlan, out_dir: str) -> None:
    _WORKER["plan"] = plan
    _WORKER["out_dir"] = out_dir


def _render_and_save(task: tuple[str, int]) -> tuple[int, list[tuple[int, list, float, list]], int]:
    """Render one image, write its JPEG and return its annotations (worker entry point)."""
    from PIL import Image

    split, index = task
    plan: DatasetPlan = _WORKER["plan"]
    image_plan = plan.split(split)[index]
    rendered = render_image(image_plan, plan.categories, plan.config)
    path = os.path.join(_WORKER["out_dir"], image_plan.relative_path)
    # 4:4:4 chroma: the default 4:2:0 subsampling blurs the colour patterns of small objects.
    # Not fsync-ed one by one: the annotation files, written durably last, complete the set.
    with atomic_write(path, "wb", what="image", fsync=False) as f:
        Image.fromarray(rendered.image).save(
            f, format="JPEG", quality=plan.config.jpeg_quality, subsampling=0
        )
    anns = []
    for cat_id, visible in zip(rendered.category_ids, rendered.visible_masks):
        polygons = mask_to_polygons(visible)
        area, bbox = _annotate(polygons, plan.config.image_size)
        anns.append((cat_id, polygons, area, bbox))
    return image_plan.image_id, anns, rendered.dropped


def _write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (see :mod:`loce.fileio`), compact."""
    atomic_write_json(path, data, what="annotation file", indent=None, separators=(",", ":"))


_OUTPUTS = ("train", "val", "annotations", "summary.json")


def _prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise LoceError(f"output {out_dir}: exists and is not a directory; choose another --out")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise LoceError(
                f"output directory {out_dir} is not empty; choose an empty or new directory, "
                "or pass --overwrite to replace a dataset written there before"
            )
        # Only our own outputs are removed; anything else in the folder is left alone.
        for name in _OUTPUTS:
            target = out_dir / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
    for split in SPLITS:
        ensure_directory(out_dir / split, what="dataset folder")
    ensure_directory(out_dir / "annotations", what="dataset folder")


def _lvis_json(
    plan: DatasetPlan,
    split: str,
    annotations: dict[int, list[tuple[int, list, float, list]]],
    train_stats: dict[int, tuple[int, int]],
    first_ann_id: int = 1,
) -> dict[str, Any]:
    cfg = plan.config
    images = []
    anns = []
    for image_plan in plan.split(split):
        url = URL_PREFIX + image_plan.relative_path
        images.append(
            {
                "id": image_plan.image_id,
                "width": cfg.image_size,
                "height": cfg.image_size,
                "coco_url": url,
                "flickr_url": url,
                "license": 1,
                "neg_category_ids": list(image_plan.neg_category_ids),
                "not_exhaustive_category_ids": [],
            }
        )
        for cat_id, polygons, area, bbox in annotations[image_plan.image_id]:
            anns.append(
                {
                    "id": first_ann_id + len(anns),
                    "image_id": image_plan.image_id,
                    "category_id": cat_id,
                    "bbox": bbox,
                    "area": area,
                    "segmentation": polygons,
                    "iscrowd": 0,
                }
            )
    categories = []
    for cat in plan.categories:
        image_count, instance_count = train_stats[cat.id]
        frequency = _frequency_of(image_count, plan.rare_max, plan.common_max)
        categories.append(cat.lvis_dict(image_count, instance_count, frequency))
    return {
        "info": {
            "description": f"loce synthetic long-tailed dataset ({split} split)",
            "version": "1.0",
            "year": 2021,
            "contributor": "loce",
            "url": "",
            "date_created": "",
        },
        "licenses": [
            {
                "id": 1,
                "name": "CC0 1.0 (synthetic; backgrounds from scikit-image's public-domain/CC0 data)",
                "url": "https://creativecommons.org/publicdomain/zero/1.0/",
            }
        ],
        "images": images,
        "annotations": anns,
        "categories": categories,
    }


def _split_stats(data: dict[str, Any]) -> dict[int, tuple[int, int]]:
    """``category id -> (image count, instance count)`` of an LVIS dict."""
    images: dict[int, set[int]] = {}
    instances: dict[int, int] = {}
    for ann in data["annotations"]:
        images.setdefault(ann["category_id"], set()).add(ann["image_id"])
        instances[ann["category_id"]] = instances.get(ann["category_id"], 0) + 1
    return {c: (len(images[c]), instances[c]) for c in images}


def class_frequency_summary(
    train: dict[str, Any], val: dict[str, Any] | None, rare_max: int, common_max: int
) -> dict[str, Any]:
    """Per-class image and instance counts, r/c/f groups and thresholds of a dataset.

    Args:
        train: the training LVIS dict (its annotations define the counts and groups).
        val: the validation LVIS dict, or ``None``.
        rare_max: largest training image count of a rare class.
        common_max: largest training image count of a common class.

    Returns:
        ``{"thresholds": {...}, "groups": {"r": n, "c": n, "f": n}, "splits": {...},
        "classes": [{"id", "name", "frequency", "train_images", "train_instances",
        "val_images", "val_instances"}, ...]}`` with classes sorted by training images,
        most frequent first.
    """
    train_stats = _split_stats(train)
    val_stats = _split_stats(val) if val is not None else {}
    classes = []
    for cat in train["categories"]:
        n_img, n_inst = train_stats.get(cat["id"], (0, 0))
        v_img, v_inst = val_stats.get(cat["id"], (0, 0))
        classes.append(
            {
                "id": cat["id"],
                "name": cat["name"],
                "frequency": _frequency_of(n_img, rare_max, common_max),
                "train_images": n_img,
                "train_instances": n_inst,
                "val_images": v_img,
                "val_instances": v_inst,
            }
        )
    classes.sort(key=lambda c: (-c["train_images"], c["id"]))
    groups = {g: sum(c["frequency"] == g for c in classes) for g in "rcf"}
    splits = {"train": {"images": len(train["images"]), "annotations": len(train["annotations"])}}
    if val is not None:
        splits["val"] = {"images": len(val["images"]), "annotations": len(val["annotations"])}
    return {
        "thresholds": {
            "rare": f"1-{rare_max} training images",
            "common": f"{rare_max + 1}-{common_max} training images",
            "frequent": f"> {common_max} training images",
            "rare_max_images": rare_max,
            "common_max_images": common_max,
        },
        "groups": groups,
        "splits": splits,
        "classes": classes,
    }


def format_summary(summary: dict[str, Any]) -> str:
    """The class-frequency table of :func:`class_frequency_summary` as text."""
    th = summary["thresholds"]
    classes = summary["classes"]
    width = max([len("class")] + [len(c["name"]) for c in classes])
    lines = [
        f"{'id':>3}  {'class':<{width}}  freq  {'train img':>9}  {'train inst':>10}  "
        f"{'val img':>7}  {'val inst':>8}"
    ]
    for c in classes:
        lines.append(
            f"{c['id']:>3}  {c['name']:<{width}}  {c['frequency']:^4}  {c['train_images']:>9}  "
            f"{c['train_instances']:>10}  {c['val_images']:>7}  {c['val_instances']:>8}"
        )
    g = summary["groups"]
    n = max(len(classes), 1)
    lines.append(
        f"groups: r={g['r']} ({100 * g['r'] / n:.0f}%)  c={g['c']} ({100 * g['c'] / n:.0f}%)  "
        f"f={g['f']} ({100 * g['f'] / n:.0f}%)   thresholds: r {th['rare']}, c {th['common']}, "
        f"f {th['frequent']}"
    )
    parts = [
        f"{name}: {s['images']} images, {s['annotations']} instances"
        for name, s in summary["splits"].items()
    ]
    lines.append("   ".join(parts))
    return "\n".join(lines)


def _default_workers(n_images: int) -> int:
    if n_images < 150:  # start-up of worker processes costs more than it saves
        return 1
    return max(1, min(os.cpu_count() or 1, 4))


def generate(
    out_dir: str | os.PathLike[str],
    config: SynthConfig,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Render the dataset to ``out_dir`` and return its summary.

    Args:
        out_dir: output folder (created); must be empty unless ``overwrite``.
        config: dataset settings.
        workers: rendering processes; ``None`` picks ``min(cpu count, 4)`` (1 for small
            datasets); 1 renders in this process. The output does not depend on it.
        overwrite: replace ``train/``, ``val/``, ``annotations/`` and ``summary.json`` of a
            previous run in a non-empty ``out_dir`` (other files are left alone).
        progress: show a progress bar (tqdm) on stderr.

    Returns:
        The summary written to ``out_dir/summary.json``: :func:`class_frequency_summary` plus
        ``config``, ``head_class_images`` and ``dropped_instances`` (planned instances that
        could not be placed; 0 in practice).

    Raises:
        LoceError: bad settings, a non-empty ``out_dir`` without ``overwrite``, or an output
            that cannot be written.
    """
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise LoceError(f"workers={workers!r}: expected a positive integer")
    plan = plan_dataset(config)
    out = Path(out_dir)
    try:
        _prepare_out_dir(out, overwrite)
    except OSError as err:
        raise LoceError(f"output directory {out}: cannot be prepared ({err})") from err

    tasks = [(split, i) for split in SPLITS for i in range(len(plan.split(split)))]
    n_workers = workers if workers is not None else _default_workers(len(tasks))
    results: dict[int, list[tuple[int, list, float, list]]] = {}
    dropped = 0
    from tqdm import tqdm

    bar = tqdm(total=len(tasks), desc="synth", unit="img", disable=not progress)
    try:
        if n_workers == 1:
            _init_worker(plan, str(out))
            outputs: Iterable = map(_render_and_save, tasks)
            pool = None
        else:
            import multiprocessing

            # "spawn": the parent may hold threads (torch, tests) that fork would copy mid-flight.
            ctx = multiprocessing.get_context("spawn")
            pool = ctx.Pool(n_workers, initializer=_init_worker, initargs=(plan, str(out)))
            outputs = pool.imap(_render_and_save, tasks, chunksize=16)
        try:
            for image_id, anns, n_dropped in outputs:
                results[image_id] = anns
                dropped += n_dropped
                bar.update()
        except BaseException:
            if pool is not None:  # interrupted or failed: stop the workers now
                pool.terminate()
                pool.join()
            raise
        if pool is not None:
            pool.close()
            pool.join()
    except OSError as err:
        raise LoceError(f"output directory {out}: cannot write images ({err})") from err
    finally:
        bar.close()
        _WORKER.clear()

    # Training statistics first: the val file's categories carry them, as LVIS's do.
    empty_stats = {c.id: (0, 0) for c in plan.categories}
    train = _lvis_json(plan, "train", results, empty_stats)
    train_stats = {**empty_stats, **_split_stats(train)}
    train = _lvis_json(plan, "train", results, train_stats)
    # Annotation ids are unique across the two files, as in LVIS.
    val = _lvis_json(plan, "val", results, train_stats, len(train["annotations"]) + 1)
    summary = class_frequency_summary(train, val, plan.rare_max, plan.common_max)
    summary = {
        "config": dataclasses.asdict(config),
        "head_class_images": round(plan.head_images, 2),
        "dropped_instances": dropped,
        **summary,
    }
    try:
        _write_json(out / "annotations" / "train.json", train)
        _write_json(out / "annotations" / "val.json", val)
        _write_json(out / "summary.json", summary)
    except OSError as err:
        raise LoceError(f"output directory {out}: cannot write annotations ({err})") from err
    return summary
