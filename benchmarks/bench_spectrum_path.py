"""Benchmark: lambda_min along 128 values of s, ours (three matrices once + the reduced-basis sweep with
certified anchors, :func:`ntkhom.eigenpath.lambda_min_path`) against the naive way (recompute K(s) and run a full
float64 ``eigh`` at every s), at infinite width and one finite width, in the same process.

The naive way costs the same at every s, so when ``--naive-points`` < ``--s-points`` it is timed on that many
evenly spaced s of the grid and its time for the whole grid is per-s time x grid size (printed as such).
Agreement is checked at every s where the naive way ran.

    uv run python benchmarks/bench_spectrum_path.py --n 2048 --d 32
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import time

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

from ntkhom import data, kernels  # noqa: E402
from ntkhom.eigenpath import lambda_min_path  # noqa: E402
from ntkhom.models import two_layer  # noqa: E402
from ntkhom.spectrum import numerical_floor  # noqa: E402


def _block(value):
    return jax.block_until_ready(value)


def bench(label, path_fn, kernel_fn, grid, naive_index):
    # Compile both kernel computations first, so neither side's timing includes JIT compilation.
    start = time.perf_counter()
    _block(path_fn())
    _block(kernel_fn(float(grid[0])))
    print(f"[{label}] compilation and first evaluation of both (not timed below): {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    kpath = _block(path_fn())
    t_kernels = time.perf_counter() - start
    start = time.perf_counter()
    fast = lambda_min_path(kpath, grid)
    t_path = time.perf_counter() - start
    ours = t_kernels + t_path

    naive_times, worst = [], 0.0
    for i in naive_index:
        start = time.perf_counter()
        K = np.asarray(_block(kernel_fn(float(grid[i]))), np.float64)
        w, _ = np.linalg.eigh(K)
        naive_times.append(time.perf_counter() - start)
        point = fast.points[i]
        floor = numerical_floor(w[-1], K.shape[0], np.float64)
        if w[0] > floor:
            worst = max(worst, abs(point.lambda_min - w[0]) / w[0])
        elif point.resolved:
            worst = float("inf")  # ours claims a value the reference cannot resolve
    naive = float(np.mean(naive_times)) * len(grid)
    methods = fast.methods
    print(f"[{label}] ours: {ours:.2f} s (three kernels {t_kernels:.2f} s + path {t_path:.2f} s; "
          f"reduced-basis Ritz values at {methods.count('reduced')}/{len(grid)} s, certified anchors at "
          f"{methods.count('subspace')}, eigh at {methods.count('eigh')}; "
          f"unresolved {int((~fast.resolved).sum())})")
    print(f"[{label}] naive: {np.mean(naive_times):.2f} s per s (kernel + full eigh), timed at {len(naive_index)} "
          f"s values -> {naive:.1f} s for {len(grid)}")
    print(f"[{label}] speedup {naive / ours:.1f}x, max relative disagreement above the floor {worst:.2e}")
    return naive / ours, worst


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--d", type=int, default=32)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--s-points", type=int, default=128)
    parser.add_argument("--naive-points", type=int, default=8)
    args = parser.parse_args()

    import scipy

    from ntkhom.nt import load

    neural_tangents = load()

    device = jax.devices()[0]
    print(f"n = {args.n}, d = {args.d}, finite width = {args.width}, s grid: {args.s_points} points in [0.05, 2]")
    print(f"dtype float64 (kernels and eigenvalues), JAX device {device.platform}:{device.device_kind}, "
          f"CPU cores {os.cpu_count()}, OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}")
    print(f"versions: python {platform.python_version()}, jax {jax.__version__}, numpy {np.__version__}, "
          f"scipy {scipy.__version__}, neural-tangents {neural_tangents.__version__}")

    x = data.sphere(jax.random.PRNGKey(0), args.n, args.d)
    grid = np.linspace(0.05, 2.0, args.s_points)
    naive_index = np.unique(np.linspace(0, args.s_points - 1, min(args.naive_points, args.s_points)).astype(int))

    model = two_layer(1)
    bench("infinite width", lambda: kernels.infinite_kernel_path(model, x),
          lambda s: kernels.infinite_ntk(model, x, s=s), grid, naive_index)
    net = dataclasses.replace(model, widths=(args.width,))
    params = net.init(jax.random.PRNGKey(1), args.d)
    bench(f"width {args.width}", lambda: kernels.empirical_kernel_path(net, params, x),
          lambda s: kernels.empirical_ntk_two_layer(net, params, x, s=s), grid, naive_index)


if __name__ == "__main__":
    main()
