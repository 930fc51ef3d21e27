"""Analytic alternating minimization against GD, SGD, Adam and the layer-split AM methods on real data.

Reproduces the claim of Barbu (2023) in the form of ``shared/reference/alternating.md``: analytic training
of a two-layer network reaches a lower training loss than SGD and Adam on four of five datasets, in less
time, with no tuning. Every method trains the same network (one hidden layer of ``--width`` leaky-ReLU
units, biases, the same Gaussian initialization per seed) on the same standardized data with a held-out
quarter:

* ``analytic-am``: :func:`ntkhom.solvers.analytic_am.analytic_am` (``hidden="auto"``: the exact dual solve
  when n k <= h (d + 1), else CG capped at ``AM_CG_MAXITER`` iterations, which makes the hidden step
  inexact on the larger sets (its relative residual is recorded); damped safeguard);
* ``tiam``, ``plain-am``: :mod:`ntkhom.solvers.tiam` on the layer-split problem (squared loss);
* ``gd``, ``adam``: :func:`ntkhom.solvers.gradient.gradient_solver`, full batch, mean reduction;
* ``sgd``: minibatch SGD (gradient steps on batches of 32 rows drawn afresh each step from the state's key).

GD, SGD and Adam get a learning-rate grid; the best rate (lowest final training loss, averaged over seeds)
is reported. Every run goes through :func:`ntkhom.solvers.driver.run` once to compile and once timed, so
wall times exclude compilation; the time of a record is the timed run's wall time times its fraction of the
iterations (every iteration of a method costs about the same).

Training loss is reported for all methods as the training MSE (mean over samples and outputs of the squared
error; classification sets fit one-hot targets); the test metric is the test MSE (regression) or test
accuracy (classification).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ntkhom.data import load
from ntkhom.experiments.common import add_seed, positive_int, quick_default_help
from ntkhom.experiments.verdicts import verdict
from ntkhom.losses import accuracy
from ntkhom.models import HomotopyMLP
from ntkhom.report import RunFolder, markdown_table, progress, settings_list, training_progress
from ntkhom.solvers.analytic_am import am_model, analytic_am
from ntkhom.solvers.base import Solver
from ntkhom.solvers.driver import run as drive
from ntkhom.solvers.driver import sample_rows
from ntkhom.solvers.gradient import gradient_solver
from ntkhom.solvers.tiam import ipalm, plain_am, tiam

DESCRIPTION = """Analytic alternating minimization (Barbu 2023, reconstructed) against GD, SGD and Adam.

Five scikit-learn datasets, several seeds; training loss and a test metric against wall time and iterations;
a table per dataset and the verdict on: lower training loss than SGD and Adam on 4 of 5 datasets, in less
time."""

DATASETS = ("diabetes", "breast_cancer", "wine", "digits", "friedman1")
LEARNING_RATES = {"gd": (0.03, 0.1, 0.3), "sgd": (0.01, 0.03, 0.1), "adam": (1e-3, 3e-3, 1e-2)}
SGD_BATCH = 32
#: CG iterations per hidden step in the comparison (digits: 1000 iterations cost ~2 s per AM step).
AM_CG_MAXITER = 100


@dataclasses.dataclass(frozen=True)
class Budget:
    """Iterations per method family, the recording interval, and whether GD/SGD/Adam try only the middle
    learning rate of their grids (the quick budget's shortcut)."""

    am: int
    split: int
    gradient: int
    records: int = 40
    one_learning_rate: bool = False


DEFAULT_BUDGET = Budget(am=30, split=200, gradient=1500, records=30)
QUICK_BUDGET = Budget(am=6, split=20, gradient=100, records=5, one_learning_rate=True)


@dataclasses.dataclass
class Method:
    """A method to compare: a solver, a grid of initial-state edits, its budget and its loss scale."""

    name: str
    solver: Solver
    steps: int
    to_mse: Callable[[np.ndarray], np.ndarray]  # solver.loss values -> training MSE
    grid: tuple[dict[str, Any], ...] = ({},)
    grid_label: str = ""


@dataclasses.dataclass(frozen=True)
class _WithTest(Solver):
    """``inner`` trained on the batch's first half ``(x, y)``, with the test metric on its second half
    ``(x_test, y_test)`` recorded beside the inner metrics; with ``batch_size`` every step sees a minibatch of
    the training half drawn from ``state.key`` (minibatch SGD)."""

    inner: Solver
    model: HomotopyMLP
    classification: bool
    batch_size: int | None = None

    @property
    def name(self) -> str:
        return self.inner.name

    def init(self, params, batch):
        return self.inner.init(params, batch[0])

    def step(self, params, state, batch):
        train = batch[0]
        if self.batch_size is not None:
            key, sub = jax.random.split(state.key)
            state = state._replace(key=key)
            train = sample_rows(sub, train, self.batch_size)
        return self.inner.step(params, state, train)

    def loss(self, params, state, batch):
        return self.inner.loss(params, state, batch[0])

    def metrics(self, params, state, batch):
        out = dict(self.inner.metrics(params, state, batch[0]))
        x_test, y_test = batch[1]
        pred = self.model.apply(params, x_test)
        out["test"] = accuracy(pred, y_test) if self.classification else jnp.mean((pred - y_test) ** 2)
        return out


def methods_for(names, model: HomotopyMLP, data, budget: Budget, tiam_grid=None) -> list[Method]:
    """Solvers for the method ``names`` on ``data`` (see the module docstring); ``tiam_grid`` is a tuple
    of (p1, p2, p3) for TIAM (default: its default p only)."""
    n, k = data.y.shape
    per_sum = lambda loss: 2.0 * np.asarray(loss) / (n * k)  # noqa: E731  1/2 sum -> MSE
    per_mean = lambda loss: 2.0 * np.asarray(loss) / k  # noqa: E731  1/2 mean_i sum_k -> MSE
    rates = {key: grid[1:2] if budget.one_learning_rate else grid for key, grid in LEARNING_RATES.items()}
    out = []
    for name in names:
        if name == "analytic-am":
            solver = analytic_am(model, cg_maxiter=AM_CG_MAXITER)
            out.append(Method(name, solver, budget.am, per_sum))
        elif name == "tiam":
            grid = tuple({"p": tuple(p)} for p in tiam_grid) if tiam_grid else ({},)
            out.append(Method(name, tiam(model), budget.split, per_sum, grid, "p"))
        elif name == "ipalm":
            out.append(Method(name, ipalm(model), budget.split, per_sum))
        elif name == "plain-am":
            out.append(Method(name, plain_am(model), budget.split, per_sum))
        elif name in ("gd", "adam"):
            solver = gradient_solver(model, learning_rate=1.0, optimizer=name, reduction="mean")
            grid = tuple({"learning_rate": lr} for lr in rates[name])
            out.append(Method(name, solver, budget.gradient, per_mean, grid, "learning_rate"))
        elif name == "sgd":
            # minibatch SGD: gradient steps on 1/2 mean ||f - y||^2 over SGD_BATCH rows drawn afresh each step
            solver = gradient_solver(model, learning_rate=1.0, optimizer="gd", reduction="mean")
            grid = tuple({"learning_rate": lr} for lr in rates[name])
            out.append(Method(name, solver, budget.gradient, per_mean, grid, "learning_rate"))
        else:
            raise ValueError(f"unknown method {name!r}")
    classification = data.task == "classification"
    return [dataclasses.replace(m, solver=_WithTest(m.solver, model, classification,
                                                    SGD_BATCH if m.name == "sgd" else None)) for m in out]


def _edit_state(state, edit, seed):
    state = state._replace(**{key: jnp.asarray(value, getattr(state, key).dtype) for key, value in edit.items()})
    return state._replace(key=jax.random.PRNGKey(1000 + seed))  # minibatch order per seed


def run_method(method: Method, model: HomotopyMLP, data, seeds, budget: Budget, quiet: bool = True):
    """Run one method over its grid and the seeds; returns rows (one per record) and per-run summaries."""
    record_every = max(1, method.steps // budget.records)
    # a whole number of records: a shorter last record would be a new chunk shape, compiled inside the timing
    steps = record_every * (method.steps // record_every)
    curves, runs = [], []
    for edit in method.grid:
        for seed in seeds:
            params = model.init(jax.random.PRNGKey(seed), data.d)
            batch = ((data.x, data.y), (data.x_test, data.y_test))
            state = _edit_state(method.solver.init(params, batch), edit, seed)
            # compile first (same chunk shape as the timed run), so the timed run measures iterations only
            drive(method.solver, params, batch, state, steps=record_every, record_every=record_every,
                  chunk=record_every)
            start = time.perf_counter()
            result = drive(method.solver, params, batch, state, steps=steps, record_every=record_every,
                           chunk=record_every, callback=training_progress(not quiet),
                           desc=f"{data.name} {method.name}")
            wall = time.perf_counter() - start
            mse = method.to_mse(result.loss)
            test = np.asarray(result.metrics["test"])
            times = wall * result.steps / max(1, result.stop_step)
            label = setting_label(method, edit)
            for i, iteration in enumerate(result.steps):
                curves.append({"dataset": data.name, "method": method.name, "setting": label, "seed": seed,
                               "iteration": int(iteration), "time_s": float(times[i]),
                               "train_mse": float(mse[i]), "test": float(test[i])})
            residual = result.metrics.get("relative_residual")
            runs.append({"dataset": data.name, "method": method.name, "setting": label, "seed": seed,
                         "final_train_mse": float(mse[-1]), "final_test": float(test[-1]),
                         "iterations": int(result.stop_step), "wall_s": wall, "stop": result.stop_reason,
                         "max_cg_residual": float(np.max(residual)) if residual is not None else float("nan")})
    return curves, runs


def setting_label(method: Method, edit: dict) -> str:
    """``name=value`` of a grid point (values joined by commas), empty for a method without a grid."""
    if not edit:
        return ""
    value = np.atleast_1d(np.asarray(edit[method.grid_label], dtype=float))
    return f"{method.grid_label}=" + ",".join(f"{v:g}" for v in value)


def best_setting(runs: list[dict]) -> dict[tuple[str, str], str]:
    """For each (dataset, method), the setting with the lowest seed-mean final training MSE."""
    means: dict[tuple[str, str, str], list[float]] = {}
    for row in runs:
        value = row["final_train_mse"]
        means.setdefault((row["dataset"], row["method"], row["setting"]), []).append(
            value if math.isfinite(value) else math.inf)
    best: dict[tuple[str, str], tuple[float, str]] = {}
    for (dataset, method, setting), values in means.items():
        value = float(np.mean(values))
        if (dataset, method) not in best or value < best[(dataset, method)][0]:
            best[(dataset, method)] = (value, setting)
    return {key: setting for key, (_, setting) in best.items()}


def first_time_below(curves: list[dict], target: float, key: str = "time_s") -> float:
    """Mean over seeds of the first ``key`` at which train_mse <= target (inf if a seed never does)."""
    by_seed: dict[int, list[dict]] = {}
    for row in curves:
        by_seed.setdefault(row["seed"], []).append(row)
    firsts = []
    for rows in by_seed.values():
        hits = [r[key] for r in sorted(rows, key=lambda r: r["iteration"]) if r["train_mse"] <= target]
        firsts.append(hits[0] if hits else math.inf)
    return float(np.mean(firsts)) if firsts else math.inf


def summarize(dataset: str, methods: list[str], curves: list[dict], runs: list[dict], best) -> list[dict]:
    """One row per method: best setting, mean final training MSE and test metric, time and iterations."""
    rows = []
    for method in methods:
        setting = best.get((dataset, method))
        if setting is None:
            continue
        mine = [r for r in runs if r["dataset"] == dataset and r["method"] == method and r["setting"] == setting]
        rows.append({
            "dataset": dataset, "method": method, "setting": setting or "-",
            "train_mse": float(np.mean([r["final_train_mse"] for r in mine])),
            "train_mse_std": float(np.std([r["final_train_mse"] for r in mine], ddof=1)) if len(mine) > 1 else None,
            "test": float(np.mean([r["final_test"] for r in mine])),
            "iterations": int(np.mean([r["iterations"] for r in mine])),
            "wall_s": float(np.mean([r["wall_s"] for r in mine])),
        })
    return rows


def best_curves(curves, dataset, method, best):
    return [c for c in curves if c["dataset"] == dataset and c["method"] == method
            and c["setting"] == best.get((dataset, method))]


def plot_dataset(folder: RunFolder, dataset: str, task: str, methods, curves, best) -> None:
    """Training MSE against wall time and iterations, and the test metric, for each method's best setting
    (mean over seeds, band from the lowest to the highest seed)."""
    from ntkhom import plots

    by_time, by_iteration, test = [], [], []
    for i, method in enumerate(methods):
        rows = best_curves(curves, dataset, method, best)
        if not rows:
            continue
        seeds = sorted({r["seed"] for r in rows})
        iterations = sorted({r["iteration"] for r in rows})
        table = {(r["seed"], r["iteration"]): r for r in rows}

        def grid(key, table=table, seeds=seeds, iterations=iterations):
            return np.array([[table[(s, it)][key] if (s, it) in table else np.nan for it in iterations]
                             for s in seeds], dtype=float)

        label, color = method, f"C{i}"
        x = np.asarray(iterations, dtype=float) + 1  # the initial point (iteration 0) on a log axis
        by_time.append(plots.Curve(np.maximum(np.nanmean(grid("time_s"), axis=0), 1e-5), grid("train_mse"), label,
                                   color))
        by_iteration.append(plots.Curve(x, grid("train_mse"), label, color))
        test.append(plots.Curve(x, grid("test"), label, color))
    metric = "test accuracy (fraction)" if task == "classification" else "test MSE"
    figure = plots.curves_figure([
        plots.Panel(by_time, title=f"{dataset}: training MSE against time",
                    xlabel="wall time (s, compilation excluded; start drawn at 1e-5 s)",
                    ylabel="training MSE", xscale="log", legend=False),
        plots.Panel(by_iteration, title=f"{dataset}: training MSE against iterations", xlabel="iterations + 1",
                    ylabel="training MSE", xscale="log"),
        plots.Panel(test, title=f"{dataset}: {metric}", xlabel="iterations + 1", ylabel=metric, xscale="log",
                    yscale="linear" if task == "classification" else "log", legend=False),
    ])
    folder.save_figure(f"{dataset}.png", figure)


def budget_of(settings: dict[str, Any]) -> Budget:
    """The iteration budget of validated settings (iteration counts as given, or as --quick filled them in)."""
    return dataclasses.replace(QUICK_BUDGET if settings["quick"] else DEFAULT_BUDGET, am=settings["am_iterations"],
                               split=settings["split_iterations"], gradient=settings["gradient_steps"])


def compute_methods(settings: dict[str, Any], folder: RunFolder, methods: list[str], *, quiet: bool = False,
                    tiam_grid=None) -> None:
    """Run ``methods`` on every dataset and seed of ``settings``: one unit of work per (dataset, method)."""
    budget = budget_of(settings)
    seeds = list(range(settings["seed"], settings["seed"] + settings["seeds"]))
    for dataset in progress(settings["datasets"], desc="datasets", enabled=not quiet):
        data = load(dataset, normalization="standardize", test_fraction=0.25, seed=0,
                    n=settings["max_samples"] if settings["max_samples"] else None)
        model = am_model(settings["width"], phi="leaky_relu", out_dim=data.y.shape[1])
        for method in methods_for(methods, model, data, budget, tiam_grid):
            key = f"{dataset}/{method.name}"
            if folder.has_unit(key):
                continue

            def one(method=method, data=data, model=model):
                curves, runs = run_method(method, model, data, seeds, budget, quiet=quiet)
                return {"curves": curves, "runs": runs, "task": data.task}

            for row in folder.unit(key, one)["runs"]:
                folder.append_row("runs.csv", row)


def collect(settings: dict[str, Any], folder: RunFolder, methods: list[str]):
    """Curves, runs, per-dataset tables and best settings from the finished units; one figure per dataset."""
    units = folder.units()
    curves = [c for unit in units.values() for c in unit["curves"]]
    runs = [r for unit in units.values() for r in unit["runs"]]
    tables = {}
    for dataset in settings["datasets"]:
        mine = [r for r in runs if r["dataset"] == dataset]
        if not mine:
            continue
        best = best_setting(mine)
        tables[dataset] = summarize(dataset, methods, curves, runs, best)
        task = next(u["task"] for k, u in units.items() if k.startswith(dataset + "/"))
        plot_dataset(folder, dataset, task, methods, curves, best)
    if curves:
        folder.write_csv("curves.csv", curves)
    return curves, runs, tables, best_setting(runs)


#: Values of the options --quick shrinks, without and with --quick; an option given explicitly keeps its value.
DEFAULTS = dict(datasets=list(DATASETS), seeds=2, width=32, max_samples=None, am_iterations=DEFAULT_BUDGET.am,
                split_iterations=DEFAULT_BUDGET.split, gradient_steps=DEFAULT_BUDGET.gradient)
QUICK = dict(datasets=["wine"], seeds=1, width=16, max_samples=120, am_iterations=QUICK_BUDGET.am,
             split_iterations=QUICK_BUDGET.split, gradient_steps=QUICK_BUDGET.gradient)


def _default(name: str) -> str:
    return quick_default_help(DEFAULTS, QUICK, name, none="every sample")


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    # None: not given, so --quick or the default fills it in (apply_quick)
    parser.add_argument("--datasets", nargs="+", default=None, choices=DATASETS,
                        help=f"datasets to use ({_default('datasets')})")
    parser.add_argument("--seeds", type=positive_int, default=None,
                        help=f"seeds per method and setting ({_default('seeds')})")
    add_seed(parser)
    parser.add_argument("--width", type=positive_int, default=None,
                        help=f"hidden units of the two-layer network ({_default('width')})")
    parser.add_argument("--am-iterations", type=positive_int, default=None,
                        help=f"iterations of analytic AM ({_default('am_iterations')})")
    parser.add_argument("--split-iterations", type=positive_int, default=None,
                        help=f"iterations of TIAM / iPALM / plain AM ({_default('split_iterations')})")
    parser.add_argument("--gradient-steps", type=positive_int, default=None,
                        help=f"steps of GD, SGD and Adam ({_default('gradient_steps')})")
    parser.add_argument("--max-samples", type=positive_int, default=None,
                        help=f"subsample each dataset to this size ({_default('max_samples')})")
    parser.add_argument("--quick", action="store_true",
                        help="a ~30 s smoke run: wine only, 1 seed, few iterations, width 16, one learning rate "
                             "(options given explicitly keep their values); verdicts are indicative")


def apply_quick(args) -> None:
    """Fill in the options not given (from --quick's values or the defaults) and validate the sizes (a clear
    error before any work)."""
    for name, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    for name in ("seeds", "width", "am_iterations", "split_iterations", "gradient_steps"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.max_samples is not None and args.max_samples < 8:
        raise ValueError(f"--max-samples must be >= 8 (a train/test split of a few samples), got {args.max_samples}")


def settings(args) -> dict[str, Any]:
    """Validated settings (``--quick`` applied)."""
    apply_quick(args)
    return settings_of(args)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)


METHODS = ("analytic-am", "tiam", "plain-am", "gd", "sgd", "adam")


def am_verdicts(tables, curves, best) -> list[dict]:
    """Per dataset: does analytic AM end below SGD's and Adam's best training MSE, and get there faster?"""
    rows = []
    for dataset, table in tables.items():
        by = {row["method"]: row for row in table}
        if not {"analytic-am", "sgd", "adam"} <= set(by):
            continue
        rival = min(by["sgd"]["train_mse"], by["adam"]["train_mse"])
        lower = by["analytic-am"]["train_mse"] < rival
        am_time = first_time_below(best_curves(curves, dataset, "analytic-am", best), rival)
        rival_time = min(by["sgd"]["wall_s"], by["adam"]["wall_s"])
        winner = min(table, key=lambda r: r["train_mse"])
        rows.append({
            "dataset": dataset, "lowest training MSE": f"{winner['method']} ({winner['train_mse']:.3g})",
            "analytic-am MSE": by["analytic-am"]["train_mse"], "best of SGD/Adam MSE": rival,
            "AM time to that MSE (s)": am_time, "SGD/Adam time (s)": rival_time,
            "AM lower": lower, "AM faster": bool(lower and am_time < rival_time),
        })
    return rows


def compute(settings: dict[str, Any], folder: RunFolder, *, quiet: bool = False) -> None:
    compute_methods(settings, folder, list(METHODS), quiet=quiet)


def finalize(settings: dict[str, Any], folder: RunFolder) -> str:
    curves, runs, tables, best = collect(settings, folder, list(METHODS))
    verdicts = am_verdicts(tables, curves, best)
    wins = sum(row["AM lower"] and row["AM faster"] for row in verdicts)
    outcome = (wins >= 4) if len(verdicts) == len(DATASETS) else None
    claim = {
        "claim": "analytic AM reaches lower training loss than SGD and Adam on 4 of 5 datasets, in less time",
        "measured": f"lower and faster on {wins} of {len(verdicts)} datasets"
                    + ("" if len(verdicts) == len(DATASETS) else " (the claim needs all 5)"),
        "verdict": verdict(outcome, indicative=settings["quick"]),
    }
    summary = [row for table in tables.values() for row in table]
    if summary:
        folder.write_csv("summary.csv", summary)
    folder.write_json("results.json", {"claim": claim, "verdicts": verdicts, "summary": summary})
    return markdown_summary("reproduce am", settings, summary, verdicts, [claim])


def settings_of(args) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items()
            if not k.startswith("_") and k not in ("out", "quiet", "overwrite", "resume", "command", "experiment")}


def markdown_summary(command, settings, summary, verdicts, claims) -> str:
    lines = [f"# ntkhom {command}", ""]
    if settings["quick"]:
        lines += ["A --quick run (one dataset, one seed, short runs): verdicts are indicative only.", ""]
    lines += [f"Datasets {', '.join(settings['datasets'])}; width {settings['width']}; seeds {settings['seeds']}; "
              f"{'quick' if settings['quick'] else 'default'} budget. Training MSE is the mean over seeds at the "
              "end of each run (best learning rate for GD/SGD/Adam); wall times exclude compilation and were "
              "taken on a shared machine.", "", "## Claims", "", markdown_table(claims), "## Per dataset", "",
              markdown_table(verdicts), "## All methods", "", markdown_table(summary), "## Settings", "",
              settings_list(settings)]
    return "\n".join(lines)
