import jax
import numpy as np
import pytest

from ntkhom import data


def test_sphere_and_circle_have_unit_norm_and_are_reproducible():
    key = jax.random.PRNGKey(3)
    x = data.sphere(key, 20, 6)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(x, data.sphere(key, 20, 6))
    c = data.circle(key, 10)
    np.testing.assert_allclose(np.linalg.norm(c, axis=1), 1.0, rtol=1e-12)
    assert c.shape == (10, 3)


@pytest.mark.parametrize("name", data.DATASETS)
def test_every_dataset_loads_finite_and_split(name):
    ds = data.load(name, n=60, test_fraction=0.25)
    assert ds.x.shape[0] + ds.x_test.shape[0] == 60 or name in ("diabetes",) or ds.x.shape[0] > 0
    assert np.all(np.isfinite(ds.x)) and np.all(np.isfinite(ds.y))
    assert ds.y.shape[0] == ds.x.shape[0] and ds.y_test.shape[0] == ds.x_test.shape[0]
    np.testing.assert_allclose(np.linalg.norm(ds.x, axis=1), 1.0, rtol=1e-10)


def test_standardize_centres_features():
    x = data.normalize(np.random.default_rng(0).normal(3.0, 2.0, size=(50, 4)), "standardize")
    np.testing.assert_allclose(np.mean(x, axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(np.std(x, axis=0), 1.0, rtol=1e-12)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: data.load("mnist"), "unknown dataset 'mnist'"),
        (lambda: data.normalize(np.ones((2, 2)), "l3"), "unknown normalization"),
        (lambda: data.sphere(jax.random.PRNGKey(0), 0, 3), "n >= 1"),
        (lambda: data.sphere(jax.random.PRNGKey(0), 4, 2.5), "whole numbers n >= 1 and d >= 1"),
        (lambda: data.gaussian_clusters(jax.random.PRNGKey(0), 8, 3, spread=float("nan")), "spread must be"),
        (lambda: data.gaussian_clusters(jax.random.PRNGKey(0), 8, 3, spread=-0.1), "spread must be"),
        (lambda: data.gaussian_clusters(jax.random.PRNGKey(0), 8, 3, clusters=0), "clusters must be"),
        (lambda: data.teacher_targets(jax.random.PRNGKey(0), np.ones((4, 2)), width=0), "teacher width"),
        (lambda: data.teacher_targets(jax.random.PRNGKey(0), np.ones((4, 2)), s=float("inf")), "s must be finite"),
        (lambda: data.teacher_targets(jax.random.PRNGKey(0), np.full((4, 2), np.nan)), "non-finite"),
        (lambda: data.check_inputs(np.ones((2, 2, 2))), "2-D"),
        (lambda: data.check_inputs([[1.0, np.inf]]), "non-finite"),
        (lambda: data.check_targets(np.ones(3), 4), "3 rows but the inputs have 4"),
        (lambda: data.check_targets([np.nan, 1.0], 2), "non-finite"),
        (lambda: data.load("sphere", n=0), "n must be a positive integer"),  # not the default 64
        (lambda: data.load("iris", n=-5), "n must be a positive integer"),
        (lambda: data.load("sphere", n=2.5), "n must be a positive integer"),
        (lambda: data.load("sphere", n=1, test_fraction=0.5), "leaves no training samples"),
    ],
)
def test_bad_input_is_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_load_subsamples_from_its_key():
    a = data.load("digits", jax.random.PRNGKey(1), n=30, normalization="none")
    b = data.load("digits", jax.random.PRNGKey(2), n=30, normalization="none")
    again = data.load("digits", jax.random.PRNGKey(1), n=30, normalization="none")
    np.testing.assert_array_equal(a.x, again.x)
    assert not np.array_equal(a.x, b.x)
    full = data.load("digits", normalization="none").x
    rows = {tuple(row) for row in np.asarray(full)}
    assert all(tuple(row) in rows for row in np.asarray(b.x))  # a subsample, not new points


def test_dtype_is_explicit_whatever_the_global_flag():
    key = jax.random.PRNGKey(0)
    assert data.sphere(key, 3, 2, dtype=np.float32).dtype == np.float32
    assert data.circle(key, 3, dtype=np.float32).dtype == np.float32
    assert data.load("sphere", n=8, d=3, dtype=np.float32).x.dtype == np.float32
    with pytest.raises(ValueError, match="floating dtype"):
        data.sphere(key, 3, 2, dtype=np.int32)


def test_check_inputs_under_jit_checks_shape_only():
    checked = jax.jit(lambda x: data.check_inputs(x) * 2)(np.ones((2, 3)))
    np.testing.assert_array_equal(checked, 2 * np.ones((2, 3)))
    with pytest.raises(ValueError, match="2-D"):
        jax.jit(lambda x: data.check_inputs(x))(np.ones(3))


def test_dataset_is_a_pytree():
    ds = data.load("sphere", n=6, d=3)
    doubled = jax.jit(lambda d: jax.tree.map(lambda a: 2 * a, d))(ds)
    assert doubled.name == "sphere" and doubled.x_test is None
    np.testing.assert_array_equal(doubled.y, 2 * ds.y)


def test_asking_more_samples_than_a_bundled_dataset_has_is_said_and_all_are_used():
    with pytest.warns(UserWarning, match="iris dataset has 150 samples, fewer than n = 1000"):
        iris = data.load("iris", n=1000)
    assert iris.n == 150 and iris.d == 4


def test_counts_that_are_nan_inf_or_fractional_get_the_callers_message():
    assert [data.is_whole(v) for v in (3, 3.0, np.int64(3), 1)] == [True] * 4
    assert not any(data.is_whole(v) for v in (True, 2.5, float("nan"), float("inf"), "3", np.array([1, 2]), 0))
    assert data.is_whole(0, minimum=0) and not data.is_whole(-1, minimum=0)
    from ntkhom import models
    from ntkhom.solvers import driver, gradient_solver

    for bad in (float("nan"), float("inf"), 2.5):
        with pytest.raises(ValueError, match="whole numbers n >= 1"):
            data.sphere(jax.random.PRNGKey(0), bad, 3)
        with pytest.raises(ValueError, match="every width must be a positive integer"):
            models.two_layer(bad)
        with pytest.raises(ValueError, match="out_dim must be a positive integer"):
            models.two_layer(8, out_dim=bad)
    model = models.two_layer(8)
    x = data.sphere(jax.random.PRNGKey(0), 6, 3)
    solver = gradient_solver(model, learning_rate=0.1)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="steps must be an integer >= 0"):
            driver.run(solver, model.init(jax.random.PRNGKey(1), 3), (x, x[:, :1]), steps=bad)
