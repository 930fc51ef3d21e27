"""``ntkhom train``: compare solvers on one dataset, with the kernel's predicted curves overlaid.

Every solver trains the same homotopy network from the same initializations (one per seed, run as a vmapped
batch under one compilation). For full-batch GD on the squared loss the empirical NTK at initialization
predicts the whole curve (linearized dynamics, :func:`ntkhom.theory.linearized_loss`) and bounds it
(Du et al.'s (1 - eta lambda_0 / 2)^k); both are drawn beside the measured curves and tabulated with the
fitted linear rate, the predicted asymptotic rate and the step-size limit 2 / lambda_max.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import numpy as np

from ntkhom import theory
from ntkhom.data import DATASETS, load
from ntkhom.models import two_layer
from ntkhom.report import RunFolder, markdown_table, training_progress
from ntkhom.solvers import driver
from ntkhom.solvers.gradient import gradient_solver
from ntkhom.solvers.hrta import TRANSITIONS, hrta_solver, two_stage
from ntkhom.spectrum import spectrum

DESCRIPTION = """Compare solvers (GD, momentum, Adam, HRTA) on a dataset: loss curves on a log scale with the
kernel's predicted curves overlaid, JSON/CSV of every curve, a markdown summary of rates."""

SOLVERS = ("gd", "momentum", "nesterov", "adam", "hrta")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="sphere", choices=DATASETS, help="dataset (ntkhom.data.load)")
    parser.add_argument("--n", type=int, default=100, help="samples")
    parser.add_argument("--d", type=int, default=10, help="input dimension (synthetic sets)")
    parser.add_argument("--width", type=int, default=1000, help="hidden width m")
    parser.add_argument("--s", type=float, default=1.0, help="homotopy parameter (1 = ReLU)")
    parser.add_argument("--solvers", nargs="+", default=["gd", "momentum", "adam", "hrta"], choices=SOLVERS)
    parser.add_argument("--learning-rate", type=float, default=0.02, help="step size of GD/momentum/HRTA")
    parser.add_argument("--adam-learning-rate", type=float, default=0.01, help="step size of Adam")
    parser.add_argument("--hrta-s", type=float, default=1.5, help="first-stage s of HRTA (then s = 1)")
    parser.add_argument("--hrta-transition", default="refit_output", choices=TRANSITIONS)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--record-every", type=int, default=20)


def _check(args) -> None:
    for name in ("n", "d", "width", "steps", "seeds", "record_every"):
        if getattr(args, name) <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    for name in ("learning_rate", "adam_learning_rate"):
        if not getattr(args, name) > 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")


def _solver(name, model, args, loss):
    if name == "adam":
        return gradient_solver(model, learning_rate=args.adam_learning_rate, optimizer="adam", loss=loss)
    if name == "hrta":
        half = args.steps // 2
        stages = two_stage(args.hrta_s, max(half, 1), max(args.steps - half, 1), args.learning_rate)
        return hrta_solver(model, stages, transition=args.hrta_transition, loss=loss,
                           ramp_steps=max(1, min(half, args.steps - half) // 4))
    return gradient_solver(model, learning_rate=args.learning_rate, optimizer=name, loss=loss)


def run(args) -> Path:
    _check(args)
    quiet = getattr(args, "quiet", False)
    started = time.perf_counter()
    settings = {k: v for k, v in vars(args).items() if not k.startswith("_")}
    folder = RunFolder(args.out, settings)
    data = load(args.dataset, n=args.n, d=args.d, seed=0)
    x, y = data.x, data.y
    classification = data.task == "classification"
    loss = "cross_entropy" if classification else "squared"
    model = two_layer(args.width, s=args.s, out_dim=y.shape[1], trained="all" if classification else "hidden")
    params = [model.init(jax.random.PRNGKey(seed), x.shape[1]) for seed in range(args.seeds)]
    stacked = driver.stack(params)

    # the kernel side (squared loss only): linearized prediction, bound, rates
    kernel_rows, predictions = [], {}
    if not classification:
        for seed, p in enumerate(params):
            K = theory.network_kernel(model, p, x)
            spec = spectrum(K)
            r0 = np.asarray(model.apply(p, x) - y)
            predictions[seed] = (K, r0, spec)
            kernel_rows.append({"seed": seed, "lambda_min": spec.lambda_min.value, "lambda_max": spec.lambda_max.value,
                                "step_limit_2_over_lambda_max": theory.step_size_limit(K),
                                "predicted_gd_factor": theory.predicted_rate(K, args.learning_rate, r0)})
        folder.write_csv("kernel.csv", kernel_rows)

    rows, curves = [], []
    for name in args.solvers:
        solver = _solver(name, model, args, loss)
        result = driver.run_batch(solver, stacked, (x, y), steps=args.steps, record_every=args.record_every,
                                  callback=training_progress(not quiet), desc=name)
        for seed in range(args.seeds):
            one = result.run(seed)
            predicted = bound = None
            if not classification and name == "gd":
                K, r0, spec = predictions[seed]
                predicted = theory.linearized_loss(K, r0, args.learning_rate, one.steps)
                if 0 < args.learning_rate * spec.lambda_min.value / 2 <= 1:
                    bound = theory.gd_bound(spec.lambda_min.value, args.learning_rate, one.steps, one.loss[0])
            for i, (t, value) in enumerate(zip(one.steps, one.loss)):
                curves.append({"solver": name, "seed": seed, "step": int(t), "loss": float(value),
                               "predicted": None if predicted is None else float(predicted[i]),
                               "bound": None if bound is None else float(bound[i])})
            half = len(one.loss) // 2
            try:
                fit = theory.fit_linear_rate(one.steps[half:], one.loss[half:])
                factor = fit.factor
            except ValueError:  # too few records or a zero loss: no rate to fit
                factor = float("nan")
            row = {"solver": name, "seed": seed, "final_loss": one.final_loss, "fitted_factor_per_step": factor,
                   "stop": one.stop_reason, "stop_step": one.stop_step}
            if predicted is not None:
                row["predicted_final_loss"] = float(predicted[-1])
                row["predicted_factor_per_step"] = kernel_rows[seed]["predicted_gd_factor"]
            if classification and "accuracy" in one.metrics:
                row["accuracy"] = float(one.metrics["accuracy"][-1])
            rows.append(row)
            folder.append_row("results.csv", row)
    folder.write_json("results.json", {"results": rows, "kernel": kernel_rows})
    folder.write_csv("curves.csv", curves)
    _figure(folder, curves, args)
    elapsed = time.perf_counter() - started
    text = f"# ntkhom train: {args.dataset} (n={x.shape[0]}, d={x.shape[1]}), m={args.width}, s={args.s}\n\n"
    text += markdown_table(rows)
    if kernel_rows:
        text += "\nKernel at initialization (empirical NTK, trained layers):\n\n" + markdown_table(kernel_rows)
    text += f"\nLoss: {loss}; {args.steps} steps; wall time {elapsed:.1f} s.\n"
    folder.write_text("summary.md", text)
    if not quiet:
        print(text)
    return folder.path


def _figure(folder: RunFolder, curves: list[dict], args) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, name in enumerate(args.solvers):
        rows = [r for r in curves if r["solver"] == name and r["seed"] == 0]
        steps = [r["step"] for r in rows]
        ax.semilogy(steps, [r["loss"] for r in rows], color=colors[i % 10], label=f"{name} (measured)")
        if rows and rows[0]["predicted"] is not None:
            ax.semilogy(steps, [r["predicted"] for r in rows], "--", color=colors[i % 10], label=f"{name} linearized")
        if rows and rows[0]["bound"] is not None:
            ax.semilogy(steps, [r["bound"] for r in rows], ":", color=colors[i % 10], label=f"{name} Du et al. bound")
    ax.set(xlabel="step", ylabel="training loss", title=f"{args.dataset}, m={args.width}, s={args.s} (seed 0)")
    ax.legend(fontsize=8)
    folder.save_figure("loss_curves.png", fig)
