"""Analytic alternating minimization: each step is the exact critical point of its sub-problem, the loss
never increases where the formulation guarantees it, and a realizable teacher is fitted to zero loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntkhom.solvers.analytic_am as analytic_am_module
from ntkhom.data import load
from ntkhom.solvers.analytic_am import (
    am_model,
    analytic_am,
    augment,
    forward,
    from_params,
    frozen_pattern_gradient,
    pattern,
    square_loss,
    to_params,
)
from ntkhom.solvers.analytic_am import hidden_step as _hidden_step
from ntkhom.solvers.analytic_am import output_step as _output_step

jax.config.update("jax_enable_x64", True)

# jit-compiled once per shape, so the tests do not pay op-by-op dispatch of the CG loop
output_step = jax.jit(_output_step, static_argnums=(4, 5))
hidden_step = jax.jit(_hidden_step, static_argnums=(4,), static_argnames=("hidden",))


def _problem(seed=0, n=60, d=3, width=6, k=1, phi="leaky_relu", s=1.0):
    # n k = 120 > h (d + 1) = 24 by default: the fits below are not interpolations
    kx, ky, kp = jax.random.split(jax.random.PRNGKey(seed), 3)
    x = jax.random.normal(kx, (n, d))
    y = jax.random.normal(ky, (n, k))
    model = am_model(width, s, phi=phi, out_dim=k)
    return model, x, y, model.init(kp, d)


def _frozen_loss(W, S, weights, xa, y):
    return 0.5 * jnp.sum((((xa @ W.T) * S) @ weights.V + weights.c - y) ** 2)


def test_effective_weights_reproduce_the_model_and_round_trip():
    model, x, _, params = _problem(k=2, s=0.7)
    weights = from_params(model, params)
    np.testing.assert_allclose(forward(weights, augment(x, True), 0.7, model.phi), model.apply(params, x),
                               atol=1e-12)
    back = to_params(model, weights, params)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-13)


@pytest.mark.parametrize("phi", ["relu", "leaky_relu"])
def test_output_step_is_the_least_squares_critical_point(phi):
    model, x, y, params = _problem(k=2, phi=phi)
    weights = from_params(model, params)
    # Kill a neuron so that H has a zero column (the singular case the minimum-norm solve must survive).
    weights = weights._replace(W=weights.W.at[0].set(jnp.concatenate([jnp.zeros(3), jnp.array([-50.0])])))
    xa = augment(x, True)
    new = output_step(weights, xa, y, 1.0, model.phi)
    H = jnp.concatenate([jnp.maximum(xa @ new.W.T, 0) if phi == "relu" else
                         jnp.where(xa @ new.W.T > 0, 1.0, 0.01) * (xa @ new.W.T),
                         jnp.ones((x.shape[0], 1))], axis=1)
    coef = jnp.concatenate([new.V, new.c[None]], axis=0)
    gradient = H.T @ (H @ coef - y)
    assert float(jnp.linalg.norm(gradient) / jnp.linalg.norm(H.T @ y)) < 1e-10


@pytest.mark.parametrize("hidden", ["cg", "dual", "dense"])
@pytest.mark.parametrize("phi,s", [("leaky_relu", 1.0), ("relu", 0.6)])
def test_joint_hidden_step_is_the_frozen_pattern_critical_point(hidden, phi, s):
    model, x, y, params = _problem(seed=1, k=2, phi=phi, s=s)
    xa = augment(x, True)
    weights = output_step(from_params(model, params), xa, y, s, model.phi)
    S = pattern(xa @ weights.W.T, s, model.phi)
    new, _ = hidden_step(weights, xa, y, s, model.phi, hidden=hidden)
    g_new = frozen_pattern_gradient(new, S, xa, y)
    g_old = frozen_pattern_gradient(weights, S, xa, y)
    assert float(jnp.linalg.norm(g_new) / jnp.linalg.norm(g_old)) < 1e-6
    # and it is what autodiff says the frozen-pattern gradient is
    np.testing.assert_allclose(jax.grad(_frozen_loss)(new.W, S, new, xa, y), g_new, atol=1e-9)


def test_dual_and_dense_give_the_minimum_norm_correction_and_dead_neurons_stay():
    # n = 16 < h (d + 1) = 20: an under-determined system, so "minimum norm" is what singles out the answer
    model, x, y, params = _problem(seed=2, n=16, width=5, phi="relu")
    xa = augment(x, True)
    weights = output_step(from_params(model, params), xa, y, 1.0, model.phi)
    dead_row = jnp.array([0.3, -0.2, 0.1, -100.0])  # negative on every sample: zero columns in J
    weights = weights._replace(W=weights.W.at[2].set(dead_row))
    S = pattern(xa @ weights.W.T, 1.0, model.phi)
    dense, _ = hidden_step(weights, xa, y, 1.0, model.phi, hidden="dense")
    dual, _ = hidden_step(weights, xa, y, 1.0, model.phi, hidden="dual")
    cg, info = hidden_step(weights, xa, y, 1.0, model.phi, hidden="cg")
    np.testing.assert_allclose(dual.W, dense.W, atol=1e-8)
    for new in (dense, dual, cg):
        np.testing.assert_allclose(new.W[2], dead_row, atol=1e-12)
        # the frozen-pattern fit interpolates (rank 13 < 16 equations, but y was fitted by V already)
        g = frozen_pattern_gradient(new, S, xa, y)
        assert float(jnp.linalg.norm(g) / jnp.linalg.norm(frozen_pattern_gradient(weights, S, xa, y))) < 1e-6
    # CG from zero stays in range(J^T): the same minimum-norm correction
    np.testing.assert_allclose(cg.W, dense.W, atol=1e-7)
    assert float(info["relative_residual"]) < 1e-10


def test_every_hidden_solver_auto_included_gives_one_answer_on_a_rank_deficient_problem(monkeypatch):
    # two identical neurons (equal rows of W and of V) make J's columns dependent, and n k = 24 < h (d + 1):
    # infinitely many exact corrections; "auto" must not pick a different one depending on the size limit
    model, x, y, params = _problem(seed=4, n=12, width=6, k=2, phi="leaky_relu")
    xa = augment(x, True)
    weights = output_step(from_params(model, params), xa, y, 1.0, model.phi)
    weights = weights._replace(W=weights.W.at[1].set(weights.W[0]), V=weights.V.at[1].set(weights.V[0]))
    S = pattern(xa @ weights.W.T, 1.0, model.phi)
    J = jnp.einsum("ij,jk,ia->ikja", S, weights.V, xa).reshape(-1, weights.W.size)
    assert int(jnp.linalg.matrix_rank(J)) < min(J.shape)
    answers = {hidden: hidden_step(weights, xa, y, 1.0, model.phi, hidden=hidden)[0].W
               for hidden in ("cg", "dual", "dense")}
    for limit in (0, 10_000):  # "auto" resolved to CG, then to the dual solve
        monkeypatch.setattr(analytic_am_module, "DUAL_LIMIT", limit)
        # unjitted: "auto" is resolved at call time, a jit cache would keep the first resolution
        answers[f"auto<{limit}>"] = _hidden_step(weights, xa, y, 1.0, model.phi, hidden="auto")[0].W
    assert analytic_am_module.resolve_hidden("auto", 12, 2, 6, 4) == "dual"
    for name, W in answers.items():
        np.testing.assert_allclose(W, answers["dense"], atol=1e-7, err_msg=name)
    # and it is the minimum-norm one: no other exact correction is shorter (add a null-space direction)
    null = jnp.zeros_like(weights.W).at[0].set(1.0).at[1].set(-1.0)
    assert float(jnp.linalg.norm(J @ null.reshape(-1))) < 1e-10
    delta = answers["dense"] - weights.W
    assert float(jnp.sum(delta**2)) < float(jnp.sum((delta + 0.1 * null) ** 2))


def test_cg_and_dense_agree_when_the_system_has_full_rank():
    model, x, y, params = _problem(seed=7, n=50, width=4, k=2)
    xa = augment(x, True)
    weights = output_step(from_params(model, params), xa, y, 1.0, model.phi)
    cg, _ = hidden_step(weights, xa, y, 1.0, model.phi, hidden="cg")
    dense, _ = hidden_step(weights, xa, y, 1.0, model.phi, hidden="dense")
    np.testing.assert_allclose(cg.W, dense.W, atol=1e-7)


def test_neuron_step_solves_each_neuron_exactly():
    model, x, y, params = _problem(seed=3, width=4, k=2)
    xa = augment(x, True)
    weights = output_step(from_params(model, params), xa, y, 1.0, model.phi)
    S = pattern(xa @ weights.W.T, 1.0, model.phi)
    new, _ = hidden_step(weights, xa, y, 1.0, model.phi, hidden="neuron")
    g = frozen_pattern_gradient(new, S, xa, y)
    g0 = frozen_pattern_gradient(weights, S, xa, y)
    # Gauss-Seidel: the last neuron solved sees every other neuron at its final value, so its block is 0.
    assert float(jnp.linalg.norm(g[-1]) / jnp.linalg.norm(g0)) < 1e-10
    # With one neuron the per-neuron step is the joint step.
    one_model, x1, y1, p1 = _problem(seed=4, width=1, k=2)
    w1 = output_step(from_params(one_model, p1), augment(x1, True), y1, 1.0, one_model.phi)
    a, _ = hidden_step(w1, augment(x1, True), y1, 1.0, one_model.phi, hidden="neuron")
    b, _ = hidden_step(w1, augment(x1, True), y1, 1.0, one_model.phi, hidden="dense")
    np.testing.assert_allclose(a.W, b.W, atol=1e-9)


@pytest.mark.parametrize("hidden", ["cg", "dual", "neuron"])
def test_frozen_pattern_hidden_step_never_increases_the_loss(hidden):
    for seed in range(4):
        model, x, y, params = _problem(seed=10 + seed, phi="relu")
        xa = augment(x, True)
        weights = output_step(from_params(model, params), xa, y, 1.0, model.phi)
        S = pattern(xa @ weights.W.T, 1.0, model.phi)
        new, _ = hidden_step(weights, xa, y, 1.0, model.phi, hidden=hidden)
        before = _frozen_loss(weights.W, S, weights, xa, y)
        np.testing.assert_allclose(before, square_loss(weights, xa, y, 1.0, model.phi), rtol=1e-12)
        assert float(_frozen_loss(new.W, S, new, xa, y)) <= float(before) * (1 + 1e-12)


def _losses(solver, params, iterations, batch):
    state = solver.init(params, batch)
    step = jax.jit(solver.step)
    losses = [float(solver.loss(params, state, batch))]
    for _ in range(iterations):
        params, state = step(params, state, batch)
        losses.append(float(solver.loss(params, state, batch)))
    return np.array(losses), state


@pytest.mark.parametrize("safeguard", ["damp", "reject"])
def test_safeguarded_loop_never_increases_the_loss_on_real_data(safeguard):
    data = load("diabetes", n=120, normalization="standardize")
    model = am_model(12, phi="relu")
    solver = analytic_am(model, safeguard=safeguard)
    losses, _ = _losses(solver, model.init(jax.random.PRNGKey(0), data.d), 15, (data.x, data.y))
    # the first entry is at the random init; from the first output step on the sequence is monotone
    assert np.all(np.diff(losses[1:]) <= 1e-10 * losses[1:-1])
    if safeguard == "damp":  # "reject" is deterministic: after one rejection it stays where it is
        assert losses[-1] < 0.9 * losses[1]


def test_without_safeguard_the_pattern_change_can_increase_the_loss():
    # The safeguard is needed: the same runs without it do go up somewhere (what the test above guards).
    data = load("diabetes", n=120, normalization="standardize")
    model = am_model(12, phi="relu")
    increased = False
    for seed in range(3):
        solver = analytic_am(model, safeguard="none")
        losses, _ = _losses(solver, model.init(jax.random.PRNGKey(seed), data.d), 15, (data.x, data.y))
        increased |= bool(np.any(np.diff(losses[1:]) > 1e-8 * losses[1:-1]))
        if increased:
            break
    assert increased


def test_realizable_teacher_is_fitted_to_zero_loss():
    kx, kt, ks = jax.random.split(jax.random.PRNGKey(5), 3)
    x = jax.random.normal(kx, (150, 4))
    teacher = am_model(3, phi="leaky_relu")
    y = teacher.apply(teacher.init(kt, 4), x)
    student = am_model(6, phi="leaky_relu")  # h (d + 1) = 30 < n = 150: fitting is not interpolation
    solver = analytic_am(student)  # "auto": CG here, since n k > h (d + 1)
    losses, _ = _losses(solver, student.init(ks, 4), 80, (x, y))
    assert losses[-1] < 1e-12 * float(jnp.sum(y**2))


def test_homotopy_s_lives_in_the_state_and_vmaps():
    model, x, y, params = _problem(seed=6, phi="relu")
    solver = analytic_am(model)
    states = jax.vmap(lambda s: solver.init(params, (x, y))._replace(s=s))(jnp.array([0.5, 1.0]))
    batched = jax.jit(jax.vmap(solver.step, in_axes=(None, 0, None)))(params, states, (x, y))
    step = jax.jit(solver.step)
    for i, s in enumerate([0.5, 1.0]):
        single = step(params, solver.init(params, (x, y))._replace(s=jnp.asarray(s)), (x, y))
        for a, b in zip(jax.tree.leaves(single[0]), jax.tree.leaves(batched[0]), strict=True):
            np.testing.assert_allclose(a, b[i], atol=1e-9)


def test_bad_input_raises_clear_errors():
    model = am_model(4)
    x = np.ones((10, 3))
    y = np.ones((10, 1))
    params = model.init(jax.random.PRNGKey(0), 3)
    solver = analytic_am(model)
    with pytest.raises(ValueError, match="feature"):
        solver.init(params, (np.ones((10, 0)), y))
    with pytest.raises(ValueError, match="at least 2 samples"):
        solver.init(params, (np.ones((1, 3)), np.ones((1, 1))))
    with pytest.raises(ValueError, match="non-finite"):
        solver.init(params, (x, np.where(np.arange(10)[:, None] == 3, np.nan, 1.0)))
    with pytest.raises(ValueError, match="rows but the inputs have"):
        solver.init(params, (x, np.ones((9, 1))))
    with pytest.raises(ValueError, match="out_dim"):
        solver.init(params, (x, np.ones((10, 2))))
    with pytest.raises(ValueError, match="unknown hidden solver"):
        analytic_am(model, hidden="qr")
    with pytest.raises(ValueError, match="unknown safeguard"):
        analytic_am(model, safeguard="maybe")
    with pytest.raises(ValueError, match="piecewise-linear"):
        analytic_am(am_model(4, phi="tanh"))
    with pytest.raises(ValueError, match="two-layer"):
        analytic_am(am_model(4).__class__(widths=(3, 3), phi="relu", b_std=1.0, out_b_std=1.0))
    with pytest.raises(ValueError, match="expect d"):
        solver.init(model.init(jax.random.PRNGKey(0), 5), (x, y))
