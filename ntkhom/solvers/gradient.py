"""Gradient descent and optax optimizers on any network, as a :class:`Solver`.

For a network (anything :func:`ntkhom.networks.as_network` accepts: a :class:`ntkhom.models.HomotopyMLP`, a
stax triple, a Flax module, a function ``f(params, x[, s])``) and a batch ``(x, y)`` (x (n, d), y (n, k)) the
objective is

    L(theta) = loss(apply(params(theta), x, s), y),

where theta are the trained leaves of ``params`` (``trained``; for a ``HomotopyMLP`` by default the hidden
layers in the HRTA / Du et al. setting, every layer with ``trained="all"``) and the rest stays frozen. One
step is an optax step:

    u, opt_state = optimizer.update(grad L(theta), opt_state, theta);   theta <- theta + u.

A named optimizer is built with ``optax.inject_hyperparams``, so its learning rate is an array; the state's
``learning_rate`` is written into it before every step, so ``state._replace(learning_rate=...)`` (or a vmapped
batch of states) changes the step size of a run. An optax optimizer you pass keeps its own learning rate,
exactly as in optax.

With the summed squared loss (the default, the convention of Du et al., ICLR 2019, and of the HRTA paper)
gradient descent moves the training residual by r <- (I - eta K) r to first order, K the empirical NTK, so
:mod:`ntkhom.theory` predicts these runs.

Two-layer ``HomotopyMLP`` networks with the squared loss get their gradient in closed form
(:func:`two_layer_gradient`, no autodiff): the same numbers as autodiff to rounding, pure JAX, so it runs on
CPU, GPU and TPU and ``jax.grad`` goes through a training run (w.r.t. s, for instance).
``benchmarks/bench_training.py`` times it against autodiff.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ntkhom import networks
from ntkhom.activations import check_s, homotopy, homotopy_derivative
from ntkhom.data import check_inputs, check_targets, real_number
from ntkhom.losses import LOSSES, REDUCTIONS, accuracy, check_class_targets
from ntkhom.models import HomotopyMLP
from ntkhom.solvers.base import Solver, default_key, dtype_of, is_concrete

__all__ = ["GradientSolver", "GradientState", "gradient_solver", "optimizer_by_name", "OPTIMIZERS",
           "GRADIENTS", "check_learning_rate", "check_output_shape", "two_layer_gradient", "analytic_gradient_problem"]

OPTIMIZERS = ("gd", "momentum", "nesterov", "adam")
GRADIENTS = ("auto", "analytic", "autodiff")


class GradientState(NamedTuple):
    """State of :class:`GradientSolver`: the common fields, then the optax state."""

    step: jax.Array
    s: jax.Array
    learning_rate: jax.Array
    key: jax.Array
    opt_state: Any


@functools.lru_cache(maxsize=256)
def optimizer_by_name(name: str, learning_rate: float, *, momentum: float = 0.9, b1: float = 0.9, b2: float = 0.999,
                      eps: float = 1e-8) -> optax.GradientTransformation:
    """An optax optimizer whose learning rate is an injected hyperparameter.

    ``"gd"``: theta <- theta - eta g (``optax.sgd``; stochastic only when the driver feeds minibatches).
    ``"momentum"``: heavy ball (Polyak 1964), v <- momentum v + g, theta <- theta - eta v. ``"nesterov"``:
    Nesterov's variant of it. ``"adam"``: Kingma & Ba (2015). Cached: equal arguments give the same object,
    so solvers built with equal settings are equal.
    """
    if name == "sgd":
        raise ValueError("optimizer 'sgd' is not full-batch gradient descent any more: use optimizer='gd' and "
                         "feed minibatches with driver.run(..., batch_size=b) for SGD")
    if name == "gd":
        return optax.inject_hyperparams(optax.sgd)(learning_rate=learning_rate)
    if name in ("momentum", "nesterov"):
        return optax.inject_hyperparams(optax.sgd)(learning_rate=learning_rate, momentum=momentum,
                                                   nesterov=name == "nesterov")
    if name == "adam":
        return optax.inject_hyperparams(optax.adam)(learning_rate=learning_rate, b1=b1, b2=b2, eps=eps)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {OPTIMIZERS} or pass an optax "
                     "GradientTransformation")


def check_learning_rate(learning_rate) -> float:
    """A concrete step size as a float > 0, finite, else a one-line ValueError; a traced one as it is."""
    if isinstance(learning_rate, jax.core.Tracer):  # its value is not known here; nothing to check
        return learning_rate
    value = real_number(learning_rate, "learning_rate")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"learning_rate must be a positive finite number, got {learning_rate}")
    return value


def _injected_learning_rate(opt_state):
    hyperparams = getattr(opt_state, "hyperparams", None)
    if isinstance(hyperparams, dict) and "learning_rate" in hyperparams:
        return hyperparams["learning_rate"]
    return None


def _with_learning_rate(opt_state, learning_rate):
    old = _injected_learning_rate(opt_state)
    if old is None:
        return opt_state
    hyperparams = {**opt_state.hyperparams, "learning_rate": jnp.asarray(learning_rate, jnp.result_type(old))}
    return opt_state._replace(hyperparams=hyperparams)


@dataclasses.dataclass(frozen=True)
class _FrozenMask:
    """A pytree of bools kept hashable (treedef and leaves), so solvers holding it compare by value."""

    treedef: Any
    leaves: tuple[bool, ...]

    def tree(self):
        return jax.tree.unflatten(self.treedef, self.leaves)


def _hashable_trained(trained):
    if trained is None or isinstance(trained, bool | str) or callable(trained):
        return trained
    leaves, treedef = jax.tree.flatten(trained)
    return _FrozenMask(treedef, tuple(bool(leaf) for leaf in leaves))


def check_batch(model: HomotopyMLP | None, batch):
    """(x, y) from a batch, checked where the values are concrete (shapes always)."""
    if not isinstance(batch, tuple | list) or len(batch) != 2:
        raise TypeError(f"batch must be a pair (x, y), got {type(batch).__name__}")
    x, y = batch
    if jnp.ndim(x) != 2 or jnp.ndim(y) != 2 or jnp.shape(x)[0] != jnp.shape(y)[0]:
        raise ValueError(f"batch needs x (n, d) and y (n, k) with the same n, got shapes {jnp.shape(x)} and "
                         f"{jnp.shape(y)}")
    if model is not None and jnp.shape(y)[1] != model.out_dim:
        raise ValueError(f"targets have {jnp.shape(y)[1]} columns but the model has out_dim = {model.out_dim}")
    return x, y


def check_problem(model: HomotopyMLP | None, params, batch, loss: str = "squared"):
    """:func:`check_batch`, the values where concrete (class probabilities for cross-entropy), and the feature
    count against the parameters."""
    x, y = check_batch(model, batch)
    if is_concrete(batch):  # values are checked where they are known, never on tracers
        check_targets(y, check_inputs(x).shape[0])
        if loss == "cross_entropy":
            check_class_targets(y)
    if model is not None and x.shape[1] != params[0]["W"].shape[0]:
        raise ValueError(f"inputs have {x.shape[1]} features but the parameters expect d = {params[0]['W'].shape[0]}")
    return x, y


def check_output_shape(network: networks.Network, params, x, y, s) -> None:
    """The network's output shape on ``x`` against the targets' ``y`` (n, k), from ``jax.eval_shape`` (nothing
    is computed). Needed for networks ntkhom did not build (a function, a stax triple, a Flax module): their
    output width is not known before they run, and an (n, 1) output against (n, k) targets would broadcast."""
    out = jax.eval_shape(lambda p, inputs: network.apply(p, inputs, s if network.accepts_s else None), params, x)
    if out.shape != jnp.shape(y):
        raise ValueError(f"the network's output has shape {out.shape} on x {jnp.shape(x)}, but the targets y have "
                         f"shape {jnp.shape(y)}: it needs one output column per target column")


def analytic_gradient_problem(model: HomotopyMLP, loss: str) -> str:
    """Why the closed-form gradient does not apply ("" when it does)."""
    if loss != "squared":
        return "it is written for the squared loss"
    if model.depth != 1:
        return f"it is written for two-layer networks (one hidden layer), got widths {model.widths}"
    return ""


def two_layer_gradient(model: HomotopyMLP, params, x, y, s, reduction: str = "sum"):
    """Closed-form gradient of L = 1/2 sum_i ||f(x_i) - y_i||^2 (or its mean over i) for a two-layer network.

    With z = a x W + b_std b (a = W_std / sqrt(d)), f = c sigma_s(z) V + c_std c0 (c = W_std / sqrt(m)) and
    r = f - y (divided by n for the mean):

        dL/dV = c sigma_s(z)^T r,   dL/dc0 = c_std sum_i r_i,
        G = c (r V^T) o sigma_s'(z),   dL/dW = a x^T G,   dL/db = b_std sum_i G_i.

    Returns the gradient of ``model.trainable(params)`` (same structure). sigma_s'(z) at z = 0 exactly is
    phi's left slope, where autodiff of ``max`` averages the two; elsewhere both agree to rounding.
    """
    hidden, out = params
    n, d = x.shape
    m = hidden["W"].shape[1]
    (w_std, b_std), (v_std, c_std) = model.layer_scales(d)
    scale_in = w_std / math.sqrt(d)
    scale_out = v_std / math.sqrt(m)
    z = scale_in * (x @ hidden["W"])
    if "b" in hidden:
        z = z + b_std * hidden["b"]
    if model.phi.slopes is not None:  # piecewise linear: sigma_s(z) = sigma_s'(z) z, one pass for both
        slope_neg, slope_pos = model.phi.slopes
        slope = jnp.where(z > 0, 1.0 + s * (slope_pos - 1.0), 1.0 + s * (slope_neg - 1.0)).astype(z.dtype)
        h = slope * z
    else:
        h = homotopy(z, s, model.phi)
        slope = homotopy_derivative(z, s, model.phi)
    f = scale_out * (h @ out["W"])
    if "b" in out:
        f = f + c_std * out["b"]
    r = f - y
    if reduction == "mean":
        r = r / n
    G = scale_out * (r @ out["W"].T) * slope
    grad_hidden = {"W": scale_in * (x.T @ G)}
    if "b" in hidden:
        grad_hidden["b"] = b_std * jnp.sum(G, axis=0)
    grads = (grad_hidden,)
    if model.trained == "all":
        grad_out = {"W": scale_out * (h.T @ r)}
        if "b" in out:
            grad_out["b"] = c_std * jnp.sum(r, axis=0)
        grads = grads + (grad_out,)
    return grads


@dataclasses.dataclass(frozen=True)
class GradientSolver(Solver):
    """Training of a network with an optax optimizer (module docstring); build it with :func:`gradient_solver`.

    State: :class:`GradientState` (``s`` is NaN for a network without a homotopy parameter). Metrics: ``"s"``,
    the gradient norm ``"grad_norm"``, and ``"accuracy"`` for cross-entropy.
    """

    network: networks.Network
    optimizer: optax.GradientTransformation
    label: str
    learning_rate: float | None
    s: float
    loss_name: str = "squared"
    reduction: str = "sum"
    gradient: str = "autodiff"
    trained: Any = None

    @property
    def name(self) -> str:
        return self.label

    @property
    def model(self) -> HomotopyMLP | None:
        return self.network.model

    def _trained(self):
        return self.trained.tree() if isinstance(self.trained, _FrozenMask) else self.trained

    def split(self, params):
        """``(trainable, frozen)`` of ``params`` (None in place of the other part's leaves)."""
        return self.network.partition(params, self._trained())

    def objective(self, params, batch, s):
        x, y = check_batch(self.model, batch)
        out = self.network.apply(params, x, s if self.network.accepts_s else None)
        return LOSSES[self.loss_name](out, y, reduction=self.reduction)

    def gradient_of(self, params, batch, s):
        """Gradient of the objective w.r.t. the trained leaves (None at the frozen ones)."""
        if self.gradient == "analytic":
            x, y = check_batch(self.model, batch)
            grads = two_layer_gradient(self.model, params, x, y, s, self.reduction)
            frozen = tuple(jax.tree.map(lambda _: None, layer) for layer in params[len(grads):])
            return type(params)(tuple(grads) + frozen)  # a list of layers stays a list, as autodiff keeps it
        trainable, frozen = self.split(params)
        return jax.grad(lambda t: self.objective(networks.combine(t, frozen), batch, s))(trainable)

    def init(self, params, batch) -> GradientState:
        x, y = check_problem(self.model, params, batch, self.loss_name)
        if self.model is None:  # a HomotopyMLP's out_dim was checked; other networks show theirs when traced
            check_output_shape(self.network, params, x, y, self.s)
        dtype = dtype_of(params)
        opt_state = self.optimizer.init(self.split(params)[0])
        injected = _injected_learning_rate(opt_state)
        learning_rate = jnp.nan if injected is None else injected
        return GradientState(step=jnp.zeros((), jnp.int32), s=jnp.asarray(self.s, dtype),
                             learning_rate=jnp.asarray(learning_rate, dtype), key=default_key(),
                             opt_state=opt_state)

    def step(self, params, state, batch):
        trainable, frozen = self.split(params)
        grads = self.gradient_of(params, batch, state.s)
        opt_state = _with_learning_rate(state.opt_state, state.learning_rate)
        updates, opt_state = self.optimizer.update(grads, opt_state, trainable)
        trainable = optax.apply_updates(trainable, updates)
        return networks.combine(trainable, frozen), state._replace(step=state.step + 1, opt_state=opt_state)

    def loss(self, params, state, batch):
        return self.objective(params, batch, state.s)

    def metrics(self, params, state, batch):
        out = {"s": state.s, "grad_norm": optax.tree.norm(self.gradient_of(params, batch, state.s))}
        if self.loss_name == "cross_entropy":
            x, y = check_batch(self.model, batch)
            out["accuracy"] = accuracy(self.network.apply(params, x, state.s if self.network.accepts_s else None),
                                       y)
        return out


def gradient_solver(
    model,
    *,
    learning_rate: float | None = None,
    trained=None,
    s: float | None = None,
    optimizer: str | optax.GradientTransformation = "gd",
    loss: str = "squared",
    reduction: str | None = None,
    gradient: str = "auto",
) -> GradientSolver:
    """Training of ``model`` with ``optimizer``; the data come with every call (module docstring).

    Args:
      model: a network: a :class:`HomotopyMLP`, or anything :func:`ntkhom.networks.as_network` accepts.
      trained: which leaves move: None (the network's default; ``model.trained`` for a ``HomotopyMLP``), a
        pytree of bools with the structure of params, or a predicate on the leaf path.
      learning_rate: the step size eta > 0 of a named optimizer (``state.learning_rate``); must be None
        with an optax optimizer, which carries its own.
      s: initial ``state.s`` (default ``model.s``; needed for other networks that take s, ignored by
        networks that do not).
      optimizer: a name in :data:`OPTIMIZERS` or an optax ``GradientTransformation`` (e.g.
        ``optax.adam(1e-3)``, used exactly as optax would; build it with ``optax.inject_hyperparams`` to
        let ``state.learning_rate`` drive its learning rate).
      loss: ``"squared"`` (1/2 sum_i ||f(x_i) - y_i||^2 by default, the NTK convention) or
        ``"cross_entropy"`` (y one-hot (n, classes), mean over samples by default).
      reduction: ``"sum"`` or ``"mean"`` over samples.
      gradient: ``"analytic"`` (closed form, :func:`two_layer_gradient`: two-layer ``HomotopyMLP`` with its
        default trained layers, squared loss),
        ``"autodiff"`` (``jax.grad``) or ``"auto"`` (analytic where it applies; both give the same numbers).

    Returns:
      a :class:`GradientSolver`; equal arguments give equal solvers (one compilation in the driver).
    """
    network = networks.as_network(model)
    homotopy_model = network.model
    if homotopy_model is not None:
        s = homotopy_model.s if s is None else check_s(s)
    elif network.accepts_s:
        if s is None:
            raise ValueError("this network takes a homotopy parameter: give s=")
        s = check_s(s)
    else:
        if s is not None:
            raise ValueError("s was given, but this network takes no homotopy parameter")
        s = float("nan")
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of {tuple(LOSSES)}")
    reduction = reduction or ("sum" if loss == "squared" else "mean")
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; choose one of {REDUCTIONS}")
    if gradient not in GRADIENTS:
        raise ValueError(f"unknown gradient {gradient!r}; choose one of {GRADIENTS}")
    problem = ("it needs an ntkhom HomotopyMLP" if homotopy_model is None else
               "it moves the model's default trained layers only" if trained is not None else
               analytic_gradient_problem(homotopy_model, loss))
    if gradient == "analytic" and problem:
        raise ValueError(f"gradient='analytic' does not apply: {problem}")
    gradient = "analytic" if gradient == "auto" and not problem else ("autodiff" if gradient == "auto" else gradient)
    if isinstance(optimizer, str):
        if learning_rate is None:
            raise ValueError(f"optimizer {optimizer!r} needs a learning_rate")
        learning_rate = check_learning_rate(learning_rate)
        label = optimizer
        optimizer = optimizer_by_name(optimizer, learning_rate)
    elif isinstance(optimizer, optax.GradientTransformation):
        if learning_rate is not None:
            raise ValueError("learning_rate must be None with an optax optimizer: it carries its own (build it "
                             "with optax.inject_hyperparams to vary it per run)")
        label = "optax"
    else:
        raise TypeError(f"optimizer must be a name in {OPTIMIZERS} or an optax GradientTransformation, got "
                        f"{type(optimizer).__name__}")
    return GradientSolver(network=network, optimizer=optimizer, label=label, learning_rate=learning_rate, s=s,
                          loss_name=loss, reduction=reduction, gradient=gradient,
                          trained=_hashable_trained(trained))
