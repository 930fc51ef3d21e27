"""Bad arguments get a one-line ValueError or TypeError that names the argument and says what was wrong;
traced values stay accepted. Sizes n <= 50."""

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntkhom import kernels, krylov, operators, pathcond, theory
from ntkhom.activations import check_s
from ntkhom.models import HomotopyMLP
from ntkhom.solvers.analytic_am import am_model, analytic_am
from ntkhom.solvers.gradient import check_learning_rate

NAN = float("nan")


@pytest.fixture(scope="module")
def two_layer():
    model = HomotopyMLP(widths=(16,), s=0.5)
    params = model.init(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(jax.random.PRNGKey(1), (6, 3))
    return model, params, x


@pytest.fixture(scope="module")
def deep():
    model = HomotopyMLP(widths=(5, 4), s=1.0)
    return model, model.init(jax.random.PRNGKey(2), 3)


def _one_line(error) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


# -- 1. counts given as NaN (or a fraction) -------------------------------------------------------------------
@pytest.mark.parametrize("value", [NAN, 2.5, 0, "4"])
@pytest.mark.parametrize("name", ["block_width", "block_rows"])
def test_kernel_block_sizes(two_layer, name, value):
    model, params, x = two_layer
    with pytest.raises(ValueError, match=rf"{name} must be positive \(an integer >= 1\), got ") as error:
        kernels.empirical_ntk_two_layer(model, params, x, **{name: value})
    _one_line(error)
    with pytest.raises(ValueError, match=rf"{name} must be positive \(an integer >= 1\)"):
        kernels.empirical_kernel_path(model, params, x, **{name: value})


def test_kernel_block_sizes_still_work(two_layer):
    model, params, x = two_layer
    whole = kernels.empirical_ntk_two_layer(model, params, x)
    np.testing.assert_allclose(kernels.empirical_ntk_two_layer(model, params, x, block_width=4.0, block_rows=2),
                               whole, rtol=1e-12)


@pytest.mark.parametrize("name", ["block_width", "block_rows"])
def test_operator_block_sizes(two_layer, name):
    model, params, x = two_layer
    with pytest.raises(ValueError, match=rf"{name} must be positive \(an integer >= 1\), got nan"):
        operators.two_layer_ntk_operator(model, params, x, **{name: NAN})


def test_operator_block_rows_of_other_operators(two_layer):
    model, params, x = two_layer
    with pytest.raises(ValueError, match=r"block_rows must be positive \(an integer >= 1\), got nan"):
        operators.infinite_ntk_operator(model, x, block_rows=NAN)
    with pytest.raises(ValueError, match=r"block_rows must be positive \(an integer >= 1\), got nan"):
        operators.jacobian_ntk_operator(model.apply, params, x, block_rows=NAN)
    with pytest.raises(ValueError, match=r"block_rows must be positive \(an integer >= 1\), got 0"):
        operators.jacobian_ntk_operator(model.apply, params, x, block_rows=0)


@pytest.mark.parametrize(("name", "value", "message"), [
    ("cg_maxiter", NAN, "cg_maxiter must be an integer >= 1, got nan"),
    ("cg_maxiter", 0, "cg_maxiter must be an integer >= 1, got 0"),
    ("max_halvings", -1, "max_halvings must be an integer >= 0, got -1"),
    ("cg_tol", 0.0, "cg_tol must be a finite number > 0"),
    ("cg_tol", "a", "cg_tol must be a real number, got 'a'"),
    ("ridge", "a", "ridge must be a real number, got 'a'"),
])
def test_analytic_am_settings(name, value, message):
    error_type = TypeError if value == "a" else ValueError
    with pytest.raises(error_type, match=message):
        analytic_am(am_model(4), **{name: value})


# -- 2. strings where numbers belong --------------------------------------------------------------------------
def test_s_string():
    with pytest.raises(TypeError, match="s must be a real number, got 'a'") as error:
        check_s("a")
    _one_line(error)
    with pytest.raises(TypeError, match="s must be a real number, got '0.5'"):
        check_s("0.5")  # float() would parse it; a string is still a mistake


def test_s_traced_is_accepted():
    assert jax.jit(lambda s: check_s(s) * 2)(0.5) == 1.0


def test_learning_rate_strings():
    with pytest.raises(ValueError, match="learning_rate must be a real number, got 'a'"):
        check_learning_rate("a")
    with pytest.raises(ValueError, match="learning_rate must be a real number, got None"):
        check_learning_rate(None)
    K, r0 = np.eye(3), np.ones(3)
    with pytest.raises(ValueError, match="learning_rate must be a real number, got 'a'"):
        theory.linearized_loss(K, r0, "a", [0, 1])
    with pytest.raises(ValueError, match="learning_rate must be a real number, got 'a'"):
        krylov.linearized_loss(K, r0, "a", [0, 1])
    with pytest.raises(TypeError, match="learning_rate must be concrete"):
        jax.jit(lambda eta: krylov.linearized_loss(K, r0, eta, [0, 1]).loss)(0.1)


def test_learning_rate_traced_is_accepted():
    assert jax.jit(lambda eta: check_learning_rate(eta) * 2)(0.25) == 0.5
    K, r0 = np.diag([1.0, 2.0]), np.ones(2)
    traced = jax.jit(lambda eta: theory.linearized_loss(K, r0, eta, jnp.arange(3.0)))(0.1)
    np.testing.assert_allclose(traced, theory.linearized_loss(K, r0, 0.1, [0, 1, 2]), rtol=1e-12)


# -- 3. other wrong types -------------------------------------------------------------------------------------
def test_path_norm_order(deep):
    _, params = deep
    with pytest.raises(TypeError, match="p must be a real number, got 'a'"):
        pathcond.path_norm(params, p="a")
    with pytest.raises(ValueError, match="p must be a positive finite number"):
        pathcond.path_norm(params, p=NAN)


@pytest.mark.parametrize(("spread", "error_type", "message"), [
    ("a", TypeError, "spread must be a real number, got 'a'"),
    (NAN, ValueError, "spread must be a finite number >= 0, got nan"),
    (-1.0, ValueError, "spread must be a finite number >= 0, got -1.0"),
    (math.inf, ValueError, "spread must be a finite number >= 0, got inf"),
])
def test_random_scaling_spread(deep, spread, error_type, message):
    _, params = deep
    with pytest.raises(error_type, match=message):
        pathcond.random_scaling(jax.random.PRNGKey(0), params, spread)


def test_random_scaling_traced_spread(deep):
    _, params = deep
    z = jax.jit(lambda spread: pathcond.random_scaling(jax.random.PRNGKey(0), params, spread))(0.0)
    assert all(np.all(np.asarray(zl) == 0) for zl in z)


# -- 4. theory --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("loss0", [NAN, math.inf, -1.0, "a"])
def test_bounds_refuse_bad_loss0(loss0):
    with pytest.raises(ValueError, match="loss0 must be a"):
        theory.gd_bound(0.1, 0.1, [0, 1], loss0)
    with pytest.raises(ValueError, match="loss0 must be a"):
        theory.flow_bound(0.1, [0, 1], loss0)
    with pytest.raises(ValueError, match="loss0 must be a"):
        theory.stagewise_bound([(0.1, 0.1, 3)], loss0)


def test_bounds_accept_zero_and_traced_loss0():
    np.testing.assert_array_equal(theory.gd_bound(0.1, 0.1, [0, 1], 0.0), [0.0, 0.0])
    traced = jax.jit(lambda loss0: theory.flow_bound(0.5, jnp.arange(2.0), loss0))(2.0)
    np.testing.assert_allclose(traced, theory.flow_bound(0.5, [0, 1], 2.0), rtol=1e-12)


def test_predicted_rate_zero_residual():
    K = np.diag([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="residual r0 is zero.*no rate is defined"):
        theory.predicted_rate(K, 0.1, np.zeros(3))
    traced = jax.jit(lambda r: theory.predicted_rate(K, 0.1, r))(jnp.zeros(3))
    assert np.isnan(traced)
    # a nonzero residual is unchanged: only the direction it has weight in counts
    assert theory.predicted_rate(K, 0.1, [1.0, 0.0, 0.0]) == pytest.approx(0.9**2)


def test_relative_deviation_refuses_nan_and_empty():
    with pytest.raises(ValueError, match="measured contains NaN"):
        theory.relative_deviation([1.0, NAN], [1.0, 1.0])
    with pytest.raises(ValueError, match="predicted contains NaN"):
        theory.relative_deviation([1.0, 0.5], [1.0, NAN], scale="log")
    with pytest.raises(ValueError, match="non-empty curves"):
        theory.relative_deviation([], [])
    with pytest.raises(ValueError, match="positive and finite"):
        theory.relative_deviation([1.0, 0.5], [1.0, 0.5], loss0=math.inf)
    assert theory.relative_deviation([1.0, 0.5], [1.0, 0.25]) == pytest.approx(0.25)


def test_fit_linear_rate_constant_steps():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RankWarning, an error
        with pytest.raises(ValueError, match="steps must take at least two distinct values"):
            theory.fit_linear_rate([1, 1, 1], [1.0, 0.5, 0.2])


# -- 5. pathcond ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [NAN, math.inf])
def test_rescale_refuses_non_finite_z(deep, bad):
    _, params = deep
    z = (jnp.zeros(5).at[2].set(bad), jnp.zeros(4))
    with pytest.raises(ValueError, match=r"z\[0\] contains NaN or inf \(at neurons \[2\]\)"):
        pathcond.rescale(params, z)


def test_rescale_traced_z_is_accepted(deep):
    _, params = deep
    out = jax.jit(lambda z: pathcond.rescale(params, z))((jnp.zeros(5), jnp.zeros(4)))
    np.testing.assert_array_equal(out[0]["W"], params[0]["W"])


def test_alignment_of_constant_y_is_nan_without_warning():
    K = np.eye(4) + 0.1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        view = pathcond.kernel_conditioning(K, np.ones((4, 1)))
    assert math.isnan(view["alignment"])
    assert "constant" in pathcond.kernel_conditioning.__doc__
    with pytest.raises(ValueError, match="y contains NaN or inf"):
        pathcond.kernel_conditioning(K, np.array([[1.0], [NAN], [0.0], [2.0]]))
    assert 0 < pathcond.kernel_conditioning(K, np.array([[1.0], [-1.0], [1.0], [-1.0]]))["alignment"] <= 1


# -- 6. KernelPath.at ---------------------------------------------------------------------------------------------
def test_kernel_path_at_refuses_non_finite_s(two_layer):
    model, params, x = two_layer
    path = kernels.empirical_kernel_path(model, params, x)
    with pytest.raises(ValueError, match="s must be finite, got nan"):
        path.at(NAN)
    with pytest.raises(ValueError, match="s must be finite"):
        path.at(np.array([0.5, NAN, 1.0]))
    with pytest.raises(ValueError, match="s must be finite"):
        path.at(np.array([0.5, -math.inf]))
    with pytest.raises(TypeError, match="s must be a real number, got 'a'"):
        path.at("a")
    np.testing.assert_allclose(path.at(np.array([0.3, 0.9]))[1], path.at(0.9), rtol=1e-13)
    traced = jax.jit(path.at)(0.7)
    np.testing.assert_allclose(traced, path.at(0.7), rtol=1e-13)


@pytest.mark.parametrize("name", ["first_W_std", "W_std", "b_std", "out_b_std"])
def test_model_scales_name_the_argument(name):
    with pytest.raises(ValueError, match=f"^{name} must be a real number, got 'a'$"):
        HomotopyMLP(widths=(4,), **{name: "a"})
    with pytest.raises(ValueError, match=f"^{name} must be a positive finite number or None, got nan$"):
        HomotopyMLP(widths=(4,), **{name: NAN})
    assert getattr(HomotopyMLP(widths=(4,), **{name: 2}), name) == 2
