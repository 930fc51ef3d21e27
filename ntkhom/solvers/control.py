"""A conditional that stays cheap under ``jax.vmap``.

Under ``vmap`` a ``lax.cond`` whose predicate is batched becomes a ``select``: both branches run for every
member of the batch at every call. For a rare, expensive branch (HRTA's output refit at a stage switch, a
periodic rescaling) that makes every step pay for it. :func:`rare_cond` has its own batching rule: the
expensive branch runs (for the whole batch) only when the predicate holds for at least one member, and the
result is selected per member.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.custom_batching import custom_vmap

__all__ = ["rare_cond"]


def _broadcast(tree, batched, size):
    return jax.tree.map(lambda a, b: a if b else jnp.broadcast_to(a, (size,) + jnp.shape(a)), tree, batched)


def rare_cond(pred, true_fn, false_fn, operand):
    """``lax.cond(pred, true_fn, false_fn, operand)``, with ``true_fn`` skipped under vmap when no member's
    ``pred`` holds.

    ``true_fn`` and ``false_fn`` must not close over traced values (JAX's custom batching cannot batch
    them): pass everything they read through ``operand``.

    Differentiable in ``operand`` (forward and reverse mode) when not batched, and under ``vmap(grad(...))``;
    ``grad(vmap(...))`` is not supported by JAX's custom batching (write it as ``vmap(grad(...))``).
    """

    @custom_vmap
    def batched_cond(pred, operand):
        return jax.lax.cond(pred, true_fn, false_fn, operand)

    @batched_cond.def_vmap
    def rule(axis_size, in_batched, pred, operand):
        pred_batched, operand_batched = in_batched
        operand = _broadcast(operand, operand_batched, axis_size)
        pred = pred if pred_batched else jnp.broadcast_to(pred, (axis_size,))
        skipped = jax.vmap(false_fn)(operand)
        taken = jax.lax.cond(jnp.any(pred), jax.vmap(true_fn), jax.vmap(false_fn), operand)
        out = jax.tree.map(lambda a, b: jnp.where(pred.reshape((-1,) + (1,) * (a.ndim - 1)), a, b), taken, skipped)
        return out, jax.tree.map(lambda _: True, out)

    @jax.custom_jvp
    def differentiable(pred, operand):
        return batched_cond(pred, operand)

    @differentiable.defjvp
    def jvp(primals, tangents):
        pred, operand = primals
        return jax.jvp(lambda o: jax.lax.cond(pred, true_fn, false_fn, o), (operand,), (tangents[1],))

    return differentiable(pred, operand)
