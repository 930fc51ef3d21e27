"""Small helpers shared by the benchmarks: timing, peak memory, isolated cases and an environment line.

Timings are wall-clock seconds of a call followed by ``jax.block_until_ready`` (JAX dispatches
asynchronously, so an unblocked call would time only the dispatch). Peak memory is the process's resident
high-water mark (``VmHWM`` in ``/proc/self/status``), reset before the measured work through
``/proc/self/clear_refs``; to keep one case's allocations out of another's figure, run each case in its own
process with :func:`run_isolated`.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import metadata

__all__ = [
    "time_call",
    "reset_peak_memory",
    "peak_memory_bytes",
    "compiled_memory_bytes",
    "run_isolated",
    "environment_line",
    "format_bytes",
    "format_seconds",
]

_STATUS = "/proc/self/status"


def time_call(
    fn: Callable[[], object],
    *,
    repeats: int = 3,
    warmup: int = 1,
    budget_s: float | None = None,
    min_total_s: float = 0.0,
    max_repeats: int = 200,
) -> dict:
    """Time ``fn()`` (blocked until its result is ready): ``warmup`` untimed calls, then up to ``repeats``.

    Timed calls stop early once their total exceeds ``budget_s`` (at least one is always made), so a slow
    competitor is timed once instead of three times. Calls go on past ``repeats`` (up to ``max_repeats``)
    until they total ``min_total_s``, so a call of milliseconds is timed as many times as fits in the time
    a slow one takes thrice (timer and scheduler noise weigh more on short calls).
    Returns {"best", "median", "runs"} in seconds.
    """
    import jax

    if repeats <= 0 or warmup < 0:
        raise ValueError(f"time_call needs repeats > 0 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    for _ in range(warmup):
        jax.block_until_ready(fn())
    runs: list[float] = []
    while len(runs) < repeats or (sum(runs) < min_total_s and len(runs) < max_repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        runs.append(time.perf_counter() - start)
        if budget_s is not None and sum(runs) > budget_s:
            break
    return {"best": min(runs), "median": statistics.median(runs), "runs": runs}


def _status_kib(field: str) -> int | None:
    try:
        with open(_STATUS) as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_memory() -> bool:
    """Reset this process's resident high-water mark (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


def peak_memory_bytes() -> int | None:
    """Resident high-water mark of this process in bytes (since start or the last reset); None off Linux."""
    kib = _status_kib("VmHWM")
    return None if kib is None else 1024 * kib


def compiled_memory_bytes(compiled) -> int | None:
    """Bytes XLA plans to hold for one call of a compiled executable (``jax.jit(f).lower(...).compile()``):
    arguments + outputs + temporaries.

    Read from the executable's memory analysis without running it, so a competitor that would not fit can
    be skipped instead of exhausting the machine. None if the backend gives no analysis.
    """
    analysis = compiled.memory_analysis()
    if analysis is None:
        return None
    return int(analysis.argument_size_in_bytes + analysis.output_size_in_bytes + analysis.temp_size_in_bytes)


def run_isolated(argv: list[str], timeout_s: float) -> dict:
    """Run ``python *argv`` in a fresh process that prints one JSON object as its last stdout line.

    Returns that object, or {"status": "timed out"} / {"status": "out of memory"} / {"status": "failed: ..."}.
    A process killed by signal 9 or reporting RESOURCE_EXHAUSTED is counted as out of memory.
    """
    try:
        done = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"status": "timed out"}
    if done.returncode != 0:
        if done.returncode == -9 or "RESOURCE_EXHAUSTED" in done.stderr or "MemoryError" in done.stderr:
            return {"status": "out of memory"}
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        return {"status": f"failed: {last[:200]}"}
    lines = done.stdout.strip().splitlines()
    if not lines:
        return {"status": "failed: no output"}
    return json.loads(lines[-1])


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def environment_line() -> str:
    """One line: Python, jax/jaxlib/neural-tangents/numpy/numba versions, device, CPU count, x64 flag."""
    import jax

    device = jax.devices()[0]
    kind = getattr(device, "device_kind", device.platform)
    return (
        f"python {platform.python_version()} | jax {_version('jax')} | jaxlib {_version('jaxlib')} | "
        f"neural-tangents {_version('neural-tangents')} | numpy {_version('numpy')} | numba {_version('numba')} | "
        f"device {device.platform}:{kind} x{jax.device_count()} | {os.cpu_count()} cpu | "
        f"{platform.machine()} {platform.system()} | x64 {bool(jax.config.jax_enable_x64)}"
    )


def format_bytes(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value / 2**30:.2f} GiB" if value >= 2**30 else f"{value / 2**20:.0f} MiB"


def format_seconds(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3g} s" if value >= 0.01 else f"{value * 1e3:.3g} ms"
