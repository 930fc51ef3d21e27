"""Rescaling time of PathCond for MLPs of 1e5, 1e6 and 1e7 parameters: ntkhom's jit-compiled coordinate
descent (per layer: two matrix-vector products and a scalar lax.scan over the neurons) against a plain Python
loop over neurons doing the same arithmetic in NumPy (:func:`ntkhom.pathcond.pathcond_python`), in one process.

Run: ``uv run python benchmarks/bench_pathcond.py [--sizes 1e5 1e6 1e7] [--dtype float32] [--sweeps 3]``.
Networks: d = m inputs, 4 hidden layers of width m, m outputs, hidden biases (about 5 m^2 parameters), NTK
parameterization, N(0, 1) weights with a random neuron rescaling applied (so there is work to undo).
Target (issue 5): 1e7 parameters in under 5 s on 2 CPU cores; the PyTorch reference took 7.47 s for
2.6e6 parameters on a GPU.
"""

from __future__ import annotations

import argparse
import math
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from ntkhom import pathcond as pc
from ntkhom.models import HomotopyMLP


def _network(n_params: float, dtype):
    m = max(2, int(round(math.sqrt(n_params / 5))))
    model = HomotopyMLP(widths=(m,) * 4, out_dim=m, b_std=1.0, output_init="normal", trained="all")
    params = model.init(jax.random.PRNGKey(0), m)
    params = pc.rescale(params, pc.random_scaling(jax.random.PRNGKey(1), params, 1.0))
    params = jax.tree.map(lambda a: a.astype(dtype), params)
    count = sum(a.size for a in jax.tree.leaves(params))
    return model, params, m, count


def _timed(fn, repeats: int = 3):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e5, 1e6, 1e7])
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--sweeps", type=int, default=3, help="fixed sweeps for the jit vs Python comparison")
    parser.add_argument("--python-max-params", type=float, default=1e7, help="skip the Python loop above this")
    args = parser.parse_args()
    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    dtype = jnp.dtype(args.dtype)
    device = jax.devices()[0]
    print(f"jax {jax.__version__}, numpy {np.__version__}, python {platform.python_version()}, device "
          f"{device.platform}:{getattr(device, 'device_kind', '')}, CPU threads visible: "
          f"{len(jax.devices('cpu'))} device(s); dtype {dtype.name}; Python loop in float64 NumPy")
    print("columns: params | width | pathcond end-to-end (g + CD to the reference stop rule + rescale): first call"
          " (with compile) / warm, sweeps | CD only, fixed sweeps: jit warm / Python loop / ratio")
    for size in args.sizes:
        model, params, m, count = _network(size, dtype)
        start = time.perf_counter()
        new, scaling = pc.pathcond(params, model)
        jax.block_until_ready(new)
        first = time.perf_counter() - start
        warm = _timed(lambda params=params, model=model: pc.pathcond(params, model)[0])
        g = pc.path_gradient_diag(params, pc.path_scales(model, params))
        jax.block_until_ready(pc.pathcond_from_diag(g, max_sweeps=args.sweeps, tol=0.0).z)
        jit_cd = _timed(lambda g=g: pc.pathcond_from_diag(g, max_sweeps=args.sweeps, tol=0.0).z)
        if count <= args.python_max_params * 1.01:
            start = time.perf_counter()
            z_python = pc.pathcond_python(g, max_sweeps=args.sweeps, tol=0.0)
            python_cd = time.perf_counter() - start
            z_jit = pc.pathcond_from_diag(g, max_sweeps=args.sweeps, tol=0.0).z
            gap = max(float(np.max(np.abs(np.asarray(a, np.float64) - b))) for a, b in zip(z_jit, z_python))
            python_text = f"{python_cd * 1e3:.1f} ms | x{python_cd / jit_cd:.1f} (max |z_jit - z_python| {gap:.1e})"
        else:
            python_text = "skipped | -"
        print(f"{count:.3g} | {m} | {first:.2f} s / {warm * 1e3:.1f} ms, {int(scaling.sweeps)} sweeps | "
              f"{jit_cd * 1e3:.2f} ms / {python_text}", flush=True)


if __name__ == "__main__":
    main()
