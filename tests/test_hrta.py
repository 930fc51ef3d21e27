"""HRTA schedules: stages equal plain gradient runs stage by stage, switches are measured, each transition
does what its documentation says, continuous schedules follow s(t), and a vmapped batch of schedules equals
separate runs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntkhom.data import sphere, teacher_targets
from ntkhom.models import two_layer
from ntkhom.solvers import driver
from ntkhom.solvers.gradient import gradient_solver
from ntkhom.solvers.hrta import Stage, hrta_solver, linear_schedule, two_stage

N, D, M = 12, 4, 64


@pytest.fixture(scope="module")
def setup():
    key_x, key_y, key_p = jax.random.split(jax.random.PRNGKey(0), 3)
    x = sphere(key_x, N, D)
    y = teacher_targets(key_y, x)
    model = two_layer(M)
    return model, x, y, model.init(key_p, D)


def _loss(model, params, x, y, s):
    return 0.5 * float(jnp.sum((model.apply(params, x, s) - y) ** 2))


def test_switch_schedule_equals_gradient_runs_stage_by_stage(setup):
    model, x, y, params = setup
    stages = [Stage(1.5, 40, 0.2), Stage(1.0, 30, 0.1, "adam")]
    result = driver.run(hrta_solver(model, stages), params, (x, y), steps=70, record_every=10)
    first = driver.run(gradient_solver(model, learning_rate=0.2, s=1.5), params, (x, y), steps=40,
                       record_every=10)
    second = driver.run(gradient_solver(model, learning_rate=0.1, s=1.0, optimizer="adam"), first.params, (x, y),
                        steps=30, record_every=10)
    np.testing.assert_allclose(result.loss[:4], first.loss[:4], rtol=1e-11)
    np.testing.assert_allclose(result.loss[4:], second.loss, rtol=1e-10)
    np.testing.assert_allclose(result.params[0]["W"], second.params[0]["W"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(result.metrics["s"], [1.5] * 4 + [1.0] * 4)
    np.testing.assert_array_equal(result.metrics["stage"], [0] * 4 + [1] * 4)
    # the switch is measured: the loss at s = 1.5 just before, at s = 1 just after, same params
    before, after = np.asarray(result.state.switch_loss[0])
    assert before == pytest.approx(_loss(model, first.params, x, y, 1.5), rel=1e-10)
    assert after == pytest.approx(_loss(model, first.params, x, y, 1.0), rel=1e-10)
    assert after > 2 * before  # the function changes with s: the loss jumps


def test_refit_output_lowers_the_loss_at_the_switch(setup):
    model, x, y, params = setup
    stages = two_stage(1.5, 50, 20, 0.2)
    switch = driver.run(hrta_solver(model, stages), params, (x, y), steps=70, record_every=10)
    refit = driver.run(hrta_solver(model, stages, transition="refit_output", ridge=1e-4), params, (x, y),
                       steps=70, record_every=10)
    jump_switch = np.asarray(switch.state.switch_loss[0])
    jump_refit = np.asarray(refit.state.switch_loss[0])
    assert jump_refit[0] == pytest.approx(jump_switch[0], rel=1e-10)  # same run up to the switch
    # with m >= n and a small ridge the refit nearly interpolates at the new s
    assert jump_refit[1] < 1e-2 * jump_switch[1]
    assert jump_refit[1] < jump_refit[0]
    # only the switch moved the (otherwise frozen) output layer
    assert not np.allclose(refit.params[1]["W"], params[1]["W"])
    np.testing.assert_array_equal(switch.params[1]["W"], params[1]["W"])


def test_ramp_moves_s_linearly_and_softens_the_jump(setup):
    model, x, y, params = setup
    stages = two_stage(1.5, 40, 40, 0.2)
    ramp = driver.run(hrta_solver(model, stages, transition="ramp", ramp_steps=20), params, (x, y), steps=80,
                      record_every=5)
    switch = driver.run(hrta_solver(model, stages), params, (x, y), steps=80, record_every=5)
    # s of the next step at records t = 40, 45, ..., 60: 1.5 + (1 - 1.5) * (t - 40 + 1) / 20
    t = ramp.steps[8:13]
    np.testing.assert_allclose(ramp.metrics["s"][8:13], 1.5 - 0.5 * np.minimum((t - 40 + 1) / 20, 1.0))
    ramp_jump = np.diff(np.asarray(ramp.state.switch_loss[0]))[0]
    switch_jump = np.diff(np.asarray(switch.state.switch_loss[0]))[0]
    assert switch_jump > 0 and abs(ramp_jump) < 0.2 * switch_jump


def test_continuous_schedule_follows_s_of_t(setup):
    model, x, y, params = setup
    schedule = linear_schedule(0.5, 1.0, 60)
    result = driver.run(hrta_solver(model, schedule=schedule, learning_rate=0.2), params, (x, y), steps=80,
                        record_every=10)
    np.testing.assert_allclose(result.metrics["s"], 0.5 + 0.5 * np.minimum(result.steps / 60, 1.0))
    assert result.final_loss < 0.1 * result.loss[0]


def test_vmapped_schedules_equal_separate_runs(setup):
    model, x, y, params = setup
    solver = hrta_solver(model, two_stage(1.5, 30, 30, 0.2))
    states = []
    for s_first in (0.5, 1.5, 1.9):
        state = solver.init(params, (x, y))
        states.append(state._replace(stage_s=state.stage_s.at[0].set(s_first), s=jnp.asarray(s_first)))
    batch = driver.run_batch(solver, driver.stack([params] * 3), (x, y), driver.stack(states), steps=60,
                             record_every=10)
    for i, state in enumerate(states):
        alone = driver.run(solver, params, (x, y), state, steps=60, record_every=10)
        np.testing.assert_allclose(batch.run(i).loss, alone.loss, rtol=1e-11)
        np.testing.assert_allclose(batch.state.switch_loss[i], alone.state.switch_loss, rtol=1e-11)


def test_bad_input_is_refused(setup):
    model, x, y, _ = setup
    with pytest.raises(ValueError, match="steps"):
        Stage(1.0, 0, 0.1)
    with pytest.raises(ValueError, match="learning_rate"):
        Stage(1.0, 10, -0.1)
    with pytest.raises(ValueError, match="learning_rate"):
        Stage(1.0, 10, None)
    with pytest.raises(ValueError, match="finite"):
        Stage(float("nan"), 10, 0.1)
    with pytest.raises(ValueError, match="transition"):
        hrta_solver(model, two_stage(1.5, 5, 5, 0.1), transition="teleport")
    with pytest.raises(ValueError, match="exactly one"):
        hrta_solver(model, two_stage(1.5, 5, 5, 0.1), schedule=linear_schedule(0, 1, 5))
    with pytest.raises(ValueError, match="ramp_steps"):
        hrta_solver(model, two_stage(1.5, 5, 5, 0.1), transition="ramp", ramp_steps=10)
    with pytest.raises(ValueError, match="learning_rate"):
        hrta_solver(model, schedule=linear_schedule(0, 1, 5))
    with pytest.raises(ValueError, match="Stage"):
        hrta_solver(model, [(1.0, 5, 0.1)])
    solver, params = hrta_solver(model, two_stage(1.5, 5, 5, 0.1)), setup[3]
    with pytest.raises(ValueError, match=f"inputs have {D - 1} features but the parameters expect d = {D}"):
        solver.init(params, (x[:, :-1], y))
    with pytest.raises(ValueError, match="non-finite"):
        solver.init(params, (x, y.at[0, 0].set(jnp.nan)))



def test_vmapped_refit_schedules_equal_separate_runs(setup):
    model, x, y, params = setup
    solver = hrta_solver(model, two_stage(1.5, 20, 20, 0.2), transition="refit_output", ridge=1e-4)
    starts = [model.init(jax.random.PRNGKey(i), D) for i in range(3)]
    batch = driver.run_batch(solver, driver.stack(starts), (x, y), steps=40, record_every=10)
    for i, start in enumerate(starts):
        alone = driver.run(solver, start, (x, y), steps=40, record_every=10)
        np.testing.assert_allclose(batch.run(i).loss, alone.loss, rtol=1e-10)
        np.testing.assert_allclose(batch.run(i).params[1]["W"], alone.params[1]["W"], rtol=1e-10, atol=1e-12)
    assert not np.allclose(batch.params[1]["W"][0], starts[0][1]["W"])  # the refit happened
