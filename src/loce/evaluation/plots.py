"""Plots for long-tail analysis: per-class AP against training frequency, mean scores."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["plot_ap_vs_frequency", "plot_mean_scores"]

_GROUP_COLOURS = {"r": "#d62728", "c": "#ff7f0e", "f": "#1f77b4"}


def _figure(width: float = 7.0, height: float = 4.0):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt, plt.subplots(figsize=(width, height))


def plot_ap_vs_frequency(
    runs: Mapping[str, Mapping[Any, float]],
    categories: Sequence[Mapping[str, Any]],
    out: str | os.PathLike,
    title: str = "per-class AP vs training frequency",
) -> Path:
    """Scatter each class's AP against its number of training images, one series per run.

    Args:
        runs: ``{run name: {category id: AP}}`` (AP as a fraction; negative or NaN = no
            ground truth, skipped). Keys may be ints or their string form (JSON).
        categories: LVIS category dicts with ``id``, ``image_count`` and ``frequency``.
        out: PNG path to write.
        title: figure title.
    """
    import math

    plt, (fig, ax) = _figure()
    markers = ["o", "s", "^", "D", "v", "P"]
    for k, (name, per_cat) in enumerate(runs.items()):
        xs, ys = [], []
        for c in categories:
            ap = per_cat.get(c["id"], per_cat.get(str(c["id"])))
            if ap is None or (isinstance(ap, float) and math.isnan(ap)) or ap < 0:
                continue
            xs.append(max(int(c.get("image_count", 0)), 1))
            ys.append(100.0 * float(ap))
        ax.scatter(xs, ys, s=18, alpha=0.75, marker=markers[k % len(markers)], label=name)
    # shade the r/c/f ranges by the largest training count seen in each group
    bounds: dict[str, int] = {}
    for c in categories:
        f = c.get("frequency")
        if f in _GROUP_COLOURS:
            bounds[f] = max(bounds.get(f, 0), int(c.get("image_count", 0)))
    lo = 0.8
    for group in ("r", "c", "f"):
        if group in bounds:
            ax.axvspan(lo, bounds[group] + 0.5, color=_GROUP_COLOURS[group], alpha=0.06, lw=0)
            ax.text(math.sqrt(lo * (bounds[group] + 0.5)), 101, group, ha="center",
                    va="bottom", color=_GROUP_COLOURS[group], fontsize=9)
            lo = bounds[group] + 0.5
    ax.set_xscale("log")
    ax.set_ylim(-2, 108)
    ax.set_xlabel("training images of the class (log scale)")
    ax.set_ylabel("AP (%)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save_png(plt, fig, out)


def _save_png(plt, fig, out: str | os.PathLike) -> Path:
    from loce.fileio import atomic_write

    path = Path(out)
    try:
        with atomic_write(path, "wb", what="plot") as f:
            fig.savefig(f, dpi=120, format="png")
    finally:
        plt.close(fig)
    return path


def plot_mean_scores(
    series: Mapping[str, Sequence[float]],
    image_counts: Sequence[int],
    out: str | os.PathLike,
    title: str = "mean classification score per class",
) -> Path:
    """Per-class mean classification score (foreground classes, label order) against training
    frequency, one line per series (e.g. before and after fine-tuning).

    Args:
        series: ``{name: scores [K]}`` for labels 1..K.
        image_counts: training images per class, label order.
        out: PNG path to write.
        title: figure title.
    """
    plt, (fig, ax) = _figure()
    order = sorted(range(len(image_counts)), key=lambda i: -image_counts[i])
    for name, scores in series.items():
        ax.plot(range(len(order)), [scores[i] for i in order], marker=".", lw=1, label=name)
    ax.set_xlabel("classes sorted by training frequency (head → tail)")
    ax.set_ylabel("mean classification score")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save_png(plt, fig, out)
