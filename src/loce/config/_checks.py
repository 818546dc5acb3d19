"""The checks behind the ``validate`` methods of the config sections.

Each raises :class:`loce.errors.ConfigError` with the key path first, e.g.
``model.roi.positive_fraction must be in (0, 1], got 1.5``.
"""

from __future__ import annotations

from typing import Any

from loce.errors import ConfigError

__all__ = ["check", "check_fraction", "check_positive_values", "check_sampling"]


def check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{key} {msg}")


def check_fraction(value: float, key: str, *, open_low: bool = True) -> None:
    ok = (0.0 < value <= 1.0) if open_low else (0.0 <= value <= 1.0)
    interval = "(0, 1]" if open_low else "[0, 1]"
    check(ok, key, f"must be in {interval}, got {value}")


def check_positive_values(values: list[float], key: str, count: int, names: str) -> None:
    """``values`` holds ``count`` positive numbers; ``names`` says what they are, e.g. "RGB"."""
    check(len(values) == count, key, f"must have {count} values ({names}), got {len(values)}")
    for i, v in enumerate(values):
        check(v > 0, f"{key}[{i}]", f"must be positive, got {v}")


def check_sampling(section: Any, prefix: str) -> None:
    """The IoU thresholds and the sampling of a section that labels and samples boxes (the
    RPN's anchors, the RoI heads' proposals): ``fg_iou_thresh``, ``bg_iou_thresh``,
    ``batch_size_per_image`` and ``positive_fraction``."""
    check_fraction(section.fg_iou_thresh, f"{prefix}.fg_iou_thresh", open_low=False)
    check_fraction(section.bg_iou_thresh, f"{prefix}.bg_iou_thresh", open_low=False)
    check(section.bg_iou_thresh <= section.fg_iou_thresh, f"{prefix}.bg_iou_thresh",
          f"must be <= fg_iou_thresh ({section.fg_iou_thresh}), got {section.bg_iou_thresh}")
    check(section.batch_size_per_image >= 1, f"{prefix}.batch_size_per_image",
          f"must be >= 1, got {section.batch_size_per_image}")
    check_fraction(section.positive_fraction, f"{prefix}.positive_fraction")
