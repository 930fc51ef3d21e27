"""Gradient solvers on homotopy networks: the step is the hand-derived gradient step, only trained layers
move, optax optimizers match a plain optax loop, and a vmapped (seeds x s) grid equals separate runs."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ntkhom.activations import homotopy, homotopy_derivative
from ntkhom.data import sphere, teacher_targets
from ntkhom.losses import cross_entropy
from ntkhom.models import two_layer
from ntkhom.solvers import driver
from ntkhom.solvers.gradient import gradient_solver


@pytest.fixture(scope="module")
def data():
    key_x, key_y = jax.random.split(jax.random.PRNGKey(0))
    x = sphere(key_x, 10, 4)
    return x, teacher_targets(key_y, x)


def test_one_gd_step_is_the_hand_derived_gradient_step(data):
    x, y = data
    m, s, eta = 50, 0.7, 0.3
    model = two_layer(m, s=s)
    params = model.init(jax.random.PRNGKey(1), 4)
    solver = gradient_solver(model, x, y, learning_rate=eta)
    new_params, state = solver.step(params, solver.init(params))
    W, a = np.asarray(params[0]["W"]), np.asarray(params[1]["W"])
    z = np.asarray(x) @ W  # (n, m); w_r ~ N(0, I_d) scaling: first W_std = sqrt(d) over sqrt(fan_in = d)
    f = np.asarray(homotopy(z, s)) @ a / np.sqrt(m)
    r = f - np.asarray(y)
    # dL/dW_jr = sum_i r_i a_r sigma_s'(z_ir) x_ij / sqrt(m) for L = 1/2 sum_i r_i^2
    grad_W = np.asarray(x).T @ (r * a.T * np.asarray(homotopy_derivative(z, s))) / np.sqrt(m)
    np.testing.assert_allclose(new_params[0]["W"], W - eta * grad_W, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(new_params[1]["W"], a)  # the output layer is frozen (trained="hidden")
    assert int(state["step"]) == 1 and float(state["s"]) == s


def test_all_layers_move_when_all_are_trained(data):
    x, y = data
    model = two_layer(20, trained="all")
    params = model.init(jax.random.PRNGKey(2), 4)
    solver = gradient_solver(model, x, y, learning_rate=0.1)
    new_params, _ = solver.step(params, solver.init(params))
    assert not np.allclose(new_params[1]["W"], params[1]["W"])


def test_adam_equals_a_plain_optax_loop(data):
    x, y = data
    model = two_layer(30, s=1.5)
    params = model.init(jax.random.PRNGKey(3), 4)
    eta = 0.01
    result = driver.run(gradient_solver(model, x, y, learning_rate=eta, optimizer="adam"), params, steps=20,
                        record_every=20, progress=False)
    optimizer = optax.adam(eta)
    W = params[0]["W"]
    opt_state = optimizer.init(W)

    def loss(W):
        return 0.5 * jnp.sum((model.apply((({"W": W},) + params[1:]), x) - y) ** 2)

    for _ in range(20):
        updates, opt_state = optimizer.update(jax.grad(loss)(W), opt_state)
        W = optax.apply_updates(W, updates)
    np.testing.assert_allclose(result.params[0]["W"], W, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(result.final_loss, loss(W), rtol=1e-10)


def test_momentum_differs_from_gd_and_converges(data):
    x, y = data
    model = two_layer(64)
    params = model.init(jax.random.PRNGKey(4), 4)
    gd = driver.run(gradient_solver(model, x, y, learning_rate=0.05), params, steps=100, progress=False)
    heavy = driver.run(gradient_solver(model, x, y, learning_rate=0.05, optimizer="momentum"), params,
                       steps=100, progress=False)
    assert heavy.final_loss < gd.final_loss < gd.loss[0]


def test_vmapped_seed_by_s_grid_equals_separate_runs(data):
    x, y = data
    model = two_layer(40)
    solver = gradient_solver(model, x, y, learning_rate=0.1)
    configs = [(seed, s) for seed in (0, 1) for s in (0.5, 1.0, 1.5)]
    params = [model.init(jax.random.PRNGKey(seed), 4) for seed, _ in configs]
    states = [solver.init(p) | {"s": jnp.asarray(s)} for p, (_, s) in zip(params, configs)]
    batch = driver.run_batch(solver, driver.stack(params), driver.stack(states), steps=60, record_every=20,
                             progress=False)
    for i, (p, st) in enumerate(zip(params, states)):
        alone = driver.run(solver, p, st, steps=60, record_every=20, progress=False)
        np.testing.assert_allclose(batch.run(i).loss, alone.loss, rtol=1e-11)
        np.testing.assert_allclose(batch.run(i).params[0]["W"], alone.params[0]["W"], rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(batch.metrics["s"][:, 0], [s for _, s in configs])
    # different s really are different runs
    assert len({round(float(v), 8) for v in batch.loss[:, -1]}) == len(configs)


def test_cross_entropy_classification_learns(data):
    x, _ = data
    labels = (x[:, 0] > 0).astype(int)
    y = jax.nn.one_hot(labels, 2, dtype=x.dtype)
    model = two_layer(64, out_dim=2, trained="all")
    params = model.init(jax.random.PRNGKey(5), 4)
    solver = gradient_solver(model, x, y, learning_rate=1.0, loss="cross_entropy")
    result = driver.run(solver, params, steps=200, record_every=50, progress=False)
    assert result.loss[0] == pytest.approx(float(cross_entropy(model.apply(params, x), y)))
    assert result.final_loss < 0.5 * result.loss[0]
    assert result.metrics["accuracy"][-1] == 1.0


def test_bad_input_is_refused(data):
    x, y = data
    model = two_layer(8)
    with pytest.raises(ValueError, match="optimizer"):
        gradient_solver(model, x, y, learning_rate=0.1, optimizer="lbfgs-ish")
    with pytest.raises(ValueError, match="learning_rate"):
        gradient_solver(model, x, y, learning_rate=0.0)
    with pytest.raises(ValueError, match="loss"):
        gradient_solver(model, x, y, learning_rate=0.1, loss="hinge")
    with pytest.raises(ValueError, match="rows"):
        gradient_solver(model, x, y[:5], learning_rate=0.1)
    with pytest.raises(ValueError, match="non-finite"):
        gradient_solver(model, x.at[0, 0].set(jnp.nan), y, learning_rate=0.1)
    with pytest.raises(ValueError, match="out_dim"):
        gradient_solver(model, x, jnp.ones((10, 3)), learning_rate=0.1)
    with pytest.raises(ValueError, match="HomotopyMLP"):
        gradient_solver(lambda p, x: x, x, y, learning_rate=0.1)
