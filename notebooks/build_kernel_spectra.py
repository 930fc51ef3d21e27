"""Build notebooks/kernel_spectra.ipynb (no outputs committed): `uv run python notebooks/build_kernel_spectra.py`."""

import os
import sys

from nbformat.v4 import new_code_cell, new_markdown_cell

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _notebook import notebook, write  # noqa: E402

cells = [
    new_markdown_cell(
        "# NTK spectra along the homotopy path\n\n"
        "How does the smallest eigenvalue of the NTK Gram matrix, which sets the convergence rate of gradient "
        "descent (Du et al. 2019), move as the homotopy activation sigma_s(x) = (1 - s) x + s ReLU(x) goes from "
        "linear (s = 0) through ReLU (s = 1) to relaxation (s > 1, HRTA)? Two-layer kernels are exactly "
        "K(s) = K0 + s K1 + s^2 K2, so a whole path costs three matrices; lambda_min is found per s on a small "
        "reduced basis checked by its residual against the full kernel, with Cholesky-certified anchors "
        "(`ntkhom.eigenpath.lambda_min_path`)."),
    new_code_cell(
        "import jax\n"
        "import numpy as np\n\n"
        "import ntkhom\n"
        "from ntkhom import data, kernels, plots\n"
        "from ntkhom.eigenpath import lambda_min_path\n"
        "from ntkhom.experiments import sweeps\n"
        "from ntkhom.models import two_layer\n\n"
        "ntkhom.enable_float64()\n"
        "x = data.load('sphere', n=64, d=4).x   # unit-norm inputs, n > d\n"
        "grid = np.linspace(0.0, 2.0, 21)\n"
        "x.shape, x.dtype"),
    new_markdown_cell("## Infinite width: three matrices, then lambda_min at every s (with the float64 floor)"),
    new_code_cell(
        "kpath = kernels.infinite_kernel_path(two_layer(1), x)\n"
        "path = lambda_min_path(kpath, grid)\n"
        "for p in path.points[::5]:\n"
        "    print(f's = {p.s:4.2f}  lambda_min = {p.lambda_min:.4e}  floor = {p.floor:.1e}  '\n"
        "          f'resolved = {p.resolved}  via {p.method}')"),
    new_markdown_cell(
        "At s = 0 the kernel is a multiple of the rank-d Gram matrix X X^T, so with n > d lambda_min is at the "
        "floor (unresolved). For unit-norm inputs the HRTA closed form predicts lambda_min(s) / lambda_min(1) "
        "close to s^2:"),
    new_code_cell(
        "ratio = path.ratio_to(1.0)\n"
        "print(np.round(ratio[1::4], 3), np.round(grid[1::4] ** 2, 3))\n"
        "plots.ratio_plot(grid, {'infinite width': ratio})"),
    new_markdown_cell("## Finite widths, several seeds, against infinite width"),
    new_code_cell(
        "results = list(sweeps.homotopy_spectra(two_layer(1), x, grid, widths=[128, 1024], seeds=2,\n"
        "                                       key=jax.random.PRNGKey(0), densities_at=[0.5, 1.0, 2.0]))\n"
        "curves = {}\n"
        "for width in dict.fromkeys(r.width for r in results):\n"
        "    values = np.array([np.where(r.path.resolved, r.path.lambda_min, np.nan) for r in results\n"
        "                       if r.width == width])\n"
        "    spread = values.std(axis=0) if len(values) > 1 else None\n"
        "    curves[plots.curve_label(width)] = (values.mean(axis=0), spread)\n"
        "floor = np.max([r.path.floor for r in results], axis=0)\n"
        "plots.lambda_min_plot(grid, curves, floor)  # a Figure as the cell's value is displayed"),
    new_code_cell(
        "from ntkhom.report import markdown_table\n\n"
        "rows = [r for r in sweeps.summarize_widths(results) if r['s'] == 1.0]\n"
        "print(markdown_table(rows, ['width', 's', 'lambda_min_mean', 'lambda_min_std', 'relative_gap_to_infinite']))"),
    new_markdown_cell("## Eigenvalue densities at chosen s (infinite width)"),
    new_code_cell(
        "spectra = results[0].spectra\n"
        "plots.density_plot({f's = {s:g}': spec.eigenvalues for s, spec in spectra.items()},\n"
        "                   max(spec.floor for spec in spectra.values()))"),
    new_markdown_cell(
        "The same analysis on any dataset, width list and depth, written to a run folder (JSON, CSV, PNG, "
        "markdown): `ntkhom spectrum --dataset wine --widths 256 1024 --seeds 3`, or `ntkhom report`."),
]

def build():
    """The notebook built from ``cells`` (what the tests compare with the committed one)."""
    return notebook(cells)


if __name__ == "__main__":
    write(cells, "kernel_spectra.ipynb")
