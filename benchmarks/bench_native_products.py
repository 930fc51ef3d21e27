"""Benchmark: B M for a bit-packed 0/1 matrix B, by ntkhom.native (numba) against two pure-XLA ways, in one process.

    uv run python benchmarks/bench_native_products.py                    # n = 20000, m = 8192, c = 32
    uv run python benchmarks/bench_native_products.py --n 100000 --c 32 64
    uv run python benchmarks/bench_native_products.py --tiles             # the native kernel's tile sizes

This is the product behind the two-layer NTK with sign patterns (B is n x m, M is m x c, c = d' k); it is
why ntkhom.native exists. The three ways, on the same random bits and float64 M:

- ``native``: :func:`ntkhom.native.bit_matrix_product`, Four Russians in a numba loop (the 256 subset sums
  of every 8 rows of M, then one table row added per output row and byte);
- ``xla-gathers``: the same algorithm in pure JAX: the tables by one einsum, then a scan over groups of 8
  bytes, each an XLA gather of (n, 8, c) table rows summed;
- ``xla-float``: the bits unpacked to a float64 matrix and one XLA matrix product (what a plain JAX
  formulation does; the operator's XLA product tiles this to bound its memory).

Printed: best of three (after a warm-up call that compiles), ratios to ``native``, and the largest
difference from ``native`` relative to its largest entry.

``--tiles`` times the native kernel alone over its two tuning sizes instead: output rows per tile
(``row_tile``) and 8-row chunks of M per group of lookup tables (``group``), each against the defaults
(:data:`ntkhom.native.ROW_TILE` and :func:`ntkhom.native.table_group`).
"""

from __future__ import annotations

import argparse
import sys

from _common import environment_line, format_seconds, time_call

#: Bytes per gather step of the XLA way: groups of 8 bytes (8 tables) at a time, as the native kernel does.
GROUP = 8


def _problem(n: int, m: int, c: int, seed: int):
    """Random packed bits B (n, m / 8) and a float64 M (m, c)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, m // 8), dtype=np.uint8), rng.standard_normal((m, c))


def _ways(n: int, m: int, c: int, seed: int):
    import jax
    import jax.numpy as jnp
    import numpy as np

    from ntkhom import native

    packed, M = _problem(n, m, c, seed)
    subsets = jnp.asarray(((np.arange(256)[:, None] >> np.arange(8)) & 1).astype(np.float64))  # (256, 8)

    @jax.jit
    def gathers(packed, M):
        tables = jnp.einsum("vt,qtc->qvc", subsets, M.reshape(-1, 8, c))  # (m / 8, 256, c)

        def step(total, g):
            index = jax.lax.dynamic_slice_in_dim(packed, g * GROUP, GROUP, 1).astype(jnp.int32)  # (n, GROUP)
            group = jax.lax.dynamic_slice_in_dim(tables, g * GROUP, GROUP, 0)  # (GROUP, 256, c)
            return total + group[jnp.arange(GROUP)[None, :], index].sum(axis=1), None

        return jax.lax.scan(step, jnp.zeros((packed.shape[0], c)), jnp.arange(packed.shape[1] // GROUP))[0]

    @jax.jit
    def float_product(packed, M):
        bits = (packed[:, :, None] >> jnp.arange(8, dtype=jnp.uint8)) & 1
        return bits.reshape(packed.shape[0], -1).astype(M.dtype) @ M

    device = (jnp.asarray(packed), jnp.asarray(M))
    return {
        "native": lambda: native.bit_matrix_product(packed, M),
        "xla-gathers": lambda: gathers(*device),
        "xla-float": lambda: float_product(*device),
    }


#: Tile and group sizes the --tiles sweep times.
ROW_TILES = (32, 64, 128, 256, 512, 1024)
GROUPS = (2, 4, 8, 16, 32, 64)


def _tiles(n: int, m: int, c: int, seed: int) -> None:
    import numpy as np

    from ntkhom import native

    packed, M = _problem(n, m, c, seed)
    reference = native.bit_matrix_product(packed, M)
    default = time_call(lambda: native.bit_matrix_product(packed, M), repeats=3)["best"]
    default_group = native.table_group(min(c, native.COLUMNS_PER_PASS), 8)
    print(f"  c = {c}: defaults (row_tile {native.ROW_TILE}, group {default_group}) {format_seconds(default)}; "
          "each cell: time / the defaults' time")
    print("  row_tile \\ group " + "".join(f"{g:>7d}" for g in GROUPS))
    for tile in ROW_TILES:
        cells = []
        for group in GROUPS:
            out = native.bit_matrix_product(packed, M, row_tile=tile, group=group)
            if not np.array_equal(out, reference):  # the sizes only reorder exact sums of the same terms
                cells.append(f"{'differs':>7s}")
                continue
            best = time_call(lambda tile=tile, group=group: native.bit_matrix_product(
                packed, M, row_tile=tile, group=group), repeats=3)["best"]
            cells.append(f"{best / default:7.2f}")
        print(f"  {tile:>16d} " + "".join(cells), flush=True)
    again = time_call(lambda: native.bit_matrix_product(packed, M), repeats=3)["best"]
    print(f"  the defaults again, after the sweep: {format_seconds(again)} ({again / default:.2f}: the drift "
          "of this machine over the sweep)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="rows of B")
    parser.add_argument("--m", type=int, default=8192, help="columns of B (a multiple of 8 * 8)")
    parser.add_argument("--c", type=int, nargs="+", default=[32], help="columns of M (d' k)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiles", action="store_true",
                        help="time the native kernel over row tiles and table groups instead")
    args = parser.parse_args(argv)
    if args.n < 1 or args.m < 1 or args.m % (8 * GROUP) or min(args.c) < 1:
        parser.error(f"need n >= 1, m a positive multiple of {8 * GROUP} and c >= 1")

    import jax
    import numpy as np

    jax.config.update("jax_enable_x64", True)
    print(environment_line())
    print(f"B: {args.n} x {args.m} bits (packed: {args.n * args.m // 8 / 2**20:.0f} MiB), M float64, best of 3")
    if args.tiles:
        for c in args.c:
            _tiles(args.n, args.m, c, args.seed)
        return
    for c in args.c:
        ways = _ways(args.n, args.m, c, args.seed)
        reference = np.asarray(ways["native"]())
        times = {}
        for name, fn in ways.items():
            times[name] = time_call(fn, repeats=3)["best"]
            diff = np.max(np.abs(np.asarray(fn()) - reference)) / np.max(np.abs(reference))
            print(f"  c = {c:4d}  {name:12s} {format_seconds(times[name]):>9s}  "
                  f"{times[name] / times['native']:6.1f}x native's time  max rel diff {diff:.1e}", flush=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
