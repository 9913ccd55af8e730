"""Every experiment's figures, read back from the matplotlib objects: legible on a slide (legends,
tick labels and all other text at plots.MIN_FONT or more), laid out without collapse, and every
statistical summary drawn with the claims' interval (plots.BAND), never seaborn's bootstrap.

The figures are built from smoke-sized tables kept in tests/data/figure_tables (fast tier: no
pipeline). When an experiment's table changes, refresh its fixture alone from a named-target smoke
run (tests/refresh_fixtures.py; --all for every experiment):

    python -m tests.refresh_fixtures <experiment> --run
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from trainfail import experiments
from trainfail.analysis import plots, stats
from trainfail.core import contract
from trainfail.core.config import load_yaml, merge, validate
from trainfail.training.context import Context

from .refresh_fixtures import ROOT, fixture

# seaborn functions that summarise seeds; each call must say which interval it draws
SUMMARIES = ("lineplot", "pointplot", "barplot")
# intervals other than the claims' one, each for a stated reason
OTHER_INTERVALS = {
    # timings: the median over repeats of one process (not seeds), with its percentile interval,
    # as the timing claims use medians (stats.median_ratio)
    "batch_timing": ("pi", 95),
}
# experiments with no figure summarising seeds: one line or point per seed or per search
NO_SEED_SUMMARY = {"batch_timing", "minimum_ratio", "stuck_not_critical", "toy_critical_points"}


def smoke_config() -> dict:
    return validate(merge(load_yaml(ROOT / "config.yaml"), load_yaml(ROOT / "presets/smoke.yaml")),
                    ROOT / "workflow/schemas/config.schema.yaml")


def _texts_below(fig, size: float) -> list[str]:
    """Every visible, non-empty text of the figure (legends, tick labels, annotations, titles,
    footnotes) drawn smaller than `size` points."""
    from matplotlib.text import Text

    small = []
    for t in fig.findobj(Text):
        if t.get_visible() and t.get_text().strip() and t.get_fontsize() < size - 1e-9:
            small.append(f"{t.get_text()!r} at {t.get_fontsize():g} pt")
    return small


def _legends(fig) -> list:
    return [leg for leg in [*fig.legends, *(ax.get_legend() for ax in fig.axes)] if leg is not None]


def _outside_range(fig) -> list[str]:
    """Panels of an accuracy or an error rate (by the y label; not a difference or a ratio of two)
    whose lines, error bars or bands leave [0, 1] ([0, 100] in %): an interval clipped by plots.bound."""
    from matplotlib.collections import PolyCollection

    out = []
    for ax in fig.axes:
        label = ax.get_ylabel().lower()
        if not ("accuracy" in label or "error" in label) or any(w in label for w in (" - ", "difference", "ratio", "/")):
            continue
        hi = 100.0 if "%" in label else 1.0
        ys = [np.asarray(line.get_ydata(), dtype=float) for line in ax.lines]
        ys += [p.vertices[:, 1] for c in ax.collections if isinstance(c, PolyCollection) for p in c.get_paths()]
        ys = np.concatenate([y[np.isfinite(y)] for y in ys]) if ys else np.array([])
        if len(ys) and (ys.min() < -1e-9 or ys.max() > hi + 1e-9):
            out.append(f"{ax.get_ylabel()!r}: {ys.min():.3g}..{ys.max():.3g}")
    return out


@pytest.fixture
def drawn(monkeypatch, tmp_path):
    """Capture every figure plots.save writes, and every seaborn summary call's interval."""
    import seaborn as sns

    figures: dict[str, object] = {}
    intervals: list[tuple[str, object]] = []

    def capture(fig, outdir, name, note=None):
        """plots.save without the files: finished and drawn once (tick labels are then final)."""
        plots.finish(fig, note)
        fig.canvas.draw()
        figures[name] = fig
        plots._pyplot().close(fig)

    def recording(fn_name):
        original = getattr(sns, fn_name)

        def call(*args, **kw):
            intervals.append((fn_name, kw.get("errorbar", "seaborn's default bootstrap")))
            return original(*args, **kw)

        return call

    monkeypatch.setattr(plots, "save", capture)
    for name in SUMMARIES:
        monkeypatch.setattr(sns, name, recording(name))
    return figures, intervals, tmp_path


@pytest.mark.parametrize("experiment", experiments.MODULES)
def test_figures_are_legible_and_draw_the_claims_interval(experiment, drawn):
    figures, intervals, tmp_path = drawn
    path = fixture(experiment)
    assert path.exists(), f"no figure table for {experiment}: python -m tests.refresh_fixtures {experiment} --run"
    table = pd.read_csv(path)
    config = smoke_config()
    ctx = Context(config, tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        contract.call(experiments.get(experiment).figures, table, ctx.experiment(experiment), tmp_path, ctx=ctx)
    assert figures, f"{experiment} drew no figure"
    headline = getattr(experiments.get(experiment), "HEADLINE", None)
    assert headline is None or any(name.startswith(headline) for name in figures), \
        f"{experiment}.HEADLINE = {headline!r} names none of the figures it draws: {sorted(figures)}"
    layout = [str(w.message) for w in caught if "constrained_layout" in str(w.message) or "layout" in str(w.message)]
    assert not layout, f"{experiment}: {layout}"
    for name, fig in figures.items():
        assert not _texts_below(fig, plots.MIN_FONT), f"{experiment}/{name}: {_texts_below(fig, plots.MIN_FONT)}"
        for legend in _legends(fig):
            assert all(t.get_fontsize() >= plots.MIN_FONT for t in legend.get_texts())
        for ax in fig.axes:
            for label in ax.get_xticklabels() + ax.get_yticklabels():
                assert label.get_fontsize() >= plots.MIN_FONT, f"{experiment}/{name}: tick {label.get_text()!r}"
                assert "$" not in label.get_text(), f"{experiment}/{name}: mathtext tick label {label.get_text()!r}"
    for name, fig in figures.items():
        assert not _outside_range(fig), f"{experiment}/{name}: drawn outside the quantity's range: {_outside_range(fig)}"
    allowed = {plots.BAND, None, OTHER_INTERVALS.get(experiment)}
    wrong = [(fn, e) for fn, e in intervals if not any(e is a or e == a for a in allowed)]
    assert not wrong, f"{experiment}: summaries drawn with another interval than plots.BAND: {wrong}"
    if experiment not in NO_SEED_SUMMARY:
        assert any(e is plots.BAND for _, e in intervals), f"{experiment}: no figure draws the claims' interval"


KNOWN = pd.DataFrame({"arm": ["a"] * 3 + ["b"] * 3, "y": [0.50, 0.55, 0.62, 0.70, 0.74, 0.71]})


def _claim_interval(arm: str) -> tuple[float, float]:
    c = stats.claim("e", "c", "s", "y", stats.mean(KNOWN[KNOWN["arm"] == arm]["y"]), kind="test")
    return c["ci_low"], c["ci_high"]


@pytest.mark.parametrize("kind", ["pointplot", "barplot"])
def test_error_bars_are_the_claims_interval(kind):
    """pointplot's and barplot's bars span exactly the interval the claims table prints (the
    lineplot band: tests/test_stats.py)."""
    import seaborn as sns

    fig, axes = plots.figure()
    ax = axes[0][0]
    getattr(sns, kind)(KNOWN, x="arm", y="y", errorbar=plots.BAND, ax=ax)
    bars = [line.get_ydata() for line in ax.lines if len(line.get_ydata()) == 2 and np.ptp(line.get_xdata()) == 0]
    assert len(bars) == 2
    for arm, ys in zip(("a", "b"), bars):
        assert (min(ys), max(ys)) == pytest.approx(_claim_interval(arm))


def test_user_labels_are_drawn_literally(tmp_path):
    """A config label with a dollar sign (an unbalanced one breaks mathtext) is drawn as written."""
    fig, axes = plots.figure()
    axes[0][0].plot([1, 2], [1, 2], label="costs $5 per $x$")
    axes[0][0].set_title("lr 1e-3 $")
    axes[0][0].legend()
    plots.save(fig, tmp_path, "dollars")
    assert (tmp_path / "dollars.png").stat().st_size > 0
    assert axes[0][0].get_legend().get_texts()[0].get_text() == "costs $5 per $x$"


@pytest.mark.parametrize("limits, expected", [
    ((0.6, 2.5), ["0.6", "0.7", "0.8", "0.9", "1", "2"]),  # under a decade: every digit labelled
    ((0.15, 3.0), ["0.2", "0.5", "1", "2"]),               # one power of ten in view: 1-2-5
    ((1e-4, 1.0), ["10⁻⁴", "10⁻³", "0.01", "0.1", "1"]),   # several decades: powers of ten, plain text
])
def test_log_ticks_are_plain_and_enough(tmp_path, limits, expected):
    fig, axes = plots.figure()
    ax = axes[0][0]
    ax.plot([1, 2], limits)
    ax.set(yscale="log", ylim=limits)
    plots.save(fig, tmp_path, "log")
    shown = [t.get_text() for t in ax.get_yticklabels() if limits[0] <= t.get_position()[1] <= limits[1]]
    assert shown == expected


def test_tick_labels_name_powers_of_ten_in_plain_text():
    assert [plots.tick_label(v) for v in (1e-5, 0.02, 1.0, 300.0, 1e4, -1e-6, 0.0)] == \
        ["10⁻⁵", "0.02", "1", "300", "10⁴", "−10⁻⁶", "0"]


def _label(caption: str) -> str:
    """A caption's bold opening label: '**Lecture claim (1.2, ...):**'."""
    return caption.split(":**", 1)[0]


@pytest.mark.parametrize("experiment", experiments.MODULES)
def test_caption_lecture_numbers_are_the_sections(experiment):
    """The lecture number a caption's label gives is its module's SECTION (trainfail.core.contract:
    the one source); a label 'Beyond the lecture (extends ...)' names its section among the ones it extends."""
    import re

    section = experiments.get(experiment).SECTION.number
    label = _label((ROOT / "workflow/report" / f"{experiment}.rst").read_text())
    numbers = re.findall(r"(?:lecture |\(|extends )(\d(?:\.\d)?)", label)
    assert section in numbers, f"{experiment}.rst's label {label!r} names no lecture number {section} (its SECTION)"
    if not label.startswith("**Beyond the lecture"):
        assert set(numbers) == {section}, f"{experiment}.rst's label {label!r} gives {numbers}, its SECTION is {section}"
