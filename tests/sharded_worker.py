"""Sharded computations of the sharding tests, run in a subprocess (several CPU devices, or several processes).

Usage: ``python sharded_worker.py [COORDINATOR NUM_PROCESSES PROCESS_ID]``. Prints one JSON line of results,
which the tests compare with the same quantities computed on one device in the test process.
"""

import json
import sys

import numpy as np

from ntkhom import distributed

N, D, K_COLUMNS, RUNS, STEPS = 37, 5, 3, 5, 30


def problem():
    """Points off the unit sphere (norms 0.5 to 2), a block of vectors, targets; the same in every process."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(N, D))
    x *= rng.uniform(0.5, 2.0, size=(N, 1)) / np.linalg.norm(x, axis=1, keepdims=True)
    return x, rng.normal(size=(N, K_COLUMNS)), rng.normal(size=(N, 1))


def arccos_kernel(x1, x2):
    """An arc-cosine kernel plus a constant (positive definite), written with jax.numpy for kernel_rows."""
    import jax.numpy as jnp

    gram = x1 @ x2.T
    norms = jnp.linalg.norm(x1, axis=1)[:, None] * jnp.linalg.norm(x2, axis=1)[None, :]
    rho = jnp.clip(gram / norms, -1.0, 1.0)
    return gram * (0.25 + jnp.arcsin(rho) / (2 * jnp.pi)) + 0.5


def grid_problem():
    """A two-layer network, its GD solver, RUNS stacked runs (one seed and one s per run) and the data."""
    import jax
    import jax.numpy as jnp

    from ntkhom import models
    from ntkhom.solvers import driver, gradient_solver

    x, _, y = problem()
    model = models.two_layer(16, 0.5, bias=True)
    solver = gradient_solver(model, learning_rate=0.05)
    params = driver.stack([model.init(jax.random.PRNGKey(seed), D) for seed in range(RUNS)])
    state = jax.vmap(solver.init, in_axes=(0, None))(params, (x, y))
    return solver, params, state._replace(s=jnp.linspace(0.0, 1.5, RUNS)), (x, y)


def train_problem():
    """Gradient descent from one initialisation on the first 36 rows (a batch is not padded: 36 = 9 x 4)."""
    import jax

    from ntkhom import models
    from ntkhom.solvers import gradient_solver

    x, _, y = problem()
    model = models.two_layer(16, 0.5, bias=True)
    return gradient_solver(model, learning_rate=0.05), model.init(jax.random.PRNGKey(11), D), (x[:36], y[:36])


def kernel_model():
    import jax

    from ntkhom import models

    model = models.two_layer(64, 0.7, bias=True, trained="all")
    return model, model.init(jax.random.PRNGKey(3), D)


def reference() -> dict:
    """The same quantities on the calling process's single device, the product and lambda_min in NumPy."""
    import jax

    from ntkhom import kernels, operators
    from ntkhom.solvers import driver

    x, V, _ = problem()
    gram = x @ x.T
    norms = np.linalg.norm(x, axis=1)
    rho = np.clip(gram / np.outer(norms, norms), -1.0, 1.0)
    dense = gram * (0.25 + np.arcsin(rho) / (2 * np.pi)) + 0.5
    model, params = kernel_model()
    kernel = np.asarray(kernels.empirical_ntk_two_layer(model, params, x))
    hidden_model, hidden_params = operator_model()
    hidden = np.asarray(kernels.empirical_ntk_two_layer(hidden_model, hidden_params, x, s=0.3))
    solver, grid_params, grid_state, data = grid_problem()
    grid = driver.run_batch(solver, grid_params, data, grid_state, steps=STEPS, record_every=10)
    train_solver, train_params, train_data = train_problem()
    train = driver.run(train_solver, train_params, train_data, steps=STEPS, record_every=10)
    assert len(jax.devices()) == 1
    return {
        "product": dense @ V,
        "product_two_layer": hidden @ V,
        "product_path": kernel @ V,
        "product_infinite": np.asarray(operators.infinite_ntk_operator(hidden_model, x, block_rows=8).matvec(V)),
        "kernel_infinite": np.asarray(kernels.infinite_ntk(hidden_model, x)),
        "lambda_min_operator": np.linalg.eigvalsh(hidden)[0],
        "kernel": kernel,
        "lambda_min_kernel": np.linalg.eigvalsh(kernel)[0],
        "grid_loss": np.nan_to_num(grid.loss, nan=-1.0),
        "grid_W": np.asarray(grid.params[0]["W"]),
        "grid_stop_reasons": grid.stop_reasons,
        "grid_messages": grid.messages,
        "train_loss": train.loss,
        "train_W": np.asarray(train.params[0]["W"]),
    }


def check_against_reference(result: dict, expected: dict) -> None:
    """Sharded results equal the single-device ones (float64: products to 1e-12, spectra to 1e-10), and the
    certificate of the iterative lambda_min brackets the dense value."""
    if "kernel_infinite" in result:
        # Off the diagonal the rows equal the whole kernel's. On it, neural-tangents takes arccos of a cosine
        # that rounds near 1, where a last-bit change moves the result by sqrt(eps): a computation of the
        # whole kernel and one of a row block differ there at 1e-8, neither more exact than the other.
        got, want = np.asarray(result["kernel_infinite"]), expected["kernel_infinite"]
        off = ~np.eye(N, dtype=bool)
        np.testing.assert_allclose(got[off], want[off], rtol=1e-12, atol=1e-12 * np.abs(want).max())
        np.testing.assert_allclose(np.diag(got), np.diag(want), rtol=1e-7)
    for name in ("product", "product_two_layer", "product_path", "product_infinite"):
        if name in result:
            scale = np.abs(expected[name]).max()
            np.testing.assert_allclose(result[name], expected[name], rtol=1e-12, atol=1e-12 * scale)
    assert abs(result["lambda_min_operator"] - expected["lambda_min_operator"]) <= (
        result["lambda_min_bound"] + 1e-12 * expected["lambda_min_operator"])
    np.testing.assert_allclose(result["lambda_min_operator"], expected["lambda_min_operator"], rtol=1e-10)
    np.testing.assert_allclose(result["kernel"], expected["kernel"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(result["lambda_min_kernel"], expected["lambda_min_kernel"], rtol=1e-10)
    np.testing.assert_allclose(result["lambda_min_kernel_operator"], expected["lambda_min_kernel"], rtol=1e-10)
    np.testing.assert_allclose(result["grid_loss"], expected["grid_loss"], rtol=1e-12)
    np.testing.assert_allclose(result["grid_W"], expected["grid_W"], rtol=1e-12, atol=1e-14)
    assert result["grid_stop_reasons"] == expected["grid_stop_reasons"]
    if "train_loss" in result:  # the training step with its batch split by rows
        np.testing.assert_allclose(result["train_loss"], expected["train_loss"], rtol=1e-12)
        np.testing.assert_allclose(result["train_W"], expected["train_W"], rtol=1e-12, atol=1e-14)
    assert result["grid_messages"] == expected["grid_messages"]


def operator_model():
    """A two-layer ReLU network, hidden layer trained: its operator keeps bit-packed sign patterns."""
    import jax

    from ntkhom import models

    model = models.two_layer(96, 1.0)
    return model, model.init(jax.random.PRNGKey(5), D)


def main(argv):
    """``argv``: [COORDINATOR NUM_PROCESSES PROCESS_ID] joins other processes and computes the essential
    quantities (lambda_min, the dense kernel, the grid); without it, every product is computed as well."""
    several = len(argv) == 3
    if several:
        distributed.initialize(distributed.Settings(argv[0], int(argv[1]), int(argv[2])), timeout=120)
    import functools

    import jax

    jax.config.update("jax_enable_x64", True)
    from ntkhom import eigensolvers, kernels, operators, sharding, spectrum

    if several and int(argv[2]) == 1:
        # This process weighs its certificate checks 100 times heavier, as a slower or busier host's clock
        # would: the Lanczos check schedule comes from clocks, and the processes must still take the same steps.
        eigensolvers.CHECK_SHARE /= 100
    mesh = sharding.device_mesh()
    x, V, _ = problem()
    results = {"devices": len(jax.devices()), "processes": jax.process_count()}

    hidden_model, hidden_params = operator_model()
    operator = sharding.shard_operator(operators.two_layer_ntk_operator(hidden_model, hidden_params, x, s=0.3,
                                                                        block_width=32), mesh)
    assert operator.mode == "row_sum" and operator.op.patterns is not None
    certified = eigensolvers.lambda_min(operator, tol=1e-12)
    results.update(lambda_min_operator=certified.value, lambda_min_bound=certified.bound)

    model, params = kernel_model()
    rows = sharding.sharded_kernel(functools.partial(kernels.empirical_ntk_two_layer, model, params), x, mesh=mesh)
    kernel = rows.gather()
    results.update(kernel_shards=len(rows.data.sharding.device_set), kernel=kernel.tolist(),
                   lambda_min_kernel=spectrum.lambda_min(kernel).value,
                   lambda_min_kernel_operator=eigensolvers.lambda_min(rows.operator(mesh), tol=1e-12).value)

    solver, grid_params, grid_state, data = grid_problem()
    grid = sharding.run_batch(solver, grid_params, data, grid_state, mesh=mesh, steps=STEPS, record_every=10)
    results.update(grid_loss=np.nan_to_num(grid.loss, nan=-1.0).tolist(), grid_W=grid.params[0]["W"].tolist(),
                   grid_stop_reasons=grid.stop_reasons, grid_messages=grid.messages)

    if not several:
        path = operators.kernel_path_operator(operators.two_layer_ntk_operator(model, params, x), s=0.7)
        infinite = operators.infinite_ntk_operator(hidden_model, x, block_rows=8)
        for name, op in (("product", sharding.kernel_rows(arccos_kernel, x, tile=8)),
                         ("product_two_layer", operator), ("product_path", path), ("product_infinite", infinite)):
            results[name] = np.asarray(sharding.shard_operator(op, mesh).matvec(V)).tolist()
        infinite_rows = sharding.sharded_kernel(functools.partial(kernels.infinite_ntk, hidden_model), x, mesh=mesh)
        results["kernel_infinite"] = infinite_rows.gather().tolist()
        train_solver, train_params, train_data = train_problem()
        batch = sharding.shard_batch(train_data, mesh)
        train = sharding.run(train_solver, train_params, train_data, mesh=mesh, steps=STEPS, record_every=10)
        results.update(train_shards=len(batch[0].sharding.device_set), train_loss=train.loss.tolist(),
                       train_W=train.params[0]["W"].tolist())
    print(json.dumps(results), flush=True)
    if several:
        jax.distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1:])
