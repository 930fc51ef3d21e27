"""NTK spectra along the homotopy path: lambda_min(s) from linear (s = 0) to ReLU (s = 1) to relaxation (s > 1),
at infinite width and at finite widths over several seeds.

Writes to the run folder: points.csv (one row per finished (width, seed, s), appended as it finishes) and
points.json; summary.csv/json (mean and standard deviation over seeds per width and s); ratio.csv; gap.csv
(finite vs infinite width at s = 1); lambda_min, ratio, density and gap figures (PNG and PDF); summary.md.
"""

from __future__ import annotations

import argparse
import sys
import warnings

import numpy as np

from ntkhom.experiments import scale
from ntkhom.experiments.common import add_activation, add_seed, positive_int, warn

DESCRIPTION = __doc__

#: Defaults sized to finish in about a minute on 2 CPU cores.
DEFAULTS = {
    "dataset": "sphere", "n": 128, "d": 8, "normalization": "sphere", "widths": [256, 1024], "seeds": 2,
    "s_min": 0.0, "s_max": 2.0, "s_points": 21, "depth": 1, "density_s": [0.5, 1.0, 2.0],
}


def add_arguments(parser: argparse.ArgumentParser, defaults: dict | None = None) -> None:
    from ntkhom.data import DATASETS, NORMALIZATIONS

    d = {**DEFAULTS, **(defaults or {})}
    parser.add_argument("--dataset", default=d["dataset"], choices=DATASETS, help="dataset (ntkhom.data.load)")
    parser.add_argument("--n", type=positive_int, default=d["n"], help="number of points (subsample for real data)")
    parser.add_argument("--d", type=positive_int, default=d["d"], help="input dimension of synthetic data")
    parser.add_argument("--normalization", default=d["normalization"], choices=NORMALIZATIONS,
                        help="input normalization")
    parser.add_argument("--widths", type=positive_int, nargs="*", default=d["widths"], help="finite hidden widths")
    parser.add_argument("--no-infinite", action="store_true", help="skip the infinite-width kernel")
    parser.add_argument("--seeds", type=positive_int, default=d["seeds"], help="initializations per finite width")
    parser.add_argument("--s-min", type=float, default=d["s_min"], help="first s of the evenly spaced grid")
    parser.add_argument("--s-max", type=float, default=d["s_max"], help="last s of the evenly spaced grid")
    parser.add_argument("--s-points", type=positive_int, default=d["s_points"],
                        help="number of evenly spaced s values (at least 2)")
    parser.add_argument("--s", type=float, nargs="+", default=None,
                        help="explicit s values (override --s-min/--s-max/--s-points; default: the range)")
    parser.add_argument("--density-s", type=float, nargs="*", default=None,
                        help="s values whose full spectrum is plotted (moved to the nearest grid value, with a "
                             f"warning; default {' '.join(f'{v:g}' for v in d['density_s'])}, moved silently)")
    parser.set_defaults(_density_default=list(d["density_s"]))
    parser.add_argument("--depth", type=positive_int, default=d["depth"],
                        help="hidden layers (1: exact three-matrix path)")
    add_activation(parser)
    parser.add_argument("--trained", default="hidden", choices=("hidden", "all"), help="trained layers")
    parser.add_argument("--bias", action="store_true", help="hidden-layer biases")
    parser.add_argument("--method", default="reduced", choices=("reduced", "subspace", "eigh"),
                        help="lambda_min along the path (ntkhom.eigenpath.lambda_min_path)")
    parser.add_argument("--native", action="store_true",
                        help="matrix-free path, finite widths: products by ntkhom.native (numba, host CPU, one "
                             "process; two-layer ReLU-family networks, hidden layer trained; the native extra)")
    add_seed(parser)
    scale.add_arguments(parser)


def s_grid_from(args) -> np.ndarray:
    """The s grid of the arguments (validated by :func:`ntkhom.eigenpath.check_s_grid`); warns on s outside the
    recommended [0, 2]."""
    from ntkhom.activations import S_RECOMMENDED
    from ntkhom.eigenpath import check_s_grid

    if args.s is not None:
        values = sorted(set(float(v) for v in args.s))
        if len(values) < len(args.s):
            warn(f"--s: repeated values dropped, using {values}")
        grid = check_s_grid(values)
    else:
        if args.s_points < 2:
            raise ValueError(f"--s-points must be at least 2 for a path, got {args.s_points} "
                             "(use --s for explicit values)")
        if not args.s_min < args.s_max:
            raise ValueError(f"--s-min ({args.s_min:g}) must be below --s-max ({args.s_max:g})")
        grid = check_s_grid(np.linspace(args.s_min, args.s_max, args.s_points))
    low, high = S_RECOMMENDED
    outside = [float(v) for v in grid if v < low or v > high]
    if outside:
        warn(f"s values {', '.join(f'{v:g}' for v in outside)} are outside [{low:g}, {high:g}], where the "
             "homotopy is studied; they are computed as asked")
    return grid


def settings(args) -> dict:
    """The validated settings of a spectrum run (also the memory estimate, before any work)."""
    import jax

    from ntkhom import distributed
    from ntkhom.data import load

    if not args.widths and args.no_infinite:
        raise ValueError("nothing to compute: no --widths given and --no-infinite set")
    grid = s_grid_from(args)
    density_s = []
    given = args.density_s is not None  # the defaults follow whatever grid was asked for, without a warning
    for value in args.density_s if given else getattr(args, "_density_default", DEFAULTS["density_s"]):
        snapped = float(grid[np.argmin(np.abs(grid - value))])
        if given and abs(snapped - value) > 1e-12:
            warn(f"--density-s {value:g} is not on the s grid; using the nearest grid value {snapped:g}")
        density_s.append(snapped)
    scale.check_inputs_fit(args, n=args.n, d=args.d, widest=max(args.widths, default=0), depth=args.depth)
    dataset = load(args.dataset, n=args.n, d=args.d, normalization=args.normalization, seed=args.seed)
    choice = choose_path(args, dataset.n, dataset.d, _model(vars(args)))
    if getattr(args, "native", False):
        from ntkhom.experiments.matrix_free import native_problem

        problem = native_problem(_model(vars(args)), jax.device_count() if choice.path == "matrix-free" else 1)
        if problem:
            raise ValueError(f"--native: {problem}")
        if choice.path != "matrix-free":
            warn("--native applies to the matrix-free path only; this run takes the dense path "
                 "(--matrix-free forces the other)")
    if not args.quiet:
        from ntkhom.sharding import device_mesh

        mesh = device_mesh() if choice.path == "matrix-free" else None
        native = "; native products" if getattr(args, "native", False) and choice.path == "matrix-free" else ""
        print(f"{distributed.header_line(distributed.device_summary(mesh))}; {choice.path} path ({choice.reason})"
              f"{native}", file=sys.stderr)
    # Where and with how much memory it runs does not change the results (so --resume may change them).
    placement = ("memory_gb", "coordinator_address", "num_processes", "process_id", "distributed")
    settings = {k: v for k, v in vars(args).items()
                if not k.startswith("_") and k not in ("out", "quiet", "overwrite", "resume", "command",
                                                       "experiment", *placement)}
    settings.update(n_effective=dataset.n, d_effective=dataset.d, s_grid=[float(v) for v in grid],
                    density_s=sorted(set(density_s)), kernel_path=choice.path)
    if not settings.get("native"):  # recorded only when asked for, so runs from before the option still resume
        settings.pop("native", None)
    return settings


def choose_path(args, n: int, d: int, model) -> scale.PathChoice:
    """Dense or matrix-free, from the memory estimates of both (:mod:`ntkhom.experiments.scale`)."""
    from ntkhom.experiments import matrix_free

    widest = max(args.widths, default=0)
    problem = matrix_free.unsupported(model, infinite=not args.no_infinite)
    return scale.choose_path(args, n=n, dense_bytes=scale.dense_spectrum_bytes(n, d, widest, args.depth),
                             matrix_free_bytes=scale.matrix_free_spectrum_bytes(
                                 n, d, widest, args.depth, native=bool(getattr(args, "native", False))),
                             matrix_free_problem=problem)


def _model(settings):
    from ntkhom.models import HomotopyMLP

    return HomotopyMLP(widths=(1,) * settings["depth"], s=1.0, phi=settings["activation"],
                       b_std=1.0 if settings["bias"] else None,
                       output_init="rademacher" if settings["depth"] == 1 else "normal", trained=settings["trained"])


def _jobs(settings) -> list:
    from ntkhom.experiments.sweeps import INFINITE

    return ([INFINITE] if not settings["no_infinite"] else []) + list(settings["widths"])


def _key(width, seed) -> str:
    return f"width={width} seed={seed}"


#: The last Lanczos check of the point in progress (matrix-free path), kept for an interrupted run's summary.
LANCZOS = "lanczos_progress.json"

#: Prefix of the units that hold single points of a path (matrix-free path: one s may take an hour).
POINT = "point "


def _point_key(width, seed, s) -> str:
    return f"{POINT}{_key(width, seed)} s={float(s)!r}"


def _paths(folder) -> list:
    """The finished paths (units), without the single points."""
    return [v for k, v in folder.units().items() if not k.startswith(POINT)]


def placement(args) -> dict:
    """``--memory-gb``, which bounds the Lanczos basis of the matrix-free path (no setting: a resumed run may
    have another budget)."""
    return {"memory_gb": getattr(args, "memory_gb", None)}


def lanczos_limit(settings, memory_gb: float | None) -> int | None:
    """The most columns a Lanczos run of the matrix-free path may hold within ``--memory-gb`` (None without
    it: the eigensolvers' share of the available memory)."""
    from ntkhom.experiments import matrix_free

    if memory_gb is None or settings.get("kernel_path", "dense") == "dense":
        return None
    budget, _ = scale.budget_bytes(memory_gb)
    return matrix_free.basis_columns(budget, settings["n_effective"], settings["d_effective"],
                                     max(settings["widths"], default=0), native=bool(settings.get("native")))


def compute(settings, folder, *, quiet: bool = False, memory_gb: float | None = None) -> None:
    """lambda_min paths per (width, seed) as units; points.csv gets a row per finished s as it finishes.
    ``memory_gb``: bounds the matrix-free path's Lanczos basis (:func:`lanczos_limit`)."""
    import jax

    from ntkhom import data, sharding
    from ntkhom.experiments import matrix_free, sweeps
    from ntkhom.report import progress

    grid = np.asarray(settings["s_grid"])
    max_products = lanczos_limit(settings, memory_gb)
    if max_products is not None and max_products < 1:
        raise ValueError(f"--memory-gb {memory_gb:g} leaves no room for the Lanczos basis at n = "
                         f"{settings['n_effective']}; raise --memory-gb or lower --n")
    if max_products is not None and not quiet:
        print(f"Lanczos basis: at most {max_products} columns within --memory-gb {memory_gb:g}", file=sys.stderr)
    dataset = data.load(settings["dataset"], n=settings["n"], d=settings["d"],
                        normalization=settings["normalization"], seed=settings["seed"])
    model = _model(settings)
    seeds = settings["seeds"]
    plan = [(w, [None] if w == sweeps.INFINITE else list(range(seeds))) for w in _jobs(settings)]
    total = sum(len(s) for _, s in plan) * len(grid)

    def finished_point(width, seed, s) -> bool:
        return folder.has_unit(_key(width, seed)) or folder.has_unit(_point_key(width, seed, s))

    done = sum(finished_point(w, seed, s) for w, ss in plan for seed in ss for s in grid)
    if done and folder.writer and folder.file("points.csv").exists():  # keep the points of finished units
        from ntkhom.report import read_csv

        kept = [r for r in read_csv(folder.file("points.csv"))
                if finished_point(r["width"], r["seed"] or None, r["s"])]
        folder.file("points.csv").unlink()
        for row in kept:
            folder.append_row("points.csv", row)
    if folder.writer:  # a check from an earlier, interrupted run describes work that is not kept
        folder.file(LANCZOS).unlink(missing_ok=True)
    bar = progress(range(total), total=total, desc="spectra (width, seed, s)", enabled=not quiet, initial=done)

    def on_lanczos(width, seed, s, depth, eigenvalues, products):
        low = eigenvalues[0]
        bar.set_postfix_str(f"Lanczos depth {depth}, lambda_min {low.value:.6g} +- {low.bound:.1e}", refresh=True)
        # The last check of the point in progress, for the summary of an interrupted run.
        folder.write_json(LANCZOS, {"width": width, "seed": seed, "s": s, "depth": depth, "products": products,
                                    "value": low.value, "bound": low.bound, "floor": low.floor})

    def on_point(width, seed, point):
        row = point.row()
        if settings.get("kernel_path", "dense") != "dense":
            folder.unit(_point_key(width, seed, point.s), lambda: {"width": width, "seed": seed, **row})
            if folder.writer:  # its last check belongs to a finished point now
                folder.file(LANCZOS).unlink(missing_ok=True)
        folder.append_row("points.csv", {"width": width, "seed": seed, "depth": settings["depth"], **row})
        bar.update(1)

    def known(width, seed, s):
        from ntkhom.eigenpath import PathPoint

        row = folder.units().get(_point_key(width, seed, s))
        return None if row is None else PathPoint.from_row(row)

    try:
        for width, width_seeds in plan:
            if all(folder.has_unit(_key(width, s)) for s in width_seeds):
                continue
            widths = [] if width == sweeps.INFINITE else [width]
            key = jax.random.PRNGKey(settings["seed"])
            if settings.get("kernel_path", "dense") == "dense":
                sweep = sweeps.homotopy_spectra(model, dataset.x, grid, widths, seeds, key,
                                                infinite=width == sweeps.INFINITE, densities_at=settings["density_s"],
                                                method=settings["method"], on_point=on_point)
            else:  # products only, split over every device of every process
                sweep = matrix_free.matrix_free_spectra(model, dataset.x, grid, widths, seeds, key,
                                                        infinite=width == sweeps.INFINITE,
                                                        mesh=sharding.device_mesh(), on_point=on_point,
                                                        on_progress=on_lanczos, known=known,
                                                        native=bool(settings.get("native")),
                                                        max_products=max_products)
            for result in sweep:
                folder.unit(_key(result.width, result.seed), lambda result=result: {
                    "width": result.width, "seed": result.seed, "points": result.rows(),
                    "spectra": {f"{s:g}": {"eigenvalues": spec.eigenvalues, "floor": spec.floor}
                                for s, spec in result.spectra.items()}})
    finally:
        bar.close()
    if folder.writer:  # finished: no point is in progress
        folder.file(LANCZOS).unlink(missing_ok=True)


def _stats(values: np.ndarray):
    """Mean and standard deviation (ddof 1; None for a single value) over axis 0, ignoring NaN."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # all-unresolved columns give NaN
        mean = np.nanmean(values, axis=0)
        count = np.sum(np.isfinite(values), axis=0)
        std = np.nanstd(values, axis=0, ddof=1) if values.shape[0] > 1 else None
    if std is not None:
        std = np.where(count > 1, std, np.nan)
    return mean, std


def finalize(settings, folder, *, title: str = "NTK spectrum along the homotopy path") -> str:
    """Tables, figures and the markdown summary from the finished units."""
    from ntkhom import plots
    from ntkhom.experiments.sweeps import INFINITE
    from ntkhom.report import markdown_table, settings_list

    grid = np.asarray(settings["s_grid"])
    results = _paths(folder)
    head = [f"# {title}", "",
            f"Data: {settings['dataset']}, n = {settings['n_effective']}, d = {settings['d_effective']}, "
            f"normalization {settings['normalization']}; depth {settings['depth']}, activation "
            f"{settings['activation']}, trained layers: {settings['trained']}; {len(grid)} values of s from "
            f"{grid[0]:g} to {grid[-1]:g}; finished paths: {len(results)} of "
            f"{sum(1 if w == INFINITE else settings['seeds'] for w in _jobs(settings))}.", ""]
    if not results:
        return "\n".join(head + ["No path finished.", ""] + _unfinished(folder))
    widths = list(dict.fromkeys(r["width"] for r in results))
    values, floors = {}, {}
    for width in widths:
        runs = [r for r in results if r["width"] == width]
        values[width] = np.array([[np.nan if p["lambda_min"] is None else p["lambda_min"] for p in r["points"]]
                                  for r in runs], dtype=float)
        floors[width] = np.max([[p["floor"] for p in r["points"]] for r in runs], axis=0)
    floor = np.max(list(floors.values()), axis=0)
    curves = {w: _stats(v) for w, v in values.items()}
    summary = []
    for width in widths:
        mean, std = curves[width]
        for i, s in enumerate(grid):
            row = {"width": width, "s": float(s), "seeds": int(values[width].shape[0]),
                   "resolved": int(np.sum(np.isfinite(values[width][:, i]))),
                   "lambda_min_mean": float(mean[i]) if np.isfinite(mean[i]) else None,
                   "lambda_min_std": float(std[i]) if std is not None and np.isfinite(std[i]) else None,
                   "floor": float(floors[width][i])}
            summary.append(row)
    folder.write_json("summary.json", summary)
    folder.write_csv("summary.csv", summary)
    folder.write_json("points.json", [p for r in results for p in r["points"]])

    gaps = {}
    if INFINITE in values:
        limit = curves[INFINITE][0]
        for width in widths:
            if width != INFINITE:
                gaps[plots.curve_label(width)] = _stats(np.abs(values[width] - limit) / limit)
    labelled = {plots.curve_label(w): c for w, c in curves.items()}
    folder.save_figure("lambda_min.png", plots.lambda_min_plot(grid, labelled, floor, gaps=gaps or None))

    lines = head + ["lambda_min is reported only where it is above the float64 floor n eps lambda_max; "
                    "elsewhere it is unresolved (an upper bound, shown as –). Standard deviations are over seeds "
                    "(none with one seed). Files: points.csv/json, summary.csv/json, ratio.csv/json, gap.csv/json, "
                    "figures as PNG and PDF.", ""]
    picks = set(_snap(grid, [0.0, 0.5, 1.0, 1.5, 2.0])) if len(grid) > 9 else set(float(s) for s in grid)
    lines += ["## lambda_min at selected s", "", markdown_table(
        [r for r in summary if r["s"] in picks],
        ["width", "s", "seeds", "resolved", "lambda_min_mean", "lambda_min_std", "floor"])]

    one = np.flatnonzero(np.isclose(grid, 1.0, rtol=0, atol=1e-12))
    if one.size:
        one = int(one[0])
        ratios = {plots.curve_label(w): c[0] / c[0][one] for w, c in curves.items()}
        folder.save_figure("ratio.png", plots.ratio_plot(grid, ratios))
        ratio_rows = [{"s": float(s), "s_squared": float(s) ** 2,
                       **{label: float(r[i]) if np.isfinite(r[i]) else None for label, r in ratios.items()}}
                      for i, s in enumerate(grid)]
        folder.write_csv("ratio.csv", ratio_rows)
        folder.write_json("ratio.json", ratio_rows)
        lines += ["## lambda_min(s) / lambda_min(1) against s^2", "",
                  markdown_table([r for r in ratio_rows if r["s"] in picks])]
        gap_rows = []
        if INFINITE in values and np.isfinite(curves[INFINITE][0][one]):
            limit = curves[INFINITE][0][one]
            for width in widths:
                if width == INFINITE or not np.any(np.isfinite(values[width][:, one])):
                    continue
                errors = np.abs(values[width][:, one] - limit) / limit
                errors = errors[np.isfinite(errors)]
                gap_rows.append({"width": width, "seeds": int(errors.size),
                                 "lambda_min_mean": float(curves[width][0][one]), "lambda_min_infinite": float(limit),
                                 "relative_gap_mean": float(errors.mean()),
                                 "relative_gap_std": float(errors.std(ddof=1)) if errors.size > 1 else None,
                                 "per_seed": errors.tolist()})
        if gap_rows:
            folder.write_csv("gap.csv", [{k: v for k, v in r.items() if k != "per_seed"} for r in gap_rows])
            folder.write_json("gap.json", gap_rows)
            lines += ["## finite vs infinite width at s = 1", "",
                      markdown_table(gap_rows, ["width", "seeds", "lambda_min_mean", "lambda_min_infinite",
                                                "relative_gap_mean", "relative_gap_std"])]
            slope = None
            if len(gap_rows) >= 2 and all(r["relative_gap_mean"] > 0 for r in gap_rows):
                w = np.log([r["width"] for r in gap_rows])
                slope = float(np.polyfit(w, np.log([r["relative_gap_mean"] for r in gap_rows]), 1)[0])
                lines += [f"Log-log slope of the mean relative gap against width: {slope:.2f} (theory: -1/2 for "
                          "the fluctuation of a finite-width kernel).", ""]
                folder.write_json("gap_slope.json", {"slope": slope})
            folder.save_figure("gap.png", plots.gap_plot(
                [r["width"] for r in gap_rows], [r["relative_gap_mean"] for r in gap_rows],
                [r["relative_gap_std"] or 0.0 for r in gap_rows], slope=slope))

    source = next((r for r in results if r["width"] == INFINITE), results[0])
    if source["spectra"]:
        spectra = {f"s = {float(s):.3g}": np.asarray(v["eigenvalues"]) for s, v in source["spectra"].items()}
        top_floor = max(v["floor"] for v in source["spectra"].values())
        folder.save_figure("density.png", plots.density_plot(
            spectra, top_floor, title=f"NTK eigenvalue histogram, {plots.curve_label(source['width'])}"
            + ("" if source["seed"] is None else f", seed {source['seed']}")))
    lines += _unfinished(folder)
    lines += ["## Settings", "", settings_list({k: v for k, v in settings.items() if k != "s_grid"})]
    return "\n".join(lines) + "\n"


def _unfinished(folder) -> list[str]:
    """Summary lines for the points of unfinished paths (kept as units on the matrix-free path) and for the
    point whose Lanczos run was in progress when the run stopped."""
    from ntkhom.eigensolvers import certified_digits
    from ntkhom.plots import curve_label
    from ntkhom.report import markdown_table

    finished = {_key(p["width"], p["seed"]) for p in _paths(folder)}
    rows = [row for key, row in folder.units().items()
            if key.startswith(POINT) and _key(row["width"], row["seed"]) not in finished]
    lines = []
    if rows:
        lines += ["## Points of unfinished paths", "",
                  "Kept as they finished; `--resume` computes the rest of each path.", "",
                  markdown_table(rows, ["width", "seed", "s", "lambda_min", "lower_bound", "floor", "iterations"])]
    check = folder.file(LANCZOS)
    if folder.status != "finished" and check.exists():
        import json

        last = json.loads(check.read_text())
        if folder.has_unit(_point_key(last["width"], last["seed"], last["s"])):
            return lines
        where = curve_label(last["width"]) + ("" if last["seed"] is None else f", seed {last['seed']}")
        lines += [f"When the run stopped, {where}, s = {last['s']:g} was in progress: at its last check (Lanczos "
                  f"depth {last['depth']}, {last['products']} products) the smallest Ritz value was "
                  f"{certified_digits(last['value'], last['bound'])}, an upper bound on lambda_min, with a "
                  f"residual bound of {last['bound']:.1e} "
                  f"(floor {last['floor']:.1e}). That point is computed again on `--resume`.",
                  ""]
    return lines


def _snap(grid: np.ndarray, values) -> list[float]:
    return sorted({float(grid[np.argmin(np.abs(grid - v))]) for v in values})
