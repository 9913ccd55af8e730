"""One seaborn style for every figure; each figure saved as PNG (report) and, where the config's
`figure_formats` asks (the full preset, or on demand), PDF (papers)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

from trainfail.analysis import stats
from trainfail.core import phases, store

# matplotlib and seaborn are imported on first use: training jobs import the experiment modules
# (for their execute()) but never plot, and these imports cost about a second per job.
FORMATS = ["png"]  # the analysis job sets it from the config's figure_formats (use_formats)


def use_formats(formats) -> None:
    """Save figures in these formats from now on (the config's `figure_formats`; PNG first)."""
    FORMATS[:] = sorted(dict.fromkeys(formats or ["png"]), key=lambda f: f != "png")

# The error band of every statistical figure: the 95% t-interval of the mean over seeds, the same
# interval the claims table prints for a cell (stats.band = stats.mean(...).interval(0.95)).
# Use it as seaborn's `errorbar=plots.BAND`; seaborn's own ("ci", 95) is an unseeded bootstrap,
# which with 3 seeds spans only min..max and changes from one re-run to the next.
BAND = stats.band
BAND_NOTE = "mean and 95% t-interval over seeds"


def _pyplot():
    with phases.phase("imports"):
        import matplotlib

        matplotlib.use("Agg")  # headless: clusters and CI have no display
        import matplotlib.pyplot as plt

    return plt


# One palette for every arm of every figure: Paul Tol's "bright" scheme (distinct for colour-blind
# readers, no two look-alike oranges as in seaborn's "colorblind"), then black for an eighth arm.
# As matplotlib colours: C0 blue, C1 red, C2 green, C3 yellow, C4 cyan, C5 purple, C6 grey, C7 black.
PALETTE = ("#4477AA", "#EE6677", "#228833", "#CCBB44", "#66CCEE", "#AA3377", "#BBBBBB", "#000000")
# The smallest font a reader can read on a slide: legends, tick labels and footnotes are at least
# this big (tests/test_figures.py reads every figure back and checks it).
MIN_FONT = 8.0
NOTE_FONT = 8.0

# One colour per optimizer and one per normalization, in every figure that shows them (an arm is
# known by the first words of its label: "GD + momentum 0.9" is momentum, "BN (lr 0.3)" batch norm;
# a second arm of one method, "Adagrad + decay", gets a darker shade of it). The two families share
# colours: no figure compares an optimizer with a normalization by colour.
OPTIMIZER_COLORS = {"sgd": PALETTE[0], "momentum": PALETTE[1], "adagrad": PALETTE[2], "rmsprop": PALETTE[3],
                    "adam": PALETTE[4], "adamw": PALETTE[5], "radam": PALETTE[7]}
NORMALIZATION_COLORS = {"none": PALETTE[0], "batchnorm": PALETTE[1], "layernorm": PALETTE[2], "groupnorm": PALETTE[3],
                        "instancenorm": PALETTE[4], "weightnorm": PALETTE[5]}
# the first words of a label -> its method
_METHODS = {
    "sgd": "sgd", "gd": "sgd", "gradient descent": "sgd", "momentum": "momentum", "gd momentum": "momentum",
    "heavy ball": "momentum", "sgd momentum": "momentum", "adagrad": "adagrad", "rmsprop": "rmsprop", "adam": "adam",
    "adamw": "adamw", "radam": "radam",
    "no normalization": "none", "none": "none", "standard": "none", "batchnorm": "batchnorm", "bn": "batchnorm",
    "batch norm": "batchnorm", "layernorm": "layernorm", "layer norm": "layernorm", "groupnorm": "groupnorm",
    "group norm": "groupnorm", "instancenorm": "instancenorm", "instance norm": "instancenorm",
    "weightnorm": "weightnorm", "weight norm": "weightnorm"}
_COLOR_OF = {**OPTIMIZER_COLORS, **NORMALIZATION_COLORS}


def method_of(label: str) -> str | None:
    """The optimizer or normalization an arm's label names by its first words (the longest match),
    None for any other label."""
    words = re.findall(r"[a-z0-9]+", str(label).lower())
    for n in range(min(3, len(words)), 0, -1):
        if " ".join(words[:n]) in _METHODS:
            return _METHODS[" ".join(words[:n])]
    return None


def _shade(color: str, k: int) -> str:
    """The k-th variant of a colour: darker, then lighter, alternating (k = 0: the colour)."""
    from matplotlib import colors as mc

    rgb = mc.to_rgb(color)
    if k == 0:
        return color
    t = min(0.45 * ((k + 1) // 2), 0.7)
    target = (0.0, 0.0, 0.0) if k % 2 else (1.0, 1.0, 1.0)
    return mc.to_hex(tuple(c + (g - c) * t for c, g in zip(rgb, target)))


def colors(labels) -> dict:
    """A colour per arm label: the method's own colour for a label that names an optimizer or a
    normalization (OPTIMIZER_COLORS, NORMALIZATION_COLORS; a second arm of one method a shade of
    it), the palette's unused colours, in order, for the rest. Use as seaborn's `palette=`."""
    labels = list(dict.fromkeys(labels))
    out, seen = {}, {}
    for label in labels:
        method = method_of(label)
        if method is not None:
            out[label] = _shade(_COLOR_OF[method], seen.get(method, 0))
            seen[method] = seen.get(method, 0) + 1
    free = [c for c in PALETTE if c not in out.values()] or list(PALETTE)
    rest = [label for label in labels if label not in out]
    out.update({label: free[i % len(free)] for i, label in enumerate(rest)})
    return {label: out[label] for label in labels}


def bound(ax, lo: float | None = 0.0, hi: float | None = None, axis: str = "y") -> None:
    """Clip what is drawn on `ax` (bands, error bars, their caps) to the quantity's range [lo, hi]
    along `axis`: a t-interval of an accuracy or an error rate near 0 or 1 runs past it, and a
    band below 0 % error says nothing the clipped band does not. Call after drawing."""
    import numpy as np
    from matplotlib.collections import PolyCollection

    i = 1 if axis == "y" else 0
    clip = lambda a: np.clip(np.asarray(a, dtype=float), -np.inf if lo is None else lo, np.inf if hi is None else hi)
    for line in ax.lines:
        if axis == "y":
            line.set_ydata(clip(line.get_ydata()))
        else:
            line.set_xdata(clip(line.get_xdata()))
    for coll in ax.collections:
        if isinstance(coll, PolyCollection):
            for path in coll.get_paths():
                v = np.array(path.vertices, dtype=float)
                v[:, i] = clip(v[:, i])
                path.vertices = v
    # the view: no further past the range than a margin (the limits grew with the band when it was drawn)
    get, set_ = (ax.get_ylim, ax.set_ylim) if axis == "y" else (ax.get_xlim, ax.set_xlim)
    cur_lo, cur_hi = sorted(get())
    pad = 0.03 * ((cur_hi if hi is None else hi) - (cur_lo if lo is None else lo))
    log = (ax.get_yscale() if axis == "y" else ax.get_xscale()) == "log"
    new_lo = cur_lo if lo is None or (log and lo <= 0) else max(cur_lo, lo - pad)
    new_hi = cur_hi if hi is None else min(cur_hi, hi + pad)
    if new_lo < new_hi:
        set_(new_lo, new_hi)


# The lecture mode (trainfail.pipeline.slides): a figure drawn for one 1280x720 screen, its labels
# at SLIDE_FONT or more, without its footnote (the slide says what it shows).
SLIDE_FONT = 14.0
SLIDE_SIZE = (12.0, 5.2)  # inches, at SLIDE_DPI: 1200 x 520 px, the slide's figure area
SLIDE_DPI = 100
_SLIDES = {"on": False}


@contextlib.contextmanager
def slide_mode():
    """Figures drawn inside are drawn for a slide (SLIDE_SIZE, SLIDE_FONT, no footnote)."""
    _SLIDES["on"] = True
    try:
        yield
    finally:
        _SLIDES["on"] = False


def style() -> None:
    with phases.phase("imports"):
        import seaborn as sns

    plt = _pyplot()
    sns.set_theme(context="paper", style="whitegrid", palette=list(PALETTE), font_scale=1.1)
    slide = _SLIDES["on"]
    plt.rcParams.update({"figure.dpi": 110, "savefig.bbox": "tight", "savefig.pad_inches": 0.05,
                         "pdf.fonttype": 42, "svg.hashsalt": "trainfail", "pdf.compression": 6,
                         "legend.fontsize": 8.5, "legend.title_fontsize": 9, "xtick.labelsize": 9, "savefig.dpi": "figure",
                         "ytick.labelsize": 9,
                         # labels come from the config (arm names, `label:` fields) and are drawn
                         # literally: a `$` is a dollar, not mathtext. Log axes get plain-text tick
                         # labels in save() (matplotlib's own are mathtext).
                         "text.parse_math": False})
    if slide:
        plt.rcParams.update({"figure.dpi": SLIDE_DPI, "savefig.dpi": SLIDE_DPI, "font.size": SLIDE_FONT,
                             **{k: SLIDE_FONT for k in ("axes.labelsize", "axes.titlesize", "legend.fontsize",
                                                        "legend.title_fontsize", "xtick.labelsize", "ytick.labelsize")},
                             "lines.linewidth": 2.0, "lines.markersize": 7})


def figure(ncols: int = 1, nrows: int = 1, width: float = 5.0, height: float = 3.6, **kw):
    """A grid of axes (always 2-D: axes[row][col]), `width` x `height` inches per panel, laid out
    by matplotlib's constrained layout (no overlaps, no blank margins; colour bars fit in)."""
    style()
    kw.setdefault("layout", "constrained")
    size = SLIDE_SIZE if _SLIDES["on"] else (width * ncols, height * nrows)
    return _pyplot().subplots(nrows, ncols, figsize=size, squeeze=False, **kw)


def palette(n: int) -> list:
    """n distinct colours for n arms (PALETTE, repeated only beyond its length)."""
    return [PALETTE[i % len(PALETTE)] for i in range(n)]


def save(fig, outdir: str | Path, name: str, note: str | None = None) -> list[Path]:
    """Save `fig` as outdir/name.png, and .pdf where FORMATS has it (atomically), finished (see finish)."""
    finish(fig, note)
    paths = []
    for fmt in FORMATS:
        buf = io.BytesIO()
        with phases.phase(f"figures_{fmt}"):
            fig.savefig(buf, format=fmt, metadata={"CreationDate": None} if fmt == "pdf" else None)
        paths.append(store.write_bytes(Path(outdir) / f"{name}.{fmt}", buf.getvalue()))
    _pyplot().close(fig)
    return paths


def finish(fig, note: str | None = None) -> None:
    """Plain log-axis ticks on every panel, and the footnote (device, settings...), if any,
    wrapped to the figure's width. In slide mode: no footnote, and every text at SLIDE_FONT or more."""
    for ax in fig.axes:
        plain_log_ticks(ax)
    if _SLIDES["on"]:
        from matplotlib.text import Text

        fig.set_size_inches(*SLIDE_SIZE)
        for t in fig.findobj(Text):
            if t.get_fontsize() < SLIDE_FONT:
                t.set_fontsize(SLIDE_FONT)
        return
    if note:
        import textwrap

        # about 0.55 em per character: a line as wide as the figure
        chars = max(40, int(fig.get_figwidth() * 72 / (0.55 * NOTE_FONT)))
        fig.text(0.0, 0.0, textwrap.fill(note, chars), fontsize=NOTE_FONT, color="0.3", ha="left", va="top",
                 transform=fig.transFigure)


def figure_legend(fig, ax, into=None, title: str | None = None, **kw) -> None:
    """Move an axes' legend where it hides no data: into a spare panel `into` (turned off), or
    beside the figure (right)."""
    handles, labels = ax.get_legend_handles_labels()
    if ax.get_legend() is not None:
        title = title if title is not None else ax.get_legend().get_title().get_text() or None
        ax.get_legend().remove()
    if not handles:
        return
    if into is not None:
        into.set_visible(True)
        into.axis("off")
        into.legend(handles, labels, loc="center", title=title, **kw)
    else:
        fig.legend(handles, labels, loc="outside right upper", title=title, **kw)


_SUPERSCRIPT = str.maketrans("-0123456789", "\u207b\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079")


def tick_label(value: float) -> str:
    """A log axis's tick label in plain text: 10\u207b\u00b3 for a power of ten, else 0.02, 300, 2e+05."""
    import math

    if value == 0:
        return "0"
    sign = "\u2212" if value < 0 else ""
    exponent = math.log10(abs(value))
    if abs(exponent - round(exponent)) < 1e-9 and not -2 <= round(exponent) <= 3:
        return f"{sign}10" + str(round(exponent)).translate(_SUPERSCRIPT)
    return f"{sign}{abs(value):g}"


def plain_log_ticks(ax) -> None:
    """Plain-text tick labels on log (and symlog) axes; where a log axis spans less than about a
    decade, labelled ticks at 1-2-5 (or every digit) instead of the single power of ten matplotlib
    would label."""
    from matplotlib import ticker

    for axis, lim in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        scale = axis.get_scale()
        if scale not in ("log", "symlog") or not isinstance(axis.get_major_formatter(), ticker.LogFormatter):
            continue  # a linear axis, or ticks a figure set itself (set_xticks)
        axis.set_minor_formatter(ticker.NullFormatter())
        lo, hi = sorted(lim)
        if scale == "log" and lo > 0:
            # fewer than two powers of ten in view: label 1-2-5 (or every digit) instead
            for subs in ((1.0,), (1.0, 2.0, 5.0), tuple(range(1, 10))):
                ticks = [t for t in ticker.LogLocator(subs=subs).tick_values(lo, hi)
                         if lo * (1 - 1e-9) <= t <= hi * (1 + 1e-9)]
                if len(ticks) >= (2 if subs == (1.0,) else 3):
                    break
            if subs != (1.0,):
                axis.set_major_locator(ticker.FixedLocator(ticks))
        axis.set_major_formatter(ticker.FuncFormatter(lambda v, _pos: tick_label(v)))


def contours(ax, loss_fn, xlim, ylim, n: int = 200, levels: int = 30, log: bool = True, colorbar: bool = True):
    """Loss contours of a 2-parameter surface; loss_fn maps (X, Y) numpy grids to Z. Returns the
    filled contours. With a colour bar saying what the colours are (log10 of the loss above its
    minimum on the grid, or the loss); panels of one surface share one: colorbar=False, then
    plots.contour_colorbar."""
    import numpy as np

    xs, ys = np.linspace(*xlim, n), np.linspace(*ylim, n)
    X, Y = np.meshgrid(xs, ys)
    Z = loss_fn(X, Y)
    if log:
        Z = np.log10(Z - Z.min() + 1e-6)
    filled = ax.contourf(X, Y, Z, levels=levels, cmap="viridis", alpha=0.85)
    ax.contour(X, Y, Z, levels=levels, colors="k", linewidths=0.2, alpha=0.5)
    if colorbar:
        contour_colorbar(ax.figure, filled, ax, log)
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    return filled


def contour_colorbar(fig, filled, axes, log: bool = True):
    """One colour bar for contour panels (`axes`: one or several) of the same surface."""
    return fig.colorbar(filled, ax=axes, shrink=0.85, label="log10(loss - min on the grid)" if log else "loss")


def path(ax, w1, w2, color: str = "white", label: str | None = None):
    """An optimizer's path on a contour plot: the updates as a line, the start as a red star."""
    ax.plot(w1, w2, "o-", color=color, ms=2, lw=1, label=label)
    ax.plot(w1[0], w2[0], "r*", ms=10)
    return ax
