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


@nb.njit(inline="always", boundscheck=False)
def _eight_rows(tables, p, bytes_, column):
    """The table rows that bytes column .. column + 7 of one packed row pick from tables p .. p + 7."""
    one = np.uint64(1)
    return (tables[p][np.uint64(bytes_[column])],
            tables[p + one][np.uint64(bytes_[column + one])],
            tables[p + 2 * one][np.uint64(bytes_[column + 2 * one])],
            tables[p + 3 * one][np.uint64(bytes_[column + 3 * one])],
            tables[p + 4 * one][np.uint64(bytes_[column + 4 * one])],
            tables[p + 5 * one][np.uint64(bytes_[column + 5 * one])],
            tables[p + 6 * one][np.uint64(bytes_[column + 6 * one])],
            tables[p + 7 * one][np.uint64(bytes_[column + 7 * one])])


@nb.njit(inline="always", boundscheck=False)
def _eight_sum(r, j):
    """Entry j of the sum of the eight rows r, added pairwise. No fastmath here or in :func:`accumulate`: with
    ``reassoc`` LLVM turned the pairwise tree into one chain of dependent additions, 3 to 7 percent slower
    (B M and B^T Y at n = 10^5, m = 8192, c = 32, one and two threads)."""
    return ((r[0][j] + r[1][j]) + (r[2][j] + r[3][j])) + ((r[4][j] + r[5][j]) + (r[6][j] + r[7][j]))


@nb.njit(inline="never", boundscheck=False, cache=True)
def accumulate(out, tables, packed, first, count, row_start, row_stop, tile):
    """out[i] += tables[p, packed[i, first + p]] for p < count and rows i in [row_start, row_stop).

    Rows go in tiles that stay in cache, and within a tile the chunks are the outer loop, sixteen at a time
    (then eight, then one): consecutive additions go to different rows, so they do not wait on each other,
    and an output row is read and written once per sixteen table rows rather than once per row. Those
    reads and writes, not the additions, bounded the one-chunk loop: at c = 32, m = 8192, float64, one
    chunk at a time took 0.062 s at n = 20000, eight 0.042 s and sixteen 0.040 s; at n = 10^5, whose output
    rows stream from memory, eight 0.33 s and sixteen 0.28 s.
    """
    c = np.uint64(out.shape[1])
    stop = np.uint64(row_stop)
    sixteens = np.uint64(count) // np.uint64(16) * np.uint64(16)
    eights = np.uint64(count) // np.uint64(8) * np.uint64(8)
    for t0 in range(np.uint64(row_start), stop, np.uint64(tile)):
        t1 = min(t0 + np.uint64(tile), stop)
        for p in range(np.uint64(0), sixteens, np.uint64(16)):
            column = np.uint64(first) + p
            for i in range(t0, t1):
                target = out[i]
                r = _eight_rows(tables, p, packed[i], column)
                q = _eight_rows(tables, p + np.uint64(8), packed[i], column + np.uint64(8))
                for j in range(c):
                    target[j] += _eight_sum(r, j) + _eight_sum(q, j)
        for p in range(sixteens, eights, np.uint64(8)):
            column = np.uint64(first) + p
            for i in range(t0, t1):
                target = out[i]
                r = _eight_rows(tables, p, packed[i], column)
                for j in range(c):
                    target[j] += _eight_sum(r, j)
        for p in range(eights, np.uint64(count)):
            table = tables[p]
            column = np.uint64(first) + p
            for i in range(t0, t1):
                target = out[i]
                row = table[np.uint64(packed[i, column])]
                for j in range(c):
                    target[j] += row[j]


@nb.njit(parallel=True, boundscheck=False, cache=True)
def product(packed, Y, group, tile, threads, block_rows):
    """B Y (ntkhom.native.bit_matrix_product): rows split by thread, and a thread's rows in blocks of
    ``block_rows`` whose output stays in cache while every group of ``group`` chunks is added to it (the
    thread builds its own tables, once per block and group; no barrier between threads)."""
    rows, chunks = packed.shape
    c = Y.shape[1]
    out = np.zeros((rows, c), Y.dtype)
    share = (rows + threads - 1) // threads
    for thread in nb.prange(threads):
        tables = np.empty((group, 256, c), Y.dtype)
        low = thread * share
        high = min(rows, low + share)
        for start in range(low, high, block_rows):
            stop = min(high, start + block_rows)
            for first in range(0, chunks, group):
                count = min(group, chunks - first)
                for p in range(count):
                    build(tables[p], Y, 8 * (first + p))
                accumulate(out, tables, packed, first, count, start, stop, tile)
    return out


# -- the Lanczos basis, for native operators (ntkhom.native.project / subtract_projection) --------------------
@nb.njit(parallel=True, boundscheck=False, fastmath={'reassoc', 'nsz', 'contract'}, cache=True)
def project(Qt, Wt):
    """Qt W as (k, b), from Qt (k, n) and W^T (b, n): a row of Qt a task."""
    k, n = Qt.shape
    b = Wt.shape[0]
    out = np.empty((k, b))
    for r in nb.prange(k):
        row = Qt[r]
        for col in range(b):
            w = Wt[col]
            total = 0.0
            for j in range(n):
                total += row[j] * w[j]
            out[r, col] = total
    return out


@nb.njit(parallel=True, boundscheck=False, fastmath={'contract'}, cache=True)
def subtract_projection(Wt, Qt, Ct, threads):
    """W^T - (Qt^T C)^T as (b, n), from W^T (b, n), Qt (k, n) and C^T (b, k): each thread adds c_r q_r for its
    share of the rows of Qt, four rows at a time, into a partial sum of its own (which stays in cache while
    the rows stream from memory); the partial sums are subtracted at the end."""
    k, n = Qt.shape
    b = Wt.shape[0]
    partial = np.zeros((threads, b, n))
    share = (k + threads - 1) // threads
    for thread in nb.prange(threads):
        low = thread * share
        high = min(k, low + share)
        for col in range(b):
            total = partial[thread, col]
            c = Ct[col]
            r = low
            while r + 4 <= high:
                c0, c1, c2, c3 = c[r], c[r + 1], c[r + 2], c[r + 3]
                q0, q1, q2, q3 = Qt[r], Qt[r + 1], Qt[r + 2], Qt[r + 3]
                for j in range(n):
                    total[j] += (c0 * q0[j] + c1 * q1[j]) + (c2 * q2[j] + c3 * q3[j])
                r += 4
            while r < high:
                cr, q = c[r], Qt[r]
                for j in range(n):
                    total[j] += cr * q[j]
                r += 1
    out = Wt.copy()
    for thread in range(threads):
        out -= partial[thread]
    return out
