"""Kernel operators: the product K V of an NTK with an (n, k) block, without ever forming K.

An operator is a frozen dataclass registered as a JAX pytree (its arrays are leaves, its settings static),
so it passes through ``jit``, ``vmap`` and ``grad`` like any array. Every operator has

    n, dtype          size and dtype of the kernel it stands for,
    matvec(V)         K V for V of shape (n, k) (or (n,)), jit-compiled,
    diagonal()        the n diagonal entries (for pivoted Cholesky preconditioners),
    columns(index)    the columns K[:, index], (n, len(index)), where that is cheaper than products,
    at(s)             the same operator at another homotopy parameter s (where s applies).

Operators (memory never holds an n x n array):

* :class:`TwoLayerNTKOperator` — the structured empirical NTK of a two-layer homotopy network. With
  X~ = [c1 X, b1 1] (n, d'), A = a^T o sigma_s'(Z) and S = sigma_s(Z) (n, m), Z = X~ W~,

      K = c2^2 (A A^T) o (X~ X~^T)  [+ c2^2 S S^T + b2^2 1 1^T  when the output layer is trained].

  Since (A A^T) o (X~ X~^T) = Phi Phi^T with Phi_i = A_i (x) X~_i (a row-wise Kronecker product),
  K v = Phi (Phi^T v) where Phi^T v = A^T (v o X~) is an (m, d') matrix: per column 4 n d' m flops, done
  for a whole block as two matrix products per width block (A_b^T [v_j o X~]_j, then A_b G_b). For the
  ReLU family, A_ir = a_r (p0 + p1 [z_ir > 0]), and the signs [z > 0] are computed once and kept bit-packed
  (n m / 8 bytes); the product then goes by (rows x block) tiles in two passes (all of Phi^T V, then
  Phi (Phi^T V)), so each tile's slopes are unpacked and used while in cache. Other phi recompute z per
  width block. Memory O(n (d + k) + n * block). Opt-in, on the host CPU: ``native=True`` multiplies by the
  0/1 signs themselves (:mod:`ntkhom.native`, numba), n m d' k / 8 additions per product instead of
  n m d' k multiply-adds and no float tiles to build.
* :class:`JacobianNTKOperator` — any network f(params, x): K V = J (J^T V), one VJP and one JVP per column
  and output, over row blocks, memory O(parameters * k + n k + activations of a row block).
* :class:`InfiniteNTKOperator` — the infinite-width NTK or NNGP of a homotopy MLP of any depth (ReLU family),
  by the arc-cosine layer recursion (Cho and Saul, NeurIPS 2009; Jacot et al., NeurIPS 2018) in the dtype
  of x (use float64), assembled tile by tile on the fly (upper triangle only, each tile used twice):
  O(n^2 (d + L)) per product, O(tile^2 + n k) memory.
* :class:`DenseOperator` — a matrix already in memory, for tests and small problems.
* :class:`PathOperator` — K(s) = K0 + s K1 + s^2 K2 from an operator at three values of s (two-layer
  kernels are exactly quadratic in s; :mod:`ntkhom.kernels`), with the coefficient products.

Row structure. Every product is a sum over rows followed by row-local work: ``matvec(V, row_sum=...)`` takes
the reduction over rows as an argument (identity by default; ``lambda t: jax.lax.psum(t, axis)`` inside
``shard_map`` with x and V sharded by rows). :class:`InfiniteNTKOperator` instead needs all of x for each
row block (``rows_matvec(x_rows, V)`` gives K[rows, :] V).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ntkhom.activations import check_s
from ntkhom.data import check_inputs, is_whole
from ntkhom.kernels import KernelPath
from ntkhom.models import HomotopyMLP, Params
from ntkhom.networks import check_applies, check_params, check_trained

__all__ = [
    "DenseOperator",
    "TwoLayerNTKOperator",
    "JacobianNTKOperator",
    "InfiniteNTKOperator",
    "PathOperator",
    "two_layer_ntk_operator",
    "jacobian_ntk_operator",
    "model_jacobian_ntk_operator",
    "network_ntk_operator",
    "infinite_ntk_operator",
    "kernel_path_operator",
    "as_operator",
    "is_operator",
    "is_path_operator",
    "check_finite_block",
    "check_index",
    "pad_rows",
    "rows_product",
    "OPERATOR_BLOCK_BYTES",
    "PATTERN_BLOCK",
    "PATTERN_TILE_BYTES",
    "ACCELERATOR_TILE_SHARE",
    "ACCELERATOR_PATTERN_BLOCK",
]

#: Memory budget of one block's temporaries (an n x block slab, a few of them live at once).
OPERATOR_BLOCK_BYTES = 128 * 2**20
#: Width block and tile size of the sign-pattern product (TwoLayerNTKOperator._pattern_product). Tiles of
#: 256 widths by about 2048 rows (4 MiB in float64) were among the fastest tried on the 2-core CI machine
#: (one column at n = 20000: 0.50 to 0.53 s, against 0.53 to 0.74 s for 64 to 512 widths by 512 to 8192
#: rows; at n = 10^5: 2.6 s, against 3.2 s for the one-pass product over 64-wide slabs of all rows that came
#: before). Row tiles are balanced so that padding stays under 8 rows a tile.
PATTERN_BLOCK = 256
PATTERN_TILE_BYTES = 4 * 2**20
#: Share of an accelerator's memory that the tiles of one product may take (GPU, TPU). The sizes above suit a
#: CPU's caches; on an accelerator every step of a tile loop costs a kernel launch, so it gets few, large
#: tiles: square tiles of 8192 on a 141 GB H200, width blocks of ACCELERATOR_PATTERN_BLOCK. Chosen by that
#: reasoning, not measured: no accelerator was lent while this was written. ``block_rows`` and
#: ``block_width`` override it.
ACCELERATOR_TILE_SHARE = 1 / 16
ACCELERATOR_PATTERN_BLOCK = 1024
#: Units per packed word of a sign pattern.
_WORD_BITS = 32
#: Multiples of eps of q11 q22 - q12^2 treated as rounding (an angle of exactly 0) in the arc-cosine kernels.
_ANGLE_ROUNDING = 16
#: Homotopy parameters at which a path is sampled to recover its three coefficients (as in kernels).
_PATH_NODES = (0.0, 1.0, 2.0)


def _operator(cls=None, *, data: tuple[str, ...], meta: tuple[str, ...]):
    """Frozen dataclass registered as a pytree with ``data`` leaves and static ``meta`` fields."""

    def wrap(cls):
        cls = dataclasses.dataclass(frozen=True)(cls)
        return jax.tree_util.register_dataclass(cls, data_fields=list(data), meta_fields=list(meta))

    return wrap if cls is None else wrap(cls)


def _as_block(V, n: int, dtype) -> tuple[jax.Array, bool]:
    V = jnp.asarray(V)
    vector = V.ndim == 1
    if vector:
        V = V[:, None]
    if V.ndim != 2 or V.shape[0] != n:
        raise ValueError(f"V must have shape ({n},) or ({n}, k), got {tuple(V.shape)}")
    check_finite_block(V)
    return V.astype(jnp.result_type(V.dtype, dtype)), vector


def check_finite_block(V, name: str = "V") -> None:
    """ValueError when a concrete block has NaN or inf: a product would spread them over every row silently.

    One reduction on V's device (cheap next to a product); skipped on tracers, whose values are unknown.
    ``ensure_compile_time_eval``: a concrete V met inside a caller's trace is still checked, not staged.
    """
    if isinstance(V, jax.core.Tracer):
        return
    with jax.ensure_compile_time_eval():
        bad = int(jnp.count_nonzero(~jnp.isfinite(V)))
    if bad:
        raise ValueError(f"{name} contains {bad} non-finite value(s) (NaN or inf)")


def check_index(index, n: int) -> jax.Array:
    """Column indices as an array, refused (IndexError) where concrete and outside [-n, n): JAX indexing
    clamps them, so K[:, n + 5] would silently be column n - 1."""
    if not isinstance(index, jax.core.Tracer):
        host = np.asarray(index)
        outside = host[(host < -n) | (host >= n)] if host.size else host
        if outside.size:
            raise IndexError(f"column index {outside.ravel()[0]} is out of range for a kernel of {n} columns")
    return jnp.asarray(index)


def _identity(t):
    return t


def _default_device() -> tuple[str, int | None]:
    """The default backend ("cpu", "gpu", "tpu") and its first device's memory in bytes (None if unknown)."""
    backend = jax.default_backend()
    if backend == "cpu":
        return backend, None
    try:
        return backend, (jax.devices()[0].memory_stats() or {}).get("bytes_limit")
    except Exception:  # noqa: BLE001 - memory_stats is optional for a backend
        return backend, None


def _accelerator_budget() -> int | None:
    """Bytes the tiles of one product may take when the default device is an accelerator (its memory times
    :data:`ACCELERATOR_TILE_SHARE`; 16 GB assumed where it does not say); None on a CPU."""
    backend, memory = _default_device()
    if backend == "cpu":
        return None
    return int((memory or 16 * 2**30) * ACCELERATOR_TILE_SHARE)


def _rows_per_block(n_other: int, itemsize: int, block_rows: int | None, temporaries: int,
                    budget: int = OPERATOR_BLOCK_BYTES) -> int:
    if block_rows is not None:
        if not is_whole(block_rows):
            raise ValueError(f"block_rows must be positive (an integer >= 1), got {block_rows!r}")
        return int(block_rows)
    return int(max(8, budget // max(1, temporaries * n_other * itemsize)))


def pad_rows(x, size: int):
    """``x`` with its last row repeated up to ``size`` rows, NumPy or JAX. Padded rows stay well defined for
    any kernel (no zero norms); callers give them no weight and drop them afterwards."""
    n = x.shape[0]
    if size < n:
        raise ValueError(f"size must be >= the number of rows {n}, got {size}")
    if size == n:
        return x
    xp = jnp if isinstance(x, jax.Array) else np
    return xp.concatenate([x, xp.repeat(x[-1:], size - n, axis=0)], axis=0)


def _balanced(n: int, rows: int) -> int:
    """Rows per tile for n rows in tiles of at most ``rows``: equal tiles, a multiple of 8 (padding < 8 a tile)."""
    tiles = -(-n // rows)
    return min(rows, 8 * -(-n // (8 * tiles)))


def _pad_rows(x: jax.Array, block: int) -> tuple[jax.Array, int]:
    """``x`` padded to whole blocks of ``block`` rows, and the number of blocks."""
    blocks = -(-x.shape[0] // block)
    return pad_rows(x, blocks * block), blocks


def rows_product(kernel_fn: Callable, x_rows, x, V, tile: int) -> jax.Array:
    """kernel_fn(x_rows, x) V, assembled ``tile`` rows at a time (memory O(tile n)): (len(x_rows), k)."""
    count = x_rows.shape[0]
    tiles, blocks = _pad_rows(x_rows, tile)
    tiles = tiles.reshape((blocks, tile) + x_rows.shape[1:])
    out = jax.lax.map(lambda rows: kernel_fn(rows, x) @ V, tiles)
    return out.reshape(blocks * tile, V.shape[1])[:count]


class _Base:
    """Shared front end: shape checks, jit, vector in / vector out."""

    #: Columns per product that block eigensolvers should use: 1 where a product costs in proportion to its
    #: columns; more where a product's fixed cost (assembling kernel entries) dominates.
    preferred_block = 1

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    @property
    def dtype(self):
        return self.x.dtype

    def matvec(self, V, row_sum: Callable | None = None) -> jax.Array:
        """K V for V of shape (n, k) or (n,); ``row_sum`` reduces partial sums over rows (module docstring)."""
        V, vector = _as_block(V, self.n, self.dtype)
        if V.shape[1] == 0:  # K times no columns is no columns (the tiled products would divide by k)
            return jnp.zeros((self.n, 0), V.dtype)
        out = _jitted_matvec(self, V, row_sum or _identity)
        return out[:, 0] if vector else out

    def __matmul__(self, V):
        return self.matvec(V)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n, self.n)


@functools.partial(jax.jit, static_argnames=("row_sum",))
def _jitted_matvec(operator, V, row_sum):
    return operator._matvec(V, row_sum)


# -- dense --------------------------------------------------------------------------------------------------
@functools.partial(_operator, data=("matrix",), meta=())
class DenseOperator(_Base):
    """A symmetric matrix in memory as an operator (tests, small problems)."""

    matrix: jax.Array

    @property
    def x(self):  # rows stand in for inputs in the shared front end
        return self.matrix

    def _matvec(self, V, row_sum):
        return self.matrix @ V

    def diagonal(self) -> jax.Array:
        return jnp.diagonal(self.matrix)

    def columns(self, index) -> jax.Array:
        return self.matrix[:, check_index(index, self.n)]


# -- structured two-layer empirical NTK -----------------------------------------------------------------------
@functools.partial(
    _operator,
    data=("x", "W", "a", "patterns", "s"),
    meta=("model", "block", "width", "output_bias", "block_rows", "host_bits"),
)
class TwoLayerNTKOperator(_Base):
    """Empirical NTK of a two-layer homotopy network as an operator (module docstring for the formula).

    Attributes:
      x: (n, d') augmented inputs X~ = [c1 X, b1 1] (the bias column only with hidden biases).
      W: (blocks, d', block) augmented first-layer weights [W; b], zero-padded to whole blocks.
      a: (blocks, block) output weights (zero on padding).
      patterns: (n, blocks * block / 32) uint32 bit-packed signs [z > 0], or None (float products).
      s: homotopy parameter (a scalar array: traced values allowed).
      model, block, width, output_bias: static settings.
      block_rows: rows per tile of the sign-pattern product (static).
      host_bits: for native products (:mod:`ntkhom.native`), the same signs as host arrays packed both ways
        (static, compared by identity: they never pass through XLA, whose callbacks would copy 2 n m / 8
        bytes per product); None for XLA products.
    """

    x: jax.Array
    W: jax.Array
    a: jax.Array
    patterns: jax.Array | None
    s: jax.Array
    model: HomotopyMLP
    block: int
    width: int
    output_bias: bool
    block_rows: int
    host_bits: _HostBits | None

    @property
    def native(self) -> bool:
        """Whether products go by :mod:`ntkhom.native` on the host CPU."""
        return self.host_bits is not None

    def at(self, s) -> TwoLayerNTKOperator:
        """The operator at homotopy parameter ``s`` (sign patterns do not depend on s)."""
        return dataclasses.replace(self, s=jnp.asarray(check_s(s), self.dtype))

    @property
    def _scales(self):
        """(c2, b2_std): output-layer weight and bias scales."""
        w2_std, b2_std = self.model.layer_scales(self._d)[-1]
        return w2_std / math.sqrt(self.width), b2_std

    @property
    def _d(self) -> int:
        return self.x.shape[1] - (1 if self.model.b_std is not None else 0)

    def _slopes(self, j, z=None):
        """sigma_s'(Z) of width block j, times the output weights: (n, block)."""
        if self.patterns is not None:
            words = self.block // _WORD_BITS
            return self._slopes_from_bits(jax.lax.dynamic_slice_in_dim(self.patterns, j * words, words, 1), j)
        return self.a[j] * (1.0 + self.s * (self.model.phi.derivative(z) - 1.0))

    def _slope_levels(self):
        """(p0, p1) with sigma_s'(z) = p0 + p1 [z > 0] for the ReLU family (slopes lo below 0, hi above)."""
        lo, hi = self.model.phi.slopes
        return 1.0 - self.s + self.s * lo, self.s * (hi - lo)

    def _slopes_from_bits(self, packed, j):
        """sigma_s'(Z) a of width block j from its packed signs (rows, block / 32): (rows, block)."""
        shifts = jnp.arange(_WORD_BITS, dtype=jnp.uint32)
        bits = ((packed[:, :, None] >> shifts) & jnp.uint32(1)).reshape(packed.shape[0], self.block)
        p0, p1 = self._slope_levels()
        return self.a[j] * (p0 + p1 * bits.astype(self.dtype))

    def _matvec(self, V, row_sum):
        if self.patterns is not None:  # sign patterns exist only when the hidden layer alone is trained
            return self._scales[0] ** 2 * self._pattern_product(V, row_sum)
        c2, b2_std = self._scales
        trained_output = self.model.trained == "all"
        n, k = V.shape
        dprime = self.x.shape[1]
        # (n, d' k): column l * k + j is X~[:, l] * V[:, j]
        xv = (self.x[:, :, None] * V[:, None, :]).reshape(n, dprime * k)
        blocks = self.W.shape[0]
        mask = (jnp.arange(blocks * self.block) < self.width).reshape(blocks, self.block).astype(self.dtype)

        def body(carry, j):
            hidden, output = carry
            z = None if (self.patterns is not None and not trained_output) else self.x @ self.W[j]
            A = self._slopes(j, z)
            G = row_sum(A.T @ xv)  # (block, d' k) = Phi^T V for this block
            hidden = hidden + A @ G
            if trained_output:
                phi = self.model.phi
                S = (z + self.s * (phi.fn(z) - z)) * mask[j]
                output = output + S @ row_sum(S.T @ V)
            return (hidden, output), None

        zeros_h = jnp.zeros((n, dprime * k), V.dtype)
        zeros_o = jnp.zeros((n, k), V.dtype)
        (hidden, output), _ = jax.lax.scan(body, (zeros_h, zeros_o), jnp.arange(blocks))
        out = jnp.einsum("nl,nlk->nk", self.x, hidden.reshape(n, dprime, k))
        if trained_output:
            out = out + output
        out = c2**2 * out
        if trained_output and self.output_bias:
            out = out + b2_std**2 * row_sum(jnp.sum(V, axis=0))[None, :]
        return out

    def _pattern_product(self, V, row_sum):
        """(A A^T o X~ X~^T) V from the bit-packed signs, in tiles of ``block_rows`` rows by ``block`` widths.

        Two passes: G_j = sum_r A_rj^T [V o X~]_r for every width block j, then out_r = sum_j A_rj G_j.
        A tile and its partial sums stay in cache; a whole (n x block) slab per width block did not, and
        the (n, d' k) accumulator went through memory once per width block.
        """
        n, k = V.shape
        if self.native:
            return self._native_pattern_product(V, row_sum)
        dk = self.x.shape[1] * k
        blocks, words = self.W.shape[0], self.block // _WORD_BITS
        rows = min(n, self.block_rows)
        x, tiles = _pad_rows(self.x, rows)
        Vp = jnp.pad(V, ((0, tiles * rows - n), (0, 0)))  # padded rows carry no weight
        packed = pad_rows(self.patterns, tiles * rows).reshape(tiles, rows, blocks, words)
        xv = (x[:, :, None] * Vp[:, None, :]).reshape(tiles, rows, dk)  # [V o X~] for all columns at once

        def tile_slopes(r, j):
            return self._slopes_from_bits(packed[r, :, j], j)

        def column_block(j):  # G_j = Phi_j^T V, (block, d' k)
            def step(total, r):
                return total + tile_slopes(r, j).T @ xv[r], None

            return jax.lax.scan(step, jnp.zeros((self.block, dk), V.dtype), jnp.arange(tiles))[0]

        G = row_sum(jax.lax.map(column_block, jnp.arange(blocks)))

        def row_tile(r):  # rows r of Phi G, (rows, d' k)
            def step(total, j):
                return total + tile_slopes(r, j) @ G[j], None

            return jax.lax.scan(step, jnp.zeros((rows, dk), V.dtype), jnp.arange(blocks))[0]

        hidden = jax.lax.map(row_tile, jnp.arange(tiles)).reshape(tiles * rows, -1, k)[:n]
        return jnp.einsum("nl,nlk->nk", self.x, hidden)

    def _native_pattern_product(self, V, row_sum):
        """The same product with the 0/1 sign matrix B itself (:mod:`ntkhom.native`): A = diag(a) (p0 + p1 B)
        row-wise, so A^T Y = a o (p0 1^T Y + p1 B^T Y) and A G = p0 1 a^T G + p1 B (a o G)."""
        n, k = V.shape
        p0, p1 = self._slope_levels()
        a = self.a.reshape(-1, 1)
        Y = (self.x[:, :, None] * V[:, None, :]).reshape(n, -1)
        G = row_sum(a * (p0 * jnp.sum(Y, axis=0) + p1 * _bits_times(self.host_bits, True, Y)))
        aG = a * G
        hidden = p0 * jnp.sum(aG, axis=0) + p1 * _bits_times(self.host_bits, False, aG)
        return jnp.einsum("nl,nlk->nk", self.x, hidden.reshape(n, -1, k))

    def diagonal(self) -> jax.Array:
        return _two_layer_columns(self, None)

    def columns(self, index) -> jax.Array:
        return _two_layer_columns(self, check_index(index, self.n))


class _HostBits:
    """Sign patterns in host memory for native products, packed by rows (n, m / 8) and by units (m, n / 8),
    uint8. Hashed and compared by identity, so an operator can carry them as a static field."""

    __slots__ = ("by_row", "by_unit")

    def __init__(self, by_row: np.ndarray, by_unit: np.ndarray):
        self.by_row, self.by_unit = by_row, by_unit

    def __repr__(self) -> str:
        return f"_HostBits(n={self.by_row.shape[0]}, units={self.by_unit.shape[0]})"


def _host_bits_times(bits: _HostBits, by_unit: bool, Y):
    from ntkhom import native

    return native.bit_matrix_product(bits.by_unit if by_unit else bits.by_row, np.asarray(Y))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _bits_times(bits: _HostBits, by_unit: bool, Y):
    """B^T Y (``by_unit``) or B Y for the 0/1 sign matrix B (n x m) on the host; each one's VJP is the other."""
    rows = (bits.by_unit if by_unit else bits.by_row).shape[0]
    return jax.pure_callback(functools.partial(_host_bits_times, bits, by_unit),
                             jax.ShapeDtypeStruct((rows, Y.shape[1]), Y.dtype), Y, vmap_method="sequential")


def _bits_times_forward(bits, by_unit, Y):
    return _bits_times(bits, by_unit, Y), None


def _bits_times_backward(bits, by_unit, _, cotangent):
    return (_bits_times(bits, not by_unit, cotangent),)


_bits_times.defvjp(_bits_times_forward, _bits_times_backward)


@functools.partial(jax.jit, static_argnames=("n",))
def _patterns_by_unit(patterns, n):
    """Sign patterns (n, words) uint32, 32 units a word, repacked along rows: (32 words, ceil(n / 8)) uint8,
    bit t of byte q of row u holding unit u's sign at point 8 q + t (zero past n). From the same bits, so both
    packings describe exactly one matrix."""
    # Transposed once, so that each word's signs are contiguous: slicing a column of the (n, words) array
    # in the loop read all n rows' cache lines for every word (46 s against 2.0 s at n = 4 x 10^5, 256 words).
    by_word = jnp.pad(patterns, ((0, -n % 8), (0, 0))).T
    unit_shifts = jnp.arange(_WORD_BITS, dtype=jnp.uint32)[:, None]
    row_shifts = jnp.arange(8, dtype=jnp.uint8)

    def one(word):  # the 32 units of one word, (32, ceil(n / 8))
        bits = ((by_word[word][None, :] >> unit_shifts) & jnp.uint32(1)).astype(jnp.uint8)
        return jnp.sum(bits.reshape(_WORD_BITS, -1, 8) << row_shifts, axis=2, dtype=jnp.uint8)

    return jax.lax.map(one, jnp.arange(patterns.shape[1])).reshape(-1, by_word.shape[1] // 8)


def _host_bits(patterns, n: int) -> _HostBits:
    from ntkhom import native

    return _HostBits(native.words_as_bytes(np.asarray(patterns)), np.asarray(_patterns_by_unit(patterns, n)))


@jax.jit
def _two_layer_columns(op: TwoLayerNTKOperator, index):
    """K[:, index] (or the diagonal for index None) at O(n m d') per column, by width blocks."""
    c2, b2_std = op._scales
    trained_output = op.model.trained == "all"
    blocks = op.W.shape[0]
    mask = (jnp.arange(blocks * op.block) < op.width).reshape(blocks, op.block).astype(op.dtype)
    diag = index is None
    gram = jnp.sum(op.x**2, axis=1) if diag else op.x @ op.x[index].T

    def body(carry, j):
        z = op.x @ op.W[j]
        A = op._slopes(j, z)
        S = (z + op.s * (op.model.phi.fn(z) - z)) * mask[j]
        if diag:
            return carry + jnp.sum(A**2, axis=1) * gram + trained_output * jnp.sum(S**2, axis=1), None
        return carry + (A @ A[index].T) * gram + trained_output * (S @ S[index].T), None

    shape = (op.n,) if diag else (op.n, index.shape[0])
    total, _ = jax.lax.scan(body, jnp.zeros(shape, op.dtype), jnp.arange(blocks))
    total = c2**2 * total
    if trained_output and op.output_bias:
        total = total + b2_std**2
    return total


def _width_block(n: int, width: int, itemsize: int, block_width: int | None, pattern: bool) -> int:
    if block_width is not None:
        if not is_whole(block_width):
            raise ValueError(f"block_width must be positive (an integer >= 1), got {block_width!r}")
        block = min(int(block_width), width)
    elif pattern:  # products go by (rows x block) tiles, whatever n
        block = min(width, PATTERN_BLOCK if _accelerator_budget() is None else ACCELERATOR_PATTERN_BLOCK)
    else:
        # About four (n x block) slabs live at once (z, A, S and a product).
        budget = _accelerator_budget() or OPERATOR_BLOCK_BYTES
        block = max(_WORD_BITS, min(width, budget // max(1, 4 * n * itemsize)))
    if pattern:
        block = _WORD_BITS * -(-block // _WORD_BITS)
    return int(block)


@functools.partial(jax.jit, static_argnames=("block",))
def _pack_patterns(x, W, block):
    """Bit-packed [Z > 0] for Z = x W (W as (blocks, d', block)): (n, blocks * block / 32) uint32."""
    shifts = jnp.arange(_WORD_BITS, dtype=jnp.uint32)

    def one(Wb):
        z = x @ Wb
        bits = (z > 0).reshape(x.shape[0], block // _WORD_BITS, _WORD_BITS).astype(jnp.uint32)
        return jnp.sum(bits << shifts, axis=2, dtype=jnp.uint32)  # distinct bits: the sum is their OR

    words = jax.lax.map(one, W)  # (blocks, n, words per block)
    return jnp.transpose(words, (1, 0, 2)).reshape(x.shape[0], -1)


def two_layer_ntk_operator(
    model: HomotopyMLP,
    params: Params,
    x,
    *,
    s=None,
    block_width: int | None = None,
    pattern: bool | None = None,
    block_rows: int | None = None,
    native: bool = False,
) -> TwoLayerNTKOperator:
    """The empirical NTK of a two-layer homotopy network as a :class:`TwoLayerNTKOperator`.

    Equal to :func:`ntkhom.kernels.empirical_ntk_two_layer` times V (tested), for trained="hidden" or "all",
    with or without biases, any phi.

    Args:
      model: a two-layer :class:`~ntkhom.models.HomotopyMLP` with one output.
      params: its parameters.
      x: (n, d) inputs.
      s: homotopy parameter (default ``model.s``).
      block_width: hidden units per block (default: what fits :data:`OPERATOR_BLOCK_BYTES`).
      pattern: keep bit-packed sign patterns instead of recomputing z. None (default): whenever phi is of
        the ReLU family and only the hidden layer is trained (the output term needs z itself); True insists.
      block_rows: rows per tile of the sign-pattern product (default: a (rows x block_width) float64 tile of
        about :data:`PATTERN_TILE_BYTES`).
      native: products with the sign patterns by :mod:`ntkhom.native` (numba, host CPU only, opt-in; needs
        sign patterns, concrete x and params, and up to n m / 4 more bytes of host memory for the patterns
        packed both ways): 2 to 3 times faster than the default on the 2-core machine (docs/benchmarks.md).
        Works under ``jit`` (the patterns are a static field: each new operator compiles anew) and
        reverse-mode ``grad``; not on an accelerator, not sharded.

    Returns:
      The operator; memory O(n d + n m / 32 words + n * block_width).
    """
    if model.depth != 1 or model.out_dim != 1:
        raise ValueError(
            f"two_layer_ntk_operator needs a two-layer network with one output (got widths={model.widths}, "
            f"out_dim={model.out_dim}); use jacobian_ntk_operator for other networks"
        )
    check_params(params)
    x = model.check(params, x)
    s = model.s if s is None else check_s(s)
    n, d = x.shape
    W = params[0]["W"]
    width = W.shape[1]
    applies = model.phi.slopes is not None and model.trained == "hidden"
    if pattern not in (None, True, False):
        raise ValueError(f"pattern must be None (automatic), True or False, got {pattern!r}")
    if pattern and not applies:
        raise ValueError(
            "pattern=True needs a ReLU-family phi (relu, leaky_relu, abs) and trained='hidden'; "
            f"got phi={model.phi.name!r}, trained={model.trained!r}"
        )
    pattern = applies if pattern is None else pattern
    if native not in (True, False):
        raise ValueError(f"native must be True or False, got {native!r}")
    if native and not pattern:
        raise ValueError(
            "native=True multiplies by the sign patterns, which need a ReLU-family phi (relu, leaky_relu, abs), "
            f"trained='hidden' and pattern not False; got phi={model.phi.name!r}, trained={model.trained!r}, "
            f"pattern={pattern!r}"
        )
    if native:
        from ntkhom import native as native_module

        native_module.require()
        if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves((x, params))):
            raise ValueError("native=True keeps the sign patterns in host memory, so it needs concrete x and "
                             "params: build the operator outside jit and pass it in")
    dtype = jnp.result_type(x.dtype, W.dtype)
    x = x.astype(dtype)
    w1_std, b1_std = model.layer_scales(d)[0]
    c1 = w1_std / math.sqrt(d)
    columns = [c1 * x]
    rows = [W.astype(dtype)]
    if "b" in params[0]:
        columns.append(jnp.full((n, 1), b1_std, dtype))
        rows.append(params[0]["b"].astype(dtype)[None, :])
    x_aug = jnp.concatenate(columns, axis=1)
    W_aug = jnp.concatenate(rows, axis=0)
    block = _width_block(n, width, jnp.dtype(dtype).itemsize, block_width, pattern)
    blocks = -(-width // block)
    pad = blocks * block - width
    W_aug = jnp.pad(W_aug, ((0, 0), (0, pad))).reshape(W_aug.shape[0], blocks, block).transpose(1, 0, 2)
    a = jnp.pad(params[1]["W"][:, 0].astype(dtype), (0, pad)).reshape(blocks, block)
    patterns = _pack_patterns(x_aug, W_aug, block) if pattern else None
    return TwoLayerNTKOperator(
        x=x_aug, W=W_aug, a=a, patterns=patterns, s=jnp.asarray(s, dtype), model=model, block=block, width=width,
        output_bias="b" in params[1], host_bits=_host_bits(patterns, n) if native else None,
        # on an accelerator a quarter of its tile budget for a (rows x block) tile and its products
        block_rows=_balanced(n, _rows_per_block(block, jnp.dtype(dtype).itemsize, block_rows, temporaries=4,
                                                budget=_accelerator_budget() or 4 * PATTERN_TILE_BYTES)),
    )


# -- any network: J (J^T V) -----------------------------------------------------------------------------------
@functools.partial(_operator, data=("x", "params", "frozen"), meta=("f", "combine", "block_rows"))
class JacobianNTKOperator(_Base):
    """Empirical NTK of any network as K V = J (J^T V) (one VJP and one JVP per column and output).

    K_ij = (1/o) sum_c <d f_c(x_i)/d theta, d f_c(x_j)/d theta> over the trained parameters theta (the
    output axis averaged, as neural-tangents' ``trace_axes``).

    Attributes:
      x: (n, ...) inputs (rows are samples).
      params: trained parameters (a pytree).
      frozen: the rest of the parameters (a pytree, possibly empty).
      f: ``f(parameters, x) -> (n, o)`` or (n,); static.
      combine: ``combine(params, frozen) -> parameters`` passed to f; static.
      block_rows: rows per VJP/JVP (bounds the activations held at once); static.
    """

    x: jax.Array
    params: object
    frozen: object
    f: Callable
    combine: Callable
    block_rows: int

    def _apply(self, params, x):
        out = self.f(self.combine(params, self.frozen), x)
        return out[:, None] if out.ndim == 1 else out

    def _matvec(self, V, row_sum):
        n, k = V.shape
        xs, blocks = _pad_rows(self.x, self.block_rows)
        Vp = jnp.pad(V, ((0, blocks * self.block_rows - n), (0, 0)))  # padded rows carry no weight
        xs = xs.reshape((blocks, self.block_rows) + self.x.shape[1:])
        Vs = Vp.reshape(blocks, self.block_rows, k)
        outputs = jax.eval_shape(self._apply, self.params, xs[0]).shape[1]
        eye = jnp.eye(outputs, dtype=V.dtype)

        def pull(total, item):
            xb, vb = item
            _, pullback = jax.vjp(lambda p: self._apply(p, xb), self.params)
            # cotangent for (column j, output c): v_j e_c^T
            cot = vb.T[:, None, :, None] * eye[None, :, None, :]  # (k, o, rows, o)
            u = jax.vmap(jax.vmap(lambda c: pullback(c)[0]))(cot)
            return jax.tree.map(jnp.add, total, u), None

        zeros = jax.tree.map(lambda p: jnp.zeros((k, outputs) + p.shape, jnp.result_type(p, V)), self.params)
        u, _ = jax.lax.scan(pull, zeros, (xs, Vs))
        u = row_sum(u)

        def push(xb):
            def one(uc):
                return jax.jvp(lambda p: self._apply(p, xb), (self.params,), (uc,))[1]

            out = jax.vmap(jax.vmap(one))(u)  # (k, o, rows, o)
            return jnp.einsum("kcrc->rk", out) / outputs

        out = jax.lax.map(push, xs).reshape(blocks * self.block_rows, k)
        return out[:n].astype(V.dtype)

    def diagonal(self) -> jax.Array:
        # n products of one column would be needed; callers fall back to a Nystrom sketch.
        raise NotImplementedError("JacobianNTKOperator has no cheap diagonal; use a Nystrom preconditioner")

    def columns(self, index) -> jax.Array:
        index = check_index(index, self.n)
        E = jnp.zeros((self.n, index.shape[0]), self.dtype).at[index, jnp.arange(index.shape[0])].set(1.0)
        return self.matvec(E)

    @property
    def dtype(self):
        leaves = jax.tree.leaves(self.params)
        return jnp.result_type(*leaves) if leaves else self.x.dtype


def _second(params, frozen):
    return params


def jacobian_ntk_operator(f: Callable, params, x, *, frozen=None, combine: Callable | None = None,
                          block_rows: int | None = None) -> JacobianNTKOperator:
    """The empirical NTK of ``f(params, x)`` as a :class:`JacobianNTKOperator`.

    Args:
      f: the network, ``f(parameters, x) -> (n, o)`` (or (n,)); a hashable function (it is a static field).
      params: the trained parameters (differentiated).
      x: (n, ...) inputs.
      frozen: parameters that are not trained, passed to ``combine``.
      combine: ``combine(params, frozen)`` builds f's first argument (default: ``params`` alone).
      block_rows: rows per VJP/JVP (default: all rows up to 1024).
    """
    x = jnp.asarray(x)
    if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(f"x must have a leading axis of samples, got shape {tuple(x.shape)}")
    if not callable(f):
        raise TypeError(f"f must be callable f(params, x), got {type(f).__name__}")
    check_params(x, "x")  # NaN or inf, where concrete (x may be images: any shape)
    check_params(params)
    check_params(frozen, "frozen")
    if not jax.tree.leaves(params):
        raise ValueError("params has no leaf: no parameter is trained, so the NTK would be over no parameters")
    combine = combine or _second
    check_applies(lambda p, x: f(combine(p, frozen), x), params, x)
    if not (block_rows is None or is_whole(block_rows)):
        raise ValueError(f"block_rows must be positive (an integer >= 1), got {block_rows!r}")
    rows = min(x.shape[0], 1024) if block_rows is None else int(block_rows)
    return JacobianNTKOperator(x=x, params=params, frozen=frozen, f=f, combine=combine, block_rows=rows)


@functools.lru_cache(maxsize=64)
def _model_functions(model: HomotopyMLP):
    # Cached per model, so equal models give the same static functions and share compilations.
    def f(full, x):
        params, s = full
        return model.apply(params, x, s)

    def combine(trainable, frozen):
        params, s = frozen
        return model.combine(trainable, params), s

    return f, combine


def model_jacobian_ntk_operator(model: HomotopyMLP, params: Params, x, *, s=None,
                                block_rows: int | None = None) -> JacobianNTKOperator:
    """:func:`jacobian_ntk_operator` for a :class:`~ntkhom.models.HomotopyMLP` of any depth, over
    ``model.trained`` (equal to :func:`ntkhom.kernels.empirical_ntk`, tested)."""
    check_params(params)
    x = model.check(params, x)
    s = model.s if s is None else check_s(s)
    f, combine = _model_functions(model)
    return jacobian_ntk_operator(f, model.trainable(params), x, frozen=(params, jnp.asarray(s, x.dtype)),
                                 combine=combine, block_rows=block_rows)


@dataclasses.dataclass(frozen=True)
class _NetworkForward:
    """f((params, s), x) of a :class:`ntkhom.networks.Network` (hashable: a static field of the operator)."""

    network: object

    def __call__(self, full, x):
        params, s = full
        return self.network.apply(params, x, s) if self.network.accepts_s else self.network.apply(params, x)


def _combine_with_s(trainable, frozen):
    from ntkhom.networks import combine

    params, s = frozen
    return combine(trainable, params), s


def network_ntk_operator(network, params, x, *, s=None, trained=None,
                         block_rows: int | None = None) -> JacobianNTKOperator:
    """The empirical NTK of any network :func:`ntkhom.networks.as_network` accepts (HomotopyMLP, stax
    triple, Flax module, ``f(params, x[, s])``) as a :class:`JacobianNTKOperator` over the ``trained`` leaves
    (None: the network's default; see :func:`ntkhom.networks.partition`).

    Args:
      network: the network or anything ``as_network`` takes.
      params: its parameter pytree.
      x: (n, d) inputs.
      s: homotopy parameter, for networks that take one (default: the network's own).
      trained: which leaves are trained (pytree of bools, predicate on the leaf path, or for a HomotopyMLP
        "hidden"/"all").
      block_rows: rows per VJP/JVP.
    """
    from ntkhom.networks import as_network

    network = as_network(network)
    if s is not None and not network.accepts_s:
        raise ValueError("s was given but this network takes no homotopy parameter")
    if s is not None:
        s = jnp.asarray(check_s(s))
    trainable, frozen = network.partition(params, trained)
    check_trained(trainable, trained)
    return jacobian_ntk_operator(_NetworkForward(network), trainable, jnp.asarray(x), frozen=(frozen, s),
                                 combine=_combine_with_s, block_rows=block_rows)


# -- infinite width -------------------------------------------------------------------------------------------
def _arctan_coefficients(degree: int = 12) -> tuple[float, ...]:
    """Power-series coefficients in z = t^2 of arctan(t) / t on |t| <= tan(pi/8), by Chebyshev interpolation
    of NumPy's arctan (maximum error 4.4e-16 relative, measured on 10^6 points; tests/test_operators.py)."""
    zmax = np.tan(np.pi / 8) ** 2
    nodes = (np.cos((2 * np.arange(degree + 1) + 1) * np.pi / (2 * degree + 2)) + 1) * zmax / 2
    t = np.sqrt(nodes)
    fit = np.polynomial.Chebyshev.fit(nodes, np.arctan(t) / t, degree, domain=[0.0, zmax])
    return tuple(float(c) for c in fit.convert(kind=np.polynomial.Polynomial).coef)


_ARCTAN = _arctan_coefficients()


def _angle_complement(sine, cosine):
    """pi - atan2(sine, cosine) for sine >= 0 (pi/2 where both are 0), from elementwise arithmetic.

    XLA's float64 atan2 on CPU is a scalar library call (13 ns per entry on the 2-core CI machine, against
    1.9 ns for this) and dominated every infinite-width product. Octant reduction to |r| <= tan(pi/8), then a
    degree-12 polynomial in r^2 (:func:`_arctan_coefficients`); one division.
    """
    x = jnp.abs(cosine)
    hi = jnp.maximum(x, sine)
    lo = jnp.minimum(x, sine)
    shifted = lo > np.tan(np.pi / 8) * hi  # reduce with arctan(t) = pi/4 + arctan((t - 1) / (t + 1))
    r = jnp.where(shifted, lo - hi, lo) / jnp.where(shifted, lo + hi, jnp.where(hi == 0, 1.0, hi))
    z = r * r
    poly = _ARCTAN[-1]
    for c in _ARCTAN[-2::-1]:
        poly = poly * z + c
    octant = r * poly + jnp.where(shifted, np.pi / 4, 0.0)  # arctan(lo / hi), in [0, pi/4]
    first_quadrant = jnp.where(x <= sine, np.pi / 2 - octant, octant)  # atan2(sine, |cosine|)
    return jnp.where(cosine < 0, first_quadrant, np.pi - first_quadrant)


def _relu_family_layer(q12, q11, q22, a, b):
    """E[sigma(u) sigma(v)] and E[sigma'(u) sigma'(v)] for sigma(x) = a min(x, 0) + b max(x, 0) and
    (u, v) ~ N(0, [[q11, q12], [q12, q22]]) (the arc-cosine kernels of degree 1 and 0, Cho and Saul 2009)."""
    # |x||x'| sin(theta) from q11 q22 - q12^2. Rounding leaves ~eps q11 q22 of it on the diagonal, which an
    # angle would turn into theta ~ sqrt(eps) ~ 1e-8; below a few eps it is indistinguishable from 0.
    product = q11 * q22
    excess = product - q12**2
    tolerance = _ANGLE_ROUNDING * jnp.finfo(jnp.result_type(q12)).eps * product
    sine = jnp.sqrt(jnp.where(excess > tolerance, excess, 0.0))
    complement = _angle_complement(sine, q12)  # pi - theta
    value = a * b * q12 + (b - a) ** 2 * (sine + complement * q12) / (2 * np.pi)
    slope = a * b + (b - a) ** 2 * complement / (2 * np.pi)
    return value, slope


@functools.partial(_operator, data=("x", "s"), meta=("model", "kind", "block_rows"))
class InfiniteNTKOperator(_Base):
    """The infinite-width NTK (over ``model.trained``) or NNGP of a homotopy MLP, as an operator.

    Layer recursion (neural-tangents conventions; first layer q = W1^2 x.x'/d + b^2, Theta = q):

        q'     = W^2 E[sigma_s(u) sigma_s(v)] + b^2,
        Theta' = W^2 (Theta E[sigma_s'(u) sigma_s'(v)] + E[sigma_s(u) sigma_s(v)]) + b^2,

    with closed forms for the ReLU family (sigma_s(x) = a_s min(x, 0) + b_s max(x, 0)). The NTK with a frozen
    output layer (trained="hidden") is Theta - q at the output. A product assembles K in square tiles of
    ``block_rows``, the upper triangle only (K is symmetric), each used twice.

    Attributes:
      x: (n, d) inputs; the dtype sets the precision (float64 recommended).
      s: homotopy parameter (scalar array).
      model, kind ("ntk" or "nngp"), block_rows: static settings.
    """

    #: A product costs about the same for 1 or 32 columns: the kernel entries, recomputed in each, dominate.
    preferred_block = 32

    x: jax.Array
    s: jax.Array
    model: HomotopyMLP
    kind: str
    block_rows: int

    def at(self, s) -> InfiniteNTKOperator:
        return dataclasses.replace(self, s=jnp.asarray(check_s(s), self.dtype))

    def _layer_slopes(self):
        lo, hi = self.model.phi.slopes
        return 1.0 - self.s + self.s * lo, 1.0 - self.s + self.s * hi

    def _kernel(self, x1, x2, diag: bool = False):
        """K(x1, x2) (n1, n2), or the diagonal K(x1_i, x1_i) when ``diag``."""
        d = self.x.shape[1]
        scales = self.model.layer_scales(d)
        a, b = self._layer_slopes()
        w_std, b_std = scales[0]
        bias = 0.0 if b_std is None else b_std**2

        def first(u, v):
            return (w_std**2 / d) * (jnp.sum(u * v, axis=1) if diag else u @ v.T) + bias

        q = first(x1, x2)
        q11 = first(x1, x1) if not diag else q
        q22 = first(x2, x2) if not diag else q
        if not diag:
            q11 = jnp.sum(x1 * x1, axis=1) * (w_std**2 / d) + bias
            q22 = jnp.sum(x2 * x2, axis=1) * (w_std**2 / d) + bias
            q11, q22 = q11[:, None], q22[None, :]
        theta = q
        variance = (a**2 + b**2) / 2  # E[sigma(u)^2] / E[u^2]
        for w_std, b_std in scales[1:]:
            bias = 0.0 if b_std is None else b_std**2
            value, slope = _relu_family_layer(q, q11, q22, a, b)
            theta = w_std**2 * (theta * slope + value) + bias
            q = w_std**2 * value + bias
            q11 = w_std**2 * variance * q11 + bias
            q22 = w_std**2 * variance * q22 + bias
        if self.kind == "nngp":
            return q
        return theta - q if self.model.trained == "hidden" else theta

    def rows_matvec(self, x_rows, V) -> jax.Array:
        """K[rows, :] V for rows given by their inputs ``x_rows`` (r, d): (r, k), ``block_rows`` rows at a
        time (memory O(block_rows n))."""
        return rows_product(self._kernel, x_rows, self.x, V, self.block_rows)

    def _matvec(self, V, row_sum):
        # K is symmetric: each tile K[I, J] with I <= J is assembled once and used for both K[I, J] V[J] and
        # K[J, I] V[I], which halves the kernel entries (their evaluation, not the products, dominates).
        tile = self.block_rows
        xs, blocks = _pad_rows(self.x, tile)
        Vs = jnp.pad(V, ((0, blocks * tile - self.n), (0, 0)))  # padded rows carry no weight
        upper = np.triu_indices(blocks)

        def body(out, pair):
            i, j = pair
            xi = jax.lax.dynamic_slice_in_dim(xs, i * tile, tile)
            xj = jax.lax.dynamic_slice_in_dim(xs, j * tile, tile)
            k_ij = self._kernel(xi, xj)
            vj = jax.lax.dynamic_slice_in_dim(Vs, j * tile, tile)
            out_i = jax.lax.dynamic_slice_in_dim(out, i * tile, tile) + k_ij @ vj
            out = jax.lax.dynamic_update_slice_in_dim(out, out_i, i * tile, 0)
            vi = jax.lax.dynamic_slice_in_dim(Vs, i * tile, tile)
            mirror = jnp.where(i == j, 0.0, 1.0).astype(V.dtype) * (k_ij.T @ vi)
            out_j = jax.lax.dynamic_slice_in_dim(out, j * tile, tile) + mirror
            return jax.lax.dynamic_update_slice_in_dim(out, out_j, j * tile, 0), None

        pairs = (jnp.asarray(upper[0], jnp.int32), jnp.asarray(upper[1], jnp.int32))
        out, _ = jax.lax.scan(body, jnp.zeros_like(Vs), pairs)
        return out[: self.n]

    def diagonal(self) -> jax.Array:
        return _infinite_diagonal(self)

    def columns(self, index) -> jax.Array:
        return _infinite_columns(self, check_index(index, self.n))


@jax.jit
def _infinite_diagonal(op):
    return op._kernel(op.x, op.x, diag=True)


@jax.jit
def _infinite_columns(op, index):
    return op._kernel(op.x, op.x[index])


def infinite_ntk_operator(model: HomotopyMLP, x, *, s=None, kind: str = "ntk",
                          block_rows: int | None = None) -> InfiniteNTKOperator:
    """The infinite-width NTK (``kind="ntk"``, over ``model.trained``) or NNGP (``kind="nngp"``) of a
    homotopy MLP of any depth with a ReLU-family phi, as an :class:`InfiniteNTKOperator`.

    Equal to :func:`ntkhom.kernels.infinite_ntk` / :func:`~ntkhom.kernels.infinite_nngp` times V (tested).

    Args:
      model: the network description (depth, scales, biases, phi of the ReLU family, trained).
      x: (n, d) inputs, computed in their own dtype (pass float64).
      s: homotopy parameter (default ``model.s``).
      kind: "ntk" or "nngp".
      block_rows: edge of the square tiles of K assembled at once (default on a CPU 1024 for float64, so
        that their temporaries fit :data:`OPERATOR_BLOCK_BYTES`; on an accelerator, :func:`_accelerator_budget`).
    """
    if kind not in ("ntk", "nngp"):
        raise ValueError(f"unknown kind={kind!r}; choose 'ntk' or 'nngp'")
    if model.phi.slopes is None:
        raise ValueError(
            f"infinite_ntk_operator has closed forms for the ReLU family only, got phi={model.phi.name!r}; "
            "use ntkhom.kernels.infinite_ntk (numerical quadrature) for other activations"
        )
    x = check_inputs(x)
    s = model.s if s is None else check_s(s)
    if block_rows is None:  # square tiles: about 16 (tile x tile) temporaries within the budget
        budget = _accelerator_budget() or OPERATOR_BLOCK_BYTES
        rows = 2 ** int(math.log2(math.sqrt(budget / (16 * x.dtype.itemsize))))
    else:
        rows = _rows_per_block(x.shape[0], x.dtype.itemsize, block_rows, temporaries=16)
    rows = min(rows, x.shape[0])
    return InfiniteNTKOperator(x=x, s=jnp.asarray(s, x.dtype), model=model, kind=kind, block_rows=rows)


# -- kernel path ---------------------------------------------------------------------------------------------
@functools.partial(_operator, data=("nodes", "s"), meta=())
class PathOperator(_Base):
    """K(s) = K0 + s K1 + s^2 K2 from the kernel at s = 0, 1, 2 (``nodes``, three operators).

    Two-layer kernels are exactly quadratic in s at any width, so the Newton form through the three nodes
    gives the coefficients: K0 = K(0), K2 = (K(2) - 2 K(1) + K(0)) / 2, K1 = K(1) - K0 - K2.
    """

    nodes: tuple
    s: jax.Array

    @property
    def n(self) -> int:
        return self.nodes[0].n

    @property
    def preferred_block(self) -> int:
        return self.nodes[0].preferred_block

    @property
    def dtype(self):
        return self.nodes[0].dtype

    def at(self, s) -> PathOperator:
        return dataclasses.replace(self, s=jnp.asarray(check_s(s), self.dtype))

    def coefficient_products(self, V) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(K0 V, K1 V, K2 V), three products."""
        V, vector = _as_block(V, self.n, self.dtype)
        k0, k1, k2 = (node.matvec(V) for node in self.nodes)
        second = (k2 - 2.0 * k1 + k0) / 2.0
        out = (k0, k1 - k0 - second, second)
        return tuple(t[:, 0] for t in out) if vector else out

    def _matvec(self, V, row_sum):
        k0, k1, k2 = (node._matvec(V, row_sum) for node in self.nodes)
        second = (k2 - 2.0 * k1 + k0) / 2.0
        return k0 + self.s * (k1 - k0 - second) + self.s**2 * second

    def _combine(self, parts):
        k0, k1, k2 = parts
        second = (k2 - 2.0 * k1 + k0) / 2.0
        return k0 + self.s * (k1 - k0 - second) + self.s**2 * second

    def diagonal(self) -> jax.Array:
        return self._combine([node.diagonal() for node in self.nodes])

    def columns(self, index) -> jax.Array:
        return self._combine([node.columns(index) for node in self.nodes])


def kernel_path_operator(kernel, s=None) -> PathOperator:
    """The path K(s) as a :class:`PathOperator`, from an operator with ``at(s)`` (two-layer finite or
    infinite width) or a dense :class:`~ntkhom.kernels.KernelPath`."""
    if isinstance(kernel, KernelPath):
        nodes = tuple(DenseOperator(kernel.at(t)) for t in _PATH_NODES)
        dtype = kernel.dtype
    elif is_path_operator(kernel):
        nodes = tuple(kernel.at(t) for t in _PATH_NODES)
        dtype = kernel.dtype
        s = getattr(kernel, "s", 0.0) if s is None else s
    else:
        raise TypeError(f"kernel_path_operator needs an operator with at(s) or a KernelPath, got "
                        f"{type(kernel).__name__}; a dense matrix is one kernel, not a path: wrap the three "
                        "coefficient matrices as ntkhom.kernels.KernelPath(K0, K1, K2) (or use "
                        "kernels.empirical_kernel_path), or as_operator(K) for the matrix alone")
    s = 0.0 if s is None else check_s(s)
    return PathOperator(nodes=nodes, s=jnp.asarray(s, dtype))


# -- dispatch ------------------------------------------------------------------------------------------------
def is_operator(obj) -> bool:
    """Whether ``obj`` is a kernel operator (has ``matvec`` and ``n``) rather than a matrix."""
    return hasattr(obj, "matvec") and hasattr(obj, "n") and not isinstance(obj, (np.ndarray, jax.Array))


def is_path_operator(obj) -> bool:
    """Whether ``obj`` is a kernel operator with ``at(s)`` (a path in s). A JAX array is not: its ``.at`` is
    the indexed-update helper, which a check for ``hasattr(obj, "at")`` mistook for a path."""
    return is_operator(obj) and callable(getattr(obj, "at", None))


def as_operator(K):
    """An operator unchanged, or a square matrix wrapped as a :class:`DenseOperator`."""
    if is_operator(K):
        return K
    array = jnp.asarray(K)
    if array.ndim != 2 or array.shape[0] != array.shape[1] or array.shape[0] == 0:
        raise ValueError(f"expected a kernel operator or a non-empty square matrix, got shape {tuple(array.shape)}")
    if not isinstance(K, jax.core.Tracer):  # checked where concrete
        from ntkhom.spectrum import SYMMETRY_TOLERANCE, asymmetry

        host = np.asarray(array)
        bad = int(np.count_nonzero(~np.isfinite(host)))
        if bad:
            raise ValueError(f"the matrix contains {bad} non-finite value(s) (NaN or inf)")
        skew = asymmetry(host)
        if skew > SYMMETRY_TOLERANCE:
            raise ValueError(f"the matrix is not symmetric (max |K - K^T| / max |K| = {skew:.2e})")
    return DenseOperator(array)
