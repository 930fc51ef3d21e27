"""TIAM on the layer-split penalty problem: zero inertia is plain AM, every block update satisfies its
majorization inequality, plain AM decreases the penalty objective, and bad input is refused."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntkhom.data import load
from ntkhom.solvers.tiam import (
    MAJORIZATION_SLACK,
    block_update,
    ipalm,
    plain_am,
    tiam,
    tiam_model,
)

jax.config.update("jax_enable_x64", True)


def _regression(n=40, d=3, seed=0, widths=(8,), k=1):
    kx, ky, kp = jax.random.split(jax.random.PRNGKey(seed), 3)
    x = jax.random.normal(kx, (n, d))
    y = jnp.sin(x @ jax.random.normal(ky, (d, k)))
    model = tiam_model(widths, phi="leaky_relu", out_dim=k)
    return model, x, y, model.init(kp, d)


def _run(solver, params, batch, iterations, p=None):
    state = solver.init(params, batch)
    if p is not None:  # the inertia weights are state: one compiled solver serves every p
        state = state._replace(p=jnp.asarray(p, state.p.dtype))
    step = jax.jit(solver.step)
    metrics = jax.jit(solver.metrics)
    history = []
    for _ in range(iterations):
        params, state = step(params, state, batch)
        history.append({key: float(v) for key, v in metrics(params, state, batch).items()}
                       | {"loss": float(solver.loss(params, state, batch))})
    return params, state, history


def test_zero_inertia_tiam_is_exactly_plain_am():
    model, x, y, params = _regression(widths=(6, 5))
    inertial = tiam(model, eps0=0.1, eps_decay=0.7)
    a_params, a_state, _ = _run(inertial, params, (x, y), 12, p=(0.0, 0.0, 0.0))
    b_params, b_state, _ = _run(plain_am(model, eps0=0.1, eps_decay=0.7), params, (x, y), 12)
    for a, b in zip(jax.tree.leaves((a_params, a_state.z, a_state.a)),
                    jax.tree.leaves((b_params, b_state.z, b_state.a)), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)
    # and any inertia moves it off that path
    c_params, _, _ = _run(inertial, params, (x, y), 12, p=(0.0, 0.0, 0.2))
    assert float(jnp.max(jnp.abs(c_params[0]["W"] - b_params[0]["W"]))) > 1e-6


@pytest.mark.parametrize("p", [(0.5, 0.2, 0.0), (0.1, 0.6, 0.3)])
def test_block_update_satisfies_the_majorization_inequality_with_a_tight_tau(p):
    key_a, key_b, key_u, key_v = jax.random.split(jax.random.PRNGKey(1), 4)
    A = jax.random.normal(key_a, (7, 5))
    b = jax.random.normal(key_b, (7,))

    def F(u):  # a quadratic of curvature A^T A plus a smooth non-quadratic term
        return 0.5 * jnp.sum((A @ u - b) ** 2) + jnp.sum(jnp.log(jnp.cosh(u)))

    def project(u):
        return jnp.clip(u, -0.5, 0.7)

    u, u_prev = project(jax.random.normal(key_u, (5,))), project(jax.random.normal(key_v, (5,)))
    u_next, u_plus, tau, gap = block_update(F, project, u, u_prev, jnp.asarray(1e-3), *p)
    # recompute the inequality independently at u^ = u + p2 (u - u_prev)
    u_hat = u + p[1] * (u - u_prev)
    g = jax.grad(F)(u_hat)
    bound = F(u_hat) + g @ (u_plus - u_hat) + 0.5 * tau * jnp.sum((u_plus - u_hat) ** 2)
    assert float(F(u_plus)) <= float(bound) + MAJORIZATION_SLACK * (1 + abs(float(F(u_hat))))
    assert float(gap) <= MAJORIZATION_SLACK
    # tau is the first doubling that works: half of it fails (the start 1e-3 is far below the curvature)
    half = tau / 2
    trial = project(u + p[0] * (u - u_prev) - g / half)
    half_bound = F(u_hat) + g @ (trial - u_hat) + 0.5 * half * jnp.sum((trial - u_hat) ** 2)
    assert float(F(trial)) > float(half_bound)
    expected_next = project(u_plus + p[2] * (u_plus - u))
    np.testing.assert_allclose(u_next, expected_next, atol=1e-14)


@pytest.mark.parametrize("loss", ["squared", "cross_entropy"])
def test_every_block_update_of_a_sweep_satisfies_its_majorization(loss):
    if loss == "squared":
        model, x, y, params = _regression(widths=(6, 5))
    else:
        data = load("wine", normalization="standardize", n=60)
        model = tiam_model((8,), out_dim=3)
        x, y, params = data.x, data.y, model.init(jax.random.PRNGKey(0), data.d)
    _, _, history = _run(tiam(model, loss=loss, p1=0.4, p2=0.4, p3=0.3), params, (x, y), 15)
    assert max(h["majorization_gap"] for h in history) <= MAJORIZATION_SLACK
    assert history[-1]["loss"] < 0.7 * history[0]["loss"]


def test_plain_am_never_increases_the_penalty_objective_at_fixed_eps():
    model, x, y, params = _regression(widths=(6, 5), seed=3)
    solver = plain_am(model, eps0=0.05, eps_min=0.05)
    state = solver.init(params, (x, y))
    start = float(solver.metrics(params, state, (x, y))["penalty_objective"])
    _, _, history = _run(solver, params, (x, y), 25)
    objective = np.array([start] + [h["penalty_objective"] for h in history])
    assert np.all(np.diff(objective) <= 1e-10 * objective[:-1])
    assert objective[-1] < 0.5 * objective[0]
    assert max(h["constraint_violation"] for h in history) <= 0.05 + 1e-12


def test_inertial_variants_train_the_network_and_keep_the_constraints():
    model, x, y, params = _regression(seed=4)
    solver = tiam(model)
    assert ipalm(model).init(params, (x, y)).p[2] == 0.0
    for p in ((0.3, 0.3, 0.2), (0.3, 0.3, 0.0)):  # TIAM's default and iPALM's
        _, state, history = _run(solver, params, (x, y), 30, p=p)
        assert history[-1]["loss"] < 0.3 * float(solver.loss(params, solver.init(params, (x, y)), (x, y)))
        assert history[-1]["constraint_violation"] <= float(state.eps) + 1e-12


def test_inertia_weights_live_in_the_state_and_vmap():
    model, x, y, params = _regression(seed=5)
    solver = tiam(model)
    grid = jnp.array([[0.0, 0.0, 0.0], [0.3, 0.3, 0.2]])
    states = jax.vmap(lambda p: solver.init(params, (x, y))._replace(p=p))(grid)
    batched, _ = jax.jit(jax.vmap(solver.step, in_axes=(None, 0, None)))(params, states, (x, y))
    step = jax.jit(solver.step)
    for i in range(2):
        single, _ = step(params, solver.init(params, (x, y))._replace(p=grid[i]), (x, y))
        np.testing.assert_allclose(single[0]["W"], batched[0]["W"][i], atol=1e-10)


def test_bad_input_raises_clear_errors():
    model = tiam_model((4,))
    x, y = np.ones((10, 3)), np.ones((10, 1))
    params = model.init(jax.random.PRNGKey(0), 3)
    with pytest.raises(ValueError, match="feature"):
        tiam(model).init(params, (np.ones((10, 0)), y))
    with pytest.raises(ValueError, match="at least 2 samples"):
        tiam(model).init(params, (np.ones((1, 3)), np.ones((1, 1))))
    with pytest.raises(ValueError, match="non-finite"):
        plain_am(model).init(params, (x, np.where(np.arange(10)[:, None] == 0, np.nan, 1.0)))
    with pytest.raises(ValueError, match="rows but the inputs have"):
        tiam(model).init(params, (x, np.ones((11, 1))))
    with pytest.raises(ValueError, match="unknown loss"):
        tiam(model, loss="hinge")
    with pytest.raises(ValueError, match="monotone"):
        tiam(tiam_model((4,), s=2.0, phi="relu"))
    with pytest.raises(ValueError, match="p3 must be in"):
        tiam(model, p3=1.5)
    with pytest.raises(ValueError, match="rho"):
        tiam(model, rho=0.0)
    with pytest.raises(ValueError, match="piecewise-linear"):
        tiam(tiam_model((4,), phi="tanh"))
