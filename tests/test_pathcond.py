"""Path-lifting, rescaling, PathCond and ENorm: invariances, brute-force path enumeration, coordinate descent
optimality, the two-layer closed form, and errors on bad input."""

import functools
import itertools

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from ntkhom import pathcond as pc
from ntkhom.kernels import empirical_ntk_batch
from ntkhom.models import HomotopyMLP, mlp, two_layer

jax.config.update("jax_enable_x64", True)


def _deep(phi="relu", bias=True, widths=(4, 3, 5), out_dim=2, s=1.0):
    return mlp(widths, s=s, phi=phi, bias=bias, out_dim=out_dim)


def _flat(tree):
    return jnp.concatenate([jnp.ravel(v) for v in jax.tree.leaves(tree)])


def _bad_start(model, key, d=3, spread=1.5):
    """Parameters with a random function-preserving rescaling applied, so there is something to undo."""
    k1, k2 = jax.random.split(key)
    params = model.init(k1, d)
    return pc.rescale(params, pc.random_scaling(k2, params, spread))


def _enumerate_paths(params, scales):
    """Phi as an explicit list: one product per path (input or bias start -> output), effective weights."""
    eff = pc.effective_params(params, scales)
    sizes = [eff[0]["W"].shape[0]] + [e["W"].shape[1] for e in eff]
    values = []
    for start in range(len(eff) + 1):  # start == 0: an input coordinate; else the bias of layer start - 1
        if start > 0 and "b" not in eff[start - 1]:
            continue
        for route in itertools.product(*[range(k) for k in sizes[start:]]):
            value = 1.0 if start == 0 else eff[start - 1]["b"][route[0]]
            for layer in range(start, len(eff)):
                value = value * eff[layer]["W"][route[layer - start], route[layer - start + 1]]
            values.append(value)
    return jnp.stack(values)


# -- path-lifting ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
@pytest.mark.parametrize("bias", [True, False])
def test_diag_matches_brute_force_path_enumeration(parameterization, bias):
    model = _deep(bias=bias, widths=(3, 2), out_dim=2)
    params = model.init(jax.random.PRNGKey(0), 2)
    params = (dict(params[0], W=params[0]["W"].at[0, 1].set(0.0)),) + params[1:]  # an exact zero weight
    scales = pc.path_scales(model, params, parameterization)
    _, unravel = jax.flatten_util.ravel_pytree(params)
    flat = jax.flatten_util.ravel_pytree(params)[0]
    J = jax.jacfwd(lambda t: _enumerate_paths(unravel(t), scales))(flat)  # (paths, n)
    brute = jnp.sum(J**2, axis=0)
    g = jax.flatten_util.ravel_pytree(pc.path_gradient_diag(params, scales))[0]
    np.testing.assert_allclose(g, brute, rtol=1e-12, atol=1e-14)
    phi = _enumerate_paths(params, scales)
    np.testing.assert_allclose(pc.path_norm(params, scales, 1), jnp.sum(jnp.abs(phi)), rtol=1e-12)
    np.testing.assert_allclose(pc.path_norm(params, scales, 2), jnp.linalg.norm(phi), rtol=1e-12)


def test_ntk_scales_enter_g_squared():
    model = _deep()
    params = model.init(jax.random.PRNGKey(1), 3)
    scales = pc.path_scales(model, params, "ntk")
    g_raw = pc.path_gradient_diag(params, scales)
    g_eff = pc.path_gradient_diag(pc.effective_params(params, scales))
    for layer, (a, b) in enumerate(zip(g_raw, g_eff)):
        for k in a:
            np.testing.assert_allclose(a[k], scales[layer][k] ** 2 * b[k], rtol=1e-12)


# -- function and path-lifting preservation ---------------------------------------------------------------
@pytest.mark.parametrize("phi", ["relu", "leaky_relu", "abs"])
@pytest.mark.parametrize("method", ["pathcond", "enorm"])
def test_rescaled_network_is_the_same_function_float64(phi, method):
    model = _deep(phi=phi)
    params = _bad_start(model, jax.random.PRNGKey(2))
    x = jax.random.normal(jax.random.PRNGKey(3), (20, 3))
    new, scaling = getattr(pc, method)(params, model)
    assert max(float(jnp.max(jnp.abs(z))) for z in scaling.z) > 0.1  # it did rescale
    for s in (0.0, 0.5, 1.0, 1.7):  # sigma_s positively homogeneous along the whole homotopy path
        change = jnp.max(jnp.abs(model.apply(new, x, s) - model.apply(params, x, s)))
        assert change < 1e-12
    scales = pc.path_scales(model, params)
    np.testing.assert_allclose(_enumerate_paths(new, scales), _enumerate_paths(params, scales), rtol=1e-10,
                               atol=1e-13)


def test_rescaled_network_is_the_same_function_float32():
    model = _deep()
    params = jax.tree.map(lambda v: v.astype(jnp.float32), _bad_start(model, jax.random.PRNGKey(4)))
    x = jax.random.normal(jax.random.PRNGKey(5), (20, 3), jnp.float32)
    new, scaling = pc.pathcond(params, model)
    assert new[0]["W"].dtype == jnp.float32 and scaling.z[0].dtype == jnp.float32
    change = jnp.max(jnp.abs(model.apply(new, x) - model.apply(params, x)))
    assert change < 1e-5


def test_random_rescaling_changes_gradients_not_function():
    # The point of the method: same f, different Jacobian, so a different NTK and training speed.
    model = _deep(widths=(8, 8))
    params = model.init(jax.random.PRNGKey(6), 3)
    new = pc.rescale(params, pc.random_scaling(jax.random.PRNGKey(7), params))
    x = jax.random.normal(jax.random.PRNGKey(8), (6, 3))
    K0 = pc.ntk_conditioning(model, params, x)
    K1 = pc.ntk_conditioning(model, new, x)
    assert abs(K0["lambda_max"] / K1["lambda_max"] - 1) > 1e-3
    assert jnp.max(jnp.abs(model.apply(new, x) - model.apply(params, x))) < 1e-12
    # the one-compilation batch of kernels used by the experiment is the same kernel as ntkhom.kernels'
    from ntkhom.kernels import empirical_ntk
    from ntkhom.solvers.driver import stack

    batch = np.asarray(empirical_ntk_batch(model, stack([params, new]), x, s=[1.0, 0.4]))
    np.testing.assert_allclose(batch[0], empirical_ntk(model, params, x, s=1.0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(batch[1], empirical_ntk(model, new, x, s=0.4), rtol=1e-10, atol=1e-12)
    y = jax.nn.one_hot(jnp.arange(6) % 2, 2)
    view = pc.kernel_conditioning(batch[0], y)
    assert view["lambda_max"] == pytest.approx(K0["lambda_max"], rel=1e-10)
    assert view["condition"] == pytest.approx(view["lambda_max"] / view["lambda_min"], rel=1e-12)
    assert -1 <= view["alignment"] <= 1


# -- the optimisation ------------------------------------------------------------------------------------
def _objective_from_rescaling(params, scales, z):
    """F(z) computed independently of pathcond_objective: g of the rescaled network and -sum (B z)_i =
    2 sum_i log(theta'_i / theta_i), the ratio read off a rescaled all-ones network (zero weights allowed)."""
    new = pc.rescale(params, z)
    n = _flat(params).size
    g_new = _flat(pc.path_gradient_diag(new, scales))
    ratios = _flat(pc.rescale(jax.tree.map(jnp.ones_like, params), z))
    return n * jnp.log(jnp.sum(g_new)) + 2 * jnp.sum(jnp.log(ratios))


def test_objective_matches_independent_formula():
    model = _deep()
    params = model.init(jax.random.PRNGKey(9), 3)
    scales = pc.path_scales(model, params)
    g = pc.path_gradient_diag(params, scales)
    z = pc.random_scaling(jax.random.PRNGKey(10), params, 0.7)
    np.testing.assert_allclose(pc.pathcond_objective(g, z), _objective_from_rescaling(params, scales, z),
                               rtol=1e-12)


def test_each_coordinate_step_decreases_F_and_is_exact():
    model = _deep(widths=(4, 3))
    params = _bad_start(model, jax.random.PRNGKey(11))
    g = pc.path_gradient_diag(params, pc.path_scales(model, params))
    trace = []
    pc.pathcond_python(g, max_sweeps=3, tol=0.0, trace=trace)
    values = [float(pc.pathcond_objective(g, tuple(jnp.zeros(w) for w in (4, 3))))]
    grad_F = jax.grad(lambda z: pc.pathcond_objective(g, z))
    order = [(0, h) for h in range(4)] + [(1, h) for h in range(3)]
    for step, z in enumerate(trace):
        z = tuple(jnp.asarray(zl) for zl in z)
        values.append(float(pc.pathcond_objective(g, z)))
        layer, h = order[step % len(order)]
        assert abs(float(grad_F(z)[layer][h])) < 1e-9  # exact minimiser along the coordinate just updated
    diffs = np.diff(values)
    assert np.all(diffs <= 1e-12 * abs(values[0]))
    assert values[-1] < values[0] - 1.0


def test_jitted_pathcond_matches_python_loop_and_is_stationary():
    model = _deep()
    params = _bad_start(model, jax.random.PRNGKey(12))
    scales = pc.path_scales(model, params)
    g = pc.path_gradient_diag(params, scales)
    scaling = pc.pathcond_from_diag(g, max_sweeps=2000, tol=1e-13)
    z_python = pc.pathcond_python(g, max_sweeps=int(scaling.sweeps), tol=0.0)
    for a, b in zip(scaling.z, z_python):
        np.testing.assert_allclose(a, b, atol=1e-9)
    grad = jax.grad(lambda z: _objective_from_rescaling(params, scales, z))(scaling.z)
    assert max(float(jnp.max(jnp.abs(gl))) for gl in grad) < 1e-8
    # the reference stopping rule (<= 10 sweeps, sum |dz| < 1e-2) stops early but near the same optimum
    quick = pc.pathcond_from_diag(g)
    assert int(quick.sweeps) <= 10
    F = lambda z: float(pc.pathcond_objective(g, z))  # noqa: E731
    zero = tuple(jnp.zeros_like(z) for z in scaling.z)
    assert F(quick.z) - F(scaling.z) < 0.05 * (F(zero) - F(scaling.z))


def test_pathcond_is_vmappable_over_seeds():
    from ntkhom.solvers.driver import stack

    model = _deep()
    batch = stack([_bad_start(model, jax.random.PRNGKey(13 + i)) for i in range(2)])
    new_batch, _ = jax.vmap(lambda p: pc.pathcond(p, model))(batch)
    for i in range(2):
        single, _ = pc.pathcond(jax.tree.map(lambda v, i=i: v[i], batch), model)
        for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(new_batch)):
            np.testing.assert_allclose(a, b[i], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("method", ["pathcond", "enorm"])
def test_two_layer_equal_fan_in_and_out_is_l2_balance(bias, method):
    d = 3
    model = mlp((7,), bias=bias, out_dim=d + bias)  # |in(h)| = d + bias = |out(h)|
    params = _bad_start(model, jax.random.PRNGKey(14), d=d, spread=2.0)
    options = {"parameterization": "standard"} if method == "pathcond" else {}  # ENorm: stored coordinates
    new, scaling = getattr(pc, method)(params, model, **options)
    u, V = params[0]["W"], params[1]["W"]
    incoming = jnp.sum(u**2, axis=0) + (params[0]["b"] ** 2 if bias else 0.0)
    lambda4 = jnp.sum(V**2, axis=1) / incoming
    np.testing.assert_allclose(scaling.lambdas[0] ** 4, lambda4, rtol=1e-10)
    # balanced: every neuron's incoming and outgoing l2 norms are now equal
    np.testing.assert_allclose(jnp.sum(new[0]["W"] ** 2, axis=0) + (new[0]["b"] ** 2 if bias else 0.0),
                               jnp.sum(new[1]["W"] ** 2, axis=1), rtol=1e-10)


def test_pathcond_improves_F_over_enorm_and_none():
    # PathCond is the minimiser of F over the rescaling orbit, so ENorm's point can only be worse.
    model = _deep()
    params = _bad_start(model, jax.random.PRNGKey(15))
    g = pc.path_gradient_diag(params, pc.path_scales(model, params))
    _, s_pc = pc.pathcond(params, model, max_sweeps=500, tol=1e-12)
    _, s_en = pc.enorm(params, model, max_sweeps=500, tol=1e-12)
    zero = tuple(jnp.zeros_like(z) for z in s_pc.z)
    F = lambda z: float(pc.pathcond_objective(g, z))  # noqa: E731
    assert F(s_pc.z) < F(s_en.z) and F(s_pc.z) < F(zero)


# -- bad input -------------------------------------------------------------------------------------------
def test_refuses_activation_that_is_not_positively_homogeneous():
    model = _deep(phi="tanh")
    params = model.init(jax.random.PRNGKey(16), 3)
    with pytest.raises(ValueError, match="not positively homogeneous"):
        pc.pathcond(params, model)
    with pytest.raises(ValueError, match="not positively homogeneous"):
        pc.enorm(params, model)


def test_refuses_layer_without_neurons():
    model = two_layer(4, bias=True)
    params = model.init(jax.random.PRNGKey(17), 3)
    empty = ({"W": jnp.zeros((3, 0)), "b": jnp.zeros((0,))}, {"W": jnp.zeros((0, 1))})
    with pytest.raises(ValueError, match="no neurons"):
        pc.pathcond(empty, model)
    with pytest.raises(ValueError, match="no neurons"):
        pc.path_gradient_diag(empty)
    with pytest.raises(ValueError, match="at least one hidden layer"):
        pc.pathcond(params[1:], model)


@pytest.mark.parametrize("bad", [jnp.nan, jnp.inf])
def test_refuses_nonfinite_weights(bad):
    model = _deep()
    params = model.init(jax.random.PRNGKey(18), 3)
    broken = (params[0], dict(params[1], W=params[1]["W"].at[1, 2].set(bad))) + params[2:]
    with pytest.raises(ValueError, match="NaN or inf"):
        pc.pathcond(broken, model)
    with pytest.raises(ValueError, match="NaN or inf"):
        pc.enorm(broken, model)


def test_refuses_bad_options():
    model = _deep()
    params = model.init(jax.random.PRNGKey(19), 3)
    with pytest.raises(ValueError, match="parameterization"):
        pc.pathcond(params, model, parameterization="mup")
    with pytest.raises(ValueError, match="max_sweeps"):
        pc.pathcond(params, model, max_sweeps=0)
    with pytest.raises(ValueError, match="one array per hidden layer"):
        pc.rescale(params, (jnp.zeros(4),))
    with pytest.raises(ValueError, match="path-norm order"):
        pc.path_norm(params, p=0)


def test_homotopy_model_with_frozen_output_and_default_scales():
    # The HRTA two-layer setting (NTK parameterization, sqrt(d) first-layer scale): still exact.
    model = HomotopyMLP(widths=(6,), s=1.5, b_std=0.5)
    params = _bad_start(model, jax.random.PRNGKey(20), d=4)
    x = jax.random.normal(jax.random.PRNGKey(21), (9, 4))
    new, _ = pc.pathcond(params, model)
    assert jnp.max(jnp.abs(model.apply(new, x) - model.apply(params, x))) < 1e-12

# -- pruned and dead neurons -----------------------------------------------------------------------------
def _damaged(params, pruned=(), dead=()):
    """Neurons (layer, h) pruned (incoming weights and bias zero) or dead (outgoing weights zero)."""
    params = [dict(e) for e in params]
    for layer, h in pruned:
        params[layer]["W"] = params[layer]["W"].at[:, h].set(0.0)
        params[layer]["b"] = params[layer]["b"].at[h].set(0.0)
    for layer, h in dead:
        params[layer + 1]["W"] = params[layer + 1]["W"].at[h, :].set(0.0)
    return tuple(params)


@functools.partial(jax.jit, static_argnames="sizes")
def _F_and_grad(flat, g, sizes):
    return jax.value_and_grad(lambda f: pc.pathcond_objective(g, tuple(jnp.split(f, np.cumsum(sizes)[:-1]))))(flat)


def _F_flat(g, sizes):
    """F and its gradient on a flat float64 z (for scipy), through jax."""

    def fun(flat):
        value, grad = _F_and_grad(jnp.asarray(flat), g, tuple(sizes))
        return float(value), np.asarray(grad, np.float64)

    return fun


# 2-6-5-4-3 with hidden biases: A = |in| - |out| is 2 + 1 - 5 = -2 in hidden layer 0 and 6 + 1 - 4 = 3,
# 5 + 1 - 3 = 3 in layers 1 and 2. A pruned neuron (out_h = 0) has a finite minimiser where A > 0, a dead
# one (in_h = 0) where A < 0.
_DAMAGED = {"pruned": ((1, 2), (2, 0)), "dead": ((0, 4),)}


def test_pruned_neuron_in_a_layer_with_positive_A_is_moved_to_its_minimiser():
    model = _deep(widths=(6, 5, 4), out_dim=3)
    params = _damaged(model.init(jax.random.PRNGKey(30), 2), pruned=((1, 2),))
    scales = pc.path_scales(model, params, "standard")
    g = pc.path_gradient_diag(params, scales)
    scaling = pc.pathcond_from_diag(g, max_sweeps=5000, tol=1e-12)
    F = lambda z: float(_objective_from_rescaling(params, scales, z))  # noqa: E731

    def along(t):  # F with only the pruned neuron's coordinate moved
        return F(tuple(zl.at[2].set(t) if l == 1 else zl for l, zl in enumerate(scaling.z)))

    from scipy.optimize import minimize_scalar

    best = minimize_scalar(along, bracket=(-1.0, 1.0))
    assert np.isfinite(best.x)
    assert along(float(scaling.z[1][2])) <= best.fun + 1e-9 * abs(best.fun)
    assert abs(float(scaling.z[1][2]) - best.x) < 1e-3


def test_converged_F_is_no_higher_than_lbfgs_with_pruned_and_dead_neurons():
    from scipy.optimize import minimize

    model = _deep(widths=(6, 5, 4), out_dim=3)
    for seed in (31, 32):
        params = _damaged(model.init(jax.random.PRNGKey(seed), 2), **_DAMAGED)
        g = pc.path_gradient_diag(params, pc.path_scales(model, params, "standard"))
        scaling = pc.pathcond_from_diag(g, max_sweeps=5000, tol=1e-12)
        assert all(bool(jnp.all(jnp.isfinite(zl))) for zl in scaling.z)
        fun = _F_flat(g, (6, 5, 4))
        F_pathcond = fun(np.concatenate([np.asarray(zl) for zl in scaling.z]))[0]
        rng = np.random.default_rng(seed)
        optima = []
        for start in [np.zeros(15)] + [rng.normal(0.0, 2.0, 15) for _ in range(3)]:
            result = minimize(fun, start, jac=True, method="L-BFGS-B",
                              options={"ftol": 1e-16, "gtol": 1e-9, "maxiter": 5000})
            assert np.linalg.norm(result.jac) < 1e-4  # a stationary point: F is bounded below here
            optima.append(result.fun)
        assert F_pathcond <= min(optima) + 1e-9 * abs(min(optima))
        # the independent oracle (1-D root finding, no closed form) takes the same steps
        z_python = pc.pathcond_python(g, max_sweeps=int(scaling.sweeps), tol=0.0)
        for a, b in zip(scaling.z, z_python):
            np.testing.assert_allclose(a, b, atol=1e-8)


def test_monotone_directions_leave_z_finite_and_unchanged():
    # A pruned neuron where A < 0 (layer 0) and one both pruned and dead (layer 1): F decreases without bound
    # along their coordinates, so no finite minimiser exists; they stay at z = 0 and nothing becomes NaN.
    model = _deep(widths=(6, 5, 4), out_dim=3)
    params = _damaged(model.init(jax.random.PRNGKey(33), 2), pruned=((0, 1), (1, 3)), dead=((1, 3),))
    x = jax.random.normal(jax.random.PRNGKey(34), (7, 2))
    new, scaling = pc.pathcond(params, model, max_sweeps=50, tol=1e-12)
    assert all(bool(jnp.all(jnp.isfinite(v))) for v in jax.tree.leaves(new))
    assert float(scaling.z[0][1]) == 0.0 and float(scaling.z[1][3]) == 0.0
    assert jnp.max(jnp.abs(model.apply(new, x) - model.apply(params, x))) < 1e-12
    g = pc.path_gradient_diag(params, pc.path_scales(model, params))
    z_python = pc.pathcond_python(g, max_sweeps=int(scaling.sweeps), tol=0.0)
    assert z_python[0][1] == 0.0 and z_python[1][3] == 0.0
    for a, b in zip(scaling.z, z_python):
        np.testing.assert_allclose(a, b, atol=1e-8)
