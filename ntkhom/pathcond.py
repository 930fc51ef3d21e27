"""Path-lifting, function-preserving neuron rescaling, PathCond and ENorm for homotopy / ReLU MLPs.

Path-lifting (Lebeurrier, Vayer, Gribonval, *Path-conditioned training*, arXiv:2602.19799). A path runs from
an input coordinate or a bias to an output; its value Phi_p is the product of the *effective* weights along
it (times the starting bias). In ntkhom's NTK parameterization the effective weight of dense layer l is
c_W,l W_l with c_W,l = W_std_l / sqrt(fan_in_l) and the effective bias is c_b,l b_l with c_b,l = b_std_l
(:meth:`ntkhom.models.HomotopyMLP.layer_scales`), so Phi is taken in the effective weights: it is the path
lifting of the *function*, independent of how the parameters are stored. With phi in the ReLU family,
sigma_s(x) = (1 - s) x + s phi(x) is positively homogeneous for every s, so f(x) = A_s(theta, x)^T Phi(theta)
with A_s piecewise constant (the slopes of sigma_s along each path): the rescaling symmetry and Phi hold
along the whole homotopy path, and Phi does not depend on s.

Training happens in the stored (trained) coordinates theta, so the Jacobian that matters is
G = dPhi/dtheta = (dPhi/dtheta_eff) diag(c) and its diagonal is

    g_i = d ||Phi||_2^2 / d(theta_i^2) = c_i^2 * d ||Phi(theta_eff)||_2^2 / d(theta_eff,i^2),

computed in one forward and one backward pass of the network whose weights are (c theta)^2, fed an all-ones
input. ``parameterization="standard"`` treats the stored parameters as the effective ones (c = 1), as in
PyTorch's ``nn.Linear``.

Rescaling convention (as the reference notes): z in R^H over the hidden neurons, lambda_h = exp(z_h / 2);
neuron h's incoming weights and bias are multiplied by lambda_h, its outgoing weights divided by lambda_h,
i.e. theta' = theta * exp(-(B z) / 2) with B = -1 on incoming and +1 on outgoing parameters. f and Phi are
unchanged; g' = g * exp(B z).

PathCond minimises the convex F(z) = n log(sum_i g_i exp((B z)_i)) - sum_i (B z)_i (n parameters) by exact
cyclic coordinate descent: for neuron h with x = exp(z_h), out_h = sum_out g_i exp((Bz)_i - z_h), in_h =
sum_in g_i exp((Bz)_i + z_h), D_h the rest of the sum and A_h = |in(h)| - |out(h)|, the minimiser along z_h is
the positive root of (A_h + n) out_h x^2 + A_h D_h x + (A_h - n) in_h = 0 where one exists. That includes
pruned neurons (incoming weights and bias zero, so out_h = 0): x = (n - A_h) in_h / (A_h D_h) when A_h > 0,
and dead ones (outgoing weights zero, in_h = 0): x = -A_h D_h / ((n + A_h) out_h) when A_h < 0. Where no
positive root exists, F is monotone along z_h (its infimum lies at z_h = +-inf) and z_h is left as it is,
so the rescaling stays finite. Neurons of one layer share no parameter, so out_h and in_h of a whole layer
come from two matrix-vector products and the sweep over the layer's neurons is a scalar ``lax.scan`` carrying
the running sum: one sweep costs O(n).
ENorm (Stock, Graham, Gribonval, Jegou, *Equi-normalization of neural networks*, ICLR 2019) is the baseline:
block coordinate descent on sum_i theta_i^2 over the same symmetry, lambda_h^4 = ||out_h||^2 / ||in_h||^2.

Parameters are ntkhom's tuple of dicts ``{"W": (fan_in, fan_out), "b": (fan_out,)}`` ("b" optional), output
layer last; scalings are tuples of arrays z_l of shape (m_l,), one per hidden layer.
"""

from __future__ import annotations

import functools
import math
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ntkhom.data import is_whole, real_number
from ntkhom.models import HomotopyMLP, Params

__all__ = [
    "PARAMETERIZATIONS",
    "Scaling",
    "check_rescalable",
    "path_scales",
    "effective_params",
    "path_norm",
    "path_gradient_diag",
    "rescale",
    "random_scaling",
    "pathcond_objective",
    "pathcond",
    "pathcond_from_diag",
    "pathcond_python",
    "enorm",
    "ntk_conditioning",
    "kernel_conditioning",
]

PARAMETERIZATIONS = ("ntk", "standard")
#: Reference defaults (Artim436/pathcond): at most 10 sweeps, stop when sum_h |delta z_h| < 1e-2.
DEFAULT_MAX_SWEEPS = 10
DEFAULT_TOL = 1e-2

Scales = tuple[dict[str, float], ...]


class Scaling(NamedTuple):
    """A neuron-wise rescaling: ``z[l]`` has shape (m_l,), lambda = exp(z / 2); how many sweeps it took and
    the last sweep's sum_h |delta z_h|."""

    z: tuple[jax.Array, ...]
    sweeps: jax.Array
    change: jax.Array

    @property
    def lambdas(self) -> tuple[jax.Array, ...]:
        return tuple(jnp.exp(zl / 2) for zl in self.z)


# -- validation ------------------------------------------------------------------------------------------
def check_rescalable(model: HomotopyMLP) -> None:
    """ValueError unless sigma_s is positively homogeneous (phi in the ReLU family), for every s."""
    if not model.phi.positively_homogeneous:
        raise ValueError(
            f"activation {model.phi.name!r} is not positively homogeneous: sigma_s(lambda x) != lambda sigma_s(x), "
            "so neuron rescaling would change the function; path-lifting and PathCond need phi in the ReLU "
            "family (relu, leaky_relu, abs)"
        )


def _check_params(params: Params, *, finite: bool = True) -> None:
    if not isinstance(params, tuple | list) or len(params) < 2:
        raise ValueError("rescaling needs at least one hidden layer: params must be a tuple of >= 2 dense layers")
    for layer, entry in enumerate(params):
        if "W" not in entry or jnp.ndim(entry["W"]) != 2:
            raise ValueError(f"layer {layer}: 'W' must be a (fan_in, fan_out) matrix")
        fan_in, fan_out = entry["W"].shape
        if fan_in == 0 or fan_out == 0:
            raise ValueError(f"layer {layer} has no neurons (W has shape {entry['W'].shape})")
        if "b" in entry and jnp.shape(entry["b"]) != (fan_out,):
            raise ValueError(f"layer {layer}: 'b' has shape {jnp.shape(entry['b'])}, expected ({fan_out},)")
        if layer > 0 and fan_in != params[layer - 1]["W"].shape[1]:
            raise ValueError(f"layer {layer} expects {fan_in} inputs but layer {layer - 1} has {fan_out} outputs")
    if not finite:
        return
    if any(isinstance(v, jax.core.Tracer) for v in jax.tree.leaves(params)):
        return  # under jit / vmap the values are not known here; the caller checks the concrete batch
    finite = _finite_flags(tuple(dict(e) for e in params))
    for layer, entry in enumerate(finite):
        for name, ok in entry.items():
            if not bool(ok):
                raise ValueError(f"layer {layer} {name!r} contains NaN or inf; cannot rescale")


@jax.jit
def _finite_flags(params: Params):
    return jax.tree.map(lambda v: jnp.all(jnp.isfinite(v)), params)


def path_scales(model: HomotopyMLP, params: Params,
                parameterization: Literal["ntk", "standard"] = "ntk") -> Scales:
    """Per layer {"W": c_W, "b": c_b}: effective = c * stored. ``"ntk"``: c_W = W_std / sqrt(fan_in),
    c_b = b_std (ntkhom's models); ``"standard"``: c = 1 (the stored parameters are the effective ones)."""
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"unknown parameterization {parameterization!r}; choose one of {PARAMETERIZATIONS}")
    if parameterization == "standard":
        return tuple({"W": 1.0, "b": 1.0} for _ in params)
    d = params[0]["W"].shape[0]
    scales = model.layer_scales(d)
    if len(scales) != len(params):
        raise ValueError(f"the model has {len(scales)} dense layers but params has {len(params)}")
    return tuple({"W": W_std / math.sqrt(entry["W"].shape[0]), "b": 1.0 if b_std is None else b_std}
                 for entry, (W_std, b_std) in zip(params, scales))


def effective_params(params: Params, scales: Scales) -> Params:
    """The effective weights c * theta of every layer (the ones the function and Phi see)."""
    return tuple({k: scales[layer][k] * v for k, v in entry.items()} for layer, entry in enumerate(params))


# -- path-lifting ----------------------------------------------------------------------------------------
def _path_forward(powered: Params):
    """sum over paths of the product of the given per-parameter values: a forward pass from an all-ones input
    with every weight and bias replaced by its value (and no activation)."""
    h = jnp.ones((powered[0]["W"].shape[0],), powered[0]["W"].dtype)
    for entry in powered:
        h = h @ entry["W"]
        if "b" in entry:
            h = h + entry["b"]
    return jnp.sum(h)


def path_norm(params: Params, scales: Scales | None = None, p: float = 2) -> jax.Array:
    """||Phi(theta_eff)||_p for p in {1, 2} (any p > 0 works), one forward pass: sum_p |Phi_p|^q is the
    all-ones forward pass of the network with weights |c theta|^q (Gribonval et al. path-norms)."""
    order = real_number(p, "path-norm order p", error=TypeError)
    if order is not None and not (order > 0 and math.isfinite(order)):
        raise ValueError(f"path-norm order p must be a positive finite number, got {p}")
    _check_params(params, finite=False)
    scales = scales or tuple({"W": 1.0, "b": 1.0} for _ in params)
    eff = effective_params(params, scales)
    total = _path_forward(jax.tree.map(lambda v: jnp.abs(v) ** p, eff))
    return total ** (1.0 / p)


def path_gradient_diag(params: Params, scales: Scales | None = None) -> Params:
    """g = diag(G^T G), G = dPhi(c theta)/dtheta, as a pytree shaped like ``params``.

    g_i = d ||Phi||_2^2 / d(theta_i^2): the gradient, with respect to v = theta^2, of the all-ones forward pass
    of the network with weights c^2 v. One forward and one backward pass; exact also where theta_i = 0.
    """
    _check_params(params, finite=False)
    scales = scales or tuple({"W": 1.0, "b": 1.0} for _ in params)
    return _path_gradient_diag(tuple(dict(e) for e in params), _scale_tree(scales))


def _scale_tree(scales: Scales):
    return tuple({k: float(c) for k, c in s.items()} for s in scales)


@jax.jit
def _path_gradient_diag(params: Params, scales) -> Params:
    squares = jax.tree.map(jnp.square, params)

    def total(v):
        return _path_forward(effective_params(v, tuple({k: c * c for k, c in s.items()} for s in scales)))

    return jax.grad(total)(squares)


# -- rescaling -------------------------------------------------------------------------------------------
def rescale(params: Params, z) -> Params:
    """theta' = theta * exp(-(B z) / 2): hidden layer l's neuron h has incoming weights and bias times
    exp(z_l[h] / 2), outgoing weights divided by it. Preserves f (sigma_s positively homogeneous) and Phi.
    A concrete z with NaN or inf is refused (it would turn whole layers into NaN)."""
    if len(z) != len(params) - 1:
        raise ValueError(f"z needs one array per hidden layer ({len(params) - 1}), got {len(z)}")
    for layer, zl in enumerate(z):
        if jnp.shape(zl) != (params[layer]["W"].shape[1],):
            raise ValueError(f"z[{layer}] has shape {jnp.shape(zl)}, expected ({params[layer]['W'].shape[1]},)")
        if not isinstance(zl, jax.core.Tracer):
            bad = np.flatnonzero(~np.isfinite(np.asarray(zl, np.float64)))
            if bad.size:
                raise ValueError(f"z[{layer}] contains NaN or inf (at neurons {bad[:3].tolist()}); cannot rescale")
    return _rescale(tuple(dict(e) for e in params), tuple(z))


@jax.jit
def _rescale(params: Params, z) -> Params:
    out = [dict(entry) for entry in params]
    for layer, zl in enumerate(z):
        lam = jnp.exp(jnp.asarray(zl, params[layer]["W"].dtype) / 2)
        out[layer]["W"] = out[layer]["W"] * lam[None, :]
        if "b" in out[layer]:
            out[layer]["b"] = out[layer]["b"] * lam
        out[layer + 1]["W"] = out[layer + 1]["W"] / lam[:, None]
    return tuple(out)


def random_scaling(key, params: Params, spread: float = 1.0) -> tuple[jax.Array, ...]:
    """z_l ~ N(0, spread^2), one per hidden neuron (for tests and for 'badly scaled' starts); ``spread``
    >= 0 finite (checked where concrete)."""
    value = real_number(spread, "spread", error=TypeError)
    if value is not None and not (math.isfinite(value) and value >= 0):
        raise ValueError(f"spread must be a finite number >= 0, got {spread}")
    keys = jax.random.split(key, len(params) - 1)
    return tuple(spread * jax.random.normal(k, (params[l]["W"].shape[1],), params[l]["W"].dtype)
                 for l, k in enumerate(keys))


# -- the PathCond objective and its exact cyclic coordinate descent ---------------------------------------
def _layout(g: Params):
    """n (number of parameters) and A_l = |in(h)| - |out(h)| for every hidden layer l."""
    n = sum(int(np.prod(jnp.shape(v))) for entry in g for v in entry.values())
    A = [g[l]["W"].shape[0] + ("b" in g[l]) - g[l + 1]["W"].shape[1] for l in range(len(g) - 1)]
    return n, A


def _weighted_sum(g: Params, z) -> jax.Array:
    """S(z) = sum_i g_i exp((B z)_i), by matrix-vector products (no exp of a matrix)."""
    dtype = g[0]["W"].dtype
    L = len(g) - 1
    total = jnp.zeros((), dtype)
    for layer, entry in enumerate(g):
        e_prev = jnp.exp(z[layer - 1]) if layer > 0 else jnp.ones((entry["W"].shape[0],), dtype)
        e_self = jnp.exp(-z[layer]) if layer < L else jnp.ones((entry["W"].shape[1],), dtype)
        total = total + e_prev @ entry["W"] @ e_self
        if "b" in entry:
            total = total + entry["b"] @ e_self
    return total


def pathcond_objective(g: Params, z) -> jax.Array:
    """F(z) = n log(sum_i g_i exp((B z)_i)) - sum_i (B z)_i, with -sum_i (B z)_i = sum_h A_h z_h."""
    n, A = _layout(g)
    linear = sum(A[l] * jnp.sum(z[l]) for l in range(len(z)))
    return n * jnp.log(_weighted_sum(g, z)) + linear


def _positive_root(a, b, c):
    """The positive root of a x^2 + b x + c for a >= 0 >= c, where one exists (see :func:`_coordinate_minimiser`),
    without cancellation: -2c / (b + sqrt(b^2 - 4ac)) if b >= 0, else (-b + sqrt(b^2 - 4ac)) / (2a)."""
    root = jnp.sqrt(b * b - 4 * a * c)
    return jnp.where(b >= 0, -2 * c / jnp.where(b + root > 0, b + root, 1.0),
                     (-b + root) / jnp.where(a > 0, 2 * a, 1.0))


def _layer_masses(g: Params, z, layer: int):
    """in_h = sum_in g_i exp((Bz)_i + z_h) and out_h = sum_out g_i exp((Bz)_i - z_h) for hidden layer l."""
    dtype = g[0]["W"].dtype
    entry, nxt = g[layer], g[layer + 1]
    e_prev = jnp.exp(z[layer - 1]) if layer > 0 else jnp.ones((entry["W"].shape[0],), dtype)
    in_mass = e_prev @ entry["W"]
    if "b" in entry:
        in_mass = in_mass + entry["b"]
    e_next = jnp.exp(-z[layer + 1]) if layer + 1 < len(z) else jnp.ones((nxt["W"].shape[1],), dtype)
    out_mass = nxt["W"] @ e_next
    return in_mass, out_mass


def _coordinate_minimiser(n, A, in_h, out_h, x, total):
    """Exact minimiser of F along z_h: x = exp(z_h) -> (new x, new total).

    Along z_h, F = n log(out_h x + in_h / x + D_h) + A_h z_h + const (D_h >= 0 the rest of the sum), and
    dF/dz_h = 0 is q(x) = a x^2 + b x + c = 0 with a = (A_h + n) out_h >= 0, b = A_h D_h, c = (A_h - n) in_h <= 0
    (|A_h| < n). F is convex in z_h, so a positive root of q is its minimiser, and:

    - in_h > 0, out_h > 0 (a > 0 > c): exactly one positive root;
    - out_h = 0 < in_h (a pruned neuron: incoming weights and bias zero, so no path runs through its outgoing
      weights): x = (n - A_h) in_h / (A_h D_h) if A_h > 0 and D_h > 0; otherwise F decreases monotonically
      as z_h -> +inf;
    - in_h = 0 < out_h (a dead neuron: outgoing weights zero): x = -A_h D_h / ((n + A_h) out_h) if A_h < 0
      and D_h > 0; otherwise F decreases monotonically as z_h -> -inf;
    - in_h = out_h = 0: F = A_h z_h + const, monotone unless A_h = 0 (then constant).

    Where F is monotone along z_h its infimum is at z_h = +-inf (F may be unbounded below there) and no finite
    minimiser exists; z_h is then left unchanged, so the result stays finite (and F is constant when A_h = 0).
    """
    own = out_h * x + in_h / x
    rest = jnp.maximum(total - own, 0.0)
    a, b, c = (A + n) * out_h, A * rest, (A - n) * in_h
    exists = ((c < 0) & ((a > 0) | (b > 0))) | ((c == 0) & (a > 0) & (b < 0))
    one = jnp.ones_like(a)
    x_new = _positive_root(jnp.where(exists, a, one), jnp.where(exists, b, 0 * b), jnp.where(exists, c, -one))
    x_new = jnp.where(exists, x_new, x)
    return x_new, rest + out_h * x_new + in_h / x_new


def _sweep(g: Params, z, n: int, A: list[int]):
    """One cyclic pass over every hidden neuron, layer by layer; returns new z and sum_h |delta z_h|."""
    z = list(z)
    total = _weighted_sum(g, z)  # recomputed each sweep so rounding in the running sum cannot drift
    change = jnp.zeros((), total.dtype)
    for layer in range(len(z)):
        in_mass, out_mass = _layer_masses(g, z, layer)

        def step(carry, item, A_l=A[layer]):
            x_new, carry = _coordinate_minimiser(n, A_l, item[0], item[1], item[2], carry)
            return carry, x_new

        total, x_new = jax.lax.scan(step, total, (in_mass, out_mass, jnp.exp(z[layer])))
        z_new = jnp.log(x_new)
        change = change + jnp.sum(jnp.abs(z_new - z[layer]))
        z[layer] = z_new
    return tuple(z), change


@functools.partial(jax.jit, static_argnames=("max_sweeps",))
def _pathcond_core(g: Params, max_sweeps: int, tol):
    n, A = _layout(g)
    z0 = tuple(jnp.zeros((g[l]["W"].shape[1],), g[l]["W"].dtype) for l in range(len(g) - 1))

    def cond(state):
        _, sweeps, change = state
        return (sweeps < max_sweeps) & (change >= tol)

    def body(state):
        z, sweeps, _ = state
        z, change = _sweep(g, z, n, A)
        return z, sweeps + 1, change

    inf = jnp.asarray(jnp.inf, g[0]["W"].dtype)
    return jax.lax.while_loop(cond, body, (z0, jnp.asarray(0), inf))


def _check_stopping(max_sweeps, tol) -> None:
    if not is_whole(max_sweeps):
        raise ValueError(f"max_sweeps must be a positive integer, got {max_sweeps}")
    if not tol >= 0:
        raise ValueError(f"tol must be >= 0, got {tol}")


def pathcond_from_diag(g: Params, *, max_sweeps: int = DEFAULT_MAX_SWEEPS, tol: float = DEFAULT_TOL) -> Scaling:
    """argmin_z F(z) by exact cyclic coordinate descent from z = 0, given g (jit-compiled).

    Stops after ``max_sweeps`` sweeps or when a sweep moves sum_h |delta z_h| < ``tol``.
    """
    _check_stopping(max_sweeps, tol)
    z, sweeps, change = _pathcond_core(tuple(dict(e) for e in g), int(max_sweeps), tol)
    return Scaling(z, sweeps, change)


def pathcond(
    params: Params,
    model: HomotopyMLP,
    *,
    parameterization: Literal["ntk", "standard"] = "ntk",
    max_sweeps: int = DEFAULT_MAX_SWEEPS,
    tol: float = DEFAULT_TOL,
) -> tuple[Params, Scaling]:
    """PathCond (Lebeurrier, Vayer, Gribonval 2026): params -> (rescaled params, scaling).

    g = diag(G^T G) in the trained coordinates (see the module docstring), then z = argmin F by exact
    cyclic coordinate descent, then theta' = theta * exp(-(B z) / 2). The function computed by the network
    (at every s) and its path-lifting are unchanged. jit/vmap-compatible in ``params`` (NaN/inf parameters
    are refused only when the values are concrete). Use it once before a solver, or every k steps with
    :func:`ntkhom.solvers.rescaling.rescaled_every`.

    Pruned neurons (incoming weights and bias zero) and dead ones (outgoing weights zero) are rescaled to their
    minimiser along z_h where one exists; a neuron along which F is monotone (e.g. pruned with
    |in(h)| <= |out(h)|, where F keeps decreasing as z_h grows) has no finite minimiser and keeps z_h = 0.

    Args:
      params: HomotopyMLP parameters, >= 1 hidden layer, float32 or float64 (the result keeps the dtype).
      model: the network (its activation must be in the ReLU family; its layer scales give c).
      parameterization: ``"ntk"`` (g in ntkhom's stored NTK-parameterization coordinates) or ``"standard"``.
      max_sweeps, tol: stop after ``max_sweeps`` sweeps or when a sweep moves sum_h |delta z_h| < tol.
    """
    check_rescalable(model)
    _check_params(params)
    _check_stopping(max_sweeps, tol)
    scales = _scale_tree(path_scales(model, params, parameterization))
    new, z, sweeps, change = _pathcond_params(tuple(dict(e) for e in params), scales, int(max_sweeps), tol)
    return new, Scaling(z, sweeps, change)


@functools.partial(jax.jit, static_argnames=("max_sweeps",))
def _pathcond_params(params: Params, scales, max_sweeps: int, tol):
    z, sweeps, change = _pathcond_core(_path_gradient_diag(params, scales), max_sweeps, tol)
    return _rescale(params, z), z, sweeps, change


def pathcond_python(g: Params, *, max_sweeps: int = DEFAULT_MAX_SWEEPS, tol: float = DEFAULT_TOL,
                    trace: list | None = None) -> tuple[np.ndarray, ...]:
    """The cyclic coordinate descent of :func:`pathcond_from_diag` as a plain Python loop over neurons in NumPy
    (float64), each one-dimensional problem solved numerically rather than in closed form: an independent
    check of the closed form (in the tests and in ``benchmarks/bench_pathcond.py``).

    For neuron h, F(t) = n log(out_h e^t + in_h e^-t + D_h) + A_h t along z_h = t (masses recomputed from the
    neuron's own row and column), F'(t) = n (out_h e^t - in_h e^-t) / (out_h e^t + in_h e^-t + D_h) + A_h is
    increasing (F is convex), and its zero is bracketed by stepping away from the current z_h in doubling steps
    (up to 256 away) and found by Brent's method (``scipy.optimize.brentq``). If F' does not
    change sign there, F is monotone along z_h and z_h is left unchanged. ``trace`` (a list) receives z after
    every coordinate step.
    """
    from scipy.optimize import brentq

    gW = [np.asarray(e["W"], np.float64) for e in g]
    gb = [np.asarray(e["b"], np.float64) if "b" in e else None for e in g]
    n, A = _layout(g)
    L = len(g) - 1
    z = [np.zeros(gW[l].shape[1]) for l in range(L)]

    def total_sum():
        total = 0.0
        for l in range(L + 1):
            e_prev = np.exp(z[l - 1]) if l > 0 else np.ones(gW[l].shape[0])
            e_self = np.exp(-z[l]) if l < L else np.ones(gW[l].shape[1])
            total += float(e_prev @ gW[l] @ e_self) + (float(gb[l] @ e_self) if gb[l] is not None else 0.0)
        return total

    def minimiser(t0, in_h, out_h, rest, A_h):
        def slope(t):
            up, down = out_h * math.exp(t), in_h * math.exp(-t)
            return n * (up - down) / (up + down + rest) + A_h

        start = slope(t0)
        if start == 0.0:
            return t0
        direction = 1.0 if start < 0 else -1.0
        step = 1.0
        while step <= _PYTHON_SEARCH:
            t1 = t0 + direction * step
            end = slope(t1)
            if end == 0.0:
                return t1
            if (end > 0) == (direction > 0):
                lo, hi = sorted((t0 + direction * step / 2 if step > 1 else t0, t1))
                return brentq(slope, lo, hi, xtol=1e-15, rtol=4 * np.finfo(float).eps)
            step *= 2
        return t0  # F' keeps its sign: F is monotone along z_h, no finite minimiser

    for _ in range(max_sweeps):
        total = total_sum()
        change = 0.0
        for l in range(L):
            e_prev = np.exp(z[l - 1]) if l > 0 else np.ones(gW[l].shape[0])
            e_next = np.exp(-z[l + 1]) if l + 1 < L else np.ones(gW[l + 1].shape[1])
            for h in range(gW[l].shape[1]):
                in_h = float(gW[l][:, h] @ e_prev) + (float(gb[l][h]) if gb[l] is not None else 0.0)
                out_h = float(gW[l + 1][h, :] @ e_next)
                t0 = float(z[l][h])
                rest = max(total - out_h * math.exp(t0) - in_h * math.exp(-t0), 0.0)
                t = minimiser(t0, in_h, out_h, rest, A[l])
                total = rest + out_h * math.exp(t) + in_h * math.exp(-t)
                change += abs(t - t0)
                z[l][h] = t
                if trace is not None:
                    trace.append(tuple(zl.copy() for zl in z))
        if change < tol:
            break
    return tuple(z)


#: How far from the current z_h :func:`pathcond_python` looks for a sign change of F' (e^256 is still finite).
_PYTHON_SEARCH = 256.0


# -- ENorm baseline --------------------------------------------------------------------------------------
@functools.partial(jax.jit, static_argnames=("max_sweeps",))
def _enorm_core(params: Params, max_sweeps: int, tol):
    L = len(params) - 1
    z0 = tuple(jnp.zeros((params[l]["W"].shape[1],), params[l]["W"].dtype) for l in range(L))

    def cond(state):
        _, _, sweeps, change = state
        return (sweeps < max_sweeps) & (change >= tol)

    def body(state):
        p, z, sweeps, _ = state
        z = list(z)
        change = jnp.zeros((), params[0]["W"].dtype)
        for layer in range(L):
            incoming = jnp.sum(p[layer]["W"] ** 2, axis=0) + (p[layer]["b"] ** 2 if "b" in p[layer] else 0.0)
            outgoing = jnp.sum(p[layer + 1]["W"] ** 2, axis=1)
            ok = (incoming > 0) & (outgoing > 0)
            # lambda^4 = ||out||^2 / ||in||^2 minimises lambda^2 ||in||^2 + ||out||^2 / lambda^2; z = 2 log lambda.
            step = jnp.where(ok, 0.5 * (jnp.log(jnp.where(ok, outgoing, 1.0)) - jnp.log(jnp.where(ok, incoming, 1.0))),
                             0.0)
            p = _rescale(p, tuple(step if l == layer else jnp.zeros_like(z[l]) for l in range(L)))
            z[layer] = z[layer] + step
            change = change + jnp.sum(jnp.abs(step))
        return p, tuple(z), sweeps + 1, change

    inf = jnp.asarray(jnp.inf, params[0]["W"].dtype)
    p, z, sweeps, change = jax.lax.while_loop(cond, body, (tuple(params), z0, jnp.asarray(0), inf))
    return p, z, sweeps, change


def enorm(
    params: Params,
    model: HomotopyMLP,
    *,
    max_sweeps: int = DEFAULT_MAX_SWEEPS,
    tol: float = DEFAULT_TOL,
) -> tuple[Params, Scaling]:
    """ENorm (Stock et al., ICLR 2019): params -> (rescaled params, scaling).

    Block coordinate descent, one hidden layer at a time, on sum_i theta_i^2 over the rescaling symmetry, in
    the stored (trained) coordinates, biases counted with the incoming weights: each neuron gets
    lambda_h^4 = ||out_h||^2 / ||in_h||^2 given the other layers. Stops like :func:`pathcond`.
    """
    check_rescalable(model)
    _check_params(params)
    _check_stopping(max_sweeps, tol)
    p, z, sweeps, change = _enorm_core(tuple(dict(e) for e in params), int(max_sweeps), tol)
    return p, Scaling(z, sweeps, change)


# -- the NTK view ----------------------------------------------------------------------------------------
def ntk_conditioning(model: HomotopyMLP, params: Params, x, s=None, y=None) -> dict:
    """lambda_min, lambda_max, condition number (float64, with the numerical floor; None where lambda_min is
    unresolved) and mean eigenvalue of the empirical NTK K over the trained parameters
    (:func:`ntkhom.kernels.network_kernel`, averaged over outputs), for x of shape (n, d).

    With targets y (n, k), also the kernel-target alignment <K, Y Y^T>_F / (||K||_F ||Y Y^T||_F) of the
    column-centred Y (Cristianini et al., NIPS 2001): how much of K's mass lies along the labels; NaN for a
    constant y, whose centred labels are zero.

    A rescaling leaves f unchanged but multiplies the Jacobian by diag(exp(-(B z)/2)), so the NTK
    J diag(.)^2 J^T, its spectrum and hence the linearised training speed change.
    """
    from ntkhom.kernels import network_kernel

    return kernel_conditioning(network_kernel(model, params, x, s=s), y)


def kernel_conditioning(K, y=None) -> dict:
    """The statistics of :func:`ntk_conditioning` for a given (n, n) kernel matrix K (e.g. computed for many
    runs under one compilation).

    The alignment is undefined, and reported as NaN (without a warning), when y is constant over the samples
    (its centred labels are zero) or K is zero; y with NaN or inf is refused."""
    from ntkhom.spectrum import spectrum

    result = spectrum(K)
    summary = result.summary()
    out = {k: summary[k] for k in ("lambda_min", "lambda_max", "condition", "floor", "resolved")}
    out["lambda_mean"] = float(np.mean(result.eigenvalues))
    if y is not None:
        Y = np.asarray(y, np.float64)
        if Y.ndim != 2 or Y.shape[0] != K.shape[0]:
            raise ValueError(f"y must have shape ({K.shape[0]}, k), got {Y.shape}")
        if not np.all(np.isfinite(Y)):
            raise ValueError("y contains NaN or inf")
        Y = Y - Y.mean(axis=0)
        target = Y @ Y.T
        Kn = np.asarray(K, np.float64)
        norms = np.linalg.norm(Kn) * np.linalg.norm(target)
        out["alignment"] = float(np.sum(Kn * target) / norms) if norms > 0 else math.nan
    return out
