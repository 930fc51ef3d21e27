"""Inputs and targets: validation, normalization, synthetic sets and the sets scikit-learn ships.

Nothing here downloads: every dataset is generated from an explicit PRNG key or read from the files that
scikit-learn installs with itself.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "Dataset",
    "DATASETS",
    "NORMALIZATIONS",
    "check_inputs",
    "check_targets",
    "enable_float64",
    "float64_enabled",
    "load",
    "normalize",
    "sphere",
    "circle",
    "gaussian_clusters",
    "teacher_targets",
]


def enable_float64() -> None:
    """Turn on JAX's 64-bit mode (``jax_enable_x64``); ntkhom's CLI does this before any computation."""
    jax.config.update("jax_enable_x64", True)


def float64_enabled() -> bool:
    return bool(jax.config.jax_enable_x64)


def check_inputs(x, name: str = "x", *, allow_1d: bool = False) -> jax.Array:
    """Return ``x`` as a 2-D float JAX array (n, d), or raise ``ValueError`` naming what is wrong.

    Refuses empty arrays, non-finite entries (NaN, inf), rows whose squared norm x.x overflows the dtype
    (every kernel is built from such inner products, so all of its entries would be inf or NaN) and wrong
    ranks. Warns when float64 data would be silently rounded to float32 because JAX's 64-bit mode is off.
    Under ``jit``, ``vmap`` or ``grad`` (``x`` a tracer) only the shape is checked: the values are unknown there.
    """
    traced = isinstance(x, jax.core.Tracer)
    array = x if isinstance(x, jax.Array) else np.asarray(x)
    if array.ndim == 1 and allow_1d:
        array = array[:, None]
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n samples, d features), got shape {tuple(array.shape)}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} must have at least one sample and one feature, got shape {tuple(array.shape)}")
    if not jnp.issubdtype(array.dtype, jnp.floating):
        array = array.astype(np.float64 if float64_enabled() else np.float32)
    if array.dtype == np.float64 and not float64_enabled() and not isinstance(array, jax.Array):
        warnings.warn(
            f"{name} is float64 but JAX's 64-bit mode is off, so it is computed in float32; "
            "call ntkhom.enable_float64() first for float64 kernels",
            stacklevel=3,
        )
    if not traced:
        # NumPy on the host: jnp ops would give tracers when a concrete array is checked inside a trace.
        # One pass in the common case: the largest |entry| is NaN or inf exactly when an entry is, and a row's
        # x.x is at most d times its square, so the squares are summed only near the dtype's range.
        host = np.asarray(array)
        peak = float(np.max(np.abs(host)))
        if not math.isfinite(peak):
            bad = int(np.count_nonzero(~np.isfinite(host)))
            raise ValueError(f"{name} contains {bad} non-finite value(s) (NaN or inf)")
        if peak * peak * host.shape[1] > float(np.finfo(host.dtype).max):
            with np.errstate(over="ignore"):
                squares = np.sum(np.square(host), axis=1)  # in x's own dtype, as the kernels compute them
        else:
            squares = np.zeros(0)
        if not np.all(np.isfinite(squares)):
            # Scaled by each row's largest entry, so that the norm reported does not overflow float64 too.
            wide = host.astype(np.float64)
            scale = np.maximum(np.max(np.abs(wide), axis=1, keepdims=True), np.finfo(np.float64).tiny)
            norm = float(np.max(scale[:, 0] * np.sqrt(np.sum(np.square(wide / scale), axis=1))))
            wider = " or use float64 (ntkhom.enable_float64())" if host.dtype.itemsize < 8 else ""
            raise ValueError(f"{name} has rows of norm up to {norm:.3g}, whose squares overflow {host.dtype}: "
                             f"rescale the inputs (ntkhom.data.normalize){wider}")
    return jnp.asarray(array)


def check_targets(y, n: int, name: str = "y") -> jax.Array:
    """Targets as an (n, k) array matching n inputs; refuses NaN/inf and a sample-count mismatch."""
    y = check_inputs(y, name, allow_1d=True)
    if y.shape[0] != n:
        raise ValueError(f"{name} has {y.shape[0]} rows but the inputs have {n} samples")
    return y


NORMALIZATIONS = ("none", "sphere", "standardize", "standardize+sphere")


def normalize(x, how: str = "sphere"):
    """Input normalization: ``"sphere"`` scales each row to unit norm (the NTK theory's setting),
    ``"standardize"`` centres and scales each feature, ``"standardize+sphere"`` does both, ``"none"`` keeps x."""
    if how not in NORMALIZATIONS:
        raise ValueError(f"unknown normalization {how!r}; known: {', '.join(NORMALIZATIONS)}")
    x = jnp.asarray(x)
    if how.startswith("standardize"):
        scale = jnp.std(x, axis=0)
        x = (x - jnp.mean(x, axis=0)) / jnp.where(scale > 0, scale, 1.0)
    if how.endswith("sphere"):
        if not isinstance(x, jax.core.Tracer) and bool(np.any(np.all(np.asarray(x) == 0, axis=1))):
            raise ValueError("cannot project a zero input onto the unit sphere")
        x = x / jnp.linalg.norm(x, axis=1, keepdims=True)
    return x


@functools.partial(
    jax.tree_util.register_dataclass, data_fields=["x", "y", "x_test", "y_test"], meta_fields=["name", "task"]
)
@dataclasses.dataclass(frozen=True)
class Dataset:
    """Inputs ``x`` (n, d), targets ``y`` (n, k), and a held-out split when one was asked for; a pytree
    (arrays are its leaves, ``name`` and ``task`` its static data), so it can pass through ``jit``."""

    name: str
    x: jax.Array
    y: jax.Array
    x_test: jax.Array | None = None
    y_test: jax.Array | None = None
    task: str = "regression"  # or "classification" (y one-hot)

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    @property
    def d(self) -> int:
        return int(self.x.shape[1])


def _dtype(dtype=None):
    """``dtype`` if given, else float64 when JAX's 64-bit mode is on and float32 otherwise."""
    if dtype is not None:
        dtype = jnp.dtype(dtype)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise ValueError(f"dtype must be a floating dtype, got {dtype}")
        return dtype
    return jnp.float64 if float64_enabled() else jnp.float32


def is_whole(value, minimum: int = 1) -> bool:
    """Whether ``value`` is a whole number >= ``minimum``: an int, or a float without fraction; never a bool,
    NaN, inf, string or array. The one check behind every count argument, so that NaN or inf get the caller's
    one-line message instead of "cannot convert float NaN to integer"."""
    if isinstance(value, bool):
        return False
    try:
        whole = int(value) == value
    except (TypeError, ValueError, OverflowError):
        return False
    return bool(whole) and value >= minimum


def real_number(value, name: str, *, error: type[Exception] = ValueError) -> float | None:
    """A concrete real number as a float (None for a traced one, whose value is unknown), or a one-line
    ``error`` naming ``name``. The one check behind every real-valued argument: a string is refused even
    where float() would parse it (a caller's mistake, not a number), and NaN or inf pass for the caller's
    own range check."""
    if isinstance(value, jax.core.Tracer):
        return None
    try:
        number = None if isinstance(value, str | bytes) else float(value)
    except (TypeError, ValueError):
        number = None
    if number is None:
        raise error(f"{name} must be a real number, got {value!r}")
    return number


def _check_size(n: int, d: int) -> tuple[int, int]:
    """(n, d) as Python ints (JAX takes no float in a shape), or a ValueError when they are not whole >= 1."""
    if not (is_whole(n) and is_whole(d)):
        raise ValueError(f"need whole numbers n >= 1 and d >= 1, got n = {n}, d = {d}")
    return int(n), int(d)


def _check_fits(what: str, shape: tuple[int, ...], dtype, copies: int) -> None:
    """Raise :class:`ntkhom.memory.MemoryLimitError` (one line, with the size and the shape) before a generator
    allocates ``copies`` arrays of ``shape`` that the available memory cannot hold: an allocation that large
    otherwise kills the process or aborts XLA."""
    from ntkhom.memory import array_bytes, check_memory

    dtype = jnp.dtype(_dtype(dtype))
    shape = tuple(shape)
    check_memory(array_bytes(shape, copies=copies, itemsize=dtype.itemsize),
                 f"{what} of shape {shape} ({dtype.name}, {copies} such arrays at its peak)",
                 alternative="use a smaller n or d")


def sphere(key, n: int, d: int, *, dtype=None) -> jax.Array:
    """n points uniform on the unit sphere S^{d-1}, shape (n, d); ``dtype`` defaults to JAX's float.

    Raises :class:`ntkhom.memory.MemoryLimitError` before allocating when the available memory cannot hold
    them (as do :func:`circle` and :func:`gaussian_clusters`)."""
    n, d = _check_size(n, d)
    _check_fits("sphere", (n, d), dtype, copies=2)  # the normal draw and its normalized copy
    x = jax.random.normal(key, (n, d), _dtype(dtype))
    return x / jnp.linalg.norm(x, axis=1, keepdims=True)


def circle(key, n: int, random_angles: bool = True, *, dtype=None) -> jax.Array:
    """The circle embedding (cos t, sin t, 1) / sqrt 2 (unit norm, d = 3); t uniform or evenly spaced."""
    n, _ = _check_size(n, 3)
    # t, its cosine, sine and ones (n each) beside the stacked (n, 3) array, then the stack and the result
    _check_fits("circle", (n, 3), dtype, copies=3)
    if random_angles:
        t = jax.random.uniform(key, (n,), _dtype(dtype), 0.0, 2 * math.pi)
    else:
        t = jnp.linspace(0.0, 2 * math.pi, n, endpoint=False, dtype=_dtype(dtype))
    return jnp.stack([jnp.cos(t), jnp.sin(t), jnp.ones_like(t)], axis=1) / math.sqrt(2.0)


def gaussian_clusters(key, n: int, d: int, clusters: int = 4, spread: float = 0.3, *, dtype=None):
    """n points from ``clusters`` Gaussian blobs with centres on the unit sphere; returns (x, labels)."""
    n, d = _check_size(n, d)
    if not is_whole(clusters):
        raise ValueError(f"clusters must be a whole number >= 1, got {clusters}")
    if not isinstance(spread, jax.core.Tracer) and not (math.isfinite(spread) and spread >= 0):
        raise ValueError(f"spread must be finite and >= 0, got {spread}")
    _check_fits("gaussian_clusters", (n, d), dtype, copies=3)  # the centres of the points, the noise, the sum
    k_centre, k_label, k_noise = jax.random.split(key, 3)
    centres = sphere(k_centre, clusters, d, dtype=dtype)
    labels = jax.random.randint(k_label, (n,), 0, clusters)
    x = centres[labels] + spread / math.sqrt(d) * jax.random.normal(k_noise, (n, d), _dtype(dtype))
    return x, labels


def teacher_targets(key, x, width: int = 32, s: float = 1.0) -> jax.Array:
    """Targets y = teacher(x) from a random two-layer ReLU-type network, normalised to unit RMS, (n, 1)."""
    from ntkhom.activations import check_s, homotopy

    x = check_inputs(x)
    if not is_whole(width):
        raise ValueError(f"teacher width must be a whole number >= 1, got {width}")
    s = check_s(s)
    k_w, k_a = jax.random.split(key)
    w = jax.random.normal(k_w, (x.shape[1], width), x.dtype)
    a = jax.random.normal(k_a, (width, 1), x.dtype)
    y = homotopy(x @ w, s) @ a
    rms = jnp.sqrt(jnp.mean(y**2))
    # 0 / 0 would give NaN targets that surface only as a "non-finite residual" later; traced: not known here
    if not isinstance(rms, jax.core.Tracer) and not float(rms) > 0:
        raise ValueError("teacher targets are all zero, so they cannot be normalised to unit RMS (is x all zero, "
                         "or is every teacher unit inactive on it?)")
    return y / rms


_SKLEARN_REGRESSION = ("diabetes", "friedman1")
_SKLEARN_CLASSIFICATION = ("breast_cancer", "wine", "digits", "iris", "moons")
DATASETS = ("sphere", "circle", "clusters") + _SKLEARN_REGRESSION + _SKLEARN_CLASSIFICATION


def _one_hot(labels, classes: int, dtype):
    return jax.nn.one_hot(jnp.asarray(labels), classes, dtype=dtype)


def _sklearn(name: str, n: int | None, seed: int):
    import sklearn.datasets as skd

    if name == "diabetes":
        x, y = skd.load_diabetes(return_X_y=True)
    elif name == "friedman1":
        x, y = skd.make_friedman1(n_samples=n or 500, n_features=10, noise=0.5, random_state=seed)
    elif name == "breast_cancer":
        x, y = skd.load_breast_cancer(return_X_y=True)
    elif name == "wine":
        x, y = skd.load_wine(return_X_y=True)
    elif name == "digits":
        x, y = skd.load_digits(return_X_y=True)
    elif name == "iris":
        x, y = skd.load_iris(return_X_y=True)
    elif name == "moons":
        x, y = skd.make_moons(n_samples=n or 1000, noise=0.1, random_state=seed)
    else:  # pragma: no cover - guarded by load()
        raise AssertionError(name)
    return np.asarray(x, np.float64), np.asarray(y)


def load(
    name: str,
    key=None,
    *,
    n: int | None = None,
    d: int = 8,
    normalization: str = "sphere",
    test_fraction: float = 0.0,
    seed: int = 0,
    dtype=None,
) -> Dataset:
    """A dataset by name (one of :data:`DATASETS`), normalised, optionally split into train and test.

    Synthetic sets (``sphere``, ``circle``, ``clusters``) use ``key`` (default ``PRNGKey(seed)``) and get
    teacher-network regression targets. scikit-learn sets are read from the package (no download);
    ``n`` subsamples them: from ``key`` when one is given, else deterministically from ``seed``. Regression
    targets are standardised; classification targets are one-hot. ``dtype`` defaults to JAX's float
    (float64 when its 64-bit mode is on).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    if n is not None and not (isinstance(n, int | np.integer) and not isinstance(n, bool) and n >= 1):
        raise ValueError(f"n must be a positive integer (or None for the dataset's default), got {n!r}")
    subsample_key = key
    key = jax.random.PRNGKey(seed) if key is None else key
    dtype = _dtype(dtype)
    k_data, k_target, k_split = jax.random.split(key, 3)
    task = "regression"
    if name == "sphere":
        x = sphere(k_data, n or 64, d, dtype=dtype)
        y = teacher_targets(k_target, x)
    elif name == "circle":
        x = circle(k_data, n or 64, dtype=dtype)
        y = teacher_targets(k_target, x)
    elif name == "clusters":
        x, _ = gaussian_clusters(k_data, n or 64, d, dtype=dtype)
        y = teacher_targets(k_target, normalize(x, "sphere"))
    else:
        x_np, y_np = _sklearn(name, n, seed)
        if n is not None and n > x_np.shape[0]:
            warnings.warn(f"the {name} dataset has {x_np.shape[0]} samples, fewer than n = {n}: using all of them",
                          stacklevel=2)
        if n is not None and n < x_np.shape[0]:
            if subsample_key is None:
                keep = np.random.default_rng(seed).choice(x_np.shape[0], size=n, replace=False)
            else:
                keep = np.asarray(jax.random.choice(k_data, x_np.shape[0], (n,), replace=False))
            x_np, y_np = x_np[keep], y_np[keep]
        x = jnp.asarray(x_np, dtype)
        if name in _SKLEARN_CLASSIFICATION:
            task = "classification"
            y = _one_hot(y_np.astype(int), int(y_np.max()) + 1, dtype)
        else:
            spread = y_np.std()
            if not spread > 0:  # one sample, or equal targets: 0 / 0 would make every target NaN
                raise ValueError(f"standardising the {name} targets needs at least 2 samples with different "
                                 f"values, got {y_np.shape[0]} sample(s) with spread {spread:g} (raise n)")
            y = jnp.asarray((y_np - y_np.mean()) / spread, dtype)[:, None]
    x = normalize(x, normalization)
    x = check_inputs(x, f"{name} inputs")
    if test_fraction == 0.0:
        return Dataset(name, x, y, task=task)
    order = jax.random.permutation(k_split, x.shape[0])
    n_test = max(1, int(round(test_fraction * x.shape[0])))
    if n_test >= x.shape[0]:
        raise ValueError(f"test_fraction {test_fraction:g} of {x.shape[0]} samples leaves no training samples")
    test, train = order[:n_test], order[n_test:]
    return Dataset(name, x[train], y[train], x[test], y[test], task=task)
