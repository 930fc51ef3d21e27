"""ntkhom.nt makes neural-tangents import and run on current JAX without TensorFlow.

One canary per neural-tangents entry point that ntkhom exposes, each checked against a value computed here
(NumPy closed forms, our own jacrev): the next JAX release that breaks one fails a named test here.
"""

import subprocess
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntkhom.nt import (
    NtkImplementation,
    StructuredDerivativesUnavailable,
    empirical_kernel_fn,
    empirical_ntk_fn,
    max_learning_rate,
    monte_carlo_kernel_fn,
    nt,
    predict,
    stax,
)

X = jnp.asarray(np.random.default_rng(0).normal(size=(5, 3)) * np.array([[0.3], [1.0], [2.0], [0.7], [4.0]]))
JSIZE_MESSAGE = "size requires ndarray or scalar arguments"


def _relu_net(width=16):
    return stax.serial(stax.Dense(width, W_std=1.3, b_std=0.4), stax.Relu(), stax.Dense(1, W_std=0.9, b_std=0.2))


def _own_ntk(apply_fn, params, x):
    """J J^T from our own jacrev over every parameter leaf (output dimension 1)."""
    jac = jax.jacrev(lambda p: apply_fn(p, x)[:, 0])(params)
    flat = np.concatenate([np.asarray(leaf).reshape(x.shape[0], -1) for leaf in jax.tree.leaves(jac)], axis=1)
    return flat @ flat.T


def _arccos_relu_kernels(x, W1, b1, W2, b2):
    """NNGP and NTK of Dense(W1, b1)-ReLU-Dense(W2, b2) at infinite width, NumPy (Cho and Saul 2009)."""
    x = np.asarray(x)
    q = W1**2 * x @ x.T / x.shape[1] + b1**2
    norms = np.sqrt(np.diag(q))
    cos = np.clip(q / np.outer(norms, norms), -1, 1)
    theta = np.arccos(cos)
    e_relu = np.outer(norms, norms) * (np.sin(theta) + (np.pi - theta) * cos) / (2 * np.pi)
    e_step = (np.pi - theta) / (2 * np.pi)
    nngp = W2**2 * e_relu + b2**2
    ntk = nngp + W2**2 * q * e_step
    return nngp, ntk


def test_import_does_not_load_tensorflow():
    code = (
        "import sys, ntkhom, ntkhom.kernels, ntkhom.nt; ntkhom.nt.load(); "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tf2jax')]; "
        "print(','.join(bad)); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"TensorFlow modules loaded: {done.stdout} {done.stderr[-2000:]}"


def test_supplied_names_never_replace_existing_ones():
    import jax.core
    import jax.extend.core

    # Names current JAX still has keep JAX's own object, eval_context included (predict gets its own view).
    assert jax.core.ShapedArray is __import__("jax._src.core", fromlist=["ShapedArray"]).ShapedArray
    assert jax.core.eval_context is __import__("jax._src.core", fromlist=["eval_context"]).eval_context
    # Names we supply point at their current home.
    assert jax.core.Jaxpr is jax.extend.core.Jaxpr
    assert issubclass(jax.random.KeyArray, jax.Array) or jax.random.KeyArray is jax.Array


def test_experimental_module_refuses_clearly():
    with pytest.raises(ImportError, match="TensorFlow"):
        nt.experimental.empirical_ntk_fn_tf  # noqa: B018


# -- stax ------------------------------------------------------------------------------------------------
def test_canary_stax_kernel_fn_matches_arccos_closed_form():
    _, _, kernel_fn = _relu_net()
    kernel = kernel_fn(X, None, ("nngp", "ntk"))
    nngp, ntk = _arccos_relu_kernels(X, 1.3, 0.4, 0.9, 0.2)
    # On the diagonal the angle is arccos of 1 - O(eps), so either side carries O(sqrt(eps)) error there.
    np.testing.assert_allclose(kernel.nngp, nngp, rtol=1e-8, atol=1e-14)
    np.testing.assert_allclose(kernel.ntk, ntk, rtol=1e-8, atol=1e-14)


def test_canary_batch_equals_unbatched():
    _, _, kernel_fn = _relu_net()
    x = jnp.concatenate([X, X[:1] * 2.0])  # 6 rows, tiles of 2
    batched = nt.batch(kernel_fn, batch_size=2)(x, None, "ntk")
    np.testing.assert_allclose(batched, kernel_fn(x, None, "ntk"), rtol=1e-8)  # diagonal arccos, as above


# -- empirical kernels -----------------------------------------------------------------------------------
@pytest.mark.parametrize("implementation", ["JACOBIAN_CONTRACTION", "NTK_VECTOR_PRODUCTS", "AUTO"])
def test_canary_empirical_ntk_fn_matches_own_jacobian(implementation):
    init_fn, apply_fn, _ = _relu_net()
    _, params = init_fn(jax.random.PRNGKey(1), X.shape)
    with warnings.catch_warnings():
        # NTK_VECTOR_PRODUCTS's own deprecation is the subject of the jnp.size canary below.
        warnings.filterwarnings("ignore", message=JSIZE_MESSAGE, category=DeprecationWarning)
        ntk_fn = empirical_ntk_fn(apply_fn, vmap_axes=0, implementation=NtkImplementation[implementation])
        kernel = ntk_fn(X, None, params)
    np.testing.assert_allclose(kernel, _own_ntk(apply_fn, params, X), rtol=1e-11, atol=1e-12)


def test_canary_jnp_size_deprecation_in_ntk_vector_products():
    """neural-tangents' _std_basis calls jnp.size on a ShapeDtypeStruct, which JAX deprecated ("In a future JAX
    release this will be an error"). This test fails when that happens (then NTK_VECTOR_PRODUCTS needs a
    fix in ntkhom.nt) and when any other deprecation appears on this path."""
    init_fn, apply_fn, _ = _relu_net(8)
    _, params = init_fn(jax.random.PRNGKey(2), X.shape)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kernel = empirical_ntk_fn(apply_fn, vmap_axes=0, implementation=2)(X, None, params)
    deprecations = [w for w in caught if issubclass(w.category, DeprecationWarning)]
    assert all(JSIZE_MESSAGE in str(w.message) for w in deprecations), [str(w.message) for w in deprecations]
    np.testing.assert_allclose(kernel, _own_ntk(apply_fn, params, X), rtol=1e-11, atol=1e-12)


def test_auto_picks_a_working_implementation_by_flops():
    from ntkhom.nt import xla_flops

    init_fn, apply_fn, _ = _relu_net()
    _, params = init_fn(jax.random.PRNGKey(1), X.shape)
    flops = xla_flops(empirical_ntk_fn(apply_fn, vmap_axes=0), X, None, params)
    assert flops > 0


@pytest.mark.parametrize("entry", ["empirical_ntk_fn", "empirical_kernel_fn", "monte_carlo_kernel_fn"])
@pytest.mark.parametrize("implementation", [NtkImplementation.STRUCTURED_DERIVATIVES, 3])
def test_structured_derivatives_refused_everywhere(entry, implementation):
    init_fn, apply_fn, _ = _relu_net(8)
    calls = {
        "empirical_ntk_fn": lambda: empirical_ntk_fn(apply_fn, implementation=implementation),
        "empirical_kernel_fn": lambda: empirical_kernel_fn(apply_fn, implementation=implementation),
        "monte_carlo_kernel_fn": lambda: monte_carlo_kernel_fn(
            init_fn, apply_fn, jax.random.PRNGKey(0), 2, implementation=implementation
        ),
    }
    with pytest.raises(StructuredDerivativesUnavailable, match=f"{entry}.*JACOBIAN_CONTRACTION"):
        calls[entry]()
    # The same guard through the module view.
    with pytest.raises(StructuredDerivativesUnavailable):
        getattr(nt, entry)(*(() if entry != "monte_carlo_kernel_fn" else (init_fn,)), apply_fn,
                           *(() if entry != "monte_carlo_kernel_fn" else (jax.random.PRNGKey(0), 2)),
                           implementation=implementation)


@pytest.mark.parametrize("entry", ["empirical_kernel_fn", "monte_carlo_kernel_fn"])
def test_auto_refused_with_the_true_reason_where_not_supplied(entry):
    init_fn, apply_fn, _ = _relu_net(8)
    args = (apply_fn,) if entry == "empirical_kernel_fn" else (init_fn, apply_fn, jax.random.PRNGKey(0), 2)
    with pytest.raises(NotImplementedError, match="cost_analysis.*dict"):
        getattr(nt, entry)(*args, implementation=NtkImplementation.AUTO)


def test_canary_empirical_kernel_fn_matches_own_jacobian():
    init_fn, apply_fn, _ = _relu_net()
    _, params = init_fn(jax.random.PRNGKey(3), X.shape)
    kernel = empirical_kernel_fn(apply_fn, vmap_axes=0)(X, None, "ntk", params)
    np.testing.assert_allclose(kernel, _own_ntk(apply_fn, params, X), rtol=1e-11, atol=1e-12)


def test_canary_monte_carlo_kernel_fn_approaches_the_infinite_kernel():
    init_fn, apply_fn, kernel_fn = _relu_net(256)
    samples = monte_carlo_kernel_fn(init_fn, apply_fn, jax.random.PRNGKey(4), 32, vmap_axes=0)(X, None, "ntk")
    exact = kernel_fn(X, None, "ntk")
    # 32 networks of width 256: relative fluctuation about 1/sqrt(32 * 256) ~ 1e-2 per entry.
    np.testing.assert_allclose(samples, exact, rtol=0.08, atol=0.08 * float(jnp.max(exact)))


# -- predict ---------------------------------------------------------------------------------------------
def _gd_mse_numpy(k, y, f0, t, lr=1.0):
    """f(t) = y + exp(-lr t K / N) (f0 - y), N = y.size: neural-tangents' normalisation of the MSE."""
    lam, vec = np.linalg.eigh(np.asarray(k))
    decay = vec @ np.diag(np.exp(-lr * t * lam / y.size)) @ vec.T
    return np.asarray(y) + decay @ (np.asarray(f0) - np.asarray(y))


def _kernel_and_targets():
    _, _, kernel_fn = _relu_net()
    k = kernel_fn(X, None, "ntk")
    y = jnp.asarray(np.random.default_rng(1).normal(size=(5, 1)))
    f0 = jnp.asarray(np.random.default_rng(2).normal(size=(5, 1)))
    return k, y, f0


def test_canary_predict_gradient_descent_mse_under_jit():
    k, y, f0 = _kernel_and_targets()
    fx = jax.jit(lambda k: predict.gradient_descent_mse(k, y)(3.0, f0))(k)
    np.testing.assert_allclose(fx, _gd_mse_numpy(k, y, f0, 3.0), rtol=1e-10, atol=1e-12)


def test_canary_predict_gradient_descent_mse_under_vmap():
    k, y, f0 = _kernel_and_targets()
    scales = jnp.array([0.5, 1.0, 2.0])
    fx = jax.vmap(lambda a: predict.gradient_descent_mse(a * k, y)(2.0, f0))(scales)
    for a, row in zip(scales, fx):
        np.testing.assert_allclose(row, _gd_mse_numpy(a * k, y, f0, 2.0), rtol=1e-10, atol=1e-12)


def test_canary_predict_gradient_descent_mse_under_grad():
    k, y, f0 = _kernel_and_targets()

    def loss(a):
        return jnp.sum(predict.gradient_descent_mse(a * k, y)(2.0, f0) ** 2)

    h = 1e-5
    numeric = [np.sum(_gd_mse_numpy(a * k, y, f0, 2.0) ** 2) for a in (1.3 + h, 1.3 - h)]
    np.testing.assert_allclose(jax.grad(loss)(1.3), (numeric[0] - numeric[1]) / (2 * h), rtol=1e-7)


def test_max_learning_rate_is_two_over_lambda_max():
    k, _, _ = _kernel_and_targets()
    lambda_max = np.linalg.eigvalsh(np.asarray(k))[-1]
    n = k.shape[0]
    np.testing.assert_allclose(predict.max_learning_rate(k), 2 * n / (lambda_max + 1e-12), rtol=1e-12)
    np.testing.assert_allclose(max_learning_rate(k, momentum=0.5), 3 * n / (lambda_max + 1e-12), rtol=1e-12)
    np.testing.assert_allclose(jax.jit(max_learning_rate)(k), 2 * n / (lambda_max + 1e-12), rtol=1e-12)
    assert nt.predict.max_learning_rate is max_learning_rate
