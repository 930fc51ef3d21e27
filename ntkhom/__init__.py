"""ntkhom: neural tangent kernels, spectra and solvers for homotopy (linear-to-ReLU) networks, in JAX."""

__version__ = "0.1.0"
