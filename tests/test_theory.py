"""Kernel predictions against independent computations and against measured gradient descent."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntkhom import theory
from ntkhom.data import sphere, teacher_targets
from ntkhom.models import two_layer
from ntkhom.nt import predict
from ntkhom.solvers import driver
from ntkhom.solvers.gradient import gradient_solver


def random_psd(seed, n=7, rank=None):
    B = np.random.default_rng(seed).normal(size=(n, rank or n))
    return B @ B.T / n


def test_linearized_loss_equals_explicit_iteration():
    K = random_psd(0)
    r0 = np.random.default_rng(1).normal(size=(7, 2))
    eta = 1.5 / np.linalg.eigvalsh(K).max()  # past 1 / lambda_max: some modes oscillate in sign
    r, expected = r0.copy(), []
    for _ in range(40):
        expected.append(0.5 * np.sum(r**2))
        r = r - eta * K @ r
    np.testing.assert_allclose(theory.linearized_loss(K, r0, eta, np.arange(40)), expected, rtol=1e-10)
    residuals = theory.linearized_residuals(K, r0, eta, [0, 39])
    np.testing.assert_allclose(residuals[0], r0, atol=1e-12)
    np.testing.assert_allclose(0.5 * np.sum(residuals[1] ** 2), expected[-1], rtol=1e-10)


def test_flow_loss_equals_neural_tangents_predict():
    K = random_psd(2)
    y = np.random.default_rng(3).normal(size=(7, 1))
    f0 = np.zeros_like(y)
    times = np.array([0.0, 0.3, 2.0, 10.0])
    ours = theory.flow_loss(K, f0 - y, times)
    # neural-tangents uses the mean loss 1/(2 n k) sum: its time unit is (n k) times ours
    predict_fn = predict.gradient_descent_mse(jnp.asarray(K), jnp.asarray(y), learning_rate=1.0)
    theirs = [0.5 * float(np.sum((np.asarray(predict_fn(t * y.size, f0)) - y) ** 2)) for t in times]
    np.testing.assert_allclose(ours, theirs, rtol=1e-8)


def test_bounds_and_rates_on_a_known_spectrum():
    eigenvalues = np.array([0.5, 1.0, 3.0])
    K = np.diag(eigenvalues)
    eta = 0.4
    assert theory.step_size_limit(K) == pytest.approx(2 / 3)
    assert theory.predicted_rate(K, eta) == pytest.approx(max((1 - eta * eigenvalues) ** 2))
    # a residual with no weight on the slowest direction converges at the next rate
    assert theory.predicted_rate(K, eta, r0=[0.0, 1.0, 1.0]) == pytest.approx((1 - eta * 1.0) ** 2)
    steps = np.arange(50)
    loss = theory.linearized_loss(K, np.ones(3), eta, steps)
    assert np.all(loss <= theory.gd_bound(0.5, eta, steps, loss[0]) * (1 + 1e-12))
    fit = theory.fit_linear_rate(steps, loss, start=20)
    assert fit.factor == pytest.approx((1 - eta * 0.5) ** 2, rel=1e-3) and fit.r2 > 0.999
    s, bound = theory.stagewise_bound([(0.5, eta, 10), (1.0, eta, 5)], 2.0)
    assert len(s) == 16 and bound[10] == pytest.approx(2.0 * 0.9**10)
    assert bound[15] == pytest.approx(2.0 * 0.9**10 * 0.8**5)


def _wide_gd(width, seeds, x, y, eta, steps):
    model = two_layer(width, s=1.0)
    solver = gradient_solver(model, learning_rate=eta)
    deviations = []
    for seed in seeds:
        params = model.init(jax.random.PRNGKey(seed), x.shape[1])
        result = driver.run(solver, params, (x, y), steps=steps, record_every=5)
        K = theory.network_kernel(model, params, x)
        r0 = np.asarray(model.apply(params, x)) - np.asarray(y)
        predicted = theory.linearized_loss(K, r0, eta, result.steps)
        deviations.append(theory.relative_deviation(result.loss, predicted))
    return float(np.mean(deviations))


def test_wide_gd_follows_the_linearized_prediction_better_as_width_grows():
    key_x, key_y = jax.random.split(jax.random.PRNGKey(10))
    x = sphere(key_x, 16, 4)
    y = teacher_targets(key_y, x)
    eta, steps = 0.15, 200
    narrow = _wide_gd(64, range(3), x, y, eta, steps)
    wide = _wide_gd(2048, range(3), x, y, eta, steps)
    # the deviation shrinks like m^(-1/2): a 32x wider network should be several times closer
    assert wide < narrow / 3, (narrow, wide)
    assert wide < 0.02


def test_fitted_rate_of_the_linear_network_equals_its_gram_rate():
    # s = 0: f(x) = m^(-1/2) sum_r a_r w_r . x is linear in the trained W and K = G = X X^T exactly
    # (a_r^2 = 1), so GD is exactly linear and the loss rate is (1 - eta lambda_min(G))^2 (n < d: G full rank)
    key_x, key_y, key_p = jax.random.split(jax.random.PRNGKey(4), 3)
    x = sphere(key_x, 6, 10)
    y = jax.random.normal(key_y, (6, 1))
    G = np.asarray(x @ x.T)
    lam = np.linalg.eigvalsh(G)
    eta = 1.0 / lam[-1]
    model = two_layer(300, s=0.0)
    result = driver.run(gradient_solver(model, learning_rate=eta), model.init(key_p, 10), (x, y), steps=100,
                        record_every=2)
    # a window where the slowest mode dominates and the loss (~1e-10 L0) is far above rounding (~1e-32)
    fit = theory.fit_linear_rate(result.steps, result.loss, start=50)
    assert fit.factor == pytest.approx((1 - eta * lam[0]) ** 2, rel=1e-6)
    K = theory.network_kernel(model, model.init(key_p, 10), x)
    np.testing.assert_allclose(np.asarray(K), G, rtol=1e-10, atol=1e-12)


def test_step_size_limit_separates_convergence_from_a_recorded_divergence():
    key_x, key_y, key_p = jax.random.split(jax.random.PRNGKey(5), 3)
    x = sphere(key_x, 6, 10)
    y = jax.random.normal(key_y, (6, 1))
    model = two_layer(100, s=0.0)
    params = model.init(key_p, 10)
    limit = theory.step_size_limit(theory.network_kernel(model, params, x))
    stable = driver.run(gradient_solver(model, learning_rate=0.95 * limit), params, (x, y), steps=400)
    unstable = driver.run(gradient_solver(model, learning_rate=1.05 * limit), params, (x, y), steps=4000,
                          divergence_factor=1e3)
    assert stable.stop_reason == "steps" and stable.final_loss < 1e-3 * stable.loss[0]
    assert unstable.stop_reason == "diverged" and np.all(np.isfinite(unstable.loss))


def test_bad_input_is_refused():
    K = random_psd(0, n=3)
    with pytest.raises(ValueError, match="residual"):
        theory.linearized_loss(K, np.ones(4), 0.1, [0, 1])
    with pytest.raises(ValueError, match="learning_rate"):
        theory.linearized_loss(K, np.ones(3), -0.1, [0, 1])
    with pytest.raises(ValueError, match="steps"):
        theory.linearized_loss(K, np.ones(3), 0.1, [-1])
    with pytest.raises(ValueError, match="whole numbers of gradient steps"):
        theory.linearized_residuals(K, np.ones(3), 0.1, [1, 2.5])
    with pytest.raises(ValueError, match="square"):
        theory.linearized_loss(np.ones((3, 2)), np.ones(3), 0.1, [0])
    with pytest.raises(ValueError, match="symmetric"):
        theory.predicted_rate(np.triu(np.ones((3, 3))), 0.1)
    with pytest.raises(ValueError, match="positive"):
        theory.fit_linear_rate([0, 1, 2], [1.0, 0.0, 0.5])
    with pytest.raises(ValueError, match="3 records"):
        theory.fit_linear_rate([0, 1], [1.0, 0.5])
    with pytest.raises(ValueError, match="lambda_0"):
        theory.gd_bound(-1.0, 0.1, [0], 1.0)
    with pytest.raises(ValueError, match="shape"):
        theory.relative_deviation([1.0, 2.0], [1.0])


def test_predictions_under_jit_equal_the_float64_host_path():
    K = random_psd(4, n=6)
    r0 = np.random.default_rng(5).normal(size=(6, 2))
    eta = 1.2 / np.linalg.eigvalsh(K).max()
    steps = np.arange(0, 30, 3.0)
    calls = {
        "linearized_loss": lambda K, r: theory.linearized_loss(K, r, eta, steps),
        "linearized_residuals": lambda K, r: theory.linearized_residuals(K, r, eta, steps),
        "flow_loss": lambda K, r: theory.flow_loss(K, r, steps),
        "predicted_rate": lambda K, r: theory.predicted_rate(K, eta, r),
        "step_size_limit": lambda K, r: theory.step_size_limit(K),
        "gd_bound": lambda K, r: theory.gd_bound(K[0, 0], eta, steps, r[0, 0] ** 2),
        "flow_bound": lambda K, r: theory.flow_bound(K[0, 0], steps, r[0, 0] ** 2),
    }
    for name, call in calls.items():
        np.testing.assert_allclose(jax.jit(call)(K, r0), call(K, r0), rtol=1e-10, err_msg=name)


def test_grad_of_the_predicted_loss_in_s_matches_central_differences():
    x = sphere(jax.random.PRNGKey(6), 5, 3) * jnp.array([[0.5], [1.0], [2.0], [1.5], [0.8]])
    model = two_layer(16, 1.0)
    params = model.init(jax.random.PRNGKey(7), 3)
    r0 = np.random.default_rng(8).normal(size=5)

    def final_loss(s):
        return theory.linearized_loss(theory.network_kernel(model, params, x, s=s), r0, 0.05, [25.0])[0]

    s, h = 1.2, 1e-5
    np.testing.assert_allclose(jax.grad(final_loss)(s), (final_loss(s + h) - final_loss(s - h)) / (2 * h), rtol=1e-6)


def test_network_kernel_accepts_a_users_function():
    x = sphere(jax.random.PRNGKey(9), 4, 3)
    model = two_layer(8, 0.6, trained="all")
    params = model.init(jax.random.PRNGKey(10), 3)

    def f(p, x, s):
        return model.apply(p, x, s)

    np.testing.assert_allclose(
        theory.network_kernel(f, params, x, s=0.6), theory.network_kernel(model, params, x), rtol=1e-10
    )
