"""ntkhom: neural tangent kernels, spectra and solvers for homotopy (linear-to-ReLU) networks, in JAX."""

__version__ = "0.1.0"

from ntkhom.data import enable_float64

__all__ = ["enable_float64", "__version__"]
