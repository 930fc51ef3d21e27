"""The certified eigen-path solver on matrix paths A(s): polynomial paths (two-layer NTK paths and plain
matrices) against float64 eigh, indefinite matrices, an eigenvector the reduced basis never saw, callable
paths, and bad input."""

import dataclasses

import jax
import numpy as np
import pytest

from ntkhom import data, eigenpath, kernels
from ntkhom.models import two_layer


def _sphere(n, d, seed=0):
    return data.sphere(jax.random.PRNGKey(seed), n, d)


@pytest.mark.parametrize("trained,bias", [("hidden", False), ("all", True)])
def test_three_matrix_path_equals_direct_kernels_at_every_s(trained, bias):
    x = _sphere(20, 4)
    grid = np.linspace(0.0, 2.0, 7)
    model = two_layer(1, trained=trained, bias=bias)
    net = dataclasses.replace(model, widths=(300,))
    params = net.init(jax.random.PRNGKey(3), 4)
    for kpath, direct in [
        (kernels.infinite_kernel_path(model, x), lambda s: kernels.infinite_ntk(model, x, s=s)),
        (kernels.empirical_kernel_path(net, params, x), lambda s: kernels.empirical_ntk_two_layer(net, params, x, s=s)),
    ]:
        spectra = eigenpath.spectrum_path(kpath, grid)
        path = eigenpath.lambda_min_path(kpath, grid, method="eigh")
        for s, spec, point in zip(grid, spectra, path.points):
            K = np.asarray(direct(float(s)), np.float64)
            assert K.dtype == np.float64
            eig = np.linalg.eigvalsh(K)
            np.testing.assert_allclose(spec.eigenvalues, eig, rtol=0, atol=1e-12 * eig[-1])
            np.testing.assert_allclose(point.lambda_min, eig[0], rtol=0, atol=1e-12 * eig[-1])
            np.testing.assert_allclose(point.lambda_max, eig[-1], rtol=1e-12)


@pytest.mark.parametrize("width", [None, 512])
def test_fast_lambda_min_agrees_with_eigh_above_floor_and_flags_below(width):
    n, d = 96, 4
    x = _sphere(n, d, 1)
    model = two_layer(1)
    if width is None:
        kpath = kernels.infinite_kernel_path(model, x)
    else:
        net = dataclasses.replace(model, widths=(width,))
        kpath = kernels.empirical_kernel_path(net, net.init(jax.random.PRNGKey(7), d), x)
    grid = np.linspace(0.0, 2.0, 25)
    fast = eigenpath.lambda_min_path(kpath, grid, block=4)
    reference = eigenpath.lambda_min_path(kpath, grid, method="eigh")
    # The fast path must really be the reduced sweep (not silently eigh everywhere).
    assert fast.methods.count("eigh") <= 3 and fast.methods.count("reduced") >= len(grid) // 2
    for f, r in zip(fast.points, reference.points):
        assert f.floor == pytest.approx(r.floor, rel=1e-6)
        if r.resolved:
            assert f.resolved
            assert abs(f.lambda_min - r.lambda_min) <= 1e-6 * r.lambda_min, (f, r)
            if f.method == "subspace":  # the Cholesky-certified bracket holds
                assert f.lower_bound - 10 * f.floor <= r.lambda_min <= f.lambda_min + 10 * f.floor
        else:
            assert not f.resolved and f.row()["lambda_min"] is None
    # n > d: at s = 0 the kernel is (a multiple of) the rank-d Gram matrix, so lambda_min is at the floor.
    assert not fast.points[0].resolved and not reference.points[0].resolved
    assert fast.resolved[1:].all()


@pytest.mark.parametrize("method", ["reduced", "subspace"])
def test_not_positive_definite_is_exact_and_flagged(method):
    rng = np.random.default_rng(0)
    A = rng.standard_normal((40, 40))
    K0 = A @ A.T
    # K(s) = K0 - s * 10 lambda_min(K0) I: indefinite for s > 0.1, so Cholesky must fail there.
    shift = 10 * np.linalg.eigvalsh(K0)[0]
    matrix_path = (K0, -shift * np.eye(40))  # A2 = 0
    grid = np.linspace(0.0, 1.0, 11)
    path = eigenpath.lambda_min_path(matrix_path, grid, block=4, method=method)
    for point in path.points:
        expected = np.linalg.eigvalsh(K0 - point.s * shift * np.eye(40))[0]
        assert point.lambda_min == pytest.approx(expected, rel=1e-8, abs=1e-10)
        if expected < 0:
            assert not point.resolved
            # the certified iteration cannot factor an indefinite matrix and must fall back to eigh
            assert method == "reduced" or point.method == "eigh"


def test_reduced_sweep_recovers_an_eigenvector_its_basis_never_saw():
    # K(s) = B - 10 s u u^T with u a middle eigenvector of B, orthogonal to everything the sweep starts from:
    # its eigenvalue 5.5 - 10 s becomes the smallest past s = 0.45 while every Ritz residual stays zero. Only
    # the periodic certified anchor can notice, and then the points since the previous anchor are redone.
    n = 60
    Q, _ = np.linalg.qr(np.random.default_rng(1).standard_normal((n, n)))
    B = (Q * np.linspace(1.0, 10.0, n)) @ Q.T
    u = Q[:, n // 2]
    grid = np.linspace(0.0, 0.5, 26)
    path = eigenpath.lambda_min_path((B, -10.0 * np.outer(u, u), np.zeros((n, n))), grid, block=4,
                                     anchor_every=5)
    expected = [np.linalg.eigvalsh(B - 10.0 * s * np.outer(u, u))[0] for s in grid]
    np.testing.assert_allclose(path.lambda_min, expected, rtol=1e-6)
    assert path.methods.count("reduced") >= len(grid) // 2


def _random_path(n, seed):
    """A0 positive definite, A1 and A2 symmetric indefinite: lambda_min(A(s)) bends and its eigenvector turns."""
    rng = np.random.default_rng(seed)
    G = rng.standard_normal((n, n))
    A0 = G @ G.T / n + np.eye(n)
    A1, A2 = (0.5 * (M + M.T) / np.sqrt(n) for M in rng.standard_normal((2, n, n)))
    return A0, A1, 0.3 * A2


@pytest.mark.parametrize("method", ["subspace", "eigh"])
def test_callable_path_agrees_with_polynomial_path_and_calls_once_per_s(method):
    n = 48
    A0, A1, A2 = _random_path(n, 2)
    grid = np.linspace(-0.4, 0.6, 21)
    calls = []

    def matrix_at(s):
        calls.append(s)
        return A0 + s * A1 + s**2 * A2

    by_call = eigenpath.lambda_min_path(matrix_at, grid, block=4, method=method)
    by_coefficients = eigenpath.lambda_min_path((A0, A1, A2), grid, block=4)
    expected = np.array([np.linalg.eigvalsh(A0 + s * A1 + s**2 * A2)[[0, -1]] for s in grid])
    assert calls == list(grid)
    for path in (by_call, by_coefficients):
        np.testing.assert_allclose(path.lambda_min, expected[:, 0], rtol=1e-7)
        np.testing.assert_allclose(path.lambda_max, expected[:, 1], rtol=1e-7)
        assert path.resolved.all()
    assert set(by_call.methods) <= {method, "eigh"}
    if method == "subspace":  # the warm start really carried over, and each bracket holds
        assert by_call.methods.count("subspace") >= len(grid) // 2
        for p, lam in zip(by_call.points, expected[:, 0]):
            if p.method == "subspace":
                assert p.lower_bound <= lam <= p.lambda_min + 10 * p.floor
    assert by_coefficients.methods.count("reduced") >= len(grid) // 2


def test_non_polynomial_callable_with_crossing_eigenvalues():
    # A(s) = B + 4 sin(3 s) u u^T - 3 s w w^T: two eigenvectors outside the bottom of B take turns at the bottom.
    n = 40
    Q, _ = np.linalg.qr(np.random.default_rng(3).standard_normal((n, n)))
    B = (Q * np.linspace(1.0, 6.0, n)) @ Q.T
    u, w = Q[:, 20], Q[:, 30]
    grid = np.linspace(0.0, 2.0, 31)

    def matrix_at(s):
        return B + 4 * np.sin(3 * s) * np.outer(u, u) - 3 * s * np.outer(w, w)

    path = eigenpath.lambda_min_path(matrix_at, grid, block=4, method="subspace")
    expected = [np.linalg.eigvalsh(matrix_at(s))[0] for s in grid]
    resolved = np.abs(expected) > 1e-6
    np.testing.assert_allclose(path.lambda_min[resolved], np.asarray(expected)[resolved], rtol=1e-7)


def test_floor_follows_the_matrix_dtype_and_missing_coefficients_are_zero():
    n = 20
    A0, A1, _ = _random_path(n, 4)
    grid = [0.0, 0.5]
    two = eigenpath.lambda_min_path((A0, A1), grid, method="eigh")
    three = eigenpath.lambda_min_path((A0, A1, np.zeros((n, n))), grid, method="eigh")
    np.testing.assert_array_equal(two.lambda_min, three.lambda_min)
    single = eigenpath.lambda_min_path((A0.astype(np.float32), A1.astype(np.float32)), grid, method="eigh")
    called = eigenpath.lambda_min_path(lambda s: (A0 + s * A1).astype(np.float32), grid)
    for path in (single, called):
        lam_max = path.lambda_max
        np.testing.assert_allclose(path.floor, n * np.finfo(np.float32).eps * lam_max, rtol=1e-6)
    np.testing.assert_allclose(two.floor, n * np.finfo(np.float64).eps * two.lambda_max, rtol=1e-6)
    spectra = eigenpath.spectrum_path(lambda s: A0 + s * A1, grid)
    np.testing.assert_allclose([sp.eigenvalues[0] for sp in spectra], two.lambda_min, rtol=1e-12)


def test_bad_input_raises_clear_errors():
    kpath = kernels.infinite_kernel_path(two_layer(1), _sphere(8, 3))
    with pytest.raises(ValueError, match="strictly increasing"):
        eigenpath.lambda_min_path(kpath, [0.0, 1.0, 0.5])
    with pytest.raises(ValueError, match="non-finite"):
        eigenpath.lambda_min_path(kpath, [0.0, np.nan])
    with pytest.raises(ValueError, match="non-empty"):
        eigenpath.lambda_min_path(kpath, [])
    with pytest.raises(ValueError, match="unknown method"):
        eigenpath.lambda_min_path(kpath, [1.0], method="lanczos")
    with pytest.raises(ValueError, match="anchor_every"):
        eigenpath.lambda_min_path(kpath, [1.0], anchor_every=0)
    with pytest.raises(ValueError, match="not on the s grid"):
        eigenpath.lambda_min_path(kpath, [0.5, 2.0]).ratio_to(1.0)
    with pytest.raises(ValueError, match="needs the coefficients"):
        eigenpath.lambda_min_path(lambda s: np.eye(3), [1.0], method="reduced")
    with pytest.raises(TypeError, match="matrix_path"):
        eigenpath.lambda_min_path(np.eye(3), [1.0])
    with pytest.raises(ValueError, match="A1 has shape"):
        eigenpath.lambda_min_path((np.eye(3), np.eye(4)), [1.0])
    with pytest.raises(ValueError, match="A1 is not symmetric"):
        eigenpath.lambda_min_path((np.eye(3), np.triu(np.ones((3, 3)))), [1.0])
    with pytest.raises(ValueError, match=r"A\(0.5\) contains non-finite"):
        eigenpath.lambda_min_path(lambda s: np.full((3, 3), np.nan), [0.5])
    # K0 + s K1 + s^2 K2 overflows at a huge s: said so, not LAPACK's "Eigenvalues did not converge"
    for method in eigenpath.METHODS:
        with pytest.raises(ValueError, match=r"at s = 1e\+300 has entries that overflow float64"):
            eigenpath.lambda_min_path(kpath, [1e300], method=method)
