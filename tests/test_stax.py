"""ntkhom.stax.Homotopy composes with neural-tangents stax: finite network and infinite-width kernels."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from ntkhom.activations import homotopy
from ntkhom.models import mlp, two_layer
from ntkhom.nt import stax
from ntkhom.stax import Homotopy

X = jnp.asarray(np.random.default_rng(3).normal(size=(4, 3)) * np.array([[0.2], [1.0], [2.5], [6.0]]))

# (W_std, b_std, s, phi) of each hidden layer of the composed network, then the output layer's (W_std, b_std).
LAYERS = [(1.5, 0.3, 1.5, "relu"), (1.2, 0.1, 0.5, "erf"), (1.0, 0.2, 1.0, "tanh")]
OUTPUT = (0.8, 0.1)
SIGMAS = {
    "relu": (lambda t: np.maximum(t, 0.0), lambda t: (t > 0).astype(float)),
    "erf": (special.erf, lambda t: 2 / math.sqrt(math.pi) * np.exp(-t * t)),
    "tanh": (np.tanh, lambda t: 1 / np.cosh(t) ** 2),
}


def _composed():
    layers = []
    for width_std, bias_std, s, phi in LAYERS:
        layers += [stax.Dense(512, W_std=width_std, b_std=bias_std), Homotopy(s, phi)]
    return stax.serial(*layers, stax.Dense(1, W_std=OUTPUT[0], b_std=OUTPUT[1]))


def _monte_carlo_recursion(x, samples, rng):
    """NNGP and NTK by the layer recursion with E[sigma sigma] and E[sigma' sigma'] from Gaussian samples."""
    x = np.asarray(x)
    width_std, bias_std = LAYERS[0][:2]
    nngp = width_std**2 * x @ x.T / x.shape[1] + bias_std**2
    ntk = nngp.copy()
    nexts = [layer[:2] for layer in LAYERS[1:]] + [OUTPUT]
    for (_, _, s, phi), (width_std, bias_std) in zip(LAYERS, nexts):
        fn, dfn = SIGMAS[phi]
        values, vectors = np.linalg.eigh(nngp)
        z = (vectors * np.sqrt(np.clip(values, 0, None))) @ rng.normal(size=(len(x), samples))
        act, dact = (1 - s) * z + s * fn(z), (1 - s) + s * dfn(z)
        nngp_next = width_std**2 * act @ act.T / samples + bias_std**2
        ntk = nngp_next + width_std**2 * ntk * (dact @ dact.T / samples)
        nngp = nngp_next
    return nngp, ntk


def test_composed_architecture_matches_monte_carlo_with_shrinking_error():
    """Three hidden layers, mixed s and phi: the exact kernel lies within 5 standard errors of 8 independent
    Monte-Carlo estimates, and 100 times more samples bring the estimate about 10 times closer."""
    _, _, kernel_fn = _composed()
    exact = kernel_fn(X, None, ("nngp", "ntk"))
    errors = {}
    for samples in (2_000, 200_000):
        rng = np.random.default_rng(samples)
        runs = [_monte_carlo_recursion(X, samples, rng) for _ in range(8)]
        for name, index in (("nngp", 0), ("ntk", 1)):
            estimates = np.stack([run[index] for run in runs])
            mean, standard_error = estimates.mean(0), estimates.std(0, ddof=1) / math.sqrt(len(runs))
            assert np.all(np.abs(np.asarray(getattr(exact, name)) - mean) <= 5 * standard_error + 1e-12), name
            errors[samples, name] = np.max(np.abs(np.asarray(getattr(exact, name)) - mean))
    for name in ("nngp", "ntk"):
        assert errors[200_000, name] < errors[2_000, name] / 3, errors


def test_finite_network_applies_the_homotopy():
    init_fn, apply_fn, _ = stax.serial(stax.Dense(7, W_std=1.3, b_std=0.2), Homotopy(1.5, "gelu"))
    _, params = init_fn(jax.random.PRNGKey(0), X.shape)
    W, b = params[0]
    z = 1.3 * X @ W / math.sqrt(3) + 0.2 * b
    np.testing.assert_allclose(apply_fn(params, X), homotopy(z, 1.5, "gelu"), rtol=1e-13)


@pytest.mark.parametrize("phi", ["erf", "tanh"])
def test_kernel_under_jit_and_grad_in_s(phi):
    def entry(s):
        _, _, kernel_fn = stax.serial(stax.Dense(8, W_std=1.4), Homotopy(s, phi), stax.Dense(1))
        return kernel_fn(X, None, "ntk")[1, 3]

    np.testing.assert_allclose(jax.jit(entry)(1.2), entry(1.2), rtol=1e-12)
    h = 1e-5
    numeric = (entry(1.2 + h) - entry(1.2 - h)) / (2 * h)
    np.testing.assert_allclose(jax.grad(entry)(1.2), numeric, rtol=1e-6)


def test_homotopy_mlp_stax_is_the_composition():
    model = mlp((6, 5), 0.7, phi="tanh")
    _, _, ours = model.stax(3)
    _, _, composed = stax.serial(
        stax.Dense(6, W_std=math.sqrt(3), b_std=1.0), Homotopy(0.7, "tanh"),
        stax.Dense(5, W_std=1.0, b_std=1.0), Homotopy(0.7, "tanh"), stax.Dense(1, W_std=1.0, b_std=None),
    )
    np.testing.assert_allclose(ours(X, None, "ntk"), composed(X, None, "ntk"), rtol=1e-13)


def test_bad_arguments_are_named():
    with pytest.raises(TypeError, match="s must be a real number"):
        Homotopy(True)
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        Homotopy(1.0, "swish")
    with pytest.raises(ValueError, match="positive integer"):
        two_layer(True)
    with pytest.raises(ValueError, match="positive integer"):
        mlp((4, False))


def test_relu_family_kernel_differentiable_in_s():
    def entry(s):
        _, _, kernel_fn = stax.serial(stax.Dense(8, W_std=1.4, b_std=0.3), Homotopy(s, "abs"), stax.Dense(1))
        return kernel_fn(X, None, "ntk")[0, 2]

    h = 1e-5
    np.testing.assert_allclose(jax.grad(entry)(0.8), (entry(0.8 + h) - entry(0.8 - h)) / (2 * h), rtol=1e-6)


def test_own_phi_has_a_finite_network_and_a_clear_kernel_refusal():
    from ntkhom.activations import Phi

    softsign = Phi("softsign", lambda t: t / (1 + jnp.abs(t)), lambda t: 1 / (1 + jnp.abs(t)) ** 2)
    init_fn, apply_fn, kernel_fn = stax.serial(stax.Dense(5), Homotopy(0.5, softsign))
    _, params = init_fn(jax.random.PRNGKey(0), X.shape)
    assert apply_fn(params, X).shape == (4, 5)
    with pytest.raises(ValueError, match="no infinite-width kernel for phi = 'softsign'.*monte_carlo"):
        kernel_fn(X, None, "nngp")
