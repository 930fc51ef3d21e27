"""Neural tangent kernels: finite width for any network, infinite width, closed form, and the s-path.

Conventions. Every kernel here is the Gram matrix K_ij = <d f(x_i) / d theta, d f(x'_j) / d theta> over the
*trained* parameters (``trained=``, :mod:`ntkhom.networks`; ``model.trained`` for a ``HomotopyMLP``): with
the loss 1/2 sum_i (f_i - y_i)^2, gradient descent with step eta moves the residual by -eta K (f - y). For
``trained="hidden"`` the output layer is frozen, so the infinite-width kernel is neural-tangents' NTK minus
the output layer's own contribution, which is exactly the network's NNGP (the output layer's weights enter f
linearly).

Networks. :func:`empirical_ntk` takes anything :func:`ntkhom.networks.as_network` accepts (a function
``f(params, x[, s])``, a stax triple, a Flax module, a ``HomotopyMLP``); :func:`infinite_ntk` any network
with an infinite-width description (a stax triple, a ``HomotopyMLP``); :func:`network_kernel` picks the
structured two-layer kernel below where it applies. Every kernel runs under ``jax.jit``, ``jax.vmap`` and
``jax.grad`` (in ``s`` and in the parameters): values are checked only where they are concrete, and the
jitted pieces are compiled once per network and shape, at module level.

Two-layer structure. For f(x) = c2 sum_r a_r sigma_s(z_r) (+ b_out c), z_r = c1 w_r . x (+ b_std b_r),
c1 = W_std_1 / sqrt(d), c2 = W_std_2 / sqrt(m):

    K = c2^2 (A A'^T) o (c1^2 X X'^T + b_std^2)      hidden layer, A_ir = a_r sigma_s'(z_ir)
      + c2^2 S S'^T + b_out^2                          output layer (trained="all"), S_ir = sigma_s(z_ir)

and since sigma_s = z + s (phi(z) - z) is affine in s, K(s) = K0 + s K1 + s^2 K2 exactly, at any width and
at infinite width (:class:`KernelPath`). :func:`empirical_ntk_two_layer` computes this with matrix products in
blocks over the width (and optionally over rows), so memory is O(n^2 + n * block) at any width.

Sign patterns. For the ReLU family (phi' takes the value lo for z <= 0 and hi for z > 0) and output weights
of equal magnitude (a_r^2 = alpha, as at initialization), the hidden-layer term needs no float product:
with B_ir = [z_ir > 0], N = B B'^T (shared positive units), c_i = sum_r B_ir and sigma_s' = p0 + p1 B,

    A A'^T = alpha (m p0^2 + p0 p1 (c_i + c'_j) + p1^2 N_ij).

N is counted exactly on bit-packed patterns (32 units per uint32 word, AND then popcount): the whole
kernel then takes about a sixth of the time of the float32 products on an AVX-512 CPU (n = 1000, width
1024), and the counts themselves cost the same whatever the float dtype.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from ntkhom.activations import check_s
from ntkhom.data import check_inputs, is_whole
from ntkhom.models import HomotopyMLP, Params
from ntkhom.networks import Network, as_network, check_applies, check_params, check_trained, combine

__all__ = [
    "KernelPath",
    "network_kernel",
    "empirical_ntk",
    "empirical_ntk_batch",
    "empirical_ntk_two_layer",
    "empirical_kernel_path",
    "infinite_ntk",
    "infinite_nngp",
    "infinite_kernel_path",
    "closed_form_ntk_relu",
    "DEFAULT_BLOCK_BYTES",
]

#: Memory budget of one width block's temporaries (n x block activations, a few of them).
DEFAULT_BLOCK_BYTES = 64 * 2**20
#: Homotopy parameters at which the infinite-width path is sampled to recover its three coefficients.
_PATH_NODES = (0.0, 1.0, 2.0)


@functools.partial(jax.tree_util.register_dataclass, data_fields=["K0", "K1", "K2"], meta_fields=[])
@dataclasses.dataclass(frozen=True)
class KernelPath:
    """K(s) = K0 + s K1 + s^2 K2: a whole homotopy path of two-layer kernels as three (n1, n2) matrices.

    A pytree, so jitted code can return it and ``jax.vmap`` can stack it.
    """

    K0: jax.Array
    K1: jax.Array
    K2: jax.Array

    def at(self, s) -> jax.Array:
        """K(s); ``s`` may be a scalar or a 1-D array (then the result is stacked, (len(s), n1, n2)).

        Concrete values of ``s`` go through :func:`ntkhom.activations.check_s` (NaN and inf are refused;
        outside [0, 2] warns); traced ones are not checked."""
        if not isinstance(s, jax.core.Tracer):  # a grid's min and max carry any NaN, inf or range warning
            for end in (s,) if np.ndim(s) == 0 else (np.min(s), np.max(s)) if np.size(s) else ():
                check_s(end)
        s = jnp.asarray(s, self.K0.dtype)
        if s.ndim == 0:
            return self.K0 + s * self.K1 + s**2 * self.K2
        return self.K0[None] + s[:, None, None] * self.K1[None] + (s**2)[:, None, None] * self.K2[None]

    @property
    def dtype(self):
        return self.K0.dtype


# -- inputs -----------------------------------------------------------------------------------------------
def _pair(network: Network | None, params, x1, x2):
    """Validated (x1, x2): 2-D, finite where concrete, equal feature counts, matching a HomotopyMLP's d.

    With ``params``, non-finite parameters are refused first, naming the leaf."""
    model = None if network is None else network.model
    if params is not None:
        check_params(params)

    def one(x, name):
        if model is not None and params is not None:
            return model.check(params, x, name)
        return check_inputs(x, name)

    x1 = one(x1, "x1")
    if x2 is None:
        return x1, None
    x2 = one(x2, "x2")
    if x2.shape[1] != x1.shape[1]:
        raise ValueError(f"x1 has {x1.shape[1]} features but x2 has {x2.shape[1]}")
    return x1, x2


#: (n1, n2) matrices' worth of memory a dense kernel takes at its peak (the result and XLA's temporaries;
#: measured: 9.24 GiB for the closed-form float64 kernel at n = 20000 and its eigvalsh, about three).
KERNEL_TEMPORARIES = 3


def _check_kernel_memory(x1, x2, what: str, matrices: int = KERNEL_TEMPORARIES, dtype=None) -> None:
    """A one-line :class:`ntkhom.memory.MemoryLimitError` before a dense (n1, n2) kernel that cannot fit
    (where the inputs are concrete; under ``jit`` the caller's trace decides)."""
    if any(isinstance(x, jax.core.Tracer) for x in (x1, x2) if x is not None):
        return
    from ntkhom.memory import check_memory

    n1 = x1.shape[0]
    n2 = n1 if x2 is None else x2.shape[0]
    itemsize = jnp.dtype(dtype or x1.dtype).itemsize
    check_memory(matrices * n1 * n2 * itemsize, f"{what} of {n1} x {n2} points (dense, {matrices} matrices of "
                 f"{jnp.dtype(dtype or x1.dtype).name})",
                 alternative="for spectra at this size use the matrix-free operators of ntkhom.operators, or "
                             "fewer points")


def _homotopy_s(network: Network, s):
    """``s`` checked (where concrete) for a network that takes one; None keeps the network's default."""
    if s is None:
        return None
    if not network.accepts_s:
        raise TypeError("this network takes no homotopy parameter s (it is fixed in its layers); pass s=None")
    return check_s(s)


def _homotopy_model(network, what: str) -> HomotopyMLP:
    model = network if isinstance(network, HomotopyMLP) else as_network(network).model
    if model is None or model.depth != 1 or model.out_dim != 1:
        got = "not a HomotopyMLP" if model is None else f"widths={model.widths}, out_dim={model.out_dim}"
        raise ValueError(
            f"{what} needs a two-layer network (a HomotopyMLP with one hidden layer and one output; {got}); "
            "use empirical_ntk for other networks"
        )
    return model


# -- finite width: any network ------------------------------------------------------------------------------
@functools.partial(jax.jit, static_argnames=("apply",))
def _jacobian_ntk(apply, trainable, frozen, x1, x2, s) -> jax.Array:
    """sum over trained leaves of J(x1) J(x2)^T, averaged over the k outputs; jitted once per network."""

    def row_jacobian(x):
        # Leaves of shape (k, *leaf shape): the Jacobian of one input's k outputs.
        return jax.jacrev(lambda t: apply(combine(t, frozen), x[None], s)[0])(trainable)

    def flat(jacobian, n):
        leaves = [leaf.reshape(n, leaf.shape[1], -1) for leaf in jax.tree.leaves(jacobian)]
        return jnp.concatenate(leaves, axis=-1)  # (n, k, P)

    j1 = flat(jax.vmap(row_jacobian)(x1), x1.shape[0])
    j2 = j1 if x2 is None else flat(jax.vmap(row_jacobian)(x2), x2.shape[0])
    return jnp.einsum("ikp,jkp->ij", j1, j2) / j1.shape[1]


def empirical_ntk(
    network,
    params,
    x1,
    x2=None,
    *,
    s=None,
    trained=None,
    implementation=None,
) -> jax.Array:
    """Empirical NTK of any network over its trained parameters, shape (n1, n2).

    K_ij = (1/k) sum_o <d f_o(x1_i) / d theta, d f_o(x2_j) / d theta> over the trained leaves theta, averaged
    over the k outputs (neural-tangents' ``trace_axes=(-1,)``).

    Args:
      network: anything :func:`ntkhom.networks.as_network` accepts (a ``HomotopyMLP``, a stax triple, a
        Flax module, a function ``f(params, x[, s])``).
      params: the parameter pytree; non-finite leaves are refused (where concrete).
      x1: (n1, d) inputs. x2: (n2, d) inputs, or None for x1.
      s: homotopy parameter for networks that take one (None: the network's default).
      trained: which leaves are trained (:func:`ntkhom.networks.trained_mask`); None: the network's default.
      implementation: None (default) for ntkhom's Jacobian contraction (jitted once per network; runs under
        ``jit``, ``vmap`` and ``grad``), or a neural-tangents ``NtkImplementation`` (JACOBIAN_CONTRACTION or
        NTK_VECTOR_PRODUCTS) to use neural-tangents' ``empirical_ntk_fn``.
    """
    network = as_network(network)
    x1, x2 = _pair(network, params, x1, x2)
    _check_kernel_memory(x1, x2, "empirical_ntk")
    s = _homotopy_s(network, s)
    trainable, frozen = network.partition(params, trained)
    check_trained(trainable, trained)
    check_applies(network.apply, params, x1, s, name="x1")
    if implementation is None:
        return _jacobian_ntk(network.apply, trainable, frozen, x1, x2, s)
    from ntkhom.nt import empirical_ntk_fn

    def f(t, x):
        return network.apply(combine(t, frozen), x, s)

    return empirical_ntk_fn(f, trace_axes=(-1,), vmap_axes=0, implementation=implementation)(x1, x2, trainable)


@functools.partial(jax.jit, static_argnames=("apply",))
def _batch_ntk(apply, trainable, frozen, x, s):
    return jax.lax.map(lambda item: _jacobian_ntk(apply, item[0], item[1], x, None, item[2]), (trainable, frozen, s))


def empirical_ntk_batch(network, params_batch, x, *, s=None, trained=None) -> jax.Array:
    """:func:`empirical_ntk` for B parameter sets (leading axis of every leaf), shape (B, n, n).

    ``s``: None, or B values of the homotopy parameter (1-D), one per parameter set. One compilation per
    network and shape (jitted at module level; ``lax.map``, so memory stays that of one kernel).
    """
    network = as_network(network)
    check_params(params_batch, "params_batch")
    first = jax.tree.map(lambda leaf: leaf[0], params_batch)
    x, _ = _pair(network, first, x, None)
    batch = jax.tree.leaves(params_batch)[0].shape[0]
    if s is not None:
        if not network.accepts_s:
            raise TypeError("this network takes no homotopy parameter s; pass s=None")
        s = jnp.asarray(s, x.dtype)
        if s.ndim != 1 or s.shape[0] != batch:
            raise ValueError(f"s must be 1-D with one value per parameter set ({batch}), got shape {s.shape}")
    _check_kernel_memory(x, None, f"empirical_ntk_batch of {batch} parameter sets",
                         matrices=batch + KERNEL_TEMPORARIES)
    trainable, frozen = network.partition(params_batch, trained)
    check_trained(trainable, trained)
    check_applies(network.apply, first, x, None if s is None else s[0])
    return _batch_ntk(network.apply, trainable, frozen, x, s)


# -- finite width: structured two-layer kernel -------------------------------------------------------------
def _block_width(n_rows: int, width: int, itemsize: int, block_width: int | None) -> int:
    if block_width is not None:
        if not is_whole(block_width):
            raise ValueError(f"block_width must be positive (an integer >= 1), got {block_width!r}")
        return min(int(block_width), width)
    # Six (n x block) temporaries live at once (z, sigma and sigma' for both sides).
    fitting = max(128, DEFAULT_BLOCK_BYTES // max(1, 6 * n_rows * itemsize))
    if fitting >= width:
        return int(width)
    # Equal blocks, each a multiple of 128 columns: the zero padding of the last block stays small.
    blocks = -(-width // fitting)
    return int(min(width, 128 * -(-width // (128 * blocks))))


def _two_layer_constants(model: HomotopyMLP, d: int, width: int):
    (w1_std, b1_std), (w2_std, b2_std) = model.layer_scales(d)
    c1 = w1_std / math.sqrt(d)
    c2 = w2_std / math.sqrt(width)
    return c1, b1_std, c2, b2_std


def _symmetric_tiles(n_rows: int) -> int:
    # K(X, X) is symmetric: with T row tiles only the tiles on and above the diagonal are multiplied,
    # (T + 1) / (2 T) of the flops. Tiles of fewer than ~256 rows make matrix products inefficient.
    return int(max(1, min(4, n_rows // 256)))


#: Units per packed word of a sign pattern.
_WORD_BITS = 32
#: Words per shared-bit reduction: XLA's CPU code for the reduction slows ~30-fold past 32 words.
_CHUNK_WORDS = 32


def _pack_signs(z: jax.Array) -> jax.Array:
    """Bit-pack [z > 0] of an (n, block) block, block a multiple of 32, as (block / 32, n) uint32 words."""
    n, block = z.shape
    bits = (z.T > 0).reshape(block // _WORD_BITS, _WORD_BITS, n).astype(jnp.uint32)
    shifts = jnp.arange(_WORD_BITS, dtype=jnp.uint32)[:, None]
    # The bits are distinct, so the sum is their OR.
    return jnp.sum(bits << shifts, axis=1, dtype=jnp.uint32)


def _shared_bits(p: jax.Array, q: jax.Array) -> jax.Array:
    """N_ij = number of set bits that word columns p[:, i] and q[:, j] share, (n1, n2) int32.

    Words lead, so the fused reduction runs over the leading axis and vectorizes over j.
    """
    return jnp.sum(jax.lax.population_count(p[:, :, None] & q[:, None, :]), axis=0, dtype=jnp.int32)


def _set_bits(p: jax.Array) -> jax.Array:
    """Number of set bits of each word column, (n,) int32."""
    return jnp.sum(jax.lax.population_count(p), axis=0, dtype=jnp.int32)


def _slope_coefficients(phi, s, degree: int):
    """(p0, p1) of each slope vector p0 + p1 B_ir (B = [z > 0]) of the ReLU family: one pair at degree 0
    (sigma_s'), the s^0 and s^1 parts of sigma_s' at degree 2."""
    lo, hi = phi.slopes
    if degree == 0:
        return ((1.0 - s + s * lo, s * (hi - lo)),)
    return ((1.0, 0.0), (lo - 1.0, hi - lo))


@functools.partial(
    jax.jit, static_argnames=("model", "block", "degree", "tiles", "output_bias", "pattern")
)
def _two_layer_blocks(model, W, b, a, x1, x2, s, block, degree, tiles=1, output_bias=False, pattern=False):
    """The two-layer kernel from sums over width blocks of the hidden- and output-layer products.

    degree 0: the kernel at ``s`` (one product per block and trained layer), shape (n1, n2). degree 2: the
    three coefficient matrices of K(s) (three products per block and layer), shape (3, n1, n2). With
    ``x2`` None and ``tiles`` > 1, rows are cut into ``tiles`` tiles, only the upper block triangle is
    multiplied and the result is mirrored (every term is symmetric when x2 = x1). With ``pattern`` (ReLU
    family, equal |a_r|, ``block`` a multiple of 32) the hidden term comes from sign-pattern counts instead
    of float products (module docstring). One jitted call, so the n1 x n2 elementwise assembly is fused
    instead of dispatched op by op.
    """
    d, width = W.shape
    dtype = W.dtype
    a = a[:, 0]
    c1, b1_std, c2, b2_std = _two_layer_constants(model, d, width)
    phi = model.phi
    gram = (c1**2) * (x1 @ (x1 if x2 is None else x2).T)
    if b is not None:
        gram = gram + b1_std**2
    blocks = -(-width // block)
    pad = blocks * block - width
    # Zero-padded columns have a = 0, mask = 0 and z = 0 (no set bit), so they add nothing to any product.
    mask = jnp.concatenate([jnp.ones(width, dtype), jnp.zeros(pad, dtype)]).reshape(blocks, block)
    alpha = a[0] ** 2
    W = jnp.pad(W, ((0, 0), (0, pad))).reshape(d, blocks, block).transpose(1, 0, 2)
    a = jnp.pad(a, (0, pad)).reshape(blocks, block)
    b = None if b is None else jnp.pad(b, (0, pad)).reshape(blocks, block)
    trained_output = model.trained == "all"
    # Python-float constants stay weakly typed, so float32 inputs stay float32 under x64 too.
    c1 = jnp.asarray(c1, dtype)
    s = jnp.asarray(s, dtype)
    symmetric = x2 is None and tiles > 1

    def preactivation(x, Wb, bb):
        z = (x * c1) @ Wb
        return z if bb is None else z + b1_std * bb

    def features(z, ab, mb):
        derivative = phi.derivative(z)
        am = ab * mb
        if degree == 0:
            # sigma_s' = 1 + s (phi' - 1), sigma_s = z + s (phi - z), combined once per block.
            slope = None if pattern else (am * (1 - s + s * derivative),)
            value = ((z + s * (phi.fn(z) - z)) * mb,) if trained_output else None
            return slope, value
        # Their s^0 and s^1 parts, for the three coefficient matrices.
        slopes = None if pattern else (jnp.broadcast_to(am, z.shape), am * (derivative - 1))
        values = (z * mb, (phi.fn(z) - z) * mb) if trained_output else None
        return slopes, values

    def products(p, q):
        if degree == 0:
            return p[0] @ q[0].T
        k0 = p[0] @ q[0].T
        k1 = jnp.concatenate([p[0], p[1]], axis=1) @ jnp.concatenate([q[1], q[0]], axis=1).T
        k2 = p[1] @ q[1].T
        return jnp.stack([k0, k1, k2])

    n1 = x1.shape[0]
    n2 = n1 if x2 is None else x2.shape[0]
    tile = -(-n1 // tiles)
    starts = list(range(0, n1, tile))

    def accumulate(total, p, q):
        if not symmetric:
            return total + products(p, q)
        for start in starts:
            rows = slice(start, start + tile)
            piece = products(tuple(v[rows] for v in p), tuple(v[start:] for v in q))
            total = total.at[..., rows, start:].add(piece)
        return total

    def body(carry, blk):
        hidden, output, counts = carry
        Wb, ab, mb = blk[0], blk[1], blk[2]
        bb = blk[3] if b is not None else None
        z1 = preactivation(x1, Wb, bb)
        z2 = z1 if x2 is None else preactivation(x2, Wb, bb)
        slopes1, values1 = features(z1, ab, mb)
        slopes2, values2 = (slopes1, values1) if x2 is None else features(z2, ab, mb)
        if pattern:
            shared, positive1, positive2 = counts
            chunk = _WORD_BITS * _CHUNK_WORDS
            for start in range(0, block, chunk):
                bits1 = _pack_signs(z1[:, start:start + chunk])
                bits2 = bits1 if x2 is None else _pack_signs(z2[:, start:start + chunk])
                shared = shared + _shared_bits(bits1, bits2)
                positive1 = positive1 + _set_bits(bits1)
                positive2 = positive2 + _set_bits(bits2)
            counts = (shared, positive1, positive2)
        else:
            hidden = accumulate(hidden, slopes1, slopes2)
        if trained_output:
            output = accumulate(output, values1, values2)
        return (hidden, output, counts), None

    shape = (n1, n2) if degree == 0 else (3, n1, n2)
    zeros = jnp.zeros(shape, dtype)
    counts = (jnp.zeros((n1, n2), jnp.int32), jnp.zeros(n1, jnp.int32), jnp.zeros(n2, jnp.int32))
    xs = (W, a, mask) if b is None else (W, a, mask, b)
    (hidden, output, counts), _ = jax.lax.scan(body, (zeros, zeros, counts), xs)
    if symmetric:
        tile_index = jnp.arange(n1) // tile
        upper = tile_index[:, None] <= tile_index[None, :]
        if not pattern:
            hidden = jnp.where(upper, hidden, jnp.swapaxes(hidden, -1, -2))
        if trained_output:
            output = jnp.where(upper, output, jnp.swapaxes(output, -1, -2))
    if pattern:
        shared = counts[0].astype(dtype)
        positive1 = counts[1].astype(dtype)[:, None]
        positive2 = counts[2].astype(dtype)[None, :]

        def pair(p, q):
            (p0, p1), (q0, q1) = p, q
            return alpha * (width * p0 * q0 + p0 * q1 * positive2 + p1 * q0 * positive1 + p1 * q1 * shared)

        coefficients = _slope_coefficients(phi, s, degree)
        if degree == 0:
            hidden = pair(coefficients[0], coefficients[0])
        else:
            first, second = coefficients
            hidden = jnp.stack([pair(first, first), pair(first, second) + pair(second, first), pair(second, second)])
    kernel = c2**2 * hidden * gram
    if trained_output:
        kernel = kernel + c2**2 * output
        if output_bias:
            bias = b2_std**2
            kernel = kernel + (bias if degree == 0 else jnp.array([1.0, 0.0, 0.0], dtype)[:, None, None] * bias)
    return kernel


def _pattern_applies(model: HomotopyMLP, a) -> bool:
    # Needs a two-valued phi' and concrete output weights of one magnitude (checked on the host: under a
    # transformation the values are unknown, and the float products are used).
    if model.phi.slopes is None or isinstance(a, jax.core.Tracer):
        return False
    squares = np.square(np.asarray(a, np.float64)).ravel()
    return squares.size > 0 and bool(np.all(squares == squares[0]))


def _two_layer_assemble(model, params, x1, x2, s, degree, block_width, block_rows, pattern=None):
    W = params[0]["W"]
    b = params[0].get("b")
    a = params[1]["W"]  # (width, 1); its column is taken inside the jitted call
    width = W.shape[1]
    if pattern not in (None, True, False):
        raise ValueError(f"pattern must be None (automatic), True or False, got {pattern!r}")
    applies = _pattern_applies(model, a)
    if pattern and not applies:
        raise ValueError(
            "pattern=True needs a ReLU-family phi (relu, leaky_relu, abs) and output weights of equal "
            f"magnitude; got phi={model.phi.name!r}"
            + ("" if model.phi.slopes is None else " with unequal |a_r| (or traced output weights)")
            + "; use pattern=None to choose automatically"
        )
    pattern = applies if pattern is None else pattern
    x2_eff = x1 if x2 is None else x2
    block = _block_width(max(x1.shape[0], x2_eff.shape[0]), width, W.dtype.itemsize, block_width)
    if pattern:
        # Whole words, and whole chunks of words once a block holds more than one.
        unit = _WORD_BITS * (_CHUNK_WORDS if block > _WORD_BITS * _CHUNK_WORDS else 1)
        block = unit * -(-block // unit)
    if not (block_rows is None or is_whole(block_rows)):
        raise ValueError(f"block_rows must be positive (an integer >= 1), got {block_rows!r}")
    rows = x1.shape[0] if block_rows is None else int(block_rows)
    s_value = jnp.asarray(0.0 if s is None else s, W.dtype)
    output_bias = "b" in params[1]

    pieces = []
    for start in range(0, x1.shape[0], rows):
        whole = x2 is None and rows >= x1.shape[0]
        xr = x1 if rows >= x1.shape[0] else x1[start:start + rows]
        other = None if whole else x2_eff
        tiles = _symmetric_tiles(x1.shape[0]) if whole else 1
        pieces.append(
            _two_layer_blocks(model, W, b, a, xr, other, s_value, block, degree, tiles, output_bias, pattern)
        )
    return pieces[0] if len(pieces) == 1 else jnp.concatenate(pieces, axis=-2)


def empirical_ntk_two_layer(
    model,
    params: Params,
    x1,
    x2=None,
    *,
    s=None,
    block_width: int | None = None,
    block_rows: int | None = None,
    pattern: bool | None = None,
) -> jax.Array:
    """Empirical NTK of a two-layer homotopy network from matrix products (no Jacobians), (n1, n2).

    Equal to :func:`empirical_ntk` (tested), at a cost of about 2 n1 n2 m multiply-adds per trained layer.
    The width is processed in blocks of ``block_width`` columns (default: what fits in
    :data:`DEFAULT_BLOCK_BYTES`), and rows of x1 in tiles of ``block_rows`` (default: all), so memory is
    O(n1 n2 + n * block_width) whatever the width. Runs under ``jit``, ``vmap`` and ``grad`` (``s``, params).

    ``pattern``: how the hidden-layer term is computed. Both ways are exact, so the choice changes speed,
    not the result (beyond rounding: traced and concrete calls agree to 1e-12 in float64, tested). None
    (default) counts bit-packed sign patterns when that applies (ReLU-family phi, output weights of equal
    magnitude; see the module docstring) and the output weights are concrete, and uses float products
    otherwise (traced output weights, whose magnitudes are unknown); True insists on the counts (ValueError
    where they do not apply); False always uses float products.
    """
    model = _homotopy_model(model, "empirical_ntk_two_layer")
    x1, x2 = _pair(as_network(model), params, x1, x2)
    _check_kernel_memory(x1, x2, "empirical_ntk_two_layer")
    s = model.s if s is None else check_s(s)
    return _two_layer_assemble(model, params, x1, x2, s, 0, block_width, block_rows, pattern)


def empirical_kernel_path(
    model,
    params: Params,
    x1,
    x2=None,
    *,
    block_width: int | None = None,
    block_rows: int | None = None,
    pattern: bool | None = None,
) -> KernelPath:
    """The exact coefficients of K(s) = K0 + s K1 + s^2 K2 for a finite two-layer network (one pass).

    ``block_width``, ``block_rows`` and ``pattern`` as in :func:`empirical_ntk_two_layer`.
    """
    model = _homotopy_model(model, "empirical_kernel_path")
    x1, x2 = _pair(as_network(model), params, x1, x2)
    _check_kernel_memory(x1, x2, "empirical_kernel_path", matrices=KERNEL_TEMPORARIES + 2)
    K = _two_layer_assemble(model, params, x1, x2, None, 2, block_width, block_rows, pattern)
    return KernelPath(K[0], K[1], K[2])


def network_kernel(network, params, x1, x2=None, *, s=None, trained=None) -> jax.Array:
    """The empirical NTK by the fastest exact route, (n1, n2): the structured two-layer kernel
    (:func:`empirical_ntk_two_layer`) for a two-layer single-output ``HomotopyMLP`` with its own trained
    setting (``trained`` None, ``"hidden"`` or ``"all"``), :func:`empirical_ntk` otherwise."""
    network = as_network(network)
    model = network.model
    if model is not None and model.depth == 1 and model.out_dim == 1 and (trained is None or isinstance(trained, str)):
        if isinstance(trained, str):
            model = dataclasses.replace(model, trained=trained)
        return empirical_ntk_two_layer(model, params, x1, x2, s=s)
    return empirical_ntk(network, params, x1, x2, s=s, trained=trained)


# -- infinite width ---------------------------------------------------------------------------------------
def _infinite(network, x1, x2, s, batch_size: int | None):
    network = as_network(network)
    if network.kernel_fn is None:
        raise ValueError(
            "this network has no infinite-width description; build it from neural-tangents stax layers "
            "(with ntkhom.stax.Homotopy for sigma_s) or use a HomotopyMLP"
        )
    x1, x2 = _pair(None, None, x1, x2)
    if batch_size is not None:
        sizes = (x1.shape[0],) if x2 is None else (x1.shape[0], x2.shape[0])
        if not (isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size >= 1
                and all(size % batch_size == 0 for size in sizes)):
            raise ValueError(f"batch_size must be a positive integer dividing the numbers of points {sizes} "
                             f"(neural-tangents' batching), got {batch_size!r}")
    # NNGP and NTK together, and neural-tangents' temporaries unless it goes by batches
    _check_kernel_memory(x1, x2, "the infinite-width kernel", matrices=2 if batch_size else 2 * KERNEL_TEMPORARIES)
    s = _homotopy_s(network, s)
    return network.kernel_fn(x1, x2, s=s, batch_size=batch_size)


def infinite_ntk(network, x1, x2=None, *, s=None, batch_size: int | None = None) -> jax.Array:
    """Infinite-width NTK over the trained layers, shape (n1, n2).

    ``network``: a stax triple (its ``kernel_fn``; the NTK of every layer) or a ``HomotopyMLP`` (its stax
    description; ``trained="hidden"`` gives NTK minus NNGP, the frozen output layer's own term).
    ``batch_size`` evaluates the kernel in tiles (neural-tangents ``batch``, concrete inputs only) to bound
    memory. Jittable in x1, x2 (neural-tangents kernels are).
    """
    return _infinite(network, x1, x2, s, batch_size)[0]


def infinite_nngp(network, x1, x2=None, *, s=None, batch_size: int | None = None) -> jax.Array:
    """Infinite-width NNGP kernel (the output covariance at initialization), shape (n1, n2)."""
    return _infinite(network, x1, x2, s, batch_size)[1]


def infinite_kernel_path(model, x1, x2=None, *, batch_size: int | None = None) -> KernelPath:
    """K(s) = K0 + s K1 + s^2 K2 at infinite width (two-layer), from three kernels at s = 0, 1, 2.

    The infinite-width two-layer kernel is exactly quadratic in s (sigma_s is affine in s), so the three
    samples determine it; the result is checked against direct evaluation at other s in the tests.
    """
    model = _homotopy_model(model, "infinite_kernel_path")
    k0, k1, k2 = (infinite_ntk(model, x1, x2, s=s, batch_size=batch_size) for s in _PATH_NODES)
    # Newton form of the quadratic through s = 0, 1, 2.
    second = (k2 - 2.0 * k1 + k0) / 2.0
    return KernelPath(k0, k1 - k0 - second, second)


# -- closed form --------------------------------------------------------------------------------------------
def _arcsin_safe(rho):
    """arcsin(rho) for rho in [-1, 1], with the same values, and a gradient that is finite at |rho| = 1.

    arcsin'(rho) is infinite at |rho| = 1 (parallel or opposite inputs, the diagonal above all), where
    d rho / dx is 0, and inf * 0 made every gradient NaN. The kernel itself is smooth along the diagonal
    (positively homogeneous) and has a symmetric kink at parallel pairs, so the gradient there is that of
    the other factors: the end values +-pi/2 enter as constants. The inner where keeps the untaken branch
    finite ("double where"), since where's gradient multiplies both branches.
    """
    inside = jnp.abs(rho) < 1.0
    return jnp.where(inside, jnp.arcsin(jnp.where(inside, rho, 0.0)), jnp.sign(rho) * (np.pi / 2))


def closed_form_ntk_relu(x1, x2=None, *, s=1.0, trained: str = "hidden") -> jax.Array:
    """Infinite-width NTK of the two-layer homotopy-ReLU network in closed form (no neural-tangents).

    With G = X1 X2^T, rho = cosine of the angle between inputs and theta = arccos(rho):

        hidden layer:  H(s) = G o [ (1 - s/2)^2 + s^2 / (2 pi) arcsin(rho) ]
        output layer:  E[sigma_s(u) sigma_s(v)] = (1 - s) G + s^2 |x||x'| (sin theta + (pi - theta) rho) / (2 pi)

    for w ~ N(0, I_d), output weights of unit variance and no biases (:func:`ntkhom.models.two_layer`). For
    unit-norm inputs and s = 1 this is Du et al.'s H^inf. ``trained="all"`` adds the output-layer term.
    Runs under ``jit``, ``vmap`` and ``grad`` (the zero-input check runs on concrete inputs only).
    """
    if trained not in ("hidden", "all"):
        raise ValueError(f"unknown trained={trained!r}; choose 'hidden' or 'all'")
    s = check_s(s)
    x1 = check_inputs(x1, "x1")
    x2 = x1 if x2 is None else check_inputs(x2, "x2")
    if x1.shape[1] != x2.shape[1]:
        raise ValueError(f"x1 has {x1.shape[1]} features but x2 has {x2.shape[1]}")
    _check_kernel_memory(x1, x2, "closed_form_ntk_relu")
    concrete = not any(isinstance(x, jax.core.Tracer) for x in (x1, x2))
    if concrete and any(bool(np.any(np.all(np.asarray(x) == 0, axis=1))) for x in (x1, x2)):
        raise ValueError("closed_form_ntk_relu needs nonzero inputs (the angle between them must be defined)")
    norms = jnp.linalg.norm(x1, axis=1)[:, None] * jnp.linalg.norm(x2, axis=1)[None, :]
    gram = x1 @ x2.T
    rho = jnp.clip(gram / norms, -1.0, 1.0)
    arcsin = _arcsin_safe(rho)
    hidden = gram * ((1.0 - s / 2.0) ** 2 + s**2 / (2.0 * np.pi) * arcsin)
    if trained == "hidden":
        return hidden
    theta = np.pi / 2 - arcsin
    arccos1 = norms * (jnp.sin(theta) + (np.pi - theta) * rho) / (2.0 * np.pi)
    return hidden + (1.0 - s) * gram + s**2 * arccos1
