"""Solvers that share one protocol (:class:`ntkhom.solvers.base.Solver`) and one driver."""

from ntkhom.solvers.base import OptStep, Solver

__all__ = ["OptStep", "Solver"]
