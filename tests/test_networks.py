"""The network protocol: adapters give the same function, partition/combine, trained masks, NaN parameters."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntkhom import networks
from ntkhom.activations import homotopy
from ntkhom.models import mlp, two_layer

D, WIDTH, S = 3, 7, 1.3
X = jax.random.normal(jax.random.PRNGKey(0), (5, D)) * jnp.array([0.3, 1.0, 2.5])  # off the unit sphere


def plain(params, x, s):
    W, a = params[0]["W"], params[1]["W"]
    return homotopy(x @ W, s) @ a / math.sqrt(W.shape[1])


def test_partition_combine_round_trip_and_masks():
    params = {"dense": {"W": jnp.ones((2, 3)), "b": jnp.zeros(3)}, "out": jnp.arange(3.0)}
    trainable, frozen = networks.partition(params, {"dense": {"W": True, "b": False}, "out": True})
    assert trainable["dense"]["b"] is None and frozen["dense"]["W"] is None and frozen["out"] is None
    restored = networks.combine(trainable, frozen)
    assert jax.tree.structure(restored) == jax.tree.structure(params)
    for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(params)):
        np.testing.assert_array_equal(got, want)
    # A prefix (one bool for a subtree) and a predicate on the key path give the same split.
    by_prefix, _ = networks.partition(params, {"dense": False, "out": True})
    by_path, _ = networks.partition(params, lambda path: jax.tree_util.keystr(path).startswith("['out']"))
    assert jax.tree.leaves(by_prefix) == jax.tree.leaves(by_path)
    assert len(jax.tree.leaves(by_prefix)) == 1
    with pytest.raises(ValueError, match="trained must be"):
        networks.partition(params, {"dense": True})


def test_homotopy_mlp_default_trained_is_the_model_setting():
    model = mlp((4, 3), trained="hidden", bias=True)
    params = model.init(jax.random.PRNGKey(1), D)
    trainable, frozen = networks.as_network(model).partition(params)
    assert trainable[-1]["W"] is None and trainable[-1].get("b") is None
    assert frozen[0]["W"] is None and trainable[1]["b"] is not None
    everything, _ = networks.as_network(model, trained="all").partition(params)
    assert all(leaf is not None for leaf in jax.tree.leaves(everything))


def test_four_adapters_compute_the_same_function():
    from flax import nnx

    from ntkhom.nt import stax

    model = two_layer(WIDTH, S, trained="all")
    params = model.init(jax.random.PRNGKey(2), D)
    reference = model.apply(params, X)

    lo, hi = 1.0 - S, 1.0  # sigma_s for ReLU: slopes (1 - s) below zero, 1 above
    triple = stax.serial(stax.Dense(WIDTH, W_std=math.sqrt(D)), stax.ABRelu(lo, hi), stax.Dense(1))

    class Homotopy2(nnx.Module):
        def __init__(self, W, a):
            self.W, self.a = nnx.Param(W), nnx.Param(a)

        def __call__(self, x, s=S):
            return homotopy(x @ self.W[...], s) @ self.a[...] / math.sqrt(self.W.shape[1])

    module = Homotopy2(params[0]["W"], params[1]["W"])
    _, state = nnx.split(module)
    cases = [
        (networks.as_network(plain), params, S),
        (networks.as_network(triple), model.to_stax_params(params), None),
        (networks.as_network(module), state, S),
        (networks.as_network(model), params, None),
    ]
    for network, p, s in cases:
        np.testing.assert_allclose(network.apply(p, X, s), reference, rtol=1e-12, atol=1e-12)
    assert networks.as_network(plain).accepts_s and not networks.as_network(triple).accepts_s
    assert networks.as_network(plain) == networks.as_network(plain)  # jit caches keyed on it are reused
    assert networks.as_network(model) == networks.as_network(two_layer(WIDTH, S, trained="all"))
    with pytest.raises(TypeError, match="no homotopy parameter"):
        networks.as_network(triple).apply(model.to_stax_params(params), X, 0.5)


def test_linen_module_adapter():
    from flax import linen

    class Net(linen.Module):
        @linen.compact
        def __call__(self, x):
            return linen.Dense(1)(jnp.tanh(linen.Dense(4)(x)))

    module = Net()
    variables = module.init(jax.random.PRNGKey(3), X)
    network = networks.as_network(module)
    np.testing.assert_allclose(network.apply(variables, X), module.apply(variables, X), rtol=1e-14)
    assert network.kernel_fn is None and not network.accepts_s
    assert networks.as_network(Net()) == network  # equal modules share compiled kernels


def test_non_finite_parameters_are_named():
    model = two_layer(WIDTH, S)
    params = model.init(jax.random.PRNGKey(4), D)
    networks.check_params(params)
    params[0]["W"] = params[0]["W"].at[0, 0].set(jnp.nan)
    with pytest.raises(ValueError, match=r"params\[0\]\['W'\] contains NaN"):
        networks.check_params(params)
    params[0]["W"] = params[0]["W"].at[0, 0].set(jnp.inf)
    with pytest.raises(ValueError, match=r"params\[0\]\['W'\] contains inf"):
        networks.check_params(params)


def test_refuses_what_it_cannot_read():
    with pytest.raises(TypeError, match="as_network expects"):
        networks.as_network(42)


def test_trained_by_name_only_for_homotopy_networks():
    model = two_layer(WIDTH, S)
    params = model.init(jax.random.PRNGKey(5), D)
    trainable, _ = networks.as_network(model).partition(params, "all")
    assert trainable[1]["W"] is not None
    trainable, _ = networks.as_network(two_layer(WIDTH, S, trained="all")).partition(params, "hidden")
    assert trainable[1]["W"] is None
    with pytest.raises(ValueError, match="HomotopyMLP only"):
        networks.partition(params, "hidden")


def test_a_function_that_needs_s_says_so():
    params = two_layer(WIDTH, S).init(jax.random.PRNGKey(6), D)
    with pytest.raises(TypeError, match="takes s with no default"):
        networks.as_network(plain).apply(params, X)

    def with_default(params, x, s=S):
        return plain(params, x, s)

    np.testing.assert_allclose(networks.as_network(with_default).apply(params, X), plain(params, X, S), rtol=1e-14)
