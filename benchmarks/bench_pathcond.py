"""Rescaling time of PathCond for MLPs of 1e5, 1e6 and 1e7 parameters: ntkhom's jit-compiled coordinate
descent (per layer: two matrix-vector products and a scalar lax.scan over the neurons) against the same
arithmetic (the closed-form coordinate minimiser) as a plain Python loop over neurons in NumPy, in one process.
Both are checked against the independent oracle :func:`ntkhom.pathcond.pathcond_python`, which solves each
one-dimensional problem numerically (too slow to be a fair competitor).

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


def _python_loop(g, sweeps: int) -> tuple[np.ndarray, ...]:
    """PathCond's cyclic coordinate descent as a Python loop over neurons in float64 NumPy, with the same
    closed-form minimiser as the jitted code (positive root of (A + n) out x^2 + A D x + (A - n) in, kept
    where none exists): the competitor doing the same arithmetic."""
    gW = [np.asarray(e["W"], np.float64) for e in g]
    gb = [np.asarray(e["b"], np.float64) if "b" in e else None for e in g]
    n = sum(w.size + (0 if b is None else b.size) for w, b in zip(gW, gb))
    L = len(g) - 1
    A = [gW[l].shape[0] + (gb[l] is not None) - gW[l + 1].shape[1] for l in range(L)]
    z = [np.zeros(gW[l].shape[1]) for l in range(L)]
    for _ in range(sweeps):
        total = 0.0
        for l in range(L + 1):
            e_prev = np.exp(z[l - 1]) if l > 0 else np.ones(gW[l].shape[0])
            e_self = np.exp(-z[l]) if l < L else np.ones(gW[l].shape[1])
            total += float(e_prev @ gW[l] @ e_self) + (float(gb[l] @ e_self) if gb[l] is not None else 0.0)
        for l in range(L):
            e_prev = np.exp(z[l - 1]) if l > 0 else np.ones(gW[l].shape[0])
            e_next = np.exp(-z[l + 1]) if l + 1 < L else np.ones(gW[l + 1].shape[1])
            for h in range(gW[l].shape[1]):
                in_h = float(gW[l][:, h] @ e_prev) + (float(gb[l][h]) if gb[l] is not None else 0.0)
                out_h = float(gW[l + 1][h, :] @ e_next)
                x = math.exp(z[l][h])
                rest = max(total - out_h * x - in_h / x, 0.0)
                a, b, c = (A[l] + n) * out_h, A[l] * rest, (A[l] - n) * in_h
                if (c < 0 and (a > 0 or b > 0)) or (c == 0 and a > 0 and b < 0):
                    root = math.sqrt(b * b - 4 * a * c)
                    x = -2 * c / (b + root) if b >= 0 else (-b + root) / (2 * a)
                total = rest + out_h * x + in_h / x
                z[l][h] = math.log(x)
    return tuple(z)


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
            z_python = _python_loop(g, args.sweeps)
            python_cd = time.perf_counter() - start
            z_jit = pc.pathcond_from_diag(g, max_sweeps=args.sweeps, tol=0.0).z
            z_oracle = pc.pathcond_python(g, max_sweeps=args.sweeps, tol=0.0)
            gap = max(float(np.max(np.abs(np.asarray(a, np.float64) - b))) for a, b in zip(z_jit, z_oracle))
            gap_loop = max(float(np.max(np.abs(a - b))) for a, b in zip(z_python, z_oracle))
            python_text = (f"{python_cd * 1e3:.1f} ms | x{python_cd / jit_cd:.1f} (max |z - z_oracle|: "
                           f"jit {gap:.1e}, Python loop {gap_loop:.1e})")
        else:
            python_text = "skipped | -"
        print(f"{count:.3g} | {m} | {first:.2f} s / {warm * 1e3:.1f} ms, {int(scaling.sweeps)} sweeps | "
              f"{jit_cd * 1e3:.2f} ms / {python_text}", flush=True)


if __name__ == "__main__":
    main()
