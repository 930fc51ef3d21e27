"""Homotopy networks, described once: parameters, forward pass and neural-tangents layers.

A :class:`HomotopyMLP` with hidden widths (m_1, ..., m_L) computes, in the NTK parameterization that
neural-tangents uses (every weight and bias ~ N(0, 1) at initialization),

    h_0 = x,   z_l = (W_std_l / sqrt(fan_in_l)) h_{l-1} W_l + b_std_l b_l,   h_l = sigma_s(z_l),
    f(x) = (W_std / sqrt(m_L)) h_L W_out + b_std_out b_out.

The first layer's ``W_std`` defaults to sqrt(d), so z_1 = x . w_r with w_r ~ N(0, I_d) exactly as in the
HRTA / Du et al. two-layer setting; :func:`two_layer` gives that network with output weights a_r in {-1, +1}:
f(x) = m^{-1/2} sum_r a_r sigma_s(w_r . x).

``trained`` selects the parameters that training moves and that the NTK differentiates: ``"hidden"``
(every layer but the output layer; the setting of the HRTA theory) or ``"all"``. The same description gives
the neural-tangents ``stax`` network (:meth:`HomotopyMLP.stax`), so the finite network and its infinite-width
kernel cannot drift apart; a test checks that :meth:`HomotopyMLP.apply` equals stax's ``apply_fn``.

Parameters are a tuple of dicts ``{"W": (fan_in, fan_out), "b": (fan_out,)}`` ("b" only where the layer
has a bias), one per dense layer, the output layer last.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import jax
import jax.numpy as jnp

from ntkhom.activations import Phi, as_phi, check_s, homotopy
from ntkhom.data import check_inputs, is_whole, real_number

__all__ = ["HomotopyMLP", "two_layer", "mlp", "Params", "TRAINED_CHOICES"]

Params = tuple[dict[str, jax.Array], ...]
TRAINED_CHOICES = ("hidden", "all")
OUTPUT_INITS = ("rademacher", "normal")


@dataclasses.dataclass(frozen=True)
class HomotopyMLP:
    """A fully connected homotopy network; see the module docstring for the exact formula.

    Attributes:
      widths: hidden widths (m_1, ..., m_L), L >= 1; ``(m,)`` is a two-layer network.
      s: default homotopy parameter (every call can override it).
      phi: base activation (name or :class:`ntkhom.activations.Phi`).
      out_dim: number of outputs.
      first_W_std: weight scale of the first layer; ``None`` means sqrt(d) (w ~ N(0, I_d) on raw inputs).
      W_std: weight scale of the other layers (hidden-to-hidden and output).
      b_std: hidden-layer bias scale; ``None`` means no hidden biases.
      out_b_std: output bias scale; ``None`` means no output bias.
      output_init: ``"rademacher"`` (a_r in {-1, +1}) or ``"normal"`` output weights.
      trained: ``"hidden"`` or ``"all"``.
    """

    widths: tuple[int, ...]
    s: float = 1.0
    phi: str | Phi = "relu"
    out_dim: int = 1
    first_W_std: float | None = None
    W_std: float = 1.0
    b_std: float | None = None
    out_b_std: float | None = None
    output_init: Literal["rademacher", "normal"] = "rademacher"
    trained: Literal["hidden", "all"] = "hidden"

    def __post_init__(self):
        widths = tuple(self.widths) if not isinstance(self.widths, int) else (self.widths,)
        if len(widths) == 0:
            raise ValueError("a homotopy network needs at least one hidden layer (widths is empty)")
        for width in widths:
            if not is_whole(width):
                raise ValueError(f"every width must be a positive integer, got widths = {widths}")
        if not is_whole(self.out_dim):
            raise ValueError(f"out_dim must be a positive integer, got {self.out_dim}")
        if self.trained not in TRAINED_CHOICES:
            raise ValueError(f"unknown trained={self.trained!r}; choose one of {TRAINED_CHOICES}")
        if self.output_init not in OUTPUT_INITS:
            raise ValueError(f"unknown output_init={self.output_init!r}; choose one of {OUTPUT_INITS}")
        for name in ("first_W_std", "W_std", "b_std", "out_b_std"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(real_number(value, name)) and value > 0):
                raise ValueError(f"{name} must be a positive finite number or None, got {value}")
        object.__setattr__(self, "widths", tuple(int(w) for w in widths))
        object.__setattr__(self, "phi", as_phi(self.phi))
        object.__setattr__(self, "s", check_s(self.s))

    # -- structure -----------------------------------------------------------------------------------
    @property
    def depth(self) -> int:
        """Number of hidden layers L."""
        return len(self.widths)

    def layer_scales(self, d: int) -> list[tuple[float, float | None]]:
        """(W_std, b_std) of every dense layer for input dimension d, output layer last."""
        first = math.sqrt(d) if self.first_W_std is None else self.first_W_std
        hidden = [(first, self.b_std)] + [(self.W_std, self.b_std)] * (self.depth - 1)
        return hidden + [(self.W_std, self.out_b_std)]

    def _s(self, s):
        return self.s if s is None else check_s(s)

    # -- finite network ------------------------------------------------------------------------------
    def init(self, key, d: int, *, dtype=None) -> Params:
        """Parameters for inputs of dimension d (all N(0, 1); output weights per ``output_init``).

        ``dtype``: float dtype of every leaf; default float64 when JAX's 64-bit mode is on, else float32.
        """
        if not is_whole(d):
            raise ValueError(f"input dimension d must be a positive integer, got {d}")
        sizes = (int(d),) + self.widths + (self.out_dim,)
        scales = self.layer_scales(int(d))
        keys = jax.random.split(key, 2 * len(scales))
        dtype = _float_dtype(dtype)
        params = []
        for layer, ((fan_in, fan_out), (_, b_std)) in enumerate(zip(zip(sizes[:-1], sizes[1:]), scales)):
            is_output = layer == len(scales) - 1
            if is_output and self.output_init == "rademacher":
                W = jax.random.rademacher(keys[2 * layer], (fan_in, fan_out), dtype)
            else:
                W = jax.random.normal(keys[2 * layer], (fan_in, fan_out), dtype)
            entry = {"W": W}
            if b_std is not None:
                entry["b"] = jax.random.normal(keys[2 * layer + 1], (fan_out,), dtype)
            params.append(entry)
        return tuple(params)

    def apply(self, params: Params, x, s=None):
        """Network outputs f(x), shape (n, out_dim). ``s`` may be a traced value (vmap/grad over s).

        Non-finite parameters give non-finite outputs (a diverged run stays visible); the kernels refuse them.
        """
        s = self._s(s)
        d = self.check_shapes(params, x)
        h = x
        for layer, (entry, (W_std, b_std)) in enumerate(zip(params, self.layer_scales(d))):
            z = (W_std / math.sqrt(h.shape[-1])) * (h @ entry["W"])
            if "b" in entry:
                z = z + b_std * entry["b"]
            h = z if layer == len(params) - 1 else homotopy(z, s, self.phi)
        return h

    def trainable(self, params: Params) -> Params:
        """The trained part of ``params`` (all layers, or all but the output layer)."""
        return params if self.trained == "all" else params[:-1]

    def combine(self, trainable: Params, params: Params) -> Params:
        """Full parameters from a trained part and the frozen rest of ``params``."""
        return tuple(trainable) if self.trained == "all" else tuple(trainable) + (params[-1],)

    def check(self, params: Params, x, name: str = "x") -> jax.Array:
        """Validate inputs against the parameters: 2-D, finite (where concrete), matching input dimension."""
        x = check_inputs(x, name)
        self.check_shapes(params, x, name)
        return x

    def check_shapes(self, params: Params, x=None, name: str = "x") -> int:
        """The input dimension d of ``params``, after checking (shapes only, so also under ``jit``) that they
        are this network's layers, one {"W": (fan-in, fan-out)} per layer, and that ``x`` is (n, d)."""
        layers = len(self.widths) + 1
        if not isinstance(params, tuple | list) or len(params) != layers or not all(
                isinstance(entry, dict) and "W" in entry for entry in params):
            got = f"{len(params)} entries" if isinstance(params, tuple | list) else type(params).__name__
            raise ValueError(f"params must be {layers} layers of {{'W': ..., ['b': ...]}} for widths "
                             f"{self.widths}, got {got}")
        d = jnp.shape(params[0]["W"])[0]
        for layer, (entry, fan_out) in enumerate(zip(params, (*self.widths, self.out_dim))):
            fan_in = d if layer == 0 else self.widths[layer - 1]
            if tuple(jnp.shape(entry["W"])) != (fan_in, fan_out):
                raise ValueError(f"params[{layer}]['W'] has shape {tuple(jnp.shape(entry['W']))}, expected "
                                 f"{(fan_in, fan_out)} for widths {self.widths} and out_dim {self.out_dim}")
        if x is not None and jnp.ndim(x) != 2:
            raise ValueError(f"{name} must be (n, {d}) for these parameters, got shape {tuple(jnp.shape(x))}")
        if x is not None and jnp.shape(x)[1] != d:
            raise ValueError(f"{name} has {jnp.shape(x)[1]} features but the network expects d = {d}")
        return d

    # -- neural-tangents description ----------------------------------------------------------------
    def stax(self, d: int, s=None):
        """``(init_fn, apply_fn, kernel_fn)`` of the same network built from neural-tangents layers
        (``Dense`` and :func:`ntkhom.stax.Homotopy`); loads neural-tangents on first use."""
        from ntkhom.nt import stax
        from ntkhom.stax import Homotopy

        s = self._s(s)
        layers = []
        scales = self.layer_scales(int(d))
        for width, (W_std, b_std) in zip(self.widths, scales[:-1]):
            layers += [stax.Dense(width, W_std=W_std, b_std=b_std), Homotopy(s, self.phi)]
        W_std, b_std = scales[-1]
        layers.append(stax.Dense(self.out_dim, W_std=W_std, b_std=b_std))
        return stax.serial(*layers)

    def to_stax_params(self, params: Params):
        """Our parameters in the layout of :meth:`stax`'s ``apply_fn``."""
        out = []
        for layer, entry in enumerate(params):
            out.append((entry["W"], entry.get("b")))
            if layer < len(params) - 1:
                out.append(())
        return tuple(out)


def _float_dtype(dtype):
    if dtype is None:
        return jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"dtype must be a floating dtype, got {dtype}")
    return dtype


def two_layer(
    width: int,
    s: float = 1.0,
    *,
    phi: str | Phi = "relu",
    bias: bool = False,
    trained: Literal["hidden", "all"] = "hidden",
    out_dim: int = 1,
) -> HomotopyMLP:
    """f(x) = m^{-1/2} sum_r a_r sigma_s(w_r . x [+ b_r]), w_r ~ N(0, I_d), a_r in {-1, +1} (HRTA setting)."""
    return HomotopyMLP(
        widths=(width,), s=s, phi=phi, out_dim=out_dim, b_std=1.0 if bias else None,
        output_init="rademacher", trained=trained,
    )


def mlp(
    widths,
    s: float = 1.0,
    *,
    phi: str | Phi = "relu",
    bias: bool = True,
    trained: Literal["hidden", "all"] = "all",
    out_dim: int = 1,
    W_std: float = 1.0,
) -> HomotopyMLP:
    """A deep homotopy MLP (Gaussian output weights, hidden biases by default, every layer trained)."""
    return HomotopyMLP(
        widths=tuple(widths), s=s, phi=phi, out_dim=out_dim, W_std=W_std, b_std=1.0 if bias else None,
        output_init="normal", trained=trained,
    )
