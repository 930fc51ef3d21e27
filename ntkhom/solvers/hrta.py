"""HRTA (homotopy relaxation training): train with the homotopy parameter s following a schedule.

The HRTA paper (Yang, Chen, Hao, "Homotopy Relaxation Training Algorithms for infinite-width two-layer ReLU
neural networks", ICLR 2024 submission) trains sigma_s(x) = (1 - s) x + s ReLU(x) in stages s_1, ..., s_M,
ending at ReLU (s = 1), and argues that larger s gives a larger lambda_0 = lambda_min(H(s)) and so a faster
guaranteed rate; "relaxation" is a stage with s > 1. The paper leaves the stage lengths, step sizes and the
way a stage change is made open; here they are options.

A schedule is a list of :class:`Stage` (s_p, steps_p, learning_rate_p, optimizer_p), or any traceable
function t -> s (:func:`linear_schedule` or your own) for a continuous schedule s(t). After the last stage
the last stage's settings continue (a run longer than the schedule stays at the final s).

Stage changes (``transition=``), each at the end of the step that completes a stage:

* ``"switch"``: s jumps to the next stage's value and nothing else changes. The network function changes
  with s, so the training loss jumps (``../shared/reference/hrta.md`` saw a jump to 3-7 from 1.6e-4). This
  is the plain reading of the paper.
* ``"ramp"``: s moves linearly from s_{p-1} to s_p over the first ``ramp_steps`` steps of stage p while
  training goes on, so each step changes the function by O(|s_p - s_{p-1}| / ramp_steps) and gradient
  descent can follow; the loss bump shrinks as ``ramp_steps`` grows. (A continuous schedule is the limit.)
* ``"refit_output"``: s jumps, then the output layer (linear in f) is refit by ridge regression towards its
  current value at the new s: W_out <- W_out + Phi^T (Phi Phi^T + lambda I)^{-1} (y - f), with Phi (n, m_L)
  the last hidden features at the new s and lambda = ``ridge`` * trace(Phi Phi^T) / n. With m_L >= n and
  a small ridge this nearly interpolates, so the loss *drops* at the switch; the output layer then leaves
  its random initialization, which the NTK analysis with a frozen output layer does not cover.

An exactly function-preserving change does not exist at fixed width: f changes by
(s_new - s_old) m^{-1/2} sum_r a_r (phi(z_r) - z_r), a non-linear function of x that no reparametrization of
the same neurons absorbs (it would need extra neurons or a skip connection), so it is not offered.

Each switch records the training loss just before and just after it in ``state.switch_loss`` (shape
(P - 1, 2); NaN until the switch happens): that is the jump to report.

The state (:class:`HrtaState`) carries ``stage_s`` and ``stage_lr`` (P,) as arrays, so ``jax.vmap`` over
schedules with the same structure but different values of s or step size runs a batch under one
compilation. Its common fields ``s`` and ``learning_rate`` are those of the next step, set by the schedule:
to change a run's schedule edit ``stage_s`` / ``stage_lr``, not ``s``. The refit runs only at a switch, also
under ``vmap`` (:func:`ntkhom.solvers.control.rare_cond`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ntkhom.activations import check_s, homotopy
from ntkhom.data import is_whole
from ntkhom.losses import LOSSES, REDUCTIONS
from ntkhom.models import HomotopyMLP
from ntkhom.solvers.base import Solver, default_key, dtype_of
from ntkhom.solvers.control import rare_cond
from ntkhom.solvers.gradient import (
    OPTIMIZERS,
    _with_learning_rate,
    check_batch,
    check_learning_rate,
    check_problem,
    optimizer_by_name,
)

__all__ = ["Stage", "HrtaState", "HrtaSolver", "TRANSITIONS", "hrta_solver", "linear_schedule",
           "stage_boundaries", "two_stage"]

TRANSITIONS = ("switch", "ramp", "refit_output")


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage of a schedule: ``steps`` iterations at homotopy parameter ``s`` with ``optimizer`` (a name in
    :data:`ntkhom.solvers.gradient.OPTIMIZERS` with its ``learning_rate``, or an optax transformation that
    carries its own learning rate, with ``learning_rate=None``)."""

    s: float
    steps: int
    learning_rate: float | None
    optimizer: str | optax.GradientTransformation = "gd"

    def __post_init__(self):
        check_s(self.s)
        if not is_whole(self.steps):
            raise ValueError(f"a stage needs a positive integer number of steps, got {self.steps!r}")
        _stage_optimizer(self)


def _stage_optimizer(stage: Stage) -> optax.GradientTransformation:
    if isinstance(stage.optimizer, str):
        if stage.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {stage.optimizer!r}; choose one of {OPTIMIZERS}")
        if stage.learning_rate is None:
            raise ValueError(f"a stage with optimizer {stage.optimizer!r} needs a learning_rate")
        return optimizer_by_name(stage.optimizer, check_learning_rate(stage.learning_rate))
    if isinstance(stage.optimizer, optax.GradientTransformation):
        if stage.learning_rate is not None:
            raise ValueError("a stage with an optax optimizer takes learning_rate=None (the optimizer carries "
                             "its own)")
        return stage.optimizer
    raise TypeError(f"optimizer must be a name in {OPTIMIZERS} or an optax GradientTransformation, got "
                    f"{type(stage.optimizer).__name__}")


def two_stage(s_first: float, steps_first: int, steps_relu: int, learning_rate: float,
              optimizer="gd", learning_rate_relu: float | None = None) -> list[Stage]:
    """The paper's experiment: s_first (e.g. 0.5, or 1.5 for relaxation) first, then ReLU (s = 1)."""
    return [Stage(s_first, steps_first, learning_rate, optimizer),
            Stage(1.0, steps_relu, learning_rate if learning_rate_relu is None else learning_rate_relu,
                  optimizer)]


def linear_schedule(s_start: float, s_end: float, steps: int) -> Callable[[jax.Array], jax.Array]:
    """s(t) moving linearly from s_start to s_end over ``steps`` iterations, then constant."""
    check_s(s_start), check_s(s_end)
    if not is_whole(steps):
        raise ValueError(f"steps must be a positive integer, got {steps}")

    def s_of_t(t):
        fraction = jnp.clip(t / steps, 0.0, 1.0)
        return s_start + (s_end - s_start) * fraction

    return s_of_t


def stage_boundaries(stages: Sequence[Stage]) -> np.ndarray:
    """Cumulative step counts at which stages end, shape (P,)."""
    return np.cumsum([stage.steps for stage in stages])


def _last_features(model: HomotopyMLP, params, x, s):
    """Phi (n, m_L) with f(x) = Phi W_out + (bias term): the last hidden layer times the output scale."""
    d = params[0]["W"].shape[0]
    h = x
    for entry, (W_std, b_std) in zip(params[:-1], model.layer_scales(d)[:-1]):
        z = (W_std / math.sqrt(h.shape[-1])) * (h @ entry["W"])
        if "b" in entry:
            z = z + b_std * entry["b"]
        h = homotopy(z, s, model.phi)
    out_std = model.layer_scales(d)[-1][0]
    return (out_std / math.sqrt(h.shape[-1])) * h


class HrtaState(NamedTuple):
    """State of :class:`HrtaSolver`: the common fields (``s`` and ``learning_rate`` of the next step, set by the
    schedule), then the stage values, one optax state per stage and the switch losses."""

    step: jax.Array
    s: jax.Array
    learning_rate: jax.Array
    key: jax.Array
    stage_s: jax.Array
    stage_lr: jax.Array
    opt_states: tuple[Any, ...]
    switch_loss: jax.Array


@dataclasses.dataclass(frozen=True)
class HrtaSolver(Solver):
    """Training while s follows a schedule (module docstring); build it with :func:`hrta_solver`.

    Metrics: ``s``, ``stage``, ``learning_rate``.
    """

    model: HomotopyMLP
    stages: tuple[Stage, ...]
    schedule: Callable[[jax.Array], jax.Array] | None
    transition: str
    ramp_steps: int
    ridge: float
    loss_name: str
    reduction: str

    @property
    def name(self) -> str:
        return f"hrta-{self.transition}"

    @property
    def optimizers(self) -> tuple[optax.GradientTransformation, ...]:
        return tuple(_stage_optimizer(stage) for stage in self.stages)

    def objective(self, params, batch, s):
        x, y = check_batch(self.model, batch)
        return LOSSES[self.loss_name](self.model.apply(params, x, s), y, reduction=self.reduction)

    def _ends(self):
        return jnp.asarray(stage_boundaries(self.stages))

    def stage_of(self, t):
        return jnp.minimum(jnp.searchsorted(self._ends(), t, side="right"), len(self.stages) - 1)

    def s_of(self, t, stage_s):
        if self.schedule is not None:
            return jnp.asarray(self.schedule(t), stage_s.dtype)
        p = self.stage_of(t)
        s_now = stage_s[p]
        if self.transition != "ramp":
            return s_now
        ends = self._ends()
        starts = jnp.concatenate([jnp.zeros(1, ends.dtype), ends[:-1]])
        s_prev = stage_s[jnp.maximum(p - 1, 0)]
        fraction = jnp.clip((t - starts[p] + 1) / self.ramp_steps, 0.0, 1.0)
        return jnp.where(p == 0, s_now, s_prev + (s_now - s_prev) * fraction)

    def refit(self, params, batch, s_value):
        """Output layer refit by ridge regression at s_value (module docstring)."""
        x, y = check_batch(self.model, batch)
        phi = _last_features(self.model, params, x, s_value)  # (n, m_L)
        residual = y - self.model.apply(params, x, s_value)
        gram = phi @ phi.T
        lam = self.ridge * jnp.trace(gram) / gram.shape[0]
        delta = phi.T @ jnp.linalg.solve(gram + lam * jnp.eye(gram.shape[0], dtype=gram.dtype), residual)
        last = dict(params[-1])
        last["W"] = last["W"] + delta
        return params[:-1] + (last,)

    def init(self, params, batch) -> HrtaState:
        check_problem(self.model, params, batch, self.loss_name)
        dtype = dtype_of(params)
        stage_s = jnp.asarray([stage.s for stage in self.stages], dtype)
        stage_lr = jnp.asarray([jnp.nan if stage.learning_rate is None else stage.learning_rate
                                for stage in self.stages], dtype)
        trainable = self.model.trainable(params)
        zero = jnp.zeros((), jnp.int32)
        return HrtaState(
            step=zero, s=self.s_of(zero, stage_s), learning_rate=stage_lr[0], key=default_key(),
            stage_s=stage_s, stage_lr=stage_lr,
            opt_states=tuple(opt.init(trainable) for opt in self.optimizers),
            switch_loss=jnp.full((max(len(self.stages) - 1, 0), 2), jnp.nan, dtype),
        )

    def step(self, params, state, batch):
        model, optimizers, n_stages = self.model, self.optimizers, len(self.stages)
        t = state.step
        p = self.stage_of(t)
        s_value = self.s_of(t, state.stage_s)
        trainable = model.trainable(params)
        grads = jax.grad(lambda tr: self.objective(model.combine(tr, params), batch, s_value))(trainable)

        def update_with(index):
            def branch(opt_states):
                opt_state = _with_learning_rate(opt_states[index], state.stage_lr[index])
                updates, new = optimizers[index].update(grads, opt_state, trainable)
                return updates, opt_states[:index] + (new,) + opt_states[index + 1:]
            return branch

        updates, opt_states = jax.lax.switch(p, [update_with(i) for i in range(n_stages)], state.opt_states)
        params = model.combine(optax.apply_updates(trainable, updates), params)
        t_next = t + 1
        s_next = self.s_of(t_next, state.stage_s)
        switch_loss = state.switch_loss
        if n_stages > 1 and self.schedule is None:
            # a switch happens when this step completed stage p and another stage follows
            switching = (t_next == self._ends()[p]) & (p < n_stages - 1)

            def make_switch(operands):  # no traced value from outside: rare_cond's rule needs them as operands
                params, switch_loss, batch, s_value, s_next, p = operands
                before = self.objective(params, batch, s_value)
                if self.transition == "refit_output":
                    params = self.refit(params, batch, s_next)
                after = self.objective(params, batch, s_next)
                return params, switch_loss.at[p].set(jnp.stack([before, after])), batch, s_value, s_next, p

            operands = (params, switch_loss, batch, s_value, s_next, p)
            params, switch_loss, *_ = rare_cond(switching, make_switch, lambda ops: ops, operands)
        p_next = self.stage_of(t_next)
        return params, state._replace(step=t_next, s=s_next, learning_rate=state.stage_lr[p_next],
                                      opt_states=opt_states, switch_loss=switch_loss)

    def loss(self, params, state, batch):
        return self.objective(params, batch, state.s)

    def metrics(self, params, state, batch):
        return {"s": state.s, "stage": self.stage_of(state.step), "learning_rate": state.learning_rate}


def hrta_solver(
    model: HomotopyMLP,
    stages: Sequence[Stage] | None = None,
    *,
    schedule: Callable[[jax.Array], jax.Array] | None = None,
    learning_rate: float | None = None,
    optimizer: str | optax.GradientTransformation = "gd",
    transition: str = "switch",
    ramp_steps: int = 0,
    ridge: float = 1e-3,
    loss: str = "squared",
    reduction: str | None = None,
) -> HrtaSolver:
    """A solver that trains ``model`` while s follows a schedule; the data come with every call.

    Give either ``stages`` (a list of :class:`Stage`) or a continuous ``schedule`` t -> s together with one
    ``learning_rate`` and ``optimizer``. ``transition`` is one of :data:`TRANSITIONS` (module docstring);
    ``ramp_steps`` is used by ``"ramp"`` and ``ridge`` by ``"refit_output"``.

    Returns:
      an :class:`HrtaSolver` (state :class:`HrtaState`); equal arguments give equal solvers.
    """
    if not isinstance(model, HomotopyMLP):
        raise TypeError(f"model must be an ntkhom.models.HomotopyMLP, got {type(model).__name__}")
    if (stages is None) == (schedule is None):
        raise ValueError("give exactly one of stages (a list of Stage) or schedule (a function t -> s)")
    if transition not in TRANSITIONS:
        raise ValueError(f"unknown transition {transition!r}; choose one of {TRANSITIONS}")
    if schedule is not None:
        if not callable(schedule):
            raise ValueError("schedule must be a function t -> s")
        if isinstance(optimizer, str) and learning_rate is None:
            raise ValueError("a continuous schedule with a named optimizer needs learning_rate")
        stages = [Stage(float(schedule(jnp.asarray(0.0))), 1, learning_rate, optimizer)]
    stages = tuple(stages)
    if len(stages) == 0 or not all(isinstance(stage, Stage) for stage in stages):
        raise ValueError("stages must be a non-empty list of ntkhom.solvers.hrta.Stage")
    if transition == "ramp" and not is_whole(ramp_steps):
        raise ValueError(f"transition='ramp' needs ramp_steps >= 1, got {ramp_steps}")
    if transition == "ramp" and any(ramp_steps > stage.steps for stage in stages[1:]):
        raise ValueError("ramp_steps must not exceed the length of the stages it ramps into")
    if not (math.isfinite(ridge) and ridge > 0):
        raise ValueError(f"ridge must be a positive finite number, got {ridge}")
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of {tuple(LOSSES)}")
    reduction = reduction or ("sum" if loss == "squared" else "mean")
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; choose one of {REDUCTIONS}")
    return HrtaSolver(model=model, stages=stages, schedule=schedule, transition=transition,
                      ramp_steps=int(ramp_steps), ridge=float(ridge), loss_name=loss, reduction=reduction)
