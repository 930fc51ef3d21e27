"""Opt-in host-CPU kernel for products with 0/1 matrices: B Y for a bit-packed B, by the "Four Russians" method.

Why native code. The structured two-layer NTK product (:class:`ntkhom.operators.TwoLayerNTKOperator`, ReLU
family, hidden layer trained) is two products with the n x m matrix of sign patterns B in {0, 1}: B^T Y and
B M, with Y of shape (n, c) and M of shape (m, c), c = d' k. As float matrix products they cost n m c
multiply-adds each, and XLA first has to turn the packed bits into float tiles (about half the time of an
XLA product on the 2-core CI machine, docs/benchmarks.md). With the bits themselves, eight rows of B at a
time form a byte, and the 256 subset sums of the eight matching rows of Y (a table of 256 x c, built with
256 c additions) give every output row's share of those eight rows by one table lookup and one c-vector
addition: n m c / 8 additions in all, plus n c / 8 * 256 to build the tables. That trades a dense product
for gathers, which XLA does not compile into a cache-friendly loop: the same algorithm in pure JAX (XLA
gathers) took 8 to 16 times as long as this kernel and as long as the plain float product or longer
(``benchmarks/bench_native_products.py``, n = 20000, m = 8192, c = 32 and 64, float64, 2-core CI machine). In the
operator's products: ``benchmarks/bench_large_spectra.py --native --products-only``.

The sums are exact float additions in another order than a matrix product's: the result agrees with the
float product to rounding (tested to 1e-13 relative in float64).

Needs numba (``pip install "ntkhom[native]"``, or ``uv sync --extra native``); it runs on the host CPU
only, through ``jax.pure_callback``, so it works under ``jit`` and reverse-mode ``grad`` (each product's
transpose is the other product) but not on an accelerator and not under forward-mode differentiation.
Nothing else in ntkhom needs it: the default XLA product runs everywhere.

Also here: :func:`project` and :func:`subtract_projection`, the products with the Lanczos basis that
:mod:`ntkhom.eigensolvers` runs on numba's threads for a native operator, so that idle BLAS threads do not
compete with the native products.
"""

from __future__ import annotations

import numpy as np

__all__ = ["available", "require", "bit_matrix_product", "pack_bits", "project", "subtract_projection", "table_group",
           "words_as_bytes"]

#: Bytes of lookup tables kept for one group of 8-row chunks: half of a 2 MiB level-2 cache, so the tables
#: stay near the core (groups of 16 chunks for c = 32, which the kernel sums sixteen at a time). Groups of
#: 16 chunks took 0.28 s for B M at n = 10^5, c = 32, against 0.33 to 0.38 s for 24 and 0.37 s for 32.
TABLE_GROUP_BYTES = 2**20
#: Columns of Y per pass of the kernel: wider Y goes in slices, since a table of 256 rows of c numbers outgrows
#: the caches (at n = 20000, m = 8192, before the kernel summed sixteen table rows at a time: 0.17 s per 32
#: columns for c = 32 or 64, 0.21 s for 128, 0.34 s for 256).
COLUMNS_PER_PASS = 64
#: Output rows per tile inside a group: 128 rows of 32 float64 are 32 KiB (a level-1 data cache). Tiles of
#: 32 to 1024 rows and groups of 2 to 32 chunks were within this machine's drift of each other at n = 20000
#: with the one-row loop (``benchmarks/bench_native_products.py --tiles``; docs/benchmarks.md); with sixteen
#: rows summed at a time, tiles of 64 to 512 rows stayed within 3 percent of each other at n = 10^5.
ROW_TILE = 128
#: Bytes of output rows a thread finishes before it moves on: every group of chunks is added to a block of
#: rows while it is in cache, rather than to all of the thread's rows from memory once per group (B M at
#: m = 8192, c = 32, float64: 0.24 s against 0.31 s at n = 10^5, 0.70 s against 1.25 s at n = 3 x 10^5; the
#: tables are built again for every block, 256 / block rows more additions).
OUTPUT_BLOCK_BYTES = 2**21


def table_group(c: int, itemsize: int) -> int:
    """8-row chunks per group of lookup tables for a pass of c columns: as many 256 x c tables as fit
    :data:`TABLE_GROUP_BYTES` (1 to 64)."""
    return max(1, min(64, TABLE_GROUP_BYTES // (256 * max(1, c) * itemsize)))


def available() -> bool:
    """Whether numba can be imported (the native kernel's only requirement)."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def require() -> None:
    """Raise an ImportError that says how to install the native kernel's dependency, where it is missing."""
    if not available():
        raise ImportError('native products need numba: pip install "ntkhom[native]" (or uv sync --extra native)')


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """(r, q) booleans -> (r, ceil(q / 8)) uint8, bit t of byte p holding column 8 p + t (zero padding)."""
    return np.packbits(np.asarray(bits, bool), axis=1, bitorder="little")


def _kernels():
    require()
    from ntkhom import _bit_kernels  # numba compiles (or loads its cache) on first use

    return _bit_kernels.product, _bit_kernels.nb.get_num_threads


def _float64_matrix(name: str, value) -> np.ndarray:
    value = np.asarray(value)
    if value.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {value.shape}")
    return value.astype(np.float64, copy=False)


def project(Qt: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Qt @ W in float64, for Qt (k, n) stored by rows and W (n, b) with few columns, on numba's threads.

    For the Lanczos basis of a native operator (:mod:`ntkhom.eigensolvers` uses it with
    :func:`subtract_projection` whenever the operator's ``native`` is true). OpenBLAS computes the same
    products as fast, but its threads keep spinning for a while after each call and take the two cores from
    the native product that follows: at n = 20000 (m = 8192, c = 32, 2 cores) a product took 0.15 s after
    the BLAS products of a Lanczos step against 0.105 s after these."""
    require()
    Qt, W = _float64_matrix("Qt", Qt), _float64_matrix("W", W)
    if Qt.shape[1] != W.shape[0]:
        raise ValueError(f"Qt is {Qt.shape} and W is {W.shape}: Qt's columns must match W's rows")
    from ntkhom import _bit_kernels

    return _bit_kernels.project(np.ascontiguousarray(Qt), np.ascontiguousarray(W.T))


def subtract_projection(W: np.ndarray, Qt: np.ndarray, C: np.ndarray) -> np.ndarray:
    """W - Qt.T @ C in float64 (W (n, b), Qt (k, n) stored by rows, C (k, b)) on numba's threads; see
    :func:`project`."""
    require()
    W, Qt, C = _float64_matrix("W", W), _float64_matrix("Qt", Qt), _float64_matrix("C", C)
    if Qt.shape[1] != W.shape[0] or C.shape != (Qt.shape[0], W.shape[1]):
        raise ValueError(f"W {W.shape}, Qt {Qt.shape} and C {C.shape} do not fit W - Qt.T @ C")
    from ntkhom import _bit_kernels

    out = _bit_kernels.subtract_projection(np.ascontiguousarray(W.T), np.ascontiguousarray(Qt),
                                           np.ascontiguousarray(C.T), _bit_kernels.nb.get_num_threads())
    return out.T


def bit_matrix_product(packed: np.ndarray, Y: np.ndarray, *, row_tile: int | None = None,
                       group: int | None = None, block_rows: int | None = None) -> np.ndarray:
    """B Y for the 0/1 matrix B whose row i has bit t of ``packed[i, p]`` in column 8 p + t.

    Args:
      packed: (r, q) uint8, as :func:`pack_bits` makes (B is r x 8 q; its columns past Y's rows add
        nothing, whatever their bits).
      Y: (n, c) float32 or float64 with n <= 8 q.
      row_tile, group, block_rows: output rows per tile, 8-row chunks of Y per group of tables and output
        rows per block, for tuning (default :data:`ROW_TILE`, :func:`table_group` and
        :data:`OUTPUT_BLOCK_BYTES` of rows); the result does not depend on them.
        ``benchmarks/bench_native_products.py --tiles`` times them.

    Returns:
      (r, c) array of Y's dtype: row i is the sum of the rows of Y whose bits are set in row i.
    """
    packed = np.ascontiguousarray(packed)
    if packed.dtype != np.uint8 or packed.ndim != 2:
        raise TypeError(f"packed must be a 2-D uint8 array, got {packed.dtype} of shape {packed.shape}")
    Y = np.ascontiguousarray(Y)
    if Y.ndim != 2 or Y.dtype not in (np.float32, np.float64):
        raise TypeError(f"Y must be a 2-D float32 or float64 array, got {Y.dtype} of shape {Y.shape}")
    if not np.all(np.isfinite(Y)):
        raise FloatingPointError("bit_matrix_product: Y has NaN or inf entries")
    if Y.shape[0] > 8 * packed.shape[1]:
        raise ValueError(f"Y has {Y.shape[0]} rows, but the packed matrix has {8 * packed.shape[1]} columns")
    for name, value in (("row_tile", row_tile), ("group", group), ("block_rows", block_rows)):
        if value is not None and not (isinstance(value, int | np.integer) and not isinstance(value, bool)
                                      and value >= 1):
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    product, threads = _kernels()
    slices = []
    for start in range(0, max(1, Y.shape[1]), COLUMNS_PER_PASS):
        part = np.ascontiguousarray(Y[:, start:start + COLUMNS_PER_PASS])
        chunks = group or table_group(part.shape[1], Y.dtype.itemsize)
        block = block_rows or max(1, OUTPUT_BLOCK_BYTES // (max(1, part.shape[1]) * Y.dtype.itemsize))
        slices.append(product(packed, part, int(chunks), int(row_tile or ROW_TILE), threads(), int(block)))
    return slices[0] if len(slices) == 1 else np.concatenate(slices, axis=1)


def words_as_bytes(words: np.ndarray) -> np.ndarray:
    """(r, w) uint32 words of 32 bits (bit t of word q for column 32 q + t) -> (r, 4 w) uint8, same order."""
    return np.ascontiguousarray(words, dtype=np.dtype("<u4")).view(np.uint8)  # little-endian on any host
