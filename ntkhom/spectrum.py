"""Kernel spectra in float64, each number reported with the numerical floor below which it means nothing.

The smallest NTK eigenvalue is often 1e-5 of the largest, so eigenvalues are always computed in float64
(NumPy/LAPACK, whatever JAX's x64 flag). The floor is what rounding in the kernel itself allows: a symmetric
matrix known to relative precision eps has eigenvalues known only to about ||K||_2 * n * eps, so

    floor = n * eps(kernel dtype) * lambda_max.

An eigenvalue below the floor is reported as unresolved (an upper bound), never with false digits. Pass
``dtype=`` when the matrix was computed in lower precision than the array you hand over.

:func:`spectrum` (NumPy/LAPACK float64 on the host) is the certified default for concrete kernels.
:func:`device_spectrum` is its counterpart inside ``jit``, ``vmap`` and ``grad``: ``jnp.linalg.eigvalsh`` on
the device, in float64 when JAX's 64-bit mode is on (float32 otherwise, with the floor to match), returning
a pytree.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Eigenvalue", "Spectrum", "DeviceSpectrum", "numerical_floor", "spectrum", "device_spectrum",
           "lambda_min", "lambda_max", "condition_number", "check_kernel", "asymmetry"]

#: Relative asymmetry above which a "kernel" is refused as not symmetric.
SYMMETRY_TOLERANCE = 1e-5


def numerical_floor(lambda_max: float, n: int, dtype) -> float:
    """n * eps(dtype) * lambda_max: eigenvalues below this are not resolved by a kernel computed in dtype."""
    return float(n) * float(np.finfo(np.dtype(dtype)).eps) * abs(float(lambda_max))


def refuse_traced(K, where: str) -> None:
    """A one-line TypeError when K is traced (inside jit, vmap or grad): certified spectra are computed on the
    host in float64, from concrete values."""
    if isinstance(K, jax.core.Tracer):
        raise TypeError(f"{where} computes a certified spectrum on the host and cannot run inside jit, vmap or "
                        "grad (K is traced); in traced code use ntkhom.spectrum.device_spectrum")


def check_kernel(K, name: str = "K") -> np.ndarray:
    """K as a float64 NumPy array, or ValueError if it is not a finite, square, symmetric matrix (TypeError
    if it is traced)."""
    refuse_traced(K, "ntkhom.spectrum")
    array = np.asarray(K)
    if array.ndim != 2 or array.shape[0] != array.shape[1] or array.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty square matrix, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    array = np.array(array, dtype=np.float64, order="C")  # a private copy, symmetrized in place below
    scale = max(float(np.max(np.abs(array))), np.finfo(np.float64).tiny)
    skew = _symmetrize(array) / scale
    if skew > SYMMETRY_TOLERANCE:
        raise ValueError(f"{name} is not symmetric (max |K - K^T| / max |K| = {skew:.2e})")
    return array


def asymmetry(a, tile: int = 256) -> float:
    """max |a - a^T| / max |a| of a square array, tile by tile (no transposed full-size temporary)."""
    a = np.asarray(a)
    n = a.shape[0]
    worst = 0.0
    for i in range(0, n, tile):
        for j in range(i, n, tile):
            worst = max(worst, float(np.max(np.abs(a[i:i + tile, j:j + tile] - a[j:j + tile, i:i + tile].T))))
    return worst / max(float(np.max(np.abs(a))), np.finfo(np.float64).tiny)


def _symmetrize(a: np.ndarray, tile: int = 256) -> float:
    """Replace a by (a + a^T) / 2 in place, tile by tile (no transposed full-size temporaries, which are slow
    and memory-hungry at large n); returns max |a - a^T| of the input."""
    n = a.shape[0]
    worst = 0.0
    for i in range(0, n, tile):
        for j in range(i, n, tile):
            upper, lower = a[i:i + tile, j:j + tile], a[j:j + tile, i:i + tile]
            worst = max(worst, float(np.max(np.abs(upper - lower.T))))
            mean = 0.5 * (upper + lower.T)
            upper[...] = mean
            lower[...] = mean.T
    return worst


class Eigenvalue(NamedTuple):
    """One eigenvalue with the floor of its computation; ``resolved`` is False when value <= floor."""

    value: float
    floor: float

    @property
    def resolved(self) -> bool:
        return self.value > self.floor

    def __str__(self) -> str:
        if self.resolved:
            return f"{self.value:.6g} (floor {self.floor:.1e})"
        return f"< {self.floor:.1e} (unresolved: at or below the numerical floor)"


@dataclasses.dataclass(frozen=True)
class Spectrum:
    """All eigenvalues (ascending, float64) of a symmetric kernel, with its numerical floor."""

    eigenvalues: np.ndarray
    floor: float
    kernel_dtype: str

    @property
    def n(self) -> int:
        return int(self.eigenvalues.shape[0])

    @property
    def lambda_min(self) -> Eigenvalue:
        return Eigenvalue(float(self.eigenvalues[0]), self.floor)

    @property
    def lambda_max(self) -> Eigenvalue:
        return Eigenvalue(float(self.eigenvalues[-1]), self.floor)

    @property
    def resolved(self) -> bool:
        """Whether lambda_min is above the floor."""
        return self.lambda_min.resolved

    @property
    def condition(self) -> float:
        """lambda_max / lambda_min; inf when lambda_min is unresolved (the true value is at least
        lambda_max / floor, see :attr:`condition_lower_bound`)."""
        return float(self.eigenvalues[-1] / self.eigenvalues[0]) if self.resolved else float("inf")

    @property
    def condition_lower_bound(self) -> float:
        """lambda_max / max(lambda_min, floor): what the condition number is at least (inf where even lambda_max
        is not positive)."""
        if self.eigenvalues[-1] <= 0:
            return float("inf")
        return float(self.eigenvalues[-1] / max(self.eigenvalues[0], self.floor, np.finfo(float).tiny))

    def summary(self) -> dict:
        """Plain numbers for JSON/CSV: unresolved values are None, with the floor beside them."""
        return {
            "n": self.n,
            "lambda_min": self.lambda_min.value if self.resolved else None,
            "lambda_max": self.lambda_max.value,
            "condition": self.condition if self.resolved else None,
            "floor": self.floor,
            "resolved": self.resolved,
            "kernel_dtype": self.kernel_dtype,
        }

    def __str__(self) -> str:
        cond = f"{self.condition:.4g}" if self.resolved else f"> {self.condition_lower_bound:.3g}"
        return (f"Spectrum(n={self.n}, lambda_min={self.lambda_min}, lambda_max={self.eigenvalues[-1]:.6g}, "
                f"condition={cond}, kernel dtype {self.kernel_dtype})")


def _kernel_dtype(K, dtype) -> np.dtype:
    if dtype is not None:
        return np.dtype(dtype)
    source = np.dtype(getattr(K, "dtype", np.float64))
    return source if np.issubdtype(source, np.floating) else np.dtype(np.float64)


def _is_operator(K) -> bool:
    # A kernel operator (ntkhom.operators) rather than a matrix: solved iteratively by ntkhom.eigensolvers.
    return hasattr(K, "matvec") and hasattr(K, "n")


def spectrum(K, *, dtype=None, **options) -> Spectrum:
    """Every eigenvalue of a symmetric kernel matrix, in float64, with its floor.

    Args:
      K: (n, n) symmetric matrix (JAX or NumPy, any float dtype), or a kernel operator
        (:mod:`ntkhom.operators`): then only the extremes are computed, with certificates
        (:func:`ntkhom.eigensolvers.extreme_spectrum`, which takes ``options``).
      dtype: the precision K was computed in, if lower than K's own dtype (sets the floor).
    """
    if _is_operator(K):
        from ntkhom import eigensolvers

        return eigensolvers.extreme_spectrum(K, floor_dtype=dtype, **options)
    if options:
        raise TypeError(f"options {sorted(options)} apply to kernel operators only (a matrix is solved densely)")
    kernel_dtype = _kernel_dtype(K, dtype)
    array = check_kernel(K)
    eigenvalues = np.linalg.eigvalsh(array)
    floor = numerical_floor(max(abs(eigenvalues[-1]), abs(eigenvalues[0])), array.shape[0], kernel_dtype)
    if eigenvalues[0] < -floor:
        import warnings

        warnings.warn(f"K has eigenvalues down to {eigenvalues[0]:.3g}, below minus its floor ({floor:.1e}): it is not "
                      "positive semi-definite, as a kernel (NTK, NNGP) must be, or it was computed in a lower "
                      "precision than its dtype (pass dtype=); lambda_min is reported as unresolved",
                      RuntimeWarning, stacklevel=2)
    return Spectrum(eigenvalues, floor, kernel_dtype.name)


def lambda_min(K, *, dtype=None, **options) -> Eigenvalue:
    """Smallest eigenvalue (float64) with its floor; for an operator, iteratively with a certificate
    (:func:`ntkhom.eigensolvers.lambda_min`, which takes ``options``)."""
    if _is_operator(K):
        from ntkhom import eigensolvers

        return eigensolvers.lambda_min(K, floor_dtype=dtype, **options)
    return spectrum(K, dtype=dtype).lambda_min


def lambda_max(K, *, dtype=None, **options) -> Eigenvalue:
    """Largest eigenvalue (float64) with its floor; for an operator, by Lanczos with a certificate."""
    if _is_operator(K):
        from ntkhom import eigensolvers

        return eigensolvers.lambda_max(K, floor_dtype=dtype, **options)
    return spectrum(K, dtype=dtype).lambda_max


def condition_number(K, *, dtype=None) -> float:
    """lambda_max / lambda_min, or inf where lambda_min is below the floor."""
    return spectrum(K, dtype=dtype).condition


class DeviceSpectrum(NamedTuple):
    """Eigenvalues (ascending) of a symmetric kernel computed on the device, with their floor; a pytree.

    ``floor = n * eps * max |lambda|`` with eps of the lower of the kernel's dtype and the computing dtype.
    """

    eigenvalues: jax.Array
    floor: jax.Array

    @property
    def lambda_min(self) -> jax.Array:
        return self.eigenvalues[..., 0]

    @property
    def lambda_max(self) -> jax.Array:
        return self.eigenvalues[..., -1]

    @property
    def resolved(self) -> jax.Array:
        """Whether lambda_min lies above the floor (a boolean array)."""
        return self.lambda_min > self.floor


def device_spectrum(K, *, dtype=None) -> DeviceSpectrum:
    """Every eigenvalue of a symmetric kernel by ``jnp.linalg.eigvalsh``, usable under ``jit``, ``vmap`` and
    ``grad`` (eigenvalue derivatives are those of a simple spectrum: d lambda_i = v_i^T dK v_i).

    Args:
      K: (n, n) symmetric matrix; symmetrized as (K + K^T) / 2 before the solve.
      dtype: the precision K was computed in, if lower than K's own dtype (sets the floor).

    Returns:
      :class:`DeviceSpectrum` in float64 when JAX's 64-bit mode is on, else float32. Shape checks are static;
      for concrete K the finiteness is checked too (use :func:`spectrum` for the certified host result).
    """
    K = jnp.asarray(K)
    if K.ndim != 2 or K.shape[0] != K.shape[1] or K.shape[0] == 0:
        raise ValueError(f"K must be a non-empty square matrix, got shape {K.shape}")
    if not isinstance(K, jax.core.Tracer):
        if not np.all(np.isfinite(np.asarray(K))):
            raise ValueError("K contains non-finite values (NaN or inf)")
        skew = asymmetry(np.asarray(K))
        if skew > SYMMETRY_TOLERANCE:
            raise ValueError(f"K is not symmetric (max |K - K^T| / max |K| = {skew:.2e})")
    compute = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    kernel_dtype = _kernel_dtype(K, dtype)
    eps = max(float(np.finfo(kernel_dtype).eps), float(np.finfo(compute).eps))
    K = K.astype(compute)
    eigenvalues = jnp.linalg.eigvalsh(0.5 * (K + K.T))
    scale = jnp.maximum(jnp.abs(eigenvalues[0]), jnp.abs(eigenvalues[-1]))
    return DeviceSpectrum(eigenvalues, K.shape[0] * eps * scale)
