"""Solvers that share one protocol (:class:`ntkhom.solvers.base.Solver`) and one driver
(:mod:`ntkhom.solvers.driver`)."""

from ntkhom.solvers.base import OptStep, Solver
from ntkhom.solvers.driver import BatchResult, RunResult, run, run_batch, stack, unstack

__all__ = ["OptStep", "Solver", "RunResult", "BatchResult", "run", "run_batch", "stack", "unstack"]
