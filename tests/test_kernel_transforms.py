"""Kernels of any network under jit, vmap and grad; one network written four ways; Monte Carlo at infinite width."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntkhom import kernels, networks, spectrum
from ntkhom.activations import homotopy
from ntkhom.models import two_layer

D, WIDTH, S = 3, 9, 1.3
# Off the unit sphere, with a dead-ish direction: norms from 0.3 to ~5.
X = jax.random.normal(jax.random.PRNGKey(0), (6, D)) * jnp.array([0.3, 1.0, 2.5])
X2 = jax.random.normal(jax.random.PRNGKey(1), (4, D))


def plain(params, x, s):
    W, a = params[0]["W"], params[1]["W"]
    return homotopy(x @ W, s) @ a / math.sqrt(W.shape[1])


def central_difference(f, s, h=1e-5):
    return (f(s + h) - f(s - h)) / (2 * h)


@pytest.fixture(scope="module")
def model_params():
    model = two_layer(WIDTH, S, trained="all")
    return model, model.init(jax.random.PRNGKey(2), D)


def test_every_kernel_under_jit_equals_eager(model_params):
    model, params = model_params
    cases = {
        "empirical_ntk": lambda p, x: kernels.empirical_ntk(plain, p, x, X2, s=0.7),
        "two_layer": lambda p, x: kernels.empirical_ntk_two_layer(model, p, x, X2, s=0.7),
        "network_kernel": lambda p, x: kernels.network_kernel(model, p, x, s=0.7),
        "path": lambda p, x: kernels.empirical_kernel_path(model, p, x, X2),
        "batch": lambda p, x: kernels.empirical_ntk_batch(
            model, jax.tree.map(lambda a: jnp.stack([a, 2 * a]), p), x, s=jnp.array([0.5, 1.5])),
        "infinite_ntk": lambda p, x: kernels.infinite_ntk(model, x, X2, s=0.7),
        "infinite_nngp": lambda p, x: kernels.infinite_nngp(model, x, s=0.7),
        "infinite_path": lambda p, x: kernels.infinite_kernel_path(model, x),
        "closed_form": lambda p, x: kernels.closed_form_ntk_relu(x, X2, s=0.7, trained="all"),
        "device_spectrum": lambda p, x: spectrum.device_spectrum(kernels.network_kernel(model, p, x)),
    }
    for name, call in cases.items():
        eager = call(params, X)
        jitted = jax.jit(call)(params, X)
        assert jax.tree.structure(jitted) == jax.tree.structure(eager), name
        # neural-tangents' arc-cosine kernels take arccos(rho) at rho = 1 on the diagonal, where rounding is
        # amplified to ~sqrt(eps): a fused (jitted) evaluation differs there by ~1e-9 relative.
        rtol = 1e-7 if name.startswith("infinite") else 1e-10
        for got, want in zip(jax.tree.leaves(jitted), jax.tree.leaves(eager)):
            np.testing.assert_allclose(got, want, rtol=rtol, atol=1e-12, err_msg=name)


def test_vmap_over_s_equals_a_loop(model_params):
    model, params = model_params
    grid = jnp.array([0.0, 0.4, 1.1, 1.9])
    stacked = jax.vmap(lambda s: kernels.empirical_ntk_two_layer(model, params, X, s=s))(grid)
    generic = jax.vmap(lambda s: kernels.empirical_ntk(plain, params, X, s=s))(grid)
    for i, s in enumerate(grid):
        loop = kernels.empirical_ntk_two_layer(model, params, X, s=float(s))
        np.testing.assert_allclose(stacked[i], loop, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(generic[i], loop, rtol=1e-10, atol=1e-12)


def test_grad_with_respect_to_s_matches_central_differences(model_params):
    model, params = model_params
    entries = {
        "two_layer": lambda s: kernels.empirical_ntk_two_layer(model, params, X, X2, s=s)[1, 2],
        "empirical_ntk": lambda s: kernels.empirical_ntk(plain, params, X, X2, s=s)[4, 0],
        "closed_form": lambda s: kernels.closed_form_ntk_relu(X, X2, s=s, trained="all")[2, 3],
        "lambda_max": lambda s: spectrum.device_spectrum(kernels.empirical_ntk(plain, params, X, s=s)).lambda_max,
        "lambda_min": lambda s: spectrum.device_spectrum(kernels.closed_form_ntk_relu(X, s=s)).lambda_min,
    }
    for name, f in entries.items():
        for s in (0.35, 1.3):
            np.testing.assert_allclose(jax.grad(f)(s), central_difference(f, s), rtol=1e-6, atol=1e-9, err_msg=name)


def test_grad_with_respect_to_params_matches_central_differences(model_params):
    model, params = model_params

    def shifted(h):
        return (params[0] | {"W": params[0]["W"].at[1, 3].add(h)}, params[1])

    for name, kernel in {
        "two_layer": lambda p: kernels.empirical_ntk_two_layer(model, p, X, s=0.8)[0, 5],
        "empirical_ntk": lambda p: kernels.empirical_ntk(plain, p, X, s=0.8)[0, 5],
    }.items():
        grad = jax.grad(kernel)(params)[0]["W"][1, 3]
        difference = central_difference(lambda h, kernel=kernel: kernel(shifted(h)), 0.0)
        np.testing.assert_allclose(grad, difference, rtol=1e-6, err_msg=name)


def test_sign_pattern_default_gives_the_same_kernel_traced_or_concrete(model_params):
    model = two_layer(200, 1.0, bias=True)
    params = model.init(jax.random.PRNGKey(3), D)
    concrete = kernels.empirical_ntk_two_layer(model, params, X, s=0.6)  # counts sign patterns
    traced = jax.jit(lambda p: kernels.empirical_ntk_two_layer(model, p, X, s=0.6))(params)  # float products
    np.testing.assert_allclose(traced, concrete, rtol=1e-12, atol=1e-12)


def test_one_network_written_four_ways_has_one_kernel():
    from flax import nnx

    from ntkhom.nt import stax

    model = two_layer(WIDTH, S, trained="all")
    params = model.init(jax.random.PRNGKey(4), D)
    triple = stax.serial(stax.Dense(WIDTH, W_std=math.sqrt(D)), stax.ABRelu(1.0 - S, 1.0), stax.Dense(1))

    class TwoLayer(nnx.Module):  # NTK parameterization, so the kernel is that of the same parameters
        def __init__(self, W, a):
            self.W, self.a = nnx.Param(W), nnx.Param(a)

        def __call__(self, x):
            return homotopy(x @ self.W[...], S) @ self.a[...] / math.sqrt(self.W.shape[1])

    _, state = nnx.split(TwoLayer(params[0]["W"], params[1]["W"]))
    reference = kernels.empirical_ntk(model, params, X, X2)
    ways = {
        "plain": kernels.empirical_ntk(plain, params, X, X2, s=S),
        "stax": kernels.empirical_ntk(triple, model.to_stax_params(params), X, X2),
        "nnx": kernels.empirical_ntk(nnx.split(TwoLayer(params[0]["W"], params[1]["W"]))[0], state, X, X2),
        "structured": kernels.empirical_ntk_two_layer(model, params, X, X2),
    }
    for name, K in ways.items():
        np.testing.assert_allclose(K, reference, rtol=1e-10, atol=1e-10, err_msg=name)
    # The hidden layer alone: a path predicate on the plain function equals the model's own setting.
    hidden = kernels.empirical_ntk(plain, params, X, s=S, trained=lambda path: path[0].idx == 0)
    np.testing.assert_allclose(hidden, kernels.empirical_ntk(two_layer(WIDTH, S), params, X), rtol=1e-10, atol=1e-12)
    # At infinite width the stax triple and the HomotopyMLP agree, and both equal the closed form.
    closed = kernels.closed_form_ntk_relu(X, X2, s=S, trained="all")
    np.testing.assert_allclose(kernels.infinite_ntk(triple, X, X2), closed, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(kernels.infinite_ntk(model, X, X2), closed, rtol=1e-8, atol=1e-8)


def test_infinite_ntk_of_a_deep_mixed_s_architecture_matches_monte_carlo():
    from ntkhom.nt import stax
    from ntkhom.stax import Homotopy

    width, s_values = 256, (0.5, 1.0, 1.7)
    layers = []
    for i, s in enumerate(s_values):
        layers += [stax.Dense(width, W_std=math.sqrt(2.0) if i else 1.5, b_std=0.3), Homotopy(s)]
    init_fn, apply_fn, kernel_fn = stax.serial(*layers, stax.Dense(1, W_std=1.0))
    network = networks.as_network((init_fn, apply_fn, kernel_fn))
    x = X[:3]
    exact = np.asarray(kernels.infinite_ntk(network, x))

    keys = jax.random.split(jax.random.PRNGKey(10), 64)
    params = jax.vmap(lambda key: init_fn(key, x.shape)[1])(keys)
    draws = np.asarray(kernels.empirical_ntk_batch(network, params, x))
    spread = draws.std(axis=0, ddof=1)  # per-entry spread of one draw, from all of them
    errors = []
    for samples in (4, 16, 64):
        error = np.abs(draws[:samples].mean(axis=0) - exact)
        # Width 256 leaves an O(1/width) bias of about 1e-2 relative, below these error bars.
        assert np.all(error <= 4.0 * spread / math.sqrt(samples)), (samples, error, spread)
        errors.append(np.sqrt(np.mean((error / np.abs(exact)) ** 2)))
    assert errors[2] < errors[1] < errors[0], errors  # the estimate closes in as the sample grows


def test_nan_parameters_and_inputs_are_named(model_params):
    model, params = model_params
    bad = (params[0] | {"W": params[0]["W"].at[0, 0].set(jnp.nan)}, params[1])
    for call in (kernels.empirical_ntk_two_layer, kernels.empirical_ntk, kernels.network_kernel):
        with pytest.raises(ValueError, match=r"params\[0\]\['W'\] contains NaN"):
            call(model, bad, X)
    x2 = X2.at[1, 1].set(jnp.nan)
    for call in (kernels.empirical_ntk_two_layer, kernels.empirical_ntk):
        with pytest.raises(ValueError, match="^x2 contains 1 non-finite"):
            call(model, params, X, x2)


def test_batch_compiles_once_per_network_and_shape(model_params):
    model, params = model_params
    stacked = jax.tree.map(lambda a: jnp.stack([a, -a]), params)
    kernels.empirical_ntk_batch(model, stacked, X, s=jnp.array([0.2, 0.9]))
    before = kernels._batch_ntk._cache_size()
    for _ in range(3):
        kernels.empirical_ntk_batch(two_layer(WIDTH, S, trained="all"), stacked, X, s=jnp.array([0.3, 1.0]))
    assert kernels._batch_ntk._cache_size() == before


def test_kernel_path_is_a_pytree(model_params):
    model, params = model_params
    path = kernels.empirical_kernel_path(model, params, X)
    doubled = jax.tree.map(lambda k: 2 * k, path)
    np.testing.assert_allclose(doubled.at(0.8), 2 * path.at(0.8), rtol=1e-13)


def test_a_network_without_infinite_width_says_so():
    with pytest.raises(ValueError, match="no infinite-width description"):
        kernels.infinite_ntk(plain, X)
    with pytest.raises(TypeError, match="no homotopy parameter"):
        from ntkhom.nt import stax

        kernels.infinite_ntk(stax.serial(stax.Dense(3), stax.Relu(), stax.Dense(1)), X, s=0.5)


def test_linen_linear_model_has_the_gram_kernel():
    from flax import linen

    # f(x) = x W + b: d f_o / d W_ro = x_r and d f_o / d b_o = 1 for each of the 3 outputs.
    module = linen.Dense(3, param_dtype=jnp.float64)
    variables = module.init(jax.random.PRNGKey(5), X)
    np.testing.assert_allclose(kernels.empirical_ntk(module, variables, X, X2), X @ X2.T + 1.0, rtol=1e-12)
    only_bias = kernels.empirical_ntk(module, variables, X, trained=lambda path: path[-1].key == "bias")
    np.testing.assert_allclose(only_bias, np.ones((6, 6)), rtol=1e-12)


def test_infinite_ntk_is_differentiable_in_s():
    from ntkhom.nt import stax
    from ntkhom.stax import Homotopy

    model = two_layer(1, trained="all")

    def built_inside(s):  # a user's stax network with s traced through the public homotopy layer
        triple = stax.serial(stax.Dense(4, W_std=math.sqrt(D)), Homotopy(s), stax.Dense(1))
        return kernels.infinite_ntk(triple, X, X2)[3, 1]

    entries = {
        "HomotopyMLP": lambda s: kernels.infinite_ntk(model, X, X2, s=s)[3, 1],
        "stax": built_inside,
    }
    closed = jax.grad(lambda s: kernels.closed_form_ntk_relu(X, X2, s=s, trained="all")[3, 1])
    for name, f in entries.items():
        grad = jax.grad(f)(0.7)
        np.testing.assert_allclose(grad, central_difference(f, 0.7), rtol=1e-6, err_msg=name)
        np.testing.assert_allclose(grad, closed(0.7), rtol=1e-8, err_msg=name)
