"""Infinite-width kernels of erf, tanh and GELU homotopy networks off the unit sphere.

Expected values come from an independent NumPy rule (trapezoid sums in the original variables, which converge
geometrically for these analytic integrands; no decomposition in s, no Stein identity, no Gauss-Legendre
panels) and from Monte Carlo with its error bar, at input norms from 0.1 to 10.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from ntkhom import kernels
from ntkhom.dual import dual_activation, gaussian_expectation_2d
from ntkhom.models import two_layer

NORMS = np.array([0.1, 1.0, 3.0, 10.0])
_directions = np.random.default_rng(7).normal(size=(4, 3))
X = _directions / np.linalg.norm(_directions, axis=1, keepdims=True) * NORMS[:, None]

PHIS = {
    "erf": (special.erf, lambda x: 2 / math.sqrt(math.pi) * np.exp(-x * x)),
    "tanh": (np.tanh, lambda x: 1 / np.cosh(x) ** 2),
    "gelu": (lambda x: x * special.ndtr(x),
             lambda x: special.ndtr(x) + x * np.exp(-x * x / 2) / math.sqrt(2 * math.pi)),
}
RTOL = {"erf": 1e-10, "tanh": 1e-8, "gelu": 1e-10}  # erf and GELU are closed forms, tanh a quadrature


def _trapezoid_pair(f, a, b, c):
    """E[f(u) f(v)], (u, v) ~ N(0, [[a, c], [c, b]]), by trapezoid sums over u and over v given u.

    Steps of at most 0.2 (the integrands are analytic in the strip |Im| < pi/2, so the error is about
    exp(-pi^2 / 0.2)) and at most a quarter of each standard deviation, over +-9 standard deviations.
    """
    su = math.sqrt(a)
    u = np.linspace(-9 * su, 9 * su, 2 * int(np.ceil(9 * su / min(0.2, su / 4))) + 1)
    wu = (u[1] - u[0]) * np.exp(-u * u / (2 * a)) / math.sqrt(2 * math.pi * a)
    mean, tau2 = (c / a) * u, b - c * c / a
    if tau2 <= 1e-13 * b:
        inner = f(mean)
    else:
        tau = math.sqrt(tau2)
        z = np.linspace(-9, 9, 2 * int(np.ceil(9 / min(0.2 / tau, 0.25))) + 1)
        wz = (z[1] - z[0]) * np.exp(-z * z / 2) / math.sqrt(2 * math.pi)
        inner = f(mean[:, None] + tau * z[None, :]) @ wz
    return float(np.sum(wu * f(u) * inner))


def _reference_two_layer(phi, s, x):
    """NNGP and hidden-layer NTK term of f = W2 sigma_s(W1 x) (w ~ N(0, I)): E[sigma sigma], x.x' E[sigma' sigma']."""
    fn, dfn = PHIS[phi]

    def sigma(t):
        return (1 - s) * t + s * fn(t)

    def dsigma(t):
        return (1 - s) + s * dfn(t)

    gram = x @ x.T
    n = len(x)
    nngp, dot = np.zeros((n, n)), np.zeros((n, n))
    for i in range(n):
        for j in range(i, n):
            a, b, c = gram[i, i], gram[j, j], gram[i, j]
            nngp[i, j] = nngp[j, i] = _trapezoid_pair(sigma, a, b, c)
            dot[i, j] = dot[j, i] = _trapezoid_pair(dsigma, a, b, c)
    return nngp, gram * dot


@pytest.mark.parametrize("phi", ["erf", "tanh", "gelu"])
@pytest.mark.parametrize("s", [0.5, 1.0, 1.5])
def test_two_layer_kernels_match_independent_quadrature(phi, s):
    nngp, hidden = _reference_two_layer(phi, s, X)
    scale = float(np.max(np.abs(nngp + hidden)))
    np.testing.assert_allclose(kernels.infinite_nngp(two_layer(1, s, phi=phi), X), nngp,
                               rtol=RTOL[phi], atol=RTOL[phi] * 1e-3 * scale)
    np.testing.assert_allclose(kernels.infinite_ntk(two_layer(1, s, phi=phi, trained="hidden"), X), hidden,
                               rtol=RTOL[phi], atol=RTOL[phi] * 1e-3 * scale)
    np.testing.assert_allclose(kernels.infinite_ntk(two_layer(1, s, phi=phi, trained="all"), X), nngp + hidden,
                               rtol=RTOL[phi], atol=RTOL[phi] * 1e-3 * scale)


@pytest.mark.parametrize("phi", ["erf", "tanh", "gelu"])
def test_two_layer_kernels_agree_with_monte_carlo(phi):
    """E[sigma sigma] and E[sigma' sigma'] by 4e5 Gaussian samples per pair, within 5 standard errors."""
    s = 1.5
    fn, dfn = PHIS[phi]
    gram = X @ X.T
    rng = np.random.default_rng(11)
    dual = dual_activation(phi)
    for i, j in [(0, 3), (1, 2), (2, 3), (3, 3)]:
        a, b, c = gram[i, i], gram[j, j], gram[i, j]
        values, vectors = np.linalg.eigh(np.array([[a, c], [c, b]]))
        root = vectors * np.sqrt(np.clip(values, 0, None))  # a square root that allows the singular diagonal
        u, v = root @ rng.normal(size=(2, 400_000))
        for draws, ours in [
            (((1 - s) * u + s * fn(u)) * ((1 - s) * v + s * fn(v)), dual.nngp(c, a, b, s)),
            (((1 - s) + s * dfn(u)) * ((1 - s) + s * dfn(v)), dual.d_nngp(c, a, b, s)),
        ]:
            standard_error = draws.std() / math.sqrt(draws.size)
            assert abs(float(ours) - draws.mean()) < 5 * standard_error, (phi, i, j, float(ours), draws.mean())


def test_erf_at_s_one_is_neural_tangents_erf():
    """At s = 1 the homotopy erf network is neural-tangents' own closed-form Erf network."""
    from ntkhom.nt import stax

    _, _, exact_fn = stax.serial(stax.Dense(1, W_std=math.sqrt(3), b_std=None), stax.Erf(),
                                 stax.Dense(1, b_std=None))
    np.testing.assert_allclose(kernels.infinite_ntk(two_layer(1, 1.0, phi="erf", trained="all"), X),
                               exact_fn(X, None, "ntk"), rtol=1e-12)


def test_the_wrong_fixed_gauss_hermite_answer_is_gone():
    """The issue's case: erf, s = 1, norms 0.3 to 3.1; the fixed 32-point rule gave K[5,5] = 1.204."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 4))
    x = x / np.linalg.norm(x, axis=1, keepdims=True) * np.linspace(0.3, 3.1, 6)[:, None]
    a = 3.1**2
    exact = (2 / math.pi) * math.asin(2 * a / (1 + 2 * a)) + a * 4 / (math.pi * math.sqrt(1 + 4 * a))
    ntk = kernels.infinite_ntk(two_layer(64, 1.0, phi="erf", trained="all"), x)
    np.testing.assert_allclose(ntk[5, 5], exact, rtol=1e-12)


def test_gelu_closed_form_matches_the_quadrature():
    """Two independent derivations of the GELU kernel: the closed form and the panel quadrature (whose own
    error for GELU's derivative kernel is about 2e-8 at 8 nodes per panel)."""
    import ntkhom.dual as dual_module

    dual = dual_activation("gelu")
    c, a, b = jnp.array([0.5, -30.0, 99.9, 0.3, 0.01]), jnp.array([0.01, 30.0, 100.0, 1.0, 0.01]), jnp.array(
        [100.0, 40.0, 100.0, 2.0, 0.01])
    for closed, fn in ((dual.product, dual.phi.fn), (dual.derivative_product, dual.phi.derivative)):
        quadrature = jax.vmap(lambda c, a, b, fn=fn: gaussian_expectation_2d(fn, c, a, b, dual_module.FEATURES["gelu"]))
        np.testing.assert_allclose(closed(c, a, b), quadrature(c, a, b), rtol=1e-7, atol=1e-14)


@pytest.mark.parametrize("which", ["fn", "derivative"])
def test_tanh_quadrature_converges_two_rules_agree(which):
    """A rule with two more nodes per panel gives the same values to 1e-9 (error estimate of the rule)."""
    import ntkhom.dual as dual_module

    fn = getattr(dual_activation("tanh").phi, which)
    features = dual_module.FEATURES["tanh"]
    cases = jnp.array([[0.5, 0.01, 100.0], [-30.0, 30.0, 40.0], [99.9, 100.0, 100.0], [0.3, 1.0, 2.0]]).T
    value = jax.vmap(lambda c, a, b: gaussian_expectation_2d(fn, c, a, b, features))(*cases)
    saved = dual_module.PANEL_NODES, dual_module._LEGENDRE_X, dual_module._LEGENDRE_W
    try:
        dual_module.PANEL_NODES = saved[0] + 2
        dual_module._LEGENDRE_X, dual_module._LEGENDRE_W = np.polynomial.legendre.leggauss(saved[0] + 2)
        unjitted = gaussian_expectation_2d.__wrapped__  # the jitted one would reuse its compiled rule
        finer = jax.vmap(lambda c, a, b: unjitted(fn, c, a, b, features))(*cases)
    finally:
        dual_module.PANEL_NODES, dual_module._LEGENDRE_X, dual_module._LEGENDRE_W = saved
    assert not np.array_equal(value, finer)  # really a different rule
    np.testing.assert_allclose(value, finer, rtol=1e-9, atol=1e-13)
