"""Plots for long-tail analysis: per-class AP against training frequency, mean scores,
training images per class, error analysis (ΔAP by error type and group, confusions)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["plot_ap_vs_frequency", "plot_confusions", "plot_delta_ap", "plot_images_per_class",
           "plot_mean_scores"]

# The r/c/f bands are neutral greys, so that no run's colour can be mistaken for a group.
_GROUP_SHADES = {"r": "#d9d9d9", "c": "#ececec", "f": "#d9d9d9"}
_GROUP_NAMES = {"r": "rare", "c": "common", "f": "frequent"}
# Run (series) colours: saturated and distinct from each other and from the grey bands.
SERIES_COLOURS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#a6761d", "#000000")


def _legend_outside(ax) -> None:
    """The legend to the right of the axes, where it cannot cover a point."""
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0,
              frameon=False)


def _finish(fig, plt, ax, out: str | os.PathLike, xlabel: str, ylabel: str, title: str) -> Path:
    """Axis labels, title, legend and grid, then the figure written to ``out`` as a PNG."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    _legend_outside(ax)
    ax.grid(alpha=0.3, zorder=1)
    return _save(fig, plt, out)


def _save(fig, plt, out: str | os.PathLike) -> Path:
    from loce.fileio import atomic_write

    path = Path(out)
    with atomic_write(path, "wb", what="plot") as f:
        fig.savefig(f, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def _shade_groups(ax, spans: Sequence[tuple[str, float, float]], label_y: float) -> None:
    """Grey bands ``(group, left, right)`` with the group's name on top."""
    for group, left, right in spans:
        ax.axvspan(left, right, color=_GROUP_SHADES[group], lw=0, zorder=0)
        centre = math.sqrt(left * right) if ax.get_xscale() == "log" else (left + right) / 2
        ax.text(centre, label_y, _GROUP_NAMES[group], ha="center", va="bottom", fontsize=8,
                color="#555555")


def _pyplot():
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _figure(width: float = 7.0, height: float = 4.0):
    plt = _pyplot()
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
    plt, (fig, ax) = _figure()
    ax.set_xscale("log")
    markers = ["o", "s", "^", "D", "v", "P"]
    for k, (name, per_cat) in enumerate(runs.items()):
        xs, ys = [], []
        for c in categories:
            ap = per_cat.get(c["id"], per_cat.get(str(c["id"])))
            if ap is None or (isinstance(ap, float) and math.isnan(ap)) or ap < 0:
                continue
            xs.append(max(int(c.get("image_count", 0)), 1))
            ys.append(100.0 * float(ap))
        ax.scatter(xs, ys, s=18, alpha=0.8, marker=markers[k % len(markers)], label=name,
                   color=SERIES_COLOURS[k % len(SERIES_COLOURS)], zorder=3)
    # shade the r/c/f ranges by the largest training count seen in each group
    bounds: dict[str, int] = {}
    for c in categories:
        f = c.get("frequency")
        if f in _GROUP_SHADES:
            bounds[f] = max(bounds.get(f, 0), int(c.get("image_count", 0)))
    spans, lo = [], 0.8
    for group in ("r", "c", "f"):
        if group in bounds:
            spans.append((group, lo, bounds[group] + 0.5))
            lo = bounds[group] + 0.5
    _shade_groups(ax, spans, 101)
    ax.set_ylim(-2, 108)
    return _finish(fig, plt, ax, out, "training images of the class (log scale)", "AP (%)", title)


def plot_mean_scores(
    series: Mapping[str, Sequence[float]],
    image_counts: Sequence[int],
    out: str | os.PathLike,
    title: str = "mean classification score per class",
    frequencies: Sequence[str] | None = None,
) -> Path:
    """Per-class mean classification score (foreground classes, label order) against training
    frequency, one line per series (e.g. before and after fine-tuning).

    Args:
        series: ``{name: scores [K]}`` for labels 1..K.
        image_counts: training images per class, label order.
        out: PNG path to write.
        title: figure title.
        frequencies: the LVIS group (``"r"``, ``"c"``, ``"f"``) of each class, label order;
            the groups are then marked as bands.
    """
    plt, (fig, ax) = _figure()
    order = sorted(range(len(image_counts)), key=lambda i: -image_counts[i])
    top = 0.0
    for k, (name, scores) in enumerate(series.items()):
        values = [scores[i] for i in order]
        top = max(top, *values) if values else top
        ax.plot(range(len(order)), values, marker=".", lw=1, label=name,
                color=SERIES_COLOURS[k % len(SERIES_COLOURS)], zorder=3)
    if frequencies is not None:
        spans: list[tuple[str, float, float]] = []
        for x, i in enumerate(order):
            group = frequencies[i]
            if spans and spans[-1][0] == group:
                spans[-1] = (group, spans[-1][1], x + 0.5)
            elif group in _GROUP_SHADES:
                spans.append((group, x - 0.5, x + 0.5))
        ax.set_ylim(0, top * 1.12 if top > 0 else 1.0)
        _shade_groups(ax, spans, top * 1.03 if top > 0 else 0.9)
    ax.set_xlim(-0.5, len(order) - 0.5)
    return _finish(fig, plt, ax, out, "classes sorted by training frequency (head → tail)",
                   "mean classification score", title)


# Group colours of the images-per-class bars (tail warm, head cool).
_GROUP_COLOURS = {"r": "#d95f02", "c": "#7570b3", "f": "#1b9e77"}


def plot_images_per_class(
    image_counts: Sequence[int],
    groups: Sequence[str],
    out: str | os.PathLike,
    thresholds: Sequence[int] | None = None,
    title: str = "training images per class",
) -> Path:
    """Training images per class, sorted from head to tail, log scale, coloured by group.

    Args:
        image_counts: ``K`` training image counts, label order.
        groups: ``K`` group codes ``"r"``/``"c"``/``"f"``, label order.
        out: PNG path to write.
        thresholds: ``(rare_max, common_max)`` drawn as dashed lines when given.
        title: figure title.
    """
    plt, (fig, ax) = _figure()
    order = sorted(range(len(image_counts)), key=lambda i: -image_counts[i])
    for group in ("f", "c", "r"):
        xs = [x for x, i in enumerate(order) if groups[i] == group]
        # A class without training images is drawn at 0.5, below every class that has one.
        ys = [max(image_counts[order[x]], 0.5) for x in xs]
        if xs:
            ax.bar(xs, ys, width=0.9, color=_GROUP_COLOURS[group], zorder=2,
                   label=f"{_GROUP_NAMES[group]} ({len(xs)})")
    ax.set_yscale("log")
    for t in thresholds or ():
        ax.axhline(float(t) + 0.5, color="#555555", lw=0.8, ls="--", zorder=3)
    ax.set_xlim(-0.5, len(order) - 0.5)
    return _finish(fig, plt, ax, out, "classes sorted by training images (head → tail)",
                   "training images (log scale)", title)
# The main types only: the FP and FN oracles are an order larger and would flatten them.
_DELTA_TYPES = ("Cls", "Loc", "Both", "Dupe", "Bkg", "Miss")
_GROUP_TITLES = {"all": "all classes", "r": "rare", "c": "common", "f": "frequent"}


def plot_delta_ap(
    runs: Mapping[str, Mapping[str, Any]],
    out: str | os.PathLike,
    title: str = "ΔAP by error type and group",
) -> Path:
    """ΔAP of each main error type, one panel per group (all, r, c, f), one bar per run.

    Args:
        runs: ``{run name: analysis}`` as ``loce.evaluation.error_analysis.analyze_errors``
            returns (``"ap"`` and ``"delta_ap"`` as fractions, -1 when undefined).
        out: PNG path to write.
        title: figure title.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11.0, 6.0), sharey=True)
    width = 0.8 / max(len(runs), 1)
    for ax, group in zip(axes.ravel(), ("all", "r", "c", "f")):
        for k, (name, analysis) in enumerate(runs.items()):
            values = [max(100.0 * float(analysis["delta_ap"][t][group]), 0.0)
                      for t in _DELTA_TYPES]  # fmt: skip
            base = float(analysis["ap"][group])
            label = f"{name} (AP50 {100 * base:.1f})" if base >= 0 else f"{name} (no objects)"
            xs = [i + (k - (len(runs) - 1) / 2) * width for i in range(len(_DELTA_TYPES))]
            ax.bar(xs, values, width=width, label=label, zorder=3,
                   color=SERIES_COLOURS[k % len(SERIES_COLOURS)])  # fmt: skip
        ax.set_xticks(range(len(_DELTA_TYPES)), _DELTA_TYPES, fontsize=8)
        ax.set_title(_GROUP_TITLES[group], fontsize=9)
        ax.grid(alpha=0.3, axis="y", zorder=1)
        ax.legend(fontsize=7, frameon=False)
    for ax in axes[:, 0]:
        ax.set_ylabel("ΔAP (points)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, plt, out)


def plot_confusions(
    runs: Mapping[str, Mapping[str, Any]],
    out: str | os.PathLike,
    title: str = "most frequent confusions",
) -> Path:
    """The most frequent (object class → detected class) confusions of each run, as
    horizontal bars, one panel per run.

    Args:
        runs: ``{run name: analysis}`` with ``"confusions"``: ``"top_pairs"``.
        out: PNG path to write.
        title: figure title.
    """
    plt = _pyplot()
    n = max(len(runs), 1)
    rows = max((len(a["confusions"]["top_pairs"]) for a in runs.values()), default=1)
    fig, axes = plt.subplots(1, n, figsize=(5.5 * n, 1.0 + 0.35 * max(rows, 1)), squeeze=False)
    for k, (ax, (name, analysis)) in enumerate(zip(axes[0], runs.items())):
        pairs = analysis["confusions"]["top_pairs"]
        labels = [f"{p['object_name']} ({p['object_group']}) → {p['detected_as_name']} "
                  f"({p['detected_as_group']})" for p in pairs]  # fmt: skip
        counts = [p["count"] for p in pairs]
        ax.barh(range(len(pairs)), counts, color=SERIES_COLOURS[k % len(SERIES_COLOURS)],
                zorder=3)  # fmt: skip
        ax.set_yticks(range(len(pairs)), labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("classification errors")
        ax.set_title(name if pairs else f"{name}: no classification error", fontsize=9)
        ax.grid(alpha=0.3, axis="x", zorder=1)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, plt, out)
