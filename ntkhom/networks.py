"""Networks a user brings: one small protocol that every kernel, theory function and solver accepts.

A :class:`Network` is a forward function ``apply(params, x, s=None) -> (n, k)`` over a parameter pytree,
with, where the architecture has one, its infinite-width kernel function. :func:`as_network` builds one from

* a :class:`ntkhom.models.HomotopyMLP` (its own forward pass; infinite width from its stax description);
* a neural-tangents stax triple ``(init_fn, apply_fn, kernel_fn)`` (finite and infinite width; the
  homotopy parameter is fixed in its layers, e.g. ``ntkhom.stax.Homotopy(s)``);
* a Flax module: nnx (``nnx.split`` gives the graph definition and the state, which is the parameter pytree)
  or linen (``module.apply(variables, x)``, the variables being the parameter pytree);
* a plain function ``f(params, x)`` or ``f(params, x, s)``.

Which parameters are trained (the ones the NTK differentiates) is ``trained``: a pytree of bools with the
structure of ``params``, or a predicate ``trained(path) -> bool`` on each leaf's key path (as
``jax.tree_util.tree_flatten_with_path`` gives it), or None for the network's default (every leaf; for a
``HomotopyMLP``, ``model.trained``). :func:`partition` splits a parameter pytree into its trained and frozen
parts (None in place of the other part's leaves), :func:`combine` joins them again, so a kernel
differentiates ``lambda trainable: apply(combine(trainable, frozen), x)``.

Networks are hashable and compare equal when built from the same object, so jitted kernels compiled for a
network are reused by every later call with it.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Network", "as_network", "partition", "combine", "trained_mask", "check_params", "check_trained",
           "check_applies"]


# -- the protocol ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Network:
    """A network as ntkhom sees it.

    Attributes:
      apply: ``apply(params, x, s=None) -> (n, k)`` array; x is (n, d). ``s`` overrides the homotopy
        parameter where the network has one (``accepts_s``); elsewhere it must be None.
      kernel_fn: ``kernel_fn(x1, x2=None, *, s=None, batch_size=None) -> (ntk, nngp)``, the infinite-width
        NTK over the default trained parameters and the NNGP kernel, each (n1, n2) (``batch_size``: tiles of
        neural-tangents' ``batch``); None when the network has no infinite-width description.
      accepts_s: whether ``apply`` (and ``kernel_fn``) take a homotopy parameter.
      trained: the default of ``trained`` (None: every leaf). Not part of equality or hashing.
      source: the object the network was built from (a ``HomotopyMLP``, a triple, a module, a function).
    """

    apply: Callable
    kernel_fn: Callable | None = None
    accepts_s: bool = False
    trained: Any = dataclasses.field(default=None, compare=False, hash=False)
    source: Any = dataclasses.field(default=None, compare=False, hash=False)

    def partition(self, params, trained=None):
        """``(trainable, frozen)`` of ``params``; ``trained`` None means this network's default (for a
        ``HomotopyMLP`` also ``"hidden"`` or ``"all"``)."""
        if isinstance(trained, str) and self.model is not None:
            trained = _homotopy_mask(dataclasses.replace(self.model, trained=trained))
        return partition(params, self.trained if trained is None else trained)

    @property
    def model(self):
        """The :class:`ntkhom.models.HomotopyMLP` behind this network, or None."""
        from ntkhom.models import HomotopyMLP

        return self.source if isinstance(self.source, HomotopyMLP) else None


# -- trained and frozen parts ---------------------------------------------------------------------------
def _is_none(leaf) -> bool:
    return leaf is None


def trained_mask(params, trained=None):
    """A pytree of bools with the structure of ``params``: which leaves are trained.

    Args:
      params: the parameter pytree.
      trained: None (every leaf), a pytree of bools with the structure of ``params`` (or a prefix of it:
        one bool for a whole subtree), or a predicate ``trained(path) -> bool`` on each leaf's key path.
    """
    if trained is None:
        return jax.tree.map(lambda _: True, params)
    if isinstance(trained, str):
        raise ValueError(
            f"trained={trained!r}: names of trained parts apply to a HomotopyMLP only; pass a pytree of bools or "
            "a predicate on the leaf path"
        )
    if isinstance(trained, bool):
        return jax.tree.map(lambda _: trained, params)
    if callable(trained):
        return jax.tree_util.tree_map_with_path(lambda path, _: bool(trained(path)), params)
    try:
        return jax.tree.map(lambda flag, sub: jax.tree.map(lambda _: bool(flag), sub), trained, params)
    except (ValueError, TypeError) as error:
        raise ValueError(
            "trained must be None, a bool, a predicate on the leaf path, or a pytree of bools with the "
            f"structure of params ({error})"
        ) from None


def partition(params, trained=None):
    """Split ``params`` into ``(trainable, frozen)``: same structure, None in place of the other's leaves.

    ``trained`` as in :func:`trained_mask`. ``combine(trainable, frozen)`` gives ``params`` back.
    """
    mask = trained_mask(params, trained)
    trainable = jax.tree.map(lambda leaf, keep: leaf if keep else None, params, mask)
    frozen = jax.tree.map(lambda leaf, keep: None if keep else leaf, params, mask)
    return trainable, frozen


def combine(trainable, frozen):
    """The full parameter pytree from the two parts of :func:`partition`."""
    return jax.tree.map(lambda t, f: f if t is None else t, trainable, frozen, is_leaf=_is_none)


def check_params(params, name: str = "params") -> None:
    """ValueError naming the first leaf of ``params`` with NaN or inf (e.g. ``params[0]['W'] contains NaN``).

    Only concrete leaves are checked (under ``jit``, ``vmap`` or ``grad`` the values are unknown).
    """
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        if isinstance(leaf, jax.core.Tracer) or leaf is None:
            continue
        array = np.asarray(leaf)
        if not np.issubdtype(array.dtype, np.inexact):
            continue
        nan, inf = int(np.count_nonzero(np.isnan(array))), int(np.count_nonzero(np.isinf(array)))
        if nan or inf:
            what = " and ".join(f"{count} {kind}" for count, kind in ((nan, "NaN"), (inf, "inf")) if count)
            label = "NaN" if nan and not inf else "inf" if inf and not nan else "NaN and inf"
            raise ValueError(f"{name}{jax.tree_util.keystr(path)} contains {label} ({what} entries)")


def check_trained(trainable, trained=None) -> None:
    """ValueError when the trained part of a :func:`partition` has no leaf: an NTK over no parameter.

    Without it, ``trained=False`` failed deep inside JAX ("Too few leaves for PyTreeDef", a vmap error).
    """
    if not jax.tree.leaves(trainable):
        raise ValueError(f"no parameter is trained (trained={trained!r} selects no leaf of params), so the NTK "
                         "would be over no parameters; pass trained=None (every leaf) or select at least one leaf")


def check_applies(apply, params, x, *args, name: str = "x"):
    """The output shape of ``apply(params, x, *args)``, or a ValueError naming ``x``'s shape when the network
    cannot be applied to it (e.g. x has the wrong number of features), the original error chained.

    Evaluated abstractly (``jax.eval_shape``: no arithmetic), so it also runs on tracers under ``jit``.
    """
    try:
        return jax.eval_shape(apply, params, x, *args)
    except _UsageError:
        raise  # already names what was wrong (s given or missing)
    except (TypeError, ValueError, IndexError, KeyError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"the network could not be applied to {name} of shape {tuple(jnp.shape(x))}: "
                         f"{reason}") from error


# -- adapters (hashable callables, so jitted kernels are cached per network) ------------------------------
class _UsageError(TypeError):
    """A network called with or without s against its signature; check_applies passes it on unchanged."""


def _as_outputs(out) -> jax.Array:
    out = jnp.asarray(out)
    if out.ndim == 1:
        return out[:, None]
    if out.ndim != 2:
        raise ValueError(f"a network must return outputs of shape (n, k) or (n,), got shape {out.shape}")
    return out


def _no_s(s, what: str) -> None:
    if s is not None:
        raise _UsageError(f"{what} takes no homotopy parameter s (it is fixed in the network); got s={s!r}")


@dataclasses.dataclass(frozen=True)
class _FunctionApply:
    fn: Callable
    accepts_s: bool
    requires_s: bool = False

    def __call__(self, params, x, s=None):
        if s is None and self.requires_s:
            raise _UsageError(f"{getattr(self.fn, '__name__', 'the network')} takes s with no default: pass s=...")
        if self.accepts_s:
            return _as_outputs(self.fn(params, x) if s is None else self.fn(params, x, s))
        _no_s(s, "this network")
        return _as_outputs(self.fn(params, x))


@dataclasses.dataclass(frozen=True)
class _ModelApply:
    model: Any

    def __call__(self, params, x, s=None):
        return self.model.apply(params, x, s)


def _batched(kernel_fn, batch_size):
    if not batch_size:
        return kernel_fn
    from ntkhom.nt import nt

    return nt.batch(kernel_fn, batch_size=batch_size)


@dataclasses.dataclass(frozen=True)
class _ModelKernel:
    model: Any

    def __call__(self, x1, x2=None, *, s=None, batch_size=None):
        _, _, kernel_fn = self.model.stax(x1.shape[1], self.model.s if s is None else s)
        kernel = _batched(kernel_fn, batch_size)(x1, x2, ("ntk", "nngp"))
        ntk, nngp = kernel.ntk, kernel.nngp
        # A frozen output layer contributes exactly the NNGP to the full NTK (its weights enter f linearly).
        return (ntk - nngp if self.model.trained == "hidden" else ntk), nngp


@dataclasses.dataclass(frozen=True)
class _StaxApply:
    apply_fn: Callable

    def __call__(self, params, x, s=None):
        _no_s(s, "a stax network")
        return _as_outputs(self.apply_fn(params, x))


@dataclasses.dataclass(frozen=True)
class _StaxKernel:
    kernel_fn: Callable

    def __call__(self, x1, x2=None, *, s=None, batch_size=None):
        _no_s(s, "a stax network")
        kernel = _batched(self.kernel_fn, batch_size)(x1, x2, ("ntk", "nngp"))
        return kernel.ntk, kernel.nngp


def _call_with_s(module_call, x, s, accepts_s):
    if accepts_s and s is not None:
        return module_call(x, s=s)
    if not accepts_s:
        _no_s(s, "this Flax module")
    return module_call(x)


@dataclasses.dataclass(frozen=True)
class _NnxApply:
    graphdef: Any
    accepts_s: bool

    def __call__(self, params, x, s=None):
        from flax import nnx

        module = nnx.merge(self.graphdef, params)
        return _as_outputs(_call_with_s(module, x, s, self.accepts_s))


@dataclasses.dataclass(frozen=True)
class _LinenApply:
    module: Any
    accepts_s: bool

    def __call__(self, params, x, s=None):
        def call(x, **kwargs):
            return self.module.apply(params, x, **kwargs)

        return _as_outputs(_call_with_s(call, x, s, self.accepts_s))


def _takes_s(fn, positional: int) -> bool:
    """Whether ``fn`` takes s: a parameter named ``s``, or more than ``positional`` positional ones."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    if any(p.name == "s" for p in parameters):
        return True
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if any(p.kind == inspect.Parameter.VAR_POSITIONAL for p in parameters):
        return False
    return sum(p.kind in kinds for p in parameters) > positional


def _s_has_no_default(fn) -> bool:
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    named = [p for p in parameters if p.name == "s"]
    third = named[0] if named else (parameters[2] if len(parameters) > 2 else None)
    return third is not None and third.default is inspect.Parameter.empty and third.kind != third.VAR_POSITIONAL


def _is_stax_triple(obj) -> bool:
    return isinstance(obj, tuple) and len(obj) == 3 and all(callable(f) for f in obj)


def _flax_kind(obj) -> str | None:
    if "flax" not in sys.modules:  # nobody holds a Flax module without having imported flax
        return None
    from flax import linen, nnx

    if isinstance(obj, nnx.Module) or isinstance(obj, nnx.GraphDef):
        return "nnx"
    if isinstance(obj, linen.Module):
        return "linen"
    return None


def as_network(obj, *, trained=None, accepts_s: bool | None = None) -> Network:
    """A :class:`Network` from what a user has (see the module docstring for the accepted objects).

    Args:
      obj: a ``Network`` (returned as is, or with ``trained`` replaced), a ``HomotopyMLP``, a stax triple
        ``(init_fn, apply_fn, kernel_fn)``, a Flax nnx module or graph definition, a Flax linen module, or
        a function ``f(params, x)`` / ``f(params, x, s)`` returning (n, k) or (n,).
      trained: default trained leaves (see :func:`trained_mask`); for a ``HomotopyMLP`` also ``"hidden"`` or
        ``"all"``. None: every leaf (``model.trained`` for a ``HomotopyMLP``).
      accepts_s: whether a function or Flax module takes the homotopy parameter (default: read from its
        signature, a parameter named ``s`` or a third positional one).

    Returns:
      The network. Its parameters are what the source uses: ``model.init(key, d)``, stax's ``init_fn``,
      ``nnx.split(module)[1]`` (or ``nnx.state(module)``), linen's ``module.init(key, x)``.
    """
    from ntkhom.models import HomotopyMLP

    if isinstance(obj, Network):
        return obj if trained is None else dataclasses.replace(obj, trained=trained)
    if isinstance(obj, HomotopyMLP):
        if isinstance(trained, str):
            obj = dataclasses.replace(obj, trained=trained)
            trained = None
        default = _homotopy_mask(obj) if trained is None else trained
        return Network(_ModelApply(obj), _ModelKernel(obj), True, default, obj)
    if _is_stax_triple(obj):
        _, apply_fn, kernel_fn = obj
        return Network(_StaxApply(apply_fn), _StaxKernel(kernel_fn), False, trained, obj)
    kind = _flax_kind(obj)
    if kind == "nnx":
        from flax import nnx

        graphdef = obj if isinstance(obj, nnx.GraphDef) else nnx.split(obj)[0]
        if accepts_s is None:
            accepts_s = False if isinstance(obj, nnx.GraphDef) else _takes_s(obj.__call__, 1)
        return Network(_NnxApply(graphdef, bool(accepts_s)), None, bool(accepts_s), trained, obj)
    if kind == "linen":
        accepts_s = _takes_s(obj.__call__, 1) if accepts_s is None else accepts_s
        return Network(_LinenApply(obj, bool(accepts_s)), None, bool(accepts_s), trained, obj)
    if callable(obj):
        accepts_s = _takes_s(obj, 2) if accepts_s is None else accepts_s
        apply = _FunctionApply(obj, bool(accepts_s), bool(accepts_s) and _s_has_no_default(obj))
        return Network(apply, None, bool(accepts_s), trained, obj)
    raise TypeError(
        "as_network expects a HomotopyMLP, a stax triple (init_fn, apply_fn, kernel_fn), a Flax module or a "
        f"function f(params, x[, s]); got {type(obj).__name__}"
    )


class _HomotopyTrained:
    """``model.trained`` of a HomotopyMLP as a predicate: 'hidden' freezes the last dense layer."""

    def __init__(self, model):
        self.model = model

    def __call__(self, path) -> bool:
        if self.model.trained == "all":
            return True
        layer = path[0].idx if path and hasattr(path[0], "idx") else None
        return layer != len(self.model.widths)


def _homotopy_mask(model):
    return _HomotopyTrained(model)
