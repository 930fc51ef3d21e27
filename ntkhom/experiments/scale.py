"""Dense or matrix-free: which way a spectrum command goes at its size, decided from a memory estimate
before any work.

The dense path holds (n, n) float64 matrices (the three coefficients of K(s), K(s) itself and a work
matrix: 5 n^2 8 bytes, 134 GiB at n = 60000). The matrix-free path (:mod:`ntkhom.experiments.matrix_free`)
holds O(n (d + k)) numbers, k the depth of its Lanczos basis. Both also hold what grows with d: the inputs
(n, d) as they are loaded and the network's first-layer weights (m, d), which dominate at a large d.
``--memory-gb`` sets the budget (default: the memory available on this machine,
:func:`ntkhom.memory.available_bytes`, of which :data:`ntkhom.memory.USABLE_FRACTION` is planned for);
``--dense`` and ``--matrix-free`` force a path.
"""

from __future__ import annotations

import argparse
import warnings
from typing import NamedTuple

from ntkhom.experiments.common import positive_float

__all__ = ["PathChoice", "add_arguments", "choose_path", "budget_bytes", "dense_spectrum_bytes",
           "matrix_free_spectrum_bytes", "input_bytes", "check_inputs_fit", "parameter_bytes", "PATHS"]

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


#: (n, d) arrays alive at once while :func:`ntkhom.data.load` makes the inputs: the draw (or its normalized
#: copy), the normalized inputs, and the squares :func:`ntkhom.data.check_inputs` sums.
INPUT_COPIES = 3

#: Width of the teacher whose (d, width) weights give the synthetic targets: the default width of
#: :func:`ntkhom.data.teacher_targets`, which :func:`ntkhom.data.load` uses.
TEACHER_WIDTH = 32


def input_bytes(n: int, d: int, *, itemsize: int = 8) -> int:
    """The inputs as they are loaded: :data:`INPUT_COPIES` (n, d) arrays and the teacher's (d, 32) weights."""
    return int(itemsize) * (INPUT_COPIES * int(n) * int(d) + TEACHER_WIDTH * int(d))


def parameter_bytes(d: int, widest: int = 0, depth: int = 1, *, itemsize: int = 8) -> int:
    """The widest network's parameters: m (d + 1) in the first layer, m (m + 1) in each further one and m + 1
    in the output layer (0 without a finite width)."""
    m = int(widest)
    if m == 0:
        return 0
    return int(itemsize) * (m * (int(d) + 1) + (int(depth) - 1) * m * (m + 1) + m + 1)


def dense_spectrum_bytes(n: int, d: int, widest: int = 0, depth: int = 1) -> int:
    """Peak memory of the dense spectrum path: five (n, n) float64 matrices (the three coefficients of K(s),
    K(s) and a work matrix), the widest network's Jacobian, n x m (d + 1) per layer, its parameters and the
    inputs (:func:`parameter_bytes`, :func:`input_bytes`)."""
    from ntkhom.memory import jacobian_bytes, kernel_bytes

    return (kernel_bytes(n, matrices=5) + jacobian_bytes(n, widest * (d + 1) * depth)
            + parameter_bytes(d, widest, depth) + input_bytes(n, d))


def matrix_free_spectrum_bytes(n: int, d: int, widest: int = 0, depth: int = 1, *, native: bool = False) -> int:
    """Peak memory of the matrix-free spectrum path: its Lanczos basis, blocks and sign patterns
    (:func:`ntkhom.experiments.matrix_free.matrix_free_bytes`), the widest network's parameters and the
    inputs as they are loaded."""
    from ntkhom.experiments.matrix_free import matrix_free_bytes

    return (matrix_free_bytes(n, d, widest, native=native) + parameter_bytes(d, widest, depth)
            + input_bytes(n, d))


def check_inputs_fit(args, *, n: int, d: int, widest: int = 0, depth: int = 1) -> None:
    """MemoryLimitError (one line) before the inputs are made, when they and the widest network's parameters
    alone exceed the budget (a large --d): otherwise making them kills the process before the path estimates
    of :func:`choose_path` are reached."""
    from ntkhom.memory import MemoryLimitError, format_bytes

    budget, source = budget_bytes(getattr(args, "memory_gb", None))
    needed = input_bytes(n, d) + parameter_bytes(d, widest, depth)
    if budget is not None and needed > budget:
        raise MemoryLimitError(f"the inputs at --n {n} --d {d} and the network need {format_bytes(needed)} before "
                               f"any kernel, more than {source}; use a smaller --n or --d")


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
    dense_text = (f"the dense path at --n {n} needs {format_bytes(dense_bytes)} for (n, n) float64 kernels, "
                  "the inputs and the network")
    limit = source
    products = f"kernel products, about {format_bytes(matrix_free_bytes)}"

    def choice(path, reason):
        return PathChoice(path, int(dense_bytes), int(matrix_free_bytes), budget, reason)

    if mode == "dense":
        if not dense_fits:
            smaller = "a smaller --n or --d"
            alternative = f"use {smaller}" if matrix_free_problem else f"use --matrix-free ({products}) or {smaller}"
            raise MemoryLimitError(f"--dense: {dense_text}, more than {limit}; {alternative}")
        return choice("dense", "--dense")
    if mode == "matrix-free" or not dense_fits:
        why = "--matrix-free" if mode == "matrix-free" else f"{dense_text}, more than {limit}"
        if matrix_free_problem:
            raise MemoryLimitError(f"{why}, and the matrix-free path cannot run these settings: "
                                   f"{matrix_free_problem}; use a smaller --n or --d")
        if not free_fits:
            raise MemoryLimitError(f"{why}, and the matrix-free path needs {format_bytes(matrix_free_bytes)}, "
                                   f"more than {limit}; use a smaller --n or --d")
        if mode == "auto":
            warnings.warn(f"{why}: using the matrix-free path ({products}); --dense insists on the dense one",
                          UserWarning, stacklevel=2)
        return choice("matrix-free", why)
    return choice("dense", f"fits: {format_bytes(dense_bytes)} of {limit}")
