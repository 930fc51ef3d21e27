"""Benchmark: alternating-minimization solvers against GD, SGD and Adam, and the analytic hidden-step solvers.

Part 1: for each dataset, every method (best learning rate of its grid for GD/SGD/Adam) trains the same
two-layer network from the same seeds; reported are the wall time (compilation excluded) and iterations to
two common training-MSE targets: "loose" = 1.01 x the worst final MSE of all methods (every method gets
there) and "tight" = the median final MSE (about half do).

Part 2: the frozen-pattern hidden step of analytic AM at h (d + 1) up to 1e4: matrix-free PCG, the dual
n x n solve and the dense minimum-norm least squares, timed in the same process, with the relative
sub-problem gradient each reaches.

Run: ``uv run python benchmarks/bench_alternating.py [--quick]``.
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time

import jax
import jax.numpy as jnp

jax.config.update("jax_enable_x64", True)

from ntkhom.activations import as_phi  # noqa: E402
from ntkhom.data import load  # noqa: E402
from ntkhom.experiments.am import (  # noqa: E402
    DATASETS,
    DEFAULT_BUDGET,
    METHODS,
    QUICK_BUDGET,
    best_curves,
    best_setting,
    first_time_below,
    methods_for,
    run_method,
)
from ntkhom.solvers.analytic_am import (  # noqa: E402
    TwoLayerWeights,
    am_model,
    augment,
    frozen_pattern_gradient,
    hidden_step,
    pattern,
)


def header() -> None:
    device = jax.devices()[0]
    print(f"python {platform.python_version()}, jax {jax.__version__}, device {device.platform} "
          f"({device.device_kind}), dtype float64, machine {platform.machine()}")
    print("note: 2 CPU cores shared with other jobs; timings are indicative and compilation is excluded")


def targets_part(datasets, seeds, width, budget) -> None:
    print(f"\n== time and iterations to a common training-MSE target (width {width}, seeds {seeds}) ==")
    for name in datasets:
        data = load(name, normalization="standardize", test_fraction=0.25, seed=0)
        model = am_model(width, phi="leaky_relu", out_dim=data.y.shape[1])
        curves, runs = [], []
        for method in methods_for(list(METHODS), model, data, budget):
            c, r = run_method(method, model, data, list(range(seeds)), budget)
            curves += c
            runs += r
        best = best_setting(runs)
        finals = {}
        for method in METHODS:
            rows = [r for r in runs if r["method"] == method and r["setting"] == best[(name, method)]]
            finals[method] = statistics.mean(r["final_train_mse"] for r in rows)
        loose = 1.01 * max(finals.values())
        tight = statistics.median(finals.values())
        print(f"\n{name}: n = {data.n}, d = {data.d}, k = {data.y.shape[1]}; targets loose {loose:.4g}, "
              f"tight {tight:.4g}")
        print(f"{'method':<12} {'setting':<20} {'final MSE':>10} {'t_loose s':>10} {'it_loose':>9} "
              f"{'t_tight s':>10} {'it_tight':>9}")
        reference = None
        for method in METHODS:
            mine = best_curves(curves, name, method, best)
            t_loose = first_time_below(mine, loose)
            t_tight = first_time_below(mine, tight)
            i_loose = first_time_below(mine, loose, key="iteration")
            i_tight = first_time_below(mine, tight, key="iteration")
            if method == "adam":
                reference = t_loose
            print(f"{method:<12} {best[(name, method)] or '-':<20} {finals[method]:>10.4g} {t_loose:>10.3g} "
                  f"{i_loose:>9.4g} {t_tight:>10.3g} {i_tight:>9.4g}")
        am_time = first_time_below(best_curves(curves, name, "analytic-am", best), loose)
        if reference and math.isfinite(am_time) and am_time > 0:
            print(f"ratio Adam / analytic-AM time to the loose target: {reference / am_time:.3g}")


STEP = jax.jit(lambda w, xa, y, s, phi, solver: hidden_step(w, xa, y, s, phi, hidden=solver, maxiter=5000),
               static_argnums=(4, 5))


def _timed(fn, *args):
    out = fn(*args)
    jax.block_until_ready(out)
    start = time.perf_counter()
    out = fn(*args)
    jax.block_until_ready(out)
    return out, time.perf_counter() - start


def hidden_part(sizes) -> None:
    print("\n== analytic AM hidden step (frozen pattern), leaky ReLU, k = 1 ==")
    print(f"{'n':>6} {'d':>4} {'h':>5} {'h(d+1)':>7} {'solver':>6} {'time s':>9} {'rel. gradient':>14} {'CG its':>7}")
    phi = as_phi("leaky_relu")
    for n, d, h, solvers in sizes:
        keys = jax.random.split(jax.random.PRNGKey(0), 4)
        x = jax.random.normal(keys[0], (n, d))
        y = jax.random.normal(keys[1], (n, 1))
        xa = augment(x, True)
        weights = TwoLayerWeights(jax.random.normal(keys[2], (h, d + 1)) / math.sqrt(d),
                                  jax.random.normal(keys[3], (h, 1)) / math.sqrt(h), jnp.zeros(1))
        S = pattern(xa @ weights.W.T, 1.0, phi)
        g0 = float(jnp.linalg.norm(frozen_pattern_gradient(weights, S, xa, y)))
        for solver in solvers:
            try:
                (new, info), seconds = _timed(STEP, weights, xa, y, 1.0, phi, solver)
            except Exception as error:  # noqa: BLE001 - report an out-of-memory or similar and go on
                print(f"{n:>6} {d:>4} {h:>5} {h * (d + 1):>7} {solver:>6} failed: {type(error).__name__}")
                continue
            rel = float(jnp.linalg.norm(frozen_pattern_gradient(new, S, xa, y))) / g0
            print(f"{n:>6} {d:>4} {h:>5} {h * (d + 1):>7} {solver:>6} {seconds:>9.3g} {rel:>14.2e} "
                  f"{int(info['cg_iterations']):>7}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--skip-targets", action="store_true", help="only the hidden-step timings")
    args = parser.parse_args()
    header()
    if args.quick:
        hidden_part([(300, 19, 50, ("cg", "dual", "dense"))])
        if not args.skip_targets:
            targets_part(["wine"], 1, 16, QUICK_BUDGET)
        return
    hidden_part([
        (500, 19, 50, ("cg", "dual", "dense")),      # h (d + 1) = 1000
        (2000, 49, 100, ("cg", "dual", "dense")),    # h (d + 1) = 5000, n < h (d + 1)
        (3000, 49, 200, ("cg", "dual")),             # h (d + 1) = 10000, n < h (d + 1)
        (12000, 49, 200, ("cg",)),                   # h (d + 1) = 10000, n > h (d + 1)
    ])
    if not args.skip_targets:
        targets_part(list(DATASETS), 2, 32, DEFAULT_BUDGET)


if __name__ == "__main__":
    main()
