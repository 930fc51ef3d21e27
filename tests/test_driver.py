"""The common driver: chunking does not change a trajectory, stops are recorded and explained, a vmapped
batch equals separate runs, and bad input is refused."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntkhom.solvers import Solver, driver


def least_squares_solver(seed=0, n=12, d=5):
    """GD on L(w) = 1/2 ||A w - b||^2 with the step size in the state (a solver independent of networks)."""
    key_a, key_b = jax.random.split(jax.random.PRNGKey(seed))
    A = jax.random.normal(key_a, (n, d))
    b = jax.random.normal(key_b, (n,))

    def loss(w, state):
        return 0.5 * jnp.sum((A @ w - b) ** 2)

    def step(w, state):
        return w - state["lr"] * jax.grad(loss)(w, state), {"lr": state["lr"], "k": state["k"] + 1}

    def metrics(w, state):
        return {"w_norm": jnp.linalg.norm(w), "k": state["k"]}

    lam_max = float(np.linalg.eigvalsh(np.asarray(A.T @ A)).max())
    solver = Solver(init=lambda w: {"lr": jnp.asarray(1.0 / lam_max), "k": jnp.zeros((), jnp.int32)},
                    step=step, loss=loss, metrics=metrics, name="lsq")
    return solver, lam_max, A, b


@pytest.fixture(scope="module")
def problem():
    return least_squares_solver()


def test_chunking_gives_the_same_trajectory(problem):
    solver, *_ = problem
    w0 = jnp.zeros(5)
    whole = driver.run(solver, w0, steps=230, record_every=10, chunk=10_000, progress=False)
    for chunk in (10, 30, 70):
        part = driver.run(solver, w0, steps=230, record_every=10, chunk=chunk, progress=False)
        np.testing.assert_array_equal(part.steps, whole.steps)
        np.testing.assert_allclose(part.loss, whole.loss, rtol=1e-13, atol=0)
        np.testing.assert_allclose(part.params, whole.params, rtol=1e-13)
    assert whole.steps[0] == 0 and whole.steps[-1] == 230 and len(whole.steps) == 24
    assert whole.stop_reason == "steps" and whole.stop_step == 230
    # the step counter in the state went through every iteration exactly once
    assert int(whole.state["k"]) == 230 and whole.metrics["k"][-1] == 230


def test_remainder_steps_are_run_and_recorded(problem):
    solver, *_ = problem
    w0 = jnp.zeros(5)
    result = driver.run(solver, w0, steps=25, record_every=10, chunk=20, progress=False)
    np.testing.assert_array_equal(result.steps, [0, 10, 20, 25])
    single = driver.run(solver, w0, steps=25, record_every=1, chunk=1000, progress=False)
    np.testing.assert_allclose(result.loss, single.loss[[0, 10, 20, 25]], rtol=1e-13)


def test_target_loss_stops_at_the_first_record_below_it(problem):
    solver, *_ = problem
    w0 = jnp.zeros(5)
    full = driver.run(solver, w0, steps=400, record_every=5, chunk=400, progress=False)
    target = float(full.loss[0] + full.loss[-1]) / 2 * 0.2 + 0.8 * float(full.loss[-1])
    first = int(np.argmax(full.loss <= target))
    assert 0 < first < len(full.loss) - 1
    for chunk in (5, 35, 400):
        stopped = driver.run(solver, w0, steps=400, record_every=5, chunk=chunk, target_loss=target,
                             progress=False)
        assert stopped.stop_reason == "target_loss"
        assert stopped.stop_step == full.steps[first]
        np.testing.assert_allclose(stopped.loss, full.loss[: first + 1], rtol=1e-13)
        plain = driver.run(solver, w0, steps=int(full.steps[first]), record_every=5, progress=False)
        np.testing.assert_allclose(stopped.params, plain.params, rtol=1e-13)


def test_diverging_step_size_is_a_recorded_stop_not_nan_results(problem):
    solver, lam_max, *_ = problem
    w0 = jnp.zeros(5)
    state = {"lr": jnp.asarray(2.5 / lam_max), "k": jnp.zeros((), jnp.int32)}  # beyond 2 / lambda_max
    for factor, reason in ((1e3, "diverged"), (None, "nonfinite")):
        result = driver.run(solver, w0, state, steps=5000, record_every=7, divergence_factor=factor,
                            progress=False)
        assert result.stop_reason == reason
        assert not result.ok
        assert result.stop_step < 5000
        assert np.all(np.isfinite(result.loss)) and np.all(np.isfinite(result.params))
        assert result.steps[-1] == result.stop_step
        assert not np.isfinite(result.stop_value) or result.stop_value > 1e3 * result.loss[0]
        assert "2 / lambda_max" in result.message
        # the returned params are exactly those after stop_step iterations
        plain = driver.run(solver, w0, state, steps=result.stop_step, record_every=7,
                           divergence_factor=None, progress=False)
        np.testing.assert_allclose(result.params, plain.params, rtol=1e-12)


def test_batch_equals_separate_runs_and_each_run_stops_on_its_own(problem):
    solver, lam_max, *_ = problem
    rates = [0.5 / lam_max, 1.0 / lam_max, 2.5 / lam_max]  # the last one diverges
    starts = [jax.random.normal(jax.random.PRNGKey(i), (5,)) for i in range(3)]
    states = [{"lr": jnp.asarray(r), "k": jnp.zeros((), jnp.int32)} for r in rates]
    batch = driver.run_batch(solver, driver.stack(starts), driver.stack(states), steps=300, record_every=10,
                             chunk=100, divergence_factor=1e4, progress=False)
    assert batch.size == 3
    for i in range(3):
        alone = driver.run(solver, starts[i], states[i], steps=300, record_every=10, chunk=100,
                           divergence_factor=1e4, progress=False)
        one = batch.run(i)
        assert one.stop_reason == alone.stop_reason
        assert one.stop_step == alone.stop_step
        np.testing.assert_allclose(one.loss, alone.loss, rtol=1e-12)
        np.testing.assert_allclose(one.params, alone.params, rtol=1e-12)
    assert batch.stop_reasons[:2] == ["steps", "steps"] and batch.stop_reasons[2] == "diverged"
    assert np.isnan(batch.loss[2, -1]) and batch.recorded[2] < batch.loss.shape[1]


def test_keyboard_interrupt_keeps_finished_chunks(problem, monkeypatch):
    solver, *_ = problem
    real = driver._chunk
    calls = {"n": 0}

    def interrupt_on_third(*args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(driver, "_chunk", interrupt_on_third)
    result = driver.run(solver, jnp.zeros(5), steps=100, record_every=10, chunk=20, progress=False)
    assert result.stop_reason == "interrupted"
    assert result.stop_step == 40 and result.steps[-1] == 40


def test_bad_input_is_refused(problem):
    solver, *_ = problem
    w0 = jnp.zeros(5)
    with pytest.raises(ValueError, match="steps"):
        driver.run(solver, w0, steps=-1)
    with pytest.raises(ValueError, match="record_every"):
        driver.run(solver, w0, steps=10, record_every=0)
    with pytest.raises(ValueError, match="chunk"):
        driver.run(solver, w0, steps=10, chunk=2.5)
    with pytest.raises(ValueError, match="target_loss"):
        driver.run(solver, w0, steps=10, target_loss=float("nan"))
    with pytest.raises(ValueError, match="divergence_factor"):
        driver.run(solver, w0, steps=10, divergence_factor=0.5)
    with pytest.raises(ValueError, match="Solver"):
        driver.run(lambda w: w, w0, steps=10)
    with pytest.raises(ValueError, match="initial loss"):
        driver.run(solver, jnp.full(5, jnp.nan), steps=10, progress=False)
    with pytest.raises(ValueError, match="batch"):
        driver.run_batch(solver, w0, {"lr": jnp.ones(3), "k": jnp.zeros(3, jnp.int32)}, steps=10)
    with pytest.raises(ValueError, match="stack"):
        driver.stack([])
