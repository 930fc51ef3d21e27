"""Figures from arrays (matplotlib, headless-safe): every function takes plain arrays and returns a Figure.

Nothing here computes kernels or trains; callers pass numbers. Every command draws through this module, so
all figures share one style: labelled axes with units, one legend entry per label, a band over seeds
(min to max) around the mean, and a marker where a run stopped early. Save with
:meth:`ntkhom.report.RunFolder.save_figure` (PNG and PDF). In a notebook a returned Figure displays itself.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["Curve", "Panel", "curves_figure", "lambda_min_plot", "ratio_plot", "density_plot", "gap_plot",
           "curve_label"]

S_LABEL = "homotopy parameter s (0 linear, 1 ReLU, 2 |x|)"
EIGENVALUE_UNIT = "(units of the kernel)"


class _Figure:
    """Lazily made class: a matplotlib Figure that shows itself as PNG in a notebook."""

    cls = None

    @classmethod
    def make(cls, **kwargs):
        if cls.cls is None:
            from matplotlib.figure import Figure

            class NotebookFigure(Figure):
                def _repr_png_(self):
                    import io

                    buffer = io.BytesIO()
                    self.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
                    return buffer.getvalue()

            cls.cls = NotebookFigure
        return cls.cls(**kwargs)


def _figure(figsize=(6.0, 4.0), ncols: int = 1, nrows: int = 1):
    # The object-oriented API never touches a GUI backend, so this works headless and in notebooks.
    figure = _Figure.make(figsize=figsize, layout="constrained")
    axes = figure.subplots(nrows, ncols, squeeze=False)
    return figure, axes


def _legend(ax, **kwargs) -> None:
    """A legend with each label once (the first handle drawn with it)."""
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    if unique:
        ax.legend(list(unique.values()), list(unique.keys()), **{"fontsize": 8, **kwargs})


def curve_label(width) -> str:
    """'infinite width' or 'width m'."""
    return "infinite width" if str(width) in ("inf", "infinite") else f"width {width}"


# -- curves over steps (training), with a band over seeds -----------------------------------------------
@dataclasses.dataclass
class Curve:
    """One labelled curve: ``y`` is (k,) or (seeds, k); NaN after a run's last record marks a stopped run.

    The mean over seeds is drawn (geometric on a log axis), with a band from the lowest to the highest seed;
    a run whose record ends early (NaN tail) gets an ``x`` at its last finite point.
    """

    x: np.ndarray
    y: np.ndarray
    label: str | None = None
    color: str | None = None
    linestyle: str = "-"
    band: bool = True
    linewidth: float = 1.5
    zorder: float = 2
    marker: str | None = None


@dataclasses.dataclass
class Panel:
    """An axes: title, labels, scales and its curves."""

    curves: Sequence[Curve]
    title: str = ""
    xlabel: str = "step"
    ylabel: str = ""
    xscale: str = "linear"
    yscale: str = "log"  # "log", "linear" or "auto" (log only when the data span more than a decade)
    legend: bool = True
    notes: Sequence[str] = ()
    ylim: tuple[float | None, float | None] | None = None


def _mean(values: np.ndarray, log: bool) -> np.ndarray:
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # columns where every run stopped
        if log:
            return np.exp(np.nanmean(np.log(np.where(values > 0, values, np.nan)), axis=0))
        return np.nanmean(values, axis=0)


def _draw(ax, curve: Curve, log: bool):
    x = np.asarray(curve.x, dtype=float)
    y = np.atleast_2d(np.asarray(curve.y, dtype=float))
    mean = _mean(y, log)
    line = ax.plot(x, mean, linestyle=curve.linestyle, color=curve.color, label=curve.label, marker=curve.marker,
                   linewidth=curve.linewidth, zorder=curve.zorder)[0]
    color = line.get_color()
    if curve.band and y.shape[0] > 1:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            low, high = np.nanmin(y, axis=0), np.nanmax(y, axis=0)
        ax.fill_between(x, low, high, color=color, alpha=0.18, linewidth=0, zorder=curve.zorder - 0.5)
    stopped = False
    for run in y:
        finite = np.flatnonzero(np.isfinite(run))
        if finite.size and finite[-1] < run.size - 1:  # stopped before the last record
            i = finite[-1]
            ax.plot([x[i]], [run[i]], marker="x", color=color, markersize=9, markeredgewidth=2.5, linestyle="none",
                    zorder=5)
            stopped = True
    return stopped


def curves_figure(panels: Sequence[Panel], *, title: str | None = None, panel_size=(5.2, 3.9)):
    """One row of panels of curves (see :class:`Panel`, :class:`Curve`)."""
    figure, axes = _figure((panel_size[0] * len(panels), panel_size[1]), ncols=len(panels))
    for ax, panel in zip(axes[0], panels):
        yscale = panel.yscale
        if yscale == "auto":
            span = _positive_range(*[c.y for c in panel.curves])
            yscale = "log" if span is not None and span[1] / span[0] > 10 * 1.5**2 else "linear"
        log = yscale == "log"
        stopped = [_draw(ax, curve, log) for curve in panel.curves]
        if any(stopped):
            ax.plot([], [], marker="x", color="k", markeredgewidth=2.5, linestyle="none",
                    label="x: run stopped early (last finite value)")
        ax.set_xscale(panel.xscale)
        ax.set_yscale(yscale)
        if panel.ylim is not None:
            ax.set_ylim(*panel.ylim)
        ax.set_xlabel(panel.xlabel)
        ax.set_ylabel(panel.ylabel)
        ax.set_title(panel.title, fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
        for i, note in enumerate(panel.notes):
            ax.text(0.02, 0.03 + 0.06 * i, note, transform=ax.transAxes, fontsize=7, color="0.3")
        if panel.legend:
            _legend(ax)
    if title:
        figure.suptitle(title)
    return figure


# -- spectra along the homotopy path ---------------------------------------------------------------------
def _positive_range(*arrays) -> tuple[float, float] | None:
    values = np.concatenate([np.ravel(np.asarray(a, dtype=float)) for a in arrays if a is not None])
    values = values[np.isfinite(values) & (values > 0)]
    if not values.size:
        return None
    return float(values.min()) / 1.5, float(values.max()) * 1.5


def _log_band(ax, x, mean, spread, label, color=None):
    """A mean curve with a +- spread band for a log axis (the lower edge stays positive); returns the mean."""
    mean = np.asarray(mean, dtype=float)
    line = ax.plot(x, mean, marker=".", markersize=4, label=label, color=color)[0]
    if spread is not None:
        spread = np.asarray(spread, dtype=float)
        low = np.where(mean - spread > 0, mean - spread, mean / 2)
        ax.fill_between(x, low, mean + spread, color=line.get_color(), alpha=0.2, linewidth=0)
    return mean


def lambda_min_plot(
    s,
    curves: Mapping[str, tuple[np.ndarray, np.ndarray | None]],
    floor=None,
    *,
    gaps: Mapping[str, tuple[np.ndarray, np.ndarray | None]] | None = None,
    title: str = "smallest NTK eigenvalue along the homotopy path",
):
    """lambda_min(s) on a log scale, one curve per label with a band of +- one standard deviation over seeds;
    beside it (when ``gaps`` is given) each finite width's relative gap to infinite width, where widths
    that overplot on the left separate.

    Args:
      s: (k,) homotopy parameters.
      curves: label -> (mean (k,), standard deviation (k,) or None); NaN marks unresolved values.
      floor: (k,) numerical floor n eps lambda_max; drawn only where it is within the data's range, and
        unresolved values (NaN in every curve) are marked on it.
      gaps: label -> (mean (k,), standard deviation (k,) or None) of |lambda_min(m) - lambda_min(inf)| /
        lambda_min(inf).
    """
    figure, axes = _figure((11.0 if gaps else 6.0, 4.2), ncols=2 if gaps else 1)
    ax = axes[0, 0]
    s = np.asarray(s, dtype=float)
    means = []
    # One colour per label in both panels, so a width keeps its colour in the gap panel.
    colors = {label: f"C{i}" for i, label in enumerate(curves)}
    for label, (mean, spread) in curves.items():
        means.append(_log_band(ax, s, mean, spread, label, colors[label]))
    ax.set_yscale("log")
    span = _positive_range(*means)
    if floor is not None:
        floor = np.asarray(floor, dtype=float)
        unresolved = np.all([~np.isfinite(m) for m in means], axis=0) if means else np.zeros(s.size, bool)
        if span is not None and np.nanmax(floor) >= span[0] / 10:
            ax.plot(s, floor, "k--", linewidth=1, label="float64 floor n eps lambda_max")
        if np.any(unresolved):
            if span is not None:  # keep the axis on the data; unresolved points sit at its bottom
                ax.plot(s[unresolved], np.full(int(unresolved.sum()), span[0]), "kv", markersize=5,
                        label="unresolved (below the floor)", clip_on=False)
            else:
                ax.plot(s[unresolved], floor[unresolved], "kv", markersize=5, label="unresolved (below the floor)")
    if span is not None:
        ax.set_ylim(*span)
    ax.set_xlabel(S_LABEL)
    ax.set_ylabel(f"lambda_min of the NTK Gram matrix {EIGENVALUE_UNIT}")
    ax.axvline(1.0, color="0.7", linewidth=0.8)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    _legend(ax)
    if gaps:
        ax = axes[0, 1]
        for label, (mean, spread) in gaps.items():
            _log_band(ax, s, mean, spread, label, colors.get(label))
        ax.set_yscale("log")
        ax.set_xlabel(S_LABEL)
        ax.set_ylabel("|lambda_min(m) - lambda_min(inf)| / lambda_min(inf)")
        ax.set_title("finite widths: relative gap to infinite width", fontsize=10)
        ax.axvline(1.0, color="0.7", linewidth=0.8)
        ax.grid(True, alpha=0.3)
        _legend(ax)
    return figure


def ratio_plot(s, ratios: Mapping[str, np.ndarray], *, reference: str = "s^2", title: str | None = None):
    """lambda_min(s) / lambda_min(1) per label, with the reference curve s^2 (HRTA, unit-norm inputs, n > d)."""
    figure, axes = _figure()
    ax = axes[0, 0]
    s = np.asarray(s, dtype=float)
    for label, ratio in ratios.items():
        ax.plot(s, np.asarray(ratio, dtype=float), marker=".", markersize=4, label=label)
    if reference:
        ax.plot(s, s**2, "k:", linewidth=1.2, label=reference)
    ax.set_xlabel(S_LABEL)
    ax.set_ylabel("lambda_min(s) / lambda_min(1) (ratio)")
    ax.set_title(title or "growth of lambda_min relative to ReLU", fontsize=10)
    ax.grid(True, alpha=0.3)
    _legend(ax)
    return figure


def density_plot(eigenvalues: Mapping[str, np.ndarray], floor: float | None = None, *, bins: int = 40,
                 title: str = "NTK eigenvalue histogram"):
    """Histograms of eigenvalues (log-spaced bins, count per bin) per label, e.g. one per s.

    Eigenvalues at or below ``floor`` (or non-positive) are not resolved: they are not drawn, and their
    number is given in the legend; the floor is drawn when it is near the eigenvalues shown.
    """
    figure, axes = _figure()
    ax = axes[0, 0]
    cut = floor or 0.0
    kept = [np.asarray(v, dtype=float) for v in eigenvalues.values()]
    shown = [v[v > cut] for v in kept if np.any(v > cut)]
    if not shown:
        ax.text(0.5, 0.5, "no eigenvalue above the floor", ha="center", transform=ax.transAxes)
        return figure
    lowest = min(float(v.min()) for v in shown) / 1.5
    highest = max(float(v.max()) for v in shown)
    edges = np.geomspace(max(lowest, 1e-300), highest * 1.01, bins + 1)
    for label, values in eigenvalues.items():
        values = np.asarray(values, dtype=float)
        hidden = int(np.sum(values <= cut))
        suffix = f" ({hidden} at/below the floor)" if hidden else ""
        ax.hist(values[values > cut], bins=edges, histtype="step", linewidth=1.5, label=label + suffix)
    if floor and floor > lowest * 1e-3:
        ax.axvline(floor, color="k", linestyle="--", linewidth=1, label="float64 floor")
    ax.set_xscale("log")
    ax.set_xlabel(f"eigenvalue {EIGENVALUE_UNIT}")
    ax.set_ylabel("number of eigenvalues per bin (log-spaced bins)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    _legend(ax)
    return figure


def gap_plot(widths: Sequence[float], gaps, spread=None, *, slope: float | None = None,
             title: str = "finite vs infinite width at s = 1"):
    """Relative gap |lambda_min(m) - lambda_min(inf)| / lambda_min(inf) against width m (log-log): the mean
    over seeds with error bars (one standard deviation), a fitted line and the reference slope -1/2.

    Args:
      widths: (w,) widths.
      gaps: (w,) mean relative gap over seeds.
      spread: (w,) standard deviation over seeds, or None.
      slope: the fitted log-log slope, shown in the legend.
    """
    from matplotlib.ticker import NullFormatter, NullLocator

    figure, axes = _figure()
    ax = axes[0, 0]
    widths = np.asarray(widths, dtype=float)
    gaps = np.asarray(gaps, dtype=float)
    yerr = None if spread is None else np.minimum(np.asarray(spread, dtype=float), gaps * 0.999)
    ax.errorbar(widths, gaps, yerr=yerr, fmt="o-", capsize=4,
                label="measured (mean +- std over seeds)" + ("" if slope is None else f", slope {slope:.2f}"))
    if widths.size and np.all(np.isfinite(gaps)) and np.all(gaps > 0):
        ax.plot(widths, gaps[0] * np.sqrt(widths[0] / widths), "k:", label="slope -1/2 (theory)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks(widths, [f"{int(w)}" for w in widths])
    ax.set_xlabel("hidden width m (neurons)")
    ax.set_ylabel("relative gap of lambda_min to infinite width")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    _legend(ax)
    return figure
