import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntkhom.activations import PHI_NAMES, as_phi, check_s, homotopy, homotopy_derivative, leaky_relu

X = jnp.linspace(-3.0, 3.0, 61) + 1e-3  # avoid the kink at 0


def test_endpoints_linear_relu_abs():
    np.testing.assert_allclose(homotopy(X, 0.0), X)
    np.testing.assert_allclose(homotopy(X, 1.0), jax.nn.relu(X))
    np.testing.assert_allclose(homotopy(X, 2.0), jnp.abs(X))
    np.testing.assert_allclose(homotopy(X, 1.5), -X / 2 + 1.5 * jax.nn.relu(X))


@pytest.mark.parametrize("name", PHI_NAMES)
@pytest.mark.parametrize("s", [-0.5, 0.3, 1.0, 1.7])
def test_derivative_matches_autodiff(name, s):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        grad = jax.vmap(jax.grad(lambda x: homotopy(x, s, name)))(X)
    np.testing.assert_allclose(homotopy_derivative(X, s, name), grad, rtol=1e-10, atol=1e-12)


def test_positive_homogeneity_of_relu_family_only():
    for name in ("relu", "leaky_relu", "abs"):
        assert as_phi(name).positively_homogeneous
        np.testing.assert_allclose(homotopy(3.7 * X, 1.3, name), 3.7 * homotopy(X, 1.3, name), rtol=1e-12)
    for name in ("erf", "tanh", "gelu"):
        assert not as_phi(name).positively_homogeneous


def test_leaky_relu_slopes():
    phi = leaky_relu(0.2)
    np.testing.assert_allclose(phi(jnp.array([-1.0, 2.0])), [-0.2, 2.0])


def test_s_outside_range_warns_but_works():
    with pytest.warns(UserWarning, match="outside"):
        assert check_s(2.5) == 2.5
    with pytest.raises(ValueError, match="finite"):
        check_s(float("nan"))


def test_unknown_activation_is_named():
    with pytest.raises(ValueError, match="unknown activation 'swish'.*relu"):
        as_phi("swish")
