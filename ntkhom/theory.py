"""What the kernel predicts for gradient training, to hold measured loss curves against.

Conventions (those of :mod:`ntkhom.losses` and :mod:`ntkhom.kernels`): the loss is L = 1/2 ||r||^2 with the
residual r = f(X) - y (n, k), and K (n, n) is the empirical NTK Gram matrix over the trained parameters.

* Linearized dynamics (Jacot et al., NeurIPS 2018; Lee et al., NeurIPS 2019). Gradient descent with step
  eta on the network linearized at its initialization moves the residual by r_{t+1} = (I - eta K) r_t, so
  with K = V diag(lambda) V^T,

      r_t = V diag((1 - eta lambda)^t) V^T r_0,      gradient flow: r(t) = V diag(exp(-lambda t)) V^T r_0.

  :func:`linearized_loss` evaluates L_t = 1/2 ||r_t||^2 from this eigendecomposition (float64 NumPy).
* Guarantees from lambda_0 = lambda_min(H) (Du, Zhai, Poczos, Singh, ICLR 2019, Theorems 4.1 and 5.1, for
  wide enough networks): gradient flow ||r(t)||^2 <= exp(-lambda_0 t) ||r(0)||^2; gradient descent with a
  small step ||r_k||^2 <= (1 - eta lambda_0 / 2)^k ||r_0||^2 (:func:`flow_bound`, :func:`gd_bound`). The
  HRTA paper (Yang, Chen, Hao, ICLR 2024 submission) applies these stage by stage with lambda_0(s_p) of each
  stage (:func:`stagewise_bound`).
* The exact asymptotic rate of the linear model: the loss shrinks per step by the factor
  max_i (1 - eta lambda_i)^2 over the eigen-directions the residual has weight in (:func:`predicted_rate`);
  gradient descent is stable only for eta < 2 / lambda_max (:func:`step_size_limit`).
* :func:`fit_linear_rate` fits log L_t = a + t log(rho) to a measured curve, to compare with the above.

Concrete inputs are computed in float64 NumPy (the certified default). When any argument is traced (``jit``,
``vmap``, ``grad``, e.g. with respect to ``s`` through a kernel), the same formulas run in ``jax.numpy``
(float64 when JAX's 64-bit mode is on) and the value checks are skipped.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from ntkhom.data import real_number
from ntkhom.kernels import network_kernel  # the one kernel dispatcher, re-exported for the theory's users
from ntkhom.spectrum import check_kernel, device_spectrum, spectrum

__all__ = [
    "LinearRate",
    "linearized_residuals",
    "linearized_loss",
    "flow_loss",
    "gd_bound",
    "flow_bound",
    "stagewise_bound",
    "stagewise_linearized_loss",
    "predicted_rate",
    "step_size_limit",
    "fit_linear_rate",
    "network_kernel",
    "relative_deviation",
]


def _traced(*values) -> bool:
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(values))


def _device_float():
    return jnp.float64 if jax.config.jax_enable_x64 else jnp.float32


def _residual(r0, n: int, xp=np):
    r = np.asarray(r0, dtype=np.float64) if xp is np else jnp.asarray(r0, _device_float())
    if r.ndim == 1:
        r = r[:, None]
    if r.ndim != 2 or r.shape[0] != n:
        raise ValueError(f"the residual must have shape ({n},) or ({n}, k) to match the kernel, got {r.shape}")
    if xp is np and not np.all(np.isfinite(r)):
        raise ValueError("the residual contains non-finite values")
    return r


def _steps(steps, xp=np, integer: bool = False):
    """``integer``: whole numbers of gradient steps ((1 - eta lambda)^t of a negative base needs them)."""
    if xp is not np:
        t = jnp.asarray(steps, _device_float())
        if t.ndim != 1:
            raise ValueError("steps (or times) must be a 1-D array of finite non-negative numbers")
        return t
    t = np.asarray(steps, dtype=np.float64)
    if t.ndim != 1 or np.any(t < 0) or not np.all(np.isfinite(t)):
        raise ValueError("steps (or times) must be a 1-D array of finite non-negative numbers")
    if integer and np.any(t != np.round(t)):
        raise ValueError(f"steps must be whole numbers of gradient steps, got {t[t != np.round(t)][:3].tolist()}")
    return t


def _positive(name: str, value):
    if _traced(value):
        return value
    value = real_number(value, name)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value}")
    return value


def _non_negative(name: str, value):
    if _traced(value):
        return value
    number = real_number(value, name)
    if not (math.isfinite(number) and number >= 0):
        raise ValueError(f"{name} must be a finite non-negative number, got {value}")
    return number


def _eigen(K, xp=np):
    if xp is not np:
        K = jnp.asarray(K, _device_float())
        if K.ndim != 2 or K.shape[0] != K.shape[1]:
            raise ValueError(f"K must be a non-empty square matrix, got shape {K.shape}")
        return jnp.linalg.eigh(0.5 * (K + K.T))
    array = check_kernel(K)
    eigenvalues, vectors = np.linalg.eigh(array)
    return eigenvalues, vectors


def _module(*values):
    """jax.numpy when any value is traced, else NumPy (float64 on the host)."""
    return jnp if _traced(*values) else np


def linearized_residuals(K, r0, learning_rate: float, steps) -> np.ndarray:
    """r_t = (I - eta K)^t r_0 for every t in ``steps``; shape (len(steps), n, k), float64."""
    xp = _module(K, r0, learning_rate, steps)
    eigenvalues, V = _eigen(K, xp)
    r = _residual(r0, V.shape[0], xp)
    eta = _positive("learning_rate", learning_rate)
    t = _steps(steps, xp, integer=True)
    coeffs = V.T @ r  # (n, k)
    factors = (1 - eta * eigenvalues)[None, :] ** t[:, None]  # integer t: a negative base is fine
    return xp.einsum("ij,tj,jk->tik", V, factors, coeffs)


def linearized_loss(K, r0, learning_rate: float, steps) -> np.ndarray:
    """Predicted loss L_t = 1/2 ||(I - eta K)^t r_0||^2 for t in ``steps``, shape (len(steps),)."""
    xp = _module(K, r0, learning_rate, steps)
    eigenvalues, V = _eigen(K, xp)
    r = _residual(r0, V.shape[0], xp)
    eta = _positive("learning_rate", learning_rate)
    t = _steps(steps, xp, integer=True)
    weights = xp.sum((V.T @ r) ** 2, axis=1)  # squared residual weight of each eigen-direction
    # (1 - eta lambda)^(2t) in logs, so long horizons neither overflow nor lose the tiny factors
    log_factor = xp.log(xp.maximum(xp.abs(1 - eta * eigenvalues), 1e-300))
    with np.errstate(over="ignore"):
        return 0.5 * xp.exp(2 * t[:, None] * log_factor[None, :]) @ weights


def flow_loss(K, r0, times) -> np.ndarray:
    """Gradient-flow prediction L(t) = 1/2 ||exp(-K t) r_0||^2, shape (len(times),)."""
    xp = _module(K, r0, times)
    eigenvalues, V = _eigen(K, xp)
    r = _residual(r0, V.shape[0], xp)
    t = _steps(times, xp)
    weights = xp.sum((V.T @ r) ** 2, axis=1)
    return 0.5 * xp.exp(-2 * t[:, None] * eigenvalues[None, :]) @ weights


def gd_bound(lambda_0: float, learning_rate: float, steps, loss0: float) -> np.ndarray:
    """Du et al.'s GD guarantee, L_k <= (1 - eta lambda_0 / 2)^k L_0, for k in ``steps``; ``loss0`` >= 0 finite."""
    xp = _module(lambda_0, learning_rate, steps, loss0)
    eta = _positive("learning_rate", learning_rate)
    lam = _non_negative("lambda_0", lambda_0)
    loss0 = _non_negative("loss0", loss0)
    factor = 1 - eta * lam / 2
    if xp is np and factor < 0:
        raise ValueError(f"eta lambda_0 / 2 = {eta * lam / 2:.3g} > 1: the step is outside the bound's range")
    return loss0 * factor ** _steps(steps, xp)


def flow_bound(lambda_0: float, times, loss0: float) -> np.ndarray:
    """Du et al.'s gradient-flow guarantee, L(t) <= exp(-lambda_0 t) L(0); ``loss0`` >= 0 finite."""
    xp = _module(lambda_0, times, loss0)
    lam = _non_negative("lambda_0", lambda_0)
    loss0 = _non_negative("loss0", loss0)
    return loss0 * xp.exp(-lam * _steps(times, xp))


def stagewise_bound(stages, loss0: float) -> tuple[np.ndarray, np.ndarray]:
    """The GD guarantee stage by stage: stage p with (lambda_0_p, eta_p, steps_p) multiplies the bound by
    (1 - eta_p lambda_0_p / 2) per step. Returns (steps (T+1,), bound (T+1,)) over all stages.

    The bound assumes the loss is continuous at a stage change; when s jumps, the network function changes
    and the measured loss can jump above it (see :mod:`ntkhom.solvers.hrta`), so experiments restart the
    bound from the measured loss after each switch with ``loss0`` of that stage.
    """
    if len(stages) == 0:
        raise ValueError("stagewise_bound needs at least one stage")
    loss0 = _non_negative("loss0", loss0)
    steps_all, bounds = [np.zeros(1)], [np.array([loss0])]
    current, offset = loss0, 0
    for lam, eta, n_steps in stages:
        k = np.arange(1, int(n_steps) + 1)
        values = gd_bound(lam, eta, k, current)
        steps_all.append(offset + k)
        bounds.append(values)
        offset += int(n_steps)
        current = float(values[-1]) if len(values) else current
    return np.concatenate(steps_all), np.concatenate(bounds)


def stagewise_linearized_loss(stages) -> tuple[np.ndarray, np.ndarray]:
    """Linearized prediction stage by stage: each stage is (K_p, r_start_p, eta_p, steps_p), the kernel and
    residual at the start of the stage (after the switch). Returns (steps, loss) with the stage-start point
    of every stage included (steps repeat at a switch, where the loss may jump)."""
    if len(stages) == 0:
        raise ValueError("stagewise_linearized_loss needs at least one stage")
    steps_all, losses, offset = [], [], 0
    for K, r_start, eta, n_steps in stages:
        k = np.arange(0, int(n_steps) + 1)
        steps_all.append(offset + k)
        losses.append(linearized_loss(K, r_start, eta, k))
        offset += int(n_steps)
    return np.concatenate(steps_all), np.concatenate(losses)


def predicted_rate(K, learning_rate: float, r0=None, *, relative_weight: float = 1e-12) -> float:
    """Asymptotic per-step loss factor of the linearized dynamics, max_i (1 - eta lambda_i)^2.

    With ``r0`` only eigen-directions in which the residual has squared weight above ``relative_weight``
    times the total count (directions the residual never sees cannot slow it down). A zero ``r0`` has
    weight in no direction: its loss is 0 at every step, so no rate is defined; a concrete zero residual is
    refused (ValueError), a traced one gives NaN.
    """
    xp = _module(K, learning_rate, r0)
    eigenvalues, V = _eigen(K, xp)
    eta = _positive("learning_rate", learning_rate)
    factors = (1 - eta * eigenvalues) ** 2
    if r0 is None:
        return float(np.max(factors)) if xp is np else jnp.max(factors)
    weights = xp.sum((V.T @ _residual(r0, V.shape[0], xp)) ** 2, axis=1)
    total = weights.sum()
    if xp is np and not total > 0:
        raise ValueError("the residual r0 is zero: the loss stays 0 at every step, so no rate is defined")
    rate = xp.max(xp.where(weights > relative_weight * total, factors, -xp.inf))
    return float(rate) if xp is np else jnp.where(total > 0, rate, jnp.nan)


def step_size_limit(K) -> float:
    """2 / lambda_max(K): gradient descent on the linearized model diverges for larger steps."""
    if _traced(K):
        return 2.0 / device_spectrum(K).lambda_max
    lam_max = spectrum(K).lambda_max.value
    if lam_max <= 0:
        raise ValueError("the kernel has no positive eigenvalue; every step size is stable")
    return 2.0 / lam_max


@dataclasses.dataclass(frozen=True)
class LinearRate:
    """A linear-rate fit log L_t ~ intercept + t log(factor) over a window of a loss curve.

    ``factor``: loss multiplier per step (rho < 1 converges); ``rate``: -log(factor) per step;
    ``r2``: coefficient of determination of the fit in log space; ``window``: (first, last) step used.
    """

    factor: float
    rate: float
    intercept: float
    r2: float
    window: tuple[int, int]


def fit_linear_rate(steps, loss, *, start: int | None = None, stop: int | None = None) -> LinearRate:
    """Least-squares fit of log(loss) = a + b t over records with start <= t <= stop; factor = exp(b).

    Records with non-positive or non-finite loss are refused (a rate needs a strictly positive curve);
    at least three records must fall in the window, at two or more distinct steps (a slope needs them).
    """
    t = np.asarray(steps, dtype=np.float64)
    values = np.asarray(loss, dtype=np.float64)
    if t.ndim != 1 or values.shape != t.shape:
        raise ValueError(f"steps and loss must be 1-D of equal length, got {t.shape} and {values.shape}")
    keep = np.ones_like(t, dtype=bool)
    if start is not None:
        keep &= t >= start
    if stop is not None:
        keep &= t <= stop
    t, values = t[keep], values[keep]
    if t.size < 3:
        raise ValueError(f"need at least 3 records in the fit window, got {t.size}")
    if not np.all(np.isfinite(t)):
        raise ValueError("steps must be finite numbers")
    if np.all(t == t[0]):
        raise ValueError(f"steps must take at least two distinct values in the fit window, got only {t[0]:g}")
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError("the loss must be finite and strictly positive in the fit window")
    logs = np.log(values)
    slope, intercept = np.polyfit(t, logs, 1)
    fitted = intercept + slope * t
    total = np.sum((logs - logs.mean()) ** 2)
    r2 = 1.0 - np.sum((logs - fitted) ** 2) / total if total > 0 else 1.0
    return LinearRate(float(np.exp(slope)), float(-slope), float(intercept), float(r2), (int(t[0]), int(t[-1])))


def relative_deviation(measured, predicted, loss0: float | None = None, *, scale: str = "initial") -> float:
    """How far a measured loss curve strays from its prediction.

    ``scale="initial"``: sup_t |L_measured(t) - L_predicted(t)| / L(0) (``loss0``, default ``measured[0]``);
    dominated by the early, fast phase. ``scale="log"``: sup_t |log(L_measured(t) / L_predicted(t))|, the
    relative error of the curve at every point, which also sees the slow tail.

    The curves must be non-empty and free of NaN (a NaN would make the sup NaN); an infinite point against
    a finite one (a diverged prediction) gives an infinite deviation.
    """
    a = np.asarray(measured, dtype=np.float64)
    b = np.asarray(predicted, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"measured and predicted curves differ in shape: {a.shape} vs {b.shape}")
    if a.ndim == 0 or a.size == 0:
        raise ValueError(f"measured and predicted must be non-empty curves, got shape {a.shape}")
    for name, curve in (("measured", a), ("predicted", b)):
        if np.any(np.isnan(curve)):
            raise ValueError(f"{name} contains NaN at {np.flatnonzero(np.isnan(curve))[:3].tolist()}")
    if scale == "log":
        if np.any(a <= 0) or np.any(b <= 0):
            raise ValueError("scale='log' needs strictly positive curves")
        return float(np.max(np.abs(np.log(a / b))))
    if scale != "initial":
        raise ValueError(f"unknown scale {scale!r}; choose 'initial' or 'log'")
    reference = float(a[0]) if loss0 is None else real_number(loss0, "loss0")
    if not (math.isfinite(reference) and reference > 0):
        raise ValueError(f"the reference (initial) loss must be positive and finite, got {reference}")
    return float(np.max(np.abs(a - b)) / reference)
