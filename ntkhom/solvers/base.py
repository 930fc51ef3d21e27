"""The solver protocol every ntkhom solver follows, so one driver can run any of them.

A solver is an object with three pure, jit-compatible methods over pytrees (in the spirit of jaxopt's
``init_state`` / ``update`` and of ``optax.GradientTransformation``); the data are always arguments:

    state = solver.init(params, batch)                  # a NamedTuple of arrays
    params, state = solver.step(params, state, batch)   # one iteration; no Python side effects
    value = solver.loss(params, state, batch)           # the scalar objective the driver records
    values = solver.metrics(params, state, batch)       # dict of scalars recorded with the loss

``batch`` is a pytree of arrays whose leaves share a leading sample axis: ``(x, y)`` with x (n, d) and
y (n, k) for every solver in this package. Because data are never closed over, one compiled step serves
every dataset of the same shape, ``jax.vmap`` runs over datasets, and minibatches or streamed batches are
just other arguments (:mod:`ntkhom.solvers.driver`).

Solvers are frozen dataclasses of their settings: two solvers built with equal settings are equal and hash
alike, so jit caches keyed on them (the driver's) compile once. Keep settings hashable (numbers, strings,
tuples, models, functions); never arrays.

States are NamedTuples whose first fields are common to every solver (:data:`COMMON_FIELDS`):

* ``step``: () int32, iterations done;
* ``s``: () float, the homotopy parameter of the next step (a schedule, as in HRTA, sets it itself);
* ``learning_rate``: () float, the step size of the next step (NaN for solvers without one, such as
  analytic alternating minimization);
* ``key``: a PRNG key; the driver draws minibatches from it (and stores the advanced key back).

Solver-specific fields follow. Per-run values (s, the learning rate, the key) are arrays in the state, so
``jax.vmap`` over a leading axis of ``(params, state)`` runs a grid of configurations under one compilation,
and ``state._replace(s=...)`` changes one run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["Solver", "FunctionSolver", "COMMON_FIELDS", "default_key", "check_state", "dtype_of", "is_concrete"]

PyTree = Any
#: Fields every solver state starts with, in this order.
COMMON_FIELDS = ("step", "s", "learning_rate", "key")


def default_key() -> jax.Array:
    """The PRNG key a state starts with (replace it per run: ``state._replace(key=jax.random.PRNGKey(i))``)."""
    return jax.random.PRNGKey(0)


def check_state(state) -> None:
    """Raise a TypeError unless ``state`` is a NamedTuple with the :data:`COMMON_FIELDS` first."""
    fields = getattr(state, "_fields", None)
    if fields is None or tuple(fields[: len(COMMON_FIELDS)]) != COMMON_FIELDS:
        raise TypeError(f"a solver state must be a NamedTuple starting with the fields {COMMON_FIELDS}, got "
                        f"{type(state).__name__}")


@dataclasses.dataclass(frozen=True)
class Solver:
    """Base class: subclasses are frozen dataclasses of settings that implement the three methods."""

    @property
    def name(self) -> str:
        return type(self).__name__

    def init(self, params: PyTree, batch: PyTree) -> PyTree:
        raise NotImplementedError

    def step(self, params: PyTree, state: PyTree, batch: PyTree) -> tuple[PyTree, PyTree]:
        raise NotImplementedError

    def loss(self, params: PyTree, state: PyTree, batch: PyTree) -> jax.Array:
        raise NotImplementedError

    def metrics(self, params: PyTree, state: PyTree, batch: PyTree) -> dict[str, jax.Array]:
        return {}


@dataclasses.dataclass(frozen=True)
class FunctionSolver(Solver):
    """A solver from plain functions ``init(params, batch)``, ``step(params, state, batch)``,
    ``loss(params, state, batch)`` and optionally ``metrics(params, state, batch)``.

    It hashes by the identity of the functions: build it once and reuse it to reuse compilations.
    """

    init_fn: Callable
    step_fn: Callable
    loss_fn: Callable
    metrics_fn: Callable | None = None
    label: str = "solver"

    @property
    def name(self) -> str:
        return self.label

    def init(self, params, batch):
        return self.init_fn(params, batch)

    def step(self, params, state, batch):
        return self.step_fn(params, state, batch)

    def loss(self, params, state, batch):
        return self.loss_fn(params, state, batch)

    def metrics(self, params, state, batch):
        return {} if self.metrics_fn is None else self.metrics_fn(params, state, batch)


def dtype_of(params: PyTree):
    """The floating dtype of the first parameter leaf (the dtype states are kept in)."""
    leaves = jax.tree.leaves(params)
    if not leaves:
        raise ValueError("params must contain at least one array")
    dtype = jnp.result_type(leaves[0])
    return dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.result_type(float)


def is_concrete(tree: PyTree) -> bool:
    """True when no leaf of ``tree`` is a tracer (values can be checked on the host)."""
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(tree))
