"""Loss curves of linearized training from kernel products alone (no eigendecomposition).

With residual r_0 (n, k) and kernel K, linearized gradient descent with step eta and gradient flow give

    L_t = 1/2 ||(I - eta K)^t r_0||^2 = 1/2 r_0^T (I - eta K)^{2t} r_0,     L(t) = 1/2 r_0^T exp(-2 t K) r_0

(Jacot et al., NeurIPS 2018; Lee et al., NeurIPS 2019; :mod:`ntkhom.theory` computes the same from a full
eigendecomposition). A quadratic form r^T f(K) r is Gauss quadrature on the spectral measure of K seen from
r: m Lanczos steps started at r give T_m, and r^T f(K) r ~ ||r||^2 e_1^T f(T_m) e_1 = ||r||^2 sum_j
w_j f(theta_j), exact for polynomials of degree < 2m (Golub and Meurant, "Matrices, Moments and Quadrature",
2010). The Lanczos decomposition is matfree's; the depth is doubled until the rule of T_m and that of its
leading block T_{m-1} (the rule one step shorter) agree to ``tol`` at every t, which serves as the error
estimate. Cost: m products per column of r_0, memory O(n m).
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import jax
import numpy as np

from ntkhom.data import real_number
from ntkhom.eigensolvers import _check_tolerance, _count, lanczos
from ntkhom.operators import as_operator

__all__ = ["LossCurve", "linearized_loss", "flow_loss", "quadratic_form"]

#: Relative agreement of successive Gauss rules at which the depth stops growing.
DEFAULT_TOLERANCE = 1e-10


class LossCurve(NamedTuple):
    """A predicted loss curve with its error estimate and cost.

    Attributes:
      loss: (len(steps),) float64 predicted losses.
      error: (len(steps),) estimated absolute error (difference of the last two Gauss rules).
      depth: Lanczos steps used per column of r_0.
      products: columns multiplied by K.
      converged: whether ``error <= tol * loss`` everywhere.
    """

    loss: np.ndarray
    error: np.ndarray
    depth: int
    products: int
    converged: bool


def _residual(r0, n: int) -> np.ndarray:
    r = np.asarray(r0, np.float64)
    r = r[:, None] if r.ndim == 1 else r
    if r.ndim != 2 or r.shape[0] != n:
        raise ValueError(f"r0 must have shape ({n},) or ({n}, k) to match the kernel, got {np.shape(r0)}")
    if not np.all(np.isfinite(r)):
        raise ValueError("r0 contains non-finite values")
    return r


def _gauss_rule(T: np.ndarray):
    theta, Y = np.linalg.eigh(T)
    return theta, Y[0, :] ** 2


def quadratic_form(K, r, log_f, *, tol: float = DEFAULT_TOLERANCE, depth: int = 16, max_depth: int = 512):
    """sum over columns of r of r^T f(K) r for f = exp(log_f(lambda)) evaluated at several points at once.

    Args:
      K: kernel operator or symmetric matrix.
      r: (n, k) vectors.
      log_f: maps Ritz values (m,) to log f, (len(points), m) (logs, so long horizons neither over- nor
        underflow).
      tol: relative agreement of the rules of T_m and T_{m-1} at which to stop.
      depth, max_depth: first and largest Lanczos depth.

    Returns:
      (values, error estimates, depth, products, converged).
    """
    _check_tolerance(tol)
    _count(depth, "depth", 1)
    _count(max_depth, "max_depth", 1)
    operator = as_operator(K)
    n = operator.n
    r = _residual(r, n)
    depth = int(min(depth, n))
    products = 0
    while True:
        total = 0.0
        error = 0.0
        for column in r.T:
            norm2 = float(column @ column)
            if norm2 == 0:
                continue
            _, T, _ = lanczos(operator, jax.numpy.asarray(column, operator.dtype), depth)
            products += depth
            T = np.asarray(T, np.float64)
            theta, w = _gauss_rule(T)
            value = np.exp(log_f(theta)) @ w
            if depth > 1:
                shorter_theta, shorter_w = _gauss_rule(T[:-1, :-1])
                error = error + norm2 * np.abs(value - np.exp(log_f(shorter_theta)) @ shorter_w)
            total = total + norm2 * value
        total = np.asarray(total, np.float64)
        error = np.asarray(error, np.float64) * np.ones_like(total)
        converged = bool(np.all(error <= tol * np.abs(total)))
        if converged or depth >= min(max_depth, n):
            return total, error, depth, products, converged
        depth = int(min(2 * depth, max_depth, n))


def _steps(steps, name: str = "times", integer: bool = False) -> np.ndarray:
    t = np.asarray(steps, np.float64)
    if t.ndim != 1 or np.any(t < 0) or not np.all(np.isfinite(t)):
        raise ValueError(f"{name} must be a 1-D array of finite non-negative numbers")
    if integer and np.any(t != np.round(t)):
        raise ValueError(f"{name} must be whole numbers of gradient steps, got {t[t != np.round(t)][:3].tolist()}")
    return t


def linearized_loss(K, r0, learning_rate, steps, *, tol: float = DEFAULT_TOLERANCE,
                    max_depth: int = 512) -> LossCurve:
    """L_t = 1/2 ||(I - eta K)^t r_0||^2 for t in ``steps`` by Lanczos quadrature (module docstring).

    Args:
      K: kernel operator (:mod:`ntkhom.operators`) or symmetric matrix (n, n).
      r0: (n,) or (n, k) residual f(X) - y at initialization.
      learning_rate: eta > 0.
      steps: 1-D array of step counts t >= 0.
      tol: relative error estimate to reach; max_depth: largest Lanczos depth.
    """
    if isinstance(learning_rate, jax.core.Tracer):
        raise TypeError("learning_rate must be concrete: the Lanczos quadrature runs on the host (for a traced "
                        "step size use ntkhom.theory.linearized_loss)")
    eta = real_number(learning_rate, "learning_rate")
    if not (np.isfinite(eta) and eta > 0):
        raise ValueError(f"learning_rate must be a positive finite number, got {learning_rate}")
    t = _steps(steps, "steps", integer=True)
    top = [0.0]  # the largest Ritz value seen, a lower bound on lambda_max

    def log_f(theta):
        top[0] = max(top[0], float(np.max(theta, initial=0.0)))
        return 2 * t[:, None] * np.log(np.maximum(np.abs(1 - eta * theta), 1e-300))[None, :]

    with np.errstate(over="ignore", invalid="ignore"):  # a diverging curve overflows to inf: said below
        loss, error, depth, products, converged = quadratic_form(K, r0, log_f, tol=tol, max_depth=max_depth)
    error = np.where(np.isfinite(loss), error, np.inf)
    if eta * top[0] > 2:
        warnings.warn(f"learning_rate {eta:g} is above 2 / lambda_max (lambda_max >= {top[0]:.6g}, a Ritz value): "
                      "linearized gradient descent diverges, its loss growing like |1 - eta lambda_max|^(2t)"
                      + (" (inf: beyond float64)" if not np.all(np.isfinite(loss)) else ""), stacklevel=2)
    return LossCurve(0.5 * loss, 0.5 * error, depth, products, converged)


def flow_loss(K, r0, times, *, tol: float = DEFAULT_TOLERANCE, max_depth: int = 512) -> LossCurve:
    """Gradient-flow loss L(t) = 1/2 ||exp(-t K) r_0||^2 for t in ``times`` by Lanczos quadrature."""
    t = _steps(times, "times")

    def log_f(theta):
        return -2 * t[:, None] * theta[None, :]

    loss, error, depth, products, converged = quadratic_form(K, r0, log_f, tol=tol, max_depth=max_depth)
    return LossCurve(0.5 * loss, 0.5 * error, depth, products, converged)
