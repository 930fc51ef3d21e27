"""TIAM: a triple-inertial alternating minimization for MLPs on the layer-split penalty formulation.

A reconstruction of TIAM (Yan, Xu, Wang, Peng 2025); the paper's code is not public, so the formulation
below is ours and is what the tests check. The network is a :class:`ntkhom.models.HomotopyMLP` with
T = depth + 1 dense layers, read in its effective weights W_l = (W_std / sqrt(fan_in)) W, b_l = b_std b,
with a monotone piecewise-linear activation f = sigma_s (ReLU or leaky ReLU with 0 <= s <= 1). With
a_0 = X (n, d) and rows as samples, the problem (as in DLAM / mDLAM, Wang et al. 2022) is

    min  R(z_T; Y) + sum_l [ (rho/2) ||z_l - a_{l-1} W_l - b_l||^2 + (mu/2) ||W_l||^2 ]
    s.t. a_l - eps <= f(z_l) <= a_l + eps   elementwise, for the hidden layers l < T,

R the summed squared loss 1/2 sum ||z_T - y||^2 or the summed cross-entropy. Blocks, in Gauss-Seidel
order for l = 1..T: W_l, b_l, z_l, then a_l (hidden layers). Each block u with sub-objective F_u (the terms
that contain u, every other block at its latest value) and constraint set C_u is updated by

    u~ = u^k + p1 (u^k - u^{k-1})                   (base point)
    u^ = u^k + p2 (u^k - u^{k-1})                   (gradient point)
    u+ = Proj_C( u~ - grad F_u(u^) / tau )          tau doubled from its last value / 2 until
         F_u(u+) <= F_u(u^) + <grad F_u(u^), u+ - u^> + (tau/2) ||u+ - u^||^2   (no matrix inverse)
    u^{k+1} = Proj_C( u+ + p3 (u+ - u^k) )          (third extrapolation)

The final projection is ours: it keeps every block feasible, so the z-block's constraint set (which depends
on a_l) is never empty. Constraint sets: for a_l the box [f(z_l) - eps, f(z_l) + eps]; for z_l the
preimage f^{-1}([a_l - eps, a_l + eps]), an interval because f is monotone (for ReLU an upper end below 0,
possible only for an infeasible a_l, is moved to 0). W, b and z_T are unconstrained. eps follows
eps_k = max(eps_min, eps_0 decay^k). Default eps_0 = eps_min = 1e-3 (a constant eps): with mDLAM's schedule
(100, 1/2, 1e-3) the loose early constraints let a_l drift far from f(z_l) and the network's own loss
ended near 33 (half the summed square error per sample) instead of 0.23 on diabetes (n = 300, width 32,
300 iterations; eps_0 = 1 gave 6.4), so the schedule is kept but starts tight.

``p1 = p2 = p3 = 0`` is plain alternating minimization (mDLAM-like projected-gradient blocks; also
available as :func:`plain_am`, a separate code path without history); ``p3 = 0`` is iPALM's two inertial
steps (Pock and Sabach 2016, :func:`ipalm`). The p's live in the state, so a vmapped batch can vary them.
Default p1 = p2 = 0.3, p3 = 0.2: the paper's values are unknown; ``ntkhom reproduce tiam`` measures others.

The solver's ``params`` are the model's parameters (so the trained network is ``model.apply(params, x)``);
the auxiliary z, a, the inertial history and the step sizes live in the state (:class:`TiamState`); the data
``(x, y)`` come with every call. ``loss`` is the network's
training loss R(f(X); Y) with the summed reduction.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ntkhom.data import check_inputs, check_targets
from ntkhom.losses import cross_entropy, squared_loss
from ntkhom.models import HomotopyMLP
from ntkhom.solvers.base import Solver, default_key, dtype_of, is_concrete

__all__ = ["TIAM_LOSSES", "TIAM", "TiamState", "tiam", "ipalm", "plain_am", "block_update", "plain_block_update",
           "tiam_model"]

TIAM_LOSSES = ("squared", "cross_entropy")
#: Relative slack in the majorization test (float64 rounding of F near convergence).
MAJORIZATION_SLACK = 1e-12
MAX_DOUBLINGS = 60


def tiam_model(widths, s: float = 1.0, *, phi="leaky_relu", out_dim: int = 1) -> HomotopyMLP:
    """An MLP TIAM trains: biases in every layer, Gaussian init, every layer trained."""
    return HomotopyMLP(widths=tuple(widths), s=s, phi=phi, out_dim=out_dim, b_std=1.0, out_b_std=1.0,
                       output_init="normal", trained="all")


# -- one block update --------------------------------------------------------------------------------------
def _majorization_gap(F, u_hat, F_hat, g, u_plus, tau):
    """F(u+) - [F(u^) + <g, u+ - u^> + tau/2 ||u+ - u^||^2], relative to 1 + |F(u^)|."""
    step = u_plus - u_hat
    bound = F_hat + jnp.sum(g * step) + 0.5 * tau * jnp.sum(step * step)
    return (F(u_plus) - bound) / (1.0 + jnp.abs(F_hat))


def block_update(F: Callable, project: Callable, u, u_prev, tau_start, p1, p2, p3):
    """TIAM's inertial, backtracked projected-gradient update of one block (module docstring).

    Returns ``(u_next, u_plus, tau, gap)``: the extrapolated new iterate, the point u+ the majorization was
    checked at, the accepted tau, and the relative majorization gap (<= MAJORIZATION_SLACK when accepted).
    """
    u_base = u + p1 * (u - u_prev)
    u_hat = u + p2 * (u - u_prev)
    F_hat, g = jax.value_and_grad(F)(u_hat)

    def trial(tau):
        u_plus = project(u_base - g / tau)
        return u_plus, _majorization_gap(F, u_hat, F_hat, g, u_plus, tau)

    def cond(carry):
        _, _, gap, k = carry
        return (gap > MAJORIZATION_SLACK) & (k < MAX_DOUBLINGS)

    def body(carry):
        tau, _, _, k = carry
        tau = 2.0 * tau
        u_plus, gap = trial(tau)
        return tau, u_plus, gap, k + 1

    u_plus, gap = trial(tau_start)
    tau, u_plus, gap, _ = jax.lax.while_loop(cond, body, (tau_start, u_plus, gap, 0))
    u_next = project(u_plus + p3 * (u_plus - u))
    return u_next, u_plus, tau, gap


def plain_block_update(F: Callable, project: Callable, u, tau_start):
    """Projected-gradient update without inertia, tau backtracked as in :func:`block_update`.

    Written separately from :func:`block_update` so that "TIAM with p1 = p2 = p3 = 0 is plain AM" is a
    statement two code paths can disagree on. Returns ``(u_next, tau, gap)``.
    """
    F_u, g = jax.value_and_grad(F)(u)

    def trial(tau):
        u_next = project(u - g / tau)
        return u_next, _majorization_gap(F, u, F_u, g, u_next, tau)

    def cond(carry):
        _, _, gap, k = carry
        return (gap > MAJORIZATION_SLACK) & (k < MAX_DOUBLINGS)

    def body(carry):
        tau, _, _, k = carry
        tau = 2.0 * tau
        u_next, gap = trial(tau)
        return tau, u_next, gap, k + 1

    u_next, gap = trial(tau_start)
    tau, u_next, gap, _ = jax.lax.while_loop(cond, body, (tau_start, u_next, gap, 0))
    return u_next, tau, gap


# -- the layer-split problem -------------------------------------------------------------------------------
def _effective(model: HomotopyMLP, params):
    d = params[0]["W"].shape[0]
    Ws, bs = [], []
    for entry, (w_std, b_std) in zip(params, model.layer_scales(d), strict=True):
        Ws.append((w_std / math.sqrt(entry["W"].shape[0])) * entry["W"])
        bs.append(b_std * entry["b"] if "b" in entry else None)
    return Ws, bs


def _to_params(model: HomotopyMLP, Ws, bs, params):
    d = params[0]["W"].shape[0]
    out = []
    for W, b, entry, (w_std, b_std) in zip(Ws, bs, params, model.layer_scales(d), strict=True):
        new = {"W": W / (w_std / math.sqrt(entry["W"].shape[0]))}
        if b is not None:
            new["b"] = b / b_std
        out.append(new)
    return tuple(out)


def _slopes(model: HomotopyMLP, s):
    a, b = model.phi.slopes
    return 1.0 + s * (a - 1.0), 1.0 + s * (b - 1.0)


def _activation(z, slope_neg, slope_pos):
    return jnp.where(z > 0, slope_pos, slope_neg) * z


def _preimage_projection(a, eps, slope_neg, slope_pos):
    """Projection onto {z : f(z) in [a - eps, a + eps]} for f with slopes 0 <= slope_neg, 0 < slope_pos."""

    def inverse(t, empty_value):
        negative = jnp.where(slope_neg > 0, t / jnp.where(slope_neg > 0, slope_neg, 1.0), empty_value)
        return jnp.where(t >= 0, t / slope_pos, negative)

    low = inverse(a - eps, -jnp.inf)
    high = inverse(a + eps, 0.0)
    return lambda z: jnp.clip(z, low, high)


def _identity(u):
    return u


def _reduce_loss(kind: str):
    if kind == "squared":
        return lambda pred, y: squared_loss(pred, y, reduction="sum")
    return lambda pred, y: cross_entropy(pred, y, reduction="sum")


class TiamState(NamedTuple):
    """State of TIAM and plain AM: the common fields (``learning_rate`` is NaN: the block steps 1 / tau are
    found by backtracking), then the auxiliary blocks z and a, the step sizes tau per block, eps, the last
    iteration's largest majorization gap, and (inertial only, else None) the previous blocks and p."""

    step: jax.Array
    s: jax.Array
    learning_rate: jax.Array
    key: jax.Array
    z: tuple
    a: tuple
    tau: dict
    eps: jax.Array
    majorization_gap: jax.Array
    previous: dict | None
    p: jax.Array | None


@dataclasses.dataclass(frozen=True)
class TIAM(Solver):
    """TIAM, iPALM or plain AM on the layer-split problem (module docstring); build it with :func:`tiam`,
    :func:`ipalm` or :func:`plain_am`."""

    model: HomotopyMLP
    loss_kind: str
    rho: float
    mu: float
    eps0: float
    eps_decay: float
    eps_min: float
    p: tuple[float, float, float]
    inertial: bool
    label: str

    @property
    def name(self) -> str:
        return self.label

    @property
    def layers(self) -> int:
        return self.model.depth + 1

    def _data(self, batch):
        if not isinstance(batch, tuple | list) or len(batch) != 2:
            raise TypeError(f"batch must be a pair (x, y), got {type(batch).__name__}")
        x, y = batch
        if is_concrete(batch):
            x = check_inputs(x, "x")
            if x.shape[0] < 2:
                raise ValueError(f"alternating minimization needs at least 2 samples, got n = {x.shape[0]}")
            y = check_targets(y, x.shape[0], "y")
        if jnp.ndim(y) != 2 or jnp.shape(y)[1] != self.model.out_dim:
            raise ValueError(f"targets must be (n, out_dim = {self.model.out_dim}), got shape {jnp.shape(y)}")
        return x, y.astype(x.dtype)

    def _forward(self, Ws, bs, s, x):
        slope_neg, slope_pos = _slopes(self.model, s)
        zs, acts = [], []
        h = x
        for layer in range(self.layers):
            z = h @ Ws[layer] + (bs[layer] if bs[layer] is not None else 0.0)
            zs.append(z)
            if layer < self.layers - 1:
                h = _activation(z, slope_neg, slope_pos)
                acts.append(h)
        return zs, acts

    def _objective(self, Ws, bs, zs, acts, x, y):
        """The penalty objective (constraints checked separately)."""
        rho, mu = self.rho, self.mu
        value = _reduce_loss(self.loss_kind)(zs[-1], y)
        for layer in range(self.layers):
            inputs = x if layer == 0 else acts[layer - 1]
            bias = bs[layer] if bs[layer] is not None else 0.0
            value += 0.5 * rho * jnp.sum((zs[layer] - inputs @ Ws[layer] - bias) ** 2)
            value += 0.5 * mu * jnp.sum(Ws[layer] ** 2)
        return value

    def init(self, params, batch) -> TiamState:
        x, _ = self._data(batch)
        if params[0]["W"].shape[0] != x.shape[1]:
            d = params[0]["W"].shape[0]
            raise ValueError(f"parameters expect d = {d} but x has {x.shape[1]} features")
        dtype = dtype_of(params)
        Ws, bs = _effective(self.model, params)
        zs, acts = self._forward(Ws, bs, self.model.s, x)
        blocks = {"W": tuple(Ws), "b": tuple(bs), "z": tuple(zs), "a": tuple(acts)}
        return TiamState(
            step=jnp.zeros((), jnp.int32), s=jnp.asarray(self.model.s, dtype),
            learning_rate=jnp.asarray(jnp.nan, dtype), key=default_key(),
            z=tuple(zs), a=tuple(acts), tau=jax.tree.map(lambda u: jnp.ones((), dtype), blocks),
            eps=jnp.asarray(self.eps0, dtype), majorization_gap=jnp.asarray(-jnp.inf, dtype),
            previous=blocks if self.inertial else None,
            p=jnp.asarray(self.p, dtype) if self.inertial else None,
        )

    def step(self, params, state, batch):
        x, y = self._data(batch)
        rho, mu, T, inertial = self.rho, self.mu, self.layers, self.inertial
        R = _reduce_loss(self.loss_kind)
        Ws, bs = _effective(self.model, params)
        Ws, bs = list(Ws), list(bs)
        zs, acts = list(state.z), list(state.a)
        eps = state.eps
        slope_neg, slope_pos = _slopes(self.model, state.s)
        tau = {key: list(value) for key, value in state.tau.items()}
        previous = state.previous
        gaps = []
        new_previous = {"W": tuple(Ws), "b": tuple(bs), "z": tuple(zs), "a": tuple(acts)}

        def update(kind, layer, F, project, u):
            tau_start = 0.5 * tau[kind][layer]
            if inertial:
                p1, p2, p3 = state.p[0], state.p[1], state.p[2]
                u_next, _, tau_used, gap = block_update(F, project, u, previous[kind][layer], tau_start,
                                                        p1, p2, p3)
            else:
                u_next, tau_used, gap = plain_block_update(F, project, u, tau_start)
            tau[kind][layer] = tau_used
            gaps.append(gap)
            return u_next

        for layer in range(T):
            inputs = x if layer == 0 else acts[layer - 1]

            def bias_of(layer=layer):
                return bs[layer] if bs[layer] is not None else 0.0

            def coupling_W(W, layer=layer, inputs=inputs):
                return (0.5 * rho * jnp.sum((zs[layer] - inputs @ W - bias_of(layer)) ** 2)
                        + 0.5 * mu * jnp.sum(W**2))

            Ws[layer] = update("W", layer, coupling_W, _identity, Ws[layer])
            if bs[layer] is not None:
                def coupling_b(b, layer=layer, inputs=inputs):
                    return 0.5 * rho * jnp.sum((zs[layer] - inputs @ Ws[layer] - b) ** 2)

                bs[layer] = update("b", layer, coupling_b, _identity, bs[layer])
            affine = inputs @ Ws[layer] + bias_of(layer)
            if layer < T - 1:
                def coupling_z(z, affine=affine):
                    return 0.5 * rho * jnp.sum((z - affine) ** 2)

                project = _preimage_projection(acts[layer], eps, slope_neg, slope_pos)
                zs[layer] = update("z", layer, coupling_z, project, zs[layer])

                def coupling_a(a, layer=layer):
                    nxt = layer + 1
                    return 0.5 * rho * jnp.sum((zs[nxt] - a @ Ws[nxt] - bias_of(nxt)) ** 2)

                f_z = _activation(zs[layer], slope_neg, slope_pos)

                def box(a, f_z=f_z):
                    return jnp.clip(a, f_z - eps, f_z + eps)

                acts[layer] = update("a", layer, coupling_a, box, acts[layer])
            else:
                def output_z(z, affine=affine):
                    return R(z, y) + 0.5 * rho * jnp.sum((z - affine) ** 2)

                zs[layer] = update("z", layer, output_z, _identity, zs[layer])

        new_state = state._replace(
            step=state.step + 1,
            z=tuple(zs), a=tuple(acts),
            tau={key: tuple(value) for key, value in tau.items()},
            eps=jnp.maximum(self.eps_min, eps * self.eps_decay),
            majorization_gap=jnp.max(jnp.stack(gaps)),
            previous=new_previous if inertial else None,
        )
        return _to_params(self.model, Ws, bs, params), new_state

    def loss(self, params, state, batch):
        x, y = self._data(batch)
        return _reduce_loss(self.loss_kind)(self.model.apply(params, x, state.s), y)

    def metrics(self, params, state, batch):
        x, y = self._data(batch)
        Ws, bs = _effective(self.model, params)
        slope_neg, slope_pos = _slopes(self.model, state.s)
        violation = jnp.zeros((), x.dtype)
        for z, a in zip(state.z[:-1], state.a, strict=True):
            violation = jnp.maximum(violation, jnp.max(jnp.abs(_activation(z, slope_neg, slope_pos) - a)))
        return {
            "penalty_objective": self._objective(Ws, bs, state.z, state.a, x, y),
            "eps": state.eps,
            "constraint_violation": violation,
            "majorization_gap": state.majorization_gap,
        }


def _make(model, *, loss, rho, mu, eps0, eps_decay, eps_min, p, inertial, name) -> TIAM:
    if not isinstance(model, HomotopyMLP):
        raise TypeError(f"model must be an ntkhom.models.HomotopyMLP, got {type(model).__name__}")
    if loss not in TIAM_LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of {TIAM_LOSSES}")
    if not model.phi.positively_homogeneous:
        raise ValueError(f"TIAM needs a piecewise-linear activation (ReLU family), got {model.phi.name}")
    slope_neg, slope_pos = _slopes(model, model.s)
    if not (slope_neg >= 0 and slope_pos > 0):
        raise ValueError(
            f"TIAM's constraint projection needs a monotone activation; sigma_s with s = {model.s:g} and "
            f"phi = {model.phi.name} has slopes ({slope_neg:g}, {slope_pos:g}) (use 0 <= s <= 1)")
    for label, value in (("rho", rho), ("eps0", eps0), ("eps_min", eps_min)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{label} must be a positive finite number, got {value}")
    if not (math.isfinite(mu) and mu >= 0):
        raise ValueError(f"mu must be a finite number >= 0, got {mu}")
    if not 0 < eps_decay <= 1:
        raise ValueError(f"eps_decay must be in (0, 1], got {eps_decay}")
    for label, value in zip(("p1", "p2", "p3"), p, strict=True):
        if not (math.isfinite(value) and 0 <= value < 1):
            raise ValueError(f"{label} must be in [0, 1), got {value}")
    return TIAM(model=model, loss_kind=loss, rho=float(rho), mu=float(mu), eps0=float(eps0),
                eps_decay=float(eps_decay), eps_min=float(eps_min), p=tuple(float(v) for v in p),
                inertial=inertial, label=name)


def tiam(
    model: HomotopyMLP,
    *,
    loss: str = "squared",
    p1: float = 0.3,
    p2: float = 0.3,
    p3: float = 0.2,
    rho: float = 1.0,
    mu: float = 1e-3,
    eps0: float = 1e-3,
    eps_decay: float = 0.5,
    eps_min: float = 1e-3,
) -> Solver:
    """TIAM (module docstring) as an ntkhom :class:`Solver`.

    Args:
      model: a :class:`HomotopyMLP` with a monotone piecewise-linear activation (e.g. :func:`tiam_model`).
      loss: ``"squared"`` (1/2 sum ||f - y||^2) or ``"cross_entropy"`` (summed).
      p1, p2, p3: the three extrapolation weights in [0, 1) (base point, gradient point, after the update).
      rho, mu: coupling and weight-decay weights; eps0, eps_decay, eps_min: the eps schedule.
    """
    return _make(model, loss=loss, rho=rho, mu=mu, eps0=eps0, eps_decay=eps_decay, eps_min=eps_min,
                 p=(p1, p2, p3), inertial=True, name=f"tiam(p={p1:g},{p2:g},{p3:g})")


def ipalm(model: HomotopyMLP, *, p1: float = 0.3, p2: float = 0.3, **kwargs) -> TIAM:
    """TIAM without the third extrapolation (p3 = 0): iPALM's two inertial steps (Pock and Sabach 2016)."""
    solver = tiam(model, p1=p1, p2=p2, p3=0.0, **kwargs)
    return dataclasses.replace(solver, label=f"ipalm(p={p1:g},{p2:g})")


def plain_am(model: HomotopyMLP, *, loss: str = "squared", rho: float = 1.0, mu: float = 1e-3,
             eps0: float = 1e-3, eps_decay: float = 0.5, eps_min: float = 1e-3) -> Solver:
    """Alternating minimization without inertia (mDLAM-like), on the same problem and block order as TIAM."""
    return _make(model, loss=loss, rho=rho, mu=mu, eps0=eps0, eps_decay=eps_decay, eps_min=eps_min,
                 p=(0.0, 0.0, 0.0), inertial=False, name="plain-am")
