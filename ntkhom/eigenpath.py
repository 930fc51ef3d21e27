"""Certified smallest eigenvalues along a one-parameter family of symmetric matrices s -> A(s).

Nothing here knows where the matrices come from. A *matrix path* is either

- polynomial, A(s) = A0 + s A1 + s^2 A2: a sequence ``(A0, A1, A2)`` (or ``(A0, A1)``, ``(A0,)``) of (n, n)
  symmetric matrices, or any object with attributes ``K0, K1, K2`` (such as :class:`ntkhom.kernels.KernelPath`,
  the exact form of a two-layer homotopy NTK); or
- any callable ``s -> (n, n)`` symmetric matrix, evaluated once per s.

:func:`lambda_min_path` finds the smallest eigenvalue at every s of a sorted grid. On a polynomial path the
default, ``method="reduced"``, is a reduced-basis (Galerkin) sweep that needs no full eigendecomposition per s:

1. An orthonormal basis U (n x k, k << n) holds the lowest eigenvectors (and the top one) found at a few
   *anchor* values of s. With A_i U and U^T A_i U stored, the projected path U^T A(s) U = B0 + s B1 + s^2 B2
   is k x k at every s, and its lowest Ritz value theta is an upper bound on lambda_min(A(s)).
2. The Ritz vector v = U y is checked against the full matrix at O(n k) cost: A(s) v = (A0 U + s A1 U +
   s^2 A2 U) y, r = ||A(s) v - theta v||. Some eigenvalue lies within r of theta, and within r^2 / gap when
   the next Ritz value is gap above (the usual quadratic error of Ritz values). theta is accepted when the
   smaller of the two is <= tol * theta.
3. Where it is not, s becomes an anchor: A(s) is assembled and the certified shifted iteration below runs,
   warm-started from the basis' Ritz vectors; its vectors enrich U. Every ``anchor_every`` points an anchor
   is forced even when the residual test passed, as a check that no eigenvector has been missed: if the
   anchor's certified lambda_min lies below the accepted reduced value, the points since the previous anchor
   are recomputed with the enriched basis.

The anchor step (also ``method="subspace"`` at every s, on any path):

1. A(s) is assembled in float64 (Horner: (s A2 + A1) s + A0), or evaluated.
2. A shift sigma is put just below the expected lambda_min (the lowest Ritz value of the warm start, an upper
   bound, or the extrapolation of the last values, less a margin that adapts to the prediction error) and
   A(s) - sigma I is Cholesky-factored. Success proves lambda_min > sigma; failure widens the margin, down to
   sigma = 0, where failure means A(s) is not positive definite to working precision and that s falls back
   to ``eigh``.
3. Block inverse iteration (A(s) - sigma I)^{-1} V with Rayleigh-Ritz on A(s) after every step. Because
   lambda_1 - sigma is small against lambda_{p+1} - sigma, one or two steps converge even when the bottom of
   the spectrum is a tight cluster.
4. The lowest Ritz value theta is accepted by the same error test as above and reported with the bracket
   sigma < lambda_min <= theta; otherwise the s falls back to a float64 ``eigh``.

Every value carries the numerical floor n * eps * lambda_max (:func:`ntkhom.spectrum.numerical_floor`) of the
matrices' dtype; a value at or below it is flagged unresolved (it is then only an upper bound). Eigenvalues
are always float64 (NumPy/SciPy), whatever JAX's x64 flag.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable

import numpy as np
import scipy.linalg
import scipy.sparse.linalg

from ntkhom.data import is_whole
from ntkhom.spectrum import Spectrum, check_kernel, numerical_floor, spectrum

__all__ = [
    "PathPoint",
    "LambdaMinPath",
    "METHODS",
    "check_s_grid",
    "lambda_min_path",
    "spectrum_path",
]

#: Methods of :func:`lambda_min_path`: reduced-basis sweep with certified anchors (polynomial paths), the
#: certified warm-started subspace iteration at every s, or a full eigh at every s (the reference).
METHODS = ("reduced", "subspace", "eigh")
#: Up to this size BLAS runs single-threaded here: the per-s work is many small products, where threads
#: cost more in synchronisation than they give (badly so on a loaded machine).
SINGLE_THREAD_MAX_N = 1024


def _blas_threads(n: int, threads):
    """A context limiting BLAS threads (threadpoolctl, when installed); ``"auto"``: 1 for n <= 1024."""
    if threads == "auto":
        threads = 1 if n <= SINGLE_THREAD_MAX_N else None
    if threads is None:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # an optional speed-up only
        return contextlib.nullcontext()
    return threadpool_limits(limits=int(threads), user_api="blas")



# -- validation -------------------------------------------------------------------------------------------
def check_s_grid(s_grid) -> np.ndarray:
    """A 1-D, non-empty, finite, strictly increasing float64 grid of path parameters s, or ValueError."""
    grid = np.asarray(s_grid, dtype=np.float64)
    if grid.ndim == 0:
        grid = grid[None]
    if grid.ndim != 1 or grid.size == 0:
        raise ValueError(f"the s grid must be a non-empty 1-D sequence, got shape {grid.shape}")
    if not np.all(np.isfinite(grid)):
        raise ValueError(f"the s grid contains non-finite values (NaN or inf): {grid.tolist()}")
    if np.any(np.diff(grid) <= 0):
        raise ValueError("the s grid must be strictly increasing (sorted, no repeats); "
                         f"got {grid.tolist()}")
    return grid



# -- results ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class PathPoint:
    """lambda_min and lambda_max of A(s) at one s, with the floor and how lambda_min was obtained.

    ``lambda_min`` is the computed value (float64); when it is at or below ``floor`` it is only an upper bound
    and ``resolved`` is False. ``residual`` is ||A(s) v - lambda_min v|| for the unit eigenvector v found.
    ``method`` is ``"reduced"`` (Ritz value of the reduced basis, checked by its residual against the full
    matrix), ``"subspace"`` (certified iteration on the full matrix) or ``"eigh"`` (full float64
    eigendecomposition). ``lower_bound``: for ``"subspace"``, the shift sigma at which A(s) - sigma I had a
    Cholesky factor, so sigma < lambda_min <= ``lambda_min`` holds whatever the iteration found (up to
    rounding at the floor scale); NaN for ``"reduced"`` and ``"eigh"``.
    """

    s: float
    lambda_min: float
    lambda_max: float
    floor: float
    residual: float
    method: str
    iterations: int = 0
    lower_bound: float = float("nan")
    converged: bool = True

    @property
    def resolved(self) -> bool:
        """Above the floor, from an iteration that converged (an unconverged Ritz value is only an upper
        bound)."""
        return self.converged and self.lambda_min > self.floor

    def row(self) -> dict:
        """Plain numbers for JSON/CSV; an unresolved lambda_min is None, its upper bound beside it."""
        return {
            "s": self.s,
            "lambda_min": self.lambda_min if self.resolved else None,
            "lambda_min_computed": self.lambda_min,
            "lambda_max": self.lambda_max,
            "floor": self.floor,
            "resolved": self.resolved,
            "residual": self.residual,
            "method": self.method,
            "iterations": self.iterations,
            "lower_bound": self.lower_bound,
            "converged": self.converged,
        }

    @classmethod
    def from_row(cls, row: dict) -> PathPoint:
        """The point :meth:`row` describes (also after a JSON round trip, where NaN is the string "nan")."""
        converged = row.get("converged", True)
        return cls(float(row["s"]), float(row["lambda_min_computed"]), float(row["lambda_max"]),
                   float(row["floor"]), float(row["residual"]), str(row["method"]), int(row["iterations"]),
                   float(row["lower_bound"]), converged in (True, "True"))


@dataclasses.dataclass(frozen=True)
class LambdaMinPath:
    """A lambda_min path over a grid of s: arrays of shape (len(s),), float64."""

    points: tuple[PathPoint, ...]

    def _array(self, name):
        return np.array([getattr(p, name) for p in self.points], dtype=np.float64)

    @property
    def s(self) -> np.ndarray:
        return self._array("s")

    @property
    def lambda_min(self) -> np.ndarray:
        return self._array("lambda_min")

    @property
    def lambda_max(self) -> np.ndarray:
        return self._array("lambda_max")

    @property
    def floor(self) -> np.ndarray:
        return self._array("floor")

    @property
    def resolved(self) -> np.ndarray:
        return np.array([p.resolved for p in self.points], dtype=bool)

    @property
    def methods(self) -> list[str]:
        return [p.method for p in self.points]

    def ratio_to(self, s_ref: float = 1.0) -> np.ndarray:
        """lambda_min(s) / lambda_min(s_ref), NaN where either is unresolved; s_ref must be on the grid."""
        index = np.flatnonzero(np.isclose(self.s, s_ref, rtol=0, atol=1e-12))
        if index.size == 0:
            raise ValueError(f"s_ref = {s_ref} is not on the s grid")
        ref = self.points[int(index[0])]
        values = np.where(self.resolved, self.lambda_min, np.nan)
        return values / ref.lambda_min if ref.resolved else np.full(len(self.points), np.nan)


# -- the numerical core -------------------------------------------------------------------------------------
def _assemble(path: tuple[np.ndarray, np.ndarray, np.ndarray], s: float, out: np.ndarray) -> np.ndarray:
    """K(s) = (s K2 + K1) s + K0 into ``out`` (Horner: one buffer, no temporaries); a one-line error when an
    entry overflows (a huge |s|), which LAPACK would answer with "Eigenvalues did not converge"."""
    K0, K1, K2 = path
    with np.errstate(over="ignore", invalid="ignore"):
        np.multiply(K2, s, out=out)
        out += K1
        out *= s
        out += K0
    if not np.isfinite(out).all():  # one pass over K, next to the O(n^3) solve that follows
        raise ValueError(f"K(s) = K0 + s K1 + s^2 K2 at s = {s:g} has entries that overflow {out.dtype}: "
                         "use a smaller |s|")
    return out


def _top_eigenvalue(K: np.ndarray, v0: np.ndarray | None) -> tuple[float, np.ndarray]:
    """lambda_max by Lanczos (ARPACK), warm-started from the previous top eigenvector."""
    n = K.shape[0]
    if n <= 16:
        w, V = np.linalg.eigh(K)
        return float(w[-1]), V[:, -1]
    w, V = scipy.sparse.linalg.eigsh(K, k=1, which="LA", v0=v0, tol=1e-10)
    return float(w[0]), V[:, 0]


def _eigh_point(K: np.ndarray, s: float, block: int, floor_dtype) -> tuple[PathPoint, np.ndarray, np.ndarray]:
    w, V = np.linalg.eigh(K)
    floor = numerical_floor(max(abs(w[-1]), abs(w[0])), K.shape[0], floor_dtype)
    residual = float(np.linalg.norm(K @ V[:, 0] - w[0] * V[:, 0]))
    point = PathPoint(float(s), float(w[0]), float(w[-1]), floor, residual, "eigh", 0)
    return point, V[:, :block].copy(), V[:, -1].copy()


def _bottom_eigh_point(K: np.ndarray, s: float, block: int, floor_dtype):
    """As :func:`_eigh_point`, from the lowest ``block`` eigenpairs only (LAPACK evr, no back-transformation
    of the other vectors: about a third of a full eigh) and lambda_max by Lanczos."""
    w, V = scipy.linalg.eigh(K, subset_by_index=[0, block - 1], driver="evr", check_finite=False)
    lam_max, top = _top_eigenvalue(K, None)
    floor = numerical_floor(max(abs(lam_max), abs(w[0])), K.shape[0], floor_dtype)
    residual = float(np.linalg.norm(K @ V[:, 0] - w[0] * V[:, 0]))
    return PathPoint(float(s), float(w[0]), lam_max, floor, residual, "eigh", 0), V, top


def _predict(points: list[PathPoint], s: float) -> float | None:
    """lambda_min at s extrapolated (polynomial through the last <= 3 resolved points), or None."""
    known = [p for p in points[-3:] if p.resolved]
    if not known:
        return None
    xs = np.array([p.s for p in known])
    ys = np.array([p.lambda_min for p in known])
    coefficients = np.polyfit(xs, ys, len(known) - 1)
    value = float(np.polyval(coefficients, s))
    return value if value > 0 else None


def _error_bound(ritz: np.ndarray, residual: float) -> float:
    """How far the lowest Ritz value can be from an eigenvalue: the residual, or residual^2 / gap when the
    next Ritz value is a gap above it (the quadratic accuracy of Ritz values; the gap is estimated)."""
    gap = float(ritz[1] - ritz[0]) if ritz.size > 1 else 0.0
    return min(residual, residual**2 / gap) if gap > 0 else residual


def _subspace_point(K, s, V, top, tol, max_iter, floor_dtype, work, predicted, margin, lam_max=None):
    """Shifted block inverse iteration with Rayleigh-Ritz, warm-started from V; None when not certified.

    The shift sigma is placed just below the expected lambda_min (the smaller of the warm start's lowest Ritz
    value, an upper bound, and the extrapolation ``predicted``) by the relative ``margin``. Then
    (K - sigma)^{-1} has lambda_1 - sigma << lambda_2 - sigma even when the bottom of the spectrum is a
    cluster, and a step or two converge. A failed Cholesky means lambda_min < sigma: the margin is widened,
    down to sigma = 0, where a failure means K is not positive definite to working precision, and no Ritz
    value above a failed shift is accepted.
    """
    n = K.shape[0]
    if lam_max is None:  # else the caller knows lambda_max (and its eigenvector ``top``) already
        lam_max, top = _top_eigenvalue(K, top)
    floor = numerical_floor(lam_max, n, floor_dtype)
    KV = K @ V
    ritz, Y = np.linalg.eigh(V.T @ KV)
    V = V @ Y
    expected = float(ritz[0]) if predicted is None else min(float(ritz[0]), predicted)
    factor, shift, below = None, 0.0, math.inf
    for attempt in range(3):
        shift = max(expected * (1.0 - margin * 8.0**attempt), 0.0) if attempt < 2 else 0.0
        np.copyto(work, K)
        work[np.diag_indices(n)] -= shift
        try:
            factor = scipy.linalg.cho_factor(work, lower=True, overwrite_a=True, check_finite=False)
            break
        except np.linalg.LinAlgError:
            factor, below = None, min(below, shift)  # proof that lambda_min < shift
            if shift == 0.0:
                break
    if factor is None:
        return None, V, top, None
    for iteration in range(1, max_iter + 1):
        W = scipy.linalg.cho_solve(factor, V, check_finite=False)
        Q, _ = np.linalg.qr(W)
        KQ = K @ Q
        ritz, Y = np.linalg.eigh(Q.T @ KQ)
        V = Q @ Y
        r = KQ @ Y[:, 0] - ritz[0] * V[:, 0]
        theta, residual = float(ritz[0]), float(np.linalg.norm(r))
        # Some eigenvalue lies within the error bound of theta, and theta >= lambda_min (Ritz value). A failed
        # factorization proved lambda_min < ``below``: a theta above it is another eigenvalue (the warm start
        # missed the lowest eigenvector), so iterate on, then fall back to eigh.
        if theta < below and (theta <= floor or _error_bound(ritz, residual) <= tol * theta):
            point = PathPoint(float(s), theta, lam_max, floor, residual, "subspace", iteration, shift)
            return point, V, top, factor
    return None, V, top, None


#: Reduced sweep: Davidson corrections tried at one s before it becomes an anchor, and residuals per correction.
_CORRECTIONS = 1
_DAVIDSON_VECTORS = 4
#: Residual steps tried for lambda_max at one s (it only sets the floor; its eigenvector is well separated).
_TOP_STEPS = 4


class _ReducedBasis:
    """An orthonormal basis U (n, k) with K_i U and the projected path U^T K(s) U = A0 + s A1 + s^2 A2."""

    def __init__(self, coefficients: tuple[np.ndarray, np.ndarray, np.ndarray]):
        self.coefficients = coefficients
        n = coefficients[0].shape[0]
        self.U = np.zeros((n, 0))
        self.KU = [np.zeros((n, 0)) for _ in coefficients]
        self.A = [np.zeros((0, 0)) for _ in coefficients]

    @property
    def size(self) -> int:
        return self.U.shape[1]

    def add(self, W: np.ndarray) -> None:
        """Extend U by the part of W's columns outside span(U) (Gram-Schmidt twice, rank-revealing QR)."""
        for _ in range(2):
            W = W - self.U @ (self.U.T @ W)
        Q, R = np.linalg.qr(W)
        diag = np.abs(np.diag(R))
        Q = Q[:, diag > 1e-10 * max(float(diag.max(initial=0.0)), np.finfo(np.float64).tiny)]
        if Q.shape[1] == 0:
            return
        Q = Q - self.U @ (self.U.T @ Q)
        Q, _ = np.linalg.qr(Q)
        KQ = [K @ Q for K in self.coefficients]
        # A_i grows by the blocks U^T K_i Q and Q^T K_i Q (U^T K_i Q = (K_i U)^T Q, K_i symmetric).
        self.A = [np.block([[A, KU.T @ Q], [(KU.T @ Q).T, Q.T @ KQ_i]])
                  for A, KU, KQ_i in zip(self.A, self.KU, KQ)]
        self.U = np.hstack([self.U, Q])
        self.KU = [np.hstack([KU, KQ_i]) for KU, KQ_i in zip(self.KU, KQ)]

    def ritz(self, s: float) -> tuple[np.ndarray, np.ndarray]:
        """Ritz values (ascending) and coordinates of K(s) on span(U)."""
        A = (self.A[2] * s + self.A[1]) * s + self.A[0]
        return np.linalg.eigh(0.5 * (A + A.T))

    def residual_vectors(self, s: float, Y: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """K(s) U y - theta U y for the columns y of Y, at O(n k) cost (K(s) never formed)."""
        KUY = (self.KU[2] @ Y * s + self.KU[1] @ Y) * s + self.KU[0] @ Y
        return KUY - (self.U @ Y) * theta

    def residuals(self, s: float, Y: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """||K(s) U y - theta U y|| for the columns y of Y."""
        return np.linalg.norm(self.residual_vectors(s, Y, theta), axis=0)

    def compress(self, Y: np.ndarray) -> None:
        """Restart: keep span(U Y) only (Y with orthonormal columns); no product with K is needed."""
        self.U = self.U @ Y
        self.KU = [KU @ Y for KU in self.KU]
        self.A = [self.U.T @ KU for KU in self.KU]


def _reduced_point(basis: _ReducedBasis, s: float, tol: float, floor_dtype):
    """The reduced-basis point at s, whether its lambda_min and its lambda_max passed the error test, and the
    Ritz values and coordinates (ascending)."""
    theta, Y = basis.ritz(s)
    r_min, r_max = basis.residuals(s, Y[:, [0, -1]], theta[[0, -1]])
    lam_min, lam_max = float(theta[0]), float(theta[-1])
    floor = numerical_floor(lam_max, basis.U.shape[0], floor_dtype)
    bottom_ok = lam_min <= floor or _error_bound(theta, float(r_min)) <= tol * lam_min
    top_ok = _error_bound(-theta[::-1], float(r_max)) <= tol * lam_max
    point = PathPoint(float(s), lam_min, lam_max, floor, float(r_min), "reduced", 0)
    return point, bottom_ok, top_ok, theta, Y


def _cholesky_solve(factor) -> Callable[[np.ndarray], np.ndarray]:
    """R -> (K - sigma I)^{-1} R for a ``scipy.linalg.cho_factor`` result (the Davidson preconditioner)."""
    return lambda R: scipy.linalg.cho_solve(factor, R, check_finite=False)


def _reduced_sweep(coefficients, grid, *, block, tol, max_iter, floor_dtype, anchor_every, emit):
    """The reduced-basis sweep of the module docstring; ``emit`` receives the points in grid order."""
    n = coefficients[0].shape[0]
    basis = _ReducedBasis(coefficients)
    K = np.empty((n, n))
    work = np.empty((n, n), order="F")
    done: list[PathPoint] = []  # points emitted (up to and including the last anchor)
    pending: list[PathPoint] = []  # points since the last anchor, emitted when the next anchor confirms them
    margin = 0.05
    precondition = None  # (K(s_a) - sigma_a I)^{-1} of the last anchor
    max_size = 8 * block + 8

    def anchor(s: float, Y: np.ndarray | None, lam_max: float | None = None) -> PathPoint:
        nonlocal margin, precondition
        _assemble(coefficients, s, K)
        point = None
        if Y is not None:
            predicted = _predict(done + pending, s)
            V, top = basis.U @ Y[:, :block], basis.U @ Y[:, -1]
            point, V, top, factor = _subspace_point(K, s, V, top, tol, max_iter, floor_dtype, work, predicted,
                                                    margin, lam_max)
            if point is not None:
                precondition = _cholesky_solve(factor)
                if predicted is not None and point.resolved:
                    margin = float(np.clip(4.0 * abs(point.lambda_min - predicted) / point.lambda_min, 1e-4, 0.5))
        if point is None:
            point, V, top = _bottom_eigh_point(K, s, block, floor_dtype)
            precondition = None
            shift = point.lambda_min - max(margin * abs(point.lambda_min), point.floor)
            np.copyto(work, K)
            work[np.diag_indices(n)] -= shift
            try:
                precondition = _cholesky_solve(
                    scipy.linalg.cho_factor(work, lower=True, overwrite_a=True, check_finite=False))
            except np.linalg.LinAlgError:  # not positive definite to working precision: no Davidson steps
                pass
        basis.add(np.hstack([V, top[:, None]]))
        return point

    def reduced(s: float):
        """The reduced point at s, enriched by preconditioned residuals (Davidson steps) until it passes;
        with the point: whether lambda_min passed, the Ritz coordinates, and lambda_max when it passed."""
        for correction in range(_CORRECTIONS + 1):
            point, ok, top_ok, theta, Y = _reduced_point(basis, s, tol, floor_dtype)
            for _ in range(_TOP_STEPS):
                if top_ok:
                    break
                # Lanczos-like step for the well-separated top: add the top Ritz vector's residual.
                basis.add(basis.residual_vectors(s, Y[:, -1:], theta[-1:]))
                point, ok, top_ok, theta, Y = _reduced_point(basis, s, tol, floor_dtype)
            if ok or correction == _CORRECTIONS or precondition is None:
                return point, ok, Y, (point.lambda_max if top_ok else None)
            if basis.size > max_size:  # restart from the Ritz vectors at this s, bottom and top
                keep = np.r_[0:2 * block, basis.size - 2:basis.size]
                basis.compress(Y[:, keep])
                point, ok, top_ok, theta, Y = _reduced_point(basis, s, tol, floor_dtype)
            p = min(_DAVIDSON_VECTORS, basis.size)
            basis.add(precondition(basis.residual_vectors(s, Y[:, :p], theta[:p])))

    since_anchor = 0
    for s in grid:
        s = float(s)
        if basis.size == 0:
            point = anchor(s, None)
        else:
            point_r, ok, Y, lam_max = reduced(s)
            since_anchor += 1
            if ok and since_anchor < anchor_every:
                pending.append(point_r)
                continue
            point = anchor(s, Y, lam_max)
            missed = ok and point.resolved and point_r.lambda_min - point.lambda_min > tol * point.lambda_min * 1e3
            if missed:  # an eigenvector outside the basis: redo the segment with the enriched basis
                redone = []
                for old in pending:
                    again, ok_again, Y_again, lam_max_again = reduced(old.s)
                    redone.append(again if ok_again else anchor(old.s, Y_again, lam_max_again))
                pending = redone
        since_anchor = 0
        for p in pending:
            emit(p)
        done += pending
        pending = []
        emit(point)
        done.append(point)
    for p in pending:
        emit(p)
    return done + pending




# -- entry points ------------------------------------------------------------------------------------------
def _matrix_path(matrix_path, dtype):
    """(coefficients, floor dtype) of a polynomial path, or (None, dtype) for a callable one.

    Coefficients are checked (finite, square, symmetric, equal shapes) float64 NumPy copies (A0, A1, A2),
    missing ones zero."""
    if callable(matrix_path):
        return None, None if dtype is None else np.dtype(dtype)
    if all(hasattr(matrix_path, name) for name in ("K0", "K1", "K2")):
        matrices = (matrix_path.K0, matrix_path.K1, matrix_path.K2)
    elif isinstance(matrix_path, list | tuple | np.ndarray) and 1 <= len(matrix_path) <= 3 \
            and all(np.ndim(a) == 2 for a in matrix_path):
        matrices = tuple(matrix_path)
    else:
        raise TypeError("matrix_path must be a sequence (A0, A1, A2) of 1 to 3 square matrices, an object with "
                        f"attributes K0, K1, K2, or a callable s -> matrix; got {type(matrix_path).__name__}")
    coefficients = [check_kernel(a, f"A{i}") for i, a in enumerate(matrices)]
    shape = coefficients[0].shape
    for i, a in enumerate(coefficients):
        if a.shape != shape:
            raise ValueError(f"A{i} has shape {a.shape} but A0 has shape {shape}")
    coefficients += [np.zeros(shape)] * (3 - len(coefficients))
    if dtype is None:
        dtypes = [np.dtype(str(getattr(a, "dtype", "float64"))) for a in matrices]
        dtype = np.result_type(*[d if np.issubdtype(d, np.floating) else np.float64 for d in dtypes])
    return tuple(coefficients), np.dtype(dtype)


def _evaluator(function, dtype):
    """s -> (A(s) as a checked float64 array, the dtype that sets its floor) for a callable path."""

    def at(s: float):
        matrix = function(s)
        floor_dtype = dtype if dtype is not None else np.dtype(getattr(matrix, "dtype", np.float64))
        return check_kernel(matrix, f"A({s:g})"), floor_dtype

    return at


def lambda_min_path(
    matrix_path,
    s_grid,
    *,
    method: str | None = None,
    block: int = 16,
    tol: float = 1e-8,
    max_iter: int = 30,
    anchor_every: int = 32,
    dtype=None,
    on_point: Callable[[PathPoint], None] | None = None,
    blas_threads: int | str | None = "auto",
) -> LambdaMinPath:
    """lambda_min(A(s)) for every s of a sorted grid, in float64, each value certified or flagged.

    Args:
      matrix_path: A(s) = A0 + s A1 + s^2 A2 as a sequence ``(A0, A1, A2)`` of (n, n) symmetric matrices (fewer
        coefficients: the rest are zero) or an object with attributes ``K0, K1, K2``, converted once to
        float64 NumPy; or a callable ``s -> (n, n)`` symmetric matrix (JAX or NumPy), called once per s.
      s_grid: strictly increasing finite values of s, shape (k,).
      method: ``"reduced"`` (reduced-basis sweep with certified anchors; polynomial paths only), ``"subspace"``
        (warm-started certified block inverse iteration at every s, eigh fallback; see the module docstring)
        or ``"eigh"`` (a full float64 eigendecomposition at every s: the reference). None: ``"reduced"`` for a
        polynomial path, ``"eigh"`` for a callable.
      block: number of Ritz vectors carried from one s to the next (p), or added to the reduced basis at
        each anchor; larger is more robust to eigenvalue crossings.
      tol: accept theta when its error bound min(r, r^2 / gap) (r = ||A v - theta v||) is <= tol * theta,
        i.e. theta is within about tol relative of an eigenvalue.
      max_iter: subspace iterations per s before falling back to eigh.
      anchor_every: ``"reduced"`` only: force a certified anchor after this many reduced points.
      dtype: the precision the matrices were computed in, for the floor (default: their own dtype).
      on_point: called with each finished :class:`PathPoint` (for streaming results to disk).
      blas_threads: BLAS threads during the sweep: ``"auto"`` (1 for n <= 1024), an int, or None (no limit).

    Returns:
      :class:`LambdaMinPath` with per-s lambda_min, lambda_max, floor, residual and method.
    """
    coefficients, floor_dtype = _matrix_path(matrix_path, dtype)
    if method is None:
        method = "eigh" if coefficients is None else "reduced"
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    if method == "reduced" and coefficients is None:
        raise ValueError("method='reduced' needs the coefficients (A0, A1, A2) of a polynomial path; "
                         "for a callable path use 'subspace' or 'eigh'")
    if not is_whole(block):
        raise ValueError(f"block must be a positive integer, got {block}")
    if not (tol > 0 and math.isfinite(tol)):
        raise ValueError(f"tol must be positive and finite, got {tol}")
    grid = check_s_grid(s_grid)
    if not is_whole(anchor_every):
        raise ValueError(f"anchor_every must be a positive integer, got {anchor_every}")

    def emit(point):
        if on_point is not None:
            on_point(point)

    if coefficients is None:
        at = _evaluator(matrix_path, floor_dtype)
        first = at(float(grid[0]))  # evaluated once: it also tells n
        n = first[0].shape[0]
    else:
        n = coefficients[0].shape[0]
        first = None
        buffer = np.empty((n, n))

        def at(s: float):
            return _assemble(coefficients, s, buffer), floor_dtype
    block = min(int(block), n)

    # Small matrices: eigh is as fast as anything and needs no warm start.
    if method == "eigh" or n < 4 * block:
        method = "eigh"
    with _blas_threads(n, blas_threads):
        if method == "reduced":
            points = _reduced_sweep(coefficients, grid, block=block, tol=tol, max_iter=max_iter,
                                    floor_dtype=floor_dtype, anchor_every=int(anchor_every), emit=emit)
            return LambdaMinPath(tuple(points))
        work = np.empty((n, n), order="F")
        V = top = None
        margin, predicted = 0.05, None
        points = []
        for s in grid:
            K, s_dtype = first if first is not None else at(float(s))
            first = None
            point = None
            if method == "subspace" and V is not None:
                predicted = _predict(points, float(s))
                point, V_new, top_new, _ = _subspace_point(K, s, V, top, tol, max_iter, s_dtype, work,
                                                           predicted, margin)
                if point is not None:
                    V, top = V_new, top_new
            if point is None:
                point, V, top = _eigh_point(K, s, block, s_dtype)
            if method == "subspace" and predicted is not None and point.resolved:
                # Next shift margin: a few times this step's prediction error, within [1e-4, 0.5].
                margin = float(np.clip(4.0 * abs(point.lambda_min - predicted) / point.lambda_min, 1e-4, 0.5))
            points.append(point)
            emit(point)
    return LambdaMinPath(tuple(points))


def spectrum_path(matrix_path, s_grid, *, dtype=None) -> list[Spectrum]:
    """The full float64 spectrum (:func:`ntkhom.spectrum.spectrum`) of A(s) at every s of the grid.

    ``matrix_path`` and ``dtype`` as in :func:`lambda_min_path`."""
    grid = check_s_grid(s_grid)
    coefficients, floor_dtype = _matrix_path(matrix_path, dtype)
    if coefficients is None:
        return [spectrum(matrix_path(float(s)), dtype=floor_dtype) for s in grid]
    K = np.empty_like(coefficients[0])
    with _blas_threads(K.shape[0], "auto"):
        return [spectrum(_assemble(coefficients, float(s), K).copy(), dtype=floor_dtype) for s in grid]
