"""``ntkhom train``: compare solvers on one dataset, with the kernel's predicted curves overlaid.

Every solver trains the same homotopy network from the same initializations (one per seed, run as a vmapped
batch under one compilation). For full-batch GD on the squared loss the empirical NTK at initialization
predicts the whole curve (linearized dynamics, :func:`ntkhom.theory.linearized_loss`) and bounds it
(Du et al.'s (1 - eta lambda_0 / 2)^k); both are drawn beside the measured curves and tabulated with the
fitted linear rate, the predicted asymptotic rate and the step-size limit 2 / lambda_max.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import jax
import numpy as np

from ntkhom import theory
from ntkhom.data import DATASETS, load
from ntkhom.experiments.common import add_activation, add_seed, finished, positive_float, positive_int, warn
from ntkhom.models import two_layer
from ntkhom.report import RunFolder, markdown_table, training_progress
from ntkhom.solvers import driver
from ntkhom.solvers.gradient import gradient_solver
from ntkhom.solvers.hrta import TRANSITIONS, hrta_solver, two_stage
from ntkhom.spectrum import spectrum

DESCRIPTION = """Compare solvers (GD, momentum, Adam, HRTA) on a dataset: loss curves on a log scale with the
kernel's predicted curves overlaid, JSON/CSV of every curve, a markdown summary of rates."""

SOLVERS = ("gd", "momentum", "nesterov", "adam", "hrta")
#: Said wherever the "hrta" solver runs with ``refit_output`` (its default here).
REFIT_NOTE = ("hrta's transition refit_output refits the output layer by least squares at the switch, which is "
              "outside the NTK (lazy-training) analysis: no kernel prediction or bound applies to it")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="sphere", choices=DATASETS, help="dataset (ntkhom.data.load)")
    parser.add_argument("--n", type=positive_int, default=100, help="samples")
    parser.add_argument("--d", type=positive_int, default=10, help="input dimension (synthetic sets)")
    parser.add_argument("--width", type=positive_int, default=1000, help="hidden width m")
    parser.add_argument("--s", type=float, default=1.0, help="homotopy parameter (1 = ReLU)")
    add_activation(parser)
    parser.add_argument("--solvers", nargs="+", default=["gd", "momentum", "adam", "hrta"], choices=SOLVERS,
                        help="solvers to compare")
    parser.add_argument("--learning-rate", type=positive_float, default=0.02, help="step size of GD/momentum/HRTA")
    parser.add_argument("--adam-learning-rate", type=positive_float, default=0.01, help="step size of Adam")
    parser.add_argument("--hrta-s", type=float, default=1.5, help="first-stage s of HRTA (then s = 1)")
    parser.add_argument("--hrta-transition", default="refit_output", choices=TRANSITIONS,
                        help="how HRTA changes s between stages (refit_output is outside the NTK analysis)")
    parser.add_argument("--steps", type=positive_int, default=2000, help="training steps")
    parser.add_argument("--seeds", type=positive_int, default=2, help="initializations per solver")
    add_seed(parser)
    parser.add_argument("--record-every", type=positive_int, default=20, help="steps between loss records")


def settings(args) -> dict:
    """Validated settings, with the memory estimate of the kernel (Jacobian n x m (d + 1)) before any work."""
    from ntkhom.activations import S_RECOMMENDED
    from ntkhom.memory import check_memory, jacobian_bytes

    for name in ("s", "hrta_s"):
        value = getattr(args, name)
        if not math.isfinite(value):  # refused before the range warning, which would only add noise
            raise ValueError(f"--{name.replace('_', '-')} must be finite, got {value}")
        if not S_RECOMMENDED[0] <= value <= S_RECOMMENDED[1]:
            warn(f"--{name.replace('_', '-')} {value:g} is outside [{S_RECOMMENDED[0]:g}, {S_RECOMMENDED[1]:g}], "
                 "where the homotopy is studied; used as given")
    data = load(args.dataset, n=args.n, d=args.d, seed=0)
    check_memory(jacobian_bytes(data.n, args.width * (data.d + 2), outputs=data.y.shape[1]),
                 f"--width {args.width} with --n {data.n}: the kernel's Jacobian")
    settings = {k: v for k, v in vars(args).items()
                if not k.startswith("_") and k not in ("out", "quiet", "overwrite", "resume", "command")}
    # what the data really are (a scikit-learn set has its own size and dimension)
    settings.update(n_effective=int(data.n), d_effective=int(data.d))
    return settings


def _solver(name, model, cfg, loss):
    if name == "adam":
        return gradient_solver(model, learning_rate=cfg["adam_learning_rate"], optimizer="adam", loss=loss)
    if name == "hrta":
        half = cfg["steps"] // 2
        stages = two_stage(cfg["hrta_s"], max(half, 1), max(cfg["steps"] - half, 1), cfg["learning_rate"])
        return hrta_solver(model, stages, transition=cfg["hrta_transition"], loss=loss,
                           ramp_steps=max(1, min(half, cfg["steps"] - half) // 4))
    return gradient_solver(model, learning_rate=cfg["learning_rate"], optimizer=name, loss=loss)


def _problem(cfg):
    data = load(cfg["dataset"], n=cfg["n"], d=cfg["d"], seed=0)
    classification = data.task == "classification"
    model = two_layer(cfg["width"], s=cfg["s"], phi=cfg["activation"], out_dim=data.y.shape[1],
                      trained="all" if classification else "hidden")
    params = [model.init(jax.random.PRNGKey(cfg["seed"] + i), data.x.shape[1]) for i in range(cfg["seeds"])]
    return data, classification, model, params


def compute(cfg, folder: RunFolder, *, quiet: bool = False) -> None:
    """The kernel at initialization, then one unit per solver (all seeds in one vmapped batch)."""
    data, classification, model, params = _problem(cfg)
    x, y = data.x, data.y
    loss = "cross_entropy" if classification else "squared"
    stacked = driver.stack(params)
    eta = cfg["learning_rate"]

    def kernels():
        rows = []
        for seed, p in enumerate(params):
            K = theory.network_kernel(model, p, x)
            spec = spectrum(K)
            r0 = np.asarray(model.apply(p, x) - y)
            rows.append({"seed": cfg["seed"] + seed, "lambda_min": spec.lambda_min.value,
                         "lambda_max": spec.lambda_max.value, "step_limit_2_over_lambda_max": theory.step_size_limit(K),
                         "predicted_gd_factor": theory.predicted_rate(K, eta, r0), "K": K, "r0": r0})
        return rows

    kernel_rows = folder.unit("kernel", kernels) if not classification else []
    if kernel_rows:
        folder.write_csv("kernel.csv", [{k: v for k, v in r.items() if k not in ("K", "r0")} for r in kernel_rows])

    for name in cfg["solvers"]:
        def one_solver(name=name):
            solver = _solver(name, model, cfg, loss)
            started = time.perf_counter()
            result = finished(driver.run_batch(solver, stacked, (x, y), steps=cfg["steps"],
                                               record_every=cfg["record_every"],
                                               callback=training_progress(not quiet), desc=name))
            runs = []
            for i in range(cfg["seeds"]):
                one = result.run(i)
                predicted = bound = None
                if kernel_rows and name == "gd":
                    K, r0 = np.asarray(kernel_rows[i]["K"]), np.asarray(kernel_rows[i]["r0"])
                    with np.errstate(over="ignore"):  # beyond 2 / lambda_max the prediction diverges too
                        predicted = theory.linearized_loss(K, r0, eta, result.steps)
                    lam = kernel_rows[i]["lambda_min"]
                    if 0 < eta * lam / 2 <= 1:
                        bound = theory.gd_bound(lam, eta, result.steps, one.loss[0])
                half = len(one.loss) // 2
                try:
                    factor = theory.fit_linear_rate(one.steps[half:], one.loss[half:]).factor
                except ValueError:  # too few records or a zero loss: no rate to fit
                    factor = None
                row = {"solver": name, "seed": cfg["seed"] + i, "last_loss": one.final_loss,
                       "fitted_factor_per_step": factor, "stop": one.stop_reason, "stop_step": one.stop_step,
                       "message": one.message}
                if predicted is not None:
                    row["predicted_final_loss"] = float(predicted[-1])
                    row["predicted_factor_per_step"] = kernel_rows[i]["predicted_gd_factor"]
                if classification and "accuracy" in one.metrics:
                    row["accuracy"] = float(one.metrics["accuracy"][-1])
                runs.append({"row": row, "loss": result.loss[i], "predicted": predicted, "bound": bound})
            return {"solver": name, "steps": result.steps, "runs": runs, "wall_s": time.perf_counter() - started}

        unit = folder.unit(f"solver={name}", one_solver)
        for run in unit["runs"]:
            row = run["row"]
            folder.append_row("results.csv", {k: v for k, v in row.items() if k != "message"})
            if row["stop"] != "steps":
                print(f"ntkhom train: {name} seed {row['seed']} stopped ({row['stop']}): {row['message']}",
                      file=sys.stderr)


def finalize(cfg, folder: RunFolder) -> str:
    from ntkhom import plots
    from ntkhom.report import settings_list

    units = folder.units()
    kernel_rows = [{k: v for k, v in r.items() if k not in ("K", "r0")} for r in units.get("kernel", [])]
    solvers = [units[f"solver={name}"] for name in cfg["solvers"] if f"solver={name}" in units]
    rows = [run["row"] for unit in solvers for run in unit["runs"]]
    curves = []
    for unit in solvers:
        for run in unit["runs"]:
            for i, t in enumerate(unit["steps"]):
                curves.append({"solver": unit["solver"], "seed": run["row"]["seed"], "step": t, "loss": run["loss"][i],
                               "predicted": None if run["predicted"] is None else run["predicted"][i],
                               "bound": None if run["bound"] is None else run["bound"][i]})
    folder.write_json("results.json", {"results": rows, "kernel": kernel_rows})
    if curves:
        folder.write_csv("curves.csv", curves)
    n, d = cfg.get("n_effective", cfg["n"]), cfg.get("d_effective", cfg["d"])
    text = (f"# ntkhom train: {cfg['dataset']} (n = {n}, d = {d}), width {cfg['width']}, "
            f"s = {cfg['s']:g}, activation {cfg['activation']}\n\n")
    if not solvers:
        return text + "No solver finished.\n"
    colors = [f"C{i}" for i in range(10)]
    curve_list = []
    for i, unit in enumerate(solvers):
        color = colors[i % 10]
        losses = np.array([run["loss"] for run in unit["runs"]], dtype=float)
        curve_list.append(plots.Curve(unit["steps"], losses, f"{unit['solver']} (measured)", color))
        predicted = [run["predicted"] for run in unit["runs"] if run["predicted"] is not None]
        if predicted:
            curve_list.append(plots.Curve(unit["steps"], np.array(predicted, dtype=float), "linearized prediction",
                                          "0.3", "--", band=False, linewidth=1))
        bounds = [run["bound"] for run in unit["runs"] if run["bound"] is not None]
        if bounds:
            curve_list.append(plots.Curve(unit["steps"], np.array(bounds, dtype=float),
                                          "Du et al. bound (1 - eta lambda_0/2)^k L_0", "0.3", ":", band=False,
                                          linewidth=1))
    seeds = cfg["seeds"]
    # the axis follows the measured losses: a prediction or bound far outside them (a diverging linearized
    # curve past 2 / lambda_max, a bound near zero) is cut off rather than squeezing the data
    measured = np.concatenate([np.ravel(np.asarray(run["loss"], dtype=float)) for u in solvers for run in u["runs"]])
    measured = measured[np.isfinite(measured) & (measured > 0)]
    ylim = (measured.min() / 100, measured.max() * 10) if measured.size else None
    panel = plots.Panel(curve_list, ylim=ylim, title=f"{cfg['dataset']}, m = {cfg['width']}, s = {cfg['s']:g}"
                        + (f" (band: min to max over {seeds} seeds)" if seeds > 1 else ""),
                        xlabel="step", ylabel="training loss (" + ("cross-entropy" if "accuracy" in rows[0] else
                                                                  "1/2 sum of squared residuals") + ")")
    folder.save_figure("loss_curves.png", plots.curves_figure([panel], panel_size=(7.0, 4.5)))
    text += markdown_table(rows, [c for c in dict.fromkeys(k for r in rows for k in r) if c != "message"])
    stopped = [r for r in rows if r["stop"] != "steps"]
    if stopped:
        text += "\nRuns that did not finish normally (last_loss is the last finite loss):\n\n"
        text += "".join(f"- {r['solver']}, seed {r['seed']}: {r['stop']}: {r['message']}\n" for r in stopped)
    if "hrta" in cfg["solvers"] and cfg["hrta_transition"] == "refit_output":
        text += f"\nNote: {REFIT_NOTE}.\n"
    if kernel_rows:
        text += "\nKernel at initialization (empirical NTK, trained layers):\n\n" + markdown_table(kernel_rows)
    text += ("\nWall time per solver (all seeds, compilation included): "
             + ", ".join(f"{u['solver']} {u['wall_s']:.1f} s" for u in solvers) + ".\n")
    text += "\n## Settings\n\n" + settings_list(cfg)
    return text
