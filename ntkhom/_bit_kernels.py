"""numba kernels of :mod:`ntkhom.native` (imported only when native products are asked for)."""

import numba as nb
import numpy as np


# Indices are unsigned so that numba emits no negative-index wraparound, which keeps LLVM from
# vectorizing the c-long additions.
@nb.njit(inline="never", boundscheck=False, cache=True)
def build(table, Y, start):
    """table[v] = sum of Y[start + t] over the set bits t of v (rows past the end of Y count as zero)."""
    c = np.uint64(Y.shape[1])
    for j in range(c):
        table[0, j] = 0.0
    for t in range(8):
        low = np.uint64(1 << t)
        if start + t < Y.shape[0]:
            y = Y[np.uint64(start + t)]
            for v in range(low):
                for j in range(c):
                    table[low + v, j] = table[v, j] + y[j]
        else:
            for v in range(low):
                for j in range(c):
                    table[low + v, j] = table[v, j]


@nb.njit(inline="never", boundscheck=False, fastmath={'reassoc','nsz','arcp','contract','afn'}, cache=True)
def accumulate(out, tables, packed, first, count, row_start, row_stop, tile):
    """out[i] += tables[p, packed[i, first + p]] for p < count and rows i in [row_start, row_stop).

    Rows go in tiles that stay in cache, and within a tile the chunk is the outer loop: consecutive
    additions go to different rows, so they do not wait on each other.
    """
    c = np.uint64(out.shape[1])
    stop = np.uint64(row_stop)
    for t0 in range(np.uint64(row_start), stop, np.uint64(tile)):
        t1 = min(t0 + np.uint64(tile), stop)
        for p in range(np.uint64(count)):
            table = tables[p]
            column = np.uint64(first) + p
            for i in range(t0, t1):
                target = out[i]
                row = table[np.uint64(packed[i, column])]
                for j in range(c):
                    target[j] += row[j]


@nb.njit(parallel=True, boundscheck=False, cache=True)
def product(packed, Y, group, tile, threads):
    """B Y (ntkhom.native.bit_matrix_product): rows split by thread, each thread building its own tables for
    ``group`` chunks at a time (no barrier between groups)."""
    rows, chunks = packed.shape
    c = Y.shape[1]
    out = np.zeros((rows, c), Y.dtype)
    share = (rows + threads - 1) // threads
    for thread in nb.prange(threads):
        tables = np.empty((group, 256, c), Y.dtype)
        for first in range(0, chunks, group):
            count = min(group, chunks - first)
            for p in range(count):
                build(tables[p], Y, 8 * (first + p))
            accumulate(out, tables, packed, first, count, thread * share, min(rows, (thread + 1) * share), tile)
    return out
