"""Figures from arrays (matplotlib, Agg-safe): every function takes plain arrays and returns a Figure.

Nothing here computes kernels; callers pass numbers (e.g. from :mod:`ntkhom.experiments.sweeps`). Save with
:meth:`ntkhom.report.RunFolder.save_figure`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["lambda_min_plot", "ratio_plot", "density_plot", "gap_plot", "curve_label"]


def _figure(figsize=(6.0, 4.0)):
    # The object-oriented API never touches a GUI backend, so this works headless (Agg) and in notebooks.
    from matplotlib.figure import Figure

    figure = Figure(figsize=figsize, layout="constrained")
    return figure, figure.add_subplot(1, 1, 1)


def curve_label(width) -> str:
    """'infinite width' or 'width m'."""
    return "infinite width" if str(width) in ("inf", "infinite") else f"width {width}"


def lambda_min_plot(
    s,
    curves: Mapping[str, tuple[np.ndarray, np.ndarray | None]],
    floor=None,
    *,
    title: str = "smallest NTK eigenvalue along the homotopy path",
):
    """lambda_min(s) on a log scale, one curve per label, with a shaded spread and the float64 floor.

    Args:
      s: (k,) homotopy parameters.
      curves: label -> (mean (k,), spread (k,) or None); NaN marks unresolved values (not drawn).
      floor: (k,) numerical floor (the largest over curves), drawn as a dashed line; None to omit.
    """
    figure, ax = _figure()
    s = np.asarray(s, dtype=float)
    for label, (mean, spread) in curves.items():
        mean = np.asarray(mean, dtype=float)
        line = ax.plot(s, mean, marker=".", markersize=3, label=label)[0]
        if spread is not None:
            spread = np.asarray(spread, dtype=float)
            low = np.clip(mean - spread, np.nanmin(mean[mean > 0]) * 1e-3 if np.any(mean > 0) else 1e-300, None)
            ax.fill_between(s, low, mean + spread, color=line.get_color(), alpha=0.2, linewidth=0)
    if floor is not None:
        floor = np.asarray(floor, dtype=float)
        ax.plot(s, floor, "k--", linewidth=1, label="float64 floor n eps lambda_max")
        # Unresolved values (NaN in every curve) are marked on the floor: lambda_min is at most there.
        unresolved = np.all([~np.isfinite(np.asarray(m, dtype=float)) for m, _ in curves.values()], axis=0)
        if np.any(unresolved):
            ax.plot(s[unresolved], floor[unresolved], "kv", markersize=5, label="unresolved (<= floor)")
    ax.set_yscale("log")
    ax.set_xlabel("homotopy parameter s (0 linear, 1 ReLU, 2 |x|)")
    ax.set_ylabel("lambda_min of the NTK Gram matrix")
    ax.axvline(1.0, color="0.7", linewidth=0.8)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return figure


def ratio_plot(s, ratios: Mapping[str, np.ndarray], *, reference: str = "s^2", title: str | None = None):
    """lambda_min(s) / lambda_min(1) per label, with the reference curve s^2 (HRTA, unit-norm inputs, n > d)."""
    figure, ax = _figure()
    s = np.asarray(s, dtype=float)
    for label, ratio in ratios.items():
        ax.plot(s, np.asarray(ratio, dtype=float), marker=".", markersize=3, label=label)
    if reference:
        ax.plot(s, s**2, "k:", linewidth=1.2, label=reference)
    ax.set_xlabel("homotopy parameter s")
    ax.set_ylabel("lambda_min(s) / lambda_min(1)")
    ax.set_title(title or "growth of lambda_min relative to ReLU")
    ax.legend(fontsize=8)
    return figure


def density_plot(eigenvalues: Mapping[str, np.ndarray], floor: float | None = None, *, bins: int = 40,
                 title: str = "NTK eigenvalue density"):
    """Histograms of eigenvalues (log-spaced bins) per label, e.g. one per s; the floor as a vertical line.

    Eigenvalues at or below ``floor`` (or non-positive) are not resolved: they are not drawn, and their
    number is given in the legend.
    """
    figure, ax = _figure()
    positive = [np.asarray(v, dtype=float) for v in eigenvalues.values()]
    cut = floor or 0.0
    lowest = min(float(np.min(v[v > cut])) for v in positive if np.any(v > cut)) / 1.5
    highest = max(float(np.max(v)) for v in positive)
    edges = np.geomspace(max(lowest, 1e-300), highest * 1.01, bins + 1)
    for label, values in eigenvalues.items():
        values = np.asarray(values, dtype=float)
        hidden = int(np.sum(values <= (floor or 0.0)))
        suffix = f" ({hidden} at/below floor)" if hidden else ""
        ax.hist(values[values > (floor or 0.0)], bins=edges, histtype="step", density=False, label=label + suffix)
    if floor and floor > lowest * 1e-3:  # draw the floor only when it is near the eigenvalues shown
        ax.axvline(floor, color="k", linestyle="--", linewidth=1, label="float64 floor")
    ax.set_xscale("log")
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("count")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return figure


def gap_plot(widths: Sequence[float], gaps: Sequence[float], *, title: str = "finite vs infinite width"):
    """Relative gap |lambda_min(m) - lambda_min(inf)| / lambda_min(inf) against width m (log-log), with m^{-1/2}."""
    figure, ax = _figure()
    widths = np.asarray(widths, dtype=float)
    gaps = np.asarray(gaps, dtype=float)
    ax.loglog(widths, gaps, "o-", label="measured")
    if widths.size and np.all(np.isfinite(gaps)):
        ax.loglog(widths, gaps[0] * np.sqrt(widths[0] / widths), "k:", label="slope -1/2")
    ax.set_xlabel("width m")
    ax.set_ylabel("relative gap of lambda_min to infinite width")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return figure

