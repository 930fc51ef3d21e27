"""lambda_min and lambda_max of NTKs too large to form, from matrix-free products (ntkhom.operators and
ntkhom.eigensolvers), against dense eigvalsh where that fits.

Cases, on n points uniform on the sphere S^{d-1} in float64:
  (a) the empirical NTK of the two-layer homotopy ReLU network (s = 1, width 8192, d = 32, hidden layer
      trained; sign patterns bit-packed once);
  (b) its infinite-width NTK (the arc-cosine kernel), assembled in every product, tile by tile over the upper triangle.

Each (case, n) runs in its own process, so its peak memory is its own; dense eigvalsh runs in another.
Reported: time, peak resident memory, products (columns multiplied by K), certified relative error, and,
where a target is missed, what it would take: products needed x time per product against the machine's
float64 matrix-product rate.

    uv run python benchmarks/bench_large_spectra.py --n 5000
    uv run python benchmarks/bench_large_spectra.py --n 20000 --case a --dense no
    uv run python benchmarks/bench_large_spectra.py --n 1000000 --dense no   # on an accelerator
    uv run python benchmarks/bench_large_spectra.py --n 1000000 --products-only   # its short check first
    uv run python benchmarks/bench_large_spectra.py --n 100000 --case a --native --products-only
                                                # (a)'s products by ntkhom.native beside XLA's, one process

A long run with its progress on stderr, then its report:

    uv run python benchmarks/bench_large_spectra.py --worker iterative --case b --n 100000 > b.json
    uv run python benchmarks/bench_large_spectra.py --report b.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

from _common import (  # noqa: E402
    environment_line,
    format_bytes,
    format_seconds,
    peak_memory_bytes,
    reset_peak_memory,
    run_isolated,
)

WIDTH = 8192
DIM = 32
#: Certified relative error the targets ask for.
TARGET_TOLERANCE = 1e-6
#: LOBPCG block beyond the one vector wanted: a (b) product costs about the same for 1 or 16 columns (the
#: kernel entries dominate), so (b) carries a wide block; an (a) product costs in proportion to its columns.
GUARD = {"a": 7, "b": 15}
#: Dense float64 eigvalsh measured on the 2-core machine at n = 6000 (12.4 s); scaled by n^3 where dense is
#: not run. Its memory is at least the matrix and LAPACK's copy, 2 n^2 8 bytes.
DENSE_REFERENCE = (6000, 12.4)
LABELS = {"a": f"(a) empirical two-layer NTK, m = {WIDTH}", "b": "(b) infinite-width two-layer NTK"}
#: Dense eigvalsh runs where the matrix and LAPACK's workspace fit comfortably (float64, ~3 copies of K).
DENSE_AUTO_MAX_N = 8000


def _setup(case: str, n: int, seed: int, native: bool = False):
    import jax

    from ntkhom import models, operators
    from ntkhom.data import sphere

    key_x, key_p = jax.random.split(jax.random.PRNGKey(seed))
    x = sphere(key_x, n, DIM)
    model = models.two_layer(WIDTH, s=1.0)
    if case == "a":
        params = model.init(key_p, DIM)
        return operators.two_layer_ntk_operator(model, params, x, native=native), (model, params, x)
    return operators.infinite_ntk_operator(model, x), (model, None, x)


def _matmul_rate() -> float:
    """float64 GF/s of a 2048^3 matrix product on this machine (best of three)."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.PRNGKey(0), (2048, 2048), jnp.float64)
    f = jax.jit(lambda a: a @ a)
    jax.block_until_ready(f(a))
    best = min(_timed(lambda: jax.block_until_ready(f(a))) for _ in range(3))
    return 2 * 2048**3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _product_flops(case: str, n: int, block: int = 1) -> float:
    """Matrix-product flops of one product: (a) two n x m x d products per column; (b) per block of columns,
    the Gram matrix of the upper triangle's tiles (n^2 d) and K V (2 n^2 block). The kernel's elementwise
    work (a square root, a division and a degree-12 polynomial per entry) is not counted."""
    return 4.0 * n * DIM * WIDTH * block if case == "a" else n * n * DIM + 2.0 * n * n * block


def _timed_setup(case: str, n: int, seed: int, native: bool = False):
    """(operator, start time, set-up seconds) in float64, with the peak-memory counter reset first."""
    import jax

    jax.config.update("jax_enable_x64", True)
    reset_peak_memory()
    start = time.perf_counter()
    operator, _ = _setup(case, n, seed, native)
    jax.block_until_ready(operator)
    return operator, start, time.perf_counter() - start


def _product_times(operator, n: int, case: str, block: int, repeats: int) -> dict:
    """width -> (first call, with compilation; best of ``repeats`` after it) of a product of ``width``
    columns: one column and eight for (a), whose products cost in proportion to their columns, and the
    solver's block for both."""
    import jax
    import jax.numpy as jnp

    times = {}
    for width in sorted({1, 8, block} if case == "a" else {block}):
        V = jnp.ones((n, width), jnp.float64)
        first = _timed(lambda V=V: jax.block_until_ready(operator.matvec(V)))
        times[width] = first, min(_timed(lambda V=V: jax.block_until_ready(operator.matvec(V)))
                                  for _ in range(repeats))
    return times


def worker_iterative(case: str, n: int, seed: int, tol: float, rank: int | None, block: int | None = None,
                     native: bool = False) -> dict:
    from ntkhom import eigensolvers

    operator, start, setup_s = _timed_setup(case, n, seed, native)
    if block is None:
        block = eigensolvers.default_block(operator) if rank is None else GUARD[case] + 1

    def progress(columns, eigen, products):
        print(f"  Lanczos depth {columns}: lambda_min {eigen[0]} ({time.perf_counter() - start:.0f} s)",
              file=sys.stderr, flush=True)

    if rank is None:  # both ends from one block Lanczos run
        result = eigensolvers.extreme_spectrum(operator, 1, tol=tol, block=block, progress=progress)
        top, bottom = result.largest, result.smallest
        top_products, method = 0, "block Lanczos"
    else:  # the preconditioned LOBPCG, for comparison
        top = eigensolvers.largest(operator, 1, tol=tol)
        bottom = eigensolvers.smallest(operator, 1, tol=tol, rank=rank, guard=GUARD[case],
                                       lambda_max_value=top.eigenvalues[0].value)
        top_products, method = top.products, f"LOBPCG, rank-{rank} preconditioner"
    total = time.perf_counter() - start
    # Time per product, after the solve so that it does not count in the total: one column and eight for (a),
    # whose products cost in proportion to their columns; the solver's block for both.
    product_s = {width: best for width, (_, best) in _product_times(operator, n, case, block, repeats=1).items()}
    lmax, lmin = top.eigenvalues[0], bottom.eigenvalues[0]
    return {
        "status": "ok", "case": case, "n": n, "setup_s": setup_s, "total_s": total,
        "method": method, "block": block, "products_by": _products_by(operator),
        "lambda_max": lmax.value, "lambda_max_bound": lmax.bound, "lambda_max_products": top_products,
        "lambda_max_s": top.seconds, "lambda_min": lmin.value, "lambda_min_bound": lmin.bound,
        "lambda_min_residual": lmin.residual, "lambda_min_products": bottom.products,
        "lambda_min_s": bottom.seconds, "lambda_min_iterations": bottom.iterations,
        "lambda_min_resolved": lmin.resolved, "floor": lmin.floor, "converged": bool(top.converged and
                                                                                    bottom.converged),
        "product_block_s": product_s[block], "product_1_s": product_s.get(1), "product_8_s": product_s.get(8),
        "peak_bytes": peak_memory_bytes(),
    }


#: Columns the n = 10^5 runs needed (docs/benchmarks.md), the least a larger n will need.
COLUMNS_AT_1E5 = {"a": 1281, "b": 3458}


def _products_by(operator) -> str:
    return "ntkhom.native (numba, host CPU)" if getattr(operator, "native", False) else "XLA"


def worker_products(case: str, n: int, seed: int, block: int | None = None, native: bool = False) -> dict:
    """Set-up and product times alone (no eigensolver): the short check for a device with little time. With
    native products, the XLA products are timed in the same process as their competitor."""
    import jax
    import numpy as np

    from ntkhom import eigensolvers

    operator, _, setup_s = _timed_setup(case, n, seed, native)
    block = block or eigensolvers.default_block(operator)
    out = {"status": "ok", "case": case, "n": n, "setup_s": setup_s, "block": block,
           "block_rows": int(operator.block_rows), "device": str(jax.devices()[0]),
           "products_by": _products_by(operator)}
    for width, (first, best) in _product_times(operator, n, case, block, repeats=2).items():
        out[f"product_{width}_s"], out[f"first_{width}_s"] = best, first
    if native:
        xla = dataclasses.replace(operator, host_bits=None)  # the same operator, its products by XLA
        V = jax.random.normal(jax.random.PRNGKey(seed), (n, 1), np.float64)
        ours, theirs = np.asarray(operator.matvec(V)), np.asarray(xla.matvec(V))
        out["native_vs_xla_rel"] = float(np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)))
        for width, (_, best) in _product_times(xla, n, case, block, repeats=2).items():
            out[f"xla_product_{width}_s"] = best
    out["peak_bytes"] = peak_memory_bytes()
    try:  # an accelerator's own memory (CPU devices report none)
        out["device_peak_bytes"] = (jax.devices()[0].memory_stats() or {}).get("peak_bytes_in_use")
    except Exception:  # noqa: BLE001 - optional for a backend
        out["device_peak_bytes"] = None
    return out


def _report_products(case: str, n: int, result: dict, rate: float) -> None:
    label = LABELS[case]
    print(f"\n{label}, n = {n}, d = {DIM}, float64, products only, on {result.get('device')}")
    if result.get("status") != "ok":
        print(f"  {result.get('status')}")
        return
    device = result.get("device_peak_bytes")
    print(f"  setup {format_seconds(result['setup_s'])}, tiles of {result['block_rows']} rows, peak host memory "
          f"{format_bytes(result['peak_bytes'])}" + (f", device {format_bytes(device)}" if device else ""))
    print(f"  products by {result.get('products_by', 'XLA')}")
    widths = sorted(int(k.split("_")[1]) for k in result if k.startswith("product_"))
    for width in widths:
        t, first = result[f"product_{width}_s"], result[f"first_{width}_s"]
        print(f"  product of {width} column(s): {format_seconds(t)} (first call {format_seconds(first)} with "
              f"compilation); {_product_flops(case, n, width) / t / 1e9:.1f} GF/s vs matmul {rate:.1f} GF/s"
              + (f"; XLA in the same process {format_seconds(result[f'xla_product_{width}_s'])}, "
                 f"{result[f'xla_product_{width}_s'] / t:.2f}x the time" if f"xla_product_{width}_s" in result
                 else ""))
    if "native_vs_xla_rel" in result:
        print(f"  native and XLA products differ by {result['native_vs_xla_rel']:.1e} (max relative)")
    width = 1 if case == "a" else result["block"]
    columns = COLUMNS_AT_1E5[case]
    projected = columns * result[f"product_{width}_s"] / width
    print(f"  products alone for the {columns} columns the n = 10^5 run needed (a larger n needs more): "
          f"{format_seconds(projected)}")


def worker_dense(case: str, n: int, seed: int) -> dict:
    import jax
    import numpy as np

    from ntkhom import kernels

    jax.config.update("jax_enable_x64", True)
    reset_peak_memory()
    start = time.perf_counter()
    _, (model, params, x) = _setup(case, n, seed)
    if case == "a":
        K = kernels.empirical_ntk_two_layer(model, params, x)
    else:
        K = kernels.closed_form_ntk_relu(x, s=1.0)
    K = np.asarray(K)
    build = time.perf_counter() - start
    eigenvalues = np.linalg.eigvalsh(K)
    return {"status": "ok", "build_s": build, "eigvalsh_s": time.perf_counter() - start - build,
            "lambda_min": float(eigenvalues[0]), "lambda_max": float(eigenvalues[-1]),
            "peak_bytes": peak_memory_bytes()}


def _report(case: str, n: int, result: dict, dense: dict | None, rate: float, tol: float) -> None:
    label = LABELS[case]
    print(f"\n{label}, n = {n}, d = {DIM}, float64, products by {result.get('products_by', 'XLA')}")
    if result.get("status") != "ok":
        print(f"  iterative: {result.get('status')}")
        return
    from ntkhom.eigensolvers import certified_digits  # digits down to the bound's, no further

    lmax_rel = result["lambda_max_bound"] / abs(result["lambda_max"])
    lmin_rel = result["lambda_min_bound"] / abs(result["lambda_min"])
    lmax = certified_digits(result["lambda_max"], result["lambda_max_bound"])
    lmin = certified_digits(result["lambda_min"], result["lambda_min_bound"])
    if result.get("product_8_s"):
        print(f"  setup {format_seconds(result['setup_s'])}; one product: 1 column "
              f"{format_seconds(result['product_1_s'])}, 8 columns {format_seconds(result['product_8_s'])} "
              f"({_product_flops(case, n, 8) / result['product_8_s'] / 1e9:.1f} GF/s vs matmul {rate:.1f} GF/s)")
    else:  # (b): one kernel assembly per block, whatever its width
        print(f"  setup {format_seconds(result['setup_s'])}; one product of {result['block']} columns "
              f"{format_seconds(result['product_block_s'])} "
              f"({_product_flops(case, n, result['block']) / result['product_block_s'] / 1e9:.1f} GF/s vs matmul "
              f"{rate:.1f} GF/s)")
    print(f"  lambda_max = {lmax} +- {result['lambda_max_bound']:.1e} (rel {lmax_rel:.1e}), "
          + (f"{result['lambda_max_products']} products, {format_seconds(result['lambda_max_s'])}"
             if result["lambda_max_products"] else "from the same Lanczos run"))
    resolved = "" if result["lambda_min_resolved"] else "  UNRESOLVED (interval reaches the floor)"
    print(f"  lambda_min = {lmin} +- {result['lambda_min_bound']:.1e} (rel {lmin_rel:.1e}, "
          f"residual {result['lambda_min_residual']:.1e}, floor {result['floor']:.1e}), "
          f"{result['lambda_min_products']} products, {result['lambda_min_iterations']} iterations of "
          f"{result.get('method', 'LOBPCG')} (block {result.get('block', 8)}), "
          f"{format_seconds(result['lambda_min_s'])}{resolved}")
    print(f"  total {format_seconds(result['total_s'])}, peak memory {format_bytes(result['peak_bytes'])}, "
          f"converged {result['converged']}")
    if dense is not None:
        if dense.get("status") != "ok":
            print(f"  dense eigvalsh: {dense.get('status')}")
        else:
            dense_total = dense["build_s"] + dense["eigvalsh_s"]
            # dense eigvalsh is accurate to the floor n eps lambda_max, not beyond
            dense_min, dense_max = (certified_digits(dense[k], result["floor"]) for k in ("lambda_min", "lambda_max"))
            print(f"  dense: build {format_seconds(dense['build_s'])} + eigvalsh {format_seconds(dense['eigvalsh_s'])}"
                  f", peak {format_bytes(dense['peak_bytes'])}; lambda_min {dense_min} "
                  f"(|diff|/value {abs(dense['lambda_min'] - result['lambda_min']) / abs(dense['lambda_min']):.1e})"
                  f", lambda_max {dense_max} (|diff|/value "
                  f"{abs(dense['lambda_max'] - result['lambda_max']) / abs(dense['lambda_max']):.1e})")
            print(f"  ratio dense / matrix-free: time {dense_total / result['total_s']:.2f}x, "
                  f"memory {dense['peak_bytes'] / result['peak_bytes']:.2f}x")
    if dense is None:
        size, seconds = DENSE_REFERENCE
        estimate_s, estimate_bytes = seconds * (n / size) ** 3, 2 * n * n * 8
        print(f"  dense eigvalsh not run; estimated {format_seconds(estimate_s)} and >= {format_bytes(estimate_bytes)} "
              f"(from {seconds} s at n = {size}): ratio time {estimate_s / result['total_s']:.2f}x, memory "
              f"{estimate_bytes / result['peak_bytes']:.2f}x")
    # Targets and, where missed, why.
    misses = []
    if max(lmax_rel, lmin_rel) > TARGET_TOLERANCE:
        miss = f"certified error {max(lmax_rel, lmin_rel):.1e} > {TARGET_TOLERANCE:g} relative"
        floor_rel = result["floor"] / abs(result["lambda_min"])
        if result["converged"] and floor_rel > TARGET_TOLERANCE:  # the solver stops once under the floor
            miss += (f" (the bound is under the numerical floor n eps lambda_max = {result['floor']:.1e}, "
                     f"{floor_rel:.1e} of lambda_min: float64 products certify no finer at this n and "
                     f"lambda_max / lambda_min = {result['lambda_max'] / result['lambda_min']:.1e})")
        misses.append(miss)
    if result["peak_bytes"] and result["peak_bytes"] > 8 * 2**30:
        misses.append(f"peak memory {format_bytes(result['peak_bytes'])} > 8 GiB")
    if case == "a" and n >= 100_000 and result["total_s"] > 600:
        misses.append(f"time {format_seconds(result['total_s'])} > 10 min")
    # The speed target is set at n = 20000 (at n = 5000 dense eigvalsh takes seconds); where dense was not
    # run, the estimate from DENSE_REFERENCE stands in.
    dense_s = (dense["build_s"] + dense["eigvalsh_s"] if dense is not None and dense.get("status") == "ok"
               else DENSE_REFERENCE[1] * (n / DENSE_REFERENCE[0]) ** 3)
    if n >= 20000 and result["total_s"] > dense_s:
        misses.append(f"slower than dense eigvalsh ({format_seconds(dense_s)})")
    if misses:
        products = result["lambda_max_products"] + result["lambda_min_products"]
        per_column = result["product_block_s"] / result["block"]
        ideal = _product_flops(case, n, result["block"]) / (rate * 1e9) / result["block"]
        print(f"  target missed: {'; '.join(misses)}. Why: {products} products x {format_seconds(per_column)} "
              f"per column = {format_seconds(products * per_column)}; at the machine's matmul rate a column "
              f"would take {format_seconds(ideal)}; ten minutes buy {600 / per_column:.0f} columns at "
              f"{format_seconds(per_column)}" + (" (native products do fewer operations than the matrix product, "
                                                "so they can beat its rate)" if "native" in result.get(
                                                    "products_by", "") else ""))
    else:
        print(f"  targets met (certified to {TARGET_TOLERANCE:g} relative, < 8 GiB)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[5000])
    parser.add_argument("--case", choices=["a", "b", "both"], default="both")
    parser.add_argument("--dense", choices=["auto", "yes", "no"], default="auto",
                        help=f"dense eigvalsh for comparison (auto: n <= {DENSE_AUTO_MAX_N})")
    parser.add_argument("--tol", type=float, default=TARGET_TOLERANCE,
                        help="relative certified error the solvers aim at")
    parser.add_argument("--rank", type=int, default=None, help="rank of the low-rank preconditioner")
    parser.add_argument("--block", type=int, default=None,
                        help="columns per Lanczos product (default: the operator's preferred block, 1 for (a), "
                             "32 for (b))")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=4 * 3600)
    parser.add_argument("--report", metavar="JSON",
                        help="print the report of a saved worker result (a long run started with --worker "
                             "iterative, which shows its progress on stderr)")
    parser.add_argument("--products-only", action="store_true",
                        help="time the set-up and the products alone, no eigensolver (a short device check), "
                             "with the time the n = 10^5 column counts would take")
    parser.add_argument("--native", action="store_true",
                        help="case (a) with products by ntkhom.native (numba, host CPU; needs the native extra); "
                             "with --products-only the XLA products are timed beside them")
    parser.add_argument("--worker", choices=["iterative", "dense", "products"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        case, n = args.case, args.n[0]
        if args.worker == "iterative":
            out = worker_iterative(case, n, args.seed, args.tol, args.rank, args.block, args.native)
        elif args.worker == "products":
            out = worker_products(case, n, args.seed, args.block, args.native)
        else:
            out = worker_dense(case, n, args.seed)
        print(json.dumps(out))
        return

    import jax

    jax.config.update("jax_enable_x64", True)
    print(environment_line())
    print(f"load: {os.getloadavg()}")
    rate = _matmul_rate()
    print(f"float64 matmul rate {rate:.1f} GF/s; tolerance {args.tol:g}; width {WIDTH}, d = {DIM}")
    if args.report:
        with open(args.report) as f:
            result = json.loads(f.read().strip().splitlines()[-1])
        _report(result["case"], result["n"], result, None, rate, args.tol)
        return
    cases = ["a", "b"] if args.case == "both" else [args.case]
    here = os.path.abspath(__file__)
    for n in args.n:
        for case in cases:
            common = ["--case", case, "--n", str(n), "--seed", str(args.seed)]
            common += ["--native"] if args.native and case == "a" else []
            if args.products_only:
                block = ["--block", str(args.block)] if args.block else []
                result = run_isolated([here, "--worker", "products", *common, *block], args.timeout)
                _report_products(case, n, result, rate)
                continue
            rank = ["--rank", str(args.rank)] if args.rank else []
            rank += ["--block", str(args.block)] if args.block else []
            result = run_isolated([here, "--worker", "iterative", *common, "--tol", str(args.tol), *rank],
                                  args.timeout)
            dense = None
            if args.dense == "yes" or (args.dense == "auto" and n <= DENSE_AUTO_MAX_N):
                dense = run_isolated([here, "--worker", "dense", *common], args.timeout)
            _report(case, n, result, dense, rate, args.tol)
            print(f"  load after: {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    main()
