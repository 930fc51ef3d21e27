"""neural-tangents on current JAX: the only module of ntkhom that imports it.

neural-tangents 0.6.5 (Dec 2023, its last release) was written against JAX 0.4. Current JAX removed a few
names it imports at module level (``jax.core.Jaxpr`` and friends moved to ``jax.extend.core``,
``jax.util`` was removed, ``jax.random.KeyArray`` became ``jax.Array``, ``ad.zeros_like_p`` is gone), and
its package ``__init__`` imports ``neural_tangents.experimental``, which imports TensorFlow.

This module, on import:

* supplies each missing name from its current home, and only if it is missing: a newer JAX that still has a
  name keeps its own object untouched;
* registers a placeholder for ``neural_tangents.experimental`` so TensorFlow is never imported (the
  placeholder raises a clear ``ImportError`` if anything asks it for an attribute);
* exposes ``nt``, ``stax`` and ``predict`` from neural-tangents, and :func:`empirical_ntk_fn`, a wrapper of
  neural-tangents' own that refuses ``STRUCTURED_DERIVATIVES`` (its custom Jaxpr interpreter relies on JAX
  internals that no longer exist) with an error that names the working alternatives.

Everything else in ntkhom imports neural-tangents from here.
"""

from __future__ import annotations

import importlib
import sys
import types

__all__ = [
    "NtkImplementation",
    "StructuredDerivativesUnavailable",
    "empirical_ntk_fn",
    "nt",
    "predict",
    "stax",
]


def _supply(module: types.ModuleType, name: str, value_fn) -> None:
    """Set ``module.name`` only where current JAX no longer has it."""
    try:
        getattr(module, name)
    except AttributeError:
        setattr(module, name, value_fn())


def _patch_jax() -> None:
    import jax.core
    import jax.extend.core
    import jax.interpreters.ad

    for name in ("Jaxpr", "JaxprEqn", "Literal", "Var", "Primitive"):
        _supply(jax.core, name, lambda name=name: getattr(jax.extend.core, name))
    for name in ("ShapedArray", "AbstractValue", "Value", "eval_context"):
        _supply(jax.core, name, lambda name=name: getattr(importlib.import_module("jax._src.core"), name))

    try:
        importlib.import_module("jax.util")
    except ModuleNotFoundError:
        src_util = importlib.import_module("jax._src.util")
        util = types.ModuleType("jax.util", "safe_map/safe_zip for neural-tangents (supplied by ntkhom.nt)")
        util.safe_map = src_util.safe_map
        util.safe_zip = src_util.safe_zip
        sys.modules["jax.util"] = util
        jax.util = util

    _supply(jax.random, "KeyArray", lambda: jax.Array)
    # Only used as a dictionary key in neural-tangents' structured-derivative rules; current JAX never emits
    # this primitive, so a placeholder with the old name keeps the rule table importable and inert.
    _supply(jax.interpreters.ad, "zeros_like_p", lambda: jax.extend.core.Primitive("zeros_like"))


class _ExperimentalPlaceholder(types.ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        raise ImportError(
            f"neural_tangents.experimental.{name} is not available in ntkhom: that module needs TensorFlow, "
            "which ntkhom excludes (pyproject.toml, [tool.uv] override-dependencies)."
        )


def _import_neural_tangents() -> types.ModuleType:
    if "neural_tangents" in sys.modules:
        return sys.modules["neural_tangents"]
    _patch_jax()
    sys.modules.setdefault(
        "neural_tangents.experimental", _ExperimentalPlaceholder("neural_tangents.experimental")
    )
    return importlib.import_module("neural_tangents")


nt = _import_neural_tangents()
stax = nt.stax
predict = nt.predict
NtkImplementation = nt.NtkImplementation


class StructuredDerivativesUnavailable(NotImplementedError):
    """neural-tangents' STRUCTURED_DERIVATIVES empirical NTK does not run on current JAX."""


def empirical_ntk_fn(f, *args, implementation=NtkImplementation.JACOBIAN_CONTRACTION, **kwargs):
    """``neural_tangents.empirical_ntk_fn`` with a clear refusal of what current JAX cannot run.

    ``STRUCTURED_DERIVATIVES`` (3) and ``AUTO`` (0, which may pick it) raise
    :class:`StructuredDerivativesUnavailable`; ``JACOBIAN_CONTRACTION`` (1, default) and
    ``NTK_VECTOR_PRODUCTS`` (2) work. For two-layer homotopy networks
    :func:`ntkhom.kernels.empirical_ntk_two_layer` is the fast structured alternative.
    """
    implementation = NtkImplementation(int(implementation))
    if implementation in (NtkImplementation.STRUCTURED_DERIVATIVES, NtkImplementation.AUTO):
        raise StructuredDerivativesUnavailable(
            f"neural-tangents' {implementation.name} empirical NTK relies on JAX internals removed after "
            "JAX 0.4 and does not run on this JAX. Use implementation=NtkImplementation.JACOBIAN_CONTRACTION "
            "or NTK_VECTOR_PRODUCTS, or, for two-layer homotopy networks, "
            "ntkhom.kernels.empirical_ntk_two_layer (matrix products, no Jacobians)."
        )
    return nt.empirical_ntk_fn(f, *args, implementation=implementation, **kwargs)
