"""Gradient solvers on homotopy networks: the step is the hand-derived gradient step, the closed-form
gradient equals autodiff, only trained layers move, optax optimizers behave exactly as in optax, minibatch
SGD is unbiased, a training run is differentiable in s, equal solvers compile once, and a vmapped
(seeds x s) grid equals separate runs."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ntkhom.activations import homotopy, homotopy_derivative
from ntkhom.data import sphere, teacher_targets
from ntkhom.losses import cross_entropy
from ntkhom.models import HomotopyMLP, two_layer
from ntkhom.solvers import driver
from ntkhom.solvers.gradient import gradient_solver, two_layer_gradient


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
    for gradient in ("analytic", "autodiff"):
        solver = gradient_solver(model, learning_rate=eta, gradient=gradient)
        new_params, state = solver.step(params, solver.init(params, (x, y)), (x, y))
        W, a = np.asarray(params[0]["W"]), np.asarray(params[1]["W"])
        z = np.asarray(x) @ W  # (n, m); w_r ~ N(0, I_d) scaling: first W_std = sqrt(d) over sqrt(fan_in = d)
        f = np.asarray(homotopy(z, s)) @ a / np.sqrt(m)
        r = f - np.asarray(y)
        # dL/dW_jr = sum_i r_i a_r sigma_s'(z_ir) x_ij / sqrt(m) for L = 1/2 sum_i r_i^2
        grad_W = np.asarray(x).T @ (r * a.T * np.asarray(homotopy_derivative(z, s))) / np.sqrt(m)
        np.testing.assert_allclose(new_params[0]["W"], W - eta * grad_W, rtol=1e-12, atol=1e-14)
        np.testing.assert_array_equal(new_params[1]["W"], a)  # the output layer is frozen (trained="hidden")
        assert int(state.step) == 1 and float(state.s) == s and float(state.learning_rate) == eta


@pytest.mark.parametrize("phi", ["relu", "leaky_relu", "erf"])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_closed_form_gradient_equals_autodiff_with_biases_and_dead_neurons(phi, reduction):
    n, d, m, k = 9, 3, 17, 2
    key_x, key_y, key_p = jax.random.split(jax.random.PRNGKey(11), 3)
    x = 2.5 * jax.random.normal(key_x, (n, d))  # off the sphere
    y = jax.random.normal(key_y, (n, k))
    model = HomotopyMLP(widths=(m,), s=1.3, phi=phi, out_dim=k, b_std=0.7, out_b_std=0.4, trained="all")
    params = model.init(key_p, d)
    # five dead neurons: their pre-activations are negative on every input
    dead = jnp.arange(5)
    params = ({"W": params[0]["W"].at[:, dead].set(0.0), "b": params[0]["b"].at[dead].set(-3.0)}, params[1])
    z = model.layer_scales(d)[0][0] / np.sqrt(d) * (x @ params[0]["W"]) + 0.7 * params[0]["b"]
    assert np.all(np.asarray(z[:, :5]) < 0)
    scale = 1.0 if reduction == "sum" else 1.0 / n
    closed_form = jax.jit(lambda s: two_layer_gradient(model, params, x, y, s, reduction))
    autodiff = jax.jit(jax.grad(lambda p, s: 0.5 * scale * jnp.sum((model.apply(p, x, s) - y) ** 2)))
    for s in (0.0, 1.0, 1.7):
        closed, auto = closed_form(s), autodiff(params, s)
        for got, want in zip(jax.tree.leaves(closed), jax.tree.leaves(auto), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    # trained="hidden": the gradient of the hidden layer only
    hidden_only = HomotopyMLP(widths=(m,), s=1.3, phi=phi, out_dim=k, b_std=0.7, out_b_std=0.4)
    assert len(two_layer_gradient(hidden_only, params, x, y, 1.0, reduction)) == 1


def test_grad_of_a_50_step_training_run_in_s_matches_finite_differences(data):
    x, y = data
    model = two_layer(24)
    params = model.init(jax.random.PRNGKey(6), 4)
    solver = gradient_solver(model, learning_rate=0.2)

    def final_loss(s):
        state = solver.init(params, (x, y))._replace(s=s)
        p, state = jax.lax.fori_loop(0, 50, lambda _, ps: solver.step(*ps, (x, y)), (params, state))
        return solver.loss(p, state, (x, y))

    s0, h = 0.8, 1e-5
    derivative = jax.grad(final_loss)(jnp.asarray(s0))
    central = (final_loss(jnp.asarray(s0 + h)) - final_loss(jnp.asarray(s0 - h))) / (2 * h)
    assert float(derivative) != 0.0
    np.testing.assert_allclose(derivative, central, rtol=1e-6)


def test_all_layers_move_when_all_are_trained(data):
    x, y = data
    model = two_layer(20, trained="all")
    params = model.init(jax.random.PRNGKey(2), 4)
    solver = gradient_solver(model, learning_rate=0.1)
    new_params, _ = solver.step(params, solver.init(params, (x, y)), (x, y))
    assert not np.allclose(new_params[1]["W"], params[1]["W"])


def _optax_loop(model, params, x, y, optimizer, steps):
    W = params[0]["W"]
    opt_state = optimizer.init(W)

    def loss(W):
        return 0.5 * jnp.sum((model.apply((({"W": W},) + params[1:]), x) - y) ** 2)

    for _ in range(steps):
        updates, opt_state = optimizer.update(jax.grad(loss)(W), opt_state)
        W = optax.apply_updates(W, updates)
    return W, loss(W)


def test_adam_by_name_and_an_optax_optimizer_with_its_own_rate_equal_a_plain_optax_loop(data):
    x, y = data
    model = two_layer(30, s=1.5)
    params = model.init(jax.random.PRNGKey(3), 4)
    W, loss = _optax_loop(model, params, x, y, optax.adam(0.01), 20)
    for solver in (gradient_solver(model, learning_rate=0.01, optimizer="adam"),
                   gradient_solver(model, optimizer=optax.adam(0.01))):
        result = driver.run(solver, params, (x, y), steps=20, record_every=20)
        np.testing.assert_allclose(result.params[0]["W"], W, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(result.final_loss, loss, rtol=1e-10)
    with pytest.raises(ValueError, match="carries its own"):
        gradient_solver(model, optimizer=optax.adam(0.01), learning_rate=1.0)


def test_the_state_learning_rate_drives_the_step(data):
    x, y = data
    model = two_layer(30)
    params = model.init(jax.random.PRNGKey(3), 4)
    solver = gradient_solver(model, learning_rate=0.01, optimizer="momentum")
    state = solver.init(params, (x, y))._replace(learning_rate=jnp.asarray(0.03))
    result = driver.run(solver, params, (x, y), state, steps=15, record_every=15)
    W, _ = _optax_loop(model, params, x, y, optax.sgd(0.03, momentum=0.9), 15)
    np.testing.assert_allclose(result.params[0]["W"], W, rtol=1e-10, atol=1e-12)


def test_momentum_differs_from_gd_and_converges(data):
    x, y = data
    model = two_layer(64)
    params = model.init(jax.random.PRNGKey(4), 4)
    gd = driver.run(gradient_solver(model, learning_rate=0.05), params, (x, y), steps=100)
    heavy = driver.run(gradient_solver(model, learning_rate=0.05, optimizer="momentum"), params, (x, y), steps=100)
    assert heavy.final_loss < gd.final_loss < gd.loss[0]


def test_minibatch_sgd_with_all_rows_is_gd_and_its_mean_update_is_the_full_gradient_step(data):
    x, y = data
    n = x.shape[0]
    model = two_layer(16)
    params = model.init(jax.random.PRNGKey(7), 4)
    solver = gradient_solver(model, learning_rate=0.5, reduction="mean")
    full = driver.run(solver, params, (x, y), steps=30, record_every=10)
    all_rows = driver.run(solver, params, (x, y), steps=30, record_every=10, batch_size=n)
    np.testing.assert_array_equal(all_rows.params[0]["W"], full.params[0]["W"])
    np.testing.assert_array_equal(all_rows.loss, full.loss)
    # one step from 4000 keys with b = 3 of n = 10: the mean update estimates the full-batch update; the
    # bound is 5 standard errors of the mean from the sample variance, entry by entry
    b, draws = 3, 4000
    state = solver.init(params, (x, y))
    gd_step = jax.jit(solver.step)(params, state, (x, y))[0][0]["W"] - params[0]["W"]

    def one_update(key):
        batch = driver.sample_rows(key, (x, y), b)
        return solver.step(params, state, batch)[0][0]["W"] - params[0]["W"]

    updates = jax.jit(jax.vmap(one_update))(jax.random.split(jax.random.PRNGKey(8), draws))
    mean, std = jnp.mean(updates, axis=0), jnp.std(updates, axis=0, ddof=1)
    assert float(jnp.max(std)) > 0  # the minibatch updates really vary
    assert np.all(np.abs(np.asarray(mean - gd_step)) <= 5 * np.asarray(std) / np.sqrt(draws) + 1e-15)
    # the bound is tight enough to see a wrong scaling: b / n of the update (a summed loss) fails it
    assert not np.all(np.abs(np.asarray(mean * b / n - gd_step)) <= 5 * np.asarray(std) / np.sqrt(draws))


def test_equal_solvers_built_ten_times_compile_once(data):
    x, y = data
    model = two_layer(12)
    params = model.init(jax.random.PRNGKey(9), 4)
    compiled = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiled.append(event)

    # new data of the same shape each time: an argument, not a constant of the compiled loop
    datasets = [(x + 0.01 * seed, y) for seed in range(10)]
    driver.run(gradient_solver(model, learning_rate=0.1), params, (x, y), steps=20, record_every=10)  # warm up
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        for batch in datasets:
            solver = gradient_solver(model, learning_rate=0.1)
            driver.run(solver, params, batch, steps=20, record_every=10)
        assert compiled == []
        driver.run(gradient_solver(model, learning_rate=0.1, optimizer="adam"), params, (x, y), steps=20,
                   record_every=10)
        assert len(compiled) > 0  # the listener sees compilations: a new solver does compile
    finally:
        jax.monitoring.clear_event_listeners()


def test_vmapped_seed_by_s_grid_equals_separate_runs(data):
    x, y = data
    model = two_layer(40)
    solver = gradient_solver(model, learning_rate=0.1)
    configs = [(seed, s) for seed in (0, 1) for s in (0.5, 1.0, 1.5)]
    params = [model.init(jax.random.PRNGKey(seed), 4) for seed, _ in configs]
    states = [solver.init(p, (x, y))._replace(s=jnp.asarray(s)) for p, (_, s) in zip(params, configs)]
    batch = driver.run_batch(solver, driver.stack(params), (x, y), driver.stack(states), steps=60,
                             record_every=20)
    for i, (p, st) in enumerate(zip(params, states)):
        alone = driver.run(solver, p, (x, y), st, steps=60, record_every=20)
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
    solver = gradient_solver(model, learning_rate=1.0, loss="cross_entropy")
    assert solver.gradient == "autodiff"
    result = driver.run(solver, params, (x, y), steps=200, record_every=50)
    assert result.loss[0] == pytest.approx(float(cross_entropy(model.apply(params, x), y)))
    assert result.final_loss < 0.5 * result.loss[0]
    assert result.metrics["accuracy"][-1] == 1.0
    # soft labels are class probabilities too; regression-like targets and a single class are refused
    solver.init(params, (x, 0.9 * y + 0.05))
    with pytest.raises(ValueError, match="row 0 sums to"):
        solver.init(params, (x, 2.0 * y))
    with pytest.raises(ValueError, match="entries >= 0"):
        solver.init(params, (x, y.at[3].set(jnp.array([1.5, -0.5]))))
    single = two_layer(8, out_dim=1, trained="all")
    with pytest.raises(ValueError, match="at least 2 classes"):
        gradient_solver(single, learning_rate=1.0, loss="cross_entropy").init(
            single.init(jax.random.PRNGKey(5), 4), (x, jnp.ones((x.shape[0], 1), x.dtype)))


def test_bad_input_is_refused(data):
    x, y = data
    model = two_layer(8)
    params = model.init(jax.random.PRNGKey(0), 4)
    with pytest.raises(ValueError, match="optimizer"):
        gradient_solver(model, learning_rate=0.1, optimizer="lbfgs-ish")
    with pytest.raises(ValueError, match="batch_size"):
        gradient_solver(model, learning_rate=0.1, optimizer="sgd")
    with pytest.raises(ValueError, match="learning_rate"):
        gradient_solver(model, learning_rate=0.0)
    with pytest.raises(ValueError, match="learning_rate"):
        gradient_solver(model)
    with pytest.raises(ValueError, match="loss"):
        gradient_solver(model, learning_rate=0.1, loss="hinge")
    with pytest.raises(ValueError, match="analytic"):
        gradient_solver(model, learning_rate=0.1, loss="cross_entropy", gradient="analytic")
    solver = gradient_solver(model, learning_rate=0.1)
    with pytest.raises(ValueError, match="same n"):
        solver.init(params, (x, y[:5]))
    with pytest.raises(ValueError, match="non-finite"):
        solver.init(params, (x.at[0, 0].set(jnp.nan), y))
    with pytest.raises(ValueError, match="out_dim"):
        solver.init(params, (x, jnp.ones((10, 3))))
    with pytest.raises(ValueError, match="give s="):
        gradient_solver(lambda p, x, s: x, learning_rate=0.1)
    with pytest.raises(ValueError, match="no homotopy parameter"):
        gradient_solver(lambda p, x: x, learning_rate=0.1, s=0.5)
    with pytest.raises(ValueError, match="HomotopyMLP"):
        gradient_solver(lambda p, x: x, learning_rate=0.1, gradient="analytic")


def test_any_network_trains_like_the_same_homotopy_mlp(data):
    """The same two-layer network written as a plain function f(params, x, s), trained with a predicate
    that freezes the output layer, follows the HomotopyMLP run (closed-form gradient) to rounding."""
    x, y = data
    model = two_layer(24, s=0.6)
    params = model.init(jax.random.PRNGKey(12), 4)

    def f(p, x, s):
        z = x @ p[0]["W"]  # first-layer scale sqrt(d) / sqrt(d) = 1
        return (z + s * (jnp.maximum(z, 0) - z)) @ p[1]["W"] / jnp.sqrt(24.0)

    hidden_only = lambda path: path[0].idx == 0  # noqa: E731
    ours = driver.run(gradient_solver(model, learning_rate=0.1, optimizer="momentum"), params, (x, y), steps=40)
    theirs_solver = gradient_solver(f, learning_rate=0.1, optimizer="momentum", s=0.6, trained=hidden_only)
    assert theirs_solver.gradient == "autodiff"
    theirs = driver.run(theirs_solver, params, (x, y), steps=40)
    np.testing.assert_allclose(theirs.loss, ours.loss, rtol=1e-10)
    np.testing.assert_allclose(theirs.params[0]["W"], ours.params[0]["W"], rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(theirs.params[1]["W"], params[1]["W"])
    # a pytree of bools works as well and hashes by value
    mask = ({"W": True}, {"W": False})
    assert gradient_solver(f, learning_rate=0.1, s=0.6, trained=mask) == gradient_solver(
        f, learning_rate=0.1, s=0.6, trained=({"W": True}, {"W": False}))


def test_one_compiled_loop_trains_on_several_datasets(data):
    model = two_layer(16)
    params = model.init(jax.random.PRNGKey(13), 4)
    solver = gradient_solver(model, learning_rate=0.2)
    datasets = []
    for seed in (20, 21, 22):
        key_x, key_y = jax.random.split(jax.random.PRNGKey(seed))
        x = sphere(key_x, 10, 4)
        datasets.append((x, teacher_targets(key_y, x)))
    batch = driver.run_batch(solver, driver.stack([params] * 3), driver.stack(datasets), data_axis=0, steps=30,
                             record_every=10)
    for i, dataset in enumerate(datasets):
        alone = driver.run(solver, params, dataset, steps=30, record_every=10)
        np.testing.assert_allclose(batch.run(i).loss, alone.loss, rtol=1e-11)
    # a plain jax.vmap of the pure step over the datasets gives the same first step
    state = solver.init(params, datasets[0])
    stepped = jax.vmap(solver.step, in_axes=(None, None, 0))(params, state, driver.stack(datasets))
    single = solver.step(params, state, datasets[2])
    np.testing.assert_allclose(stepped[0][0]["W"][2], single[0][0]["W"], rtol=1e-12)


def test_params_as_a_list_of_layers_train_as_the_tuple_does(data):
    x, y = data
    model = two_layer(16)
    params = model.init(jax.random.PRNGKey(3), 4)
    solver = gradient_solver(model, learning_rate=0.5)
    assert solver.gradient == "analytic"  # the closed form builds its own container of layers
    as_tuple = driver.run(solver, params, (x, y), steps=20, record_every=10)
    as_list = driver.run(solver, list(params), (x, y), steps=20, record_every=10)
    assert isinstance(as_list.params, list)
    np.testing.assert_allclose(as_list.loss, as_tuple.loss, rtol=1e-12)
    np.testing.assert_allclose(as_list.params[0]["W"], as_tuple.params[0]["W"], rtol=1e-12)
