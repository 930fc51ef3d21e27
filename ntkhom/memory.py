"""Memory estimates before large allocations, and allocation failures as one readable line.

:func:`check_memory` compares the bytes a computation will ask for with what the device (or, on CPU, the
host) has, and refuses early with the size asked for; :func:`allocation_failure` recognizes an XLA
out-of-memory error and returns that size, so a command can report it in one line.
"""

from __future__ import annotations

import math
import os
import re

__all__ = ["MemoryLimitError", "allocation_failure", "array_bytes", "available_bytes", "check_memory",
           "format_bytes", "kernel_bytes", "jacobian_bytes"]

#: Share of the available memory a single computation may plan to use (the rest: XLA buffers, Python, BLAS).
USABLE_FRACTION = 0.8


class MemoryLimitError(ValueError):
    """A computation would need more memory than is available."""


def format_bytes(nbytes: float) -> str:
    """``nbytes`` in B, KiB, MiB, GiB or TiB (three significant digits)."""
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.3g} {unit}"
        value /= 1024
    return f"{value:.3g} TiB"  # pragma: no cover


def array_bytes(shape, *, copies: int = 1, itemsize: int = 8) -> int:
    """Bytes of ``copies`` arrays of ``shape`` with ``itemsize``-byte entries (8: float64)."""
    return int(copies) * math.prod(int(size) for size in shape) * int(itemsize)


def kernel_bytes(n: int, *, matrices: int = 1, itemsize: int = 8) -> int:
    """Bytes of ``matrices`` dense (n, n) matrices of ``itemsize``-byte entries (8: float64)."""
    return int(matrices) * int(n) ** 2 * int(itemsize)


def jacobian_bytes(n: int, parameters: int, *, outputs: int = 1, itemsize: int = 8) -> int:
    """Bytes of the Jacobian of ``n * outputs`` network outputs by ``parameters`` parameters."""
    return int(n) * int(outputs) * int(parameters) * int(itemsize)


def available_bytes(device=None) -> int | None:
    """Memory a computation can use on ``device`` (default: JAX's first device): the accelerator's limit
    from ``memory_stats()``, or on CPU the host's available memory; None when unknown."""
    try:
        import jax

        device = device if device is not None else jax.devices()[0]
        stats = device.memory_stats() if device.platform != "cpu" else None
    except Exception:  # noqa: BLE001 - no backend or no stats: fall back to the host
        stats = None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(nbytes: int, what: str, *, device=None, fraction: float = USABLE_FRACTION,
                 alternative: str = "use smaller sizes") -> None:
    """Raise :class:`MemoryLimitError` when ``nbytes`` exceed ``fraction`` of :func:`available_bytes`.

    Args:
      nbytes: the planned allocation in bytes.
      what: what needs it, naming the arguments that set its size (e.g. ``"--n 60000: three (n, n)
        float64 kernels"``); starts the message.
      device: a JAX device (default: the first).
      fraction: share of the available memory the computation may use.
      alternative: what to do instead, ending the message.
    """
    available = available_bytes(device)
    if available is None or nbytes <= fraction * available:
        return
    raise MemoryLimitError(f"{what} needs {format_bytes(nbytes)}, but only {format_bytes(available)} is "
                           f"available; {alternative}")


_SIZE = re.compile(r"allocat\w*\s+(\d+)\s*bytes", re.IGNORECASE)
_SIZE_UNIT = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]i?B)\b")


def allocation_failure(error: BaseException) -> str | None:
    """For an out-of-memory error of XLA (or a MemoryError), a one-line description with the size asked
    for; None for any other error."""
    text = str(error)
    if not (isinstance(error, MemoryError) or "RESOURCE_EXHAUSTED" in text or "Out of memory" in text
            or "out of memory" in text):
        return None
    match = _SIZE.search(text)
    if match:
        size = format_bytes(int(match.group(1)))
    else:
        unit = _SIZE_UNIT.search(text)
        size = f"{unit.group(1)} {unit.group(2)}" if unit else "an unknown size"
    return f"out of memory: an allocation of {size} failed; use smaller sizes"
