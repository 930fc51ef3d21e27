"""Native (numba) products with bit-packed sign patterns: equal to matrix products computed without them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("numba")

from ntkhom import eigensolvers, kernels, models, native, operators, sharding  # noqa: E402

N, D = 203, 5  # n not a multiple of 8 (the last byte of each unit's row packing is part padding)


def _close(a, b, rtol=1e-12):
    a, b = np.asarray(a), np.asarray(b)
    assert np.max(np.abs(a - b)) <= rtol * np.max(np.abs(b)), np.max(np.abs(a - b)) / np.max(np.abs(b))


def _inputs(n=N, seed=0):
    return 1.3 * jax.random.normal(jax.random.PRNGKey(seed), (n, D))  # off the unit sphere


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-13), (np.float32, 1e-5)])
@pytest.mark.parametrize("rows, chunks, n, c", [(37, 5, 35, 7), (300, 40, 320, 33), (1, 1, 3, 1), (20, 3, 17, 150)])
def test_bit_matrix_product_equals_a_float_product(dtype, rtol, rows, chunks, n, c):
    rng = np.random.default_rng(rows + c)
    packed = rng.integers(0, 256, (rows, chunks), dtype=np.uint8)  # bits past Y's n rows are set too
    Y = rng.standard_normal((n, c)).astype(dtype)
    B = np.unpackbits(packed, axis=1, bitorder="little")[:, :n].astype(np.float64)
    expected = B @ Y.astype(np.float64)
    out = native.bit_matrix_product(packed, Y)
    assert out.dtype == dtype and out.shape == (rows, c)
    _close(out, expected, rtol)
    # pack_bits and words_as_bytes are the layouts the operator relies on
    assert np.array_equal(native.pack_bits(B.astype(bool)), packed[:, : -(-n // 8)] & native.pack_bits(
        np.ones((rows, n), bool)))
    words = rng.integers(0, 2**32, (3, 2), dtype=np.uint32)
    bits = np.unpackbits(native.words_as_bytes(words), axis=1, bitorder="little")
    assert all(bits[i, 32 * w + t] == (words[i, w] >> t) & 1 for i in range(3) for w in range(2) for t in range(32))


def test_tile_and_group_sizes_do_not_change_the_product():
    # Tiles that do not divide the rows, groups that do not divide the 37 chunks, a group of one and one wider
    # than all chunks, one-row tiles; groups of 37 and 24 chunks go through the kernel's sixteen-, eight- and
    # one-chunk loops: every (row, chunk) pair still adds its table row exactly once.
    rng = np.random.default_rng(21)
    packed = rng.integers(0, 256, (101, 37), dtype=np.uint8)
    Y = rng.standard_normal((290, 9))
    expected = np.unpackbits(packed, axis=1, bitorder="little")[:, :290].astype(np.float64) @ Y
    for row_tile, group in [(1, 1), (7, 5), (128, 64), (33, 13), (1000, 2), (16, 24), (5, 37), (64, 16)]:
        _close(native.bit_matrix_product(packed, Y, row_tile=row_tile, group=group), expected, 1e-13)
    # Blocks of output rows that do not divide a thread's rows, one-row blocks, blocks under a tile: the
    # tables are rebuilt for every block, and every row is still summed once.
    for row_tile, group, block_rows in [(4, 16, 9), (1, 24, 1), (16, 37, 5), (128, 8, 1000)]:
        _close(native.bit_matrix_product(packed, Y, row_tile=row_tile, group=group, block_rows=block_rows),
               expected, 1e-13)
    for name, value in (("row_tile", 0), ("group", 2.5), ("block_rows", -3)):
        with pytest.raises(ValueError, match=f"{name} must be an integer >= 1"):
            native.bit_matrix_product(packed, Y, **{name: value})


@pytest.mark.parametrize("k, n, b", [(7, 203, 1), (13, 50, 3), (1, 9, 2), (4, 1, 1), (0, 6, 1)])
def test_basis_products_equal_numpy(k, n, b):
    # k not a multiple of the four rows the subtraction adds at a time nor of the thread count; W given as a
    # transposed (non-contiguous) view and in float32: both are read as float64.
    rng = np.random.default_rng(k * n + b)
    Qt = rng.standard_normal((k, n))
    W = rng.standard_normal((b, n)).T
    C = rng.standard_normal((k, b))
    projected = native.project(Qt, W)
    assert projected.shape == (k, b)
    _close(native.subtract_projection(W, Qt, C), W - np.einsum("kn,kb->nb", Qt, C), 1e-14)
    if k:  # an empty basis projects to nothing and subtracts nothing
        _close(projected, np.einsum("kn,nb->kb", Qt, W), 1e-14)
        _close(native.project(Qt, W.astype(np.float32)), Qt @ W.astype(np.float32).astype(np.float64), 1e-14)
    with pytest.raises(ValueError, match="Qt's columns must match W's rows"):
        native.project(Qt, np.ones((n + 1, b)))
    with pytest.raises(ValueError, match="do not fit W - Qt.T @ C"):
        native.subtract_projection(W, Qt, np.ones((k + 1, b)))
    with pytest.raises(ValueError, match="W must be 2-D"):
        native.project(Qt, np.ones(n))


@pytest.mark.parametrize(
    "phi, s, bias, width",
    [("relu", 1.0, False, 77), ("leaky_relu", 0.6, True, 100), ("relu", 1.7, False, 40), ("abs", 0.3, True, 33)],
)
def test_native_operator_equals_the_neural_tangents_kernel(phi, s, bias, width):
    model = models.HomotopyMLP((width,), s=s, phi=phi, b_std=1.0 if bias else None, trained="hidden")
    x = _inputs()
    params = model.init(jax.random.PRNGKey(2), D)
    K = kernels.empirical_ntk(model, params, x)  # neural-tangents Jacobian contraction
    op = operators.two_layer_ntk_operator(model, params, x, native=True)
    assert op.native
    V = jax.random.normal(jax.random.PRNGKey(3), (N, 3))
    _close(op.matvec(V), K @ V)
    _close(op.matvec(V[:, 1]), K @ V[:, 1])


def test_native_operator_under_jit_vmap_and_grad_with_dead_neurons():
    model = models.two_layer(64, s=1.0)
    x = _inputs()
    params = model.init(jax.random.PRNGKey(3), D)
    W = params[0]["W"].at[:, :12].set(0.0).at[0, :8].set(-1.0).at[0, 8:12].set(1.0)  # never and always firing
    params = ({"W": W},) + params[1:]
    x = x.at[:, 0].set(jnp.abs(x[:, 0]) + 0.1)
    op = operators.two_layer_ntk_operator(model, params, x, native=True)
    V = jax.random.normal(jax.random.PRNGKey(4), (N, 2))
    products = jax.jit(lambda op, s, V: op.at(s).matvec(V))
    for s in (0.3, 1.8):
        _close(products(op, s, V), kernels.empirical_ntk(model, params, x, s=s) @ V)
    stacked = jax.vmap(lambda s: op.at(s).matvec(V))(jnp.array([0.3, 1.8]))
    _close(stacked[1], kernels.empirical_ntk(model, params, x, s=1.8) @ V)
    # reverse mode: d/dV sum(sin(K V)) = K cos(K V) (K symmetric); d/ds through the slopes (K quadratic in s)
    K = kernels.empirical_ntk(model, params, x, s=1.0)
    _close(jax.grad(lambda V: jnp.sum(jnp.sin(op.matvec(V))))(V), K @ jnp.cos(K @ V))
    h = 1e-3  # K is quadratic in s, so the central difference is exact up to rounding
    numeric = (jnp.sum(V * (kernels.empirical_ntk(model, params, x, s=0.7 + h) @ V))
               - jnp.sum(V * (kernels.empirical_ntk(model, params, x, s=0.7 - h) @ V))) / (2 * h)
    _close(jax.grad(lambda s: jnp.sum(V * op.at(s).matvec(V)))(0.7), numeric, 1e-8)


def test_native_lambda_min_equals_dense_eigvalsh(monkeypatch):
    model = models.two_layer(96, s=1.0)
    x = _inputs(n=151, seed=5)
    params = model.init(jax.random.PRNGKey(6), D)
    op = operators.two_layer_ntk_operator(model, params, x, native=True)
    dense = np.linalg.eigvalsh(np.asarray(kernels.empirical_ntk(model, params, x)))
    calls = []  # the Lanczos basis goes through native's products for a native operator
    project = native.project
    monkeypatch.setattr(native, "project", lambda Qt, W: calls.append(Qt.shape) or project(Qt, W))
    result = eigensolvers.extreme_spectrum(op, 1, tol=1e-10)
    assert len(calls) >= result.smallest.products // 2 and max(k for k, _ in calls) > 50
    low, high = result.smallest.eigenvalues[0], result.largest.eigenvalues[0]
    assert abs(low.value - dense[0]) <= max(low.bound, low.floor) + 1e-12 * dense[-1]
    assert abs(high.value - dense[-1]) <= high.bound + 1e-12 * dense[-1]


def test_native_products_refuse_what_they_cannot_do(monkeypatch):
    x = _inputs()
    tanh = models.two_layer(16, phi="tanh")
    with pytest.raises(ValueError, match="native=True multiplies by the sign patterns"):
        operators.two_layer_ntk_operator(tanh, tanh.init(jax.random.PRNGKey(0), D), x, native=True)
    model = models.two_layer(16)
    params = model.init(jax.random.PRNGKey(0), D)
    with pytest.raises(ValueError, match="native=True multiplies by the sign patterns"):
        operators.two_layer_ntk_operator(model, params, x, native=True, pattern=False)
    with pytest.raises(ValueError, match="native must be True or False"):
        operators.two_layer_ntk_operator(model, params, x, native="yes")
    with pytest.raises(ValueError, match="build the operator outside jit"):
        jax.jit(lambda x: operators.two_layer_ntk_operator(model, params, x, native=True).matvec(x[:, 0]))(x)
    op = operators.two_layer_ntk_operator(model, params, x, native=True)
    with pytest.raises(ValueError, match="cannot be sharded"):
        sharding.shard_operator(op, sharding.device_mesh())
    with pytest.raises(FloatingPointError, match="NaN or inf"):
        native.bit_matrix_product(np.zeros((2, 1), np.uint8), np.array([[np.nan]]))
    with pytest.raises(ValueError, match="Y has 9 rows"):
        native.bit_matrix_product(np.zeros((2, 1), np.uint8), np.ones((9, 1)))
    monkeypatch.setattr(native, "available", lambda: False)
    with pytest.raises(ImportError, match=r'pip install "ntkhom\[native\]"'):
        operators.two_layer_ntk_operator(model, params, x, native=True)
