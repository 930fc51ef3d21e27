"""The fused CPU step of two-layer GD (ntkhom.solvers.native): it is the same step as XLA's autodiff step,
for every ReLU-family phi, s, dtype, width and input dimension it accepts, batched or not; the solver uses it
only where it applies, and says why not where it does not."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntkhom.data import sphere, teacher_targets
from ntkhom.models import HomotopyMLP, mlp, two_layer
from ntkhom.solvers import driver, native
from ntkhom.solvers.gradient import gradient_solver

pytestmark = pytest.mark.skipif(not native.available(), reason=f"fused kernel: {native.unavailable_reason()}")


def _data(n, d, dtype=jnp.float64, seed=0):
    key_x, key_y = jax.random.split(jax.random.PRNGKey(seed))
    x = sphere(key_x, n, d).astype(dtype)
    return x, teacher_targets(key_y, x).astype(dtype)


def _steps(model, x, y, params, fused, steps=3, **kwargs):
    solver = gradient_solver(model, x, y, learning_rate=0.05, fused=fused, **kwargs)
    state = solver.init(params)
    for _ in range(steps):
        params, state = solver.step(params, state)
    return params


@pytest.mark.parametrize("phi", ["relu", "leaky_relu", "abs"])
@pytest.mark.parametrize("s", [0.0, 0.4, 1.0, 1.7])
def test_fused_step_equals_autodiff_step(phi, s):
    x, y = _data(23, 7)
    model = two_layer(37, s=s, phi=phi)  # m = 37: two full SIMD blocks and a padded one
    params = model.init(jax.random.PRNGKey(3), 7)
    fused, plain = _steps(model, x, y, params, True), _steps(model, x, y, params, False)
    moved = np.max(np.abs(plain[0]["W"] - params[0]["W"]))
    assert moved > 1e-3  # the steps did something
    np.testing.assert_allclose(fused[0]["W"], plain[0]["W"], rtol=1e-12, atol=1e-13)
    np.testing.assert_array_equal(fused[1]["W"], params[1]["W"])


@pytest.mark.parametrize("d", [1, 16, 32])
@pytest.mark.parametrize("m", [1, 16, 100])
def test_fused_step_at_the_edges_of_its_blocks(d, m):
    x, y = _data(9, d)
    model = two_layer(m, s=1.3)
    params = model.init(jax.random.PRNGKey(4), d)
    np.testing.assert_allclose(_steps(model, x, y, params, True)[0]["W"],
                               _steps(model, x, y, params, False)[0]["W"], rtol=1e-11, atol=1e-13)


def test_fused_step_split_over_threads_equals_autodiff_step():
    """n d m >= 2^21: a lone run's rows are shared out over XLA's thread pool (where it has two or more
    threads) and the shares' gradients added; shares of unequal size and a padded SIMD block included."""
    x, y = _data(301, 9)
    model = two_layer(1003, s=1.4, phi="leaky_relu")
    params = model.init(jax.random.PRNGKey(7), 9)
    assert 301 * 9 * 1003 >= 2**21
    fused, plain = _steps(model, x, y, params, True, steps=2), _steps(model, x, y, params, False, steps=2)
    assert np.max(np.abs(plain[0]["W"] - params[0]["W"])) > 1e-3
    np.testing.assert_allclose(fused[0]["W"], plain[0]["W"], rtol=1e-11, atol=1e-13)


def test_fused_step_with_output_bias_and_mean_reduction():
    x, y = _data(15, 5)
    model = HomotopyMLP((40,), s=0.8, out_b_std=1.0, W_std=1.5)
    params = model.init(jax.random.PRNGKey(5), 5)
    assert abs(float(params[1]["b"][0])) > 0.1  # a bias that matters
    for reduction in ("sum", "mean"):
        np.testing.assert_allclose(_steps(model, x, y, params, True, reduction=reduction)[0]["W"],
                                   _steps(model, x, y, params, False, reduction=reduction)[0]["W"],
                                   rtol=1e-12, atol=1e-13)


def test_fused_step_in_float32_is_as_accurate_as_xla():
    x64, y64 = _data(100, 10)
    model = two_layer(1000, s=1.0)
    params64 = model.init(jax.random.PRNGKey(6), 10)
    exact = _steps(model, x64, y64, params64, False, steps=20)[0]["W"]
    to32 = lambda tree: jax.tree.map(lambda a: a.astype(jnp.float32), tree)  # noqa: E731
    x32, y32, params32 = to32(x64), to32(y64), to32(params64)
    fused = _steps(model, x32, y32, params32, True, steps=20)[0]["W"]
    plain = _steps(model, x32, y32, params32, False, steps=20)[0]["W"]
    assert fused.dtype == jnp.float32
    error_fused = float(jnp.max(jnp.abs(fused - exact)))
    error_plain = float(jnp.max(jnp.abs(plain - exact)))
    assert error_fused < 1e-5 and error_fused < 4 * error_plain + 1e-7, (error_fused, error_plain)


def test_vmapped_fused_runs_equal_separate_runs():
    """The kernel loops over batched operands itself; a (seeds x s) grid, batched once (run_batch) and
    twice (nested vmap, where operands broadcast along different axes), equals runs one by one."""
    x, y = _data(20, 5)
    model = two_layer(64)
    solver = gradient_solver(model, x, y, learning_rate=0.1, fused=True)
    s_values = jnp.asarray([0.3, 1.0, 1.6])
    params = [model.init(jax.random.PRNGKey(k), 5) for k in range(4)]
    single = [[driver.run(solver, p, solver.init(p) | {"s": s}, steps=30, progress=False).params[0]["W"]
               for s in s_values] for p in params]
    states = [solver.init(p) | {"s": s} for p in params for s in s_values]
    batch = driver.run_batch(solver, driver.stack([p for p in params for _ in s_values]), driver.stack(states),
                             steps=30, progress=False)
    np.testing.assert_allclose(batch.params[0]["W"].reshape(4, 3, 5, 64), np.asarray(single), rtol=1e-12)

    def thirty_steps(p, s):
        state = solver.init(p) | {"s": s}
        return jax.lax.fori_loop(0, 30, lambda _, ps: solver.step(*ps), (p, state))[0][0]["W"]

    grid = jax.jit(jax.vmap(jax.vmap(thirty_steps, in_axes=(None, 0)), in_axes=(0, None)))
    np.testing.assert_allclose(grid(driver.stack(params), s_values), np.asarray(single), rtol=1e-12)


def test_default_uses_the_fused_step_only_where_it_applies():
    x, y = _data(12, 3)
    model = two_layer(20)
    params = model.init(jax.random.PRNGKey(7), 3)
    solver = gradient_solver(model, x, y, learning_rate=0.1)
    fused_text = str(jax.make_jaxpr(solver.step)(params, solver.init(params)))
    assert "ffi_call" in fused_text
    adam = gradient_solver(model, x, y, learning_rate=0.1, optimizer="adam")
    assert "ffi_call" not in str(jax.make_jaxpr(adam.step)(params, adam.init(params)))


def test_default_leaves_problems_over_the_size_limit_to_xla(monkeypatch):
    from ntkhom.solvers import gradient

    x, y = _data(12, 3)
    model = two_layer(20)
    params = model.init(jax.random.PRNGKey(7), 3)
    monkeypatch.setattr(gradient, "FUSED_MAX_WORK", 12 * 3 * 20 - 1)
    solver = gradient_solver(model, x, y, learning_rate=0.1)
    assert "ffi_call" not in str(jax.make_jaxpr(solver.step)(params, solver.init(params)))
    forced = gradient_solver(model, x, y, learning_rate=0.1, fused=True)  # the limit binds the default only
    assert "ffi_call" in str(jax.make_jaxpr(forced.step)(params, forced.init(params)))


@pytest.mark.parametrize("case, message", [
    (dict(optimizer="adam"), "plain gradient descent"),
    (dict(loss="cross_entropy"), "squared loss"),
    (dict(model=mlp((8, 8))), "two-layer"),
    (dict(model=two_layer(8, trained="all")), "hidden layer only"),
    (dict(model=two_layer(8, bias=True)), "no hidden biases"),
    (dict(model=two_layer(8, phi="tanh")), "ReLU-family"),
    (dict(d=33), "d <= 32"),
])
def test_fused_true_says_why_it_does_not_apply(case, message):
    case = dict(case)
    d = case.pop("d", 3)
    model = case.pop("model", two_layer(8))
    x, y = _data(6, d)
    if case.get("loss") == "cross_entropy":
        y = jax.nn.one_hot(jnp.arange(6) % 2, 2)
        model = HomotopyMLP((8,), out_dim=2)
    with pytest.raises(ValueError, match=message):
        gradient_solver(model, x, y, learning_rate=0.1, fused=True, **case)


def test_fused_option_must_be_a_bool_or_none():
    x, y = _data(6, 3)
    with pytest.raises(ValueError, match="fused must be None, True or False"):
        gradient_solver(two_layer(8), x, y, learning_rate=0.1, fused="yes")


def test_native_kernel_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("NTKHOM_NATIVE", "0")
    lib, reason = native._load.__wrapped__()
    assert lib is None and "NTKHOM_NATIVE=0" in reason


def test_a_missing_compiler_is_reported(monkeypatch):
    monkeypatch.setenv("CXX", "/nonexistent/compiler")
    lib, reason = native._load.__wrapped__()
    assert lib is None and "compiler" in reason
