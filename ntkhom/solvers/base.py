"""The solver protocol every ntkhom solver follows, so one driver can run any of them.

A :class:`Solver` is a named tuple of pure, jit-compatible functions over pytrees (in the spirit of
``optax.GradientTransformation`` and jaxopt's ``init_state`` / ``update``):

    state = solver.init(params)                  # a pytree of arrays
    params, state = solver.step(params, state)   # one iteration; no Python side effects
    value = solver.loss(params, state)           # the scalar objective the driver records and stops on
    values = solver.metrics(params, state)       # optional dict of scalars recorded with the loss

Per-run hyperparameters that may vary across a batch of runs (the homotopy parameter s, a learning rate)
are arrays in ``state``, so ``jax.vmap`` over a leading axis of ``(params, state)`` runs a grid of
configurations under one compilation. Anything static (shapes, the optimizer's structure) is closed over.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax

__all__ = ["Solver", "OptStep"]

PyTree = Any


class OptStep(NamedTuple):
    params: PyTree
    state: PyTree


class Solver(NamedTuple):
    """init(params) -> state; step(params, state) -> (params, state); loss(params, state) -> scalar."""

    init: Callable[[PyTree], PyTree]
    step: Callable[[PyTree, PyTree], tuple[PyTree, PyTree]]
    loss: Callable[[PyTree, PyTree], jax.Array]
    metrics: Callable[[PyTree, PyTree], dict[str, jax.Array]] | None = None
    name: str = "solver"
