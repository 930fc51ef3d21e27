"""Dense or matrix-free: which way a spectrum command goes at its size, decided from a memory estimate
before any work.

The dense path holds (n, n) float64 matrices (the three coefficients of K(s), K(s) itself and a work
matrix: 5 n^2 8 bytes, 134 GiB at n = 60000). The matrix-free path (:mod:`ntkhom.experiments.matrix_free`)
holds O(n (d + k)) numbers, k the depth of its Lanczos basis. ``--memory-gb`` sets the budget (default: the
memory available on this machine, :func:`ntkhom.memory.available_bytes`, of which
:data:`ntkhom.memory.USABLE_FRACTION` is planned for); ``--dense`` and ``--matrix-free`` force a path.
"""

from __future__ import annotations

import argparse
import warnings
from typing import NamedTuple

from ntkhom.experiments.common import positive_float

__all__ = ["PathChoice", "add_arguments", "choose_path", "budget_bytes", "dense_spectrum_bytes", "PATHS"]

#: Values of ``args.kernel_path``: decide from the estimate, or forced by --dense / --matrix-free.
PATHS = ("auto", "dense", "matrix-free")


class PathChoice(NamedTuple):
    """The path taken and the numbers it was decided on (bytes; ``budget`` None when unknown)."""

    path: str
    dense_bytes: int
    matrix_free_bytes: int
    budget: int | None
    reason: str

    def summary(self) -> dict:
        return self._asdict()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--memory-gb``, and ``--dense`` / ``--matrix-free`` (mutually exclusive), in one argument group."""
    group = parser.add_argument_group("memory")
    group.add_argument("--memory-gb", type=positive_float, default=None,
                       help="memory the command may use, in GiB (default: what this machine has available)")
    forced = group.add_mutually_exclusive_group()
    forced.add_argument("--dense", dest="kernel_path", action="store_const", const="dense",
                        help="always form the (n, n) kernels (refused up front when they do not fit)")
    forced.add_argument("--matrix-free", dest="kernel_path", action="store_const", const="matrix-free",
                        help="never form a kernel: products with kernel operators, sharded over every device")
    parser.set_defaults(kernel_path="auto", memory_gb=None)


def dense_spectrum_bytes(n: int, d: int, widest: int = 0, depth: int = 1) -> int:
    """Peak memory of the dense spectrum path: five (n, n) float64 matrices (the three coefficients of K(s),
    K(s) and a work matrix) and the widest network's Jacobian, n x m (d + 1) per layer."""
    from ntkhom.memory import jacobian_bytes, kernel_bytes

    return kernel_bytes(n, matrices=5) + jacobian_bytes(n, widest * (d + 1) * depth)


def budget_bytes(memory_gb: float | None) -> tuple[int | None, str]:
    """The byte budget and how to name it: ``--memory-gb``, or the usable share of the available memory."""
    from ntkhom.memory import USABLE_FRACTION, available_bytes, format_bytes

    if memory_gb is not None:
        budget = int(memory_gb * 2**30)
        return budget, f"--memory-gb {memory_gb:g} ({format_bytes(budget)})"
    available = available_bytes()
    if available is None:
        return None, "the available memory (unknown)"
    budget = int(USABLE_FRACTION * available)
    return budget, f"the {format_bytes(budget)} available here (set --memory-gb to change)"


def choose_path(args, *, n: int, dense_bytes: int, matrix_free_bytes: int, matrix_free_problem: str = "") -> PathChoice:
    """The path of a spectrum command: ``args.kernel_path`` ("auto", "dense", "matrix-free") and
    ``args.memory_gb`` against the two estimates.

    Raises :class:`ntkhom.memory.MemoryLimitError` (a ValueError, one line) when the path asked for does not
    fit, naming the size and the alternative; warns when "auto" switches to the matrix-free path.
    ``matrix_free_problem``: why the matrix-free path cannot run these settings ("" when it can).
    """
    from ntkhom.memory import MemoryLimitError, format_bytes

    mode = getattr(args, "kernel_path", "auto") or "auto"
    if mode not in PATHS:
        raise ValueError(f"kernel_path must be one of {PATHS}, got {mode!r}")
    budget, source = budget_bytes(getattr(args, "memory_gb", None))
    dense_fits = budget is None or dense_bytes <= budget
    free_fits = budget is None or matrix_free_bytes <= budget
    dense_text = f"the dense path at --n {n} needs {format_bytes(dense_bytes)} for (n, n) float64 kernels"
    limit = source
    products = f"kernel products, about {format_bytes(matrix_free_bytes)}"

    def choice(path, reason):
        return PathChoice(path, int(dense_bytes), int(matrix_free_bytes), budget, reason)

    if mode == "dense":
        if not dense_fits:
            alternative = f"use --matrix-free ({products}) or a smaller --n" if not matrix_free_problem else (
                "use a smaller --n")
            raise MemoryLimitError(f"--dense: {dense_text}, more than {limit}; {alternative}")
        return choice("dense", "--dense")
    if mode == "matrix-free" or not dense_fits:
        why = "--matrix-free" if mode == "matrix-free" else f"{dense_text}, more than {limit}"
        if matrix_free_problem:
            raise MemoryLimitError(f"{why}, and the matrix-free path cannot run these settings: "
                                   f"{matrix_free_problem}; use a smaller --n")
        if not free_fits:
            raise MemoryLimitError(f"{why}, and the matrix-free path needs {format_bytes(matrix_free_bytes)}, "
                                   f"more than {limit}; use a smaller --n")
        if mode == "auto":
            warnings.warn(f"{why}: using the matrix-free path ({products}); --dense insists on the dense one",
                          UserWarning, stacklevel=2)
        return choice("matrix-free", why)
    return choice("dense", f"fits: {format_bytes(dense_bytes)} of {limit}")
