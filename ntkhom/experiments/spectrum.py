"""NTK spectra along the homotopy path: lambda_min(s) from linear (s = 0) to ReLU (s = 1) to relaxation (s > 1),
at infinite width and at finite widths over several seeds.

Writes to the run folder: points.csv (one row per finished (width, seed, s), appended as it finishes) and
points.json; summary.csv/json (mean and spread over seeds per width and s); gap.csv/json (finite vs infinite
width at s = 1); lambda_min.png, ratio.png, density.png, gap.png; summary.md.
"""

from __future__ import annotations

import argparse
import math
import warnings
from pathlib import Path

import numpy as np

DESCRIPTION = __doc__

#: Defaults sized to finish in about a minute on 2 CPU cores.
DEFAULTS = {
    "dataset": "sphere", "n": 128, "d": 8, "normalization": "sphere", "widths": [256, 1024], "seeds": 2,
    "s_min": 0.0, "s_max": 2.0, "s_points": 21, "depth": 1, "density_s": [0.5, 1.0, 2.0],
}


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser, defaults: dict | None = None) -> None:
    from ntkhom.data import DATASETS, NORMALIZATIONS

    d = {**DEFAULTS, **(defaults or {})}
    parser.add_argument("--dataset", default=d["dataset"], help=f"one of {', '.join(DATASETS)}")
    parser.add_argument("--n", type=int, default=d["n"], help="number of points (subsample for real data)")
    parser.add_argument("--d", type=int, default=d["d"], help="input dimension of synthetic data")
    parser.add_argument("--normalization", default=d["normalization"], choices=NORMALIZATIONS)
    parser.add_argument("--widths", type=int, nargs="*", default=d["widths"], help="finite hidden widths")
    parser.add_argument("--no-infinite", action="store_true", help="skip the infinite-width kernel")
    parser.add_argument("--seeds", type=int, default=d["seeds"], help="initializations per finite width")
    parser.add_argument("--s-min", type=float, default=d["s_min"])
    parser.add_argument("--s-max", type=float, default=d["s_max"])
    parser.add_argument("--s-points", type=int, default=d["s_points"], help="evenly spaced s values")
    parser.add_argument("--s", type=float, nargs="+", default=None, help="explicit s grid (overrides the range)")
    parser.add_argument("--density-s", type=float, nargs="*", default=d["density_s"],
                        help="s values whose full spectrum is plotted (snapped to the grid)")
    parser.add_argument("--depth", type=int, default=d["depth"], help="hidden layers (1: exact three-matrix path)")
    parser.add_argument("--trained", default="hidden", choices=("hidden", "all"))
    parser.add_argument("--bias", action="store_true", help="hidden-layer biases")
    parser.add_argument("--method", default="reduced", choices=("reduced", "subspace", "eigh"),
                        help="lambda_min along the path (ntkhom.eigenpath.lambda_min_path)")
    parser.add_argument("--seed", type=int, default=0, help="PRNG seed for data and parameters")


def s_grid_from(args) -> np.ndarray:
    """The s grid of the arguments (validated by :func:`ntkhom.eigenpath.check_s_grid`)."""
    from ntkhom.eigenpath import check_s_grid

    if args.s is not None:
        return check_s_grid(args.s)
    if args.s_points < 1:
        raise ValueError(f"--s-points must be >= 1, got {args.s_points}")
    return check_s_grid(np.linspace(args.s_min, args.s_max, args.s_points))


def _validate(args) -> None:
    from ntkhom.data import DATASETS
    from ntkhom.experiments.sweeps import check_widths

    if args.dataset not in DATASETS:
        raise ValueError(f"unknown dataset {args.dataset!r}; known: {', '.join(DATASETS)}")
    check_widths(args.widths)
    if not args.widths and args.no_infinite:
        raise ValueError("nothing to compute: no widths given and --no-infinite set")
    for name in ("seeds", "depth"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.n is not None and args.n < 1:
        raise ValueError(f"--n must be >= 1, got {args.n}")


def _model(args):
    from ntkhom.models import HomotopyMLP

    return HomotopyMLP(widths=(1,) * args.depth, s=1.0, b_std=1.0 if args.bias else None,
                       output_init="rademacher" if args.depth == 1 else "normal", trained=args.trained)


def _snap(grid: np.ndarray, values) -> list[float]:
    return sorted({float(grid[np.argmin(np.abs(grid - v))]) for v in values})


def run(args, *, title: str = "NTK spectrum along the homotopy path") -> Path:
    import jax

    from ntkhom import data, plots
    from ntkhom.experiments import sweeps
    from ntkhom.report import RunFolder, markdown_table, progress

    _validate(args)
    grid = s_grid_from(args)
    density_s = _snap(grid, args.density_s or [])
    dataset = data.load(args.dataset, n=args.n, d=args.d, normalization=args.normalization, seed=args.seed)
    x = dataset.x
    settings = {k: v for k, v in vars(args).items() if not k.startswith("_")}
    settings.update(n_effective=dataset.n, d_effective=dataset.d, s_grid=grid, density_s=density_s)
    folder = RunFolder(args.out, settings)
    for stale in ("points.csv",):  # rows are appended: a rerun into the same folder starts clean
        if folder.file(stale).exists():
            folder.file(stale).unlink()

    model = _model(args)
    infinite = not args.no_infinite
    total = len(grid) * ((1 if infinite else 0) + len(args.widths) * args.seeds)
    bar = progress(range(total), total=total, desc="spectra (width, seed, s)", enabled=not args.quiet)
    ticks = iter(bar)

    def on_point(width, seed, point):
        folder.append_row("points.csv", {"width": width, "seed": seed, "depth": args.depth, **point.row()})
        next(ticks, None)

    results: list[sweeps.PathResult] = []
    try:
        for result in sweeps.homotopy_spectra(model, x, grid, args.widths, args.seeds, jax.random.PRNGKey(args.seed),
                                              infinite=infinite, densities_at=density_s, method=args.method,
                                              on_point=on_point):
            results.append(result)
            folder.write_json("points.json", [row for r in results for row in r.rows()])
    finally:
        bar.close()
        # Whatever finished is summarised, also after an interrupt.
        if results:
            _write_summary(folder, results, grid, density_s, dataset, args, title, plots, markdown_table)
    return folder.path


def _curves(results, grid):
    """label -> (mean, std) of resolved lambda_min over seeds (NaN where unresolved), and the max floor."""

    curves, floor = {}, np.zeros(len(grid))
    widths = list(dict.fromkeys(r.width for r in results))
    for width in widths:
        runs = [r for r in results if r.width == width]
        values = np.array([np.where(r.path.resolved, r.path.lambda_min, np.nan) for r in runs])
        floor = np.maximum(floor, np.max([r.path.floor for r in runs], axis=0))
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-unresolved columns (e.g. s = 0) give NaN
            mean = np.nanmean(values, axis=0) if np.any(np.isfinite(values)) else np.full(len(grid), np.nan)
            std = np.nanstd(values, axis=0) if len(runs) > 1 else None
        curves[width] = (mean, std)
    return curves, floor


def _write_summary(folder, results, grid, density_s, dataset, args, title, plots, markdown_table):
    from ntkhom.experiments.sweeps import INFINITE, summarize_widths

    summary = summarize_widths(results)
    folder.write_json("summary.json", summary)
    folder.write_csv("summary.csv", summary)
    curves, floor = _curves(results, grid)
    labelled = {plots.curve_label(w): c for w, c in curves.items()}
    folder.save_figure("lambda_min.png", plots.lambda_min_plot(grid, labelled, floor))

    has_one = bool(np.any(np.isclose(grid, 1.0, rtol=0, atol=1e-12)))
    ratio_rows = []
    if has_one:
        one = int(np.argmin(np.abs(grid - 1.0)))
        ratios = {plots.curve_label(w): mean / mean[one] for w, (mean, _) in curves.items()}
        folder.save_figure("ratio.png", plots.ratio_plot(grid, ratios))
        for i, s in enumerate(grid):
            row = {"s": float(s), "s_squared": float(s) ** 2}
            row.update({label: float(r[i]) if np.isfinite(r[i]) else None for label, r in ratios.items()})
            ratio_rows.append(row)
        folder.write_json("ratio.json", ratio_rows)
        folder.write_csv("ratio.csv", ratio_rows)

    gap_rows = []
    if INFINITE in curves and has_one:
        one = int(np.argmin(np.abs(grid - 1.0)))
        limit = curves[INFINITE][0][one]
        for width, (mean, _std) in curves.items():
            if width == INFINITE or not np.isfinite(mean[one]) or not np.isfinite(limit):
                continue
            runs = [r for r in results if r.width == width and r.path.resolved[one]]
            errors = [abs(r.path.lambda_min[one] - limit) / limit for r in runs]
            gap_rows.append({"width": width, "s": 1.0, "lambda_min_mean": float(mean[one]),
                             "lambda_min_infinite": float(limit), "mean_relative_error": float(np.mean(errors))})
        if gap_rows:
            folder.write_json("gap.json", gap_rows)
            folder.write_csv("gap.csv", gap_rows)
            folder.save_figure("gap.png", plots.gap_plot([r["width"] for r in gap_rows],
                                                          [r["mean_relative_error"] for r in gap_rows]))

    if density_s:
        spectra = {}
        source = next((r for r in results if r.width == INFINITE), results[0])
        for s, spec in source.spectra.items():
            spectra[f"s = {s:.3g}"] = spec.eigenvalues
        if spectra:
            top_floor = max(spec.floor for spec in source.spectra.values())
            folder.save_figure("density.png", plots.density_plot(
                spectra, top_floor, title=f"eigenvalue density, {plots.curve_label(source.width)}"))

    lines = [f"# {title}", "",
             f"Data: {dataset.name}, n = {dataset.n}, d = {dataset.d}, normalization {args.normalization}; "
             f"depth {args.depth}, trained {args.trained}; s from {grid[0]:g} to {grid[-1]:g} ({len(grid)} points); "
             f"finished paths: {len(results)}.", "",
             "lambda_min is reported only where it is above the float64 floor n eps lambda_max; "
             "elsewhere it is unresolved (an upper bound). Files: points.csv/json, summary.csv/json, "
             "ratio.csv/json, gap.csv/json, PNG plots.", ""]
    picks = _snap(grid, [0.0, 0.5, 1.0, 1.5, 2.0])
    table = [r for r in summary if r["s"] in picks]
    lines += ["## lambda_min at selected s", "", markdown_table(
        table, ["width", "s", "seeds", "resolved", "lambda_min_mean", "lambda_min_std", "floor"])]
    if ratio_rows:
        lines += ["## lambda_min(s) / lambda_min(1) against s^2", "",
                  markdown_table([r for r in ratio_rows if r["s"] in picks])]
    if gap_rows:
        lines += ["## finite vs infinite width at s = 1", "", markdown_table(gap_rows)]
        if len(gap_rows) >= 2:
            w = np.array([r["width"] for r in gap_rows], dtype=float)
            e = np.array([r["mean_relative_error"] for r in gap_rows])
            if np.all(e > 0):
                slope = float(np.polyfit(np.log(w), np.log(e), 1)[0])
                lines += [f"Log-log slope of the relative error against width: {slope:.2f} "
                          "(theory: about -1/2).", ""]
                folder.write_json("gap_slope.json", {"slope": slope if math.isfinite(slope) else None})
    folder.write_text("summary.md", "\n".join(lines) + "\n")
