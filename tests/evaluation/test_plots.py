"""Plots: run colours differ from the r/c/f bands, the legend covers no point, groups marked."""

from __future__ import annotations

import matplotlib.colors as mcolors
import pytest

from loce.evaluation import plots

CATEGORIES = [{"id": i, "image_count": n, "frequency": f} for i, (n, f) in enumerate(
    [(1, "r"), (3, "r"), (8, "c"), (20, "c"), (60, "f"), (200, "f")], start=1)]


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions save (kept open for inspection)."""
    kept = []
    original = plots._save

    def keep(fig, plt, out):
        fig.canvas.draw()
        kept.append(fig)
        return original(fig, type("NoClose", (), {"close": staticmethod(lambda f: None)}), out)

    monkeypatch.setattr(plots, "_save", keep)
    yield kept
    import matplotlib.pyplot as plt

    for fig in kept:
        plt.close(fig)


def _band_colours(ax) -> set[str]:
    return {mcolors.to_hex(p.get_facecolor()) for p in ax.patches}


def test_ap_plot_series_colours_and_legend(figures, tmp_path):
    runs = {name: {c["id"]: 0.1 * k + 0.01 * c["id"] for c in CATEGORIES}
            for k, name in enumerate(["stage 1", "CE fine-tune", "LOCE"])}
    path = plots.plot_ap_vs_frequency(runs, CATEGORIES, tmp_path / "ap.png")
    assert path.stat().st_size > 5_000
    (fig,) = figures
    ax = fig.axes[0]
    series = [mcolors.to_hex(c.get_facecolor()[0]) for c in ax.collections]
    assert len(set(series)) == 3
    bands = _band_colours(ax)
    assert len(bands) >= 2 and not bands & set(series)
    # the legend lies outside the axes, so it covers no point
    legend = ax.get_legend().get_window_extent()
    assert legend.x0 >= ax.get_window_extent().x1
    assert {t.get_text() for t in ax.texts} == {"rare", "common", "frequent"}


def test_mean_scores_plot_marks_the_groups(figures, tmp_path):
    counts = [c["image_count"] for c in CATEGORIES]
    freqs = [c["frequency"] for c in CATEGORIES]
    plots.plot_mean_scores({"before": [0.1] * 6, "after": [0.2] * 6}, counts,
                           tmp_path / "ms.png", frequencies=freqs)
    ax = figures[0].axes[0]
    # classes sorted head to tail: frequent at x 0-1, common 2-3, rare 4-5
    spans = sorted((round(p.get_x(), 2), round(p.get_x() + p.get_width(), 2))
                   for p in ax.patches)
    assert spans == [(-0.5, 1.5), (1.5, 3.5), (3.5, 5.5)]
    assert [t.get_text() for t in sorted(ax.texts, key=lambda t: t.get_position()[0])] == \
        ["frequent", "common", "rare"]
    lines = {mcolors.to_hex(line.get_color()) for line in ax.lines}
    assert not lines & _band_colours(ax)
    # without frequencies no band is drawn (negative control)
    plots.plot_mean_scores({"before": [0.1] * 6}, counts, tmp_path / "plain.png")
    assert not figures[1].axes[0].patches
