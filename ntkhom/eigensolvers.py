"""Extreme eigenvalues of kernel operators, each with a residual certificate and the numerical floor.

Everything works from products K V (:mod:`ntkhom.operators`, or a matrix), in the operator's dtype (use
float64), and returns float64 numbers.

* :func:`lambda_max`, :func:`largest`, :func:`lambda_min`, :func:`smallest`, :func:`extreme_spectrum` —
  block Lanczos with full reorthogonalisation, grown until the certificates meet the tolerance; one run
  serves both ends. No preconditioner is needed: Lanczos resolves the few hundred outlying eigenvalues of an
  NTK (the low spherical-harmonic degrees) in about as many steps and then converges on the dense cluster at
  the bottom, in fewer products than preconditioned LOBPCG (:func:`smallest` gives the figures).
* LOBPCG (Knyazev, SIAM J. Sci. Comput. 23, 2001) preconditioned by (F F^T + mu I)^{-1}, F F^T a low-rank
  approximation of K from randomly pivoted Cholesky (Chen, Epperly, Tropp, Webber, CPAM 2024; block form)
  when the operator gives columns cheaply, or a Nystrom sketch (Frangella, Tropp, Udell, SIMAX 2023)
  otherwise: :func:`smallest` with ``method="lobpcg"``, ``rank`` or ``low_rank``.
  :func:`lambda_min_path` warm-starts each s from the vectors of the last.
* :func:`spectral_density` — stochastic Lanczos quadrature (Lin, Saad, Yang, SIAM Review 58, 2016).

Certificates. For a unit vector v and theta = v^T K v, some eigenvalue lies within the residual
r = ||K v - theta v|| of theta (K symmetric); with a gap delta between theta and the rest of the spectrum it
is within r^2 / delta (Kato-Temple). Each value carries ``residual`` (rigorous given the computed product)
and ``bound`` = min(r, r^2 / delta) + sqrt(n) eps lambda_max (rounding in the product), delta estimated from
the neighbouring Ritz values (less their own residuals, but at least half the distance to them). Residuals
are always recomputed from a fresh product at the end, never taken from the recurrence. The floor is
:func:`ntkhom.spectrum.numerical_floor` (n eps lambda_max); a value whose interval reaches the floor is
unresolved and printed as such.

Why not only library code. matfree (Kramer et al.) provides the fixed-depth Lanczos tridiagonalisation used
for quadratic forms (:mod:`ntkhom.krylov`) and :func:`spectral_density`; but its depth is fixed before the run
(a deeper one starts over, which for lambda_min, needing hundreds of steps, doubles the products) and it has no
block form, which the infinite-width operators want (a product of 32 columns costs what one does). Neither
matfree nor ``jax.experimental.sparse.linalg.lobpcg_standard`` (largest eigenvalues only, no preconditioner)
computes the smallest eigenvalues with a preconditioner, and matfree's partial Cholesky reads single entries,
whereas NTK operators give whole columns at a fraction of the cost per entry. So the growing block Lanczos,
LOBPCG and the block pivoted Cholesky are written here. Their outer loops and the basis live on the host, in
NumPy float64 (each step is dominated by one jitted product; the basis takes at most
:data:`BASIS_MEMORY_FRACTION` of the host's memory unless ``max_products`` says otherwise). With a native
operator (:mod:`ntkhom.native`, products on numba's threads) Lanczos multiplies by the basis on numba's threads
too and keeps BLAS to one thread, so that no idle BLAS thread competes with the next product.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
from matfree import decomp

from ntkhom.operators import as_operator, is_path_operator
from ntkhom.spectrum import numerical_floor, refuse_traced

__all__ = [
    "CertifiedEigenvalue",
    "certified_digits",
    "EigenResult",
    "LowRank",
    "SpectralDensity",
    "lambda_max",
    "lambda_min",
    "largest",
    "smallest",
    "lambda_min_path",
    "ExtremeSpectrum",
    "extreme_spectrum",
    "spectral_density",
    "rpcholesky",
    "nystrom",
    "default_block",
    "DEFAULT_TOLERANCE",
]

#: Relative certified error at which iterations stop (the bound, not the residual).
DEFAULT_TOLERANCE = 1e-10
#: Extra LOBPCG vectors beyond those asked for: they speed convergence and give the gap of the last one.
GUARD_VECTORS = 3
#: Relative size below which a direction of the LOBPCG search space is dropped as dependent.
_DROP = 1e-12


def certified_digits(value: float, bound: float, most: int = 12) -> str:
    """``value`` printed to the decimal place of ``bound`` (its leading digit), no further: 0.0101127175
    with a bound of 1.5e-8 prints as 0.01011272, and 0.0256 with 2e-2 as 0.03. At most ``most``
    significant digits (also where the bound is 0 or not finite)."""
    value, bound = float(value), float(bound)
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    if bound > 0 and math.isfinite(bound):
        digits = math.floor(math.log10(abs(value))) - math.floor(math.log10(bound)) + 1
    else:
        digits = most
    return f"{value:.{min(max(digits, 1), most)}g}"


class CertifiedEigenvalue(NamedTuple):
    """An eigenvalue estimate with its certificate (conventions of :class:`ntkhom.spectrum.Eigenvalue`).

    Attributes:
      value: the Ritz value theta (float64).
      floor: numerical floor of the kernel (n eps lambda_max).
      residual: ||K v - theta v|| for the unit Ritz vector: some eigenvalue lies in theta +- residual.
      bound: min(residual, residual^2 / gap), the error bound with the estimated gap.
    """

    value: float
    floor: float
    residual: float
    bound: float

    @property
    def resolved(self) -> bool:
        """Whether the whole certified interval lies above the floor."""
        return self.value - self.bound > self.floor

    @property
    def relative_bound(self) -> float:
        return self.bound / abs(self.value) if self.value != 0 else math.inf

    def __str__(self) -> str:
        if self.resolved:
            return f"{certified_digits(self.value, self.bound)} +- {self.bound:.1e} (floor {self.floor:.1e})"
        return f"< {max(self.floor, self.value + self.bound):.1e} (unresolved: at or below the numerical floor)"


class EigenResult(NamedTuple):
    """Eigenvalues (ascending), their unit eigenvectors (n, k) and the cost of finding them.

    ``products`` counts columns multiplied by K (a block of k columns counts k), ``converged`` says whether
    every bound met the tolerance (or the floor) within the budget.
    """

    eigenvalues: tuple[CertifiedEigenvalue, ...]
    vectors: jax.Array
    products: int
    iterations: int
    converged: bool
    seconds: float

    @property
    def values(self) -> np.ndarray:
        return np.array([e.value for e in self.eigenvalues])

    @property
    def bounds(self) -> np.ndarray:
        return np.array([e.bound for e in self.eigenvalues])


class LowRank(NamedTuple):
    """K ~ F F^T held as U diag(sigma^2) U^T (U (n, r) orthonormal), plus the trace of what it misses."""

    U: jax.Array
    sigma2: jax.Array
    residual_trace: float
    products: int


# -- products --------------------------------------------------------------------------------------------------
class _Counter:
    def __init__(self, operator):
        self.operator = operator
        self.columns = 0
        self.seconds = 0.0  # spent in products

    def __call__(self, V):
        """K V on the host in float64 (the small dense algebra around products stays in NumPy: no
        compilation per block shape)."""
        start = time.perf_counter()
        self.columns += V.shape[1]
        out = np.asarray(self.operator.matvec(jnp.asarray(V, self.operator.dtype)), np.float64)
        self.seconds += time.perf_counter() - start
        if not np.all(np.isfinite(out)):
            bad = int(np.count_nonzero(~np.isfinite(out)))
            raise FloatingPointError(
                f"a product K V gave {bad} non-finite value(s) (NaN or inf) after {self.columns} columns: the "
                "operator's data or parameters hold NaN or inf, or its entries overflow its dtype")
        return out


def _as_operator(K):
    # float32 operators are accepted: only their floor is higher.
    return as_operator(K)


def _certify(theta, residual, ritz, ritz_residual, floor, rounding) -> list[CertifiedEigenvalue]:
    """Bounds min(r, r^2 / gap) + rounding for the first len(theta) of the Ritz values ``ritz``.

    The gap of value i is estimated from every other Ritz value: its distance less that value's residual,
    but at least half the distance (a neighbour still converging has a large residual that would otherwise
    hide a real gap). It is an estimate, not a bound: the rigorous certificate is ``residual``."""
    out = []
    ritz, ritz_residual = np.asarray(ritz, np.float64), np.asarray(ritz_residual, np.float64)
    for i, (t, r) in enumerate(zip(theta, residual)):
        separation = np.abs(ritz - t)
        distance = np.delete(np.maximum(separation - ritz_residual, separation / 2), i)
        gap = float(np.min(distance)) if distance.size else 0.0
        bound = (min(r, r * r / gap) if gap > 0 else r) + rounding
        out.append(CertifiedEigenvalue(float(t), float(floor), float(r), float(bound)))
    return out


def _fresh_ritz(matvec, X):
    """Rayleigh-Ritz of K on span(X) from a fresh product: (Ritz vectors, values, residual norms, K X)."""
    return _fresh_ritz_each(matvec, [X])[0]


def _fresh_ritz_each(matvec, blocks):
    """:func:`_fresh_ritz` on each of ``blocks`` separately, from one product of them all (an infinite-width
    product costs about the same for 2 columns as for 1)."""
    bases = [_orthonormalize(X, X)[0] for X in blocks]
    KX_all = matvec(np.concatenate(bases, axis=1))
    out, start = [], 0
    for X in bases:
        KX = KX_all[:, start : start + X.shape[1]]
        start += X.shape[1]
        H = np.asarray(X.T @ KX, np.float64)
        theta, Y = np.linalg.eigh(0.5 * (H + H.T))
        X, KX = X @ Y, KX @ Y
        R = KX - X * theta[None, :]
        out.append((X, theta, np.linalg.norm(R, axis=0), KX))
    return out


def _rounding(lambda_max_value, n: int, dtype) -> float:
    """sqrt(n) eps lambda_max: the size of the rounding error of a computed product K v (sums of n terms
    whose errors add like a random walk); below it a residual says nothing. The worst case, n eps lambda_max,
    is the floor."""
    return math.sqrt(n) * float(jnp.finfo(dtype).eps) * abs(float(lambda_max_value))


def _ritz_residuals(matvec, X, theta):
    KX = matvec(X)
    R = KX - X * theta[None, :]
    return np.linalg.norm(R, axis=0), KX


# -- block Lanczos -------------------------------------------------------------------------------------------
#: Relative singular value below which a new Krylov direction counts as already in the basis.
_BREAKDOWN = 1e-12
#: Relative singular value (against the largest column norm before the last Gram-Schmidt pass) below which
#: new directions are orthogonalised against the basis once more.
_REORTHOGONALIZE = 1e-4
#: A Gram-Schmidt pass that leaves every column at least this share of its norm needs no second pass
#: (the criterion of Daniel, Gragg, Kaufman and Stewart, 1976).
_SECOND_PASS = 2**-0.5


class _BasisAlgebra:
    """The two products with the Lanczos basis that dominate a step's bookkeeping, Q^T W and W - Q C (Q stored by
    rows as Qt), and the context the solver runs in. NumPy (BLAS) here; :func:`_basis_algebra` chooses."""

    @staticmethod
    def project(Qt, W):
        return Qt @ W

    @staticmethod
    def subtract_projection(W, Qt, C):
        return W - Qt.T @ C

    @staticmethod
    def context():
        return contextlib.nullcontext()


class _NativeBasisAlgebra(_BasisAlgebra):
    """For operators whose products run on numba's threads (``native``): the basis products on those threads too
    (:func:`ntkhom.native.project`, whose docstring gives the measurement), and the rest of BLAS on one thread
    while the solver runs: OpenBLAS's threads spin for a while after each call and take the cores from the
    native product that follows."""

    @staticmethod
    def project(Qt, W):
        from ntkhom import native

        return native.project(Qt, W)

    @staticmethod
    def subtract_projection(W, Qt, C):
        from ntkhom import native

        return native.subtract_projection(W, Qt, C)

    @staticmethod
    def context():
        from threadpoolctl import threadpool_limits

        return threadpool_limits(limits=1, user_api="blas")


def _basis_algebra(operator) -> _BasisAlgebra:
    return _NativeBasisAlgebra() if getattr(operator, "native", False) is True else _BasisAlgebra()


class _BlockLanczos:
    """Block Lanczos with full reorthogonalisation, grown one block at a time on the host, so that it can run
    until a certificate is met rather than to a depth fixed in advance.

    Holds the orthonormal basis Q (n, m) and the projection H = Q^T K Q of the blocks already multiplied
    (the first ``done`` columns). The last block of Q, not yet multiplied, carries the residuals: for a Ritz
    pair (theta, y) of H, K Q y - theta Q y = Q_last C y_tail, C the coupling of the last step.

    Each product is first cleared of the two blocks the recurrence couples it to, then orthogonalised against
    the whole basis by classical Gram-Schmidt, a second time only where the first pass removed much of a
    column: one pass over the basis per step, where the basis (n x depth) is the largest thing in memory and
    reading it twice per pass is most of a step's bookkeeping. The basis is stored by rows (Q^T), so the
    columns in use are one contiguous block: reserved up front, its pages are only taken as they are written.
    """

    def __init__(self, matvec, V0: np.ndarray, capacity: int, rng: np.random.Generator, limit: int | None = None,
                 algebra: _BasisAlgebra | None = None):
        self.matvec = matvec
        self.algebra = algebra or _BasisAlgebra()
        self.n = V0.shape[0]
        self.limit = self.n if limit is None else int(limit)  # most columns the basis will be grown to hold
        self.rng = rng
        size = max(capacity, V0.shape[1])
        self.Qt = np.empty((size, self.n))
        self.H = np.zeros((size, size))
        self.done = 0
        self.m = 0
        self.previous = 0  # first column of the block multiplied before the newest one
        self.coupling = np.zeros((0, 0))
        self.scale = 0.0
        self.block = V0.shape[1]
        self.widest = self.block
        self._append(self._new_directions(np.asarray(V0, np.float64), np.inf, np.inf))

    @property
    def Q(self) -> np.ndarray:
        """The basis as columns, (n, capacity): a view of the stored rows."""
        return self.Qt.T

    @property
    def exhausted(self) -> bool:
        """Every direction of R^n is in the basis (the Ritz values are then the eigenvalues)."""
        return self.done >= self.n

    def _grow(self, size: int) -> None:
        if size <= self.Qt.shape[0]:
            return
        # Doubling, but never past the limit: at n = 10^5 a basis of 8192 columns would take 6.5 GB.
        capacity = max(size, min(2 * self.Qt.shape[0], self.limit, self.n))
        Qt = np.empty((capacity, self.n))
        Qt[: self.m] = self.Qt[: self.m]
        H = np.zeros((capacity, capacity))
        H[: self.m, : self.m] = self.H[: self.m, : self.m]
        self.Qt, self.H = Qt, H

    def _orthogonalize(self, W: np.ndarray, local: int | None = None) -> tuple[np.ndarray, np.ndarray, float]:
        """W less its part in span(Q[:, :m]), the coefficients removed, and the largest column norm before the
        last pass over the basis. ``local``: first clear W of Q[:, local:m] (cheap, the recurrence's blocks)."""
        basis = self.Qt[: self.m]
        coefficients = np.zeros((self.m, W.shape[1]))
        if local is not None and local < self.m:
            c = basis[local:] @ W
            W = W - basis[local:].T @ c
            coefficients[local:] += c
        for _ in range(2):  # twice is enough
            before = np.linalg.norm(W, axis=0)
            c = self.algebra.project(basis, W)
            W = self.algebra.subtract_projection(W, basis, c)
            coefficients += c
            if np.all(np.linalg.norm(W, axis=0) >= _SECOND_PASS * before):
                break
        return W, coefficients, float(before.max(initial=0.0))

    def _new_directions(self, W: np.ndarray, last: float, reference: float) -> tuple[np.ndarray, np.ndarray]:
        """Orthonormal directions of W (already orthogonal to Q; ``last``: its largest column norm before the
        last pass) and the coupling C with W = Q_new C, dropping those below _BREAKDOWN * reference (W then
        has no new direction there)."""
        U, sigma, Vt = np.linalg.svd(W, full_matrices=False)
        keep = sigma > _BREAKDOWN * reference if np.isfinite(reference) else sigma > 0
        U = U[:, keep]
        # Again against Q where a singular value sigma is small: the direction then carries W's leftover part
        # in Q (about eps * last) magnified by 1 / sigma. Above _REORTHOGONALIZE * last that is at most
        # eps / 1e-4 = 2.2e-12, and the pass is skipped.
        if self.m and (not np.isfinite(reference) or sigma[keep].min(initial=np.inf) < _REORTHOGONALIZE * last):
            U = self._orthogonalize(U)[0]
        U, _ = np.linalg.qr(U)
        return U, sigma[keep, None] * Vt[keep]

    def _append(self, directions) -> None:
        U, _ = directions
        room = self.n - self.m
        U = U[:, :room]
        self._grow(self.m + U.shape[1])
        self.Qt[self.m : self.m + U.shape[1]] = U.T
        self.m += U.shape[1]

    def step(self) -> None:
        """Multiply the newest block and orthogonalise the product into the next one."""
        lo, hi = self.done, self.m
        if hi == lo:  # the Krylov space is invariant: go on from a fresh random block, orthogonal to it
            fresh, _, last = self._orthogonalize(self.rng.standard_normal((self.n, max(self.block, 1))))
            self._append(self._new_directions(fresh, last, np.inf))
            self.coupling = np.zeros((self.m - hi, 0))
            self.previous = hi
            return
        W = np.asarray(self.matvec(self.Q[:, lo:hi]), np.float64)
        self.scale = max(self.scale, float(np.max(np.linalg.norm(W, axis=0))))
        W, coefficients, last = self._orthogonalize(W, local=self.previous)
        self.H[:hi, lo:hi] = coefficients
        self.H[lo:hi, :hi] = coefficients.T
        self.H[lo:hi, lo:hi] = 0.5 * (coefficients[lo:hi] + coefficients[lo:hi].T)
        self.done = hi
        U, coupling = self._new_directions(W, last, self.scale) if self.m < self.n else (
            np.zeros((self.n, 0)), np.zeros((0, hi - lo)))
        self._append((U, coupling))
        self.coupling = coupling[: U.shape[1]]
        self.block = hi - lo
        self.previous = lo
        self.widest = max(self.widest, self.block)

    def ritz(self, low: int, high: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The ``low`` smallest and ``high`` largest Ritz values (ascending, all of them if there are no more),
        their coefficient vectors in Q[:, :done] and residual norms ||C y_tail||.

        Only the wanted pairs are computed. With blocks of one column H is tridiagonal (bisection and inverse
        iteration, O(done) per pair); otherwise LAPACK's MRRR on the dense H (``driver="evr"``): its banded
        solver accumulates the whole orthogonal reduction to return vectors, measured on an H of depth 2240
        from blocks of 32 at 8.9 s against 0.79 s dense, and the cost of a check decides how often the
        certificates can be checked."""
        d = self.done
        H = self.H[:d, :d]
        ranges = [r for r in ((0, low - 1), (d - high, d - 1)) if r[1] >= r[0]]
        if d <= max(256, 2 * (low + high)):
            theta, Y = np.linalg.eigh(H)
        else:
            if self.widest == 1:
                parts = [scipy.linalg.eigh_tridiagonal(np.diagonal(H), np.diagonal(H, -1), select="i",
                                                       select_range=r) for r in ranges]
            else:
                parts = [scipy.linalg.eigh(H, subset_by_index=r, driver="evr", check_finite=False) for r in ranges]
            theta = np.concatenate([p[0] for p in parts])
            Y = np.concatenate([p[1] for p in parts], axis=1)
        width = self.coupling.shape[1]
        residual = np.linalg.norm(self.coupling @ Y[d - width :, :], axis=0) if width else np.zeros(theta.size)
        return theta, Y, residual

    def vectors(self, Y: np.ndarray) -> np.ndarray:
        return self.Q[:, : self.done] @ Y


#: Ritz values computed beyond those asked for at each end (their distances estimate the gaps).
RITZ_GUARD = 8
#: Factor by which the Lanczos depth grows between checks of the certificates (and at least four blocks; CHECK_SHARE
#: spaces expensive checks further). A run stops at the first check that passes, so a wide spacing is paid for
#: in products: at 1.02 the (a) benchmark at n = 20000 took 732 columns, at 1.005 702 (checks of a tridiagonal H
#: take milliseconds).
CHECK_GROWTH = 1.005
#: Most of the time in products that checks may take: a check (eigensolves of the projected matrix, 0.8 s at
#: depth 2240 with blocks of 32) waits until the products since the last one took 1 / CHECK_SHARE times as long.
CHECK_SHARE = 0.1
#: Share of the available host memory the Lanczos basis may fill when no budget is given.
BASIS_MEMORY_FRACTION = 0.25


def default_block(operator) -> int:
    """Columns per product the block solvers use for ``operator`` unless told: its ``preferred_block`` (an
    infinite-width product costs about the same for 1 or 32 columns: its kernel entries dominate), else 1."""
    return max(1, int(getattr(operator, "preferred_block", 1)))


def _basis_budget(n: int) -> int:
    """Most basis columns that fit BASIS_MEMORY_FRACTION of the available host memory (float64), at most n."""
    from ntkhom.memory import available_bytes

    available = available_bytes() or 8 * 2**30
    return int(min(n, max(64, BASIS_MEMORY_FRACTION * available // (8 * n))))


def _agreed(value: int) -> int:
    """``value`` as process 0 has it. Under jax.distributed every product is a collective, so every process
    must take the same steps; a schedule computed from a clock differs between processes."""
    if jax.process_count() == 1:
        return value
    from jax.experimental import multihost_utils

    return int(multihost_utils.broadcast_one_to_all(np.int32(value)))


def _krylov_extremes(K, k_small: int, k_large: int, *, key=None, tol: float = DEFAULT_TOLERANCE,
                     block: int | None = None, max_products: int | None = None, floor_dtype=None,
                     lambda_max_value: float | None = None, start=None,
                     progress=None) -> tuple[EigenResult, EigenResult]:
    """The k_small smallest and k_large largest eigenvalues from one block Lanczos run.

    The depth grows until every requested bound (estimated from the recurrence) meets the tolerance; the
    requested Ritz vectors are then checked with a fresh product, and the certificates come from that."""
    start_time = time.perf_counter()
    operator, n, key = _prepare(K, max(k_small, k_large), key, tol, max_products, block)
    counter = _Counter(operator)
    b = int(block) if block is not None else default_block(operator)
    if start is not None:  # a warm start: every given vector goes into the first block
        start = _check_start(start, n)
        b = max(b, start.shape[1])
    b = min(b, n)
    budget = int(max_products) if max_products is not None else _basis_budget(n)
    if budget < 1:
        raise ValueError(f"max_products must be positive, got {max_products}")
    V0 = np.array(jax.random.normal(key, (n, b), jnp.float64))
    if start is not None:
        V0[:, : start.shape[1]] = start
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel())
    # The basis holds what was multiplied and the next block: at most the budget and two blocks. It is
    # reserved up to what fits the memory share at once (pages are taken only as columns are written, so a
    # short run stays small and a long one never copies its basis to grow it); past that it doubles.
    reserve = min(n, min(budget, _basis_budget(n)) + 2 * b)
    algebra = _basis_algebra(operator)
    krylov = _BlockLanczos(counter, V0, reserve, rng, limit=budget + 2 * b, algebra=algebra)
    dtype = floor_dtype or operator.dtype
    next_check = min(n, max(2 * (k_small + k_large) + 8, 16, 4 * b))

    def certify(theta, residual, index, values, fresh, top_value):
        floor = numerical_floor(top_value, n, dtype)
        rounding = _rounding(top_value, n, operator.dtype)
        ritz, ritz_residual = theta.copy(), residual.copy()
        ritz[index], ritz_residual[index] = values, fresh
        return _certify(values, fresh, ritz, ritz_residual, floor, rounding), floor, rounding

    def met(eigen, floor, rounding):
        return all(e.bound <= max(tol * abs(e.value), floor) + rounding for e in eigen)

    with algebra.context():  # see _NativeBasisAlgebra
        while True:
            krylov.step()
            finished = krylov.exhausted or counter.columns >= budget
            if krylov.done < next_check and not finished:
                continue
            check_start = time.perf_counter()
            theta, Y, residual = krylov.ritz(k_small + RITZ_GUARD, k_large + RITZ_GUARD)
            d = theta.size
            top_value = lambda_max_value if lambda_max_value is not None else float(theta[-1])
            small_index, large_index = np.arange(min(k_small, d)), np.arange(d - min(k_large, d), d)
            low, floor, rounding = certify(theta, residual, small_index, theta[small_index], residual[small_index],
                                           top_value)
            high, _, _ = certify(theta, residual, large_index, theta[large_index], residual[large_index], top_value)
            if progress is not None:
                progress(counter.columns, low or high, counter.columns)
            if (met(low, floor, rounding) and met(high, floor, rounding)) or finished:
                wanted = [index for index in (small_index, large_index) if index.size]
                fresh_all = iter(_fresh_ritz_each(counter, [krylov.vectors(Y[:, index]) for index in wanted]))
                results = []
                for index in (small_index, large_index):
                    if index.size == 0:
                        results.append((np.zeros((n, 0)), []))
                        continue
                    X, values, fresh, _ = next(fresh_all)
                    if lambda_max_value is None and index is large_index:
                        top_value = max(top_value, float(values[-1]))
                    eigen, floor, rounding = certify(theta, residual, index, values, fresh, top_value)
                    results.append((X, eigen))
                (X_low, low), (X_high, high) = results
                if (met(low, floor, rounding) and met(high, floor, rounding)) or finished:
                    converged = met(low, floor, rounding) and met(high, floor, rounding)
                    break
            per_column = counter.seconds / max(counter.columns, 1)
            balance = (time.perf_counter() - check_start) / (CHECK_SHARE * per_column) if per_column > 0 else 0
            next_check = _agreed(min(n, max(krylov.done + 4 * b, int(CHECK_GROWTH * krylov.done),
                                            krylov.done + int(balance))))
    seconds = time.perf_counter() - start_time
    steps = krylov.done // max(b, 1)
    if not converged:
        _warn_unconverged("Lanczos", counter.columns, tol, [*low, *high])
    small = EigenResult(tuple(low), X_low, counter.columns, steps, converged, seconds)
    large = EigenResult(tuple(high), X_high, counter.columns, steps, converged, seconds)
    return small, large


# -- Lanczos --------------------------------------------------------------------------------------------------
def _lanczos_jit(steps: int):
    tridiag = decomp.tridiag_sym(steps, reortho="full", custom_vjp=False, materialize=True)

    @jax.jit
    def run(operator, v0):
        def matvec(v):
            return operator._matvec(v[:, None], _identity)[:, 0]

        Q, T, residual, _ = tridiag(matvec, v0)
        return Q, T, jnp.linalg.norm(residual)

    return run


def _identity(t):
    return t


_LANCZOS = {}


def lanczos(operator, v0, steps: int):
    """Lanczos tridiagonalisation with full reorthogonalisation (matfree): (Q (steps, n), T, beta)."""
    if np.shape(v0) != (operator.n,):
        raise ValueError(f"v0 must have shape (n,) = ({operator.n},), got {np.shape(v0)}")
    if not isinstance(v0, jax.core.Tracer):
        host = np.asarray(v0)
        if not np.all(np.isfinite(host)) or not np.any(host):
            raise ValueError("v0 must be a finite, nonzero vector (Lanczos normalises it)")
    steps = _count(steps, "steps", 1)
    if steps not in _LANCZOS:
        _LANCZOS[steps] = _lanczos_jit(steps)
    return _LANCZOS[steps](operator, v0)


def _count(value, name: str, least: int) -> int:
    """``value`` as an int, or a one-line ValueError when it is not a whole number >= ``least``."""
    if not (isinstance(value, int | np.integer) and not isinstance(value, bool) and value >= least):
        raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    return int(value)


def _check_start(start, n: int) -> np.ndarray:
    """A warm start as a finite (n, p) float64 array, p >= 1 (an (n,) vector is one column)."""
    array = np.asarray(start, np.float64)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2 or array.shape[0] != n or array.shape[1] == 0:
        raise ValueError(f"start must have shape (n,) or (n, p) with n = {n}, got {np.shape(start)}")
    if not np.all(np.isfinite(array)):
        raise ValueError("start contains non-finite values (NaN or inf)")
    if not np.any(array):
        raise ValueError("start is zero: it spans no direction to start from")
    return array


def _check_tolerance(tol) -> None:
    """A one-line ValueError unless ``tol`` is a relative error in [0, 1)."""
    if not (isinstance(tol, int | float | np.floating) and 0 <= tol < 1):
        raise ValueError(f"tol must be a relative error in [0, 1), got {tol!r}")


def _warn_unconverged(method: str, products: int, tol: float, eigen) -> None:
    """A RuntimeWarning, attributed to the caller's line: the budget ran out before every bound met the
    tolerance. The smallest Ritz value is still an upper bound on lambda_min (the largest a lower bound on
    lambda_max), and each bound still holds an eigenvalue; but that this eigenvalue is the extreme one is
    what convergence shows, and it was not reached."""
    import inspect

    budget = "max_products or the memory share of the basis" if method == "Lanczos" else \
        "max_products or max_iterations"
    worst = max(eigen, key=lambda e: e.relative_bound)
    frame, level = inspect.currentframe(), 1
    while frame is not None and frame.f_globals.get("__name__", "").startswith("ntkhom"):
        frame, level = frame.f_back, level + 1
    warnings.warn(f"{method} stopped after {products} products (its budget: {budget}) before the tolerance "
                  f"{tol:g}: the widest bound is {worst.bound:.1e} ({worst.relative_bound:.1e} relative), on {worst}. "
                  "Unconverged Ritz values bound lambda_min from above and lambda_max from below; each interval "
                  "holds an eigenvalue, possibly not the extreme one", RuntimeWarning, stacklevel=level)


def _prepare(K, k: int, key, tol: float | None = None, max_products: int | None = None,
             block: int | None = None):
    """The operator of K, its size n (checking 1 <= k <= n, and the options given) and the PRNG key
    (default PRNGKey(0))."""
    refuse_traced(K, "ntkhom.eigensolvers")
    operator = _as_operator(K)
    n = operator.n
    if not 1 <= _count(k, "k", 1) <= n:
        raise ValueError(f"k must be between 1 and n = {n}, got {k}")
    if tol is not None:
        _check_tolerance(tol)
    for name, value in (("max_products", max_products), ("block", block)):
        if value is not None:
            _count(value, name, 1)
    return operator, n, jax.random.PRNGKey(0) if key is None else key


def largest(K, k: int = 1, *, key=None, tol: float = DEFAULT_TOLERANCE, block: int | None = None,
            max_products: int | None = None, floor_dtype=None, progress=None) -> EigenResult:
    """The k largest eigenvalues by block Lanczos, run until every bound <= tol * |value|.

    Args:
      K: a kernel operator or a symmetric matrix (n, n).
      k: how many.
      key: PRNG key of the start block (default PRNGKey(0)).
      tol: relative certified error to reach.
      block: columns per product (default: the operator's ``preferred_block``, else 1).
      max_products: budget in columns multiplied (default: what memory allows, at most n).
      floor_dtype: dtype whose eps sets the floor (default: the operator's).
      progress: called as ``progress(columns, eigenvalues, products)`` at each check (host side).
    """
    _, top = _krylov_extremes(K, 0, _count(k, "k", 1), key=key, tol=tol, block=block, max_products=max_products,
                              floor_dtype=floor_dtype, progress=progress)
    return top


def lambda_max(K, **options) -> CertifiedEigenvalue:
    """Largest eigenvalue with its certificate (:func:`largest` with k = 1)."""
    return largest(K, 1, **options).eigenvalues[0]


# -- low-rank approximations -----------------------------------------------------------------------------------
def _from_factor(F, residual_trace, products) -> LowRank:
    U, sigma, _ = np.linalg.svd(np.asarray(F, np.float64), full_matrices=False)
    return LowRank(U, sigma**2, float(residual_trace), products)


def rpcholesky(K, rank: int, *, key, block: int = 64, tol: float = 1e-12) -> LowRank:
    """Block randomly pivoted Cholesky: K ~ F F^T from ``rank`` columns of K, pivots drawn with probability
    proportional to the diagonal of the residual (Chen, Epperly, Tropp, Webber 2024). Needs the operator's
    ``diagonal()`` and ``columns(index)``; stops early once the residual trace is below tol * trace(K).
    """
    operator = _as_operator(K)
    n = operator.n
    rank = int(min(_count(rank, "rank", 0), n))
    _count(block, "block", 1)
    residual = np.asarray(operator.diagonal(), np.float64).copy()
    initial = float(np.sum(residual))
    F = np.zeros((n, rank))
    filled = 0
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel())
    chosen = np.zeros(n, bool)
    while filled < rank:
        weights = np.clip(residual, 0, None)
        weights[chosen] = 0
        total = float(np.sum(weights))
        if total <= tol * initial:
            break
        size = min(block, rank - filled, int(np.count_nonzero(weights)))
        pivots = rng.choice(n, size=size, replace=False, p=weights / total)
        chosen[pivots] = True
        G = np.asarray(operator.columns(jnp.asarray(pivots)), np.float64) - F[:, :filled] @ F[pivots, :filled].T
        core = 0.5 * (G[pivots] + G[pivots].T)
        # An eigen-factor of the core (not a plain Cholesky): drops directions that rounding made dependent.
        lam, vec = np.linalg.eigh(core)
        keep = lam > _DROP * max(float(lam[-1]), 0.0) if lam[-1] > 0 else np.zeros_like(lam, bool)
        if not np.any(keep):
            break
        new = G @ (vec[:, keep] / np.sqrt(lam[keep]))
        F[:, filled:filled + new.shape[1]] = new
        filled += new.shape[1]
        residual = residual - np.sum(new**2, axis=1)
    F = F[:, :filled]
    return _from_factor(F, max(float(np.sum(np.clip(residual, 0, None))), 0.0), 0)


def nystrom(K, rank: int, *, key) -> LowRank:
    """Randomized Nystrom approximation from ``rank`` products with a Gaussian sketch (Frangella, Tropp,
    Udell 2023), with the stabilising shift of Li et al.; for operators without cheap columns."""
    operator = _as_operator(K)
    n = operator.n
    rank = int(min(_count(rank, "rank", 1), n))
    omega, _ = jnp.linalg.qr(jax.random.normal(key, (n, rank), operator.dtype))
    Y = operator.matvec(omega)
    shift = float(jnp.finfo(Y.dtype).eps) * float(jnp.linalg.norm(Y)) * math.sqrt(n)
    Y = Y + shift * omega
    core = omega.T @ Y
    C = jnp.linalg.cholesky(0.5 * (core + core.T))
    B = jax.scipy.linalg.solve_triangular(C, Y.T, lower=True).T
    U, sigma, _ = jnp.linalg.svd(B, full_matrices=False)
    sigma2 = jnp.maximum(sigma**2 - shift, 0.0)
    # The trace of what the sketch misses is unknown without the diagonal; the smallest kept value stands in.
    return LowRank(np.asarray(U, np.float64), np.asarray(sigma2, np.float64), float(sigma2[-1]) * (n - rank),
                   rank)


def _preconditioner(low_rank: LowRank | None, n: int):
    """R -> (F F^T + mu I)^{-1} R up to a factor mu, mu the mean residual eigenvalue (scale does not matter
    to LOBPCG): R - U diag(sigma^2 / (sigma^2 + mu)) U^T R."""
    if low_rank is None:
        return lambda R: R
    U, sigma2 = low_rank.U, low_rank.sigma2
    mu = max(low_rank.residual_trace / max(n - U.shape[1], 1), float(np.max(sigma2)) * 1e-14, 1e-300)
    damping = sigma2 / (sigma2 + mu)

    def apply(R):
        return R - U @ ((U.T @ R) * damping[:, None])

    return apply


def _default_low_rank(operator, rank, key):
    if rank == 0:
        return None
    try:
        operator.diagonal()
        return rpcholesky(operator, rank, key=key)
    except NotImplementedError:
        return nystrom(operator, rank, key=key)


# -- LOBPCG ----------------------------------------------------------------------------------------------------
def _orthonormalize(S, KS, drop=_DROP):
    """Orthonormal basis of span(S) (SVQB, dependent directions dropped), with K times it."""
    norms = np.linalg.norm(S, axis=0)
    keep = norms > 0
    S, KS, norms = S[:, keep], KS[:, keep], norms[keep]
    S, KS = S / norms, KS / norms
    for _ in range(2):
        gram = np.asarray(S.T @ S, np.float64)
        lam, vec = np.linalg.eigh(0.5 * (gram + gram.T))
        keep = lam > drop * lam[-1]
        C = vec[:, keep] / np.sqrt(lam[keep])
        S, KS = S @ C, KS @ C
    return S, KS


def _rayleigh_ritz(S, KS, p: int) -> np.ndarray:
    """Coefficients C (columns(S), p) of the p lowest Ritz vectors S C of K on span(S), S C orthonormal.

    Generalised Rayleigh-Ritz through the Gram matrix S^T S (directions it cannot tell apart from 0 are
    dropped), so S need not be orthonormal: near convergence the search directions are nearly dependent."""
    norms = np.maximum(np.linalg.norm(S, axis=0), 1e-300)
    gram = np.asarray((S / norms).T @ (S / norms), np.float64)
    mu, U = np.linalg.eigh(0.5 * (gram + gram.T))
    keep = mu > _DROP * mu[-1]
    B = U[:, keep] / np.sqrt(mu[keep])
    H = np.asarray((S / norms).T @ (KS / norms), np.float64)
    H = B.T @ (0.5 * (H + H.T)) @ B
    _, Y = np.linalg.eigh(H)
    C = (B @ Y[:, :p]) / np.asarray(norms, np.float64)[:, None]
    return C


def _project_out(X, KX, S, KS):
    for _ in range(2):
        coefficients = X.T @ S
        S, KS = S - X @ coefficients, KS - KX @ coefficients
    return S, KS


def _lobpcg(operator, X0, k, apply_preconditioner, *, tol, floor, rounding, max_iterations, max_products,
            sign=1.0, progress=None):
    """k extreme eigenpairs of sign * K (smallest of sign K) by LOBPCG from the block X0 (n, p >= k)."""
    counter = _Counter(operator)

    def matvec(V):
        return sign * counter(V)

    X, KX = _orthonormalize(X0, X0)
    KX = matvec(X)
    P = KP = None
    converged = False
    iteration = 0
    while iteration < max_iterations:
        iteration += 1
        H = np.asarray(X.T @ KX, np.float64)
        theta, Y = np.linalg.eigh(0.5 * (H + H.T))
        Yj = np.asarray(Y, X.dtype)
        X, KX = X @ Yj, KX @ Yj
        R = KX - X * np.asarray(theta, X.dtype)[None, :]
        r = np.asarray(np.linalg.norm(R, axis=0), np.float64)
        eigen = _certify(theta[:k], r[:k], theta, r, floor, rounding)
        if progress is not None:
            progress(iteration, eigen, counter.columns)
        if all(e.bound <= max(tol * abs(e.value), floor) + rounding for e in eigen):
            # Check with a fresh product: the tracked K X may have drifted from the true one.
            X, theta, fresh, KX = _fresh_ritz(matvec, X)
            eigen = _certify(theta[:k], fresh[:k], theta, fresh, floor, rounding)
            if all(e.bound <= max(tol * abs(e.value), floor) + rounding for e in eigen):
                converged = True
                break
        if counter.columns >= max_products:
            break
        W = apply_preconditioner(R)
        W, _ = _project_out(X, KX, W, W)
        W = W / np.maximum(np.linalg.norm(W, axis=0), 1e-300)
        KW = matvec(W)
        if P is None:
            S, KS = np.concatenate([X, W], axis=1), np.concatenate([KX, KW], axis=1)
        else:
            S, KS = np.concatenate([X, W, P], axis=1), np.concatenate([KX, KW, KP], axis=1)
        C = _rayleigh_ritz(S, KS, X.shape[1])
        X, KX = S @ C, KS @ C
        # The new search direction: the part of the update outside the old block (Knyazev's P).
        p = C.shape[1]
        P, KP = S[:, p:] @ C[p:], KS[:, p:] @ C[p:]
        scale = np.maximum(np.linalg.norm(P, axis=0), 1e-300)
        P, KP = P / scale, KP / scale
    if not converged:
        # Out of budget: certify the current block with a fresh product.
        X, theta, fresh, KX = _fresh_ritz(matvec, X)
        eigen = _certify(theta[:k], fresh[:k], theta, fresh, floor, rounding)
    return X, theta, eigen, counter.columns, iteration, converged


def smallest(K, k: int = 1, *, key=None, tol: float = DEFAULT_TOLERANCE, method: str = "auto",
             block: int | None = None, rank: int | None = None, low_rank: LowRank | None = None, start=None,
             lambda_max_value: float | None = None, max_iterations: int = 500, max_products: int | None = None,
             guard: int = GUARD_VECTORS, floor_dtype=None, progress=None) -> EigenResult:
    """The k smallest eigenvalues, each with a certificate, by block Lanczos or preconditioned LOBPCG.

    Lanczos needs no preconditioner and, at the bottom of NTK spectra (a dense cluster under a few hundred
    outliers), fewer products than LOBPCG even with a rank-1024 one (n = 4000, case (a) of
    ``benchmarks/bench_large_spectra.py``: about 450 against 1400 + 1024). Either starts from ``start``.

    Args:
      K: a kernel operator or a symmetric matrix.
      k: how many.
      key: PRNG key (start block and pivots; default PRNGKey(0)).
      tol: relative certified error to reach (values at the floor stop there, flagged unresolved).
      method: "lanczos", "lobpcg", or "auto": LOBPCG when given a preconditioner (``rank`` or
        ``low_rank``), Lanczos otherwise.
      block: Lanczos columns per product (default: the operator's ``preferred_block``, else 1).
      rank: rank of the preconditioner's low-rank part (default min(n / 4, 1024); 0: none). It should exceed
        the number of outlying eigenvalues (for points on S^{d-1}: about 1 + d + d (d + 1) / 2, the low
        spherical-harmonic degrees).
      low_rank: a precomputed :class:`LowRank` (from :func:`rpcholesky` or :func:`nystrom`) to reuse.
      start: (n, p) block to start from (a warm start, e.g. the vectors of a neighbouring s).
      lambda_max_value: lambda_max if known (sets the floor); otherwise computed by :func:`lambda_max`.
      max_iterations, max_products: budget (products in columns).
      guard: extra vectors carried along (faster convergence, and the gap of the k-th value).
      floor_dtype: dtype whose eps sets the floor (default: the operator's).
      progress: called as ``progress(iteration, eigenvalues, products)`` after each iteration (host side).
    """
    if method not in ("auto", "lanczos", "lobpcg"):
        raise ValueError(f"method must be 'auto', 'lanczos' or 'lobpcg', got {method!r}")
    k, guard, max_iterations = _count(k, "k", 1), _count(guard, "guard", 0), _count(max_iterations,
                                                                                 "max_iterations", 1)
    if rank is not None:
        rank = _count(rank, "rank", 0)
    if lambda_max_value is not None and not (isinstance(lambda_max_value, int | float | np.floating)
                                             and math.isfinite(lambda_max_value) and lambda_max_value > 0):
        raise ValueError(f"lambda_max_value must be a finite positive number, got {lambda_max_value!r}")
    if method == "auto":
        method = "lobpcg" if (rank is not None or low_rank is not None) else "lanczos"
    if method == "lanczos":
        small, _ = _krylov_extremes(K, k, 0, key=key, tol=tol, block=block, max_products=max_products,
                                    floor_dtype=floor_dtype, lambda_max_value=lambda_max_value, start=start,
                                    progress=progress)
        return small
    start_time = time.perf_counter()
    operator, n, key = _prepare(K, k, key, tol, max_products, block)
    key_start, key_rank, key_max = jax.random.split(key, 3)
    products = 0
    if lambda_max_value is None:
        top = largest(operator, 1, key=key_max, tol=1e-6)
        lambda_max_value, products = top.eigenvalues[0].value, top.products
    floor = numerical_floor(lambda_max_value, n, floor_dtype or operator.dtype)
    if low_rank is not None and np.shape(low_rank.U)[0] != n:
        raise ValueError(f"low_rank has {np.shape(low_rank.U)[0]} rows, but the operator has n = {n}")
    if low_rank is None:
        rank = int(min(n // 4, 1024)) if rank is None else int(rank)
        low_rank = _default_low_rank(operator, rank, key_rank)
    products += 0 if low_rank is None else low_rank.products
    p = min(k + guard, n)
    if 3 * p > n:
        p = k
    X0 = np.array(jax.random.normal(key_start, (n, p), jnp.float64))  # writable: a warm start goes in
    if start is not None:
        start = _check_start(start, n)[:, :p]
        X0[:, : start.shape[1]] = start
    apply = _preconditioner(low_rank, n)
    if start is None and low_rank is not None:
        X0 = apply(X0)
    budget = max_products if max_products is not None else 10**12
    X, theta, eigen, columns, iterations, converged = _lobpcg(
        operator, X0, k, apply, tol=tol, floor=floor, rounding=_rounding(lambda_max_value, n, operator.dtype),
        max_iterations=max_iterations, max_products=budget, progress=progress)
    if not converged:
        _warn_unconverged("LOBPCG", products + columns, tol, eigen)
    return EigenResult(tuple(eigen), X[:, :k], products + columns, iterations, converged,
                       time.perf_counter() - start_time)


def lambda_min(K, **options) -> CertifiedEigenvalue:
    """Smallest eigenvalue with its certificate (:func:`smallest` with k = 1)."""
    return smallest(K, 1, **options).eigenvalues[0]


def lambda_min_path(operator, s_values, *, k: int = 1, key=None, tol: float = DEFAULT_TOLERANCE,
                    rank: int | None = None, **options) -> list[EigenResult]:
    """lambda_min (k smallest) of ``operator.at(s)`` for each s, each solve started from the vectors of the
    previous s (and the preconditioner rebuilt at each s, cheap next to the products)."""
    if not is_path_operator(operator):
        raise TypeError(f"lambda_min_path needs a kernel-path operator with at(s) (ntkhom.operators: two-layer or "
                        f"infinite-width operators), got {type(operator).__name__}; for dense matrices along s use "
                        "ntkhom.eigenpath.lambda_min_path")
    key = jax.random.PRNGKey(0) if key is None else key
    results, start = [], None
    s_values = np.asarray(s_values, np.float64).ravel()
    if s_values.size == 0 or not np.all(np.isfinite(s_values)):
        raise ValueError(f"s_values must be a non-empty list of finite numbers, got {s_values.tolist()}")
    for i, s in enumerate(s_values):
        result = smallest(operator.at(float(s)), k, key=jax.random.fold_in(key, i), tol=tol, rank=rank,
                          start=start, **options)
        results.append(result)
        start = result.vectors
    return results


class ExtremeSpectrum(NamedTuple):
    """The k smallest and k largest eigenvalues of an operator, read like :class:`ntkhom.spectrum.Spectrum`."""

    smallest: EigenResult
    largest: EigenResult

    @property
    def n_computed(self) -> int:
        return len(self.smallest.eigenvalues) + len(self.largest.eigenvalues)

    @property
    def lambda_min(self) -> CertifiedEigenvalue:
        return self.smallest.eigenvalues[0]

    @property
    def lambda_max(self) -> CertifiedEigenvalue:
        return self.largest.eigenvalues[-1]

    @property
    def floor(self) -> float:
        return self.lambda_min.floor

    @property
    def resolved(self) -> bool:
        return self.lambda_min.resolved

    @property
    def condition(self) -> float:
        """lambda_max / lambda_min; inf when lambda_min is unresolved."""
        return self.lambda_max.value / self.lambda_min.value if self.resolved else math.inf

    def summary(self) -> dict:
        return {
            "lambda_min": self.lambda_min.value if self.resolved else None,
            "lambda_min_bound": self.lambda_min.bound,
            "lambda_max": self.lambda_max.value,
            "lambda_max_bound": self.lambda_max.bound,
            "condition": self.condition if self.resolved else None,
            "floor": self.floor,
            "resolved": self.resolved,
            "products": self.smallest.products + self.largest.products,
        }

    def __str__(self) -> str:
        return f"ExtremeSpectrum(lambda_min={self.lambda_min}, lambda_max={self.lambda_max})"


def extreme_spectrum(K, k: int = 1, *, key=None, tol: float = DEFAULT_TOLERANCE, floor_dtype=None,
                     **options) -> ExtremeSpectrum:
    """The k smallest and k largest eigenvalues with certificates: both from one block Lanczos run, or,
    where ``options`` ask for LOBPCG (see :func:`smallest`), the largest by Lanczos and then the smallest."""
    k = _count(k, "k", 1)
    key = jax.random.PRNGKey(0) if key is None else key
    lobpcg = options.get("method") == "lobpcg" or (options.get("method", "auto") == "auto" and any(
        options.get(name) is not None for name in ("rank", "low_rank")))
    if not lobpcg:
        unknown = set(options) - {"method", "block", "max_products", "progress", "start"}
        if unknown:
            raise TypeError(f"extreme_spectrum with Lanczos got unexpected options {sorted(unknown)}")
        bottom, top = _krylov_extremes(K, k, k, key=key, tol=tol, floor_dtype=floor_dtype,
                                       block=options.get("block"), max_products=options.get("max_products"),
                                       start=options.get("start"), progress=options.get("progress"))
        return ExtremeSpectrum(bottom, top)
    key_top, key_bottom = jax.random.split(key)
    top = largest(K, k, key=key_top, tol=tol, floor_dtype=floor_dtype)
    bottom = smallest(K, k, key=key_bottom, tol=tol, lambda_max_value=top.eigenvalues[-1].value,
                      floor_dtype=floor_dtype, **options)
    return ExtremeSpectrum(bottom, top)


# -- spectral density --------------------------------------------------------------------------------------------
class SpectralDensity(NamedTuple):
    """Stochastic Lanczos quadrature: for each probe, Gauss nodes (Ritz values) and weights.

    The density is mu(x) = mean over probes of sum_j weights_j delta(x - nodes_j); :meth:`smooth` gives it
    convolved with a Gaussian of width ``width``.
    """

    nodes: np.ndarray
    weights: np.ndarray
    products: int

    def smooth(self, grid, width: float) -> np.ndarray:
        grid = np.asarray(grid, np.float64)[:, None, None]
        kernel = np.exp(-0.5 * ((grid - self.nodes[None]) / width) ** 2) / (width * math.sqrt(2 * math.pi))
        return np.mean(np.sum(kernel * self.weights[None], axis=2), axis=1)

    def integrate(self, fn) -> float:
        """Estimate of (1/n) trace f(K) = integral f d mu."""
        return float(np.mean(np.sum(self.weights * fn(self.nodes), axis=1)))


def spectral_density(K, *, key=None, probes: int = 16, steps: int = 64) -> SpectralDensity:
    """Spectral density of K (normalised to total mass 1) by stochastic Lanczos quadrature with Rademacher
    probes; ``steps`` products per probe."""
    operator = _as_operator(K)
    n = operator.n
    probes, steps = _count(probes, "probes", 1), int(min(_count(steps, "steps", 1), n))
    key = jax.random.PRNGKey(0) if key is None else key
    nodes, weights = [], []
    for probe_key in jax.random.split(key, probes):
        v = jax.random.rademacher(probe_key, (n,), operator.dtype)
        _, T, _ = lanczos(operator, v, steps)
        theta, Y = np.linalg.eigh(np.asarray(T, np.float64))
        nodes.append(theta)
        weights.append(Y[0, :] ** 2)
    return SpectralDensity(np.array(nodes), np.array(weights), probes * steps)
