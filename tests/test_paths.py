"""Spectra along the homotopy path: three-matrix path vs direct kernels, fast lambda_min vs float64 eigh,
the s^2 growth of HRTA, finite -> infinite width, deep networks, and bad input."""

import dataclasses

import jax
import numpy as np
import pytest

from ntkhom import data, kernels, paths
from ntkhom.kernels import KernelPath
from ntkhom.models import mlp, two_layer
from ntkhom.spectrum import numerical_floor

KEY = jax.random.PRNGKey(0)


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
        spectra = paths.spectrum_path(kpath, grid)
        path = paths.lambda_min_path(kpath, grid, method="eigh")
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
    fast = paths.lambda_min_path(kpath, grid, block=4)
    reference = paths.lambda_min_path(kpath, grid, method="eigh")
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
    kpath = KernelPath(K0, -shift * np.eye(40), np.zeros((40, 40)))
    grid = np.linspace(0.0, 1.0, 11)
    path = paths.lambda_min_path(kpath, grid, block=4, method=method)
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
    kpath = KernelPath(B, -10.0 * np.outer(u, u), np.zeros((n, n)))
    grid = np.linspace(0.0, 0.5, 26)
    path = paths.lambda_min_path(kpath, grid, block=4, anchor_every=5)
    expected = [np.linalg.eigvalsh(B - 10.0 * s * np.outer(u, u))[0] for s in grid]
    np.testing.assert_allclose(path.lambda_min, expected, rtol=1e-6)
    assert path.methods.count("reduced") >= len(grid) // 2


def test_infinite_width_ratio_grows_like_s_squared_for_unit_norm_inputs_n_above_d():
    x = _sphere(128, 4, 2)
    grid = np.round(np.linspace(0.0, 1.5, 13), 12)
    path = paths.lambda_min_path(kernels.infinite_kernel_path(two_layer(1), x), grid)
    ratio = path.ratio_to(1.0)
    assert np.isnan(ratio[0]) and not path.points[0].resolved  # lambda_min(0) at the floor
    np.testing.assert_allclose(ratio[1:], grid[1:] ** 2, rtol=0.02)
    # n <= d: the linear kernel is full rank, lambda_min(0) is resolved and the ratio is not s^2.
    small = paths.lambda_min_path(kernels.infinite_kernel_path(two_layer(1), _sphere(4, 8, 3)), grid)
    assert small.points[0].resolved
    assert small.ratio_to(1.0)[0] > 0.1


def test_finite_width_lambda_min_approaches_infinite_width_at_rate_one_over_sqrt_width():
    x = _sphere(16, 4, 4)
    widths = [256, 1024, 4096, 16384]
    grid = np.array([1.0, 1.5])
    results = list(paths.homotopy_spectra(two_layer(1), x, grid, widths, 6, KEY))
    limit = results[0].path.lambda_min
    assert results[0].width == paths.INFINITE
    errors = []
    for width in widths:
        finite = np.array([r.path.lambda_min for r in results if r.width == width])
        errors.append(np.mean(np.abs(finite - limit) / limit))
    slope = np.polyfit(np.log(widths), np.log(errors), 1)[0]
    assert -0.75 < slope < -0.3, (slope, errors)
    rows = paths.summarize_widths(results)
    assert {r["width"] for r in rows} == {paths.INFINITE, *widths}


def test_deep_network_path_through_neural_tangents_matches_direct_spectrum():
    x = _sphere(10, 3, 5)
    model = mlp((1, 1), trained="all")
    grid = [0.5, 1.0, 1.5]
    seen = []
    results = list(paths.homotopy_spectra(model, x, grid, [64], 1, KEY, densities_at=[1.0],
                                          on_point=lambda w, seed, p: seen.append((w, seed, p.s))))
    assert len(results) == 2 and len(seen) == 6 and results[0].depth == 2
    for point in results[0].path.points:
        eig = np.linalg.eigvalsh(np.asarray(kernels.infinite_ntk(model, x, s=point.s), np.float64))
        assert point.lambda_min == pytest.approx(eig[0], rel=1e-10)
        assert point.floor == pytest.approx(numerical_floor(eig[-1], 10, np.float64))
    net = dataclasses.replace(model, widths=(64, 64))
    params = net.init(paths._seed_key(KEY, 64, 0), 3)
    eig = np.linalg.eigvalsh(np.asarray(kernels.empirical_ntk(net, params, x, s=1.0), np.float64))
    assert results[1].path.points[1].lambda_min == pytest.approx(eig[0], rel=1e-8)
    assert results[1].spectra[1.0].eigenvalues == pytest.approx(eig, rel=1e-8)


def test_bad_input_raises_clear_errors():
    kpath = kernels.infinite_kernel_path(two_layer(1), _sphere(8, 3))
    with pytest.raises(ValueError, match="strictly increasing"):
        paths.lambda_min_path(kpath, [0.0, 1.0, 0.5])
    with pytest.raises(ValueError, match="non-finite"):
        paths.lambda_min_path(kpath, [0.0, np.nan])
    with pytest.raises(ValueError, match="non-empty"):
        paths.lambda_min_path(kpath, [])
    with pytest.raises(ValueError, match="unknown method"):
        paths.lambda_min_path(kpath, [1.0], method="lanczos")
    with pytest.raises(ValueError, match="anchor_every"):
        paths.lambda_min_path(kpath, [1.0], anchor_every=0)
    x = _sphere(8, 3)
    with pytest.raises(ValueError, match="positive integer"):
        next(paths.homotopy_spectra(two_layer(1), x, [1.0], [64, 0], 1, KEY))
    with pytest.raises(ValueError, match="nothing to compute"):
        next(paths.homotopy_spectra(two_layer(1), x, [1.0], [], 1, KEY, infinite=False))
    with pytest.raises(ValueError, match="seeds"):
        next(paths.homotopy_spectra(two_layer(1), x, [1.0], [64], 0, KEY))
    with pytest.raises(ValueError, match="not on the s grid"):
        next(paths.homotopy_spectra(two_layer(1), x, [1.0], [64], 1, KEY, densities_at=[0.3]))
    with pytest.raises(ValueError, match="not on the s grid"):
        paths.lambda_min_path(kpath, [0.5, 2.0]).ratio_to(1.0)
