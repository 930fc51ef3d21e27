"""Periodic function-preserving rescaling inside any solver (e.g. PathCond, Lebeurrier et al. 2025).

:func:`rescaled_every` wraps a :class:`ntkhom.solvers.base.Solver`: before steps 0, k, 2k, ... of the wrapped
solver its parameters are replaced by ``rescaling(params)[0]`` (a map that leaves the network function
unchanged, such as :func:`ntkhom.pathcond.pathcond`), so the loss is the same and only the coordinates the
next steps move in change. The state is the wrapped solver's own (its ``step`` field counts the steps).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from ntkhom.data import is_whole
from ntkhom.solvers.base import Solver
from ntkhom.solvers.control import rare_cond

__all__ = ["RescaledSolver", "rescaled_every"]


@dataclasses.dataclass(frozen=True)
class RescaledSolver(Solver):
    """``inner`` with ``rescaling`` applied every ``every`` steps; see :func:`rescaled_every`."""

    inner: Solver
    rescaling: Callable
    every: int

    @property
    def name(self) -> str:
        return f"{self.inner.name}+rescaled/{self.every}"

    def init(self, params, batch):
        return self.inner.init(params, batch)

    def step(self, params, state, batch):
        # rare_cond: under vmap the rescaling runs only at the steps where it is due, not at every step
        params = rare_cond(state.step % self.every == 0, lambda p: tuple(self.rescaling(p)[0]), tuple, tuple(params))
        return self.inner.step(params, state, batch)

    def loss(self, params, state, batch):
        return self.inner.loss(params, state, batch)

    def metrics(self, params, state, batch):
        return self.inner.metrics(params, state, batch)


def rescaled_every(solver: Solver, rescaling: Callable, every: int) -> RescaledSolver:
    """``solver`` with ``rescaling`` (params -> (params, info), e.g. ``lambda p: pathcond(p, model)``) applied
    before step 0, every, 2 every, ...

    With a stateful optimizer (momentum, Adam) its buffers are not rescaled along with the parameters.
    Hashes by ``solver``, the identity of ``rescaling`` and ``every``: define ``rescaling`` once to reuse
    compilations.
    """
    if not isinstance(solver, Solver):
        raise TypeError(f"solver must be an ntkhom.solvers.Solver, got {type(solver).__name__}")
    if not callable(rescaling):
        raise TypeError("rescaling must be a function params -> (params, info)")
    if not is_whole(every):
        raise ValueError(f"every must be a positive integer, got {every}")
    return RescaledSolver(inner=solver, rescaling=rescaling, every=int(every))
