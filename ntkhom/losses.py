"""Losses, written once. The NTK theory's convention is the summed squared loss L = 1/2 sum_i (f_i - y_i)^2:
with it, gradient descent with step eta moves the residual by -eta K (f - y), K the empirical NTK Gram
matrix, so the step-size limit is 2 / lambda_max(K) and the rate is set by lambda_min(K)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["squared_loss", "cross_entropy", "accuracy", "LOSSES", "REDUCTIONS"]

REDUCTIONS = ("sum", "mean")


def _reduce(per_sample, reduction: str):
    if reduction == "sum":
        return jnp.sum(per_sample)
    if reduction == "mean":
        return jnp.mean(per_sample)
    raise ValueError(f"unknown reduction {reduction!r}; choose one of {REDUCTIONS}")


def squared_loss(pred, y, reduction: str = "sum"):
    """1/2 sum_i ||f(x_i) - y_i||^2 (``"sum"``, the theory's convention) or its mean over samples."""
    return _reduce(0.5 * jnp.sum((pred - y) ** 2, axis=-1), reduction)


def cross_entropy(logits, y_onehot, reduction: str = "mean"):
    """-sum_k y_k log softmax(logits)_k per sample; mean over samples by default (as PyTorch's)."""
    return _reduce(-jnp.sum(y_onehot * jax.nn.log_softmax(logits, axis=-1), axis=-1), reduction)


def accuracy(logits, y_onehot):
    return jnp.mean(jnp.argmax(logits, axis=-1) == jnp.argmax(y_onehot, axis=-1))


LOSSES = {"squared": squared_loss, "cross_entropy": cross_entropy}
