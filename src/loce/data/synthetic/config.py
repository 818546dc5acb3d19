"""Settings of the synthetic dataset, its presets and its r/c/f thresholds.

LVIS calls a class rare with 1-10 training images, common with 11-100 and frequent above 100.
Those numbers do not fit a dataset of a few thousand images, so the thresholds are placed in log
space where they give LVIS v1's group shares (28% r, 38% c, 34% f): ``rare_max = round(n_max **
0.28)``, ``common_max = round(n_max ** 0.66)``, with ``n_max`` the head class's training image
count. For ``default`` (``n_max`` = 569) that is **r: 1-6 images, c: 7-66, f: > 66** (14 r,
18 c, 16 f of 48 classes); for ``tiny``, r: 1-2, c: 3-6, f: > 6 (4 of each).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from loce.data.synthetic.shapes import SHAPES
from loce.errors import LoceError

SPLITS: tuple[str, str] = ("train", "val")
_SPLIT_CODE = {"train": 0, "val": 1}
# LVIS v1's group shares (337 r, 461 c, 405 f of 1203) reached on a log-linear curve when the
# thresholds sit at these fractions of log(n_max).
_RARE_EXPONENT = 0.28
_COMMON_EXPONENT = 0.66


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
