"""Benchmark: structured two-layer empirical NTK against neural-tangents' empirical_ntk_fn.

    uv run python benchmarks/bench_kernels.py            # full grid (issue 2), about 10 minutes on 2 cores
    uv run python benchmarks/bench_kernels.py --quick    # n = 1000, width 1024, float32 only
    uv run python benchmarks/bench_kernels.py --sizes 1000x1024,2000x8192 --dtypes float32

For every (dtype, n, width) it times, on the same inputs (x: n x d Gaussian, two_layer(width) at s = 1, the
kernel K(X, X) over the trained parameters):

- ``ntkhom``: :func:`ntkhom.kernels.empirical_ntk_two_layer` as a user calls it (for ReLU with output
  weights of equal magnitude the hidden term comes from bit-packed sign-pattern counts);
- ``ntkhom-float``: the same with ``pattern=False``: float matrix products, blocked over width;
- ``nt-jacobian``: neural-tangents JACOBIAN_CONTRACTION; ``nt-ntk-vp``: NTK_VECTOR_PRODUCTS (both jitted,
  compiled ahead of time so compilation is not timed);
- ``matmul``: a plain (n x m) @ (m x n) product of the same dtype, the machine's attainable throughput.

Each method runs in its own process, so its peak resident memory (VmHWM) is its own. The hidden-layer
term of our kernel costs one n x m x n product (2 n^2 m flops), both layers two; ``% matmul`` is that flop
count per second over the plain product's rate. It can exceed 100%: for K(X, X) the float kernel multiplies
only the upper block triangle (with T row tiles, (T + 1) / (2 T) of the product, 5/8 at n >= 1024) and
mirrors it, and the sign-pattern count does no float product at all (its figure is an equivalent rate).
Memory columns: peak RSS is the whole process (JAX itself holds ~0.3 GiB); the XLA plan is arguments +
outputs + temporaries of the compiled neural-tangents call, in GiB, while skip messages are in GB (1e9).
A competitor whose compiled plan (XLA memory analysis) exceeds
``--memory-limit-gb`` is skipped with the figure it would need; one that runs past ``--competitor-timeout``
is reported as timed out (and larger sizes of it are then skipped). The agreement column is
max |K_nt - K_ours| / max |K_ours|. Last, one call at width ``--large-width`` (default 10^6, float32) checks
that memory stays bounded at any width.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from _common import (
    compiled_memory_bytes,
    environment_line,
    format_bytes,
    format_seconds,
    peak_memory_bytes,
    reset_peak_memory,
    run_isolated,
    time_call,
)

METHODS = ("ntkhom", "ntkhom-float", "nt-jacobian", "nt-ntk-vp")
OURS = ("ntkhom", "ntkhom-float")
DEFAULT_SIZES = "1000x1024,1000x8192,2000x1024,2000x8192"
QUICK_SIZES = "1000x1024"


# -- one case, in its own process ------------------------------------------------------------------------
def _setup(case: dict):
    import jax

    if case["dtype"] == "float64":
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    from ntkhom.models import two_layer

    dtype = jnp.dtype(case["dtype"])
    model = two_layer(case["width"], s=case["s"], trained=case["trained"])
    key_params, key_x = jax.random.split(jax.random.PRNGKey(case["seed"]))
    params = jax.tree_util.tree_map(lambda leaf: leaf.astype(dtype), model.init(key_params, case["d"]))
    x = jax.random.normal(key_x, (case["n"], case["d"]), dtype) / math.sqrt(case["d"])
    return model, params, x


def _ours(model, params, x, pattern=None):
    from ntkhom.kernels import empirical_ntk_two_layer

    return empirical_ntk_two_layer(model, params, x, pattern=pattern)


def _matmul_case(case: dict, width: int) -> dict:
    import jax

    dtype = case["dtype"]
    key_a, key_b = jax.random.split(jax.random.PRNGKey(case["seed"] + 1))
    a = jax.random.normal(key_a, (case["n"], width), dtype)
    b = jax.random.normal(key_b, (width, case["n"]), dtype)
    product = jax.jit(lambda a, b: a @ b)
    timing = time_call(lambda: product(a, b), repeats=case["repeats"], warmup=1)
    return {"matmul_s": timing["best"], "matmul_width": width, "matmul_dtype": str(product(a, b).dtype)}


def run_case(case: dict) -> dict:
    """Run one method at one size; returns the JSON-able measurements (status "ok" or why not)."""
    import jax

    model, params, x = _setup(case)
    method = case["method"]
    result = {"status": "ok", "input_dtype": str(x.dtype), "param_dtype": str(params[0]["W"].dtype)}
    if method in OURS:
        pattern = None if method == "ntkhom" else False
        reset_peak_memory()
        if case["large"]:
            # One call, compilation included: at width 10^6 a second call would only double the wait.
            timing = time_call(lambda: _ours(model, params, x, pattern), repeats=1, warmup=0)
        else:
            timing = time_call(
                lambda: _ours(model, params, x, pattern), repeats=case["repeats"], warmup=1, min_total_s=1.0
            )
        result["peak_bytes"] = peak_memory_bytes()
        kernel = _ours(model, params, x, pattern)
        finite = bool(jax.numpy.isfinite(kernel).all())
        result.update(seconds=timing["best"], runs=len(timing["runs"]), output_dtype=str(kernel.dtype), finite=finite)
        # The plain product: same n and dtype; at huge widths a (n x 16384) operand stands in for (n x m).
        result.update(_matmul_case(case, min(case["width"], 16384)))
        return result

    from ntkhom.nt import NtkImplementation, empirical_ntk_fn

    implementation = {
        "nt-jacobian": NtkImplementation.JACOBIAN_CONTRACTION,
        "nt-ntk-vp": NtkImplementation.NTK_VECTOR_PRODUCTS,
    }[method]

    # The same construction as ntkhom.kernels.empirical_ntk, jitted so it can be compiled and sized first.
    def f(trainable, inputs):
        return model.apply(model.combine(trainable, params), inputs, case["s"])

    ntk_fn = jax.jit(empirical_ntk_fn(f, trace_axes=(-1,), vmap_axes=0, implementation=implementation))
    trainable = model.trainable(params)
    compiled = ntk_fn.lower(x, None, trainable).compile()
    need = compiled_memory_bytes(compiled)
    result["planned_bytes"] = need
    if need is not None and need > case["memory_limit_gb"] * 1e9:
        result["status"] = f"skipped: would need {need / 1e9:.1f} GB"
        return result
    reset_peak_memory()
    timing = time_call(
        lambda: compiled(x, None, trainable), repeats=case["repeats"], warmup=0, budget_s=5.0, min_total_s=1.0
    )
    result["peak_bytes"] = peak_memory_bytes()
    kernel = compiled(x, None, trainable)
    ours = _ours(model, params, x)
    scale = float(jax.numpy.max(jax.numpy.abs(ours)))
    result.update(
        seconds=timing["best"],
        runs=len(timing["runs"]),
        output_dtype=str(kernel.dtype),
        agreement=float(jax.numpy.max(jax.numpy.abs(kernel - ours))) / scale,
    )
    return result


# -- driver ------------------------------------------------------------------------------------------------
def _parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for item in text.split(","):
        try:
            n, width = (int(part) for part in item.lower().split("x"))
        except ValueError:
            raise ValueError(f"--sizes wants items like 1000x1024 (n x width), got {item!r}") from None
        if n <= 0 or width <= 0:
            raise ValueError(f"--sizes needs positive n and width, got {item!r}")
        sizes.append((n, width))
    return sorted(sizes)


def _flop_factor(trained: str) -> int:
    # One n x m x n product for the hidden-layer term, a second for the output layer.
    return 2 if trained == "all" else 1


def _row(case: dict, method: str, result: dict, ours: dict | None, ours_float: dict | None = None) -> dict:
    seconds = result.get("seconds")
    row = {
        "dtype": case["dtype"],
        "n": case["n"],
        "width": case["width"],
        "method": method,
        "time": format_seconds(seconds) if result["status"] == "ok" else result["status"],
        "runs": result.get("runs", ""),
        "peak RSS": format_bytes(result.get("peak_bytes")),
        "XLA plan": format_bytes(result.get("planned_bytes")),
        "nt / ours": "",
        "nt / float": "",
        "% matmul": "",
        "agreement": "",
        "out dtype": result.get("output_dtype", ""),
    }
    if method in OURS and result["status"] == "ok":
        flops = _flop_factor(case["trained"]) * 2.0 * case["n"] ** 2 * case["width"]
        matmul_rate = 2.0 * case["n"] ** 2 * result["matmul_width"] / result["matmul_s"]
        row["% matmul"] = f"{100 * flops / seconds / matmul_rate:.0f}% of {matmul_rate / 1e9:.1f} GF/s"
    elif ours is not None and ours.get("status") == "ok":
        if result["status"] == "ok":
            row["nt / ours"] = f"{seconds / ours['seconds']:.0f}x"
            if ours_float is not None and ours_float.get("status") == "ok":
                row["nt / float"] = f"{seconds / ours_float['seconds']:.0f}x"
            row["agreement"] = f"{result['agreement']:.1e}"
        elif result["status"] == "timed out":
            row["nt / ours"] = f">= {case['timeout'] / ours['seconds']:.0f}x"
            row["time"] = f"timed out (> {case['timeout']:.0f} s incl. start-up)"
    return row


def _print_row(row: dict) -> None:
    print(" | ".join(str(value) for value in row.values()), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"only {QUICK_SIZES}, float32, large width 10^5")
    parser.add_argument("--sizes", default=None, help=f"comma-separated n x width (default {DEFAULT_SIZES})")
    parser.add_argument("--dtypes", default=None, help="comma-separated: float32,float64 (default both)")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"subset of {','.join(METHODS)}")
    parser.add_argument("--d", type=int, default=32, help="input dimension (default 32)")
    parser.add_argument("--s", type=float, default=1.0, help="homotopy parameter (default 1)")
    parser.add_argument("--trained", choices=("hidden", "all"), default="hidden")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per method (best is reported)")
    parser.add_argument("--competitor-timeout", type=float, default=90.0, help="seconds per neural-tangents case")
    parser.add_argument("--memory-limit-gb", type=float, default=8.0, help="skip a competitor planning more (GB)")
    parser.add_argument("--large-width", type=int, default=None, help="width of the bounded-memory case (0: off)")
    parser.add_argument("--large-n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.case:
        print(json.dumps(run_case(json.loads(args.case))))
        return 0

    sizes = _parse_sizes(args.sizes or (QUICK_SIZES if args.quick else DEFAULT_SIZES))
    dtypes = (args.dtypes or ("float32" if args.quick else "float32,float64")).split(",")
    methods = args.methods.split(",")
    for name in dtypes:
        if name not in ("float32", "float64"):
            raise ValueError(f"unknown dtype {name!r}; choose float32 or float64")
    for name in methods:
        if name not in METHODS:
            raise ValueError(f"unknown method {name!r}; choose from {METHODS}")
    large_width = args.large_width if args.large_width is not None else (10**5 if args.quick else 10**6)

    print(environment_line())
    print(
        f"d = {args.d}, s = {args.s}, trained = {args.trained}, K(X, X); time = best of `runs` calls "
        f"(at least {args.repeats}, more until 1 s); "
        f"competitor timeout {args.competitor_timeout:.0f} s, memory limit {args.memory_limit_gb:g} GB"
    )
    base = {"d": args.d, "s": args.s, "trained": args.trained, "repeats": args.repeats, "seed": args.seed,
            "memory_limit_gb": args.memory_limit_gb, "large": False}
    header = ["dtype", "n", "width", "method", "time", "runs", "peak RSS", "XLA plan", "nt / ours", "nt / float",
              "% matmul", "agreement", "out dtype"]
    print(" | ".join(header), flush=True)
    rows = []
    timed_out: dict[tuple[str, str], tuple[int, int]] = {}
    for dtype in dtypes:
        for n, width in sizes:
            case = dict(base, dtype=dtype, n=n, width=width)
            ours = ours_float = None
            for method in methods:
                case_m = dict(case, method=method)
                earlier = timed_out.get((method, dtype))
                if earlier is not None and earlier[0] <= n and earlier[1] <= width:
                    result = {"status": f"skipped: timed out at {earlier[0]}x{earlier[1]}"}
                else:
                    timeout = 600.0 if method in OURS else args.competitor_timeout
                    case_m["timeout"] = timeout
                    result = run_isolated([__file__, "--case", json.dumps(case_m)], timeout)
                    if result["status"] == "timed out" and method not in OURS:
                        timed_out[(method, dtype)] = (n, width)
                if method in OURS:
                    if method == "ntkhom":
                        ours = result
                    else:
                        ours_float = result
                    if result["status"] == "ok" and result["output_dtype"] != dtype:
                        raise RuntimeError(f"asked for {dtype} but the kernel came out {result['output_dtype']}")
                rows.append(_row(case_m, method, result, ours, ours_float))
                _print_row(rows[-1])

    if large_width > 0 and "ntkhom" in methods:
        case = dict(base, dtype="float32", n=args.large_n, width=large_width, method="ntkhom", large=True)
        result = run_isolated([__file__, "--case", json.dumps(case)], 600.0)
        row = _row(case, "ntkhom", result, None)
        row["method"] = "ntkhom (one call incl. compile)"
        rows.append(row)
        _print_row(row)

    from ntkhom.report import markdown_table

    print()
    print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
