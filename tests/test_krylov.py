"""Krylov loss curves against the eigendecomposition formulas of ntkhom.theory."""

import jax
import numpy as np
import pytest

from ntkhom import krylov, models, operators, theory


@pytest.fixture(scope="module")
def problem():
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (150, 4))) * 1.2
    op = operators.infinite_ntk_operator(models.two_layer(1, s=0.8, trained="all"), x)
    K = np.asarray(op.matvec(np.eye(150)))
    r0 = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (150, 2)))
    return op, K, r0


def test_linearized_loss_equals_eigendecomposition(problem):
    op, K, r0 = problem
    eta = 1.9 / np.linalg.eigvalsh(K)[-1]  # near the stability limit: factors of both signs
    steps = np.array([0, 1, 3, 40, 700, 20000])
    curve = krylov.linearized_loss(op, r0, eta, steps)
    exact = theory.linearized_loss(K, r0, eta, steps)
    assert curve.converged
    np.testing.assert_allclose(curve.loss, exact, rtol=1e-8)
    assert np.all(np.abs(curve.loss - exact) <= np.maximum(curve.error, 1e-8 * exact))


def test_flow_loss_equals_eigendecomposition(problem):
    op, K, r0 = problem
    times = np.array([0.0, 0.01, 1.0, 50.0, 3000.0])
    curve = krylov.flow_loss(op, r0[:, 0], times)
    np.testing.assert_allclose(curve.loss, theory.flow_loss(K, r0[:, 0], times), rtol=1e-8)


def test_bad_arguments(problem):
    op, _, r0 = problem
    with pytest.raises(ValueError, match="learning_rate"):
        krylov.linearized_loss(op, r0, -1.0, [1])
    with pytest.raises(ValueError, match="r0 must have shape"):
        krylov.flow_loss(op, r0[:10], [1.0])
    with pytest.raises(ValueError, match="times must be"):
        krylov.flow_loss(op, r0, [-1.0])
    with pytest.raises(ValueError, match="whole numbers of gradient steps"):
        krylov.linearized_loss(op, r0, 0.1, [0, 2.5])
    with pytest.raises(ValueError, match="tol must be"):
        krylov.linearized_loss(op, r0, 0.1, [1], tol=-1e-8)
    with pytest.raises(ValueError, match="max_depth must be an integer >= 1"):
        krylov.flow_loss(op, r0, [1.0], max_depth=0)


def test_a_diverging_step_is_announced_and_its_curve_still_exact():
    # K = Q diag(lam) Q^T with a known spectrum, off the unit scale; eta above 2 / lambda_max = 0.4.
    rng = np.random.default_rng(3)
    lam = np.array([5.0, 2.0, 0.7, 0.3, 0.05])
    Q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    K = (Q * lam) @ Q.T
    r0 = rng.normal(size=5)
    eta, steps = 0.45, np.array([0, 1, 7, 30])
    with pytest.warns(UserWarning, match="above 2 / lambda_max .* diverges"):
        curve = krylov.linearized_loss(K, r0, eta, steps)
    exact = [0.5 * np.sum((Q.T @ r0) ** 2 * (1 - eta * lam) ** (2 * t)) for t in steps]
    np.testing.assert_allclose(curve.loss, exact, rtol=1e-10)
    assert curve.loss[-1] > 1e3 * curve.loss[0]
    with pytest.warns(UserWarning, match=r"inf: beyond float64"):
        far = krylov.linearized_loss(K, r0, eta, [1, 10**6])
    assert np.isinf(far.loss[1]) and np.isinf(far.error[1]) and np.isfinite(far.loss[0])
    # below the limit: no warning
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        krylov.linearized_loss(K, r0, 0.39, steps)
