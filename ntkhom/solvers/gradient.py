"""Full-batch gradient descent and optax optimizers on homotopy networks, as :class:`Solver` objects.

For a :class:`ntkhom.models.HomotopyMLP` ``model``, inputs ``x`` (n, d) and targets ``y`` (n, k), the
objective is

    L(theta) = loss(model.apply(params(theta), x, s), y),

where theta = ``model.trainable(params)`` (the hidden layers in the HRTA / Du et al. setting, every layer
with ``trained="all"``) and the rest of ``params`` stays frozen. One step is

    u = optimizer.update(grad L(theta), opt_state, theta);   theta <- theta + learning_rate * u,

with the optimizer a direction-producing optax ``GradientTransformation`` (:func:`optimizer_by_name`:
``"gd"`` gives u = -grad, so the step is plain gradient descent theta <- theta - eta grad L). The homotopy
parameter ``s`` and ``learning_rate`` are arrays in the state, so ``jax.vmap`` over a batch of states with
different s or learning rates runs a grid under one compilation (:func:`ntkhom.solvers.driver.run_batch`).

With the summed squared loss (the default, the convention of Du et al., ICLR 2019, and of the HRTA paper)
gradient descent moves the training residual by r <- (I - eta K) r to first order, K the empirical NTK, so
:mod:`ntkhom.theory` predicts these runs.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

from ntkhom.activations import check_s
from ntkhom.data import check_inputs, check_targets
from ntkhom.losses import LOSSES, REDUCTIONS, accuracy
from ntkhom.models import HomotopyMLP
from ntkhom.solvers.base import Solver

__all__ = ["gradient_solver", "optimizer_by_name", "OPTIMIZERS", "network_loss_fn", "check_learning_rate",
           "fused_step_problem", "FUSED_MAX_WORK"]

OPTIMIZERS = ("gd", "sgd", "momentum", "nesterov", "adam")
# fused=None uses the fused CPU kernel up to this n * d * m. On 2 cores a lone step measured 1.3x to 4x faster
# than XLA's from 1e6 to 2e7 (n = 100, d = 10, m = 1000 up to 2000 x 10 x 1000), about equal at 4e7, and
# 1.3x to 1.5x slower at 2.6e8 and 1e9 (n = 4000, d = 32, m = 8192).
FUSED_MAX_WORK = 2**24


def optimizer_by_name(name: str, *, momentum: float = 0.9, b1: float = 0.9, b2: float = 0.999,
                      eps: float = 1e-8) -> optax.GradientTransformation:
    """A direction-producing optax transformation (no step size; the solver multiplies by the state's
    learning rate).

    ``"gd"``/``"sgd"`` (full batch, so the same): u = -g. ``"momentum"``: heavy ball (Polyak 1964),
    v <- momentum v + g, u = -v. ``"nesterov"``: Nesterov's variant of it. ``"adam"``: Kingma & Ba (2015)
    u = -m_hat / (sqrt(v_hat) + eps).
    """
    if name in ("gd", "sgd"):
        return optax.scale(-1.0)
    if name == "momentum":
        return optax.chain(optax.trace(decay=momentum), optax.scale(-1.0))
    if name == "nesterov":
        return optax.chain(optax.trace(decay=momentum, nesterov=True), optax.scale(-1.0))
    if name == "adam":
        return optax.chain(optax.scale_by_adam(b1=b1, b2=b2, eps=eps), optax.scale(-1.0))
    raise ValueError(f"unknown optimizer {name!r}; choose one of {OPTIMIZERS} or pass an optax "
                     "GradientTransformation")


def _as_optimizer(optimizer) -> optax.GradientTransformation:
    if isinstance(optimizer, str):
        return optimizer_by_name(optimizer)
    if isinstance(optimizer, optax.GradientTransformation):
        return optimizer
    raise ValueError(f"optimizer must be a name in {OPTIMIZERS} or an optax GradientTransformation, "
                     f"got {type(optimizer).__name__}")


def check_learning_rate(learning_rate) -> float:
    try:
        value = float(learning_rate)
    except TypeError as error:
        raise ValueError(f"learning_rate must be a positive number, got {learning_rate!r}") from error
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"learning_rate must be a positive finite number, got {learning_rate}")
    return value


def network_loss_fn(model: HomotopyMLP, x, y, loss: str = "squared", reduction: str | None = None):
    """(validated x, y, f) with f(params, s) = the scalar training loss of ``model`` at homotopy parameter s.

    ``loss``: ``"squared"`` (1/2 sum_i ||f(x_i) - y_i||^2 by default, the NTK convention) or
    ``"cross_entropy"`` (y one-hot (n, classes), mean over samples by default).
    """
    if not isinstance(model, HomotopyMLP):
        raise ValueError(f"model must be an ntkhom.models.HomotopyMLP, got {type(model).__name__}")
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of {tuple(LOSSES)}")
    reduction = reduction or ("sum" if loss == "squared" else "mean")
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; choose one of {REDUCTIONS}")
    x = check_inputs(x)
    y = check_targets(y, x.shape[0])
    if y.shape[1] != model.out_dim:
        raise ValueError(f"targets have {y.shape[1]} columns but the model has out_dim = {model.out_dim}")
    loss_fn = LOSSES[loss]

    def objective(params, s):
        return loss_fn(model.apply(params, x, s), y, reduction=reduction)

    return x, y, objective


def fused_step_problem(model: HomotopyMLP, x, optimizer, loss: str) -> str:
    """Why the fused CPU step (:mod:`ntkhom.solvers.native`) cannot run this training ("" when it can)."""
    from ntkhom.solvers import native

    if not isinstance(optimizer, str) or optimizer not in ("gd", "sgd"):
        return "it does plain gradient descent only (optimizer 'gd' or 'sgd')"
    if loss != "squared":
        return "it does the squared loss only"
    if model.depth != 1 or model.out_dim != 1:
        return "it needs a two-layer network with one output"
    if model.trained != "hidden":
        return "it trains the hidden layer only (trained='hidden')"
    if model.b_std is not None:
        return "it has no hidden biases"
    if model.phi.slopes is None:
        return f"it needs a ReLU-family phi (relu, leaky_relu, abs), got {model.phi.name!r}"
    if not 1 <= x.shape[1] <= native.MAX_INPUT_DIM:
        return f"it needs input dimension d <= {native.MAX_INPUT_DIM}, got {x.shape[1]}"
    if x.dtype not in (jnp.float32, jnp.float64):
        return f"it needs float32 or float64 inputs, got {x.dtype}"
    if not native.available():
        return native.unavailable_reason()
    return ""


def gradient_solver(
    model: HomotopyMLP,
    x,
    y,
    *,
    learning_rate: float,
    s: float | None = None,
    optimizer: str | optax.GradientTransformation = "gd",
    loss: str = "squared",
    reduction: str | None = None,
    fused: bool | None = None,
) -> Solver:
    """Full-batch training of ``model`` on (x, y) with ``optimizer``; see the module docstring.

    Args:
      model: a homotopy network; only ``model.trainable(params)`` is moved.
      x: (n, d) inputs; y: (n, out_dim) targets (one-hot for cross-entropy).
      learning_rate: initial value of ``state["learning_rate"]`` (eta > 0).
      s: initial ``state["s"]`` (default ``model.s``).
      optimizer: a name in :data:`OPTIMIZERS` or a direction-producing optax transformation (for a full optax
        optimizer such as ``optax.adam(1e-3)``, which already includes its step size, use learning_rate=1).
      loss, reduction: see :func:`network_loss_fn`.
      fused: compute each GD step with the fused CPU kernel of :mod:`ntkhom.solvers.native` (same step,
        other rounding). ``None`` (default): where it applies (:func:`fused_step_problem` is "") and
        n * d * m <= :data:`FUSED_MAX_WORK`; ``True``: always, raising a ValueError that says why when it
        does not apply; ``False``: never (autodiff in XLA).

    State: ``{"s": (), "learning_rate": (), "opt_state": optax state, "step": () int}``.
    Metrics: ``"s"``, the gradient norm ``"grad_norm"``, and ``"accuracy"`` for cross-entropy.
    """
    if not isinstance(model, HomotopyMLP):
        raise ValueError(f"model must be an ntkhom.models.HomotopyMLP, got {type(model).__name__}")
    learning_rate = check_learning_rate(learning_rate)
    s = model.s if s is None else check_s(s)
    name = optimizer if isinstance(optimizer, str) else "optax"
    optimizer = _as_optimizer(optimizer)
    x, y, objective = network_loss_fn(model, x, y, loss, reduction)
    classification = loss == "cross_entropy"
    if fused not in (None, True, False):
        raise ValueError(f"fused must be None, True or False, got {fused!r}")
    n, d = x.shape
    # the size test comes first: fused_step_problem builds the kernel (once per machine) when all else fits
    wanted = fused is True or (fused is None and n * d * model.widths[0] <= FUSED_MAX_WORK)
    problem = fused_step_problem(model, x, name, loss) if wanted else ""
    if fused and problem:
        raise ValueError(f"fused=True, but the fused step does not apply: {problem}")
    use_fused = wanted and not problem

    def trained_loss(trainable, params, s_value):
        return objective(model.combine(trainable, params), s_value)

    def init(params):
        dtype = jax.tree.leaves(params)[0].dtype
        return {
            "s": jnp.asarray(s, dtype),
            "learning_rate": jnp.asarray(learning_rate, dtype),
            "opt_state": optimizer.init(model.trainable(params)),
            "step": jnp.zeros((), jnp.int32),
        }

    if use_fused:  # the kernel's operands that do not change from step to step
        from ntkhom.solvers import native

        (first_scale, _), (out_scale, out_b_std) = model.layer_scales(d)
        x_scaled = (first_scale / math.sqrt(d)) * x
        out_factor = out_scale / math.sqrt(model.widths[0])

    def fused_step(params, state):
        targets = y[:, 0]
        if "b" in params[1]:  # the frozen output bias shifts every prediction alike
            targets = targets - out_b_std * params[1]["b"][0]
        learning_rate = state["learning_rate"] / (n if reduction == "mean" else 1)
        W = native.two_layer_gd_step(
            x_scaled, targets, params[0]["W"], out_factor * params[1]["W"][:, 0], state["s"], learning_rate,
            slopes=model.phi.slopes,
        )
        return (params[0] | {"W": W},) + tuple(params[1:]), {**state, "step": state["step"] + 1}

    def step(params, state):
        if use_fused:
            return fused_step(params, state)
        trainable = model.trainable(params)
        grads = jax.grad(trained_loss)(trainable, params, state["s"])
        updates, opt_state = optimizer.update(grads, state["opt_state"], trainable)
        trainable = jax.tree.map(lambda p, u: p + state["learning_rate"] * u, trainable, updates)
        return model.combine(trainable, params), {**state, "opt_state": opt_state, "step": state["step"] + 1}

    def loss_value(params, state):
        return objective(params, state["s"])

    def metrics(params, state):
        trainable = model.trainable(params)
        grads = jax.grad(trained_loss)(trainable, params, state["s"])
        out = {"s": state["s"], "grad_norm": optax.tree.norm(grads)}
        if classification:
            out["accuracy"] = accuracy(model.apply(params, x, state["s"]), y)
        return out

    return Solver(init=init, step=step, loss=loss_value, metrics=metrics, name=name)
