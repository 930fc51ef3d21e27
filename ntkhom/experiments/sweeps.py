"""Sweeps of the NTK's smallest eigenvalue along the homotopy path, over widths and seeds.

sigma_s(x) = (1 - s) x + s phi(x) goes from linear (s = 0) to ReLU (s = 1) to relaxation (s > 1, HRTA).
:func:`kernel_lambda_min_path` builds the kernels of one network and hands them to the generic certified
solver :func:`ntkhom.eigenpath.lambda_min_path`:

- two-layer networks: the NTK is exactly K(s) = K0 + s K1 + s^2 K2 at any width and at infinite width
  (:class:`ntkhom.kernels.KernelPath`), so a whole path costs three matrices and the reduced-basis sweep;
- deeper networks have no polynomial shortcut (finite width: higher degree; infinite width: not polynomial),
  so the kernel is recomputed at each s (neural-tangents) and fully diagonalised.

:func:`homotopy_spectra` runs this at infinite width and at several finite widths and seeds and yields one
:class:`PathResult` per finished (width, seed), so an interrupted sweep keeps what finished;
:func:`summarize_widths` gives the mean and spread over seeds.

Reference: HRTA (Yang, Chen, Hao: homotopy activation and relaxation s > 1); Du, Zhai, Poczos, Singh
(ICLR 2019) for lambda_min(H) as the convergence rate of gradient descent.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from ntkhom.data import is_whole
from ntkhom.eigenpath import LambdaMinPath, PathPoint, check_s_grid, lambda_min_path, spectrum_path
from ntkhom.kernels import empirical_kernel_path, empirical_ntk, infinite_kernel_path, infinite_ntk
from ntkhom.models import HomotopyMLP, Params
from ntkhom.spectrum import Spectrum, spectrum

__all__ = [
    "INFINITE",
    "PathResult",
    "check_widths",
    "kernel_lambda_min_path",
    "homotopy_spectra",
    "summarize_widths",
]

#: The width label of the infinite-width kernel in results.
INFINITE = "inf"


def check_widths(widths) -> tuple[int, ...]:
    """Finite widths as positive integers (may be empty only if infinite width is also asked for)."""
    widths = tuple(widths)
    for width in widths:
        if not is_whole(width):
            raise ValueError(f"every width must be a positive integer, got widths = {list(widths)}")
    return tuple(int(w) for w in widths)


@dataclasses.dataclass(frozen=True)
class PathResult:
    """The lambda_min path of one network: ``width`` is an int or :data:`INFINITE`; ``seed`` None at infinity."""

    width: int | str
    seed: int | None
    path: LambdaMinPath
    depth: int
    spectra: dict[float, Spectrum] = dataclasses.field(default_factory=dict)

    def rows(self) -> list[dict]:
        return [{"width": self.width, "seed": self.seed, "depth": self.depth, **p.row()} for p in self.path.points]


def kernel_lambda_min_path(
    model: HomotopyMLP,
    x,
    s_grid,
    *,
    params: Params | None = None,
    method: str = "reduced",
    densities_at: Sequence[float] = (),
    on_point: Callable[[PathPoint], None] | None = None,
) -> tuple[LambdaMinPath, dict[float, Spectrum]]:
    """lambda_min of the NTK of one network along s, and its full spectrum at the s values in ``densities_at``.

    Args:
      model: the network; with ``params=None`` its infinite-width NTK (:func:`ntkhom.kernels.infinite_ntk`),
        else the empirical NTK of ``params`` (:func:`ntkhom.kernels.empirical_ntk`).
      x: inputs, shape (n, d).
      s_grid: strictly increasing s values, shape (k,).
      method: for two-layer networks, the method of :func:`ntkhom.eigenpath.lambda_min_path` on the exact
        three-matrix path; deeper networks recompute the kernel per s and always take a full ``"eigh"``.
      densities_at: s values of the grid at which the full spectrum is returned too (for density plots).
      on_point: called with each finished :class:`ntkhom.eigenpath.PathPoint`.

    Returns:
      ``(path, spectra)``: the :class:`ntkhom.eigenpath.LambdaMinPath` and ``{s: Spectrum}``.
    """
    grid = check_s_grid(s_grid)
    densities_at = [float(s) for s in densities_at]
    if model.depth == 1:
        kpath = infinite_kernel_path(model, x) if params is None else empirical_kernel_path(model, params, x)
        path = lambda_min_path(kpath, grid, method=method, on_point=on_point)
        spectra = dict(zip(densities_at, spectrum_path(kpath, densities_at))) if densities_at else {}
        return path, spectra
    kept = {}

    def kernel_at(s: float):
        K = infinite_ntk(model, x, s=s) if params is None else empirical_ntk(model, params, x, s=s)
        if s in densities_at:  # each kernel is computed once; the few wanted in full are kept
            kept[s] = K
        return K

    path = lambda_min_path(kernel_at, grid, method="eigh", on_point=on_point)
    return path, {s: spectrum(kept[s]) for s in densities_at if s in kept}


def _with_width(model: HomotopyMLP, width: int) -> HomotopyMLP:
    return dataclasses.replace(model, widths=(int(width),) * model.depth)


def _seed_key(key, width: int, seed: int):
    import jax

    return jax.random.fold_in(jax.random.fold_in(key, int(width)), int(seed))


def homotopy_spectra(
    model: HomotopyMLP,
    x,
    s_grid,
    widths: Sequence[int],
    seeds: int,
    key,
    *,
    infinite: bool = True,
    densities_at: Sequence[float] = (),
    method: str = "reduced",
    on_point: Callable[[int | str, int | None, PathPoint], None] | None = None,
) -> Iterator[PathResult]:
    """lambda_min(s) along the homotopy path at infinite width and at each finite width for ``seeds`` seeds.

    Args:
      model: the network template (depth, phi, biases, ``trained``); its widths are replaced by
        (w,) * depth for each w in ``widths``. See :func:`kernel_lambda_min_path` for how each path is computed.
      x: inputs, shape (n, d).
      s_grid: strictly increasing s values, shape (k,).
      widths: finite hidden widths (positive integers); may be empty when ``infinite`` is True.
      seeds: number of random initializations per finite width (parameters from
        ``fold_in(fold_in(key, width), seed)``).
      key: a JAX PRNG key.
      densities_at: s values (on the grid) at which the full spectrum is kept for density plots.
      method: passed to :func:`kernel_lambda_min_path`.
      on_point: ``on_point(width, seed, point)`` after every finished s (for streaming rows to disk).

    Yields:
      one :class:`PathResult` per finished (width, seed), infinite width first.
    """
    grid = check_s_grid(s_grid)
    widths = check_widths(widths)
    if not is_whole(seeds):
        raise ValueError(f"seeds must be a positive integer, got {seeds}")
    if not widths and not infinite:
        raise ValueError("nothing to compute: widths is empty and infinite width is off")
    missing = [s for s in densities_at if not np.any(np.isclose(grid, float(s), rtol=0, atol=1e-12))]
    if missing:
        raise ValueError(f"densities_at values {missing} are not on the s grid")
    densities_at = [float(grid[np.argmin(np.abs(grid - float(s)))]) for s in densities_at]
    import jax.numpy as jnp

    x = jnp.asarray(x)
    jobs: list[tuple[int | str, int | None]] = [(INFINITE, None)] if infinite else []
    jobs += [(w, seed) for w in widths for seed in range(int(seeds))]
    for width, seed in jobs:
        def report(point, width=width, seed=seed):
            if on_point is not None:
                on_point(width, seed, point)

        if width == INFINITE:
            net, params = model, None
        else:
            net = _with_width(model, width)
            params = net.init(_seed_key(key, width, seed), x.shape[1])
        path, spectra = kernel_lambda_min_path(net, x, grid, params=params, method=method,
                                               densities_at=densities_at, on_point=report)
        yield PathResult(width, seed, path, model.depth, spectra)


def summarize_widths(results: Sequence[PathResult]) -> list[dict]:
    """Per (width, s): mean and standard deviation over seeds of the resolved lambda_min, and the number of
    seeds whose value was resolved; the infinite-width value beside each row when it is present."""
    infinite = {p.s: p for r in results if r.width == INFINITE for p in r.path.points}
    by_width: dict = {}
    for r in results:
        for p in r.path.points:
            by_width.setdefault((r.width, p.s), []).append(p)
    rows = []
    for (width, s), points in by_width.items():
        values = np.array([p.lambda_min for p in points if p.resolved])
        row = {
            "width": width,
            "s": s,
            "seeds": len(points),
            "resolved": int(values.size),
            "lambda_min_mean": float(values.mean()) if values.size else None,
            "lambda_min_std": float(values.std(ddof=1)) if values.size > 1 else (0.0 if values.size else None),
            "floor": float(max(p.floor for p in points)),
        }
        ref = infinite.get(s)
        if ref is not None and ref.resolved and width != INFINITE and values.size:
            row["relative_gap_to_infinite"] = float(abs(values.mean() - ref.lambda_min) / ref.lambda_min)
        rows.append(row)
    return rows
