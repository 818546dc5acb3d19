"""What to draw: the categories, their training frequencies and the classes of every image.

* **Families of confusable classes.** Every class is a (shape, colour, pattern) triple; the
  classes of a family share the shape and sit on a small colour x pattern grid, so a rare "blue
  striped star" has a sibling of its colour ("blue solid star") and one of its pattern ("red
  striped star"). Ranks are dealt so that every family holds a frequent, a common and a rare
  class: every rare class has frequent siblings a biased classifier will confuse it with.
* **A real long tail on train.** Log image count is linear in frequency rank, from ``n_max``
  down to 1 image: the concave rank-frequency curve of LVIS v1's train split (a power law
  between the same end points leaves only a handful of frequent classes). ``n_max`` is solved
  so that a training image holds ``train_classes_per_image`` classes on average.
* **A class-balanced val split.** Every class is in ``val_images * val_classes_per_image / K``
  val images (± 1), so APr is measured on as many instances as APf.
* ``neg_category_ids`` lists a random ``neg_fraction`` of the categories absent from the image.

The plan comes from one generator seeded by ``seed``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from loce.data.synthetic.config import (
    _SPLIT_CODE,
    SPLITS,
    SynthConfig,
    _frequency_of,
    frequency_thresholds,
)
from loce.data.synthetic.shapes import SHAPES
from loce.errors import LoceError

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
# Instances of one class in one image: mostly one, sometimes a small group.
_MULTIPLICITY = (1, 2, 3)
_MULTIPLICITY_P = (0.75, 0.18, 0.07)
_MAX_OBJECTS_PER_IMAGE = 10


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
