"""One seaborn style for every figure; each figure saved as PNG (report) and PDF (papers)."""

from __future__ import annotations

import io
from pathlib import Path

from . import stats, store

# matplotlib and seaborn are imported on first use: training jobs import the experiment modules
# (for their execute()) but never plot, and these imports cost about a second per job.
FORMATS = ("png", "pdf")

# The error band of every statistical figure: the 95% t-interval of the mean over seeds, the same
# interval the claims table prints for a cell (stats.band = stats.mean(...).interval(0.95)).
# Use it as seaborn's `errorbar=plots.BAND`; seaborn's own ("ci", 95) is an unseeded bootstrap,
# which with 3 seeds spans only min..max and changes from one re-run to the next.
BAND = stats.band
BAND_NOTE = "mean and 95% t-interval over seeds"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # headless: clusters and CI have no display
    import matplotlib.pyplot as plt

    return plt


def style() -> None:
    import seaborn as sns

    plt = _pyplot()
    sns.set_theme(context="paper", style="whitegrid", palette="colorblind", font_scale=1.1)
    plt.rcParams.update({"figure.dpi": 110, "savefig.bbox": "tight", "pdf.fonttype": 42,
                         "svg.hashsalt": "trainfail", "pdf.compression": 6})


def figure(ncols: int = 1, nrows: int = 1, width: float = 5.0, height: float = 3.6, **kw):
    style()
    return _pyplot().subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False, **kw)


def save(fig, outdir: str | Path, name: str, note: str | None = None) -> list[Path]:
    """Save `fig` as outdir/name.png and .pdf (atomically), with an optional footnote (device...)."""
    if note:
        fig.text(0.01, -0.02, note, fontsize=7, color="0.35", ha="left", va="top")
    paths = []
    for fmt in FORMATS:
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, metadata={"CreationDate": None} if fmt == "pdf" else None)
        paths.append(store.write_bytes(Path(outdir) / f"{name}.{fmt}", buf.getvalue()))
    _pyplot().close(fig)
    return paths


def contours(ax, loss_fn, xlim, ylim, n: int = 200, levels: int = 30, log: bool = True):
    """Loss contours of a 2-parameter surface; loss_fn maps (X, Y) numpy grids to Z."""
    import numpy as np

    xs, ys = np.linspace(*xlim, n), np.linspace(*ylim, n)
    X, Y = np.meshgrid(xs, ys)
    Z = loss_fn(X, Y)
    if log:
        Z = np.log10(Z - Z.min() + 1e-6)
    ax.contourf(X, Y, Z, levels=levels, cmap="viridis", alpha=0.85)
    ax.contour(X, Y, Z, levels=levels, colors="k", linewidths=0.2, alpha=0.5)
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    return ax


def path(ax, w1, w2, color: str = "white", label: str | None = None):
    """An optimizer's path on a contour plot: the updates as a line, the start as a red star."""
    ax.plot(w1, w2, "o-", color=color, ms=2, lw=1, label=label)
    ax.plot(w1[0], w2[0], "r*", ms=10)
    return ax
