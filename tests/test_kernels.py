"""Kernels: structured vs neural-tangents, infinite vs closed form, finite -> infinite width, the s-path."""

import dataclasses
import warnings

import jax
import numpy as np
import pytest

from ntkhom import kernels
from ntkhom.activations import homotopy
from ntkhom.data import sphere
from ntkhom.models import mlp, two_layer
from ntkhom.nt import NtkImplementation

X = sphere(jax.random.PRNGKey(0), 9, 5)
X2 = sphere(jax.random.PRNGKey(7), 4, 5)


# Every value of each setting appears, without the full product (each case compiles neural-tangents anew).
@pytest.mark.parametrize(
    ("s", "width", "bias", "trained"),
    [(0.0, 17, False, "hidden"), (0.6, 256, True, "hidden"), (1.0, 17, True, "all"), (1.8, 256, False, "all"),
     (1.0, 256, False, "hidden"), (1.8, 17, True, "all")],
)
def test_structured_equals_neural_tangents(s, width, bias, trained):
    model = two_layer(width, s, bias=bias, trained=trained)
    if bias and trained == "all":
        model = dataclasses.replace(model, out_b_std=0.7)
    params = model.init(jax.random.PRNGKey(width), 5)
    reference = kernels.empirical_ntk(model, params, X, X2)
    ours = kernels.empirical_ntk_two_layer(model, params, X, X2, block_width=16)
    np.testing.assert_allclose(ours, reference, rtol=1e-12, atol=1e-12)


def test_structured_blocks_do_not_change_the_result():
    model = two_layer(300, 1.3, bias=True, trained="all")
    params = model.init(jax.random.PRNGKey(1), 5)
    whole = kernels.empirical_ntk_two_layer(model, params, X)
    for block_width, block_rows in [(7, None), (64, 2), (300, 5), (1000, 9)]:
        tiled = kernels.empirical_ntk_two_layer(model, params, X, block_width=block_width, block_rows=block_rows)
        np.testing.assert_allclose(tiled, whole, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(whole, whole.T, atol=1e-13)


def test_structured_float32_agrees_with_float64():
    model = two_layer(512, 1.0)
    params = model.init(jax.random.PRNGKey(1), 5)
    k64 = kernels.empirical_ntk_two_layer(model, params, X)
    params32 = jax.tree.map(lambda a: a.astype(np.float32), params)
    k32 = kernels.empirical_ntk_two_layer(model, params32, X.astype(np.float32))
    assert k32.dtype == np.float32
    np.testing.assert_allclose(k32, k64, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("phi", ["leaky_relu", "tanh", "gelu"])
def test_structured_other_activations(phi):
    model = two_layer(40, 0.7, phi=phi, trained="all")
    params = model.init(jax.random.PRNGKey(2), 5)
    np.testing.assert_allclose(
        kernels.empirical_ntk_two_layer(model, params, X),
        kernels.empirical_ntk(model, params, X, implementation=NtkImplementation.NTK_VECTOR_PRODUCTS),
        rtol=1e-11,
        atol=1e-11,
    )


# Sign-pattern counts (bit-packed, popcount) against float products: two independent computations of the
# hidden-layer term. Widths not a multiple of 32 pad the last word; width 2500 with 2100-column blocks runs
# several 1024-unit chunks per block; biases move the pattern off the origin.
@pytest.mark.parametrize(
    ("phi", "s", "width", "bias", "trained", "block_width"),
    [("relu", 1.0, 17, False, "hidden", None), ("relu", 0.3, 2500, True, "hidden", 2100),
     ("leaky_relu", 1.7, 100, True, "all", 40), ("abs", 2.6, 300, False, "hidden", 64),
     ("relu", -0.4, 64, True, "all", None)],
)
@pytest.mark.parametrize("other", [False, True], ids=["K(X,X)", "K(X,X2)"])
def test_sign_pattern_counts_equal_float_products(phi, s, width, bias, trained, block_width, other):
    model = two_layer(width, s, bias=bias, trained=trained, phi=phi)
    params = model.init(jax.random.PRNGKey(width), 5)
    x2 = X2 if other else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # s outside [0, 2] warns by design
        counted = kernels.empirical_ntk_two_layer(model, params, X, x2, block_width=block_width, pattern=True)
        products = kernels.empirical_ntk_two_layer(model, params, X, x2, block_width=block_width, pattern=False)
    np.testing.assert_allclose(counted, products, rtol=1e-12, atol=1e-12)
    path_counted = kernels.empirical_kernel_path(model, params, X, x2, block_width=block_width, pattern=True)
    path_products = kernels.empirical_kernel_path(model, params, X, x2, block_width=block_width, pattern=False)
    for name in ("K0", "K1", "K2"):
        np.testing.assert_allclose(getattr(path_counted, name), getattr(path_products, name), atol=1e-12)


def test_sign_pattern_counts_are_exact_in_float32():
    # The counts are integers, so the float32 kernel from them is at least as close to float64 as the
    # float32 products are.
    model = two_layer(3000, 1.0)
    params = model.init(jax.random.PRNGKey(5), 5)
    k64 = np.asarray(kernels.empirical_ntk_two_layer(model, params, X, pattern=False))
    params32 = jax.tree.map(lambda a: a.astype(np.float32), params)
    x32 = X.astype(np.float32)
    counted = np.asarray(kernels.empirical_ntk_two_layer(model, params32, x32, pattern=True))
    products = np.asarray(kernels.empirical_ntk_two_layer(model, params32, x32, pattern=False))
    assert counted.dtype == np.float32
    assert np.abs(counted - k64).max() <= np.abs(products - k64).max() + 1e-7


def test_unequal_output_weights_fall_back_to_products():
    model = two_layer(50, 0.8, trained="hidden")
    params = model.init(jax.random.PRNGKey(6), 5)
    scaled = (params[0], {"W": params[1]["W"] * np.linspace(0.5, 2.0, 50)[:, None]})
    reference = kernels.empirical_ntk(model, scaled, X, X2)
    np.testing.assert_allclose(kernels.empirical_ntk_two_layer(model, scaled, X, X2), reference, atol=1e-12)
    with pytest.raises(ValueError, match="equal magnitude.*unequal"):
        kernels.empirical_ntk_two_layer(model, scaled, X, pattern=True)


@pytest.mark.parametrize("s", [0.0, 0.25, 0.5, 1.0, 1.5, 2.0])
@pytest.mark.parametrize("trained", ["hidden", "all"])
def test_infinite_width_equals_closed_form(s, trained):
    """neural-tangents' ABRelu kernel against the independent arcsine / arc-cosine closed form."""
    model = two_layer(1, s, trained=trained)
    np.testing.assert_allclose(
        kernels.infinite_ntk(model, X, X2), kernels.closed_form_ntk_relu(X, X2, s=s, trained=trained), atol=1e-6
    )


def test_closed_form_at_relu_is_du_et_al_gram():
    gram = np.asarray(X @ X.T)
    rho = np.clip(gram, -1, 1)
    du = gram * (np.pi - np.arccos(rho)) / (2 * np.pi)  # H^inf of Du et al. (2019)
    np.testing.assert_allclose(kernels.closed_form_ntk_relu(X, s=1.0), du, atol=1e-12)


def test_empirical_approaches_infinite_width_at_rate_one_over_sqrt_width():
    model = two_layer(1, 1.0)
    limit = np.asarray(kernels.infinite_ntk(model, X))
    widths = np.array([64, 256, 1024, 4096, 16384])
    errors = []
    for width in widths:
        per_seed = []
        for seed in range(6):
            m = dataclasses.replace(model, widths=(int(width),))
            params = m.init(jax.random.PRNGKey(100 * seed + int(width)), 5)
            per_seed.append(np.linalg.norm(kernels.empirical_ntk_two_layer(m, params, X) - limit))
        errors.append(np.mean(per_seed))
    slope = np.polyfit(np.log(widths), np.log(errors), 1)[0]
    assert -0.65 < slope < -0.35, f"log-log slope {slope:.3f}, errors {errors}"


def test_finite_path_equals_direct_at_unused_s():
    model = two_layer(200, bias=True, trained="all")
    params = model.init(jax.random.PRNGKey(3), 5)
    path = kernels.empirical_kernel_path(model, params, X, X2, block_width=64)
    for s in (0.37, 1.21, 1.9):
        np.testing.assert_allclose(path.at(s), kernels.empirical_ntk_two_layer(model, params, X, X2, s=s), atol=1e-12)
    stacked = path.at(np.array([0.1, 0.9]))
    np.testing.assert_allclose(stacked[1], path.at(0.9), atol=1e-14)


def test_infinite_path_equals_direct_at_unused_s():
    model = two_layer(1, bias=True, trained="all")
    path = kernels.infinite_kernel_path(model, X)
    for s in (0.37, 1.21, 1.93):
        np.testing.assert_allclose(path.at(s), kernels.infinite_ntk(model, X, s=s), atol=1e-10)


def test_deep_empirical_ntk_hidden_is_full_minus_output_layer():
    model = dataclasses.replace(mlp((16, 12), 0.7, trained="all"), out_b_std=0.5)
    params = model.init(jax.random.PRNGKey(4), 5)
    full = kernels.empirical_ntk(model, params, X)
    hidden = kernels.empirical_ntk(dataclasses.replace(model, trained="hidden"), params, X)
    # The output layer's own contribution: features of the last hidden layer (and the bias term).
    h = X
    scales = model.layer_scales(5)
    for entry, (w_std, b_std) in zip(params[:-1], scales[:-1]):
        h = homotopy(w_std / np.sqrt(h.shape[1]) * (h @ entry["W"]) + b_std * entry["b"], 0.7)
    out = scales[-1][0] ** 2 / h.shape[1] * (h @ h.T) + (scales[-1][1] or 0.0) ** 2
    np.testing.assert_allclose(full - hidden, out, atol=1e-10)


def test_deep_infinite_kernel_is_symmetric_positive():
    model = mlp((1, 1, 1), 1.5)
    K = np.asarray(kernels.infinite_ntk(model, X))
    np.testing.assert_allclose(K, K.T, atol=1e-12)
    assert np.linalg.eigvalsh(K)[0] > 0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda m, p: kernels.empirical_ntk_two_layer(m, p, np.ones((3, 4))),
            "4 features but the network expects d = 5",
        ),
        (lambda m, p: kernels.empirical_ntk_two_layer(m, p, X, np.ones((2, 3))), "3 features"),
        (lambda m, p: kernels.empirical_ntk(m, p, np.full((2, 5), np.nan)), "non-finite"),
        (lambda m, p: kernels.empirical_ntk_two_layer(m, p, X, block_width=0), "block_width must be positive"),
        (lambda m, p: kernels.empirical_ntk_two_layer(m, p, np.ones(5)), "2-D array"),
        (lambda m, p: kernels.closed_form_ntk_relu(np.zeros((2, 5))), "nonzero inputs"),
        (lambda m, p: kernels.empirical_kernel_path(mlp((4, 4)), p, X), "two-layer network"),
        (lambda m, p: kernels.empirical_ntk_two_layer(two_layer(8, phi="tanh"), p, X, pattern=True), "'tanh'"),
        (lambda m, p: kernels.empirical_ntk_two_layer(m, p, X, pattern="yes"), "pattern must be"),
    ],
    ids=["d-mismatch", "x2-mismatch", "nan", "block", "rank", "zero-input", "deep-path", "pattern-phi",
         "pattern-option"],
)
def test_bad_input_is_named(call, message):
    model = two_layer(8)
    params = model.init(jax.random.PRNGKey(0), 5)
    with pytest.raises(ValueError, match=message):
        call(model, params)


def test_numerical_kernel_of_smooth_phi_matches_exact_erf_kernel():
    """At s = 1 the homotopy erf network is an erf network: our quadrature kernel against neural-tangents'
    closed-form Erf layer."""
    from ntkhom.nt import stax

    model = two_layer(1, 1.0, phi="erf", trained="all")
    ours = kernels.infinite_ntk(model, X)
    _, _, exact_fn = stax.serial(stax.Dense(1, W_std=np.sqrt(5), b_std=None), stax.Erf(), stax.Dense(1, b_std=None))
    np.testing.assert_allclose(ours, exact_fn(X, None, "ntk"), rtol=1e-4, atol=1e-5)


def test_infinite_kernel_batches_must_divide_the_points():
    from ntkhom import models

    x = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (12, 3)))
    model = models.two_layer(1)
    for bad in (0, -1, 5, 2.0):
        with pytest.raises(ValueError, match="batch_size must be a positive integer dividing"):
            kernels.infinite_ntk(model, x, batch_size=bad)
    # batched and whole agree to the arccos rounding near the diagonal (about sqrt(eps); measured 6.8e-9)
    np.testing.assert_allclose(kernels.infinite_ntk(model, x, batch_size=4), kernels.infinite_ntk(model, x),
                               rtol=1e-7)
