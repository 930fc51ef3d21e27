"""Computation sharded across devices and hosts with ``jax.sharding``: rows of kernels, kernel products, grids.

One 1-D mesh over every device of every process (:func:`device_mesh`) serves three layouts:

* **rows** of a kernel: K = [K(x_rows_1, x); K(x_rows_2, x); ...], one block of rows per device
  (:func:`sharded_kernel`); a matrix that does not fit one device is assembled this way;
* **products** K V of kernel operators (:func:`shard_operator`, one ``jax.shard_map`` per product): the
  operator's rows and V split across devices, partial sums over rows added with ``psum`` (structured
  two-layer NTK, Jacobian NTK), or rows of x split with all of x on every device (infinite width); the
  product is gathered on every device, and the eigensolvers (:mod:`ntkhom.eigensolvers`) take the
  sharded operator as they take any other;
* **rows** of a training batch (:func:`shard_batch`, :func:`run`): x and y split by rows, parameters
  replicated; jit's partitioner then runs the forward and backward passes of each device's rows there and
  adds the gradients across devices (data parallelism, no code of ours in the step);
* **runs** of a grid: the leading axis of stacked parameters and solver states (:func:`shard_runs`), so a
  vmapped, jitted step runs B / P configurations on each of P devices (:func:`run_batch`; across hosts each
  process trains its own share and the records are gathered at the end).

Sizes that the device count does not divide are padded by repeating the last row (or run), which keeps
every value finite, and the padding is cut off before results are returned: results equal those on one
device. A training batch is the exception: a padded row would add to the loss, so its row count must be a
multiple of the device count (the error says so). The same code runs on one device, on several devices of
one host, and on several hosts after :func:`ntkhom.distributed.initialize` (every process holds the same
inputs and runs the same program; each computes the blocks of its own devices).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ntkhom import operators
from ntkhom.data import is_whole
from ntkhom.networks import check_params
from ntkhom.operators import pad_rows

__all__ = [
    "AXIS",
    "RowSharded",
    "ShardedOperator",
    "device_mesh",
    "padded_size",
    "pad_rows",
    "shard_rows",
    "replicate",
    "host_array",
    "sharded_kernel",
    "shard_operator",
    "KernelRows",
    "kernel_rows",
    "ROW_FIELDS",
    "shard_runs",
    "run_batch",
    "shard_batch",
    "run",
]

#: Name of the single mesh axis (rows of a kernel, or runs of a grid, are split along it).
AXIS = "devices"

PyTree = Any


def device_mesh(devices=None, *, axis_name: str = AXIS) -> Mesh:
    """A 1-D mesh over ``devices`` (default: every device of every process, ``jax.devices()``)."""
    devices = jax.devices() if devices is None else list(devices)
    if len(devices) == 0:
        raise ValueError("device_mesh needs at least one device")
    return Mesh(np.array(devices), (axis_name,))


def _axis(mesh: Mesh) -> str:
    if not isinstance(mesh, Mesh) or len(mesh.axis_names) != 1:
        raise ValueError(f"mesh must be a 1-D jax.sharding.Mesh (see device_mesh), got {mesh!r}")
    return mesh.axis_names[0]


def padded_size(n: int, mesh: Mesh) -> int:
    """The smallest multiple of the mesh's device count that is >= n."""
    count = mesh.devices.size
    return count * -(-int(n) // count)


def _place(array: np.ndarray, sharding: NamedSharding) -> jax.Array:
    # Every process holds the whole array and hands each of its devices the part it owns: works on one
    # host and across hosts alike (jax.device_put cannot build a multi-host array).
    return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def shard_rows(x, mesh: Mesh) -> tuple[jax.Array, int]:
    """Rows of ``x`` (n, ...) split across the mesh, padded to :func:`padded_size`; returns (array, n)."""
    array = np.asarray(x)
    if array.ndim == 0:
        raise ValueError("shard_rows needs an array with a leading row axis")
    n = array.shape[0]
    spec = P(_axis(mesh), *([None] * (array.ndim - 1)))
    return _place(pad_rows(array, padded_size(n, mesh)), NamedSharding(mesh, spec)), n


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """Every array leaf of ``tree`` copied to every device of the mesh (a global, replicated array)."""
    sharding = NamedSharding(mesh, P())
    return jax.tree.map(lambda leaf: _place(np.asarray(leaf), sharding), tree)


def host_array(array) -> np.ndarray:
    """The whole of a (possibly sharded, possibly multi-host) array as a NumPy array on this process."""
    if not isinstance(array, jax.Array) or array.is_fully_addressable or array.is_fully_replicated:
        return np.asarray(array)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(array, tiled=True))


class RowSharded(NamedTuple):
    """A matrix whose rows are split across a mesh: ``data`` (n_padded, n2), of which rows [0, n) are real."""

    data: jax.Array
    n: int

    def gather(self) -> np.ndarray:
        """The (n, n2) matrix as NumPy on this process (every process gets all of it)."""
        return host_array(self.data)[: self.n]

    def operator(self, mesh: Mesh) -> ShardedOperator:
        """A square row-sharded kernel as an operator for the eigensolvers: products K V row by row on the
        devices that hold the rows (no device ever holds the whole matrix)."""
        if self.data.shape[1] != self.n:
            raise ValueError(f"operator needs a square kernel, got {self.n} rows and {self.data.shape[1]} columns")
        return ShardedOperator(_RowShardedMatrix(self.data, self.n), mesh, "dense", None, {"matrix": self.data})


@functools.partial(jax.tree_util.register_dataclass, data_fields=["data"], meta_fields=["n"])
@dataclasses.dataclass(frozen=True)
class _RowShardedMatrix:
    """Diagonal and columns of a symmetric row-sharded kernel (for pivoted Cholesky preconditioners)."""

    data: jax.Array
    n: int

    @property
    def dtype(self):
        return self.data.dtype

    def diagonal(self) -> np.ndarray:
        return host_array(_diagonal(self.data, self.n))

    def columns(self, index) -> np.ndarray:
        # K[:, index] = K[index, :]^T for a symmetric kernel: rows, wherever they live.
        return host_array(_rows(self.data, operators.check_index(index, self.n))).T[: self.n]


@functools.partial(jax.jit, static_argnums=1)
def _diagonal(data, n):
    return jnp.diagonal(data[:n, :n])


@jax.jit
def _rows(data, index):
    return data[index]


def sharded_kernel(kernel_fn: Callable, x1, x2=None, *, mesh: Mesh) -> RowSharded:
    """K(x1, x2) assembled by rows: each device computes ``kernel_fn(x1_rows, x2)`` for its own rows of x1.

    The full matrix never exists on one device, so a kernel P times larger than one device's memory can
    be assembled on P devices. ``kernel_fn`` is called eagerly once per local device with inputs placed on
    that device, so any kernel function works (neural-tangents ``kernel_fn``, the structured two-layer
    :func:`ntkhom.kernels.empirical_ntk_two_layer`, the closed form), jittable or not.

    Args:
      kernel_fn: ``kernel_fn(rows, x2) -> (len(rows), n2)`` for rows of x1 (a partial of a kernel).
      x1: (n1, d) points whose rows are split; n1 need not be divisible by the device count.
      x2: (n2, d) points, every device gets all of them (default: x1).
      mesh: a 1-D mesh (:func:`device_mesh`).

    Returns:
      :class:`RowSharded` with ``data`` (padded n1, n2) sharded by rows and ``n = n1``.
    """
    axis = _axis(mesh)
    x1 = np.asarray(x1)
    x2 = x1 if x2 is None else np.asarray(x2)
    if x1.ndim < 1 or x1.shape[0] == 0 or x2.ndim < 1 or x2.shape[0] == 0:
        raise ValueError(f"sharded_kernel needs points with a leading row axis, got shapes {x1.shape} and {x2.shape}")
    check_params(x1, "x1")
    check_params(x2, "x2")
    n1 = x1.shape[0]
    size = padded_size(n1, mesh)
    padded = pad_rows(x1, size)
    sharding = NamedSharding(mesh, P(axis, None))
    blocks = []
    for device, index in sharding.addressable_devices_indices_map((size, x2.shape[0])).items():
        rows = jax.device_put(padded[index[0]], device)
        block = kernel_fn(rows, jax.device_put(x2, device))
        blocks.append(jax.device_put(block, device))
    if blocks[0].ndim != 2 or blocks[0].shape[1] != x2.shape[0]:
        raise ValueError(f"kernel_fn must return (rows, {x2.shape[0]}) blocks, got shape {blocks[0].shape}")
    return RowSharded(jax.make_array_from_single_device_arrays((size, x2.shape[0]), sharding, blocks), n1)


def _check_block(V, n: int) -> tuple[jax.Array, bool]:
    V = jnp.asarray(V) if not isinstance(V, jax.Array) else V
    if V.ndim not in (1, 2) or V.shape[0] != n:
        raise ValueError(f"V must have shape ({n},) or ({n}, k), got {tuple(V.shape)}")
    operators.check_finite_block(V)
    return (V[:, None] if V.ndim == 1 else V), V.ndim == 1


def _replicated_input(V, mesh: Mesh):
    # A replicated global array passes as is; anything else (a NumPy array, a one-device array) is copied
    # to every device of the mesh, which works across processes too.
    replicated = NamedSharding(mesh, P())
    if isinstance(V, jax.Array) and V.is_fully_replicated and V.sharding.device_set == replicated.device_set:
        return V
    return replicate(host_array(V), mesh)


@functools.partial(jax.jit, static_argnames=("mesh", "n", "mode"))
def _sharded_product(local, rows, V, *, mesh, n, mode):
    """K V inside one shard_map; ``rows`` are the row-indexed arrays split over the mesh (padded to
    :func:`padded_size`), ``local`` everything else (replicated). The result is gathered on every device."""
    axis = _axis(mesh)
    size = padded_size(n, mesh)

    if mode == "row_sum":
        # Every term of K V sums over rows j of something times V_j: zero rows of V add nothing, so the
        # padded rows of the operator's arrays cannot change the real rows of the product.
        def block(local, rows, V):
            op = dataclasses.replace(local, **rows)
            return op.matvec(V, row_sum=lambda t: jax.lax.psum(t, axis))

        operand = jnp.pad(V, ((0, size - n), (0, 0)))
        V_spec = P(axis)
    else:
        def block(local, rows, V):
            if mode == "dense":
                return rows["matrix"] @ V
            return local.rows_matvec(rows["x"], V)

        operand = V
        V_spec = P()
    product = jax.shard_map(block, mesh=mesh, in_specs=(P(), P(axis), V_spec), out_specs=P(axis),
                            check_vma=False)
    out = product(local, rows, operand)[:n]
    return jax.lax.with_sharding_constraint(out, NamedSharding(mesh, P()))


@functools.partial(jax.tree_util.register_dataclass, data_fields=["op", "local", "rows"],
                   meta_fields=["mesh", "mode"])
@dataclasses.dataclass(frozen=True)
class ShardedOperator:
    """A kernel operator whose products K V are split by rows across a mesh (:func:`shard_operator`).

    Attributes:
      op: the operator on one device (``diagonal``, ``columns`` and ``at`` are taken from it).
      mesh: the 1-D mesh.
      mode: ``"row_sum"`` (the operator's rows and V split; partial sums over rows added with ``psum``),
        ``"rows"`` (rows of x split, all of x on every device), ``"dense"`` (rows of a matrix split) or
        ``"path"`` (K(s) from its three sharded nodes).
      local, rows: the replicated part of the operator and its row-split arrays (padded).
    """

    op: Any
    mesh: Mesh
    mode: str
    local: Any
    rows: dict

    @property
    def n(self) -> int:
        return int(self.op.n)

    @property
    def preferred_block(self) -> int:
        return int(getattr(self.op, "preferred_block", 1))

    @property
    def dtype(self):
        return self.op.dtype

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n, self.n)

    def matvec(self, V) -> jax.Array:
        """K V for V of shape (n, k) or (n,); the result is replicated on every device of the mesh."""
        block, vector = _check_block(V, self.n)
        if block.shape[1] == 0:  # no columns, no product (as the operators on one device)
            return jnp.zeros((self.n, 0), jnp.result_type(block.dtype, self.dtype))
        if self.mode == "path":  # K(s) V from the sharded products of the three nodes of the path
            out = self.op._combine([node.matvec(block) for node in self.rows["nodes"]])
            return out[:, 0] if vector else out
        out = _sharded_product(self.local, self.rows, _replicated_input(block, self.mesh), mesh=self.mesh,
                               n=self.n, mode=self.mode)
        return out[:, 0] if vector else out

    def _matvec(self, V, row_sum=None):
        # Inside a caller's jit (the eigensolvers' Lanczos): V is traced and the whole product is done here,
        # so the caller's row reduction does not apply.
        if self.mode == "path":
            return self.op._combine([node._matvec(V) for node in self.rows["nodes"]])
        return _sharded_product(self.local, self.rows, V, mesh=self.mesh, n=self.n, mode=self.mode)

    def __matmul__(self, V):
        return self.matvec(V)

    def diagonal(self) -> jax.Array:
        return self.op.diagonal()

    def columns(self, index) -> jax.Array:
        return self.op.columns(index)

    def at(self, s) -> ShardedOperator:
        """The operator at another homotopy parameter ``s``, sharded the same way."""
        return shard_operator(self.op.at(s), self.mesh)


#: Arrays of an operator indexed by rows (split across devices in ``"row_sum"`` mode), unless the
#: operator's class names its own in ``row_fields``.
ROW_FIELDS = ("x", "patterns")


def shard_operator(op, mesh: Mesh) -> ShardedOperator:
    """``op`` with its products K V split by rows across ``mesh`` (one ``jax.shard_map`` per product).

    Three layouts, chosen from what the operator offers (:mod:`ntkhom.operators`):

    * ``matvec(V, row_sum=...)`` (products that sum over rows, e.g. the structured two-layer NTK
      Phi (Phi^T V)): the operator's row-indexed arrays (``row_fields``, default x and sign patterns) and V
      are split by rows, each device sums over its own rows and ``psum`` adds the partial sums; work and
      memory per device are 1/P of the whole;
    * ``rows_matvec(x_rows, V)`` (K[rows, :] V from the inputs of the rows, e.g. the infinite-width NTK,
      :func:`kernel_rows`): each device computes the rows of its share of x, with all of x and V;
    * ``matrix`` (a dense operator): each device keeps its rows of the matrix;
    * ``nodes`` (a kernel path K(s) = K0 + s K1 + s^2 K2): each node sharded as above.

    Args:
      op: a pytree operator with ``n``, ``dtype`` and one of the above; its arrays are copied from this
        process (every process must hold the same operator).
      mesh: a 1-D mesh (:func:`device_mesh`).
    """
    for name in ("n", "dtype"):
        if not hasattr(op, name):
            raise TypeError(f"op must be a kernel operator with n, dtype and a product; {type(op).__name__} "
                            f"has no {name}")
    if isinstance(op, ShardedOperator):
        return shard_operator(op.op, mesh)
    if getattr(op, "native", False):
        raise ValueError("native products run on the host CPU of one process and cannot be sharded; build the "
                         "operator with native=False (the default) to shard it")
    if hasattr(op, "nodes") and hasattr(op, "_combine"):  # a kernel path: its three nodes, each sharded
        return ShardedOperator(op, mesh, "path", None, {"nodes": tuple(shard_operator(node, mesh)
                                                                        for node in op.nodes)})
    if hasattr(op, "rows_matvec"):
        mode, fields = "rows", ("x",)
    elif hasattr(op, "matrix"):
        mode, fields = "dense", ("matrix",)
    elif hasattr(op, "matvec") and dataclasses.is_dataclass(op):
        mode = "row_sum"
        fields = tuple(f for f in getattr(op, "row_fields", ROW_FIELDS) if getattr(op, f, None) is not None)
    else:
        raise TypeError(f"op must offer matvec(V, row_sum=...), rows_matvec(x_rows, V) or a matrix; "
                        f"{type(op).__name__} has none")
    rows = {name: shard_rows(host_array(getattr(op, name)), mesh)[0] for name in fields}
    kept = op if mode == "rows" else dataclasses.replace(op, **{name: None for name in fields})
    return ShardedOperator(op, mesh, mode, replicate(kept, mesh), rows)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class KernelRows(operators._Base):
    """K = kernel_fn(x, x) as an operator whose products are assembled from row tiles (:func:`kernel_rows`)."""

    x: jax.Array
    kernel_fn: Callable = dataclasses.field(metadata={"static": True})
    tile: int = dataclasses.field(metadata={"static": True})

    def rows_matvec(self, x_rows, V):
        """K(x_rows, x) V, ``tile`` rows at a time: memory O(tile n), the kernel never formed."""
        return operators.rows_product(self.kernel_fn, x_rows, self.x, V, self.tile)

    def _matvec(self, V, row_sum):  # on one device: the reference for the sharded product
        return self.rows_matvec(self.x, V)

    def diagonal(self):
        return jax.vmap(lambda row: self.kernel_fn(row[None], row[None])[0, 0])(self.x)

    def columns(self, index):
        return self.kernel_fn(self.x, self.x[operators.check_index(index, self.n)])


def kernel_rows(kernel_fn: Callable, x, *, tile: int = 256) -> KernelRows:
    """An operator K = kernel_fn(x, x) from any jittable kernel function, for :func:`shard_operator`.

    Args:
      kernel_fn: jittable ``kernel_fn(x1, x2) -> (n1, n2)``; a module-level function (not a fresh lambda per
        call) so the compiled product is reused.
      x: (n, d) points.
      tile: rows per assembled tile (memory O(tile n) per device).
    """
    if not is_whole(tile):
        raise ValueError(f"tile must be a positive integer, got {tile}")
    x = jnp.asarray(x)
    if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(f"x must have a leading axis of points, got shape {tuple(x.shape)}")
    check_params(x, "x")  # NaN or inf, where concrete (points of any shape, as in sharded_kernel)
    return KernelRows(x, kernel_fn, int(tile))


# -- grids over the run axis ------------------------------------------------------------------------------
def shard_runs(tree: PyTree, mesh: Mesh) -> tuple[PyTree, int]:
    """Stacked runs (leading axis B on every leaf) split across the mesh; B padded by repeating the last run.

    Returns (tree placed with ``NamedSharding(mesh, P(axis))``, B). A jitted, vmapped function of the
    result runs B / P configurations on each device.
    """
    leaves = jax.tree.leaves(tree)
    if not leaves or any(np.ndim(leaf) == 0 for leaf in leaves):
        raise ValueError("shard_runs needs a pytree with a leading run axis on every array")
    sizes = {np.shape(leaf)[0] for leaf in leaves}
    if len(sizes) != 1:
        raise ValueError(f"every leaf must share one leading run count, got {sorted(sizes)}")
    (B,) = sizes
    axis = _axis(mesh)
    size = padded_size(B, mesh)

    def place(leaf):
        array = pad_rows(host_array(leaf), size)
        return _place(array, NamedSharding(mesh, P(axis, *([None] * (array.ndim - 1)))))

    return jax.tree.map(place, tree), B


def _local_mesh(mesh: Mesh) -> Mesh:
    """The part of a 1-D mesh on this process's devices."""
    here = jax.process_index()
    return Mesh(np.array([d for d in mesh.devices.flat if d.process_index == here]), mesh.axis_names)


def _gather_runs(value: np.ndarray, fill) -> np.ndarray:
    """Concatenate every process's (share, ...) block along runs, trailing axes padded with ``fill`` to the
    longest (each process stops its loop when its own runs have stopped, so record counts differ)."""
    from jax.experimental import multihost_utils

    value = np.asarray(value)
    shapes = np.asarray(multihost_utils.process_allgather(np.array(value.shape, np.int64)))
    longest = shapes.max(axis=0)
    pad = [(0, 0)] + [(0, int(t - s)) for s, t in zip(value.shape[1:], longest[1:])]
    padded = np.pad(value, pad, constant_values=fill) if any(p[1] for p in pad) else value
    return np.asarray(multihost_utils.process_allgather(padded, tiled=True))


def _gather_strings(texts: list[str]) -> list[str]:
    encoded = [t.encode() for t in texts]
    width = max([len(e) for e in encoded] + [1])
    codes = np.zeros((len(encoded), width), np.uint8)
    for row, e in zip(codes, encoded):
        row[: len(e)] = np.frombuffer(e, np.uint8)
    gathered = _gather_runs(codes, 0)
    return [bytes(row).rstrip(b"\0").decode() for row in gathered]


def _gather_batch(result):
    """A driver ``BatchResult`` of this process's runs -> the result of all processes' runs, on every process."""
    from jax.experimental import multihost_utils

    gathered = {}
    for field in dataclasses.fields(result):
        value = getattr(result, field.name)
        if field.name == "steps":  # record steps: the same plan everywhere, so the longest holds the others
            value = _gather_runs(value[None], -1).max(axis=0)
        elif field.name == "wall_time":
            value = float(np.max(multihost_utils.process_allgather(np.float64(value))))
        elif isinstance(value, list):
            value = _gather_strings(value)
        else:
            value = jax.tree.map(lambda leaf: _gather_runs(leaf, np.nan if np.issubdtype(np.asarray(leaf).dtype,
                                                                                       np.floating) else 0), value)
        gathered[field.name] = value
    return dataclasses.replace(result, **gathered)


def run_batch(solver, params: PyTree, data: PyTree, state: PyTree | None = None, *, mesh: Mesh,
              data_axis: int | None = None, **options):
    """:func:`ntkhom.solvers.driver.run_batch` with the runs split across ``mesh`` (:func:`shard_runs`).

    On several processes each process runs its own share of the runs on its own devices (runs are
    independent, so no collective is needed while they train) and the results are gathered at the end.
    ``data``: shared by every run (``data_axis`` None, every device gets all of it) or one dataset per run
    (``data_axis=0``, split with the runs). Returns the driver's ``BatchResult`` for the B runs given
    (padding runs dropped), with params, state and records as NumPy arrays on every process. ``options`` go
    to the driver (steps, record_every, ...).
    """
    from ntkhom.solvers import driver

    if data_axis not in (None, 0):
        raise ValueError(f"data_axis must be None or 0, got {data_axis!r}")
    state = jax.vmap(solver.init, in_axes=(0, data_axis))(params, data) if state is None else state
    leaves = jax.tree.leaves(params)
    B = np.shape(leaves[0])[0] if leaves else 0
    size = padded_size(B, mesh)
    processes = jax.process_count()
    share = size // processes
    local = _local_mesh(mesh)
    if local.devices.size * processes != mesh.devices.size:
        raise ValueError("run_batch needs the same number of mesh devices on every process")
    first = jax.process_index() * share

    def mine(leaf):
        return pad_rows(host_array(leaf), size)[first:first + share]

    per_run = (params, state, data) if data_axis == 0 else (params, state)
    placed, _ = shard_runs(jax.tree.map(mine, per_run), local)
    params, state = placed[:2]
    data = placed[2] if data_axis == 0 else replicate(data, local)
    result = driver.run_batch(solver, params, data, state, data_axis=data_axis, **options)
    result = dataclasses.replace(result, params=jax.tree.map(host_array, result.params),
                                 state=jax.tree.map(host_array, result.state))
    if processes > 1:
        result = _gather_batch(result)
    trimmed = {}
    for field in dataclasses.fields(result):
        value = getattr(result, field.name)
        if field.name not in ("steps", "wall_time"):
            value = value[:B] if isinstance(value, list) else jax.tree.map(lambda leaf: np.asarray(leaf)[:B], value)
        trimmed[field.name] = value
    return dataclasses.replace(result, **trimmed)


# -- training batches split by rows ---------------------------------------------------------------------------
def shard_batch(batch: PyTree, mesh: Mesh) -> PyTree:
    """Every leaf of a training batch (x, y, ...: leading row axis n) split by rows across the mesh.

    Unlike kernel rows, a batch is not padded (a repeated row would count twice in the loss): n must be a
    multiple of the mesh's device count.
    """
    leaves = jax.tree.leaves(batch)
    if not leaves or any(np.ndim(leaf) == 0 for leaf in leaves):
        raise ValueError("shard_batch needs a pytree of arrays with a leading row axis")
    sizes = {np.shape(leaf)[0] for leaf in leaves}
    if len(sizes) != 1:
        raise ValueError(f"every leaf of the batch must have the same number of rows, got {sorted(sizes)}")
    (n,) = sizes
    devices = mesh.devices.size
    if n % devices:
        raise ValueError(
            f"a training batch of {n} rows does not split evenly over {devices} devices (padding rows would "
            f"change the loss): use {n - n % devices} or {n + devices - n % devices} rows, or a mesh of a "
            f"divisor of {n} devices")
    axis = _axis(mesh)

    def place(leaf):
        array = host_array(leaf)
        return _place(array, NamedSharding(mesh, P(axis, *([None] * (array.ndim - 1)))))

    return jax.tree.map(place, batch)


def run(solver, params: PyTree, data: PyTree, state: PyTree | None = None, *, mesh: Mesh, **options):
    """:func:`ntkhom.solvers.driver.run` with the batch split by rows across ``mesh`` (:func:`shard_batch`)
    and the parameters and solver state replicated, so each step is data-parallel.

    Full batches only (``batch_size`` and data iterators are refused: a minibatch drawn inside the step
    would gather rows across devices). Returns the driver's ``RunResult`` with params and state as NumPy
    arrays on every process; the same numbers as on one device, up to the order of the sums.
    """
    from ntkhom.solvers import driver

    if options.get("batch_size") is not None:
        raise ValueError("sharding.run trains on full batches; batch_size is not supported")
    data = shard_batch(data, mesh)
    params = replicate(params, mesh)
    state = replicate(solver.init(params, data) if state is None else state, mesh)
    result = driver.run(solver, params, data, state, **options)
    return dataclasses.replace(result, params=jax.tree.map(host_array, result.params),
                               state=jax.tree.map(host_array, result.state))
