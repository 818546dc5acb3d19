"""Settings of the LOCE fine-tune (docs/method.md §2-§5, §8): the ``loce`` config section.

``loce.enabled: true`` builds the Mask R-CNN with :class:`loce.models.loce_heads.LoceRoIHeads`
(mean classification score, Equilibrium Loss, Memory-augmented Feature Sampling) and runs the
initialisation pass before the first step. Defaults are the original's values; the one
deliberate change is the storage dtype of the feature memory (float16 instead of float32).

Memory cost of the feature memory, per training process (it is not shared across ranks,
docs/method.md §4): ``K x memory_capacity x D x 7 x 7 x itemsize`` bytes, with ``D`` the FPN width.
At LVIS v1 (K = 1203, capacity 80, D = 256) that is 4.83 GB (4.5 GiB) in float32, as in the
original, and 2.41 GB (2.25 GiB) in float16 or bfloat16; 8 processes on one host hold 8 times
that. Saving it in checkpoints (``save_memory``) writes one file of that size per process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from loce.config._checks import check

__all__ = ["LoceConfig"]


@dataclass
class LoceConfig:
    """The LOCE stage-2 method: mean scores, Equilibrium Loss, feature memory, init pass."""

    # Build the LOCE RoI heads. False: the plain Mask R-CNN (stage 1, or a cross-entropy
    # fine-tune), bit for bit.
    enabled: bool = False
    # Mean-score EMA momentum per observation (docs/method.md §2): s <-
    # alpha**n s + (1 - alpha**n) m.
    alpha: float = 0.9
    # Fixed mean score of background (class 0) and initial score of every foreground class.
    bg_score: float = 0.01
    init_score: float = 0.01
    # Classification loss: the Equilibrium Loss (true) or plain cross-entropy (false; for
    # ablations: the scores are still tracked and still drive the memory sampler).
    equilibrium_loss: bool = True
    # Memory-augmented Feature Sampling (false: no memory, no appended rows; for ablations).
    feature_memory: bool = True
    # Features kept per class (docs/method.md §8: 80).
    memory_capacity: int = 80
    # Storage dtype of the memory. float16 halves the original's float32 (2.25 GiB instead of
    # 4.5 GiB per process at LVIS v1); the features are RoIAlign outputs of a frozen FPN, well
    # inside float16's range.
    memory_dtype: Literal["float32", "float16", "bfloat16"] = "float16"
    # Where the memory lives: "auto" (the model's device when it is a CUDA GPU: no host-device
    # copies, 2.25 GiB of GPU memory at LVIS v1 in float16; host RAM otherwise), "cpu" (host
    # RAM, the original's choice) or "model" (the model's device, whatever it is).
    memory_device: Literal["auto", "cpu", "model"] = "auto"
    # Classes drawn from the memory per step and process, and features per drawn class
    # (docs/method.md §8: 8 x 4 = up to 32 appended rows).
    classes_per_step: int = 8
    features_per_class: int = 4
    # Run the initialisation pass (docs/method.md §5) before the first step: a forward-only pass
    # over a class-balanced image list that fills the memory and warms up the scores.
    init_pass: bool = True
    # Images per class per process in the initialisation pass; null: memory_capacity // 16
    # (5 for 80: every instance gives 16 jittered boxes, so 5 images fill a queue).
    init_images_per_class: int | None = None
    # Save each process's memory next to every checkpoint (checkpoints/<name>.memory.rank<R>.pth;
    # only the newest is kept), so that --resume restores it and skips the initialisation
    # pass. The scores are always saved (they are part of the model's state dict). False:
    # a resumed run re-runs the initialisation pass to refill the memory.
    save_memory: bool = True

    @property
    def images_per_class(self) -> int:
        """Images per class per process of the initialisation pass."""
        if self.init_images_per_class is not None:
            return self.init_images_per_class
        return max(1, self.memory_capacity // 16)

    def validate(self, prefix: str = "loce") -> None:
        """Check for impossible values.

        Raises:
            ConfigError: naming the key, e.g. ``loce.alpha must be in [0, 1), got 1.5``.
        """
        check(0.0 <= self.alpha < 1.0, f"{prefix}.alpha", f"must be in [0, 1), got {self.alpha}")
        check(0.0 < self.bg_score <= 1.0, f"{prefix}.bg_score",
              f"must be in (0, 1] (its log shifts the background logit), got {self.bg_score}")
        check(0.0 < self.init_score <= 1.0, f"{prefix}.init_score",
              f"must be in (0, 1], got {self.init_score}")
        check(self.memory_capacity >= 1, f"{prefix}.memory_capacity",
              f"must be >= 1, got {self.memory_capacity}")
        check(self.classes_per_step >= 0, f"{prefix}.classes_per_step",
              f"must be >= 0, got {self.classes_per_step}")
        check(self.features_per_class >= 0, f"{prefix}.features_per_class",
              f"must be >= 0, got {self.features_per_class}")
        check(self.init_images_per_class is None or self.init_images_per_class >= 1,
              f"{prefix}.init_images_per_class",
              f"must be >= 1 or null, got {self.init_images_per_class}")
