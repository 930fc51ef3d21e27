"""Sharding by rows and by runs: results on 4 CPU devices (n = 37 and B = 5, neither divisible by 4) equal
those on one device; padding, placement and argument errors."""

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sharded_worker

from ntkhom import sharding

WORKER = Path(sharded_worker.__file__)


def test_four_devices_equal_one_device():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, str(WORKER)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["devices"] == 4 and result["processes"] == 1 and "kernel_infinite" in result
    assert result["kernel_shards"] == 4  # the kernel's rows really live on four devices
    assert result["train_shards"] == 4 and "train_loss" in result  # and so do the training batch's
    sharded_worker.check_against_reference(result, sharded_worker.reference())


def test_pad_rows_repeats_the_last_row_and_padded_size_rounds_up():
    mesh = sharding.device_mesh()
    assert sharding.padded_size(7, mesh) == 7  # one device here
    x = np.arange(6.0).reshape(3, 2)
    padded = sharding.pad_rows(x, 5)
    np.testing.assert_array_equal(padded, np.array([[0, 1], [2, 3], [4, 5], [4, 5], [4, 5.0]]))
    assert isinstance(sharding.pad_rows(jnp.asarray(x), 4), jax.Array)
    with pytest.raises(ValueError, match="size"):
        sharding.pad_rows(x, 2)


def test_one_device_mesh_operator_and_kernel_rows_match_numpy():
    # kernel_rows' tiles (5 rows) do not divide n = 13: the padded tile rows must be dropped.
    rng = np.random.default_rng(1)
    x, V = rng.normal(size=(13, 3)), rng.normal(size=(13, 2))
    operator = sharding.shard_operator(sharding.kernel_rows(_gaussian, x, tile=5), sharding.device_mesh())
    dense = np.exp(-0.5 * np.sum((x[:, None] - x[None]) ** 2, axis=-1))
    np.testing.assert_allclose(np.asarray(operator.matvec(V)), dense @ V, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(operator.matvec(V[:, 0])), dense @ V[:, 0], rtol=1e-12)
    assert operator.shape == (13, 13)
    with pytest.raises(ValueError, match="V must have shape"):
        operator.matvec(V[:5])


def _gaussian(x1, x2):
    return jnp.exp(-0.5 * jnp.sum((x1[:, None] - x2[None]) ** 2, axis=-1))


def test_bad_arguments_are_named():
    mesh = sharding.device_mesh()
    with pytest.raises(TypeError, match="kernel operator"):
        sharding.shard_operator(object(), mesh)
    with pytest.raises(ValueError, match="tile"):
        sharding.kernel_rows(_gaussian, np.ones((3, 2)), tile=0)
    with pytest.raises(ValueError, match="leading run count"):
        sharding.shard_runs({"a": np.ones(3), "b": np.ones(4)}, mesh)
    with pytest.raises(TypeError, match="has none"):
        sharding.shard_operator(types.SimpleNamespace(n=3, dtype=np.float64), mesh)
    with pytest.raises(ValueError, match="1-D"):
        sharding.shard_rows(np.ones(3), object())
    with pytest.raises(ValueError, match="kernel_fn must return"):
        sharding.sharded_kernel(lambda a, b: a, np.ones((3, 2)), mesh=mesh)
    holed = np.ones((3, 2))
    holed[1, 0] = np.inf
    with pytest.raises(ValueError, match="x2 contains inf"):
        sharding.sharded_kernel(_gaussian, np.ones((3, 2)), holed, mesh=mesh)
    with pytest.raises(ValueError, match="leading row axis"):
        sharding.sharded_kernel(_gaussian, np.ones((0, 2)), mesh=mesh)


def test_a_training_batch_is_not_padded():
    mesh = sharding.device_mesh()
    placed = sharding.shard_batch((np.ones((5, 2)), np.zeros((5, 1))), mesh)  # one device divides anything
    assert placed[0].shape == (5, 2)
    fake = types.SimpleNamespace(devices=np.empty(4, object), axis_names=(sharding.AXIS,))
    with pytest.raises(ValueError, match="37 rows does not split evenly over 4 devices.*36 or 40 rows"):
        sharding.shard_batch((np.ones((37, 2)), np.ones((37, 1))), fake)
    with pytest.raises(ValueError, match="same number of rows"):
        sharding.shard_batch((np.ones((6, 2)), np.ones((5, 1))), mesh)


def test_shard_runs_places_every_leaf_and_keeps_values():
    tree = {"w": np.arange(10.0).reshape(5, 2), "k": np.arange(5)}
    placed, runs = sharding.shard_runs(tree, sharding.device_mesh())
    assert runs == 5
    np.testing.assert_array_equal(sharding.host_array(placed["w"]), tree["w"])
    assert placed["k"].sharding.spec[0] == sharding.AXIS
