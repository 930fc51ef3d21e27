"""Reproduce the HRTA claims (homotopy relaxation training) as a table of verdicts.

Claims checked, each over several seeds (mean +- std):
  1. lambda_0 = lambda_min of the NTK grows with s (empirical kernel at width m vs the closed form H(s));
  2. relaxation (s > 1) trains faster than ReLU (s = 1) at equal width and step size;
  3. Du et al.'s guarantee L_k <= (1 - eta lambda_0 / 2)^k L_0 holds for the ReLU run;
  4. measured loss curves approach the kernel (linearized) prediction as the width grows;
  5. staged schedules (s = 1.5 or 0.5, then 1; each stage change as switch / ramp / refit_output) against
     fixed s and against Adam, with the loss jump measured at the switch.

Setting (the paper's experiment, about 100 samples): inputs uniform on the sphere S^{d-1}, targets from a
random teacher network, f(x) = m^{-1/2} sum_r a_r sigma_s(w_r . x), hidden layer trained, full-batch GD on
L = 1/2 sum_i (f(x_i) - y_i)^2.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ntkhom import theory
from ntkhom.data import load
from ntkhom.kernels import closed_form_ntk_relu, empirical_kernel_path
from ntkhom.models import two_layer
from ntkhom.report import RunFolder, markdown_table, training_progress
from ntkhom.solvers import driver
from ntkhom.solvers.gradient import gradient_solver
from ntkhom.solvers.hrta import hrta_solver, two_stage
from ntkhom.spectrum import spectrum

DESCRIPTION = """Reproduce the HRTA claims: lambda_0 grows with s, relaxation (s > 1) trains faster than ReLU,
measured curves approach the kernel prediction as width grows, staged schedules vs fixed s vs Adam.
Writes claims.csv/json, curves.csv, summary.md and figures."""


@dataclasses.dataclass(frozen=True)
class Settings:
    n: int = 100
    d: int = 10
    width: int = 1000
    widths: tuple[int, ...] = (100, 1000, 10000)
    seeds: int = 3
    steps: int = 2000
    width_steps: int = 600
    learning_rate: float = 0.02
    adam_learning_rate: float = 0.01
    s_values: tuple[float, ...] = (0.5, 1.0, 1.5, 1.9)
    ramp_steps: int = 200
    record_every: int = 50
    schedules: tuple[str, ...] = ("1.5 switch", "1.5 ramp", "1.5 refit_output", "0.5 switch")


QUICK = dict(n=30, d=8, width=300, widths=(100, 1000), seeds=2, steps=400, width_steps=150, ramp_steps=50,
             record_every=25, s_values=(0.5, 1.0, 1.5), schedules=("1.5 switch", "1.5 refit_output"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = Settings()
    parser.add_argument("--quick", action="store_true", help="a ~30 s version (smaller n, widths, steps)")
    parser.add_argument("--n", type=int, default=None, help=f"samples (default {defaults.n})")
    parser.add_argument("--d", type=int, default=None, help=f"input dimension (default {defaults.d})")
    parser.add_argument("--width", type=int, default=None, help=f"hidden width m (default {defaults.width})")
    parser.add_argument("--widths", type=int, nargs="+", default=None,
                        help=f"widths for the width claim (default {defaults.widths})")
    parser.add_argument("--seeds", type=int, default=None, help=f"seeds per setting (default {defaults.seeds})")
    parser.add_argument("--steps", type=int, default=None, help=f"GD steps (default {defaults.steps})")
    parser.add_argument("--learning-rate", type=float, default=None,
                        help=f"GD step size (default {defaults.learning_rate})")


def settings_from(args) -> Settings:
    values = dict(QUICK) if getattr(args, "quick", False) else {}
    for name in ("n", "d", "width", "seeds", "steps", "learning_rate"):
        value = getattr(args, name, None)
        if value is not None:
            values[name] = value
    if getattr(args, "widths", None):
        values["widths"] = tuple(args.widths)
    settings = Settings(**values)
    for name in ("n", "d", "width", "seeds", "steps"):
        if getattr(settings, name) <= 0:
            raise ValueError(f"--{name} must be positive, got {getattr(settings, name)}")
    if any(w <= 0 for w in settings.widths):
        raise ValueError(f"--widths must be positive, got {settings.widths}")
    if settings.steps % 2 or (settings.steps // 2) < settings.ramp_steps:
        raise ValueError(f"--steps must be even and at least {2 * settings.ramp_steps} (two stages)")
    if not settings.learning_rate > 0:
        raise ValueError(f"--learning-rate must be positive, got {settings.learning_rate}")
    return settings


def _spread(values) -> str:
    values = np.asarray(values, dtype=float)
    return f"{values.mean():.4g} +- {values.std():.2g}"


def _verdict(ok: bool) -> str:
    return "confirmed" if ok else "not confirmed"


def _seed_params(model, seeds: int, d: int):
    return [model.init(jax.random.PRNGKey(1000 + seed), d) for seed in range(seeds)]


def run(args) -> Path:
    cfg = settings_from(args)
    quiet = getattr(args, "quiet", False)
    folder = RunFolder(args.out, dataclasses.asdict(cfg) | {"quick": bool(getattr(args, "quick", False))})
    started = time.perf_counter()
    data = load("sphere", n=cfg.n, d=cfg.d, seed=0)
    x, y = data.x, data.y
    eta = cfg.learning_rate
    claims: list[dict] = []
    curves: list[dict] = []

    def add_claim(row):
        claims.append(row)
        folder.append_row("claims.csv", {k: row[k] for k in ("claim", "setting", "measured", "predicted",
                                                              "verdict")})

    # -- 1. lambda_0 grows with s --------------------------------------------------------------------------
    model = two_layer(cfg.width)
    params = _seed_params(model, cfg.seeds, cfg.d)
    paths = [empirical_kernel_path(model, p, x) for p in params]
    s_values = np.asarray(cfg.s_values)
    measured_lam = np.array([[spectrum(path.at(s)).lambda_min.value for s in s_values] for path in paths])
    predicted_lam = np.array([spectrum(closed_form_ntk_relu(x, s=s)).lambda_min.value for s in s_values])
    increasing = bool(np.all(np.diff(measured_lam, axis=1) > 0))
    add_claim(dict(
        claim="lambda_0 grows with s",
        setting=f"n={cfg.n}, d={cfg.d}, m={cfg.width}, s={list(cfg.s_values)}",
        measured="; ".join(f"s={s:g}: {_spread(measured_lam[:, i])}" for i, s in enumerate(s_values)),
        predicted="; ".join(f"s={s:g}: {v:.4g}" for s, v in zip(s_values, predicted_lam)),
        verdict=_verdict(increasing),
        values={"s": s_values, "measured": measured_lam, "predicted_infinite_width": predicted_lam},
    ))

    # -- 2./3. relaxation trains faster; Du et al.'s bound ---------------------------------------------------
    solver = gradient_solver(model, learning_rate=eta)
    grid = [(seed, s) for seed in range(cfg.seeds) for s in s_values]
    states = [solver.init(params[seed], (x, y))._replace(s=jnp.asarray(s)) for seed, s in grid]
    batch = driver.run_batch(solver, driver.stack([params[seed] for seed, _ in grid]), (x, y),
                             driver.stack(states), steps=cfg.steps, record_every=cfg.record_every,
                             callback=training_progress(not quiet), desc="GD over seeds x s")
    final = batch.loss[:, -1].reshape(cfg.seeds, len(s_values))
    predicted_final = np.zeros_like(final)
    for b, (seed, s) in enumerate(grid):
        K = paths[seed].at(s)
        r0 = np.asarray(model.apply(params[seed], x, s) - y)
        prediction = theory.linearized_loss(K, r0, eta, batch.steps)
        predicted_final[seed, list(s_values).index(s)] = prediction[-1]
        curves += [dict(experiment="s", seed=seed, s=float(s), width=cfg.width, step=int(t), loss=float(l),
                        predicted=float(p)) for t, l, p in zip(batch.steps, batch.loss[b], prediction)]
    i_relu, i_relax = list(s_values).index(1.0), list(s_values).index(1.5)
    faster = bool(np.all(final[:, i_relax] < final[:, i_relu]))
    add_claim(dict(
        claim="relaxation s=1.5 trains faster than ReLU",
        setting=f"GD eta={eta}, {cfg.steps} steps, m={cfg.width}",
        measured=f"final loss s=1.5: {_spread(final[:, i_relax])}; s=1: {_spread(final[:, i_relu])}",
        predicted=f"linearized: s=1.5: {_spread(predicted_final[:, i_relax])}; s=1: "
                  f"{_spread(predicted_final[:, i_relu])}",
        verdict=_verdict(faster),
        values={"final": final, "predicted_final": predicted_final},
    ))
    lam_inf = predicted_lam[i_relu]
    worst = []
    for seed in range(cfg.seeds):
        b = grid.index((seed, 1.0))
        bound = theory.gd_bound(lam_inf, eta, batch.steps, batch.loss[b, 0])
        worst.append(float(np.max(batch.loss[b, 1:] / bound[1:])))  # k = 0 is equality
    add_claim(dict(
        claim="GD guarantee L_k <= (1 - eta lambda_0/2)^k L_0 (s=1)",
        setting=f"lambda_0 = {lam_inf:.4g} (infinite width), eta={eta}, m={cfg.width}",
        measured=f"max_k L_k / bound_k = {_spread(worst)}",
        predicted="<= 1",
        verdict=_verdict(max(worst) <= 1.0),
        values={"ratio": worst},
    ))

    # -- 4. closer to the kernel prediction as the width grows ------------------------------------------------
    deviations = np.zeros((len(cfg.widths), cfg.seeds))
    for i, width in enumerate(cfg.widths):
        wide = two_layer(width)
        wide_params = _seed_params(wide, cfg.seeds, cfg.d)
        result = driver.run_batch(gradient_solver(wide, learning_rate=eta), driver.stack(wide_params), (x, y),
                                  steps=cfg.width_steps, record_every=cfg.record_every,
                                  callback=training_progress(not quiet), desc=f"GD width {width}")
        for seed, p in enumerate(wide_params):
            K = theory.network_kernel(wide, p, x)
            prediction = theory.linearized_loss(K, np.asarray(wide.apply(p, x) - y), eta, result.steps)
            deviations[i, seed] = theory.relative_deviation(result.loss[seed], prediction, scale="log")
            curves += [dict(experiment="width", seed=seed, s=1.0, width=width, step=int(t), loss=float(l),
                            predicted=float(q)) for t, l, q in zip(result.steps, result.loss[seed], prediction)]
    means = deviations.mean(axis=1)
    slope = float(np.polyfit(np.log(cfg.widths), np.log(means), 1)[0]) if len(cfg.widths) > 1 else float("nan")
    add_claim(dict(
        claim="measured curves approach the kernel prediction as width grows (sup_t |log(L / L_lin)|)",
        setting=f"s=1, GD eta={eta}, {cfg.width_steps} steps, widths {list(cfg.widths)}",
        measured="; ".join(f"m={w}: {_spread(deviations[i])}" for i, w in enumerate(cfg.widths))
        + f"; log-log slope {slope:.2f}",
        predicted="decreasing, slope about -0.5 (deviation O(m^-1/2))",
        verdict=_verdict(bool(np.all(np.diff(means) < 0))),
        values={"widths": list(cfg.widths), "deviation": deviations, "slope": slope},
    ))

    # -- 5. staged schedules vs fixed s vs Adam ---------------------------------------------------------------
    half = cfg.steps // 2
    stacked = driver.stack(params)
    relu_final = final[:, i_relu]
    schedules = []
    for spec in cfg.schedules:  # "s_first transition"
        s_first, transition = spec.split()
        schedules.append((f"{s_first} -> 1, {transition}", two_stage(float(s_first), half, half, eta), transition))
    comparison = [("fixed s=1 (ReLU), GD", relu_final, None), ("fixed s=1.5, GD", final[:, i_relax], None)]
    for label, stages, transition in schedules:
        solver = hrta_solver(model, stages, transition=transition, ramp_steps=cfg.ramp_steps)
        result = driver.run_batch(solver, stacked, (x, y), steps=cfg.steps, record_every=cfg.record_every,
                                  callback=training_progress(not quiet), desc=label)
        jumps = np.asarray(result.state.switch_loss)[:, 0, :]  # (seeds, 2): before, after
        # a ramp changes s over many steps: its bump is the peak loss of the second stage, not the first step
        peak = np.max(result.loss[:, result.steps > half], axis=1)
        jumps = np.concatenate([jumps, peak[:, None]], axis=1)
        comparison.append((label, result.loss[:, -1], jumps))
        curves += [dict(experiment="schedule", schedule=label, seed=seed, width=cfg.width, step=int(t),
                        loss=float(l)) for seed in range(cfg.seeds) for t, l in zip(result.steps, result.loss[seed])]
    adam = driver.run_batch(gradient_solver(model, learning_rate=cfg.adam_learning_rate, optimizer="adam"),
                            stacked, (x, y), steps=cfg.steps, record_every=cfg.record_every,
                            callback=training_progress(not quiet), desc="Adam s=1")
    comparison.append((f"fixed s=1, Adam lr={cfg.adam_learning_rate}", adam.loss[:, -1], None))
    for label, finals, jumps in comparison:
        reference = label.startswith("fixed s=1 (ReLU)")
        jump_text = "" if jumps is None else (f"; switch loss {_spread(jumps[:, 0])} -> {_spread(jumps[:, 1])}"
                                              f", highest later record {_spread(jumps[:, 2])}")
        bound_text = ""
        if jumps is not None:
            # Du et al.'s bound stage by stage, restarted at the measured loss after the switch (the bound
            # cannot see the jump: the network function changes with s); lambda_0 of the ReLU stage
            bounds = [theory.stagewise_bound([(lam_inf, eta, half)], after)[1][-1] for after in jumps[:, 1]]
            bound_text = f"; stage-2 bound (1 - eta lambda_0(1)/2)^k from the post-switch loss: {_spread(bounds)}"
        add_claim(dict(
            claim=f"schedule: {label}",
            setting=f"{cfg.steps} steps total, m={cfg.width}",
            measured=f"final loss {_spread(finals)}{jump_text}",
            predicted=f"ReLU GD reference {_spread(relu_final)}{bound_text}",
            verdict="reference" if reference else "lower than ReLU GD" if np.all(finals < relu_final) else (
                "higher than ReLU GD" if np.all(finals > relu_final) else "mixed across seeds"),
            values={"final": finals, "switch_loss": jumps},
        ))

    folder.write_json("claims.json", claims)
    folder.write_csv("curves.csv", curves)
    _figures(folder, curves, cfg)
    elapsed = time.perf_counter() - started
    table = markdown_table([{k: row[k] for k in ("claim", "setting", "measured", "predicted", "verdict")}
                            for row in claims])
    folder.write_text("summary.md", f"# HRTA claims\n\n{table}\nSettings: {dataclasses.asdict(cfg)}; "
                                    f"{cfg.seeds} seeds; wall time {elapsed:.1f} s.\n")
    if not quiet:
        print(table)
    return folder.path


def _figures(folder: RunFolder, curves: list[dict], cfg: Settings) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, s in enumerate(cfg.s_values):
        rows = [r for r in curves if r["experiment"] == "s" and r["s"] == s and r["seed"] == 0]
        steps = [r["step"] for r in rows]
        axes[0].semilogy(steps, [r["loss"] for r in rows], color=colors[i % 10], label=f"s={s:g} measured")
        axes[0].semilogy(steps, [r["predicted"] for r in rows], "--", color=colors[i % 10], label="linearized")
    axes[0].set(title=f"GD at fixed s (m={cfg.width}, seed 0)", xlabel="step", ylabel="loss")
    for i, width in enumerate(cfg.widths):
        rows = [r for r in curves if r["experiment"] == "width" and r["width"] == width and r["seed"] == 0]
        steps = [r["step"] for r in rows]
        axes[1].semilogy(steps, [r["loss"] for r in rows], color=colors[i % 10], label=f"m={width}")
        axes[1].semilogy(steps, [r["predicted"] for r in rows], "--", color=colors[i % 10])
    axes[1].set(title="measured (solid) vs linearized (dashed), s=1", xlabel="step")
    labels = list(dict.fromkeys(r["schedule"] for r in curves if r["experiment"] == "schedule"))
    for i, label in enumerate(labels):
        rows = [r for r in curves if r["experiment"] == "schedule" and r["schedule"] == label and r["seed"] == 0]
        axes[2].semilogy([r["step"] for r in rows], [r["loss"] for r in rows], color=colors[i % 10], label=label)
    rows = [r for r in curves if r["experiment"] == "s" and r["s"] == 1.0 and r["seed"] == 0]
    axes[2].semilogy([r["step"] for r in rows], [r["loss"] for r in rows], "k:", label="fixed s=1")
    axes[2].set(title="staged schedules (seed 0)", xlabel="step")
    for ax in axes:
        ax.legend(fontsize=7)
    folder.save_figure("hrta.png", fig)
