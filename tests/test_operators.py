"""Kernel operators: every product K V equals an independently computed dense kernel times V (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntkhom import kernels, models, operators

N, D = 37, 5  # odd n, so row blocks and width blocks end in padded remainders


def _inputs(n=N, d=D, seed=0):
    return jax.random.normal(jax.random.PRNGKey(seed), (n, d)) * 1.3  # off the unit sphere


def _close(a, b, rtol=1e-10):
    a, b = np.asarray(a), np.asarray(b)
    assert np.max(np.abs(a - b)) <= rtol * np.max(np.abs(b)), np.max(np.abs(a - b)) / np.max(np.abs(b))


def _block(n=N, k=3, seed=1):
    return jax.random.normal(jax.random.PRNGKey(seed), (n, k))


@pytest.mark.parametrize(
    "phi, trained, bias",
    [("relu", "hidden", True), ("relu", "all", False), ("tanh", "hidden", False), ("tanh", "all", True)],
)
def test_two_layer_operator_equals_neural_tangents_kernel(phi, trained, bias):
    model = models.HomotopyMLP((70,), s=0.7, phi=phi, b_std=1.0 if bias else None,
                               out_b_std=0.5 if bias else None, trained=trained)
    x = _inputs()
    params = model.init(jax.random.PRNGKey(2), D)
    K = kernels.empirical_ntk(model, params, x)  # neural-tangents Jacobian contraction
    # 16-row tiles: the sign-pattern product's last row tile is padded (37 = 2 * 16 + 5)
    op = operators.two_layer_ntk_operator(model, params, x, block_width=33, block_rows=16)
    assert (op.patterns is not None) == (phi == "relu" and trained == "hidden")
    V = _block()
    _close(op.matvec(V), K @ V)
    _close(op.matvec(V[:, 0]), K @ V[:, 0])
    _close(op.diagonal(), jnp.diagonal(K))
    _close(op.columns(jnp.array([0, 5, 36])), K[:, [0, 5, 36]])


def test_two_layer_operator_with_dead_neurons_and_traced_s():
    model = models.two_layer(64, s=1.0)
    x = _inputs()
    params = model.init(jax.random.PRNGKey(3), D)
    # Units that never fire on these inputs (sigma' = 1 - s everywhere) and units that always fire.
    W = params[0]["W"].at[:, :8].set(0.0).at[:, 8:12].set(0.0)
    W = W.at[0, :8].set(-1.0).at[0, 8:12].set(1.0)
    params = ({"W": W},) + params[1:]
    x = x.at[:, 0].set(jnp.abs(x[:, 0]) + 0.1)
    op = operators.two_layer_ntk_operator(model, params, x, block_width=32)
    V = _block()
    products = jax.jit(lambda s, V: op.at(s).matvec(V))
    for s in (0.3, 1.0, 1.8):
        K = kernels.empirical_ntk(model, params, x, s=s)
        _close(products(s, V), K @ V)
    # vmap over s as well
    stacked = jax.vmap(lambda s: op.at(s).matvec(V))(jnp.array([0.3, 1.8]))
    _close(stacked[1], kernels.empirical_ntk(model, params, x, s=1.8) @ V)


def test_two_layer_operator_refuses_bad_input():
    model = models.two_layer(16)
    params = model.init(jax.random.PRNGKey(0), D)
    op = operators.two_layer_ntk_operator(model, params, _inputs())
    with pytest.raises(ValueError, match="V must have shape"):
        op.matvec(jnp.ones((N + 1, 2)))
    with pytest.raises(ValueError, match="two-layer"):
        deep = models.mlp((4, 4))
        operators.two_layer_ntk_operator(deep, deep.init(jax.random.PRNGKey(0), D), _inputs())
    with pytest.raises(ValueError, match="pattern=True"):
        tanh = models.two_layer(16, phi="tanh")
        operators.two_layer_ntk_operator(tanh, tanh.init(jax.random.PRNGKey(0), D), _inputs(), pattern=True)
    with pytest.raises(ValueError, match="block_rows must be positive"):
        operators.two_layer_ntk_operator(model, params, _inputs(), block_rows=0)
    bad = jax.tree.map(lambda p: p, params)
    bad[1]["W"] = bad[1]["W"].at[3, 0].set(jnp.inf)
    with pytest.raises(ValueError, match=r"params\[1\]\['W'\] contains inf"):
        operators.two_layer_ntk_operator(model, bad, _inputs())


def test_jacobian_operators_refuse_non_finite_inputs_and_parameters():
    model = models.mlp((5, 4))
    params = model.init(jax.random.PRNGKey(0), D)
    x = np.array(_inputs())
    x[2, 1] = np.nan
    with pytest.raises(ValueError, match="x contains NaN"):
        operators.jacobian_ntk_operator(lambda p, x: model.apply(p, x), params, x)
    bad = jax.tree.map(lambda p: p, params)
    bad[0]["W"] = bad[0]["W"].at[0, 0].set(jnp.nan)
    with pytest.raises(ValueError, match=r"params\[0\]\['W'\] contains NaN"):
        operators.model_jacobian_ntk_operator(model, bad, _inputs())
    with pytest.raises(ValueError, match="contains NaN"):
        operators.network_ntk_operator(model, bad, _inputs())
    # Traced parameters are not checked (their values are unknown) and still give the product.
    V = _block()
    traced = jax.jit(lambda p: operators.model_jacobian_ntk_operator(model, p, _inputs()).matvec(V))(params)
    _close(traced, operators.model_jacobian_ntk_operator(model, params, _inputs()).matvec(V))


def test_jacobian_operator_of_deep_network_equals_neural_tangents_kernel():
    model = models.mlp((7, 9), s=0.6, out_dim=2)  # several outputs: the kernel averages over them
    x = _inputs()
    params = model.init(jax.random.PRNGKey(4), D)
    op = operators.model_jacobian_ntk_operator(model, params, x, block_rows=10)
    K = kernels.empirical_ntk(model, params, x)
    V = _block()
    _close(op.matvec(V), K @ V)


def test_jacobian_operator_of_a_plain_function_equals_own_jacobian():
    def f(params, x):
        return jnp.tanh(x @ params["w1"]) @ params["w2"] + params["c"]

    keys = jax.random.split(jax.random.PRNGKey(5), 2)
    params = {"w1": jax.random.normal(keys[0], (D, 6)), "w2": jax.random.normal(keys[1], (6,)), "c": jnp.array(0.3)}
    x = _inputs()
    J = jax.jacrev(lambda p: f(p, x))(params)
    J = np.concatenate([np.asarray(leaf).reshape(N, -1) for leaf in jax.tree.leaves(J)], axis=1)
    op = operators.jacobian_ntk_operator(f, params, x, block_rows=8)
    V = _block()
    _close(op.matvec(V), J @ (J.T @ np.asarray(V)))


def _diagonal_by_hand(model, x, s):
    """Infinite-width kernel at x = x' (angle 0 in every layer) by a plain loop."""
    lo, hi = model.phi.slopes
    a, b = 1 - s + s * lo, 1 - s + s * hi
    scales = model.layer_scales(x.shape[1])
    w_std, b_std = scales[0]
    bias = 0.0 if b_std is None else b_std**2
    q = w_std**2 / x.shape[1] * np.sum(np.asarray(x) ** 2, axis=1) + bias
    ntk = q.copy()
    for w_std, b_std in scales[1:]:
        bias = 0.0 if b_std is None else b_std**2
        second = (a**2 + b**2) / 2
        ntk = w_std**2 * (ntk * second + second * q) + bias
        q = w_std**2 * second * q + bias
    return ntk - q if model.trained == "hidden" else ntk, q


@pytest.mark.parametrize("trained", ["hidden", "all"])
def test_infinite_two_layer_operator_equals_closed_form(trained):
    x = _inputs()
    model = models.two_layer(1, s=0.6, trained=trained)
    op = operators.infinite_ntk_operator(model, x, block_rows=8)
    K = np.array(kernels.closed_form_ntk_relu(x, s=0.6, trained=trained))
    # arcsin / arccos of a cosine rounded near 1 are off by ~1e-8 on the diagonal; the exact diagonal:
    np.fill_diagonal(K, _diagonal_by_hand(model, x, 0.6)[0])
    V = _block()
    _close(op.matvec(V), K @ V)
    _close(op.columns(jnp.array([2, 3])), K[:, [2, 3]])


def test_angle_complement_equals_numpy_arctan2_in_every_octant():
    # pi - atan2(y, x) = atan2(y, -x) for y >= 0: NumPy's libm arctan2 is the independent reference.
    rng = np.random.default_rng(3)
    size = 200_000
    x = rng.normal(size=size) * np.exp(rng.uniform(-30, 30, size))
    y = np.abs(rng.normal(size=size)) * np.exp(rng.uniform(-30, 30, size))
    x[:50], y[25:75] = 0.0, 0.0  # axes, and the origin (pi/2 by convention)
    edges = np.tan(np.pi / 8) * np.abs(x[75:100])  # on the octant reduction's switch
    y[75:100] = edges
    y[100:125] = np.abs(x[100:125])  # on the diagonal
    expected = np.arctan2(y, -x)
    expected[25:50] = np.pi / 2
    got = np.asarray(jax.jit(operators._angle_complement)(jnp.asarray(y), jnp.asarray(x)))
    assert np.max(np.abs(got - expected) / np.maximum(expected, 1e-300)) < 1e-15


@pytest.mark.parametrize("kind", ["ntk", "nngp"])
def test_infinite_deep_operator_equals_neural_tangents(kind):
    x = _inputs()
    model = models.mlp((3, 4, 5), s=1.4, phi="leaky_relu")
    op = operators.infinite_ntk_operator(model, x, kind=kind, block_rows=16)
    K = np.array(kernels.infinite_ntk(model, x) if kind == "ntk" else kernels.infinite_nngp(model, x))
    ntk_diag, nngp_diag = _diagonal_by_hand(model, x, 1.4)
    np.fill_diagonal(K, ntk_diag if kind == "ntk" else nngp_diag)  # neural-tangents rounds it to ~1e-9
    V = _block()
    _close(op.matvec(V), K @ V)
    _close(op.diagonal(), np.diagonal(K))
    with pytest.raises(ValueError, match="ReLU family"):
        operators.infinite_ntk_operator(models.two_layer(1, phi="erf"), x)


def test_kernel_path_operator_gives_the_coefficients():
    model = models.two_layer(40, s=1.0, bias=True, trained="all")
    x = _inputs()
    params = model.init(jax.random.PRNGKey(6), D)
    path = kernels.empirical_kernel_path(model, params, x)
    op = operators.kernel_path_operator(operators.two_layer_ntk_operator(model, params, x))
    V = _block()
    for mine, dense in zip(op.coefficient_products(V), (path.K0, path.K1, path.K2)):
        _close(mine, dense @ V)
    _close(op.at(1.3).matvec(V), path.at(1.3) @ V)
    dense_path = operators.kernel_path_operator(path, s=0.4)
    _close(dense_path.matvec(V), path.at(0.4) @ V)


def test_network_operator_trains_only_the_chosen_leaves():
    def f(params, x, s):
        return (x @ params["w1"] + s * jnp.sin(x @ params["w1"])) @ params["w2"]

    keys = jax.random.split(jax.random.PRNGKey(9), 2)
    params = {"w1": jax.random.normal(keys[0], (D, 6)), "w2": jax.random.normal(keys[1], (6, 2))}
    x = _inputs()
    op = operators.network_ntk_operator(f, params, x, s=0.5, trained={"w1": True, "w2": False})
    J = jax.jacrev(lambda w1: f({"w1": w1, "w2": params["w2"]}, x, 0.5))(params["w1"])  # (n, 2, D, 6)
    J = np.asarray(J).reshape(N, 2, -1)
    K = np.einsum("ica,jca->ij", J, J) / 2  # averaged over the two outputs
    V = _block()
    _close(op.matvec(V), K @ V)
    model = models.mlp((7,), s=0.4, trained="hidden")
    model_params = model.init(jax.random.PRNGKey(10), D)
    from_model = operators.network_ntk_operator(model, model_params, x)
    _close(from_model.matvec(V), kernels.empirical_ntk(model, model_params, x, s=0.4) @ V)


@pytest.mark.parametrize("memory, edge", [(141 * 10**9, 8192), (None, 2048)])
def test_an_accelerator_gets_large_tiles_and_the_same_products(monkeypatch, memory, edge):
    # 141 GB (an H200): 1/16 of it for 16 square float64 temporaries gives tiles of 8192; a device that
    # does not report its memory is taken as 16 GB (2048). The products do not depend on the tiles.
    n = 9001
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(3), (n, 4)))
    model = models.two_layer(2048)
    params = model.init(jax.random.PRNGKey(4), 4)
    cpu_infinite = operators.infinite_ntk_operator(model, x[:1500])
    cpu_two_layer = operators.two_layer_ntk_operator(model, params, x[:1500])
    monkeypatch.setattr(operators, "_default_device", lambda: ("gpu", memory))
    big = operators.infinite_ntk_operator(model, x)
    assert (big.block_rows, cpu_infinite.block_rows) == (min(edge, n), 1024)
    wide = operators.two_layer_ntk_operator(model, params, x)
    assert wide.block == operators.ACCELERATOR_PATTERN_BLOCK and wide.block_rows >= n  # one row tile
    assert cpu_two_layer.block == operators.PATTERN_BLOCK
    V = _block(1500, k=2)
    _close(operators.infinite_ntk_operator(model, x[:1500]).matvec(V), cpu_infinite.matvec(V))
    _close(operators.two_layer_ntk_operator(model, params, x[:1500]).matvec(V), cpu_two_layer.matvec(V))
