"""Sweeps along the homotopy path over widths and seeds: the s^2 growth of HRTA, finite -> infinite width,
deep networks through neural-tangents, one network's path built from the model, and bad input."""

import dataclasses

import jax
import numpy as np
import pytest

from ntkhom import data, kernels
from ntkhom.eigenpath import lambda_min_path
from ntkhom.experiments import sweeps
from ntkhom.models import mlp, two_layer
from ntkhom.spectrum import numerical_floor

KEY = jax.random.PRNGKey(0)


def _sphere(n, d, seed=0):
    return data.sphere(jax.random.PRNGKey(seed), n, d)


def test_infinite_width_ratio_grows_like_s_squared_for_unit_norm_inputs_n_above_d():
    x = _sphere(128, 4, 2)
    grid = np.round(np.linspace(0.0, 1.5, 13), 12)
    path = lambda_min_path(kernels.infinite_kernel_path(two_layer(1), x), grid)
    ratio = path.ratio_to(1.0)
    assert np.isnan(ratio[0]) and not path.points[0].resolved  # lambda_min(0) at the floor
    np.testing.assert_allclose(ratio[1:], grid[1:] ** 2, rtol=0.02)
    # n <= d: the linear kernel is full rank, lambda_min(0) is resolved and the ratio is not s^2.
    small = lambda_min_path(kernels.infinite_kernel_path(two_layer(1), _sphere(4, 8, 3)), grid)
    assert small.points[0].resolved
    assert small.ratio_to(1.0)[0] > 0.1


def test_finite_width_lambda_min_approaches_infinite_width_at_rate_one_over_sqrt_width():
    x = _sphere(16, 4, 4)
    widths = [256, 1024, 4096, 16384]
    grid = np.array([1.0, 1.5])
    results = list(sweeps.homotopy_spectra(two_layer(1), x, grid, widths, 6, KEY))
    limit = results[0].path.lambda_min
    assert results[0].width == sweeps.INFINITE
    errors = []
    for width in widths:
        finite = np.array([r.path.lambda_min for r in results if r.width == width])
        errors.append(np.mean(np.abs(finite - limit) / limit))
    slope = np.polyfit(np.log(widths), np.log(errors), 1)[0]
    assert -0.75 < slope < -0.3, (slope, errors)
    rows = sweeps.summarize_widths(results)
    assert {r["width"] for r in rows} == {sweeps.INFINITE, *widths}


def test_deep_network_path_through_neural_tangents_matches_direct_spectrum():
    x = _sphere(10, 3, 5)
    model = mlp((1, 1), trained="all")
    grid = [0.5, 1.0, 1.5]
    seen = []
    results = list(sweeps.homotopy_spectra(model, x, grid, [64], 1, KEY, densities_at=[1.0],
                                          on_point=lambda w, seed, p: seen.append((w, seed, p.s))))
    assert len(results) == 2 and len(seen) == 6 and results[0].depth == 2
    for point in results[0].path.points:
        eig = np.linalg.eigvalsh(np.asarray(kernels.infinite_ntk(model, x, s=point.s), np.float64))
        assert point.lambda_min == pytest.approx(eig[0], rel=1e-10)
        assert point.floor == pytest.approx(numerical_floor(eig[-1], 10, np.float64))
    net = dataclasses.replace(model, widths=(64, 64))
    params = net.init(sweeps._seed_key(KEY, 64, 0), 3)
    eig = np.linalg.eigvalsh(np.asarray(kernels.empirical_ntk(net, params, x, s=1.0), np.float64))
    assert results[1].path.points[1].lambda_min == pytest.approx(eig[0], rel=1e-8)
    assert results[1].spectra[1.0].eigenvalues == pytest.approx(eig, rel=1e-8)


@pytest.mark.parametrize("bias", [False, True])
def test_one_network_path_from_the_model_matches_direct_kernels(bias):
    # Inputs off the unit sphere, a finite width: K(s) built by the sweep from the model, against eigvalsh of
    # the kernel computed directly at each s.
    x = 1.7 * _sphere(24, 3, 6)
    model = dataclasses.replace(two_layer(1, bias=bias), widths=(96,))
    params = model.init(jax.random.PRNGKey(9), 3)
    grid = np.linspace(0.25, 1.75, 7)
    seen = []
    path, spectra = sweeps.kernel_lambda_min_path(model, x, grid, params=params, densities_at=[grid[3]],
                                                  on_point=seen.append)
    assert [p.s for p in seen] == list(grid) and list(spectra) == [grid[3]]
    for point in path.points:
        eig = np.linalg.eigvalsh(np.asarray(kernels.empirical_ntk(model, params, x, s=point.s), np.float64))
        assert point.lambda_min == pytest.approx(eig[0], rel=1e-8)
        if point.s == grid[3]:
            np.testing.assert_allclose(spectra[point.s].eigenvalues, eig, rtol=1e-8, atol=1e-12 * eig[-1])


def test_bad_input_raises_clear_errors():
    x = _sphere(8, 3)
    with pytest.raises(ValueError, match="positive integer"):
        next(sweeps.homotopy_spectra(two_layer(1), x, [1.0], [64, 0], 1, KEY))
    with pytest.raises(ValueError, match="positive integer"):
        sweeps.check_widths([True])
    with pytest.raises(ValueError, match="nothing to compute"):
        next(sweeps.homotopy_spectra(two_layer(1), x, [1.0], [], 1, KEY, infinite=False))
    with pytest.raises(ValueError, match="seeds"):
        next(sweeps.homotopy_spectra(two_layer(1), x, [1.0], [64], 0, KEY))
    with pytest.raises(ValueError, match="not on the s grid"):
        next(sweeps.homotopy_spectra(two_layer(1), x, [1.0], [64], 1, KEY, densities_at=[0.3]))
