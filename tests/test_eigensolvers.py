"""Iterative extreme eigenvalues against dense eigvalsh: equal where resolved, flagged where not, and the
certificates bracket the dense values. Block Lanczos is the default; LOBPCG runs where a preconditioner is
asked for."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntkhom import eigensolvers, models, operators, spectrum

N, D = 2000, 5


def _sphere(n, d, seed=0):
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(seed), (n, d)))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _dense(op):
    return np.asarray(op.matvec(jnp.eye(op.n)))


def _check(result, dense_values):
    """Resolved values equal the dense ones to 1e-8 relative (plus sqrt(n) eps lambda_max = floor / sqrt(n),
    the accuracy of dense eigvalsh itself, which matters for values a few times the floor); every certificate
    brackets its dense value; unresolved ones lie at the floor."""
    n = result.vectors.shape[0]
    for found, exact in zip(result.eigenvalues, dense_values):
        assert abs(found.value - exact) <= found.bound, (found, exact)
        if found.resolved:
            assert abs(found.value - exact) <= 1e-8 * abs(exact) + found.floor / np.sqrt(n), (found, exact)
        else:
            assert exact <= found.floor + 2 * found.bound, (found, exact)


@pytest.fixture(scope="module")
def infinite():
    op = operators.infinite_ntk_operator(models.two_layer(1, s=1.0), _sphere(N, D))
    return op, np.linalg.eigvalsh(_dense(op))


def test_largest_and_lambda_max(infinite):
    op, exact = infinite
    result = eigensolvers.largest(op, 5)
    assert result.converged
    _check(result, exact[-5:])
    assert abs(spectrum.lambda_max(op).value - exact[-1]) <= 1e-8 * exact[-1]


def test_smallest_and_lambda_min(infinite):
    op, exact = infinite
    result = eigensolvers.smallest(op, 5)
    assert result.converged and all(e.resolved for e in result.eigenvalues)
    # The stopping rule: each bound within the tolerance (1e-10 relative) or the floor (n eps lambda_max,
    # 1.3e-8 relative to the smallest values here), plus the rounding of a product (sqrt(n) eps lambda_max).
    # Where the run stops depends on when it checks, which follows its timings, so either may be what met.
    rounding = np.sqrt(N) * np.finfo(np.float64).eps * exact[-1]
    assert all(e.bound <= max(1e-10 * e.value, e.floor) + rounding for e in result.eigenvalues)
    assert all(e.floor == pytest.approx(N * np.finfo(np.float64).eps * exact[-1], rel=1e-3)
               for e in result.eigenvalues)
    _check(result, exact[:5])
    # A residual without the gap is a weaker but rigorous certificate.
    assert all(abs(e.value - x) <= e.residual + 1e-12 for e, x in zip(result.eigenvalues, exact))
    bottom = spectrum.lambda_min(op)
    assert abs(bottom.value - exact[0]) <= 1e-8 * exact[0]


def test_clustered_spectrum_from_near_duplicate_points():
    # 20 points each with a twin 1e-2 away: the smallest eigenvalues come from the twins, in a cluster.
    base = _sphere(N - 20, D, seed=1)
    twins = base[:20] + 1e-2 * _sphere(20, D, seed=2)
    x = np.concatenate([base, twins / np.linalg.norm(twins, axis=1, keepdims=True)])
    op = operators.infinite_ntk_operator(models.two_layer(1, s=1.0), x)
    exact = np.linalg.eigvalsh(_dense(op))
    assert exact[19] - exact[0] < 0.2 * (exact[20] - exact[0])  # the cluster is there
    for options in ({}, {"block": 8}, {"rank": N // 4}):  # Lanczos (blocks of 32 and 8), LOBPCG
        result = eigensolvers.smallest(op, 5, **options)
        assert result.converged, options
        _check(result, exact[:5])
    _check(eigensolvers.largest(op, 5), exact[-5:])


def test_rank_deficient_kernel_is_flagged():
    # Width 10, d = 3: the hidden-layer kernel has rank <= 30 < n, so lambda_min = 0 to rounding.
    model = models.two_layer(10, s=1.0)
    x = _sphere(200, 3)
    params = model.init(jax.random.PRNGKey(3), 3)
    op = operators.two_layer_ntk_operator(model, params, x)
    result = eigensolvers.smallest(op, 2, max_iterations=100)
    assert not any(e.resolved for e in result.eigenvalues)
    assert "unresolved" in str(result.eigenvalues[0])
    assert not spectrum.lambda_min(op, max_iterations=100).resolved


def test_lambda_min_along_s_warm_started_equals_dense():
    model = models.two_layer(64, s=0.0, bias=True)
    x = _sphere(300, 4, seed=4) * 1.5
    params = model.init(jax.random.PRNGKey(5), 4)
    op = operators.two_layer_ntk_operator(model, params, x)
    results = eigensolvers.lambda_min_path(op, [0.5, 0.6], k=2)
    for s, result in zip([0.5, 0.6], results):
        _check(result, np.linalg.eigvalsh(_dense(op.at(s)))[:2])
    # The warm start helps: the second solve needs no more products than a cold one.
    cold = eigensolvers.smallest(op.at(0.6), 2)
    assert results[1].products <= cold.products


def test_spectrum_of_an_operator_and_nystrom_preconditioner():
    model = models.mlp((6,), s=1.0)
    x = _sphere(120, 3, seed=6)
    params = model.init(jax.random.PRNGKey(7), 3)
    op = operators.model_jacobian_ntk_operator(model, params, x)  # no cheap diagonal: Nystrom sketch
    exact = np.linalg.eigvalsh(_dense(op))
    extremes = spectrum.spectrum(op, k=2)
    _check(extremes.smallest, exact[:2])
    _check(extremes.largest, exact[-2:])
    assert extremes.summary()["lambda_max"] == extremes.lambda_max.value


def test_spectral_density_first_moment_is_exact():
    op = operators.DenseOperator(jnp.asarray(np.diag(np.linspace(1.0, 2.0, 50))))
    key = jax.random.PRNGKey(8)
    density = eigensolvers.spectral_density(op, key=key, probes=4, steps=10)
    assert np.allclose(density.weights.sum(axis=1), 1.0)
    probes = [np.asarray(jax.random.rademacher(k, (50,), jnp.float64)) for k in jax.random.split(key, 4)]
    moment = np.mean([v @ np.asarray(op.matrix) @ v / 50 for v in probes])
    assert abs(density.integrate(lambda t: t) - moment) <= 1e-12
    grid = np.linspace(0.0, 3.0, 301)
    assert abs(np.trapezoid(density.smooth(grid, 0.05), grid) - 1.0) < 1e-6


def test_bad_arguments():
    op = operators.DenseOperator(jnp.eye(4))
    with pytest.raises(ValueError, match="k must be between"):
        eigensolvers.smallest(op, 5)
    with pytest.raises(ValueError, match="square"):
        eigensolvers.largest(np.ones((3, 4)))
    for tol in (-1e-6, float("nan"), 1.0, "1e-6"):
        with pytest.raises(ValueError, match="tol must be"):
            eigensolvers.lambda_min(op, tol=tol)
    with pytest.raises(ValueError, match="max_products must be an integer >= 1"):
        eigensolvers.extreme_spectrum(op, max_products=0)
    with pytest.raises(ValueError, match="block must be an integer >= 1"):
        eigensolvers.smallest(op, 1, method="lobpcg", rank=2, block=0)


def test_bad_counts_are_refused_in_one_line():
    op = operators.DenseOperator(jnp.eye(6))
    key = jax.random.PRNGKey(0)
    for call, name in [(lambda: eigensolvers.spectral_density(op, probes=0), "probes"),
                       (lambda: eigensolvers.spectral_density(op, steps=-3), "steps"),
                       (lambda: eigensolvers.nystrom(op, -1, key=key), "rank"),
                       (lambda: eigensolvers.rpcholesky(op, 2.5, key=key), "rank"),
                       (lambda: eigensolvers.rpcholesky(op, 2, key=key, block=0), "block")]:
        with pytest.raises(ValueError, match=f"{name} must be an integer >= "):
            call()


def test_bad_options_of_smallest_and_largest_are_refused_in_one_line():
    rng = np.random.default_rng(1)
    A = rng.normal(size=(9, 9))
    op = operators.DenseOperator(jnp.asarray(A @ A.T))
    low_rank = eigensolvers.nystrom(operators.DenseOperator(jnp.eye(7)), 2, key=jax.random.PRNGKey(0))
    cases = [
        (lambda: eigensolvers.largest(op, 1.5), "k must be an integer >= 1, got 1.5"),
        (lambda: eigensolvers.largest(op, float("nan")), "k must be an integer >= 1, got nan"),
        (lambda: eigensolvers.extreme_spectrum(op, "2"), "k must be an integer >= 1, got '2'"),
        (lambda: eigensolvers.smallest(op, 1, lambda_max_value=float("nan")), "lambda_max_value must be"),
        (lambda: eigensolvers.smallest(op, 1, lambda_max_value=-1.0), "lambda_max_value must be"),
        (lambda: eigensolvers.smallest(op, 1, rank=2, guard=-5), "guard must be an integer >= 0"),
        (lambda: eigensolvers.smallest(op, 1, rank=2, max_iterations=0), "max_iterations must be an integer"),
        (lambda: eigensolvers.smallest(op, 1, rank=float("nan")), "rank must be an integer >= 0"),
        (lambda: eigensolvers.smallest(op, 1, start=np.ones(10)), r"start must have shape \(n,\)"),
        (lambda: eigensolvers.smallest(op, 1, start=np.full((9, 2), np.nan)), "start contains non-finite"),
        (lambda: eigensolvers.smallest(op, 1, rank=2, start=np.zeros(9)), "start is zero"),
        (lambda: eigensolvers.smallest(op, 1, low_rank=low_rank), "low_rank has 7 rows, but the operator has n = 9"),
        (lambda: eigensolvers.lanczos(op, jnp.zeros(9), 3), "v0 must be a finite, nonzero vector"),
        (lambda: eigensolvers.lanczos(op, jnp.ones(8), 3), r"v0 must have shape \(n,\)"),
        (lambda: eigensolvers.lambda_min_path(op.matrix, [0.5]), "needs a kernel-path operator"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError if "path" not in message else TypeError, match=message) as info:
            call()
        assert "\n" not in str(info.value)
    # A one-vector warm start of shape (n,) is a column, and the result is still the dense one.
    warm = eigensolvers.smallest(op, 2, rank=2, start=rng.normal(size=9))
    _check(warm, np.linalg.eigvalsh(A @ A.T)[:2])


def test_certified_spectra_refuse_traced_kernels_and_point_to_device_spectrum():
    rng = np.random.default_rng(2)
    A = rng.normal(size=(6, 6))
    K = jnp.asarray(A @ A.T)
    for solve in (lambda M: spectrum.lambda_min(M).value, spectrum.condition_number,
                  lambda M: eigensolvers.lambda_min(M).value, lambda M: eigensolvers.largest(M).products):
        with pytest.raises(TypeError, match="cannot run inside jit, vmap or grad.*device_spectrum"):
            jax.jit(solve)(K)
    # the traced alternative it names does run, and agrees with the host result
    device = jax.jit(spectrum.device_spectrum)(K)
    assert float(device.lambda_min) == pytest.approx(spectrum.lambda_min(K).value, rel=1e-9)


def test_bad_matrices_and_non_finite_products_are_refused_in_one_line():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(7, 7))
    K = A @ A.T
    skewed = K.copy()
    skewed[0, 3] += 1e-3 * np.abs(K).max()  # a small asymmetry, well above rounding
    with pytest.raises(ValueError, match="not symmetric") as info:
        eigensolvers.lambda_min(skewed)
    assert "\n" not in str(info.value)
    holed = K.copy()
    holed[2, 5] = holed[5, 2] = np.inf
    with pytest.raises(ValueError, match="2 non-finite value"):
        eigensolvers.lambda_max(holed)
    # An operator whose products turn NaN (bad data got past construction): a stop that says so, not a
    # LinAlgError from deep inside the solver.
    with pytest.raises(FloatingPointError, match="non-finite value") as info:
        eigensolvers.extreme_spectrum(operators.DenseOperator(jnp.asarray(holed)))
    assert "\n" not in str(info.value)
    # A symmetric matrix up to rounding is accepted, and its value is the dense one.
    noisy = K + 1e-12 * np.abs(K).max() * rng.normal(size=K.shape)
    assert eigensolvers.lambda_min(noisy).value == pytest.approx(np.linalg.eigvalsh(0.5 * (noisy + noisy.T))[0],
                                                                  rel=1e-8)


def test_lanczos_basis_stays_within_its_limit_and_orthonormal():
    # Growth doubles the basis (8, 16, 32 columns) but stops at the limit: 64 would overshoot 50.
    rng = np.random.default_rng(5)
    G = rng.standard_normal((301, 301))
    A = G @ G.T
    lanczos = eigensolvers._BlockLanczos(lambda V: A @ V, rng.standard_normal((301, 2)), 8, rng, limit=50)
    for _ in range(24):
        lanczos.step()
    assert lanczos.m == 50 and lanczos.Q.shape[1] == 50
    Q = lanczos.Q[:, :50]
    np.testing.assert_allclose(Q.T @ Q, np.eye(50), atol=1e-12)
    # H is the projection of A on the multiplied columns (an independent product)
    done = lanczos.done
    np.testing.assert_allclose(lanczos.H[:done, :done], Q[:, :done].T @ A @ Q[:, :done], atol=1e-9 * np.abs(A).max())


def test_lanczos_stays_orthonormal_through_a_graded_spectrum_to_full_depth():
    # Eigenvalues from 1e-10 to 1 and a 4-fold one that a block of 3 cannot span: the Krylov space turns
    # invariant before n, and Lanczos goes on from a fresh random block. Each product is orthogonalised by
    # one pass over the basis (after the recurrence's own blocks) unless the pass removed much of it; the basis
    # must stay orthonormal to the full depth, and its buffer, reserved up front, must never be copied.
    rng = np.random.default_rng(11)
    n = 157
    values = np.sort(np.concatenate([np.geomspace(1e-10, 1.0, n - 4), np.full(4, 0.37)]))
    U, _ = np.linalg.qr(rng.standard_normal((n, n)))
    A = (U * values) @ U.T
    A = 0.5 * (A + A.T)
    lanczos = eigensolvers._BlockLanczos(lambda V: A @ V, rng.standard_normal((n, 3)), n + 6, rng, limit=n + 6)
    buffer = lanczos.Qt
    while not lanczos.exhausted:
        lanczos.step()
    assert lanczos.Qt is buffer
    Q = lanczos.Q[:, :n]
    np.testing.assert_allclose(Q.T @ Q, np.eye(n), atol=1e-12)
    np.testing.assert_allclose(lanczos.H[:n, :n], Q.T @ A @ Q, atol=1e-13)
    np.testing.assert_allclose(np.linalg.eigvalsh(lanczos.H[:n, :n]), values, atol=1e-13)


def test_gram_schmidt_takes_a_second_pass_where_the_first_removed_most():
    # W = Q c + 1e-10 z: one classical Gram-Schmidt pass leaves about eps ||W|| of W in span(Q), which is
    # 1e-6 of what remains; the second pass must bring that down to rounding.
    rng = np.random.default_rng(3)
    n = 400
    lanczos = eigensolvers._BlockLanczos(lambda V: V, rng.standard_normal((n, 40)), 40, rng)
    Q = lanczos.Q[:, :40]
    W = Q @ rng.standard_normal((40, 2)) * 1e3 + 1e-7 * rng.standard_normal((n, 2))
    out, coefficients, _ = lanczos._orthogonalize(W)
    assert np.max(np.abs(Q.T @ out)) < 1e-14 * np.max(np.linalg.norm(out, axis=0))
    np.testing.assert_allclose(Q @ coefficients + out, W, atol=1e-12 * np.abs(W).max())


@pytest.mark.parametrize("block", [1, 3])
def test_ritz_pairs_at_both_ends_and_their_residuals(block):
    # Past depth 256 only the wanted pairs are computed (tridiagonal for blocks of one column, else from the
    # dense projection); their values must be the extreme eigenvalues of H, and the residual read from the
    # recurrence must equal ||A x - theta x|| from a product, x = Q y.
    rng = np.random.default_rng(7)
    n = 401
    values = np.concatenate([np.geomspace(1e-3, 1.0, n - 3), [5.0, 5.0 + 1e-9, 40.0]])
    U, _ = np.linalg.qr(rng.standard_normal((n, n)))
    A = (U * values) @ U.T
    A = 0.5 * (A + A.T)
    lanczos = eigensolvers._BlockLanczos(lambda V: A @ V, rng.standard_normal((n, block)), n + 6, rng)
    while lanczos.done < 300:
        lanczos.step()
    d = lanczos.done
    theta, Y, residual = lanczos.ritz(4, 3)
    every = np.linalg.eigvalsh(lanczos.H[:d, :d])
    np.testing.assert_allclose(theta, np.concatenate([every[:4], every[-3:]]), rtol=0, atol=1e-12 * every[-1])
    X = lanczos.Q[:, :d] @ Y
    np.testing.assert_allclose(np.linalg.norm(X, axis=0), 1.0, atol=1e-10)
    direct = np.linalg.norm(A @ X - X * theta, axis=0)
    np.testing.assert_allclose(residual, direct, rtol=1e-6, atol=1e-11 * every[-1])


def test_values_print_to_the_place_of_their_bound_and_no_further():
    assert eigensolvers.certified_digits(0.0101127175, 1.5e-8) == "0.01011272"
    assert eigensolvers.certified_digits(0.0256, 2e-2) == "0.03"
    assert eigensolvers.certified_digits(807.857055697, 5.7e-11) == "807.857055697"
    assert eigensolvers.certified_digits(-3.25, 0.5) == "-3.2"  # the bound's leading digit is at 0.1
    assert eigensolvers.certified_digits(-3.25, 20.0) == "-3"  # at least one digit, even an uncertain one
    assert eigensolvers.certified_digits(1.0 / 3.0, 0.0) == "0.333333333333"  # exact: the most digits asked
    value = eigensolvers.CertifiedEigenvalue(0.0101127175, 1e-12, 1e-6, 1.5e-8)
    assert str(value).startswith("0.01011272 +- 1.5e-08")


def test_a_spent_budget_is_a_warning_and_the_wider_certificate_still_holds():
    x = _sphere(600, 4, seed=3) * 1.3  # off the unit sphere
    op = operators.infinite_ntk_operator(models.two_layer(1, s=0.7), x)
    dense = np.linalg.eigvalsh(_dense(op))
    with pytest.warns(RuntimeWarning, match="Lanczos stopped after .* before the tolerance") as caught:
        result = eigensolvers.extreme_spectrum(op, max_products=40)
    assert caught[0].filename == __file__  # attributed to the caller's line, not to ntkhom's
    assert not result.smallest.converged and result.lambda_min.bound > 1e-10 * result.lambda_min.value
    # What still holds: Ritz values bound the extremes from inside, and each interval holds an eigenvalue
    # (here not lambda_min itself: the run stopped before it was found, which the warning says).
    low, top = result.lambda_min, result.lambda_max
    assert dense[0] <= low.value and top.value <= dense[-1] * (1 + 1e-14)
    for found in (low, top):
        assert np.min(np.abs(dense - found.value)) <= found.bound
    with pytest.warns(RuntimeWarning, match="LOBPCG stopped after"):
        early = eigensolvers.smallest(op, 1, method="lobpcg", rank=20, max_iterations=2)
    assert not early.converged and dense[0] <= early.eigenvalues[0].value
    assert np.min(np.abs(dense - early.eigenvalues[0].value)) <= early.eigenvalues[0].bound
