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

import jax
import jax.numpy as jnp
import numpy as np

from ntkhom import theory
from ntkhom.data import load
from ntkhom.experiments.common import add_seed, finished, positive_float, positive_int
from ntkhom.experiments.verdicts import from_fraction, verdict
from ntkhom.kernels import closed_form_ntk_relu, empirical_kernel_path
from ntkhom.models import two_layer
from ntkhom.report import RunFolder, markdown_table, training_progress
from ntkhom.solvers import driver
from ntkhom.solvers.gradient import gradient_solver
from ntkhom.solvers.hrta import hrta_solver, two_stage
from ntkhom.spectrum import spectrum

DESCRIPTION = """Reproduce the HRTA claims as a table of verdicts.

lambda_0 grows with s; relaxation (s > 1) trains faster than ReLU; the GD guarantee holds; measured curves
approach the kernel prediction as width grows; a staged schedule (s > 1, then ReLU) trains a ReLU network
faster than ReLU alone. Writes claims.csv/json, curves.csv, summary.md and hrta.png/pdf."""


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
    parser.add_argument("--quick", action="store_true",
                        help="a ~30 s version (smaller n, widths, steps; 2 seeds): verdicts are indicative")
    parser.add_argument("--n", type=positive_int, default=None,
                        help=f"samples (default {defaults.n}; {QUICK['n']} with --quick)")
    parser.add_argument("--d", type=positive_int, default=None,
                        help=f"input dimension (default {defaults.d}; {QUICK['d']} with --quick)")
    parser.add_argument("--width", type=positive_int, default=None,
                        help=f"hidden width m (default {defaults.width}; {QUICK['width']} with --quick)")
    parser.add_argument("--widths", type=positive_int, nargs="+", default=None,
                        help="widths for the width claim (default " + " ".join(map(str, defaults.widths))
                        + "; " + " ".join(map(str, QUICK["widths"])) + " with --quick)")
    parser.add_argument("--seeds", type=positive_int, default=None,
                        help=f"seeds per setting (default {defaults.seeds}; {QUICK['seeds']} with --quick)")
    parser.add_argument("--steps", type=positive_int, default=None,
                        help=f"GD steps, even (default {defaults.steps}; {QUICK['steps']} with --quick)")
    parser.add_argument("--learning-rate", type=positive_float, default=None,
                        help=f"GD step size (default {defaults.learning_rate})")
    add_seed(parser)


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
        raise ValueError(f"--widths must be positive, got {list(settings.widths)}")
    if settings.steps % 2 or (settings.steps // 2) < settings.ramp_steps:
        raise ValueError(f"--steps must be even and at least {2 * settings.ramp_steps} (two stages), "
                         f"got {settings.steps}")
    if not settings.learning_rate > 0:
        raise ValueError(f"--learning-rate must be positive, got {settings.learning_rate}")
    return settings


def settings(args) -> dict:
    """The validated settings (:class:`Settings`, the quick flag and the base seed) as a dict."""
    return dataclasses.asdict(settings_from(args)) | {"quick": bool(args.quick), "seed": int(args.seed)}


def _config(settings: dict) -> Settings:
    fields = {f.name for f in dataclasses.fields(Settings)}
    return Settings(**{k: tuple(v) if isinstance(v, list) else v for k, v in settings.items() if k in fields})


def _spread(values) -> str:
    """'mean +- std' over seeds (only the mean for one seed)."""
    values = np.asarray(values, dtype=float)
    if values.size == 1:
        return f"{values[0]:.4g}"
    return f"{values.mean():.4g} +- {values.std(ddof=1):.2g}"


def _seed_params(model, cfg: Settings, base: int):
    return [model.init(jax.random.PRNGKey(1000 + base + seed), cfg.d) for seed in range(cfg.seeds)]


def compute(settings: dict, folder: RunFolder, *, quiet: bool = False) -> None:
    """Every experiment of the claims as a unit of work (see the module docstring)."""
    cfg = _config(settings)
    data = load("sphere", n=cfg.n, d=cfg.d, seed=0)
    x, y = data.x, data.y
    eta = cfg.learning_rate
    model = two_layer(cfg.width)
    params = _seed_params(model, cfg, settings["seed"])
    kernel_paths = [empirical_kernel_path(model, p, x) for p in params]
    s_values = list(cfg.s_values)

    # 1. lambda_0 against s, measured (width m) and infinite width (closed form)
    folder.unit("lambda_0", lambda: {
        "s": s_values,
        "measured": [[spectrum(path.at(s)).lambda_min.value for s in s_values] for path in kernel_paths],
        "infinite": [spectrum(closed_form_ntk_relu(x, s=s)).lambda_min.value for s in s_values],
        "step_limit": [[theory.step_size_limit(path.at(s)) for s in s_values] for path in kernel_paths]})

    # 2./3. GD at fixed s over seeds x s, with the linearized predictions
    def fixed_s():
        grid = [(seed, s) for seed in range(cfg.seeds) for s in s_values]
        solver = gradient_solver(model, learning_rate=eta)
        states = [solver.init(params[seed], (x, y))._replace(s=jnp.asarray(s)) for seed, s in grid]
        batch = finished(driver.run_batch(solver, driver.stack([params[seed] for seed, _ in grid]), (x, y),
                                          driver.stack(states), steps=cfg.steps, record_every=cfg.record_every,
                                          callback=training_progress(not quiet), desc="GD over seeds x s"))
        predicted = []
        for seed, s in grid:
            r0 = np.asarray(model.apply(params[seed], x, s) - y)
            with np.errstate(over="ignore"):
                predicted.append(theory.linearized_loss(kernel_paths[seed].at(s), r0, eta, batch.steps))
        shape = (cfg.seeds, len(s_values), -1)
        return {"steps": batch.steps, "loss": batch.loss.reshape(shape), "predicted": np.reshape(predicted, shape),
                "stop": np.reshape(batch.stop_reasons, shape[:2])}

    folder.unit("fixed_s", fixed_s)

    # 4. measured vs linearized as the width grows
    for width in cfg.widths:
        def at_width(width=width):
            wide = two_layer(width)
            wide_params = _seed_params(wide, cfg, settings["seed"])
            result = finished(driver.run_batch(gradient_solver(wide, learning_rate=eta),
                                               driver.stack(wide_params), (x, y), steps=cfg.width_steps,
                                               record_every=cfg.record_every,
                                               callback=training_progress(not quiet), desc=f"GD width {width}"))
            predicted, deviation = [], []
            for seed, p in enumerate(wide_params):
                K = theory.network_kernel(wide, p, x)
                prediction = theory.linearized_loss(K, np.asarray(wide.apply(p, x) - y), eta, result.steps)
                predicted.append(prediction)
                # a run that stopped early (diverged) is padded with NaN: no whole curve to compare, NaN
                whole = bool(np.all(np.isfinite(result.loss[seed])))
                deviation.append(theory.relative_deviation(result.loss[seed], prediction, scale="log") if whole
                                 else float("nan"))
            return {"width": width, "steps": result.steps, "loss": result.loss, "predicted": predicted,
                    "deviation": deviation}

        folder.unit(f"width={width}", at_width)

    # 5. staged schedules and Adam, from the same initializations
    half = cfg.steps // 2
    for spec in cfg.schedules:  # "s_first transition"
        s_first, transition = spec.split()

        def schedule(s_first=float(s_first), transition=transition):
            stages = two_stage(s_first, half, half, eta)
            solver = hrta_solver(model, stages, transition=transition, ramp_steps=cfg.ramp_steps)
            result = finished(driver.run_batch(solver, driver.stack(params), (x, y), steps=cfg.steps,
                                               record_every=cfg.record_every,
                                               callback=training_progress(not quiet),
                                               desc=f"{s_first:g} -> 1, {transition}"))
            switch = np.asarray(result.state.switch_loss)[:, 0, :]  # (seeds, 2): before, after
            return {"s_first": s_first, "transition": transition, "steps": result.steps, "loss": result.loss,
                    "switch_loss": switch, "stop": result.stop_reasons}

        folder.unit(f"schedule={spec}", schedule)

    def adam():
        result = finished(driver.run_batch(
            gradient_solver(model, learning_rate=cfg.adam_learning_rate, optimizer="adam"),
            driver.stack(params), (x, y), steps=cfg.steps, record_every=cfg.record_every,
            callback=training_progress(not quiet), desc="Adam s=1"))
        return {"steps": result.steps, "loss": result.loss}

    folder.unit("adam", adam)


def _last(loss) -> np.ndarray:
    """The last finite loss of every run: (runs, records) -> (runs,)."""
    loss = np.asarray(loss, dtype=float)
    return np.array([row[np.isfinite(row)][-1] if np.any(np.isfinite(row)) else np.nan for row in loss])


def _claims(cfg: Settings, units: dict, indicative: bool) -> list[dict]:
    claims = []
    s_values = np.asarray(cfg.s_values)
    setting = f"n={cfg.n}, d={cfg.d}, m={cfg.width}, GD eta={cfg.learning_rate}"
    lam = units.get("lambda_0")
    if lam:
        measured = np.asarray(lam["measured"])
        grows = [bool(np.all(np.diff(row) > 0)) for row in measured]
        claims.append(dict(
            claim="lambda_0 grows with s",
            setting=f"n={cfg.n}, d={cfg.d}, m={cfg.width}, s = {', '.join(f'{s:g}' for s in s_values)}",
            measured="; ".join(f"s={s:g}: {_spread(measured[:, i])}" for i, s in enumerate(s_values))
            + f" (increasing for {sum(grows)} of {len(grows)} seeds)",
            predicted="infinite width: " + "; ".join(f"s={s:g}: {v:.4g}" for s, v in zip(s_values, lam["infinite"])),
            verdict=from_fraction(sum(grows), len(grows), indicative=indicative)))
    fixed = units.get("fixed_s")
    i_relu = list(s_values).index(1.0) if 1.0 in s_values else None
    relu_final = None
    if fixed and i_relu is not None:
        loss = np.asarray(fixed["loss"], dtype=float)  # (seeds, s, records)
        final = np.stack([_last(loss[:, j]) for j in range(len(s_values))], axis=1)
        predicted = np.asarray(fixed["predicted"], dtype=float)[:, :, -1]
        relu_final = final[:, i_relu]
        if 1.5 in s_values:
            i_relax = list(s_values).index(1.5)
            wins = int(np.sum(final[:, i_relax] < relu_final))
            claims.append(dict(
                claim="relaxation s=1.5 trains faster than ReLU (lower loss after equal steps)",
                setting=f"{setting}, {cfg.steps} steps",
                measured=f"final loss s=1.5: {_spread(final[:, i_relax])}; s=1: {_spread(relu_final)}; "
                         f"lower for {wins} of {cfg.seeds} seeds",
                predicted=f"linearized: s=1.5: {_spread(predicted[:, i_relax])}; s=1: {_spread(predicted[:, i_relu])}",
                verdict=from_fraction(wins, cfg.seeds, indicative=indicative)))
        if lam:
            lam_inf = float(lam["infinite"][i_relu])
            steps = np.asarray(fixed["steps"])
            worst = []
            for seed in range(cfg.seeds):
                curve = loss[seed, i_relu]
                bound = theory.gd_bound(lam_inf, cfg.learning_rate, steps, curve[0])
                keep = np.isfinite(curve[1:])
                worst.append(float(np.max(curve[1:][keep] / bound[1:][keep])))  # k = 0 is equality
            holds = sum(w <= 1.0 for w in worst)
            claims.append(dict(
                claim="GD guarantee L_k <= (1 - eta lambda_0/2)^k L_0 (s=1)",
                setting=f"lambda_0 = {lam_inf:.4g} (infinite width), eta={cfg.learning_rate}, m={cfg.width}",
                measured=f"max over k of L_k / bound_k = {_spread(worst)}; holds for {holds} of {cfg.seeds} seeds",
                predicted="<= 1",
                verdict=from_fraction(holds, cfg.seeds, indicative=indicative)))
        # where the linearized prediction fails, say so (large s: lambda_max and the kernel's motion grow)
        for j, s in enumerate(s_values):
            ratio = final[:, j] / predicted[:, j]
            if np.all(np.isfinite(ratio)) and np.median(ratio) > 10:
                limit = np.asarray(lam["step_limit"])[:, j] if lam else None
                claims.append(dict(
                    claim=f"GD at s={s:g} follows its linearized prediction",
                    setting=f"{setting}, {cfg.steps} steps",
                    measured=f"final loss {_spread(final[:, j])}, {_spread(ratio)} times the linearized "
                             f"{_spread(predicted[:, j])}"
                             + ("" if limit is None else
                                f"; eta / (2 / lambda_max) = {_spread(cfg.learning_rate / limit)}"),
                    predicted="ratio about 1 (lazy training)",
                    verdict=verdict(False, indicative=indicative)))
                if limit is not None and np.all(cfg.learning_rate / limit < 0.5):
                    claims[-1]["measured"] += ("; the step is well inside the stability limit, so the gap is not "
                                               "a step-size instability: at this s and width the linearized model "
                                               "does not describe training")
    widths = [units[f"width={w}"] for w in cfg.widths if f"width={w}" in units]
    if len(widths) >= 2:
        deviation = np.array([u["deviation"] for u in widths], dtype=float)  # (widths, seeds)
        log_w = np.log([u["width"] for u in widths])
        slopes = np.array([np.polyfit(log_w, np.log(deviation[:, seed]), 1)[0] for seed in range(deviation.shape[1])])
        mean = float(slopes.mean())
        if slopes.size > 1:
            half_width = 2 * float(slopes.std(ddof=1)) / np.sqrt(slopes.size)
            inside = abs(mean + 0.5) <= half_width
            outcome = (True if inside and half_width <= 0.25 else None) if inside else False
            spread = f"{mean:.2f} +- {slopes.std(ddof=1):.2f} (std over {slopes.size} seeds)"
        else:
            outcome, spread = None, f"{mean:.2f} (one seed: no spread)"
        claims.append(dict(
            claim="measured curves approach the kernel prediction as width grows, deviation O(m^-1/2)",
            setting=f"s=1, GD eta={cfg.learning_rate}, {cfg.width_steps} steps, widths "
                    + ", ".join(str(u["width"]) for u in widths),
            measured="sup_t |log(L / L_lin)|: "
            + "; ".join(f"m={u['width']}: {_spread(u['deviation'])}" for u in widths) + f"; log-log slope {spread}",
            predicted="slope -0.5 (confirmed when -0.5 lies within 2 standard errors of the mean slope)",
            verdict=verdict(outcome, indicative=indicative)))
    # 5. schedules
    adam = units.get("adam")
    half = cfg.steps // 2
    lam_inf = float(lam["infinite"][i_relu]) if lam and i_relu is not None else None
    for spec in cfg.schedules:
        unit = units.get(f"schedule={spec}")
        if unit is None or relu_final is None:
            continue
        s_first, transition = unit["s_first"], unit["transition"]
        finals = _last(unit["loss"])
        switch = np.asarray(unit["switch_loss"], dtype=float)
        steps = np.asarray(unit["steps"])
        peak = np.nanmax(np.asarray(unit["loss"], dtype=float)[:, steps > half], axis=1)
        wins = int(np.sum(finals < relu_final))
        measured = (f"final loss {_spread(finals)} (ReLU GD {_spread(relu_final)}, lower for {wins} of {cfg.seeds} "
                    f"seeds); loss at the switch {_spread(switch[:, 0])} -> {_spread(switch[:, 1])}, highest later "
                    f"record {_spread(peak)}")
        if transition == "switch" and lam_inf is not None:
            # Du et al.'s bound restarted at the measured loss after the switch, with lambda_0 of the ReLU stage
            bounds = np.array([theory.stagewise_bound([(lam_inf, cfg.learning_rate, half)], after)[1][-1]
                               for after in switch[:, 1]])
            measured += f"; stage-2 bound from the post-switch loss {_spread(bounds)}"
            if np.any(finals > bounds):
                measured += f" (exceeded for {int(np.sum(finals > bounds))} of {cfg.seeds} seeds)"
        elif transition == "ramp":
            measured += "; no stage-2 bound: s still changes during the ramp, which the bound does not cover"
        elif transition == "refit_output":
            measured += "; no bound: refitting the output layer is outside the NTK analysis"
        claims.append(dict(
            claim=f"schedule {s_first:g} -> 1 ({transition}) ends below ReLU GD",
            setting=f"{cfg.steps} steps total, switch at {half}, m={cfg.width}",
            measured=measured, predicted=f"lower than ReLU GD {_spread(relu_final)}",
            verdict=from_fraction(wins, cfg.seeds, indicative=indicative)))
        if transition == "switch" and s_first > 1:
            central = dict(
                claim="HRTA's central claim: training with s > 1 first, then switching to ReLU, trains a ReLU "
                      "network faster than ReLU GD alone",
                setting=f"s = {s_first:g} for {half} steps, then s = 1 (plain switch), against s = 1 for "
                        f"{cfg.steps} steps, same initializations and step size",
                measured=f"final ReLU-network loss {_spread(finals)} against {_spread(relu_final)}; lower for "
                         f"{wins} of {cfg.seeds} seeds",
                predicted="lower", verdict=from_fraction(wins, cfg.seeds, indicative=indicative))
            claims.insert(0, central)
    if adam is not None and relu_final is not None:
        finals = _last(adam["loss"])
        claims.append(dict(
            claim=f"Adam (lr {cfg.adam_learning_rate}) at s=1 against ReLU GD (comparison, not a claim of the paper)",
            setting=f"{cfg.steps} steps, m={cfg.width}",
            measured=f"final loss {_spread(finals)}; lower for {int(np.sum(finals < relu_final))} of {cfg.seeds} seeds",
            predicted=f"ReLU GD {_spread(relu_final)}", verdict=None))
    return claims


def finalize(settings: dict, folder: RunFolder) -> str:
    from ntkhom.report import settings_list

    cfg = _config(settings)
    units = folder.units()
    indicative = bool(settings["quick"])
    claims = _claims(cfg, units, indicative)
    columns = ("claim", "setting", "measured", "predicted", "verdict")
    folder.write_json("claims.json", claims)
    folder.write_csv("claims.csv", claims)
    curves = _curve_rows(cfg, units)
    if curves:
        folder.write_csv("curves.csv", curves)
    _figures(folder, cfg, units)
    text = "# HRTA claims\n\n"
    if indicative:
        text += ("A --quick run (small n, short runs, 2 seeds): every verdict is indicative only; run without "
                 "--quick for the reported verdicts.\n\n")
    text += markdown_table(claims, list(columns))
    text += ("\nVerdicts: confirmed, refuted or inconclusive (ntkhom.experiments.verdicts); spreads are "
             "standard deviations over seeds. The staged runs share the initializations of the fixed-s runs.\n")
    text += "\n## Settings\n\n" + settings_list(settings)
    return text


def _curve_rows(cfg: Settings, units: dict) -> list[dict]:
    rows = []
    fixed = units.get("fixed_s")
    if fixed:
        for seed in range(cfg.seeds):
            for j, s in enumerate(cfg.s_values):
                rows += [dict(experiment="s", seed=seed, s=s, width=cfg.width, step=t, loss=l, predicted=p)
                         for t, l, p in zip(fixed["steps"], fixed["loss"][seed][j], fixed["predicted"][seed][j])]
    for width in cfg.widths:
        unit = units.get(f"width={width}")
        if unit:
            for seed in range(cfg.seeds):
                rows += [dict(experiment="width", seed=seed, s=1.0, width=width, step=t, loss=l, predicted=p)
                         for t, l, p in zip(unit["steps"], unit["loss"][seed], unit["predicted"][seed])]
    for spec in cfg.schedules:
        unit = units.get(f"schedule={spec}")
        if unit:
            label = f"{unit['s_first']:g} -> 1, {unit['transition']}"
            for seed in range(cfg.seeds):
                rows += [dict(experiment="schedule", schedule=label, seed=seed, width=cfg.width, step=t, loss=l)
                         for t, l in zip(unit["steps"], unit["loss"][seed])]
    return rows


def _figures(folder: RunFolder, cfg: Settings, units: dict) -> None:
    from ntkhom import plots

    loss_label = "training loss (1/2 sum of squared residuals)"
    band = f"band: min to max over {cfg.seeds} seeds" if cfg.seeds > 1 else "one seed"
    panels = []
    fixed = units.get("fixed_s")
    if fixed:
        curves = []
        for j, s in enumerate(cfg.s_values):
            color = f"C{j}"
            loss = np.asarray(fixed["loss"], dtype=float)[:, j]
            curves.append(plots.Curve(fixed["steps"], loss, f"s = {s:g}", color))
            curves.append(plots.Curve(fixed["steps"], np.asarray(fixed["predicted"], dtype=float)[:, j],
                                      "linearized prediction (dashed)" if j == 0 else None, color, "--", band=False,
                                      linewidth=1))
        panels.append(plots.Panel(curves, title=f"GD at fixed s, m = {cfg.width} ({band})", ylabel=loss_label))
    widths = [units[f"width={w}"] for w in cfg.widths if f"width={w}" in units]
    if widths:
        w = np.array([u["width"] for u in widths], dtype=float)
        deviation = np.array([u["deviation"] for u in widths], dtype=float).T  # (seeds, widths)
        reference = np.exp(np.mean(np.log(deviation[:, 0]))) * np.sqrt(w[0] / w)
        panels.append(plots.Panel(
            [plots.Curve(w, deviation, "measured (mean over seeds, band min to max)", "C0", marker="o"),
             plots.Curve(w, reference, "slope -1/2 (prediction)", "k", ":", band=False, linewidth=1)],
            title="distance to the linearized curve against width, s = 1", xlabel="hidden width m (neurons)",
            ylabel="sup_t |log(L / L_lin)| (dimensionless)", xscale="log", yscale="log"))
    schedules = [(spec, units[f"schedule={spec}"]) for spec in cfg.schedules if f"schedule={spec}" in units]
    if schedules or fixed:
        curves = []
        if fixed:
            i_relu = list(cfg.s_values).index(1.0) if 1.0 in cfg.s_values else 0
            curves.append(plots.Curve(fixed["steps"], np.asarray(fixed["loss"], dtype=float)[:, i_relu],
                                      "ReLU GD (fixed s = 1)", "k", ":"))
        for i, (_, unit) in enumerate(schedules):
            curves.append(plots.Curve(unit["steps"], np.asarray(unit["loss"], dtype=float),
                                      f"{unit['s_first']:g} -> 1, {unit['transition']}", f"C{i + 4}"))
        # the axis shows the schedules; Adam may go far below (its final loss is in the table)
        lowest = min(float(np.nanmin(np.asarray(c.y, dtype=float))) for c in curves)
        adam = units.get("adam")
        if adam:
            curves.append(plots.Curve(adam["steps"], np.asarray(adam["loss"], dtype=float), "Adam, s = 1", "C8",
                                      "-."))
        panels.append(plots.Panel(curves, title=f"staged schedules, switch at step {cfg.steps // 2} ({band})",
                                  ylabel=loss_label, ylim=(lowest / 10, None)))
    if panels:
        folder.save_figure("hrta.png", plots.curves_figure(panels))
