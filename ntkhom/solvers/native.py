"""The fused CPU step of two-layer gradient descent: a C++ XLA FFI kernel, built on first use.

XLA's CPU code runs one full-batch GD step of a two-layer network as separate operations (two matrix
products with a short inner dimension d, elementwise passes over the (n, m) pre-activations), each with its
own pass over memory. ``two_layer_gd.cc`` does the step in two register-blocked passes, shares a batch's
runs (or a large lone run's rows) out over XLA's CPU thread pool, and is about twice as fast at the paper
size (n = 100, d = 10, m = 1000), but slower than XLA's products on large problems
(``benchmarks/bench_training.py``). It is used by :func:`ntkhom.solvers.gradient.gradient_solver` when
the run fits it (see ``fused=`` there) and runs inside ``jit``, ``lax.scan`` and ``vmap`` like any JAX operation.

Building: the source ships with ntkhom and is compiled once per machine with the system C++ compiler
(``$CXX``, else ``c++``/``g++``/``clang++``; ``-O3 -march=native``) against the FFI headers that jaxlib
installs. The library is cached under ``$NTKHOM_CACHE_DIR`` (default ``$XDG_CACHE_HOME/ntkhom`` or
``~/.cache/ntkhom``), keyed by the source, the compiler, the flags, jaxlib's version and the CPU, so a shared
home directory on different machines is safe. Nothing is downloaded. Without a compiler, or with
``NTKHOM_NATIVE=0``, :func:`library` returns None, :func:`unavailable_reason` says why, and solvers fall back
to the XLA step.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np

__all__ = ["library", "available", "unavailable_reason", "two_layer_gd_step", "MAX_INPUT_DIM", "SOURCE"]

SOURCE = Path(__file__).with_name("two_layer_gd.cc")
MAX_INPUT_DIM = 32  # kMaxInputDim in the source: the register block holds d vectors
_FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC")
_TARGETS = {np.dtype(np.float32): "ntkhom_two_layer_gd_step_f32", np.dtype(np.float64): "ntkhom_two_layer_gd_step_f64"}
_SYMBOLS = {"ntkhom_two_layer_gd_step_f32": "NtkhomTwoLayerGdStepF32",
            "ntkhom_two_layer_gd_step_f64": "NtkhomTwoLayerGdStepF64"}
_COMPILE_TIMEOUT_S = 300


def _cache_dir() -> Path:
    if os.environ.get("NTKHOM_CACHE_DIR"):
        return Path(os.environ["NTKHOM_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ntkhom"


def _compiler() -> str | None:
    if os.environ.get("CXX"):
        return shutil.which(os.environ["CXX"])
    for name in ("c++", "g++", "clang++"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def _cpu_signature() -> str:
    """What -march=native depends on: the CPU's model and feature flags (Linux), else the platform."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            lines = [line for line in cpuinfo if line.startswith(("model name", "flags"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor() + platform.machine()


def _build(compiler: str, target: Path) -> None:
    include = jax.ffi.include_dir()
    target.parent.mkdir(parents=True, exist_ok=True)
    # compile to a temporary name and rename: concurrent first uses never load a half-written library
    handle, partial = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(handle)
    try:
        command = [compiler, *_FLAGS, f"-I{include}", str(SOURCE), "-o", partial]
        done = subprocess.run(command, capture_output=True, text=True, timeout=_COMPILE_TIMEOUT_S)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


@functools.cache
def _load() -> tuple[ctypes.CDLL | None, str]:
    if os.environ.get("NTKHOM_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
        return None, "disabled by NTKHOM_NATIVE=0"
    compiler = _compiler()
    if compiler is None:
        return None, "no C++ compiler found (set CXX or install g++ or clang++)"
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
        key = hashlib.sha256("\0".join([
            SOURCE.read_text(), compiler, version, " ".join(_FLAGS), _jaxlib_version(), _cpu_signature(),
        ]).encode()).hexdigest()[:16]
        target = _cache_dir() / f"two_layer_gd-{key}.so"
        if not target.exists():
            print(f"ntkhom: building the fused GD kernel once for this machine (about 15 s) into {target.parent}",
                  file=sys.stderr, flush=True)
            _build(compiler, target)
        lib = ctypes.cdll.LoadLibrary(str(target))
        for name, symbol in _SYMBOLS.items():
            jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
    except (OSError, RuntimeError, subprocess.SubprocessError, AttributeError) as error:
        return None, f"building or loading the fused kernel failed: {error}"
    return lib, ""


def _jaxlib_version() -> str:
    import jaxlib

    return jaxlib.__version__


def library() -> ctypes.CDLL | None:
    """The loaded kernel library (built on first call), or None when it is unavailable."""
    return _load()[0]


def available() -> bool:
    """True when the fused kernel can run here: it builds and loads, and JAX's default backend is the CPU."""
    return jax.default_backend() == "cpu" and library() is not None


def unavailable_reason() -> str:
    """Why :func:`available` is False ("" when it is True)."""
    if jax.default_backend() != "cpu":
        return f"the fused kernel is CPU-only and JAX's default backend is {jax.default_backend()!r}"
    return _load()[1]


def two_layer_gd_step(xs, y, W, a, s, learning_rate, *, slopes: tuple[float, float]):
    """W after one GD step on L = 1/2 sum_i (sum_k a_k sigma_s(xs_i . W_k) - y_i)^2.

    Shapes: xs (n, d) (inputs already multiplied by the first layer's scale), y (n,), W (d, m), a (m,)
    (output weights already multiplied by the output scale), s and learning_rate scalars; one dtype,
    float32 or float64; d <= :data:`MAX_INPUT_DIM`. sigma_s(z) = (1 - s) z + s phi(z) with
    phi(z) = slopes[0] min(z, 0) + slopes[1] max(z, 0). Works under ``jit``, ``scan`` and ``vmap``
    (batched operands are looped over in the kernel). Call :func:`available` first.
    """
    W = jax.numpy.asarray(W)
    dtype = np.dtype(W.dtype)
    if dtype not in _TARGETS:
        raise ValueError(f"the fused step needs float32 or float64, got {dtype}")
    if W.ndim != 2 or W.shape[0] > MAX_INPUT_DIM:
        raise ValueError(f"the fused step needs W of shape (d, m) with d <= {MAX_INPUT_DIM}, got {W.shape}")
    if library() is None:
        raise RuntimeError(f"the fused kernel is unavailable: {unavailable_reason()}")
    call = jax.ffi.ffi_call(_TARGETS[dtype], jax.ShapeDtypeStruct(W.shape, dtype), vmap_method="expand_dims")
    operands = [jax.numpy.asarray(v, dtype) for v in (xs, y, W, a, s, learning_rate)]
    return call(*operands, pneg=np.float64(slopes[0]), ppos=np.float64(slopes[1]))
