"""rescaled_every: a function-preserving rescaling (PathCond) applied inside any solver every k steps,
checked against the same steps done by hand, alone and under vmap."""

import jax
import numpy as np
import pytest

from ntkhom import pathcond as pc
from ntkhom.models import mlp
from ntkhom.solvers import driver
from ntkhom.solvers.gradient import gradient_solver
from ntkhom.solvers.rescaling import rescaled_every


def _setup():
    model = mlp((4, 3, 5), s=1.0, phi="relu", bias=True, out_dim=2)
    k1, k2 = jax.random.split(jax.random.PRNGKey(22))
    start = model.init(k1, 3)
    params = pc.rescale(start, pc.random_scaling(k2, start, 1.5))  # something for the rescaling to undo
    x = jax.random.normal(jax.random.PRNGKey(23), (12, 3))
    y = jax.random.normal(jax.random.PRNGKey(24), (12, 2))
    return model, params, (x, y)


def test_rescaled_every_k_steps_inside_a_solver():
    model, params, batch = _setup()
    start = params
    base = gradient_solver(model, learning_rate=1e-3)
    solver = rescaled_every(base, lambda p: pc.pathcond(p, model), every=3)
    state = solver.init(params, batch)
    manual, base_state = params, base.init(params, batch)
    step, base_step, base_loss = jax.jit(solver.step), jax.jit(base.step), jax.jit(base.loss)
    for k in range(4):  # rescale before steps 0 and 3 only; the loss never jumps at a rescaling
        params, state = step(params, state, batch)
        if k % 3 == 0:
            rescaled = pc.pathcond(manual, model)[0]
            assert abs(float(base_loss(rescaled, base_state, batch) - base_loss(manual, base_state, batch))) < 1e-10
            manual = rescaled
        manual, base_state = base_step(manual, base_state, batch)
        for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(manual)):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    assert float(base_loss(params, base_state, batch)) < float(base_loss(start, base_state, batch))
    with pytest.raises(ValueError, match="every must be a positive integer"):
        rescaled_every(base, lambda p: pc.pathcond(p, model), every=0)


def test_a_vmapped_batch_of_rescaled_runs_equals_separate_runs():
    model, params, batch = _setup()
    rescaling = lambda p: pc.pathcond(p, model)  # noqa: E731  one function: one compilation
    solver = rescaled_every(gradient_solver(model, learning_rate=1e-3), rescaling, every=4)
    starts = [params, pc.rescale(params, pc.random_scaling(jax.random.PRNGKey(3), params, 1.0))]
    together = driver.run_batch(solver, driver.stack(starts), batch, steps=10, record_every=5)
    for i, start in enumerate(starts):
        alone = driver.run(solver, start, batch, steps=10, record_every=5)
        np.testing.assert_allclose(together.run(i).loss, alone.loss, rtol=1e-10)
