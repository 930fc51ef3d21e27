"""One driver for every :class:`ntkhom.solvers.base.Solver`: jit-compiled chunks of ``lax.scan``.

:func:`run` advances ``(params, state)`` by ``solver.step`` for ``steps`` iterations. The iterations are
grouped into *records* of ``record_every`` steps (an inner ``lax.scan``); after each record the loss and
metrics are evaluated and kept. Records are grouped into *chunks* (an outer ``lax.scan``) that are compiled
once and called from Python, so Python runs once per chunk, never once per iteration. Between chunks the
driver updates the progress bar and decides whether to go on.

Stops (``RunResult.stop_reason``), checked after every record inside the compiled code:

* ``"steps"``: all iterations done;
* ``"target_loss"``: the loss reached ``target_loss`` (params are those at that record);
* ``"nonfinite"``: the loss became NaN or inf;
* ``"diverged"``: the loss exceeded ``divergence_factor`` times the initial loss;
* ``"interrupted"``: KeyboardInterrupt; the chunks that finished are kept.

On ``"nonfinite"`` and ``"diverged"`` the returned params and state are the last ones whose loss was finite
and recorded (the previous record), the history stops there, and the offending loss value is reported in
``stop_value``: a diverged run is never returned as NaN numbers without an explanation.

Once a run has stopped, the compiled code freezes its carry, so the recorded trajectory does not depend on
the chunk size: a run with ``chunk = steps`` and one with ``chunk = record_every`` give the same records.

:func:`run_batch` runs a batch of configurations (a leading axis over ``params`` and ``state``: seeds,
values of s, learning rates) under one compilation with ``jax.vmap``; each run stops on its own.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ntkhom.report import progress
from ntkhom.solvers.base import Solver

__all__ = ["RunResult", "BatchResult", "run", "run_batch", "stack", "unstack", "STOP_REASONS"]

PyTree = Any

# Codes used inside compiled code; index = code.
STOP_REASONS = ("steps", "nonfinite", "diverged", "target_loss", "interrupted")
_RUNNING, _NONFINITE, _DIVERGED, _TARGET = 0, 1, 2, 3

_MESSAGES = {
    "steps": "finished all {steps} steps",
    "target_loss": "reached the target loss {target:.3g} after {stop_step} steps",
    "nonfinite": "the loss became non-finite ({value}) within steps {stop_step}..{bad_step}; params are "
    "those at step {stop_step}, the last finite record (step size too large? try <= 2 / lambda_max)",
    "diverged": "the loss grew past {factor:g} x its initial value ({value:.3g}) within steps "
    "{stop_step}..{bad_step}; params are those at step {stop_step} (step size too large? try "
    "<= 2 / lambda_max)",
    "interrupted": "interrupted by the user after {stop_step} steps; finished chunks are kept",
}


@dataclasses.dataclass
class RunResult:
    """What :func:`run` returns.

    Attributes:
      params, state: final parameters and solver state (the last finite ones after a non-finite or
        diverged stop).
      steps: (R,) int array, the iteration count of each record; ``steps[0] = 0`` is the initial point.
      loss: (R,) float array, ``solver.loss`` at each record (always finite).
      metrics: name -> (R,) array of ``solver.metrics`` at each record.
      stop_reason: one of :data:`STOP_REASONS`.
      stop_step: iterations done by the returned params.
      stop_value: the loss that caused a ``"nonfinite"``/``"diverged"`` stop (NaN otherwise).
      wall_time: seconds in :func:`run`, compilation included.
      message: a sentence explaining the stop.
    """

    params: PyTree
    state: PyTree
    steps: np.ndarray
    loss: np.ndarray
    metrics: dict[str, np.ndarray]
    stop_reason: str
    stop_step: int
    stop_value: float
    wall_time: float
    message: str

    @property
    def final_loss(self) -> float:
        return float(self.loss[-1])

    @property
    def ok(self) -> bool:
        """True unless the run stopped on a non-finite or diverging loss."""
        return self.stop_reason not in ("nonfinite", "diverged")


@dataclasses.dataclass
class BatchResult:
    """What :func:`run_batch` returns: B runs with a leading axis.

    ``loss`` (B, R) and ``metrics`` (B, R) are padded with NaN after a run's own last record;
    ``recorded[b]`` says how many records of run b are real. ``run(b)`` gives run b as a trimmed
    :class:`RunResult` with no padding.
    """

    params: PyTree
    state: PyTree
    steps: np.ndarray  # (R,)
    loss: np.ndarray  # (B, R)
    metrics: dict[str, np.ndarray]
    recorded: np.ndarray  # (B,)
    stop_reasons: list[str]
    stop_steps: np.ndarray  # (B,)
    stop_values: np.ndarray  # (B,)
    wall_time: float
    messages: list[str]

    @property
    def size(self) -> int:
        return len(self.stop_reasons)

    def run(self, b: int) -> RunResult:
        if not 0 <= b < self.size:
            raise IndexError(f"run index {b} out of range for a batch of {self.size}")
        r = int(self.recorded[b])
        return RunResult(
            params=jax.tree.map(lambda a: a[b], self.params),
            state=jax.tree.map(lambda a: a[b], self.state),
            steps=self.steps[:r],
            loss=self.loss[b, :r],
            metrics={k: v[b, :r] for k, v in self.metrics.items()},
            stop_reason=self.stop_reasons[b],
            stop_step=int(self.stop_steps[b]),
            stop_value=float(self.stop_values[b]),
            wall_time=self.wall_time,
            message=self.messages[b],
        )


def stack(trees: list[PyTree]) -> PyTree:
    """Stack pytrees of equal structure along a new leading axis (the batch axis of :func:`run_batch`)."""
    if len(trees) == 0:
        raise ValueError("stack needs at least one pytree")
    return jax.tree.map(lambda *leaves: jnp.stack([jnp.asarray(leaf) for leaf in leaves]), *trees)


def unstack(tree: PyTree) -> list[PyTree]:
    """The inverse of :func:`stack`."""
    leaves = jax.tree.leaves(tree)
    if not leaves:
        raise ValueError("unstack needs a pytree with at least one array")
    size = leaves[0].shape[0]
    return [jax.tree.map(lambda a, i=i: a[i], tree) for i in range(size)]


# --------------------------------------------------------------------------------------------------
# compiled core
def _metrics(solver: Solver, params, state) -> dict[str, jax.Array]:
    if solver.metrics is None:
        return {}
    return {k: jnp.asarray(v) for k, v in solver.metrics(params, state).items()}


def _chunk_single(solver: Solver, n_records: int, block: int, carry, limits):
    """``n_records`` records of ``block`` steps each, for one run. Returns (carry, records)."""
    target, factor = limits

    def one_step(ps, _):
        return solver.step(*ps), None

    def one_record(carry, _):
        params, state, step, code, initial, bad_value = carry
        stopped = code != _RUNNING
        new_params, new_state = jax.lax.cond(
            stopped,
            lambda ps: ps,
            lambda ps: jax.lax.scan(one_step, ps, None, length=block)[0],
            (params, state),
        )
        loss = jnp.asarray(solver.loss(new_params, new_state))
        metrics = _metrics(solver, new_params, new_state)
        nonfinite = ~jnp.isfinite(loss)
        diverged = loss > factor * initial
        reached = loss <= target
        new_code = jnp.where(
            nonfinite, _NONFINITE, jnp.where(diverged, _DIVERGED, jnp.where(reached, _TARGET, _RUNNING))
        )
        bad = nonfinite | diverged
        keep_old = stopped | bad  # a bad record is not taken: params stay at the last finite record
        params_out = jax.tree.map(lambda a, b: jnp.where(keep_old, a, b), params, new_params)
        state_out = jax.tree.map(lambda a, b: jnp.where(keep_old, a, b), state, new_state)
        step_out = jnp.where(keep_old, step, step + block)
        code_out = jnp.where(stopped, code, new_code)
        bad_out = jnp.where(~stopped & bad, loss, bad_value)
        record = (loss, metrics, ~keep_old)
        return (params_out, state_out, step_out, code_out, initial, bad_out), record

    return jax.lax.scan(one_record, carry, None, length=n_records)


def _chunk_impl(solver, n_records, block, batched, carry, limits):
    if batched:
        fn = jax.vmap(lambda c: _chunk_single(solver, n_records, block, c, limits))
        return fn(carry)
    return _chunk_single(solver, n_records, block, carry, limits)


# The solver (a NamedTuple of functions) is hashed by the identity of its functions, so repeated runs of the
# same solver object reuse the compiled chunks.
_chunk = jax.jit(_chunk_impl, static_argnums=(0, 1, 2, 3))


def _initial_loss_impl(solver, batched, params, state):
    def single(p, s):
        return jnp.asarray(solver.loss(p, s)), _metrics(solver, p, s)

    return jax.vmap(single)(params, state) if batched else single(params, state)


_initial_loss = jax.jit(_initial_loss_impl, static_argnums=(0, 1))


# --------------------------------------------------------------------------------------------------
# Python loop
def _check_solver(solver) -> None:
    if not isinstance(solver, Solver):
        raise ValueError(f"solver must be an ntkhom.solvers.Solver, got {type(solver).__name__}")


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or int(value) != value or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _plan(steps: int, record_every: int, chunk: int) -> list[tuple[int, int]]:
    """Calls as (n_records, block): full chunks, a shorter last chunk, then a last partial record."""
    full_records, rest = divmod(steps, record_every)
    per_chunk = max(1, chunk // record_every)
    calls = [(per_chunk, record_every)] * (full_records // per_chunk)
    if full_records % per_chunk:
        calls.append((full_records % per_chunk, record_every))
    if rest:
        calls.append((1, rest))
    return calls


def _drive(solver, params, state, *, steps, record_every, chunk, target_loss, divergence_factor, progress_bar,
           desc, batched):
    _check_solver(solver)
    steps = _check_int("steps", steps, 0)
    record_every = _check_int("record_every", record_every, 1)
    chunk = _check_int("chunk", chunk, 1)
    if target_loss is not None and not math.isfinite(float(target_loss)):
        raise ValueError(f"target_loss must be a finite number or None, got {target_loss}")
    if divergence_factor is not None and not (math.isfinite(divergence_factor) and divergence_factor > 1):
        raise ValueError(f"divergence_factor must be a finite number > 1 or None, got {divergence_factor}")

    start = time.perf_counter()
    loss0, metrics0 = _initial_loss(solver, batched, params, state)
    loss0 = np.asarray(loss0)
    if batched and loss0.ndim != 1:
        raise ValueError(f"run_batch needs a leading batch axis; the batch loss has shape {loss0.shape}")
    if not batched and loss0.ndim != 0:
        raise ValueError(f"solver.loss must return a scalar, got shape {loss0.shape} (batch: run_batch)")
    if not np.all(np.isfinite(loss0)):
        raise ValueError(f"the initial loss is not finite ({loss0}); check the data and the parameters")
    shape = loss0.shape
    dtype = loss0.dtype
    target = -np.inf if target_loss is None else float(target_loss)
    factor = np.inf if divergence_factor is None else float(divergence_factor)
    # the divergence reference: the initial loss (with a floor, so a zero initial loss cannot trigger it)
    initial = np.maximum(loss0, np.finfo(dtype).tiny)
    code0 = np.where(loss0 <= target, _TARGET, _RUNNING).astype(np.int32)
    carry = (params, state, jnp.zeros(shape, jnp.int32), jnp.asarray(code0), jnp.asarray(initial),
             jnp.full(shape, jnp.nan, dtype))
    limits = (jnp.asarray(target, dtype), jnp.asarray(factor, dtype))

    record_steps = [np.zeros((), np.int64)]
    losses = [loss0]
    metric_rows = [{k: np.asarray(v) for k, v in metrics0.items()}]
    valids = [np.ones(shape, bool)]
    interrupted = False
    bar = progress(None, total=steps, desc=desc or solver.name, enabled=progress_bar)
    done_steps = 0
    try:
        for n_records, block in _plan(steps, record_every, chunk):
            if np.all(np.asarray(carry[3]) != _RUNNING):
                break
            new_carry, (rec_loss, rec_metrics, rec_valid) = _chunk(
                solver, n_records, block, batched, carry, limits
            )
            rec_loss = np.asarray(rec_loss)  # waits for the chunk; an interrupt here keeps the old carry
            carry = new_carry
            # records come out (n_records,) or (B, n_records); keep the record axis last
            record_steps.append(done_steps + block * np.arange(1, n_records + 1))
            losses.append(rec_loss)
            metric_rows.append({k: np.asarray(v) for k, v in rec_metrics.items()})
            valids.append(np.asarray(rec_valid))
            done_steps += n_records * block
            bar.update(n_records * block)
            finite = rec_loss[np.asarray(rec_valid)]
            if finite.size:
                bar.set_postfix(loss=f"{float(np.min(finite)) if batched else float(finite[-1]):.3e}")
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    wall = time.perf_counter() - start

    params, state, step_arr, code_arr, _, bad_arr = carry
    # the record axis is last: (R,) for one run, (B, R) for a batch
    steps_all = np.concatenate([np.atleast_1d(s) for s in record_steps])
    loss_all = np.concatenate([losses[0][..., None]] + losses[1:], axis=-1)
    valid_all = np.concatenate([valids[0][..., None]] + valids[1:], axis=-1)
    metrics_all = {
        name: np.concatenate([first[..., None]] + [row[name] for row in metric_rows[1:]], axis=-1)
        for name, first in metric_rows[0].items()
    }
    codes = np.atleast_1d(np.asarray(code_arr))
    stop_steps = np.atleast_1d(np.asarray(step_arr))
    bad_values = np.atleast_1d(np.asarray(bad_arr))
    reasons, messages = [], []
    for code, stop_step, bad_value in zip(codes, stop_steps, bad_values, strict=True):
        reason = STOP_REASONS[int(code)] if code != _RUNNING else ("interrupted" if interrupted else "steps")
        if code == _RUNNING and not interrupted and stop_step < steps:  # pragma: no cover - defensive
            reason = "interrupted"
        messages.append(_MESSAGES[reason].format(
            steps=steps, target=target, stop_step=int(stop_step), value=float(bad_value), factor=factor,
            bad_step=f"{int(stop_step) + record_every}",
        ))
        reasons.append(reason)
    return dict(params=params, state=state, steps=steps_all, loss=loss_all, valid=valid_all,
                metrics=metrics_all, reasons=reasons, messages=messages, stop_steps=stop_steps,
                bad_values=bad_values, wall=wall)


def run(
    solver: Solver,
    params: PyTree,
    state: PyTree | None = None,
    *,
    steps: int,
    record_every: int = 10,
    chunk: int = 1000,
    target_loss: float | None = None,
    divergence_factor: float | None = 1e6,
    progress: bool = True,
    desc: str | None = None,
) -> RunResult:
    """Run ``solver`` from ``params`` (and ``state``, default ``solver.init(params)``) for ``steps`` steps.

    Args:
      solver: any :class:`ntkhom.solvers.base.Solver`.
      steps: number of iterations (>= 0).
      record_every: record loss and metrics every this many steps (and at the last step).
      chunk: iterations per compiled call (rounded down to a multiple of ``record_every``, at least one
        record); larger chunks mean fewer Python round trips, smaller ones a livelier progress bar.
      target_loss: stop at the first record with loss <= target_loss (None: never).
      divergence_factor: stop, keeping the last finite params, when the loss exceeds this times the initial
        loss (None: only non-finite losses stop a run).
      progress: show a tqdm progress bar on stderr.

    Returns:
      :class:`RunResult`. See the module docstring for the stop rules.
    """
    _check_solver(solver)
    state = solver.init(params) if state is None else state
    out = _drive(solver, params, state, steps=steps, record_every=record_every, chunk=chunk,
                 target_loss=target_loss, divergence_factor=divergence_factor, progress_bar=progress,
                 desc=desc, batched=False)
    valid = out["valid"]
    return RunResult(
        params=out["params"], state=out["state"], steps=out["steps"][valid], loss=out["loss"][valid],
        metrics={k: v[valid] for k, v in out["metrics"].items()}, stop_reason=out["reasons"][0],
        stop_step=int(out["stop_steps"][0]), stop_value=float(out["bad_values"][0]), wall_time=out["wall"],
        message=out["messages"][0],
    )


def run_batch(
    solver: Solver,
    params: PyTree,
    state: PyTree | None = None,
    *,
    steps: int,
    record_every: int = 10,
    chunk: int = 1000,
    target_loss: float | None = None,
    divergence_factor: float | None = 1e6,
    progress: bool = True,
    desc: str | None = None,
) -> BatchResult:
    """:func:`run` for B configurations at once: ``params`` and ``state`` carry a leading axis of size B.

    Build the batch with :func:`stack` (e.g. params from B seeds, states with different ``"s"``), or pass
    ``state=None`` to get ``jax.vmap(solver.init)(params)``. Everything runs under one compilation; each run
    stops on its own rule and is frozen afterwards, and the loop ends when all runs have stopped.
    """
    _check_solver(solver)
    leaves = jax.tree.leaves(params)
    if not leaves or any(jnp.ndim(leaf) == 0 for leaf in leaves):
        raise ValueError("run_batch needs params with a leading batch axis on every array (see stack)")
    sizes = {leaf.shape[0] for leaf in leaves}
    state = jax.vmap(solver.init)(params) if state is None else state
    sizes |= {jnp.shape(leaf)[0] if jnp.ndim(leaf) else -1 for leaf in jax.tree.leaves(state)}
    if len(sizes) != 1:
        raise ValueError(f"params and state must share one leading batch size, got sizes {sorted(sizes)}")
    out = _drive(solver, params, state, steps=steps, record_every=record_every, chunk=chunk,
                 target_loss=target_loss, divergence_factor=divergence_factor, progress_bar=progress,
                 desc=desc, batched=True)
    valid = out["valid"]
    recorded = valid.sum(axis=1)
    # valid records are a prefix of each row, so padding = everything past recorded[b]
    loss = np.where(valid, out["loss"], np.nan)
    metrics = {k: np.where(valid, v, np.nan) for k, v in out["metrics"].items()}
    return BatchResult(
        params=out["params"], state=out["state"], steps=out["steps"], loss=loss, metrics=metrics,
        recorded=recorded, stop_reasons=out["reasons"], stop_steps=out["stop_steps"],
        stop_values=out["bad_values"], wall_time=out["wall"], messages=out["messages"],
    )
