"""Losses, written once. The NTK theory's convention is the summed squared loss L = 1/2 sum_i (f_i - y_i)^2:
with it, gradient descent with step eta moves the residual by -eta K (f - y), K the empirical NTK Gram
matrix, so the step-size limit is 2 / lambda_max(K) and the rate is set by lambda_min(K)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["squared_loss", "cross_entropy", "accuracy", "check_class_targets", "LOSSES", "REDUCTIONS"]

#: Tolerance on a target row's sum for it to count as a probability vector (float32 one-hot rows sum exactly).
_ROW_SUM_TOLERANCE = 1e-5

REDUCTIONS = ("sum", "mean")


def _reduce(per_sample, reduction: str):
    if reduction == "sum":
        return jnp.sum(per_sample)
    if reduction == "mean":
        return jnp.mean(per_sample)
    raise ValueError(f"unknown reduction {reduction!r}; choose one of {REDUCTIONS}")


def _check_shapes(pred, y, what: str) -> None:
    # (n, 1) against (n, k) would broadcast into a loss of the wrong problem without a word; shapes are static,
    # so this holds under jit and vmap too
    if jnp.shape(pred) != jnp.shape(y):
        raise ValueError(f"{what}: the network's output has shape {jnp.shape(pred)} but the targets have shape "
                         f"{jnp.shape(y)}; they must be equal (one output column per target column)")


def squared_loss(pred, y, reduction: str = "sum"):
    """1/2 sum_i ||f(x_i) - y_i||^2 (``"sum"``, the theory's convention) or its mean over samples; ``pred``
    and ``y`` of equal shape (n, k)."""
    _check_shapes(pred, y, "squared loss")
    return _reduce(0.5 * jnp.sum((pred - y) ** 2, axis=-1), reduction)


def cross_entropy(logits, y_onehot, reduction: str = "mean"):
    """-sum_k y_k log softmax(logits)_k per sample; mean over samples by default (as PyTorch's); ``logits``
    and ``y_onehot`` of equal shape (n, classes)."""
    _check_shapes(logits, y_onehot, "cross-entropy")
    return _reduce(-jnp.sum(y_onehot * jax.nn.log_softmax(logits, axis=-1), axis=-1), reduction)


def check_class_targets(y, name: str = "y") -> None:
    """Refuse cross-entropy targets that are not rows of class probabilities: (n, classes >= 2), entries >= 0,
    each row summing to 1 (one-hot labels, or soft labels). Regression targets would train on nonsense."""
    y = np.asarray(y)
    if y.ndim != 2 or y.shape[1] < 2:
        raise ValueError(f"cross-entropy {name} must be (n, classes) with at least 2 classes (one-hot or soft "
                         f"labels), got shape {y.shape}")
    sums = y.sum(axis=1)
    bad = np.flatnonzero((y < 0).any(axis=1) | (np.abs(sums - 1.0) > _ROW_SUM_TOLERANCE))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"cross-entropy {name} must hold class probabilities (entries >= 0, rows summing to 1); "
                         f"row {i} sums to {sums[i]:.6g} with minimum {y[i].min():.6g} ({bad.size} such rows)")


def accuracy(logits, y_onehot):
    return jnp.mean(jnp.argmax(logits, axis=-1) == jnp.argmax(y_onehot, axis=-1))


LOSSES = {"squared": squared_loss, "cross_entropy": cross_entropy}
