"""ntkhom.nt makes neural-tangents import and run on current JAX without TensorFlow."""

import subprocess
import sys

import jax
import numpy as np
import pytest

from ntkhom.nt import NtkImplementation, StructuredDerivativesUnavailable, empirical_ntk_fn, nt, stax


def test_import_does_not_load_tensorflow():
    code = (
        "import sys, ntkhom, ntkhom.kernels, ntkhom.nt; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tf2jax')]; "
        "print(','.join(bad)); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"TensorFlow modules loaded: {done.stdout} {done.stderr[-2000:]}"


def test_supplied_names_never_replace_existing_ones():
    import jax.core
    import jax.extend.core

    # Names current JAX still has keep JAX's own object.
    assert jax.core.ShapedArray is __import__("jax._src.core", fromlist=["ShapedArray"]).ShapedArray
    # Names we supply point at their current home.
    assert jax.core.Jaxpr is jax.extend.core.Jaxpr
    assert issubclass(jax.random.KeyArray, jax.Array) or jax.random.KeyArray is jax.Array


def test_experimental_module_refuses_clearly():
    with pytest.raises(ImportError, match="TensorFlow"):
        nt.experimental.empirical_ntk_fn_tf  # noqa: B018


@pytest.mark.parametrize("implementation", [NtkImplementation.STRUCTURED_DERIVATIVES, 3, NtkImplementation.AUTO])
def test_structured_derivatives_raise_with_alternative(implementation):
    _, apply_fn, _ = stax.serial(stax.Dense(8), stax.Relu(), stax.Dense(1))
    with pytest.raises(StructuredDerivativesUnavailable, match="JACOBIAN_CONTRACTION.*empirical_ntk_two_layer"):
        empirical_ntk_fn(apply_fn, implementation=implementation)


def test_both_working_implementations_agree_and_match_monte_carlo_shape():
    init_fn, apply_fn, _ = stax.serial(stax.Dense(16), stax.Relu(), stax.Dense(1))
    x = jax.random.normal(jax.random.PRNGKey(0), (5, 3))
    _, params = init_fn(jax.random.PRNGKey(1), x.shape)
    kernels = [
        empirical_ntk_fn(apply_fn, trace_axes=(-1,), vmap_axes=0, implementation=impl)(x, None, params)
        for impl in (NtkImplementation.JACOBIAN_CONTRACTION, NtkImplementation.NTK_VECTOR_PRODUCTS)
    ]
    np.testing.assert_allclose(kernels[0], kernels[1], rtol=1e-10, atol=1e-12)
    mc = nt.monte_carlo_kernel_fn(init_fn, apply_fn, jax.random.PRNGKey(2), 4)(x, None, "ntk")
    assert mc.shape == (5, 5)
