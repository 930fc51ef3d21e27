"""One driver for every :class:`ntkhom.solvers.base.Solver`: jit-compiled chunks of ``lax.scan``.

:func:`run` advances ``(params, state)`` by ``solver.step(params, state, batch)`` for ``steps`` iterations.
It feeds the batches in one of three ways:

* full batch: ``data`` is a pytree of arrays (``(x, y)``) and every step sees all of it;
* minibatches: ``data`` as above and ``batch_size=b``; each step draws b distinct rows (in increasing
  order) inside the compiled loop from ``state.key``, and stores the advanced key back in the state. With
  b = n the minibatch is the full batch, row for row. Records evaluate the loss on all of ``data``;
* a stream: ``data`` is a Python iterator of batches (data that do not fit in memory); the driver pulls the
  batches of a chunk, stacks them and scans over them. Records evaluate the loss on ``eval_data`` if given,
  else on the last batch of the record. A run whose iterator runs out stops with ``"data_exhausted"``; every
  batch is checked on the host as it is pulled, and a run stops before a batch with NaN or inf
  (``"bad_batch"``).
 The iterations are
grouped into *records* of ``record_every`` steps (an inner ``lax.scan``); after each record the loss and
metrics are evaluated and kept. Records are grouped into *chunks* (an outer ``lax.scan``) that are compiled
once and called from Python, so Python runs once per chunk, never once per iteration. Between chunks the
driver reports progress (``callback``) and decides whether to go on.

Stops (``RunResult.stop_reason``), checked after every record inside the compiled code:

* ``"steps"``: all iterations done;
* ``"target_loss"``: the loss reached ``target_loss`` (params are those at that record);
* ``"nonfinite"``: the loss became NaN or inf (the message says so when the solver's ``state.s`` turned
  non-finite in that record: a schedule of s returned NaN or inf, not a step size too large);
* ``"diverged"``: the loss exceeded ``divergence_factor`` times the initial loss;
* ``"interrupted"``: KeyboardInterrupt; the chunks that finished are kept;
* ``"data_exhausted"``: a stream of batches ended before ``steps``;
* ``"bad_batch"``: a streamed batch held NaN or inf; the steps before it are kept.

On ``"nonfinite"`` and ``"diverged"`` the returned params and state are the last ones whose loss was finite
and recorded (the previous record), the history stops there, and the offending loss value is reported in
``stop_value``: a diverged run is never returned as NaN numbers without an explanation.

Once a run has stopped, the compiled code freezes its carry, so the recorded trajectory does not depend on
the chunk size: a run with ``chunk = steps`` and one with ``chunk = record_every`` give the same records.

:func:`run_batch` runs a batch of configurations (a leading axis over ``params`` and ``state``: seeds,
values of s, learning rates) under one compilation with ``jax.vmap``; each run stops on its own. Its
``data_axis=0`` gives every run its own dataset (a leading axis on ``data``), so one compiled loop trains on
B datasets of equal shape.

The compiled chunks are cached on the solver (hashed by its settings), the chunk shape and the feeding
mode; the data are arguments, so rebuilding an equal solver or changing the data does not recompile.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ntkhom.data import is_whole
from ntkhom.solvers.base import Solver, check_state

__all__ = ["RunResult", "BatchResult", "Progress", "run", "run_batch", "stack", "unstack", "sample_rows",
           "STOP_REASONS", "request_stop", "clear_stop"]

PyTree = Any

#: Set by :func:`request_stop` (the command line's Ctrl-C handler); checked after every chunk.
_STOP = threading.Event()


def request_stop() -> None:
    """Ask running drivers to stop after their current chunk, as a KeyboardInterrupt would.

    A signal handler calls this before raising KeyboardInterrupt: Python drops an exception raised inside
    a garbage-collection callback (JAX registers one), so a Ctrl-C landing there would otherwise be lost."""
    _STOP.set()


def clear_stop() -> None:
    """Forget a stop request (before a new command runs in the same process)."""
    _STOP.clear()

# Codes used inside compiled code; index = code.
STOP_REASONS = ("steps", "nonfinite", "diverged", "target_loss", "interrupted", "data_exhausted", "bad_batch")
_RUNNING, _NONFINITE, _DIVERGED, _TARGET = 0, 1, 2, 3

_MESSAGES = {
    "steps": "finished all {steps} steps",
    "target_loss": "reached the target loss {target:.3g} after {stop_step} steps",
    "nonfinite": "the loss became non-finite ({value}) within steps {stop_step}..{bad_step}; params are "
    "those at step {stop_step}, the last finite record (step size too large? try <= 2 / lambda_max)",
    "nonfinite_s": "the loss became non-finite ({value}) within steps {stop_step}..{bad_step} because the solver "
    "set the homotopy parameter s to NaN or inf after {s_step} steps (does the schedule of s return a non-finite "
    "value there?); params are those at step {stop_step}, the last finite record",
    "diverged": "the loss grew past {factor:g} x its initial value ({value:.3g}) within steps "
    "{stop_step}..{bad_step}; params are those at step {stop_step} (step size too large? try "
    "<= 2 / lambda_max)",
    "interrupted": "interrupted by the user after {stop_step} steps; finished chunks are kept",
    "data_exhausted": "the data iterator ran out after {stop_step} of {steps} steps",
    "bad_batch": "batch {bad_batch} of the data stream (counting from 0) has NaN or inf values; the run stopped "
    "before it, after {stop_step} of {steps} steps",
}


class Progress(NamedTuple):
    """What the driver's ``callback`` receives after every compiled chunk and once at the end.

    Attributes:
      done: iterations done; total: iterations asked for; loss: the latest finite loss (the lowest over a
      batch of runs) or None; finished: True on the last call; desc: the run's label.
    """

    done: int
    total: int
    loss: float | None
    finished: bool
    desc: str


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


def sample_rows(key, data, batch_size: int):
    """``batch_size`` distinct rows of ``data`` (a pytree with a leading sample axis), in increasing order,
    drawn uniformly from ``key``; with ``batch_size`` = n this is ``data`` itself."""
    n = jax.tree.leaves(data)[0].shape[0]
    rows = jnp.sort(jax.random.choice(key, n, (batch_size,), replace=False))
    return jax.tree.map(lambda leaf: leaf[rows], data)


# --------------------------------------------------------------------------------------------------
# compiled core
def _metrics(solver: Solver, params, state, batch) -> dict[str, jax.Array]:
    return {k: jnp.asarray(v) for k, v in solver.metrics(params, state, batch).items()}


def _one_step(solver: Solver, batch_size, params, state, data):
    """One solver step; ``data`` is the full data (full batch or minibatches) or one streamed batch."""
    if batch_size is not None:
        key, sub = jax.random.split(state.key)
        state = state._replace(key=key)
        data = sample_rows(sub, data, batch_size)
    return solver.step(params, state, data)


def _s_finite(state) -> jax.Array:
    """Whether ``state.s`` is finite (True for a state without the common fields). A network without s keeps
    NaN there throughout, so only a change from finite to not is news."""
    if "s" not in getattr(state, "_fields", ()):
        return jnp.asarray(True)
    return jnp.all(jnp.isfinite(state.s))


def _traced_step(solver: Solver, batch_size, carry, data):
    """:func:`_one_step` on ``carry = (params, state)``, and whether ``state.s`` is non-finite after it."""
    params, state = _one_step(solver, batch_size, *carry, data)
    return (params, state), ~_s_finite(state)


def _chunk_single(solver: Solver, n_records: int, block: int, batch_size, streamed: bool, carry, limits, data,
                  eval_data):
    """``n_records`` records of ``block`` steps each, for one run. Returns (carry, records).

    ``data``: the full data, or (streamed) batches stacked as (n_records, block, ...)."""
    target, factor = limits

    def one_record(carry, record_data):
        params, state, step, code, initial, bad_value, s_broke = carry
        stopped = code != _RUNNING

        def advance(ps):
            if streamed:
                return jax.lax.scan(lambda c, b: _traced_step(solver, None, c, b), ps, record_data)
            return jax.lax.scan(lambda c, _: _traced_step(solver, batch_size, c, data), ps, None, length=block)

        # s_bad[j]: state.s non-finite after step j of this record (one isfinite per step, for the message)
        (new_params, new_state), s_bad = jax.lax.cond(
            stopped, lambda ps: (ps, jnp.zeros(block, bool)), advance, (params, state))
        if streamed:
            batch = jax.tree.map(lambda leaf: leaf[-1], record_data) if eval_data is None else eval_data
        else:
            batch = data
        loss = jnp.asarray(solver.loss(new_params, new_state, batch))
        metrics = _metrics(solver, new_params, new_state, batch)
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
        # steps done when s turned non-finite, if it did in the record whose loss then did too
        s_turned = nonfinite & _s_finite(state) & jnp.any(s_bad)
        s_broke_out = jnp.where(~stopped & s_turned, step + jnp.argmax(s_bad).astype(step.dtype) + 1, s_broke)
        record = (loss, metrics, ~keep_old)
        return (params_out, state_out, step_out, code_out, initial, bad_out, s_broke_out), record

    return jax.lax.scan(one_record, carry, data if streamed else None, length=n_records)


def _chunk_impl(solver, n_records, block, batched, batch_size, streamed, data_axis, carry, limits, data,
                eval_data):
    def single(c, d, e):
        return _chunk_single(solver, n_records, block, batch_size, streamed, c, limits, d, e)

    if batched is False:
        return single(carry, data, eval_data)
    # a streamed batch has the run axis after (n_records, block); the driver moved it to the front
    if batched is True:
        return jax.vmap(single, in_axes=(0, data_axis, data_axis))(carry, data, eval_data)
    # groups of `batched` runs, one group after another: each group's chunk stays in cache
    if data_axis is None:
        return jax.lax.map(lambda c: single(c, data, eval_data), carry, batch_size=batched)
    return jax.lax.map(lambda args: single(*args), (carry, data, eval_data), batch_size=batched)


# Solvers hash by their settings, so equal solvers, rebuilt or not, share these compilations.
_chunk = jax.jit(_chunk_impl, static_argnums=(0, 1, 2, 3, 4, 5, 6))


def _initial_loss_impl(solver, batched, data_axis, params, state, batch):
    def single(p, s, b):
        return jnp.asarray(solver.loss(p, s, b)), _metrics(solver, p, s, b)

    return jax.vmap(single, in_axes=(0, 0, data_axis))(params, state, batch) if batched else single(
        params, state, batch)


_initial_loss = jax.jit(_initial_loss_impl, static_argnums=(0, 1, 2))


# --------------------------------------------------------------------------------------------------
# Python loop
def _check_solver(solver) -> None:
    if not isinstance(solver, Solver):
        raise TypeError(f"solver must be an ntkhom.solvers.Solver, got {type(solver).__name__}")


def _check_int(name: str, value, minimum: int) -> int:
    if not is_whole(value, minimum):
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


def _is_stream(data) -> bool:
    return isinstance(data, Iterator)


def _finite_batch(batch) -> bool:
    return all(np.all(np.isfinite(np.asarray(leaf))) for leaf in jax.tree.leaves(batch))


class _CheckedStream:
    """A stream of batches checked on the host as they are pulled: it ends before the first batch with NaN or
    inf and keeps its index in ``bad``, so the run stops there with the steps it took, and says why (fed to
    the compiled loop, such a batch would surface as a non-finite loss blamed on the step size)."""

    def __init__(self, stream):
        self.stream, self.count, self.bad = stream, 0, None

    def __iter__(self):
        return self

    def __next__(self):
        if self.bad is not None:
            raise StopIteration
        batch = next(self.stream)
        if not _finite_batch(batch):
            self.bad = self.count
            raise StopIteration
        self.count += 1
        return batch


def _sample_count(data, data_axis) -> int:
    leaves = jax.tree.leaves(data)
    if not leaves:
        raise ValueError("data must be a pytree with at least one array (e.g. (x, y))")
    axis = 0 if data_axis is None else 1
    sizes = {jnp.shape(leaf)[axis] if jnp.ndim(leaf) > axis else -1 for leaf in leaves}
    if len(sizes) != 1 or -1 in sizes:
        raise ValueError(f"every array in data needs the same number of samples on axis {axis}, got "
                         f"sizes {sorted(sizes)}")
    return sizes.pop()


def _take_batches(stream, count: int, data_axis):
    """Up to ``count`` batches from ``stream``, stacked on a new leading axis (None when it is empty)."""
    batches = []
    for _ in range(count):
        try:
            batches.append(next(stream))
        except StopIteration:
            break
    if not batches:
        return None, 0
    stacked = jax.tree.map(lambda *leaves: np.stack([np.asarray(leaf) for leaf in leaves]), *batches)
    return stacked, len(batches)


def _stream_calls(stream, n_records, block, data_axis):
    """The batches of one planned call, as [(n_records, block, stacked batches)]; fewer when the stream ends."""
    stacked, got = _take_batches(stream, n_records * block, data_axis)
    if got == 0:
        return [], True
    calls = []
    full, rest = divmod(got, block)

    def shaped(start, records, size):
        def part(leaf):
            piece = leaf[start: start + records * size].reshape((records, size) + leaf.shape[1:])
            # a per-run batch (data_axis=0) has the run axis after the step axis: move it first for vmap
            return np.moveaxis(piece, 2, 0) if data_axis == 0 else piece
        return jax.tree.map(part, stacked)

    if full:
        calls.append((full, block, shaped(0, full, block)))
    if rest:
        calls.append((1, rest, shaped(full * block, 1, rest)))
    return calls, got < n_records * block


def _drive(solver, params, data, state, *, steps, record_every, chunk, target_loss, divergence_factor, batch_size,
           eval_data, callback, desc, batched, data_axis):
    steps = _check_int("steps", steps, 0)
    record_every = _check_int("record_every", record_every, 1)
    chunk = _check_int("chunk", chunk, 1)
    if target_loss is not None and not math.isfinite(float(target_loss)):
        raise ValueError(f"target_loss must be a finite number or None, got {target_loss}")
    if divergence_factor is not None and not (math.isfinite(divergence_factor) and divergence_factor > 1):
        raise ValueError(f"divergence_factor must be a finite number > 1 or None, got {divergence_factor}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be a function of a driver.Progress, got {type(callback).__name__}")
    if data_axis not in (None, 0):
        raise ValueError(f"data_axis must be None (shared data) or 0 (one dataset per run), got {data_axis!r}")
    streamed = _is_stream(data)
    if streamed and batch_size is not None:
        raise ValueError("batch_size samples minibatches from in-memory data; a stream already yields batches")
    if batch_size is not None:
        n = _sample_count(data, data_axis)
        batch_size = _check_int("batch_size", batch_size, 1)
        if batch_size > n:
            raise ValueError(f"batch_size must be at most the number of samples n = {n}, got {batch_size}")
    if batch_size is not None:
        check_state(state)  # minibatches are drawn from state.key

    start = time.perf_counter()
    pending = None  # a streamed batch taken for the initial loss, used by the first step
    if streamed:
        data = _CheckedStream(data)
        first, got = _take_batches(data, 1, None)
        if got == 0 and data.bad is not None:
            raise ValueError("batch 0 of the data stream has NaN or inf values")
        if got == 0:
            raise ValueError("the data iterator yielded no batch")
        pending = jax.tree.map(lambda leaf: leaf[0], first)
        initial_batch = pending if eval_data is None else eval_data
    else:
        initial_batch = data
    loss0, metrics0 = _initial_loss(solver, batched, data_axis, params, state, initial_batch)
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
             jnp.full(shape, jnp.nan, dtype), jnp.full(shape, -1, jnp.int32))
    limits = (jnp.asarray(target, dtype), jnp.asarray(factor, dtype))

    record_steps = [np.zeros((), np.int64)]
    losses = [loss0]
    metric_rows = [{k: np.asarray(v) for k, v in metrics0.items()}]
    valids = [np.ones(shape, bool)]
    interrupted = exhausted = False
    label = desc or solver.name
    done_steps = 0
    latest = float(np.min(loss0))

    def report(finished):
        if callback is not None:
            callback(Progress(done_steps, steps, latest, finished, label))

    report(False)
    try:
        stream = data if streamed else None
        if streamed:  # put the batch read for the initial loss back in front
            stream = _prepend(pending, stream)
        for n_records, block in _plan(steps, record_every, chunk):
            if np.all(np.asarray(carry[3]) != _RUNNING):
                break
            if streamed:
                calls, exhausted = _stream_calls(stream, n_records, block, data_axis)
            else:
                calls = [(n_records, block, data)]
            for call_records, call_block, call_data in calls:
                new_carry, (rec_loss, rec_metrics, rec_valid) = _chunk(
                    solver, call_records, call_block, batched, batch_size, streamed, data_axis, carry, limits,
                    call_data, eval_data,
                )
                rec_loss = np.asarray(rec_loss)  # waits for the chunk; an interrupt here keeps the old carry
                carry = new_carry
                # records come out (n_records,) or (B, n_records); keep the record axis last
                record_steps.append(done_steps + call_block * np.arange(1, call_records + 1))
                losses.append(rec_loss)
                metric_rows.append({k: np.asarray(v) for k, v in rec_metrics.items()})
                valids.append(np.asarray(rec_valid))
                done_steps += call_records * call_block
                finite = rec_loss[np.asarray(rec_valid)]
                if finite.size:
                    latest = float(np.min(finite)) if batched else float(finite[-1])
                report(False)
                if _STOP.is_set():
                    raise KeyboardInterrupt
            if exhausted:
                break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        report(True)
    wall = time.perf_counter() - start

    params, state, step_arr, code_arr, _, bad_arr, s_broke_arr = carry
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
    s_broke_steps = np.atleast_1d(np.asarray(s_broke_arr))
    bad_batch = data.bad if streamed else None
    reasons, messages = [], []
    for code, stop_step, bad_value, s_step in zip(codes, stop_steps, bad_values, s_broke_steps, strict=True):
        if code != _RUNNING:
            reason = STOP_REASONS[int(code)]
        elif interrupted:
            reason = "interrupted"
        elif exhausted or stop_step < steps:
            reason = ("data_exhausted" if bad_batch is None else "bad_batch") if streamed else "interrupted"
        else:
            reason = "steps"
        message = "nonfinite_s" if reason == "nonfinite" and s_step >= 0 else reason
        messages.append(_MESSAGES[message].format(
            steps=steps, target=target, stop_step=int(stop_step), value=float(bad_value), factor=factor,
            bad_step=f"{int(stop_step) + record_every}", s_step=int(s_step), bad_batch=bad_batch,
        ))
        reasons.append(reason)
    return dict(params=params, state=state, steps=steps_all, loss=loss_all, valid=valid_all,
                metrics=metrics_all, reasons=reasons, messages=messages, stop_steps=stop_steps,
                bad_values=bad_values, wall=wall)


def _prepend(first, stream):
    yield first
    yield from stream


_RUN_ARGS = """
    Args:
      solver: any :class:`ntkhom.solvers.base.Solver`.
      params: initial parameters (a pytree).
      data: the training data: a pytree of arrays with a leading sample axis (``(x, y)``), or a Python
        iterator of such batches (module docstring).
      state: initial solver state (default ``solver.init(params, first batch)``).
      steps: number of iterations (>= 0).
      record_every: record loss and metrics every this many steps (and at the last step).
      chunk: iterations per compiled call (rounded down to a multiple of ``record_every``, at least one
        record); larger chunks mean fewer Python round trips, smaller ones livelier progress.
      batch_size: draw a minibatch of this many distinct rows of ``data`` for every step, from ``state.key``
        (None: full batch). With a summed loss the minibatch gradient estimates b / n times the full one;
        use a mean loss for unbiased SGD.
      eval_data: the batch records are evaluated on when ``data`` is a stream (default: the last batch).
      target_loss: stop at the first record with loss <= target_loss (None: never).
      divergence_factor: stop, keeping the last finite params, when the loss exceeds this times the initial
        loss (None: only non-finite losses stop a run).
      callback: called with a :class:`Progress` after every chunk and at the end (e.g. to draw a progress
        bar); None: silent.
      desc: a label passed to ``callback``.
"""


def run(
    solver: Solver,
    params: PyTree,
    data: PyTree | Iterator,
    state: PyTree | None = None,
    *,
    steps: int,
    record_every: int = 10,
    chunk: int = 1000,
    batch_size: int | None = None,
    eval_data: PyTree | None = None,
    target_loss: float | None = None,
    divergence_factor: float | None = 1e6,
    callback: Callable[[Progress], None] | None = None,
    desc: str | None = None,
) -> RunResult:
    _check_solver(solver)
    if state is None:
        if _is_stream(data):
            first, got = _take_batches(data, 1, None)
            if got == 0:
                raise ValueError("the data iterator yielded no batch")
            first = jax.tree.map(lambda leaf: leaf[0], first)
            if not _finite_batch(first):  # before solver.init, which may not check values
                raise ValueError("batch 0 of the data stream has NaN or inf values")
            data = _prepend(first, data)
            state = solver.init(params, first)
        else:
            state = solver.init(params, data)
    else:
        check_state(state)
    out = _drive(solver, params, data, state, steps=steps, record_every=record_every, chunk=chunk,
                 target_loss=target_loss, divergence_factor=divergence_factor, batch_size=batch_size,
                 eval_data=eval_data, callback=callback, desc=desc, batched=False, data_axis=None)
    valid = out["valid"]
    return RunResult(
        params=out["params"], state=out["state"], steps=out["steps"][valid], loss=out["loss"][valid],
        metrics={k: v[valid] for k, v in out["metrics"].items()}, stop_reason=out["reasons"][0],
        stop_step=int(out["stop_steps"][0]), stop_value=float(out["bad_values"][0]), wall_time=out["wall"],
        message=out["messages"][0],
    )


run.__doc__ = """Run ``solver`` from ``params`` on ``data`` for ``steps`` steps.
""" + _RUN_ARGS + """
    Returns:
      :class:`RunResult`. See the module docstring for the stop rules.
"""


def run_batch(
    solver: Solver,
    params: PyTree,
    data: PyTree | Iterator,
    state: PyTree | None = None,
    *,
    steps: int,
    data_axis: int | None = None,
    group_size: int | None = None,
    record_every: int = 10,
    chunk: int = 1000,
    batch_size: int | None = None,
    eval_data: PyTree | None = None,
    target_loss: float | None = None,
    divergence_factor: float | None = 1e6,
    callback: Callable[[Progress], None] | None = None,
    desc: str | None = None,
) -> BatchResult:
    _check_solver(solver)
    leaves = jax.tree.leaves(params)
    if not leaves or any(jnp.ndim(leaf) == 0 for leaf in leaves):
        raise ValueError("run_batch needs params with a leading batch axis on every array (see stack)")
    sizes = {leaf.shape[0] for leaf in leaves}
    if len(sizes) != 1:  # unbatched params, most likely: vmap would fail with a message about axes
        raise ValueError(f"run_batch needs params with one leading batch axis B on every array (see stack); "
                         f"got leading sizes {sorted(sizes)}")
    if state is not None:
        check_state(state)
    if state is None:
        if _is_stream(data):
            raise ValueError("run_batch on a stream needs an initial state (e.g. jax.vmap(solver.init))")
        state = jax.vmap(solver.init, in_axes=(0, data_axis))(params, data)
    sizes |= {jnp.shape(leaf)[0] if jnp.ndim(leaf) else -1 for leaf in jax.tree.leaves(state)}
    if data_axis == 0 and not _is_stream(data):
        sizes |= {jnp.shape(leaf)[0] if jnp.ndim(leaf) else -1 for leaf in jax.tree.leaves(data)}
    if len(sizes) != 1:
        raise ValueError(f"params and state (and data with data_axis=0) must share one leading batch size, "
                         f"got sizes {sorted(sizes)}")
    group = True if group_size is None else _check_int("group_size", group_size, 1)
    out = _drive(solver, params, data, state, steps=steps, record_every=record_every, chunk=chunk,
                 target_loss=target_loss, divergence_factor=divergence_factor, batch_size=batch_size,
                 eval_data=eval_data, callback=callback, desc=desc, batched=group, data_axis=data_axis)
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


run_batch.__doc__ = """:func:`run` for B configurations at once: ``params`` and ``state`` carry a leading axis B.

    Build the batch with :func:`stack` (e.g. params from B seeds, states with different ``s``), or pass
    ``state=None`` to get ``jax.vmap(solver.init)(params, data)``. Everything runs under one compilation; each
    run stops on its own rule and is frozen afterwards, and the loop ends when all runs have stopped.
    ``data_axis``: None (every run trains on the same data) or 0 (``data`` has a leading axis of size B, one
    dataset per run; for a stream, every batch has it). ``group_size``: None runs all B runs as one vmapped
    computation (best on accelerators and for small runs); k runs k at a time, group after group, inside the
    same compiled call (``lax.map``), which keeps a group's arrays in cache: on a shared 2-core CPU, 64 runs at
    n = 100, d = 10, m = 1000 went 2.1x to 2.6x faster with k = 1 than vmapped (``benchmarks/bench_training.py``).
""" + _RUN_ARGS
