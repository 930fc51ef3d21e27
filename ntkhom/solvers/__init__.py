"""Solvers that share one protocol (:class:`ntkhom.solvers.base.Solver`) and one driver
(:mod:`ntkhom.solvers.driver`): full-batch gradient descent and optax optimizers
(:mod:`ntkhom.solvers.gradient`) and homotopy schedules (:mod:`ntkhom.solvers.hrta`)."""

from ntkhom.solvers.base import OptStep, Solver
from ntkhom.solvers.driver import BatchResult, RunResult, run, run_batch, stack, unstack
from ntkhom.solvers.gradient import gradient_solver
from ntkhom.solvers.hrta import Stage, hrta_solver, linear_schedule, two_stage

__all__ = ["OptStep", "Solver", "RunResult", "BatchResult", "run", "run_batch", "stack", "unstack",
           "gradient_solver", "hrta_solver", "Stage", "linear_schedule", "two_stage"]
