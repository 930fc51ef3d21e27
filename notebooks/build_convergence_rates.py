"""Build notebooks/convergence_rates.ipynb (no outputs committed):
`uv run python notebooks/build_convergence_rates.py`."""

import os
import sys

from nbformat.v4 import new_code_cell, new_markdown_cell

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _notebook import notebook, write  # noqa: E402

cells = [
    new_markdown_cell(
        "# Convergence rates: measured gradient descent against the kernel\n\n"
        "A two-layer homotopy network f(x) = m^{-1/2} sum_r a_r sigma_s(w_r . x) (hidden layer trained, summed "
        "squared loss) trained by full-batch gradient descent with ntkhom's driver, held against what its neural "
        "tangent kernel predicts: the linearized curve, Du et al.'s guarantee (1 - eta lambda_0 / 2)^k, the "
        "asymptotic rate and the step-size limit 2 / lambda_max. Then an HRTA schedule (s = 1.5, then ReLU) and "
        "the loss jump at the switch."),
    new_code_cell(
        "import jax\n"
        "import jax.numpy as jnp\n"
        "import numpy as np\n\n"
        "import ntkhom\n"
        "from ntkhom import plots, theory\n"
        "from ntkhom.data import load\n"
        "from ntkhom.kernels import empirical_kernel_path\n"
        "from ntkhom.models import two_layer\n"
        "from ntkhom.solvers import driver\n"
        "from ntkhom.solvers.gradient import gradient_solver\n"
        "from ntkhom.solvers.hrta import hrta_solver, two_stage\n"
        "from ntkhom.spectrum import spectrum\n\n"
        "ntkhom.enable_float64()\n"
        "data = load(\"sphere\", n=30, d=8, seed=0)\n"
        "x, y = data.x, data.y\n"
        "model = two_layer(400)\n"
        "params = model.init(jax.random.PRNGKey(0), 8)"),
    new_markdown_cell("## The kernel along the homotopy path: lambda_0 grows with s"),
    new_code_cell(
        "path = empirical_kernel_path(model, params, x)  # K(s) = K0 + s K1 + s^2 K2, exactly\n"
        "s_values = [0.5, 1.0, 1.5]\n"
        "for s in s_values:\n"
        "    spec = spectrum(path.at(s))\n"
        "    print(f\"s = {s}: lambda_min = {spec.lambda_min.value:.4g}, lambda_max = {spec.lambda_max.value:.4g}, \"\n"
        "          f\"step limit 2/lambda_max = {theory.step_size_limit(path.at(s)):.4g}\")"),
    new_markdown_cell("## Gradient descent at s = 0.5, 1, 1.5 as one vmapped batch, with predictions"),
    new_code_cell(
        "eta, steps = 0.1, 400\n"
        "solver = gradient_solver(model, learning_rate=eta)\n"
        "states = [solver.init(params, (x, y))._replace(s=jnp.asarray(s)) for s in s_values]\n"
        "batch = driver.run_batch(solver, driver.stack([params] * 3), (x, y), driver.stack(states), steps=steps,\n"
        "                         record_every=10)\n"
        "curves = []\n"
        "for i, s in enumerate(s_values):\n"
        "    K = path.at(s)\n"
        "    r0 = np.asarray(model.apply(params, x, s) - y)\n"
        "    predicted = theory.linearized_loss(K, r0, eta, batch.steps)\n"
        "    lam0 = spectrum(K).lambda_min.value\n"
        "    bound = theory.gd_bound(lam0, eta, batch.steps, batch.loss[i, 0])\n"
        "    color = f\"C{i}\"\n"
        "    curves += [plots.Curve(batch.steps, batch.loss[i], f\"s = {s} measured\", color),\n"
        "               plots.Curve(batch.steps, predicted, \"linearized (dashed)\", color, \"--\", linewidth=1),\n"
        "               plots.Curve(batch.steps, bound, \"(1 - eta lambda_0/2)^k L_0 (dotted)\", color, \":\",\n"
        "                           linewidth=1)]\n"
        "    fit = theory.fit_linear_rate(batch.steps, batch.loss[i], start=steps // 2)\n"
        "    print(f\"s = {s}: fitted loss factor per step {fit.factor:.5f}, \"\n"
        "          f\"predicted {theory.predicted_rate(K, eta, r0):.5f}, bound factor {1 - eta * lam0 / 2:.5f}\")\n"
        "plots.curves_figure([plots.Panel(curves, title=f\"GD, m = 400, eta = {eta}\",\n"
        "                                 ylabel=\"training loss (1/2 sum of squared residuals)\")],\n"
        "                    panel_size=(7, 4.5))"),
    new_markdown_cell(
        "## A step far beyond 2 / lambda_max is a recorded stop, not NaN results\n\n"
        "Just past the limit a wide network may instead \"catapult\" (Lewkowycz et al., 2020): the loss spikes, "
        "the kernel's lambda_max shrinks below 2 / eta and training settles. Far past it, the driver stops and "
        "says why."),
    new_code_cell(
        "too_big = 5 * theory.step_size_limit(path.at(1.0))\n"
        "result = driver.run(gradient_solver(model, learning_rate=too_big), params, (x, y), steps=2000)\n"
        "print(result.stop_reason, \"-\", result.message)"),
    new_markdown_cell(
        "## HRTA: s = 1.5 for half the steps, then ReLU\n\n"
        "A plain switch changes the network function, so the loss jumps; refitting the output layer at the switch "
        "(`transition=\"refit_output\"`, outside the NTK analysis) removes the jump (`\"ramp\"` is the third "
        "option). `state.switch_loss` holds the loss just before and after."),
    new_code_cell(
        "stages = two_stage(1.5, steps // 2, steps // 2, eta)\n"
        "curves = [plots.Curve(batch.steps, batch.loss[1], \"fixed s = 1\", \"k\", \":\")]\n"
        "for i, transition in enumerate((\"switch\", \"refit_output\")):\n"
        "    run = driver.run(hrta_solver(model, stages, transition=transition), params, (x, y),\n"
        "                     steps=steps, record_every=10)\n"
        "    before, after = np.asarray(run.state.switch_loss[0])\n"
        "    print(f\"{transition:13s}: loss {before:.3g} -> {after:.3g} at the switch, final {run.final_loss:.3g}\")\n"
        "    curves.append(plots.Curve(run.steps, run.loss, f\"1.5 -> 1, {transition}\", f\"C{i + 4}\"))\n"
        "plots.curves_figure([plots.Panel(curves, title=\"HRTA schedules, switch at step 200\",\n"
        "                                 ylabel=\"training loss (1/2 sum of squared residuals)\")],\n"
        "                    panel_size=(7, 4.5))"),
]

def build():
    """The notebook built from ``cells`` (what the tests compare with the committed one)."""
    return notebook(cells)


if __name__ == "__main__":
    write(cells, "convergence_rates.ipynb")
