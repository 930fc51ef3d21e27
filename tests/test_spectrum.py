import numpy as np
import pytest

from ntkhom.spectrum import check_kernel, condition_number, lambda_min, numerical_floor, spectrum


def _kernel_with_eigenvalues(values, seed=0):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(len(values), len(values))))
    return (q * values) @ q.T


def test_known_spectrum_recovered_in_float64():
    values = np.geomspace(1e-9, 1.0, 40)
    s = spectrum(_kernel_with_eigenvalues(values))
    np.testing.assert_allclose(s.eigenvalues, values, rtol=1e-5, atol=1e-15)
    assert s.resolved and s.kernel_dtype == "float64"
    np.testing.assert_allclose(s.condition, 1e9, rtol=1e-4)


def test_float32_kernel_below_its_floor_is_flagged_not_printed():
    values = np.geomspace(1e-9, 1.0, 40)
    K32 = _kernel_with_eigenvalues(values).astype(np.float32)
    s = spectrum(K32)
    assert s.floor == pytest.approx(numerical_floor(1.0, 40, np.float32), rel=1e-3)
    assert not s.resolved
    assert "unresolved" in str(s.lambda_min) and "1e-09" not in str(s.lambda_min)
    assert s.summary()["lambda_min"] is None and np.isinf(s.condition)
    assert condition_number(K32) == float("inf")


def test_dtype_override_sets_the_floor():
    K = _kernel_with_eigenvalues(np.geomspace(1e-6, 1.0, 30))
    assert lambda_min(K).resolved
    assert not lambda_min(K, dtype=np.float16).resolved


@pytest.mark.parametrize(
    ("K", "message"),
    [(np.ones((2, 3)), "square"), (np.array([[1.0, 2.0], [0.0, 1.0]]), "not symmetric"),
     (np.array([[np.nan, 0.0], [0.0, 1.0]]), "non-finite"), (np.zeros((0, 0)), "non-empty")],
)
def test_bad_kernels_are_refused(K, message):
    with pytest.raises(ValueError, match=message):
        check_kernel(K)


def test_device_spectrum_matches_the_certified_one_and_vmaps():
    import jax
    import jax.numpy as jnp

    from ntkhom.spectrum import device_spectrum

    values = np.geomspace(1e-7, 3.0, 12)
    K = _kernel_with_eigenvalues(values, seed=3)
    host = spectrum(K)
    device = jax.jit(device_spectrum)(jnp.asarray(K))
    np.testing.assert_allclose(device.eigenvalues, host.eigenvalues, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(device.floor, host.floor, rtol=1e-12)
    assert bool(device.resolved) and device.eigenvalues.dtype == np.float64
    # A float32 kernel carries float32's floor, and an eigenvalue below it is flagged.
    low = device_spectrum(jnp.asarray(K, jnp.float32))
    assert not bool(low.resolved)
    np.testing.assert_allclose(low.floor, numerical_floor(3.0, 12, np.float32), rtol=1e-5)
    stacked = jax.vmap(device_spectrum)(jnp.stack([jnp.asarray(K), 2 * jnp.asarray(K)]))
    np.testing.assert_allclose(stacked.lambda_max, [3.0, 6.0], rtol=1e-12)
    with pytest.raises(ValueError, match="non-finite"):
        device_spectrum(np.full((2, 2), np.nan))


def test_a_matrix_that_is_not_a_kernel_is_said_so():
    from ntkhom.spectrum import device_spectrum

    rng = np.random.default_rng(5)
    A = rng.normal(size=(6, 6))
    indefinite = A + A.T  # symmetric, with eigenvalues of both signs
    with pytest.warns(RuntimeWarning, match="not positive semi-definite"):
        result = spectrum(indefinite)
    assert not result.resolved and result.lambda_min.value == pytest.approx(np.linalg.eigvalsh(indefinite)[0])
    with pytest.warns(RuntimeWarning):
        assert spectrum(-np.eye(3)).condition_lower_bound == float("inf")  # not a negative "condition number"
    with pytest.raises(ValueError, match="not symmetric"):
        device_spectrum(A)  # spectrum() refused it; the device path took it silently
    with pytest.raises(TypeError, match="apply to kernel operators only"):
        spectrum(A @ A.T, max_products=10)
