"""neural-tangents on current JAX, loaded on first use: the only module of ntkhom that imports it.

neural-tangents 0.6.5 (Dec 2023, its last release) was written against JAX 0.4. Current JAX removed a few
names it imports at module level (``jax.core.Jaxpr`` and friends moved to ``jax.extend.core``,
``jax.util`` was removed, ``jax.random.KeyArray`` became ``jax.Array``, ``ad.zeros_like_p`` is gone), and
its package ``__init__`` imports ``neural_tangents.experimental``, which imports TensorFlow.

Importing this module does nothing to JAX and does not import neural-tangents. :func:`load` (called by the
first access to ``nt``, ``stax`` or ``predict`` here, or by any function of ntkhom that needs neural-tangents):

* supplies each missing name from its current home, and only if it is missing: a newer JAX that still has a
  name keeps its own object untouched;
* registers a placeholder for ``neural_tangents.experimental`` so TensorFlow is never imported (the
  placeholder raises a clear ``ImportError`` if anything asks it for an attribute);
* gives neural-tangents' ``predict`` module ``jax.ensure_compile_time_eval`` where it asks for
  ``jax.core.eval_context`` (the meaning that name had in JAX 0.4; JAX's own ``jax.core`` is not changed);
* imports neural-tangents and returns it.

After ``ntkhom.nt.load()`` a plain ``import neural_tangents`` works too. ``nt`` here is neural-tangents with
its empirical-kernel entry points guarded (:func:`empirical_ntk_fn`, :func:`empirical_kernel_fn`,
:func:`monte_carlo_kernel_fn`) and ``predict.max_learning_rate`` replaced (:func:`max_learning_rate`).
"""

from __future__ import annotations

import enum
import functools
import importlib
import inspect
import sys
import types

__all__ = [
    "NtkImplementation",
    "StructuredDerivativesUnavailable",
    "empirical_kernel_fn",
    "empirical_ntk_fn",
    "load",
    "max_learning_rate",
    "monte_carlo_kernel_fn",
    "nt",  # noqa: F822 (loaded lazily, see __getattr__)
    "predict",  # noqa: F822 (loaded lazily, see __getattr__)
    "stax",  # noqa: F822 (loaded lazily, see __getattr__)
    "xla_flops",
]


class NtkImplementation(enum.IntEnum):
    """neural-tangents' empirical-NTK implementations (same values as ``neural_tangents.NtkImplementation``,
    usable without loading neural-tangents).

    ``AUTO`` here picks the cheaper of the two implementations that run on current JAX by XLA's flop count;
    ``STRUCTURED_DERIVATIVES`` is refused (:class:`StructuredDerivativesUnavailable`).
    """

    AUTO = 0
    JACOBIAN_CONTRACTION = 1
    NTK_VECTOR_PRODUCTS = 2
    STRUCTURED_DERIVATIVES = 3


#: The implementations that run on current JAX, in the order AUTO tries them.
WORKING_IMPLEMENTATIONS = (NtkImplementation.JACOBIAN_CONTRACTION, NtkImplementation.NTK_VECTOR_PRODUCTS)


class StructuredDerivativesUnavailable(NotImplementedError):
    """neural-tangents' STRUCTURED_DERIVATIVES empirical NTK does not run on current JAX."""


# -- loading -------------------------------------------------------------------------------------------
def _supply(module: types.ModuleType, name: str, value_fn) -> None:
    """Set ``module.name`` only where current JAX no longer has it."""
    try:
        getattr(module, name)
    except AttributeError:
        setattr(module, name, value_fn())


def _patch_jax() -> None:
    import jax
    import jax.core
    import jax.extend.core
    import jax.interpreters.ad

    for name in ("Jaxpr", "JaxprEqn", "Literal", "Var", "Primitive"):
        _supply(jax.core, name, lambda name=name: getattr(jax.extend.core, name))
    for name in ("ShapedArray", "AbstractValue", "Value"):
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


class _View(types.ModuleType):
    """A module that forwards every attribute to ``target`` except those set on the view itself."""

    def __init__(self, name: str, target, doc: str | None = None):
        super().__init__(name, doc if doc is not None else target.__doc__)
        self._target = target

    def __getattr__(self, name: str):
        return getattr(self._target, name)

    def __dir__(self):
        return sorted(set(dir(self._target)) | set(self.__dict__))


def _give_predict_compile_time_eval(neural_tangents) -> None:
    # neural-tangents' predict precomputes eigendecompositions inside ``jax.core.eval_context()``, which in
    # JAX 0.4 meant "evaluate concrete values now, even under a trace" and now means "switch to the eager
    # trace" (so a traced kernel escapes: UnexpectedTracerError under jit, vmap and grad). Its old meaning is
    # ``jax.ensure_compile_time_eval``; only predict's view of ``jax`` gets it.
    import jax

    predict_src = importlib.import_module("neural_tangents._src.predict")
    core = _View("jax.core", jax.core)
    core.eval_context = jax.ensure_compile_time_eval
    view = _View("jax", jax)
    view.core = core
    predict_src.jax = view


@functools.cache
def load() -> types.ModuleType:
    """Make neural-tangents importable on current JAX, import it and return it (the module itself).

    Idempotent. Afterwards ``import neural_tangents`` works anywhere in the process.
    """
    if "neural_tangents" not in sys.modules:
        _patch_jax()
        sys.modules.setdefault(
            "neural_tangents.experimental", _ExperimentalPlaceholder("neural_tangents.experimental")
        )
    neural_tangents = importlib.import_module("neural_tangents")
    _give_predict_compile_time_eval(neural_tangents)
    return neural_tangents


# -- guarded entry points ------------------------------------------------------------------------------
def _implementation(value) -> NtkImplementation:
    try:
        return NtkImplementation(int(value))
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"implementation must be one of {[m.name for m in NtkImplementation]} (or 0..3), got {value!r}"
        ) from error


def _refuse_structured(implementation: NtkImplementation, entry: str) -> None:
    if implementation == NtkImplementation.STRUCTURED_DERIVATIVES:
        raise StructuredDerivativesUnavailable(
            f"{entry}: neural-tangents' STRUCTURED_DERIVATIVES empirical NTK relies on JAX internals removed "
            "after JAX 0.4 (its Jaxpr interpreter) and does not run on this JAX. Use "
            "implementation=NtkImplementation.JACOBIAN_CONTRACTION or NTK_VECTOR_PRODUCTS, or, for two-layer "
            "homotopy networks, ntkhom.kernels.empirical_ntk_two_layer (matrix products, no Jacobians)."
        )


def xla_flops(fn, *args, **kwargs) -> float:
    """XLA's flop count of the compiled ``fn(*args, **kwargs)``.

    ``Compiled.cost_analysis()`` returns a dict on current JAX and a list of one dict on JAX 0.4; this reads
    both (neural-tangents' own reader indexes ``[0]`` and fails with ``KeyError: 0`` on a dict).
    """
    import jax

    analysis = jax.jit(fn).lower(*args, **kwargs).compile().cost_analysis()
    if isinstance(analysis, list | tuple):
        analysis = analysis[0]
    return float(analysis["flops"])


def _auto_ntk_fn(f, kwargs):
    """AUTO among the working implementations: the one XLA counts fewest flops for, chosen per input shapes."""
    import jax

    chosen = {}

    def ntk_fn(x1, x2, params, **apply_fn_kwargs):
        shapes = jax.tree.map(lambda leaf: (jax.numpy.shape(leaf), jax.numpy.result_type(leaf)),
                              (x1, x2, params, apply_fn_kwargs))
        key = str(jax.tree.structure(shapes)) + str(jax.tree.leaves(shapes))
        if key not in chosen:
            candidates = [empirical_ntk_fn(f, **kwargs, implementation=impl) for impl in WORKING_IMPLEMENTATIONS]
            flops = [xla_flops(fn, x1, x2, params, **apply_fn_kwargs) for fn in candidates]
            chosen[key] = candidates[min(range(len(flops)), key=flops.__getitem__)]
        return chosen[key](x1, x2, params, **apply_fn_kwargs)

    return ntk_fn


def empirical_ntk_fn(f, *args, implementation=NtkImplementation.JACOBIAN_CONTRACTION, **kwargs):
    """``neural_tangents.empirical_ntk_fn`` restricted to what runs on current JAX.

    ``JACOBIAN_CONTRACTION`` (1, default) and ``NTK_VECTOR_PRODUCTS`` (2) are neural-tangents' own.
    ``AUTO`` (0) picks the cheaper of those two by XLA's flop count (neural-tangents' own AUTO also tries
    STRUCTURED_DERIVATIVES and cannot read current JAX's cost analysis). ``STRUCTURED_DERIVATIVES`` (3)
    raises :class:`StructuredDerivativesUnavailable`. For two-layer homotopy networks
    :func:`ntkhom.kernels.empirical_ntk_two_layer` is the fast structured alternative.
    """
    implementation = _implementation(implementation)
    _refuse_structured(implementation, "empirical_ntk_fn")
    neural_tangents = load()
    if implementation == NtkImplementation.AUTO:
        names = ("trace_axes", "diagonal_axes", "vmap_axes")
        return _auto_ntk_fn(f, {**dict(zip(names, args)), **kwargs})
    return neural_tangents.empirical_ntk_fn(
        f, *args, implementation=neural_tangents.NtkImplementation(int(implementation)), **kwargs
    )


def _guard_auto_and_structured(name: str):
    def decorator(wrapper):
        @functools.wraps(wrapper)
        def guarded(*args, **kwargs):
            original = getattr(load(), name)
            bound = inspect.signature(original).bind(*args, **kwargs)
            value = bound.arguments.get("implementation", NtkImplementation.JACOBIAN_CONTRACTION)
            implementation = _implementation(value)
            _refuse_structured(implementation, name)
            if implementation == NtkImplementation.AUTO:
                raise NotImplementedError(
                    f"{name}: neural-tangents' AUTO compares the XLA flop counts of all three implementations, "
                    "including STRUCTURED_DERIVATIVES, which does not run on this JAX, and reads "
                    "cost_analysis()[0], which is a dict on this JAX (KeyError: 0). Name "
                    "implementation=NtkImplementation.JACOBIAN_CONTRACTION or NTK_VECTOR_PRODUCTS, or use "
                    "ntkhom.nt.empirical_ntk_fn(..., implementation=NtkImplementation.AUTO), which chooses "
                    "between those two."
                )
            return original(*bound.args, **bound.kwargs)

        return guarded

    return decorator


@_guard_auto_and_structured("empirical_kernel_fn")
def empirical_kernel_fn(*args, **kwargs):
    """``neural_tangents.empirical_kernel_fn`` with ``implementation`` AUTO and STRUCTURED_DERIVATIVES refused."""


@_guard_auto_and_structured("monte_carlo_kernel_fn")
def monte_carlo_kernel_fn(*args, **kwargs):
    """``neural_tangents.monte_carlo_kernel_fn`` with ``implementation`` AUTO and STRUCTURED_DERIVATIVES
    refused."""


def max_learning_rate(ntk_train_train, y_train_size=None, momentum=0.0, eps: float = 1e-12):
    """``neural_tangents.predict.max_learning_rate`` on current SciPy and under ``jit``.

    eta_max = 2 (1 + momentum) N / (lambda_max(K) + eps), N = ``y_train_size`` (default: K's row count after
    neural-tangents' ``make_2d``), the largest step of GD with momentum on 1/(2 N) ||f - y||^2 that still
    contracts (neural-tangents' definition). neural-tangents' own version passes ``eigvals=`` to
    ``scipy.linalg.eigvalsh``, which SciPy no longer accepts.

    Args:
      ntk_train_train: the train-train NTK, (n, n) or neural-tangents' (n, n, k, k) layout.
      y_train_size: total size of the training targets.
      momentum: momentum of the optimizer.
      eps: added to lambda_max so a zero kernel gives a finite rate.

    Returns:
      A scalar array.
    """
    import jax.numpy as jnp

    load()
    utils = importlib.import_module("neural_tangents._src.utils.utils")
    kernel = utils.make_2d(jnp.asarray(ntk_train_train))
    factor = kernel.shape[0] if y_train_size is None else y_train_size
    lambda_max = jnp.linalg.eigvalsh(kernel)[-1]
    return 2 * (1 + momentum) * factor / (lambda_max + eps)


# -- lazy module attributes ----------------------------------------------------------------------------
@functools.cache
def _predict_view() -> types.ModuleType:
    view = _View("ntkhom.nt.predict", load().predict)
    view.max_learning_rate = max_learning_rate
    return view


@functools.cache
def _nt_view() -> types.ModuleType:
    view = _View("ntkhom.nt.nt", load())
    view.empirical_ntk_fn = empirical_ntk_fn
    view.empirical_kernel_fn = empirical_kernel_fn
    view.monte_carlo_kernel_fn = monte_carlo_kernel_fn
    view.predict = _predict_view()
    view.NtkImplementation = NtkImplementation
    return view


_LAZY = {
    "nt": _nt_view,
    "stax": lambda: load().stax,
    "predict": _predict_view,
}


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


def __getattr__(name: str):
    if name in _LAZY:
        return _LAZY[name]()
    raise AttributeError(f"module 'ntkhom.nt' has no attribute {name!r}")
