import dataclasses

import jax
import numpy as np
import pytest

from ntkhom.data import sphere
from ntkhom.models import HomotopyMLP, mlp, two_layer

KEY = jax.random.PRNGKey(0)


@pytest.mark.parametrize(
    "model",
    [
        two_layer(32, 0.5),
        two_layer(16, 1.5, bias=True, trained="all"),
        mlp((12, 9, 7), 0.8),
        mlp((10, 6), 1.2, phi="erf", out_dim=3),
    ],
    ids=["two-layer", "two-layer-bias", "deep", "deep-erf-3out"],
)
def test_apply_matches_neural_tangents_stax(model):
    """One description: our forward pass equals the stax network built from the same description."""
    x = sphere(KEY, 6, 5)
    params = model.init(jax.random.PRNGKey(1), 5)
    _, stax_apply, _ = model.stax(5)
    np.testing.assert_allclose(model.apply(params, x), stax_apply(model.to_stax_params(params), x), atol=1e-12)


def test_two_layer_follows_hrta_convention():
    model = two_layer(1000, 1.0)
    params = model.init(KEY, 4)
    a = params[1]["W"]
    assert set(np.unique(np.asarray(a))) == {-1.0, 1.0}
    x = sphere(jax.random.PRNGKey(3), 3, 4)
    w = params[0]["W"]
    manual = (jax.nn.relu(x @ w) @ a) / np.sqrt(1000)
    np.testing.assert_allclose(model.apply(params, x), manual, atol=1e-12)


def test_s_can_be_traced_and_vmapped():
    model = two_layer(8)
    params = model.init(KEY, 3)
    x = sphere(KEY, 4, 3)
    s_grid = np.array([0.0, 0.5, 1.0])
    batched = jax.vmap(lambda s: model.apply(params, x, s))(s_grid)
    for i, s in enumerate(s_grid):
        np.testing.assert_allclose(batched[i], model.apply(params, x, float(s)), atol=1e-12)


def test_trainable_and_combine_round_trip():
    model = two_layer(8)
    params = model.init(KEY, 3)
    assert len(model.trainable(params)) == 1
    assert model.combine(model.trainable(params), params) == params
    full = dataclasses.replace(model, trained="all")
    assert len(full.trainable(params)) == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"widths": (0,)}, "positive integer"),
        ({"widths": (8, -1)}, "positive integer"),
        ({"widths": ()}, "empty"),
        ({"widths": (4,), "trained": "output"}, "unknown trained"),
        ({"widths": (4,), "phi": "swish"}, "unknown activation"),
        ({"widths": (4,), "W_std": -1.0}, "W_std"),
        ({"widths": (4,), "out_dim": 0}, "out_dim"),
    ],
)
def test_bad_settings_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HomotopyMLP(**kwargs)


def test_input_dimension_mismatch_and_nan_are_refused():
    model = two_layer(8)
    params = model.init(KEY, 3)
    with pytest.raises(ValueError, match="4 features but the network expects d = 3"):
        model.check(params, np.ones((2, 4)))
    with pytest.raises(ValueError, match="non-finite"):
        model.check(params, np.array([[1.0, np.nan, 0.0]]))
    with pytest.raises(ValueError, match="input dimension"):
        model.init(KEY, 0)


def test_parameters_of_another_shape_and_inputs_of_another_dimension_are_named():
    # Shapes only, so the checks hold under jit as well; each used to be a dot_general TypeError, a KeyError,
    # or (one layer short, or a 1-D x) a silent result of another network.
    model = mlp((6, 5), out_dim=2)
    params = model.init(KEY, 3)
    x = np.ones((4, 3))
    cases = [
        (params[:2], "params must be 3 layers"),
        ((params[0], params[1], {"W": np.ones((7, 2))}), r"params\[2\]\['W'\] has shape \(7, 2\), expected \(5, 2\)"),
        ((params[0], {"V": params[1]["W"]}, params[2]), "params must be 3 layers"),
    ]
    for bad, message in cases:
        for apply in (model.apply, jax.jit(model.apply)):
            with pytest.raises(ValueError, match=message):
                apply(bad, x)
    for apply in (model.apply, jax.jit(model.apply)):
        with pytest.raises(ValueError, match="2 features but the network expects d = 3"):
            apply(params, x[:, :2])
        with pytest.raises(ValueError, match=r"must be \(n, 3\)"):
            apply(params, x[0])
    assert model.apply(params, x).shape == (4, 2)


def test_non_finite_parameters_propagate_through_the_forward_pass():
    # The kernels refuse NaN parameters (tests/test_kernel_transforms.py); the forward pass must not hide them.
    model = two_layer(4)
    params = model.init(jax.random.PRNGKey(0), 3)
    bad = (params[0], {"W": params[1]["W"].at[2, 0].set(np.nan)})
    assert np.all(np.isnan(model.apply(bad, np.ones((2, 3)))))


def test_width_true_is_not_a_width():
    with pytest.raises(ValueError, match="positive integer"):
        two_layer(True)


def test_init_dtype_is_explicit():
    params = two_layer(4).init(jax.random.PRNGKey(0), 3, dtype=np.float32)
    assert all(leaf.dtype == np.float32 for leaf in jax.tree.leaves(params))
