"""lambda_min along the homotopy path without forming a kernel: kernel operators (:mod:`ntkhom.operators`),
their products sharded over every device (:func:`ntkhom.sharding.shard_operator`), and both ends of the
spectrum from one certified block Lanczos run (:mod:`ntkhom.eigensolvers`), started from the lambda_min
vector of the previous s.

The same sweep as the dense one (infinite width, then every finite width and seed, parameters from the
same keys), for sizes whose kernels do not fit in memory. Each point carries the certified interval
[value - bound, value] (``lower_bound``) and the floor n eps lambda_max; full spectra (densities) are not
computed on this path.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np

__all__ = ["matrix_free_spectra", "matrix_free_bytes", "basis_columns", "unsupported", "DEFAULT_TOLERANCE"]

#: Relative certified error asked of every lambda_min (and of lambda_max, which sets the floor).
DEFAULT_TOLERANCE = 1e-8


#: Lanczos basis columns the memory estimate budgets for. The deepest runs measured at n = 10^5 took 1295
#: columns (the empirical NTK at width 8192) and 3456 (the infinite-width NTK, 108 blocks of 32); see
#: docs/benchmarks.md. A deeper run grows its basis further, up to the eigensolvers' share of the available
#: memory (:data:`ntkhom.eigensolvers.BASIS_MEMORY_FRACTION`).
LANCZOS_COLUMNS = 4096


def _basis_bytes(n: int, depth: int) -> int:
    """A float64 Lanczos basis of ``depth`` columns of length n and its (depth, depth) projection."""
    return 8 * (n * depth + depth * depth)


def _fixed_bytes(n: int, d: int, widest: int, itemsize: int, native: bool) -> int:
    """Everything but the basis: the inputs and the solver's blocks (O(n d)), sign patterns (n m / 8 bytes;
    three times that with ``native``, whose host copies are packed both ways) and the operators' block
    buffers (:data:`ntkhom.operators.OPERATOR_BLOCK_BYTES`)."""
    from ntkhom.operators import OPERATOR_BLOCK_BYTES

    # The operators size their row or width blocks to OPERATOR_BLOCK_BYTES (a block is at most all n rows).
    blocks = min(2 * OPERATOR_BLOCK_BYTES, 8 * n * max(n, widest) * itemsize)
    patterns = (3 if native else 1) * (n * widest // 8)
    return int(itemsize * n * (4 * d + 64) + patterns + blocks)


def matrix_free_bytes(n: int, d: int, widest: int = 0, *, itemsize: int = 8, native: bool = False) -> int:
    """Estimated peak memory of the matrix-free path: a Lanczos basis of :data:`LANCZOS_COLUMNS` float64
    columns of length n (at most n of them) and its projection, and what :func:`_fixed_bytes` counts."""
    return _basis_bytes(n, min(n, LANCZOS_COLUMNS)) + _fixed_bytes(n, d, widest, itemsize, native)


def basis_columns(budget: int, n: int, d: int, widest: int = 0, *, itemsize: int = 8,
                  native: bool = False) -> int:
    """The deepest Lanczos basis (columns, at most n) that fits ``budget`` bytes beside the rest of the
    matrix-free path; 0 when even the rest does not fit."""
    room = budget - _fixed_bytes(n, d, widest, itemsize, native)
    if room <= 0:
        return 0
    # 8 (n k + k^2) <= room: the positive root of k^2 + n k - room / 8.
    depth = int((-n + math.sqrt(n * n + room / 2)) / 2)
    while depth > 0 and _basis_bytes(n, depth) > room:
        depth -= 1
    return min(n, depth)


def unsupported(model, *, infinite: bool) -> str:
    """Why the matrix-free path cannot run this network ("" when it can)."""
    if infinite and model.phi.slopes is None:
        return (f"the infinite-width operator has closed forms for the ReLU family only (got activation "
                f"{model.phi.name!r}); use --no-infinite")
    if model.out_dim != 1:
        return f"one output is supported (got {model.out_dim})"
    return ""


def native_problem(model, devices: int = 1) -> str:
    """Why native products (:mod:`ntkhom.native`) cannot serve this network's finite widths over ``devices``
    devices ("" when they can)."""
    from ntkhom import native

    if model.depth != 1 or model.phi.slopes is None or model.trained != "hidden":
        return (f"native products need a two-layer network with a ReLU-family activation and trained='hidden' "
                f"(got depth {model.depth}, activation {model.phi.name!r}, trained={model.trained!r})")
    if not native.available():
        return 'native products need numba: pip install "ntkhom[native]" (or uv sync --extra native)'
    if devices > 1:
        return (f"native products run on the host CPU of one process, not over {devices} devices; drop --native "
                "to shard the products")
    return ""


def _operator_at(net, params, x, native: bool = False):
    """s -> the kernel operator of ``net`` at s (params None: infinite width)."""
    from ntkhom import operators

    if params is None:
        base = operators.infinite_ntk_operator(net, x)
        return base.at
    if net.depth == 1:
        base = operators.two_layer_ntk_operator(net, params, x, native=native)
        return base.at
    return lambda s: operators.model_jacobian_ntk_operator(net, params, x, s=s)


def _path(operator_at: Callable, grid: np.ndarray, mesh, tol: float, report: Callable,
          on_progress: Callable | None = None, known: Callable | None = None,
          max_products: int | None = None) -> list:
    import jax

    from ntkhom import eigensolvers, sharding
    from ntkhom.eigenpath import PathPoint

    points, start = [], None
    for i, s in enumerate(grid):
        point = known(float(s)) if known is not None else None
        if point is not None:  # finished by an earlier run; the next s starts without a warm start
            points.append(point)
            start = None
            continue
        operator = operator_at(float(s))
        if mesh is not None and mesh.devices.size > 1:
            operator = sharding.shard_operator(operator, mesh)
        key = jax.random.fold_in(jax.random.PRNGKey(0), i)
        progress = None if on_progress is None else (lambda *args, s=float(s): on_progress(s, *args))
        # Both ends from one block Lanczos run, started from the lambda_min vector of the previous s.
        extremes = eigensolvers.extreme_spectrum(operator, 1, key=key, tol=tol, start=start, progress=progress,
                                                 max_products=max_products)
        low, top, result = extremes.lambda_min, extremes.lambda_max, extremes.smallest
        start = result.vectors
        # Before convergence value - bound is no lower bound on lambda_min (the interval holds an eigenvalue,
        # not necessarily the smallest), and the value is only an upper bound: the point is unresolved.
        converged = bool(result.converged)
        point = PathPoint(float(s), float(low.value), float(top.value), float(low.floor), float(low.residual),
                          "lanczos", int(result.iterations),
                          float(low.value - low.bound) if converged else float("nan"), converged)
        points.append(point)
        report(point)
    return points


def matrix_free_spectra(
    model,
    x,
    s_grid,
    widths: Sequence[int],
    seeds: int,
    key,
    *,
    infinite: bool = True,
    mesh=None,
    tol: float = DEFAULT_TOLERANCE,
    on_point: Callable | None = None,
    on_progress: Callable | None = None,
    known: Callable | None = None,
    native: bool = False,
    max_products: int | None = None,
) -> Iterator:
    """lambda_min(s) at infinite width and each finite width and seed, from kernel products only.

    Arguments as :func:`ntkhom.experiments.sweeps.homotopy_spectra` (the networks and their parameters are the same);
    ``mesh``: shard every product over this mesh (:func:`ntkhom.sharding.device_mesh`; None: one device);
    ``on_progress(width, seed, s, depth, eigenvalues, products)``: called at each certificate check of every
    Lanczos run (at n = 10^5 one s takes the better part of an hour on two cores); ``known(width, seed, s)``:
    a :class:`ntkhom.eigenpath.PathPoint` finished by an earlier run, which is not computed again (or None).
    ``on_point`` is called for the points computed here only. ``native``: finite-width products by
    :mod:`ntkhom.native` on the host CPU of one process (two-layer ReLU-family networks; not with a mesh of
    several devices). ``max_products``: the most columns each Lanczos run multiplies, hence its basis holds
    (:func:`basis_columns` gives the most that fit a memory budget; None: the eigensolvers' default share of
    the available memory); a run that needs more stops there, its point unresolved.

    Yields:
      one :class:`ntkhom.experiments.sweeps.PathResult` per finished (width, seed), infinite width first,
      without spectra.
    """
    import jax.numpy as jnp

    from ntkhom.eigenpath import LambdaMinPath, check_s_grid
    from ntkhom.experiments.sweeps import INFINITE, PathResult, _seed_key, _with_width, check_widths

    grid = check_s_grid(s_grid)
    widths = check_widths(widths)
    problem = unsupported(model, infinite=infinite)
    if not problem and native and widths:
        problem = native_problem(model, 1 if mesh is None else mesh.devices.size)
    if problem:
        raise ValueError(f"matrix-free spectra: {problem}")
    x = jnp.asarray(x)
    jobs = ([(INFINITE, None)] if infinite else []) + [(w, seed) for w in widths for seed in range(int(seeds))]
    for width, seed in jobs:
        def report(point, width=width, seed=seed):
            if on_point is not None:
                on_point(width, seed, point)

        if width == INFINITE:
            operator_at = _operator_at(model, None, x)
        else:
            net = _with_width(model, width)
            operator_at = _operator_at(net, net.init(_seed_key(key, width, seed), x.shape[1]), x, native)
        progress = None if on_progress is None else (
            lambda *args, width=width, seed=seed: on_progress(width, seed, *args))
        finished = None if known is None else (lambda s, width=width, seed=seed: known(width, seed, s))
        points = _path(operator_at, grid, mesh, tol, report, progress, finished, max_products)
        yield PathResult(width, seed, LambdaMinPath(tuple(points)), model.depth, {})
