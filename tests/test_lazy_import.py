"""Importing ntkhom's core modules neither imports neural-tangents nor changes JAX (fresh processes)."""

import subprocess
import sys
import textwrap

SNAPSHOT = """
import sys, jax, jax.core, jax.random, jax.interpreters.ad

def snapshot():
    return {
        "jax.core": {k: id(v) for k, v in vars(jax.core).items()},
        "jax.random": {k: id(v) for k, v in vars(jax.random).items()},
        "jax.interpreters.ad": {k: id(v) for k, v in vars(jax.interpreters.ad).items()},
        "jax.util": id(sys.modules.get("jax.util")),
        "jax.util attribute": id(getattr(jax, "util", None)),
    }
"""


def _run(body: str) -> subprocess.CompletedProcess:
    code = SNAPSHOT + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_core_modules_neither_import_neural_tangents_nor_change_jax_until_used():
    done = _run("""
        before = snapshot()
        import ntkhom, ntkhom.models, ntkhom.kernels, ntkhom.spectrum, ntkhom.solvers, ntkhom.activations
        import ntkhom.nt, ntkhom.stax, ntkhom.dual, ntkhom.networks
        loaded = sorted(m for m in sys.modules if m.split(".")[0] == "neural_tangents")
        assert not loaded, loaded
        changed = [k for k in before if before[k] != snapshot()[k]]
        assert not changed, changed

        # No import hook: neural-tangents 0.6.5 alone still needs TensorFlow and JAX 0.4 names.
        try:
            import neural_tangents
            raise AssertionError("neural_tangents imported without ntkhom.nt.load()")
        except (ImportError, AttributeError):
            pass

        # First use of something that needs it loads it; afterwards a plain import works.
        import jax.numpy as jnp
        from ntkhom.models import two_layer
        model = two_layer(4, 1.0)
        params = model.init(jax.random.PRNGKey(0), 2)
        model.apply(params, jnp.ones((3, 2)))
        assert "neural_tangents" not in sys.modules
        _, _, kernel_fn = model.stax(2)
        import neural_tangents
        assert ntkhom.nt.load() is neural_tangents
        assert kernel_fn(jnp.ones((2, 2)), None, "ntk").shape == (2, 2)
        print("clean, then loaded on use")
    """)
    assert done.returncode == 0 and "loaded on use" in done.stdout, done.stderr[-3000:]


def test_load_makes_neural_tangents_importable():
    done = _run("""
        import ntkhom, ntkhom.nt
        nt = ntkhom.nt.load()
        import neural_tangents
        assert nt is neural_tangents and ntkhom.nt.load() is nt
        _, _, kernel_fn = neural_tangents.stax.serial(neural_tangents.stax.Dense(4), neural_tangents.stax.Erf())
        print(kernel_fn(jax.numpy.ones((2, 3)), None, "nngp").shape)
    """)
    assert done.returncode == 0 and "(2, 2)" in done.stdout, done.stderr[-3000:]
