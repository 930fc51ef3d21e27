"""The common driver: chunking does not change a trajectory, stops are recorded and explained, a vmapped
batch equals separate runs, and bad input is refused."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntkhom.solvers import FunctionSolver, driver


class LsqState(NamedTuple):
    step: jax.Array
    s: jax.Array
    learning_rate: jax.Array
    key: jax.Array


def _lsq_loss(w, state, batch):
    A, b = batch
    return 0.5 * jnp.sum((A @ w - b) ** 2)


def _lsq_step(w, state, batch):
    return w - state.learning_rate * jax.grad(_lsq_loss)(w, state, batch), state._replace(step=state.step + 1)


def _lsq_metrics(w, state, batch):
    return {"w_norm": jnp.linalg.norm(w), "k": state.step}


def lsq_state(learning_rate):
    return LsqState(jnp.zeros((), jnp.int32), jnp.asarray(1.0), jnp.asarray(learning_rate), jax.random.PRNGKey(0))


def least_squares_solver(seed=0, n=12, d=5):
    """GD on L(w) = 1/2 ||A w - b||^2 with the step size in the state (a solver independent of networks);
    the data (A, b) are the batch."""
    key_a, key_b = jax.random.split(jax.random.PRNGKey(seed))
    A = jax.random.normal(key_a, (n, d))
    b = jax.random.normal(key_b, (n,))
    lam_max = float(np.linalg.eigvalsh(np.asarray(A.T @ A)).max())
    solver = FunctionSolver(lambda w, batch: lsq_state(1.0 / lam_max), _lsq_step, _lsq_loss, _lsq_metrics, "lsq")
    return solver, lam_max, A, b


@pytest.fixture(scope="module")
def problem():
    return least_squares_solver()


def test_chunking_gives_the_same_trajectory(problem):
    solver, _, A, b = problem
    w0 = jnp.zeros(5)
    whole = driver.run(solver, w0, (A, b), steps=230, record_every=10, chunk=10_000)
    for chunk in (10, 30, 70):
        part = driver.run(solver, w0, (A, b), steps=230, record_every=10, chunk=chunk)
        np.testing.assert_array_equal(part.steps, whole.steps)
        np.testing.assert_allclose(part.loss, whole.loss, rtol=1e-13, atol=0)
        np.testing.assert_allclose(part.params, whole.params, rtol=1e-13)
    assert whole.steps[0] == 0 and whole.steps[-1] == 230 and len(whole.steps) == 24
    assert whole.stop_reason == "steps" and whole.stop_step == 230
    # the step counter in the state went through every iteration exactly once
    assert int(whole.state.step) == 230 and whole.metrics["k"][-1] == 230


def test_remainder_steps_are_run_and_recorded(problem):
    solver, _, A, b = problem
    w0 = jnp.zeros(5)
    result = driver.run(solver, w0, (A, b), steps=25, record_every=10, chunk=20)
    np.testing.assert_array_equal(result.steps, [0, 10, 20, 25])
    single = driver.run(solver, w0, (A, b), steps=25, record_every=1, chunk=1000)
    np.testing.assert_allclose(result.loss, single.loss[[0, 10, 20, 25]], rtol=1e-13)


def test_target_loss_stops_at_the_first_record_below_it(problem):
    solver, _, A, b = problem
    w0 = jnp.zeros(5)
    full = driver.run(solver, w0, (A, b), steps=400, record_every=5, chunk=400)
    target = float(full.loss[0] + full.loss[-1]) / 2 * 0.2 + 0.8 * float(full.loss[-1])
    first = int(np.argmax(full.loss <= target))
    assert 0 < first < len(full.loss) - 1
    for chunk in (5, 35, 400):
        stopped = driver.run(solver, w0, (A, b), steps=400, record_every=5, chunk=chunk, target_loss=target)
        assert stopped.stop_reason == "target_loss"
        assert stopped.stop_step == full.steps[first]
        np.testing.assert_allclose(stopped.loss, full.loss[: first + 1], rtol=1e-13)
        plain = driver.run(solver, w0, (A, b), steps=int(full.steps[first]), record_every=5)
        np.testing.assert_allclose(stopped.params, plain.params, rtol=1e-13)


def test_diverging_step_size_is_a_recorded_stop_not_nan_results(problem):
    solver, lam_max, A, b = problem
    w0 = jnp.zeros(5)
    state = lsq_state(2.5 / lam_max)  # beyond 2 / lambda_max
    for factor, reason in ((1e3, "diverged"), (None, "nonfinite")):
        result = driver.run(solver, w0, (A, b), state, steps=5000, record_every=7, divergence_factor=factor)
        assert result.stop_reason == reason
        assert not result.ok
        assert result.stop_step < 5000
        assert np.all(np.isfinite(result.loss)) and np.all(np.isfinite(result.params))
        assert result.steps[-1] == result.stop_step
        assert not np.isfinite(result.stop_value) or result.stop_value > 1e3 * result.loss[0]
        assert "2 / lambda_max" in result.message
        # the returned params are exactly those after stop_step iterations
        plain = driver.run(solver, w0, (A, b), state, steps=result.stop_step, record_every=7,
                           divergence_factor=None)
        np.testing.assert_allclose(result.params, plain.params, rtol=1e-12)


def test_batch_equals_separate_runs_and_each_run_stops_on_its_own(problem):
    solver, lam_max, A, b = problem
    rates = [0.5 / lam_max, 1.0 / lam_max, 2.5 / lam_max]  # the last one diverges
    starts = [jax.random.normal(jax.random.PRNGKey(i), (5,)) for i in range(3)]
    states = [lsq_state(r) for r in rates]
    batch = driver.run_batch(solver, driver.stack(starts), (A, b), driver.stack(states), steps=300, record_every=10,
                             chunk=100, divergence_factor=1e4)
    assert batch.size == 3
    for i in range(3):
        alone = driver.run(solver, starts[i], (A, b), states[i], steps=300, record_every=10, chunk=100,
                           divergence_factor=1e4)
        one = batch.run(i)
        assert one.stop_reason == alone.stop_reason
        assert one.stop_step == alone.stop_step
        np.testing.assert_allclose(one.loss, alone.loss, rtol=1e-12)
        np.testing.assert_allclose(one.params, alone.params, rtol=1e-12)
    assert batch.stop_reasons[:2] == ["steps", "steps"] and batch.stop_reasons[2] == "diverged"
    assert np.isnan(batch.loss[2, -1]) and batch.recorded[2] < batch.loss.shape[1]


def _on_chunk(monkeypatch, number, action):
    """Make the driver call ``action()`` as it starts its ``number``-th compiled chunk."""
    real, calls = driver._chunk, {"n": 0}

    def chunk(*args):
        calls["n"] += 1
        if calls["n"] == number:
            action()
        return real(*args)

    monkeypatch.setattr(driver, "_chunk", chunk)


def _interrupt():
    raise KeyboardInterrupt


def test_keyboard_interrupt_keeps_finished_chunks(problem, monkeypatch):
    solver, _, A, b = problem
    _on_chunk(monkeypatch, 3, _interrupt)
    result = driver.run(solver, jnp.zeros(5), (A, b), steps=100, record_every=10, chunk=20)
    assert result.stop_reason == "interrupted"
    assert result.stop_step == 40 and result.steps[-1] == 40


def test_a_stop_request_ends_the_run_after_the_current_chunk(problem, monkeypatch):
    # What the command line's Ctrl-C handler does when Python drops its KeyboardInterrupt (raised inside a
    # garbage-collection callback): the request alone must stop the run, keeping the chunks that finished.
    solver, _, A, b = problem
    _on_chunk(monkeypatch, 2, driver.request_stop)
    try:
        result = driver.run(solver, jnp.zeros(5), (A, b), steps=100, record_every=10, chunk=20)
    finally:
        driver.clear_stop()
    assert result.stop_reason == "interrupted"
    assert result.stop_step == 40 and result.steps[-1] == 40
    assert driver.run(solver, jnp.zeros(5), (A, b), steps=100, record_every=10, chunk=20).stop_reason == "steps"


def test_bad_input_is_refused(problem):
    solver, _, A, b = problem
    w0 = jnp.zeros(5)
    with pytest.raises(ValueError, match="steps"):
        driver.run(solver, w0, (A, b), steps=-1)
    with pytest.raises(ValueError, match="record_every"):
        driver.run(solver, w0, (A, b), steps=10, record_every=0)
    with pytest.raises(ValueError, match="chunk"):
        driver.run(solver, w0, (A, b), steps=10, chunk=2.5)
    with pytest.raises(ValueError, match="target_loss"):
        driver.run(solver, w0, (A, b), steps=10, target_loss=float("nan"))
    with pytest.raises(ValueError, match="divergence_factor"):
        driver.run(solver, w0, (A, b), steps=10, divergence_factor=0.5)
    with pytest.raises(TypeError, match="Solver"):
        driver.run(lambda w: w, w0, (A, b), steps=10)
    with pytest.raises(ValueError, match="initial loss"):
        driver.run(solver, jnp.full(5, jnp.nan), (A, b), steps=10)
    with pytest.raises(ValueError, match="batch"):
        driver.run_batch(solver, w0, (A, b), driver.stack([lsq_state(1.0)] * 3), steps=10)
    with pytest.raises(ValueError, match="stack"):
        driver.stack([])
    with pytest.raises(TypeError, match="a solver state must be a NamedTuple"):
        driver.run(solver, w0, (A, b), (0, 1.0), steps=10)
    with pytest.raises(TypeError, match="a solver state must be a NamedTuple"):
        driver.run_batch(solver, driver.stack([w0] * 2), (A, b), (0, 1.0), steps=10)
    # params of one run where B runs were meant: leading sizes differ between leaves
    pair = {"w": w0, "v": jnp.zeros(3)}
    with pytest.raises(ValueError, match=r"one leading batch axis B .* got leading sizes \[3, 5\]"):
        driver.run_batch(solver, pair, (A, b), steps=10)


def test_minibatches_of_all_rows_are_the_full_batch_and_smaller_ones_use_the_key(problem):
    solver, lam_max, A, b = problem
    w0 = jnp.zeros(5)
    full = driver.run(solver, w0, (A, b), steps=40, record_every=10)
    all_rows = driver.run(solver, w0, (A, b), steps=40, record_every=10, batch_size=A.shape[0])
    np.testing.assert_array_equal(all_rows.params, full.params)
    assert not np.array_equal(all_rows.state.key, full.state.key)  # the key advanced, once per step
    expected_key = jax.random.PRNGKey(0)
    for _ in range(40):
        expected_key, _ = jax.random.split(expected_key)
    np.testing.assert_array_equal(all_rows.state.key, expected_key)
    small = driver.run(solver, w0, (A, b), steps=40, record_every=10, batch_size=4)
    other = driver.run(solver, w0, (A, b), lsq_state(1.0 / lam_max)._replace(key=jax.random.PRNGKey(7)),
                       steps=40, record_every=10, batch_size=4)
    assert not np.allclose(small.params, other.params)
    # records are full-data losses of the returned params
    np.testing.assert_allclose(small.loss[-1], _lsq_loss(small.params, None, (A, b)), rtol=1e-12)
    with pytest.raises(ValueError, match="batch_size"):
        driver.run(solver, w0, (A, b), steps=4, batch_size=A.shape[0] + 1)


def test_a_stream_of_batches_equals_the_same_batches_in_a_loop(problem):
    solver, lam_max, A, b = problem
    w0 = jnp.zeros(5)
    halves = [(A[:6], b[:6]), (A[6:], b[6:])]
    batches = [halves[i % 2] for i in range(23)]
    result = driver.run(solver, w0, iter(batches), steps=23, record_every=5, chunk=10)
    w, state = w0, lsq_state(1.0 / lam_max)
    for batch in batches:
        w, state = _lsq_step(w, state, batch)
    np.testing.assert_allclose(result.params, w, rtol=1e-12)
    assert result.stop_reason == "steps" and list(result.steps) == [0, 5, 10, 15, 20, 23]
    # a record's loss is evaluated on eval_data when given
    evaluated = driver.run(solver, w0, iter(batches), steps=23, record_every=5, eval_data=(A, b))
    np.testing.assert_allclose(evaluated.loss[-1], _lsq_loss(w, None, (A, b)), rtol=1e-12)
    short = driver.run(solver, w0, iter(batches[:12]), steps=23, record_every=5)
    assert short.stop_reason == "data_exhausted" and short.stop_step == 12
    assert "ran out" in short.message


def test_runs_in_groups_equal_the_vmapped_batch(problem):
    solver, lam_max, A, b = problem
    rates = [0.5 / lam_max, 1.0 / lam_max, 2.5 / lam_max]  # the last one diverges
    starts = driver.stack([jax.random.normal(jax.random.PRNGKey(i), (5,)) for i in range(3)])
    states = driver.stack([lsq_state(r) for r in rates])
    kwargs = dict(steps=100, record_every=10, divergence_factor=1e4)
    vmapped = driver.run_batch(solver, starts, (A, b), states, **kwargs)
    for group in (1, 2):
        grouped = driver.run_batch(solver, starts, (A, b), states, group_size=group, **kwargs)
        np.testing.assert_allclose(grouped.loss, vmapped.loss, rtol=1e-12)
        assert grouped.stop_reasons == vmapped.stop_reasons
    with pytest.raises(ValueError, match="group_size"):
        driver.run_batch(solver, starts, (A, b), states, group_size=0, steps=10)


def test_vmap_over_datasets_equals_separate_runs(problem):
    solver, lam_max, A, b = problem
    datasets = [least_squares_solver(seed=seed)[2:] for seed in (1, 2, 3)]
    stacked = driver.stack(datasets)
    w0 = driver.stack([jnp.zeros(5)] * 3)
    states = driver.stack([lsq_state(0.5 / lam_max)] * 3)
    batch = driver.run_batch(solver, w0, stacked, states, data_axis=0, steps=50, record_every=10)
    grouped = driver.run_batch(solver, w0, stacked, states, data_axis=0, group_size=2, steps=50, record_every=10)
    np.testing.assert_allclose(grouped.loss, batch.loss, rtol=1e-12)
    for i, data in enumerate(datasets):
        alone = driver.run(solver, jnp.zeros(5), data, lsq_state(0.5 / lam_max), steps=50, record_every=10)
        np.testing.assert_allclose(batch.run(i).params, alone.params, rtol=1e-12)
        np.testing.assert_allclose(batch.run(i).loss, alone.loss, rtol=1e-12)


def test_progress_goes_to_the_callback(problem):
    solver, _, A, b = problem
    seen = []
    driver.run(solver, jnp.zeros(5), (A, b), steps=100, record_every=10, chunk=30, callback=seen.append,
               desc="lsq run")
    assert [p.done for p in seen] == [0, 30, 60, 90, 100, 100]
    assert seen[-1].finished and not any(p.finished for p in seen[:-1])
    assert all(p.total == 100 and p.desc == "lsq run" for p in seen)
    assert seen[-1].loss < seen[0].loss
