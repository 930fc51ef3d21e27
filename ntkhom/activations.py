"""The homotopy activation sigma_s(x) = (1 - s) x + s phi(x), defined once for all of ntkhom.

s = 0 is the identity (a linear network), s = 1 is phi itself (ReLU by default), s = 2 with phi = ReLU is
|x|, and s > 1 is the "relaxation" regime of HRTA (Yang, Chen, Hao, arXiv:2309.15244). Because sigma_s is
affine in s, sigma_s(x) = x + s (phi(x) - x) and sigma_s'(x) = 1 + s (phi'(x) - 1): every two-layer kernel
is a quadratic polynomial in s (see :mod:`ntkhom.kernels`).

A base activation ``phi`` is a :class:`Phi`. The ReLU family (ReLU, leaky ReLU, |x|) is positively
homogeneous and piecewise linear, phi(x) = a min(x, 0) + b max(x, 0), so sigma_s is again of that form and
its infinite-width kernel is exact (neural-tangents' ``ABRelu``). erf and GELU have closed-form kernels too;
tanh gets a controlled quadrature (:mod:`ntkhom.dual`). The neural-tangents layer of sigma_s is
:func:`ntkhom.stax.Homotopy`; this module does not import neural-tangents.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from collections.abc import Callable

import jax
import jax.numpy as jnp

__all__ = [
    "Phi",
    "PHI_NAMES",
    "S_RECOMMENDED",
    "as_phi",
    "homotopy",
    "homotopy_derivative",
    "check_s",
    "leaky_relu",
]

#: Values of s the theory covers (linear at 0, ReLU at 1, |x| at 2). Outside: a warning, not a refusal.
S_RECOMMENDED = (0.0, 2.0)


@dataclasses.dataclass(frozen=True)
class Phi:
    """A base activation: its values, its derivative and, for the ReLU family, its (a, b) slopes.

    ``slopes = (a, b)`` means phi(x) = a min(x, 0) + b max(x, 0), which is positively homogeneous and has an
    exact infinite-width kernel. ``slopes = None`` means a smooth phi with a numerical kernel.
    """

    name: str
    fn: Callable[[jax.Array], jax.Array]
    derivative: Callable[[jax.Array], jax.Array]
    slopes: tuple[float, float] | None = None

    @property
    def positively_homogeneous(self) -> bool:
        return self.slopes is not None

    def __call__(self, x):
        return self.fn(x)


def _piecewise_linear(name: str, a: float, b: float) -> Phi:
    return Phi(
        name=name,
        fn=lambda x: a * jnp.minimum(x, 0) + b * jnp.maximum(x, 0),
        derivative=lambda x: jnp.where(x > 0, b, a).astype(jnp.result_type(x)),
        slopes=(float(a), float(b)),
    )


@functools.lru_cache(maxsize=64)
def leaky_relu(alpha: float = 0.01) -> Phi:
    """phi(x) = max(x, 0) + alpha min(x, 0)."""
    alpha = float(alpha)
    if not math.isfinite(alpha):
        raise ValueError(f"leaky_relu: alpha must be finite, got {alpha}")
    return _piecewise_linear(f"leaky_relu({alpha:g})", alpha, 1.0)


def _erf_derivative(x):
    return 2.0 / math.sqrt(math.pi) * jnp.exp(-(x**2))


def _elementwise_grad(fn):
    def derivative(x):
        x = jnp.asarray(x)
        return jnp.vectorize(jax.grad(fn))(x)

    return derivative


# Cached, so equal names give the same Phi object: models with equal settings are equal and hash alike, and
# jit caches keyed on them are reused.
_PHIS: dict[str, Callable[[], Phi]] = {
    "relu": lambda: _piecewise_linear("relu", 0.0, 1.0),
    "leaky_relu": leaky_relu,
    "abs": lambda: _piecewise_linear("abs", -1.0, 1.0),
    "erf": lambda: Phi("erf", jax.scipy.special.erf, _erf_derivative),
    "tanh": lambda: Phi("tanh", jnp.tanh, lambda x: 1.0 - jnp.tanh(x) ** 2),
    "gelu": lambda: Phi("gelu", lambda x: jax.nn.gelu(x, approximate=False),
                        _elementwise_grad(lambda x: jax.nn.gelu(x, approximate=False))),
}
PHI_NAMES = tuple(_PHIS)


@functools.cache
def _phi_by_name(name: str) -> Phi:
    return _PHIS[name]()


def as_phi(phi: str | Phi) -> Phi:
    """A :class:`Phi` from a name in :data:`PHI_NAMES` (``"leaky_relu"`` uses alpha = 0.01) or a Phi."""
    if isinstance(phi, Phi):
        return phi
    if isinstance(phi, str) and phi in _PHIS:
        return _phi_by_name(phi)
    raise ValueError(f"unknown activation {phi!r}; known: {', '.join(PHI_NAMES)} (or pass an ntkhom Phi)")


def check_s(s) -> float:
    """Validate a homotopy parameter: a real number (a traced value passes unchecked), finite; outside
    [0, 2] warns (relaxation past |x| is allowed). Returns it as a float, or the tracer as it is."""
    if isinstance(s, jax.core.Tracer):  # nothing to check at trace time
        return s
    if isinstance(s, str | bytes):  # float("0.5") would parse it; a string is a caller's mistake here
        raise TypeError(f"homotopy parameter s must be a real number, got {s!r}")
    try:
        s = float(s)
    except (TypeError, ValueError) as error:
        raise TypeError(f"homotopy parameter s must be a real number, got {type(s).__name__}") from error
    if not math.isfinite(s):
        raise ValueError(f"homotopy parameter s must be finite, got {s}")
    low, high = S_RECOMMENDED
    if not low <= s <= high:
        warnings.warn(
            f"homotopy parameter s = {s:g} lies outside [{low:g}, {high:g}], the range the HRTA theory covers",
            stacklevel=2,
        )
    return s


def homotopy(x, s, phi: str | Phi = "relu"):
    """sigma_s(x) = (1 - s) x + s phi(x), written x + s (phi(x) - x) so it is visibly affine in s."""
    phi = as_phi(phi)
    return x + s * (phi.fn(x) - x)


def homotopy_derivative(x, s, phi: str | Phi = "relu"):
    """sigma_s'(x) = 1 + s (phi'(x) - 1)."""
    phi = as_phi(phi)
    return 1.0 + s * (phi.derivative(x) - 1.0)
