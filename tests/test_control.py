"""rare_cond: the same values as lax.cond, per member under vmap, and differentiable."""

import jax
import jax.numpy as jnp
import numpy as np

from ntkhom.solvers.control import rare_cond


def _expensive(v):
    return jnp.sin(v) * 3.0


def _cheap(v):
    return v + 1.0


def _step(t, v):
    return rare_cond(t % 3 == 0, _expensive, _cheap, v)


def test_vmapped_rare_cond_equals_cond_member_by_member():
    ts = jnp.array([0, 1, 2, 3, 4])
    vs = jnp.linspace(-1.0, 1.0, 10).reshape(5, 2)
    got = jax.jit(jax.vmap(_step))(ts, vs)
    want = np.stack([np.asarray(jax.lax.cond(t % 3 == 0, _expensive, _cheap, v)) for t, v in zip(ts, vs)])
    np.testing.assert_allclose(got, want, rtol=1e-15)
    # no member true: the cheap branch for all; shared (unbatched) operand broadcast
    np.testing.assert_allclose(jax.vmap(lambda t: _step(t, vs[0]))(jnp.array([1, 2])), np.stack([vs[0] + 1] * 2))


def test_rare_cond_is_differentiable_alone_and_under_vmap_of_grad():
    v = jnp.array([0.3, -0.7])
    grad_true = jax.grad(lambda v: jnp.sum(_step(0, v)))(v)
    np.testing.assert_allclose(grad_true, 3.0 * np.cos(np.asarray(v)), rtol=1e-14)
    grad_false = jax.grad(lambda v: jnp.sum(_step(1, v)))(v)
    np.testing.assert_allclose(grad_false, np.ones(2))
    batched = jax.vmap(jax.grad(lambda t, v: jnp.sum(_step(t, v)), argnums=1))(jnp.array([0, 1]), jnp.stack([v, v]))
    np.testing.assert_allclose(batched, np.stack([3.0 * np.cos(np.asarray(v)), np.ones(2)]), rtol=1e-14)
