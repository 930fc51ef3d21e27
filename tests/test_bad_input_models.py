"""Bad input to networks, kernels and operators: one clear error each, and no silent NaN.

The checks of a fix failed before it: a JAX error from deep inside (dot_general, PyTreeDef leaves, vmap, an
index helper called), a silent NaN or clamped column, or a NaN gradient. A few guard what must not change
with it (the error for a misplaced s, the closed-form values, finite infinite-width gradients).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntkhom import kernels, operators, sharding
from ntkhom.models import mlp, two_layer

N, D, WIDTH = 6, 4, 16


def tanh_net(params, x):
    return jnp.tanh(x @ params["W1"]) @ params["W2"]


def tanh_params():
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    return {"W1": jax.random.normal(k1, (D, WIDTH)) / 2, "W2": jax.random.normal(k2, (WIDTH, 1))}


def tanh_ntk(params, x):
    """J J^T by hand: df/dW2 = h = tanh(x W1), df/dW1[a, b] = x_a W2_b (1 - h_b^2)."""
    x, W1, W2 = (np.asarray(a, np.float64) for a in (x, params["W1"], params["W2"]))
    h = np.tanh(x @ W1)
    slope = (1 - h**2) * W2[:, 0]
    return h @ h.T + (x @ x.T) * (slope @ slope.T)


X = jax.random.normal(jax.random.PRNGKey(1), (N, D))


# -- 1. a network that cannot be applied to x ---------------------------------------------------------------
def test_wrong_feature_count_names_x_and_chains_the_cause():
    params, x = tanh_params(), jnp.ones((5, 3))
    calls = {
        "empirical_ntk": lambda: kernels.empirical_ntk(tanh_net, params, x),
        "network_kernel": lambda: kernels.network_kernel(tanh_net, params, x),
        "jacobian_ntk_operator": lambda: operators.jacobian_ntk_operator(tanh_net, params, x),
        "network_ntk_operator": lambda: operators.network_ntk_operator(tanh_net, params, x),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match=r"could not be applied to x1? of shape \(5, 3\)") as error:
            call()
        assert error.value.__cause__ is not None, name  # JAX's own message stays reachable


def test_wrong_feature_count_of_a_stax_network():
    from ntkhom.nt import stax

    init_fn, apply_fn, kernel_fn = stax.serial(stax.Dense(WIDTH), stax.Relu(), stax.Dense(1))
    _, params = init_fn(jax.random.PRNGKey(2), (-1, D))
    with pytest.raises(ValueError, match=r"could not be applied to x1 of shape \(5, 3\)"):
        kernels.empirical_ntk((init_fn, apply_fn, kernel_fn), params, jnp.ones((5, 3)))


def test_the_right_shape_still_runs_under_jit_and_vmap():
    params = tanh_params()
    expected = tanh_ntk(params, X)
    np.testing.assert_allclose(jax.jit(lambda x: kernels.empirical_ntk(tanh_net, params, x))(X), expected,
                               rtol=1e-12)
    stacked = jax.vmap(lambda x: kernels.empirical_ntk(tanh_net, params, x))(X[None])
    np.testing.assert_allclose(stacked[0], expected, rtol=1e-12)
    v = jnp.arange(1.0, N + 1)
    product = jax.jit(lambda x: operators.network_ntk_operator(tanh_net, params, x).matvec(v))(X)
    np.testing.assert_allclose(product, expected @ np.asarray(v), rtol=1e-12)
    with pytest.raises(ValueError, match=r"could not be applied to x1 of shape \(6, 3\)"):
        jax.jit(lambda x: kernels.empirical_ntk(tanh_net, params, x))(X[:, :3])


def test_a_missing_s_keeps_its_own_type_error():
    def needs_s(params, x, s):
        return tanh_net(params, x) * s

    with pytest.raises(TypeError, match="takes s with no default"):
        kernels.empirical_ntk(needs_s, tanh_params(), X)


# -- 2. a dense matrix where a path is needed ---------------------------------------------------------------
def test_kernel_path_operator_refuses_a_dense_matrix():
    K = kernels.closed_form_ntk_relu(X)
    with pytest.raises(TypeError, match="KernelPath"):
        operators.kernel_path_operator(K)
    assert not operators.is_path_operator(K)  # a JAX array has .at, but it is no path
    model = two_layer(WIDTH, 0.5)
    op = operators.two_layer_ntk_operator(model, model.init(jax.random.PRNGKey(3), D), X)
    assert operators.is_path_operator(op)
    np.testing.assert_allclose(operators.kernel_path_operator(op).at(0.5).matvec(jnp.ones(N)), op.matvec(jnp.ones(N)),
                               rtol=1e-10)


# -- 3. nothing trained ---------------------------------------------------------------------------------------
def test_nothing_trained_is_refused():
    params = tanh_params()
    batch = jax.tree.map(lambda leaf: leaf[None], params)
    calls = (
        lambda: kernels.empirical_ntk(tanh_net, params, X, trained=False),
        lambda: kernels.empirical_ntk_batch(tanh_net, batch, X, trained=False),
        lambda: operators.network_ntk_operator(tanh_net, params, X, trained=False),
        lambda: kernels.empirical_ntk(tanh_net, params, X, trained={"W1": False, "W2": False}),
    )
    for call in calls:
        with pytest.raises(ValueError, match="no parameter is trained"):
            call()
    with pytest.raises(ValueError, match="no parameter is trained"):
        operators.jacobian_ntk_operator(tanh_net, {}, X, frozen=params, combine=lambda p, frozen: frozen)
    # one trained leaf is enough: the NTK over W2 alone is h h^T
    h = np.tanh(np.asarray(X) @ np.asarray(params["W1"]))
    np.testing.assert_allclose(kernels.empirical_ntk(tanh_net, params, X, trained={"W1": False, "W2": True}),
                               h @ h.T, rtol=1e-12)


# -- 4. blocks and indices of operator products ---------------------------------------------------------------
def _operators():
    model = two_layer(WIDTH, 0.5)
    params = model.init(jax.random.PRNGKey(4), D)
    two = operators.two_layer_ntk_operator(model, params, X)
    infinite = operators.infinite_ntk_operator(model, X)
    sharded = sharding.shard_operator(two, sharding.device_mesh())
    dense = kernels.empirical_ntk(model, params, X)
    return {"two_layer": two, "infinite": infinite, "sharded": sharded}, dense


def test_non_finite_blocks_are_refused():
    ops, _ = _operators()
    V = jnp.ones((N, 2)).at[3, 1].set(jnp.nan)
    for op in ops.values():
        with pytest.raises(ValueError, match=r"V contains 1 non-finite"):
            op.matvec(V)
        with pytest.raises(ValueError, match=r"V contains 1 non-finite"):
            op.matvec(V.at[3, 1].set(jnp.inf)[:, 1])
    # traced blocks are not checked (their values are unknown) and still multiply
    two = ops["two_layer"]
    np.testing.assert_allclose(jax.jit(two.matvec)(jnp.ones(N)), two.matvec(jnp.ones(N)), rtol=1e-12)


def test_kernel_rows_refuses_non_finite_points():
    with pytest.raises(ValueError, match=r"x contains NaN"):
        sharding.kernel_rows(kernels.closed_form_ntk_relu, X.at[2, 0].set(jnp.nan))


def test_a_block_of_no_columns_gives_no_columns():
    ops, _ = _operators()
    for name, op in ops.items():
        out = op.matvec(jnp.ones((N, 0)))
        assert out.shape == (N, 0), name


def test_out_of_range_columns_are_refused():
    ops, dense = _operators()
    ops["dense"] = operators.DenseOperator(dense)
    ops["jacobian"] = operators.network_ntk_operator(two_layer(WIDTH, 0.5), two_layer(WIDTH, 0.5).init(
        jax.random.PRNGKey(4), D), X)
    for name, op in ops.items():
        for index in ([N + 5], [0, N], [-N - 1]):
            with pytest.raises(IndexError, match="out of range"):
                op.columns(index)
        if name != "infinite":  # the finite operators stand for the empirical kernel
            np.testing.assert_allclose(op.columns([N - 1, -N]), np.asarray(dense)[:, [N - 1, 0]], rtol=1e-9,
                                       err_msg=name)


# -- 5. inputs whose squared norms overflow -------------------------------------------------------------------
def test_overflowing_inputs_are_refused():
    model = two_layer(WIDTH, 0.5)
    params32 = jax.tree.map(lambda leaf: leaf.astype(jnp.float32), model.init(jax.random.PRNGKey(5), D))
    large32 = (X * 1e30).astype(jnp.float32)  # entries fit float32 (3.4e38), their squares do not
    calls = (
        lambda x, p: kernels.empirical_ntk_two_layer(model, p, x),
        lambda x, p: kernels.empirical_ntk(model, p, x),
        lambda x, p: kernels.closed_form_ntk_relu(x),
        lambda x, p: operators.infinite_ntk_operator(model, x),
        lambda x, p: operators.two_layer_ntk_operator(model, p, x),
    )
    for call in calls:
        with pytest.raises(ValueError, match=r"rows of norm up to \S+e\+30, whose squares overflow float32: rescale"):
            call(large32, params32)
    params64 = model.init(jax.random.PRNGKey(5), D)
    for call in calls:
        with pytest.raises(ValueError, match=r"norm up to \S+e\+200, whose squares overflow float64: rescale"):
            call(X * 1e200, params64)
    # Just inside the range the kernel is finite and proportional to |x|^2 (positively homogeneous); to
    # 1e-3, since arcsin near rho = 1 resolves float32 angles on the diagonal only to sqrt(eps) ~ 3e-4.
    inside = (X * 1e17).astype(jnp.float32)
    K = kernels.closed_form_ntk_relu(inside)
    np.testing.assert_allclose(K / 1e34, kernels.closed_form_ntk_relu(X.astype(jnp.float32)), rtol=1e-3)


# -- 6. gradients of the closed-form kernels ------------------------------------------------------------------
def _rows_with_parallel_pairs():
    """Rows of different norms, with a pair of identical rows and a pair of opposite rows."""
    x = np.array(jax.random.normal(jax.random.PRNGKey(6), (N, 3)))
    x *= np.array([1.0, 2.0, 0.5, 3.0, 1.5, 0.7])[:, None]
    x[1] = x[0]
    x[2] = -0.5 * x[0]
    return jnp.asarray(x)


def _central_differences(f, x, h):
    grad = np.zeros(x.shape)
    for index in np.ndindex(*x.shape):
        step = np.zeros(x.shape)
        step[index] = h
        grad[index] = (f(x + step) - f(x - step)) / (2 * h)
    return grad


@pytest.mark.parametrize("trained", ["hidden", "all"])
def test_closed_form_gradient_matches_central_differences(trained):
    x = _rows_with_parallel_pairs()
    weights = jax.random.normal(jax.random.PRNGKey(7), (N, N))

    def total(x):
        return jnp.sum(weights * kernels.closed_form_ntk_relu(x, s=0.7, trained=trained))

    grad = np.asarray(jax.grad(total)(x))
    assert np.all(np.isfinite(grad))
    # At parallel pairs the kernel has a symmetric kink (theta ~ |perpendicular step|), which central
    # differences cancel; what remains is O(h) from the kink's odd part plus sqrt(eps) rounding of arcsin
    # near 1 divided by h, so h = 1e-4 and a tolerance of 1e-3 of the largest entry.
    reference = _central_differences(total, np.asarray(x), 1e-4)
    np.testing.assert_allclose(grad, reference, atol=1e-3 * np.abs(reference).max())


def test_closed_form_diagonal_gradient_is_exact():
    # K(x, x) = |x|^2 ((1 - s/2)^2 + s^2 / 4) (hidden) and + (1 - s) |x|^2 + s^2 |x|^2 / 2 (all): theta = 0.
    x = _rows_with_parallel_pairs()
    s = 0.7
    for trained, factor in (("hidden", (1 - s / 2) ** 2 + s**2 / 4),
                            ("all", (1 - s / 2) ** 2 + s**2 / 4 + (1 - s) + s**2 / 2)):
        grad = jax.grad(lambda x, t=trained: jnp.trace(kernels.closed_form_ntk_relu(x, s=s, trained=t)))(x)
        np.testing.assert_allclose(grad, 2 * factor * np.asarray(x), rtol=1e-7)


def test_closed_form_values_unchanged():
    # The formula of the docstring, evaluated in NumPy with arccos (theta) directly.
    x = _rows_with_parallel_pairs()
    host = np.asarray(x)
    norms = np.linalg.norm(host, axis=1)
    gram = host @ host.T
    theta = np.arccos(np.clip(gram / np.outer(norms, norms), -1, 1))
    s = 0.7
    hidden = gram * ((1 - s / 2) ** 2 + s**2 / (2 * np.pi) * (np.pi / 2 - theta))
    output = (1 - s) * gram + s**2 * np.outer(norms, norms) * (np.sin(theta) + (np.pi - theta) * np.cos(theta)) / (
        2 * np.pi)
    np.testing.assert_allclose(kernels.closed_form_ntk_relu(x, s=s), hidden, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(kernels.closed_form_ntk_relu(x, s=s, trained="all"), hidden + output, rtol=1e-13,
                               atol=1e-13)


def test_infinite_width_gradients_are_finite_and_match_differences():
    # The neural-tangents recursion (deep MLP, NTK and NNGP) and the operator's arc-cosine layers: finite
    # gradients that agree with central differences (checked while fixing the closed form; kept as a guard).
    x = _rows_with_parallel_pairs()
    weights = jax.random.normal(jax.random.PRNGKey(8), (N, N))
    model = mlp((32, 32), 0.7)
    for kernel in (lambda x: kernels.infinite_ntk(model, x), lambda x: kernels.infinite_nngp(model, x),
                   lambda x: operators.infinite_ntk_operator(model, x).matvec(jnp.eye(N))):
        def total(x, kernel=kernel):
            return jnp.sum(weights * kernel(x))

        grad = np.asarray(jax.grad(total)(x))
        assert np.all(np.isfinite(grad))
        reference = _central_differences(total, np.asarray(x), 1e-4)
        np.testing.assert_allclose(grad, reference, atol=1e-3 * np.abs(reference).max())
