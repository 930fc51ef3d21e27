"""Solvers that share one protocol (:mod:`ntkhom.solvers.base`: ``init(params, batch)``,
``step(params, state, batch)``, ``loss(params, state, batch)``) and one driver (:mod:`ntkhom.solvers.driver`):
gradient descent and optax optimizers (:mod:`ntkhom.solvers.gradient`), homotopy schedules
(:mod:`ntkhom.solvers.hrta`), analytic alternating minimization (:mod:`ntkhom.solvers.analytic_am`), TIAM
(:mod:`ntkhom.solvers.tiam`) and periodic rescaling of any solver (:mod:`ntkhom.solvers.rescaling`)."""

from ntkhom.solvers.base import COMMON_FIELDS, FunctionSolver, Solver
from ntkhom.solvers.driver import BatchResult, Progress, RunResult, run, run_batch, stack, unstack
from ntkhom.solvers.gradient import GradientState, gradient_solver
from ntkhom.solvers.hrta import Stage, hrta_solver, linear_schedule, two_stage
from ntkhom.solvers.rescaling import rescaled_every

__all__ = ["Solver", "FunctionSolver", "COMMON_FIELDS", "RunResult", "BatchResult", "Progress", "run",
           "run_batch", "stack", "unstack", "gradient_solver", "GradientState", "hrta_solver", "Stage",
           "linear_schedule", "two_stage", "rescaled_every"]
