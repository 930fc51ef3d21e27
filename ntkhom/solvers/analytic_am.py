"""Analytic alternating minimization for two-layer ReLU-type networks with the square loss.

A reconstruction of the analytic training of Barbu (2023, "Training a two-layer ReLU network analytically",
Sensors 23(8):4072); the paper's code is not public, so the formulation below is ours and is what the tests
check. Network (a :class:`ntkhom.models.HomotopyMLP` with one hidden layer, read in its effective weights)

    f(x) = sum_j v_j sigma(w_j . x~) + c,   x~ = [x; 1] (the 1 only with hidden biases),

sigma a positively homogeneous piecewise-linear activation: leaky ReLU, ReLU, or the homotopy
sigma_s(z) = (1 - s) z + s phi(z) of such a phi (:mod:`ntkhom.activations`). For these sigma(z) = S(z) z with
the slope pattern S(z) = sigma_s'(z) in {(1 - s) + s a, (1 - s) + s b}, so with S frozen f is *linear* in the
hidden weights. Loss: L = 1/2 sum_i ||f(x_i) - y_i||^2, y_i in R^k.

One iteration (:func:`analytic_am`'s ``step``):

1. Output step. [V; c] = argmin 1/2 ||H [V; c] - Y||^2 with H = [sigma(X~ W^T), 1], the minimum-norm
   least-squares solution (SVD-based ``lstsq``): an exact critical point even with dead (zero) columns.
2. Hidden step with the pattern S = S(X~ W^T) frozen. The residual R = Y - f is linear in a correction
   Delta (h, d+1) of W: J(Delta) = ((X~ Delta^T) o S) V, of adjoint J^T(R) = ((R V^T) o S)^T X~. The step
   solves the normal equations of the frozen-pattern sub-problem
   min_Delta 1/2 ||R - J(Delta)||^2 + ridge/2 ||Delta||^2:

       (J^T J + ridge I) Delta = J^T R,

   a system of size h (d + 1) whose matrix has the Khatri-Rao block structure
   block (j, l) = (v_j . v_l) X~^T diag(S_j S_l) X~. Three solvers (``hidden=``):

   * ``"cg"``: conjugate gradients on the normal equations started at Delta = 0, with matrix-free
     products J^T J Delta in O(n h (d + k)) time and O(n h) memory; the normal matrix is never formed. From
     0 the iterates stay in range(J^T), so CG converges to the minimum-norm solution, the same one as
     ``"dual"`` and ``"dense"`` (a Jacobi preconditioner would converge to the least D-weighted-norm one
     instead, a different critical point on rank-deficient problems). Rows of W the data cannot see (dead
     neurons, v_j = 0) are left unchanged.
   * ``"dual"``: the same minimum-norm correction through the n k x n k dual system, practical when
     n k < h (d + 1) (over-parameterized fits): Delta = J^T alpha with (J J^T + ridge I) alpha = R and
     J J^T [(i, k), (i', k')] = (x~_i . x~_i') sum_j S_ij S_i'j V_jk V_jk', solved by an eigenvalue-based
     pseudo-inverse; O(n^2 k^2 h + n^3 k^3) time. ``"auto"`` (default) takes ``"dual"`` when
     n k <= min(h (d + 1), 500), else ``"cg"``: a choice of speed only, both return the minimum-norm
     correction (to CG's tolerance).
   * ``"dense"``: the minimum-norm least-squares solution of J Delta = R from the explicit n k x h (d + 1)
     Jacobian (reference; O(n k h^2 d^2) time, O(n k h d) memory).
   * ``"neuron"``: a different method, never chosen by ``"auto"``: block-coordinate (Gauss-Seidel) over
     neurons: for j = 1..h in turn the exact
     minimum-norm minimiser over w_j alone, ||v_j||^2 (G_j^T G_j) delta_j = G_j^T R v_j with
     G_j = diag(S_j) X~, a (d + 1)-sized least-squares problem; R is updated after each neuron.

3. Pattern refresh and safeguard. The critical point is exact only while the pattern holds; the true loss is
   recomputed with the new pattern. ``safeguard="damp"`` (default) accepts W + t Delta for the first
   t in 1, 1/2, ..., 2^-max_halvings whose true loss is not above the loss before the hidden step, else
   keeps W (t = 0); ``"reject"`` tries only t = 1 (the iteration is deterministic, so after one rejection
   it stays where it is: a stall, measured on diabetes); ``"none"`` always takes t = 1. With a safeguard
   the loss never increases over an iteration (the output step is an exact least-squares solve).

The homotopy parameter s is an array in the state (:class:`AnalyticAMState`), so a vmapped batch can vary it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ntkhom.activations import Phi, homotopy, homotopy_derivative
from ntkhom.data import check_inputs, check_targets, is_whole, real_number
from ntkhom.models import HomotopyMLP
from ntkhom.solvers.base import Solver, default_key, dtype_of, is_concrete

__all__ = [
    "HIDDEN_SOLVERS",
    "SAFEGUARDS",
    "TwoLayerWeights",
    "am_model",
    "analytic_am",
    "AnalyticAM",
    "AnalyticAMState",
    "augment",
    "check_am_data",
    "from_params",
    "to_params",
    "forward",
    "square_loss",
    "output_step",
    "hidden_step",
    "frozen_pattern_gradient",
    "pattern",
    "resolve_hidden",
]

HIDDEN_SOLVERS = ("auto", "cg", "dual", "dense", "neuron")
#: Largest dual system (n k) that ``"auto"`` solves directly.
DUAL_LIMIT = 500
SAFEGUARDS = ("damp", "reject", "none")


class TwoLayerWeights(NamedTuple):
    """Effective weights: W (h, d~) hidden rows [w_j; b_j], V (h, k) output weights, c (k,) output bias."""

    W: jax.Array
    V: jax.Array
    c: jax.Array


# -- the model ---------------------------------------------------------------------------------------------
def am_model(width: int, s: float = 1.0, *, phi: str | Phi = "leaky_relu", out_dim: int = 1) -> HomotopyMLP:
    """The two-layer network analytic AM trains: hidden and output biases, Gaussian init, all trained."""
    return HomotopyMLP(widths=(width,), s=s, phi=phi, out_dim=out_dim, b_std=1.0, out_b_std=1.0,
                       output_init="normal", trained="all")


def _check_model(model: HomotopyMLP) -> None:
    if model.depth != 1:
        raise ValueError(f"analytic AM trains two-layer networks (one hidden layer), got {model.widths}")
    if not model.phi.positively_homogeneous:
        raise ValueError(
            "analytic AM needs a piecewise-linear, positively homogeneous activation (ReLU, leaky ReLU, abs) "
            f"so that sigma(z) = sigma'(z) z; got {model.phi.name}")


def _scales(model: HomotopyMLP, d: int, h: int):
    (w_std, b_std), (v_std, c_std) = model.layer_scales(d)
    return w_std / math.sqrt(d), b_std, v_std / math.sqrt(h), c_std


def from_params(model: HomotopyMLP, params) -> TwoLayerWeights:
    """Effective weights of ``model``'s parameters, so that f(x) = sigma(x~ W^T) V + c equals model.apply."""
    hidden, out = params
    d, h = hidden["W"].shape
    w_scale, b_scale, v_scale, c_scale = _scales(model, d, h)
    W = w_scale * hidden["W"].T
    if "b" in hidden:
        W = jnp.concatenate([W, b_scale * hidden["b"][:, None]], axis=1)
    c = c_scale * out["b"] if "b" in out else jnp.zeros(out["W"].shape[1], out["W"].dtype)
    return TwoLayerWeights(W, v_scale * out["W"], c)


def to_params(model: HomotopyMLP, weights: TwoLayerWeights, params):
    """``params`` (for their layout) with the values of ``weights``; the inverse of :func:`from_params`."""
    hidden, out = params
    d, h = hidden["W"].shape
    w_scale, b_scale, v_scale, c_scale = _scales(model, d, h)
    new_hidden = {"W": weights.W[:, :d].T / w_scale}
    if "b" in hidden:
        new_hidden["b"] = weights.W[:, d] / b_scale
    new_out = {"W": weights.V / v_scale}
    if "b" in out:
        new_out["b"] = weights.c / c_scale
    return (new_hidden, new_out)


def augment(x, hidden_bias: bool):
    """x~ = [x, 1] (n, d + 1) with a hidden bias, else x."""
    return jnp.concatenate([x, jnp.ones((x.shape[0], 1), x.dtype)], axis=1) if hidden_bias else x


def check_am_data(x, y):
    """Inputs (n, d) and targets (n, k) as float arrays, or a ValueError naming the problem."""
    x = check_inputs(x, "x")
    if x.shape[0] < 2:
        raise ValueError(f"alternating minimization needs at least 2 samples, got n = {x.shape[0]}")
    y = check_targets(y, x.shape[0], "y")
    return x, y.astype(x.dtype)


# -- the mathematics --------------------------------------------------------------------------------------
def pattern(pre, s, phi: Phi):
    """Slope pattern S = sigma_s'(pre); sigma_s(pre) = S * pre exactly for piecewise-linear phi."""
    return homotopy_derivative(pre, s, phi)


def forward(weights: TwoLayerWeights, xa, s, phi: Phi):
    """f = sigma_s(X~ W^T) V + c, shape (n, k)."""
    return homotopy(xa @ weights.W.T, s, phi) @ weights.V + weights.c


def square_loss(weights: TwoLayerWeights, xa, y, s, phi: Phi):
    """L = 1/2 sum ||f(x_i) - y_i||^2."""
    return 0.5 * jnp.sum((forward(weights, xa, s, phi) - y) ** 2)


def output_step(weights: TwoLayerWeights, xa, y, s, phi: Phi, output_bias: bool = True) -> TwoLayerWeights:
    """Exact output step: `[V; c] = minimum-norm argmin 1/2 ||[sigma(X~ W^T), 1] [V; c] - Y||^2`."""
    H = homotopy(xa @ weights.W.T, s, phi)
    if output_bias:
        H = jnp.concatenate([H, jnp.ones((H.shape[0], 1), H.dtype)], axis=1)
    coef = jnp.linalg.lstsq(H, y)[0]
    if output_bias:
        return TwoLayerWeights(weights.W, coef[:-1], coef[-1])
    return TwoLayerWeights(weights.W, coef, weights.c)


def _jvp(delta, xa, S, V):
    """J(Delta) = ((X~ Delta^T) o S) V, (n, k)."""
    return ((xa @ delta.T) * S) @ V


def _vjp(R, xa, S, V):
    """J^T(R) = ((R V^T) o S)^T X~, (h, d~)."""
    return ((R @ V.T) * S).T @ xa


def frozen_pattern_gradient(weights: TwoLayerWeights, S, xa, y):
    """Gradient in W of the frozen-pattern loss 1/2 ||((X~ W^T) o S) V + c - Y||^2, (h, d~)."""
    R = ((xa @ weights.W.T) * S) @ weights.V + weights.c - y
    return _vjp(R, xa, S, weights.V)


def _cg(apply_A, g, tol, maxiter):
    """CG for A x = g (A symmetric positive semi-definite, g in range(A)) from x = 0; the iterates stay in
    range(A), so the limit is the minimum-norm solution. Returns (x, iterations, relative residual)."""
    g_norm = jnp.sqrt(jnp.sum(g * g))
    threshold = tol * g_norm

    def cond(carry):
        _, r, _, rr, k = carry
        return (jnp.sqrt(rr) > threshold) & (k < maxiter)

    def body(carry):
        x, r, p, rr, k = carry
        Ap = apply_A(p)
        pAp = jnp.sum(p * Ap)
        alpha = jnp.where(pAp > 0, rr / jnp.where(pAp > 0, pAp, 1.0), 0.0)
        x = x + alpha * p
        r = r - alpha * Ap
        rr_new = jnp.sum(r * r)
        beta = jnp.where(rr > 0, rr_new / jnp.where(rr > 0, rr, 1.0), 0.0)
        return x, r, r + beta * p, rr_new, k + 1

    init = (jnp.zeros_like(g), g, g, jnp.sum(g * g), jnp.zeros((), jnp.int32))
    x, r, _, rr, k = jax.lax.while_loop(cond, body, init)
    rel = jnp.sqrt(rr) / jnp.where(g_norm > 0, g_norm, 1.0)
    return x, k, rel


def _hidden_correction_cg(weights, S, xa, R, ridge, tol, maxiter):
    g = _vjp(R, xa, S, weights.V)

    def apply_A(delta):
        return _vjp(_jvp(delta, xa, S, weights.V), xa, S, weights.V) + ridge * delta

    return _cg(apply_A, g, tol, maxiter)


def _hidden_correction_dense(weights, S, xa, R, ridge):
    h, dd = weights.W.shape
    k = weights.V.shape[1]
    # Jacobian rows (i, k), columns (j, a): S_ij V_jk x~_ia.
    J = jnp.einsum("ij,jk,ia->ikja", S, weights.V, xa).reshape(-1, h * dd)
    r = R.reshape(-1)
    if ridge is not None:  # the proximal sub-problem: stack sqrt(ridge) I under J
        J = jnp.concatenate([J, jnp.sqrt(ridge) * jnp.eye(h * dd, dtype=J.dtype)], axis=0)
        r = jnp.concatenate([r, jnp.zeros(h * dd, r.dtype)])
    delta = jnp.linalg.lstsq(J, r)[0].reshape(h, dd)
    del k
    return delta


def _hidden_correction_dual(weights, S, xa, R, ridge):
    n, k = R.shape
    gram = xa @ xa.T
    kernel = jnp.einsum("ij,pj,jk,jm->ikpm", S, S, weights.V, weights.V) * gram[:, None, :, None]
    kernel = kernel.reshape(n * k, n * k)
    if ridge is not None:
        kernel = kernel + ridge * jnp.eye(n * k, dtype=kernel.dtype)
    # pseudo-inverse by eigendecomposition: eigenvalues below n k eps lambda_max are treated as zero
    eigenvalues, vectors = jnp.linalg.eigh(kernel)
    floor = n * k * jnp.finfo(kernel.dtype).eps * jnp.max(jnp.abs(eigenvalues))
    inverse = jnp.where(eigenvalues > floor, 1.0 / jnp.where(eigenvalues > floor, eigenvalues, 1.0), 0.0)
    alpha = vectors @ (inverse * (vectors.T @ R.reshape(-1)))
    return _vjp(alpha.reshape(n, k), xa, S, weights.V)


def resolve_hidden(hidden: str, n: int, k: int, h: int, d_aug: int) -> str:
    """The concrete hidden solver ``"auto"`` stands for at these sizes (see the module docstring)."""
    if hidden not in HIDDEN_SOLVERS:
        raise ValueError(f"unknown hidden solver {hidden!r}; choose one of {HIDDEN_SOLVERS}")
    if hidden != "auto":
        return hidden
    return "dual" if n * k <= min(h * d_aug, DUAL_LIMIT) else "cg"


def _hidden_correction_neuron(weights, S, xa, R, ridge):
    h = weights.W.shape[0]

    def one(j, carry):
        delta, R = carry
        v = weights.V[j]
        v_norm = jnp.sqrt(jnp.sum(v * v))
        safe = jnp.where(v_norm > 0, v_norm, 1.0)
        G = S[:, j][:, None] * xa
        A = G * safe
        b = R @ v / safe
        if ridge is not None:
            A = jnp.concatenate([A, jnp.sqrt(ridge) * jnp.eye(xa.shape[1], dtype=A.dtype)], axis=0)
            b = jnp.concatenate([b, jnp.zeros(xa.shape[1], b.dtype)])
        dj = jnp.where(v_norm > 0, jnp.linalg.lstsq(A, b)[0], 0.0)
        R = R - jnp.outer(G @ dj, v)
        return delta.at[j].set(dj), R

    delta, _ = jax.lax.fori_loop(0, h, one, (jnp.zeros_like(weights.W), R))
    return delta


def hidden_step(weights: TwoLayerWeights, xa, y, s, phi: Phi, *, hidden: str = "auto", ridge=0.0,
                tol: float = 1e-10, maxiter: int = 1000):
    """Frozen-pattern hidden step: returns (W + Delta, info) with Delta from the module docstring's solvers.

    ``info`` has ``cg_iterations`` and ``relative_residual`` (``"cg"`` only; 0 otherwise). No safeguard here.
    """
    hidden = resolve_hidden(hidden, y.shape[0], y.shape[1], *weights.W.shape)
    S = pattern(xa @ weights.W.T, s, phi)
    R = y - forward(weights, xa, s, phi)
    zero = jnp.zeros((), jnp.int32)
    info = {"cg_iterations": zero, "relative_residual": jnp.zeros((), weights.W.dtype)}
    if hidden == "cg":
        delta, k, rel = _hidden_correction_cg(weights, S, xa, R, ridge, tol, maxiter)
        info = {"cg_iterations": k, "relative_residual": rel}
    elif hidden == "dense":
        delta = _hidden_correction_dense(weights, S, xa, R, _optional_ridge(ridge))
    elif hidden == "dual":
        delta = _hidden_correction_dual(weights, S, xa, R, _optional_ridge(ridge))
    else:
        delta = _hidden_correction_neuron(weights, S, xa, R, _optional_ridge(ridge))
    return weights._replace(W=weights.W + delta), info


def _optional_ridge(ridge):
    # A Python 0 means "no ridge" (minimum-norm lstsq); any array is used as given (it may be traced).
    if isinstance(ridge, int | float) and ridge == 0:
        return None
    return ridge


def _safeguarded(old: TwoLayerWeights, new: TwoLayerWeights, loss_fn, loss_old, safeguard, max_halvings):
    """W + t (W_new - W) for the first accepted t (module docstring); returns (weights, t)."""
    if safeguard == "none":
        return new, jnp.ones((), old.W.dtype)
    delta = new.W - old.W
    halvings = 0 if safeguard == "reject" else max_halvings

    def trial(t):
        return old._replace(W=old.W + t * delta)

    def cond(carry):
        t, k, accepted = carry
        return (~accepted) & (k <= halvings)

    def body(carry):
        t, k, _ = carry
        accepted = loss_fn(trial(t)) <= loss_old
        return jnp.where(accepted, t, 0.5 * t), k + 1, accepted

    t, _, accepted = jax.lax.while_loop(cond, body, (jnp.ones((), old.W.dtype), 0, jnp.zeros((), bool)))
    t = jnp.where(accepted, t, 0.0)
    return trial(t), t


class AnalyticAMState(NamedTuple):
    """State of :class:`AnalyticAM`: the common fields (``learning_rate`` is NaN: there is no step size), then
    the last accepted step fraction t and the last hidden solve's CG iterations and relative residual."""

    step: jax.Array
    s: jax.Array
    learning_rate: jax.Array
    key: jax.Array
    step_fraction: jax.Array
    cg_iterations: jax.Array
    relative_residual: jax.Array


@dataclasses.dataclass(frozen=True)
class AnalyticAM(Solver):
    """Analytic alternating minimization (module docstring); build it with :func:`analytic_am`.

    ``loss`` is 1/2 sum ||f - y||^2; ``metrics`` gives ``mse`` (mean over samples and outputs), the last
    step fraction t, the CG iterations and its relative residual.
    """

    model: HomotopyMLP
    hidden: str = "auto"
    safeguard: str = "damp"
    ridge: float = 0.0
    cg_tol: float = 1e-10
    cg_maxiter: int = 1000
    max_halvings: int = 10

    @property
    def name(self) -> str:
        return f"analytic-am({self.hidden})"

    def _data(self, batch):
        if not isinstance(batch, tuple | list) or len(batch) != 2:
            raise TypeError(f"batch must be a pair (x, y), got {type(batch).__name__}")
        x, y = batch
        if is_concrete(batch):
            x, y = check_am_data(x, y)
        if jnp.ndim(y) != 2 or jnp.shape(y)[1] != self.model.out_dim:
            raise ValueError(f"targets must be (n, out_dim = {self.model.out_dim}), got shape {jnp.shape(y)}")
        return augment(x, self.model.b_std is not None), y.astype(x.dtype)

    def init(self, params, batch) -> AnalyticAMState:
        xa, _ = self._data(batch)
        d = params[0]["W"].shape[0]
        if d + (self.model.b_std is not None) != xa.shape[1]:
            raise ValueError(f"parameters expect d = {d} but x has {batch[0].shape[1]} features")
        dtype = dtype_of(params)
        return AnalyticAMState(step=jnp.zeros((), jnp.int32), s=jnp.asarray(self.model.s, dtype),
                               learning_rate=jnp.asarray(jnp.nan, dtype), key=default_key(),
                               step_fraction=jnp.ones((), dtype), cg_iterations=jnp.zeros((), jnp.int32),
                               relative_residual=jnp.zeros((), dtype))

    def step(self, params, state, batch):
        model, phi = self.model, self.model.phi
        xa, y = self._data(batch)
        s = state.s
        weights = output_step(from_params(model, params), xa, y, s, phi, model.out_b_std is not None)
        loss_fn = lambda w: square_loss(w, xa, y, s, phi)  # noqa: E731
        loss_before = loss_fn(weights)
        trial, info = hidden_step(weights, xa, y, s, phi, hidden=self.hidden, ridge=self.ridge, tol=self.cg_tol,
                                  maxiter=self.cg_maxiter)
        weights, t = _safeguarded(weights, trial, loss_fn, loss_before, self.safeguard, self.max_halvings)
        state = state._replace(step=state.step + 1, step_fraction=t, cg_iterations=info["cg_iterations"],
                               relative_residual=info["relative_residual"])
        return to_params(model, weights, params), state

    def loss(self, params, state, batch):
        xa, y = self._data(batch)
        return square_loss(from_params(self.model, params), xa, y, state.s, self.model.phi)

    def metrics(self, params, state, batch):
        value = self.loss(params, state, batch)
        return {
            "mse": 2.0 * value / batch[1].size,
            "step_fraction": state.step_fraction,
            "cg_iterations": state.cg_iterations,
            "relative_residual": state.relative_residual,
        }


def analytic_am(
    model: HomotopyMLP,
    *,
    hidden: str = "auto",
    safeguard: str = "damp",
    ridge: float = 0.0,
    cg_tol: float = 1e-10,
    cg_maxiter: int = 1000,
    max_halvings: int = 10,
) -> AnalyticAM:
    """Analytic alternating minimization (module docstring) as an ntkhom solver; data come with every call.

    Args:
      model: a one-hidden-layer :class:`HomotopyMLP` with a piecewise-linear phi (e.g. :func:`am_model`);
        its parameters are the solver's ``params``; ``state.s`` (default ``model.s``) is the homotopy s.
      hidden: ``"auto"``, ``"cg"``, ``"dual"`` or ``"dense"`` (all the minimum-norm correction; ``"auto"``
        picks by size), or ``"neuron"`` (block coordinate descent, a different method).
      safeguard: ``"damp"``, ``"reject"`` or ``"none"``.
      ridge: proximal weight of the hidden step (0: exact minimum-norm critical point).
      cg_tol, cg_maxiter: relative residual target and iteration cap of CG.

    The batch is ``(x, y)``: inputs (n, d), n >= 2, and targets (n, k). Float64 recommended (exactness is to
    1e-10).
    """
    _check_model(model)
    if hidden not in HIDDEN_SOLVERS:
        raise ValueError(f"unknown hidden solver {hidden!r}; choose one of {HIDDEN_SOLVERS}")
    if safeguard not in SAFEGUARDS:
        raise ValueError(f"unknown safeguard {safeguard!r}; choose one of {SAFEGUARDS}")
    ridge, cg_tol = (real_number(ridge, "ridge", error=TypeError), real_number(cg_tol, "cg_tol", error=TypeError))
    if not (math.isfinite(ridge) and ridge >= 0):
        raise ValueError(f"ridge must be a finite number >= 0, got {ridge}")
    if not (math.isfinite(cg_tol) and cg_tol > 0):
        raise ValueError(f"cg_tol must be a finite number > 0, got {cg_tol}")
    if not is_whole(cg_maxiter):
        raise ValueError(f"cg_maxiter must be an integer >= 1, got {cg_maxiter!r}")
    if not is_whole(max_halvings, 0):
        raise ValueError(f"max_halvings must be an integer >= 0, got {max_halvings!r}")
    return AnalyticAM(model=model, hidden=hidden, safeguard=safeguard, ridge=ridge if ridge > 0 else 0.0,
                      cg_tol=cg_tol, cg_maxiter=int(cg_maxiter), max_halvings=int(max_halvings))


