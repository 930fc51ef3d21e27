"""Tests run with JAX's 64-bit mode on: kernels and spectra are checked in float64. Tests about float32
behaviour pass float32 arrays explicitly."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
