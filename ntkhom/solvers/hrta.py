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

Each switch records the training loss just before and just after it in ``state["switch_loss"]`` (shape
(P - 1, 2); NaN until the switch happens): that is the jump to report.

The state carries ``"stage_s"`` and ``"stage_lr"`` (P,) as arrays, so ``jax.vmap`` over schedules with the
same structure but different values of s or step size runs a batch under one compilation.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ntkhom.activations import check_s
from ntkhom.models import HomotopyMLP
from ntkhom.solvers.base import Solver
from ntkhom.solvers.gradient import _as_optimizer, check_learning_rate, network_loss_fn

__all__ = ["Stage", "TRANSITIONS", "hrta_solver", "linear_schedule", "stage_boundaries", "two_stage"]

TRANSITIONS = ("switch", "ramp", "refit_output")


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage of a schedule: ``steps`` iterations at homotopy parameter ``s`` with ``optimizer``
    (a name in :data:`ntkhom.solvers.gradient.OPTIMIZERS` or an optax transformation) and ``learning_rate``."""

    s: float
    steps: int
    learning_rate: float
    optimizer: str | optax.GradientTransformation = "gd"

    def __post_init__(self):
        check_s(self.s)
        if isinstance(self.steps, bool) or int(self.steps) != self.steps or self.steps <= 0:
            raise ValueError(f"a stage needs a positive integer number of steps, got {self.steps!r}")
        check_learning_rate(self.learning_rate)
        _as_optimizer(self.optimizer)


def two_stage(s_first: float, steps_first: int, steps_relu: int, learning_rate: float,
              optimizer="gd", learning_rate_relu: float | None = None) -> list[Stage]:
    """The paper's experiment: s_first (e.g. 0.5, or 1.5 for relaxation) first, then ReLU (s = 1)."""
    return [Stage(s_first, steps_first, learning_rate, optimizer),
            Stage(1.0, steps_relu, learning_rate if learning_rate_relu is None else learning_rate_relu,
                  optimizer)]


def linear_schedule(s_start: float, s_end: float, steps: int) -> Callable[[jax.Array], jax.Array]:
    """s(t) moving linearly from s_start to s_end over ``steps`` iterations, then constant."""
    check_s(s_start), check_s(s_end)
    if int(steps) != steps or steps <= 0:
        raise ValueError(f"steps must be a positive integer, got {steps}")

    def s_of_t(t):
        fraction = jnp.clip(t / steps, 0.0, 1.0)
        return s_start + (s_end - s_start) * fraction

    return s_of_t


def stage_boundaries(stages: Sequence[Stage]) -> np.ndarray:
    """Cumulative step counts at which stages end, shape (P,)."""
    return np.cumsum([stage.steps for stage in stages])


def _output_features(model: HomotopyMLP, params, x, s):
    """Phi (n, m_L) with f(x) = Phi W_out + (bias term): the network with W_out = I and no output bias."""
    last = params[-1]
    m_last = last["W"].shape[0]
    probe = {"W": jnp.eye(m_last, dtype=last["W"].dtype)}
    if "b" in last:
        probe["b"] = jnp.zeros((m_last,), last["W"].dtype)
    return model.apply(params[:-1] + (probe,), x, s)


def hrta_solver(
    model: HomotopyMLP,
    x,
    y,
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
) -> Solver:
    """A :class:`Solver` that trains ``model`` on (x, y) while s follows a schedule.

    Give either ``stages`` (a list of :class:`Stage`) or a continuous ``schedule`` t -> s together with one
    ``learning_rate`` and ``optimizer``. ``transition`` is one of :data:`TRANSITIONS` (module docstring);
    ``ramp_steps`` is used by ``"ramp"`` and ``ridge`` by ``"refit_output"``.

    State: ``step`` (int), ``s`` (the s of the next step), ``stage_s`` and ``stage_lr`` (P,), ``opt_states``
    (one optax state per stage; each stage starts its optimizer fresh), ``switch_loss`` (P - 1, 2).
    Metrics: ``s``, ``stage``, ``learning_rate``.
    """
    if (stages is None) == (schedule is None):
        raise ValueError("give exactly one of stages (a list of Stage) or schedule (a function t -> s)")
    if transition not in TRANSITIONS:
        raise ValueError(f"unknown transition {transition!r}; choose one of {TRANSITIONS}")
    if schedule is not None:
        if learning_rate is None:
            raise ValueError("a continuous schedule needs learning_rate")
        if not callable(schedule):
            raise ValueError("schedule must be a function t -> s")
        stages = [Stage(float(schedule(jnp.asarray(0.0))), 1, learning_rate, optimizer)]
    stages = list(stages)
    if len(stages) == 0 or not all(isinstance(stage, Stage) for stage in stages):
        raise ValueError("stages must be a non-empty list of ntkhom.solvers.hrta.Stage")
    if transition == "ramp" and (int(ramp_steps) != ramp_steps or ramp_steps < 1):
        raise ValueError(f"transition='ramp' needs ramp_steps >= 1, got {ramp_steps}")
    if transition == "ramp" and any(ramp_steps > stage.steps for stage in stages[1:]):
        raise ValueError("ramp_steps must not exceed the length of the stages it ramps into")
    if not (math.isfinite(ridge) and ridge > 0):
        raise ValueError(f"ridge must be a positive finite number, got {ridge}")

    x, y, objective = network_loss_fn(model, x, y, loss, reduction)
    optimizers = [_as_optimizer(stage.optimizer) for stage in stages]
    n_stages = len(stages)
    ends = jnp.asarray(stage_boundaries(stages))
    starts = jnp.concatenate([jnp.zeros(1, ends.dtype), ends[:-1]])

    def stage_of(t):
        return jnp.minimum(jnp.searchsorted(ends, t, side="right"), n_stages - 1)

    def s_of(t, state):
        if schedule is not None:
            return jnp.asarray(schedule(t), state["s"].dtype)
        p = stage_of(t)
        s_now = state["stage_s"][p]
        if transition != "ramp":
            return s_now
        s_prev = state["stage_s"][jnp.maximum(p - 1, 0)]
        fraction = jnp.clip((t - starts[p] + 1) / ramp_steps, 0.0, 1.0)
        return jnp.where(p == 0, s_now, s_prev + (s_now - s_prev) * fraction)

    def trained_loss(trainable, params, s_value):
        return objective(model.combine(trainable, params), s_value)

    def refit(params, s_value):
        phi = _output_features(model, params, x, s_value)  # (n, m_L)
        residual = y - model.apply(params, x, s_value)
        gram = phi @ phi.T
        lam = ridge * jnp.trace(gram) / gram.shape[0]
        delta = phi.T @ jnp.linalg.solve(gram + lam * jnp.eye(gram.shape[0], dtype=gram.dtype), residual)
        last = dict(params[-1])
        last["W"] = last["W"] + delta
        return params[:-1] + (last,)

    def init(params):
        dtype = jax.tree.leaves(params)[0].dtype
        stage_s = jnp.asarray([stage.s for stage in stages], dtype)
        trainable = model.trainable(params)
        return {
            "step": jnp.zeros((), jnp.int32),
            "s": stage_s[0] if schedule is None else jnp.asarray(schedule(jnp.asarray(0.0)), dtype),
            "stage_s": stage_s,
            "stage_lr": jnp.asarray([stage.learning_rate for stage in stages], dtype),
            "opt_states": tuple(opt.init(trainable) for opt in optimizers),
            "switch_loss": jnp.full((max(n_stages - 1, 0), 2), jnp.nan, dtype),
        }

    def step(params, state):
        t = state["step"]
        p = stage_of(t)
        s_value = s_of(t, state)
        trainable = model.trainable(params)
        grads = jax.grad(trained_loss)(trainable, params, s_value)

        def update_with(index):
            def branch(opt_states):
                updates, new = optimizers[index].update(grads, opt_states[index], trainable)
                return updates, opt_states[:index] + (new,) + opt_states[index + 1:]
            return branch

        updates, opt_states = jax.lax.switch(p, [update_with(i) for i in range(n_stages)], state["opt_states"])
        trainable = jax.tree.map(lambda w, u: w + state["stage_lr"][p] * u, trainable, updates)
        params = model.combine(trainable, params)
        t_next = t + 1
        switch_loss = state["switch_loss"]
        if n_stages > 1 and schedule is None:
            # a switch happens when this step completed stage p and another stage follows
            switching = (t_next == ends[p]) & (p < n_stages - 1)
            s_next_stage = state["stage_s"][jnp.minimum(p + 1, n_stages - 1)]

            def make_switch(operands):
                params, switch_loss = operands
                before = objective(params, s_value)
                if transition == "refit_output":
                    params = refit(params, s_next_stage)
                after = objective(params, s_of(t_next, state))
                return params, switch_loss.at[p].set(jnp.stack([before, after]))

            params, switch_loss = jax.lax.cond(switching, make_switch, lambda ops: ops, (params, switch_loss))
        new_state = {**state, "step": t_next, "s": s_of(t_next, state), "opt_states": opt_states,
                     "switch_loss": switch_loss}
        return params, new_state

    def loss_value(params, state):
        return objective(params, state["s"])

    def metrics(params, state):
        p = stage_of(state["step"])
        return {"s": state["s"], "stage": p, "learning_rate": state["stage_lr"][p]}

    return Solver(init=init, step=step, loss=loss_value, metrics=metrics, name=f"hrta-{transition}")
