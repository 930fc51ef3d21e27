"""Neural tangent kernels of homotopy networks: finite width, infinite width, closed form, and the s-path.

Conventions. Every kernel here is the Gram matrix K_ij = <d f(x_i) / d theta, d f(x'_j) / d theta> over the
*trained* parameters (``model.trained``): with the loss 1/2 sum_i (f_i - y_i)^2, gradient descent with step
eta moves the residual by -eta K (f - y). For ``trained="hidden"`` the output layer is frozen, so the
infinite-width kernel is neural-tangents' NTK minus the output layer's own contribution, which is exactly the
network's NNGP (the output layer's weights enter f linearly).

Two-layer structure. For f(x) = c2 sum_r a_r sigma_s(z_r) (+ b_out c), z_r = c1 w_r . x (+ b_std b_r),
c1 = W_std_1 / sqrt(d), c2 = W_std_2 / sqrt(m):

    K = c2^2 (A A'^T) o (c1^2 X X'^T + b_std^2)      hidden layer, A_ir = a_r sigma_s'(z_ir)
      + c2^2 S S'^T + b_out^2                          output layer (trained="all"), S_ir = sigma_s(z_ir)

and since sigma_s = z + s (phi(z) - z) is affine in s, K(s) = K0 + s K1 + s^2 K2 exactly, at any width and
at infinite width (:class:`KernelPath`). :func:`empirical_ntk_two_layer` computes this with matrix products in
blocks over the width (and optionally over rows), so memory is O(n^2 + n * block) at any width.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from ntkhom.activations import check_s
from ntkhom.data import check_inputs
from ntkhom.models import HomotopyMLP, Params
from ntkhom.nt import NtkImplementation, empirical_ntk_fn

__all__ = [
    "KernelPath",
    "empirical_ntk",
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


@dataclasses.dataclass(frozen=True)
class KernelPath:
    """K(s) = K0 + s K1 + s^2 K2: a whole homotopy path of two-layer kernels as three (n1, n2) matrices."""

    K0: jax.Array
    K1: jax.Array
    K2: jax.Array

    def at(self, s) -> jax.Array:
        """K(s); ``s`` may be a scalar or a 1-D array (then the result is stacked, (len(s), n1, n2))."""
        s = jnp.asarray(s, self.K0.dtype)
        if s.ndim == 0:
            return self.K0 + s * self.K1 + s**2 * self.K2
        return self.K0[None] + s[:, None, None] * self.K1[None] + (s**2)[:, None, None] * self.K2[None]

    @property
    def dtype(self):
        return self.K0.dtype


# -- inputs -----------------------------------------------------------------------------------------------
def _pair(model: HomotopyMLP, params: Params | None, x1, x2):
    x1 = check_inputs(x1, "x1") if params is None else model.check(params, x1)
    if x2 is None:
        return x1, None
    x2 = check_inputs(x2, "x2") if params is None else model.check(params, x2)
    if x2.shape[1] != x1.shape[1]:
        raise ValueError(f"x1 has {x1.shape[1]} features but x2 has {x2.shape[1]}")
    return x1, x2


def _require_two_layer(model: HomotopyMLP, what: str) -> None:
    if model.depth != 1 or model.out_dim != 1:
        raise ValueError(
            f"{what} needs a two-layer network with one output (got widths={model.widths}, "
            f"out_dim={model.out_dim}); use empirical_ntk (neural-tangents) for other networks"
        )


# -- finite width: neural-tangents, any network ----------------------------------------------------------
def empirical_ntk(
    model: HomotopyMLP,
    params: Params,
    x1,
    x2=None,
    s=None,
    *,
    implementation: NtkImplementation | int = NtkImplementation.JACOBIAN_CONTRACTION,
) -> jax.Array:
    """Empirical NTK over the trained parameters by neural-tangents' ``empirical_ntk_fn``, shape (n1, n2).

    Any depth. For several outputs the kernel is averaged over the output axis (neural-tangents'
    ``trace_axes``). ``implementation`` is JACOBIAN_CONTRACTION (default) or NTK_VECTOR_PRODUCTS;
    STRUCTURED_DERIVATIVES does not run on current JAX (see :mod:`ntkhom.nt`).
    """
    x1, x2 = _pair(model, params, x1, x2)
    s = model.s if s is None else check_s(s)

    def f(trainable, x):
        return model.apply(model.combine(trainable, params), x, s)

    ntk_fn = empirical_ntk_fn(f, trace_axes=(-1,), vmap_axes=0, implementation=implementation)
    return ntk_fn(x1, x2, model.trainable(params))


# -- finite width: structured two-layer kernel -------------------------------------------------------------
def _block_width(n_rows: int, width: int, itemsize: int, block_width: int | None) -> int:
    if block_width is not None:
        if block_width <= 0:
            raise ValueError(f"block_width must be positive, got {block_width}")
        return min(int(block_width), width)
    # Six (n x block) temporaries live at once (z, sigma and sigma' for both sides).
    fitting = DEFAULT_BLOCK_BYTES // max(1, 6 * n_rows * itemsize)
    return int(max(128, min(width, fitting)))


def _two_layer_constants(model: HomotopyMLP, d: int, width: int):
    (w1_std, b1_std), (w2_std, b2_std) = model.layer_scales(d)
    c1 = w1_std / math.sqrt(d)
    c2 = w2_std / math.sqrt(width)
    return c1, b1_std, c2, b2_std


@functools.partial(jax.jit, static_argnames=("model", "block", "degree"))
def _two_layer_blocks(model, W, b, a, x1, x2, s, block, degree):
    """Sum over width blocks of the hidden- and output-layer kernel products.

    degree 0: the kernel at ``s`` (two products per block). degree 2: the three coefficient matrices of
    K(s) (six products per block). Returns (hidden, output), each of shape (terms, n1, n2).
    """
    d, width = W.shape
    c1, b1_std, c2, _ = _two_layer_constants(model, d, width)
    phi = model.phi
    blocks = -(-width // block)
    pad = blocks * block - width
    mask = jnp.concatenate([jnp.ones(width, W.dtype), jnp.zeros(pad, W.dtype)]).reshape(blocks, block)
    W = jnp.pad(W, ((0, 0), (0, pad))).reshape(d, blocks, block).transpose(1, 0, 2)
    a = jnp.pad(a, (0, pad)).reshape(blocks, block)
    b = None if b is None else jnp.pad(b, (0, pad)).reshape(blocks, block)
    trained_output = model.trained == "all"

    def features(x, Wb, bb, ab, mb):
        z = c1 * (x @ Wb)
        if bb is not None:
            z = z + b1_std * bb
        # sigma_s' = 1 + s (phi' - 1), sigma_s = z + s (phi - z): their s^0 and s^1 parts.
        slope0 = jnp.broadcast_to(ab * mb, z.shape)
        slope1 = ab * mb * (phi.derivative(z) - 1.0)
        value0 = z * mb
        value1 = (phi.fn(z) - z) * mb
        return slope0, slope1, value0, value1

    def products(p, q):
        if degree == 0:
            return (p[0] + s * p[1]) @ (q[0] + s * q[1]).T
        k0 = p[0] @ q[0].T
        k1 = jnp.concatenate([p[0], p[1]], axis=1) @ jnp.concatenate([q[1], q[0]], axis=1).T
        k2 = p[1] @ q[1].T
        return jnp.stack([k0, k1, k2])

    def body(carry, blk):
        hidden, output = carry
        Wb, ab, mb = blk[0], blk[1], blk[2]
        bb = blk[3] if b is not None else None
        f1 = features(x1, Wb, bb, ab, mb)
        f2 = f1 if x2 is None else features(x2, Wb, bb, ab, mb)
        hidden = hidden + products(f1[:2], f2[:2])
        if trained_output:
            output = output + products(f1[2:], f2[2:])
        return (hidden, output), None

    n2 = x1.shape[0] if x2 is None else x2.shape[0]
    terms = 1 if degree == 0 else 3
    zeros = jnp.zeros((terms, x1.shape[0], n2), W.dtype)
    xs = (W, a, mask) if b is None else (W, a, mask, b)
    if degree == 0:
        zeros = zeros[0]
    (hidden, output), _ = jax.lax.scan(body, (zeros, zeros), xs)
    return hidden, output


def _two_layer_assemble(model, params, x1, x2, s, degree, block_width, block_rows):
    W = params[0]["W"]
    b = params[0].get("b")
    a = params[1]["W"][:, 0]
    d, width = W.shape
    c1, b1_std, c2, b2_std = _two_layer_constants(model, d, width)
    x2_eff = x1 if x2 is None else x2
    block = _block_width(max(x1.shape[0], x2_eff.shape[0]), width, W.dtype.itemsize, block_width)
    rows = x1.shape[0] if block_rows is None else int(block_rows)
    if rows <= 0:
        raise ValueError(f"block_rows must be positive, got {block_rows}")
    s_value = jnp.asarray(0.0 if s is None else s, W.dtype)

    pieces_hidden, pieces_output = [], []
    for start in range(0, x1.shape[0], rows):
        xr = x1[start:start + rows]
        other = None if (x2 is None and rows >= x1.shape[0]) else x2_eff
        hidden, output = _two_layer_blocks(model, W, b, a, xr, other, s_value, block, degree)
        pieces_hidden.append(hidden)
        pieces_output.append(output)
    hidden = jnp.concatenate(pieces_hidden, axis=-2)
    output = jnp.concatenate(pieces_output, axis=-2)

    gram = c1**2 * (x1 @ x2_eff.T)
    if b is not None:
        gram = gram + b1_std**2
    kernel = c2**2 * hidden * gram
    if model.trained == "all":
        kernel = kernel + c2**2 * output
        if "b" in params[1]:
            bias = b2_std**2
            kernel = kernel + (bias if degree == 0 else jnp.array([1.0, 0.0, 0.0], W.dtype)[:, None, None] * bias)
    return kernel


def empirical_ntk_two_layer(
    model: HomotopyMLP,
    params: Params,
    x1,
    x2=None,
    s=None,
    *,
    block_width: int | None = None,
    block_rows: int | None = None,
) -> jax.Array:
    """Empirical NTK of a two-layer homotopy network from matrix products (no Jacobians), (n1, n2).

    Equal to :func:`empirical_ntk` (tested), at a cost of about 2 n1 n2 m multiply-adds per trained layer.
    The width is processed in blocks of ``block_width`` columns (default: what fits in
    :data:`DEFAULT_BLOCK_BYTES`), and rows of x1 in tiles of ``block_rows`` (default: all), so memory is
    O(n1 n2 + n * block_width) whatever the width.
    """
    _require_two_layer(model, "empirical_ntk_two_layer")
    x1, x2 = _pair(model, params, x1, x2)
    s = model.s if s is None else check_s(s)
    return _two_layer_assemble(model, params, x1, x2, s, 0, block_width, block_rows)


def empirical_kernel_path(
    model: HomotopyMLP,
    params: Params,
    x1,
    x2=None,
    *,
    block_width: int | None = None,
    block_rows: int | None = None,
) -> KernelPath:
    """The exact coefficients of K(s) = K0 + s K1 + s^2 K2 for a finite two-layer network (one pass)."""
    _require_two_layer(model, "empirical_kernel_path")
    x1, x2 = _pair(model, params, x1, x2)
    K = _two_layer_assemble(model, params, x1, x2, None, 2, block_width, block_rows)
    return KernelPath(K[0], K[1], K[2])


# -- infinite width ---------------------------------------------------------------------------------------
def _infinite(model: HomotopyMLP, x1, x2, s, batch_size: int | None):
    from ntkhom.nt import nt

    x1, x2 = _pair(model, None, x1, x2)
    s = model.s if s is None else check_s(s)
    _, _, kernel_fn = model.stax(x1.shape[1], s)
    if batch_size:
        kernel_fn = nt.batch(kernel_fn, batch_size=batch_size)
    kernel = kernel_fn(x1, x2, ("ntk", "nngp"))
    return kernel.ntk, kernel.nngp


def infinite_ntk(model: HomotopyMLP, x1, x2=None, s=None, *, batch_size: int | None = None) -> jax.Array:
    """Infinite-width NTK over the trained layers (neural-tangents ``stax``), shape (n1, n2).

    ``trained="hidden"``: NTK minus NNGP (the frozen output layer's own term); ``"all"``: the full NTK.
    ``batch_size`` evaluates the kernel in tiles (neural-tangents ``batch``) to bound memory.
    """
    ntk, nngp = _infinite(model, x1, x2, s, batch_size)
    return ntk - nngp if model.trained == "hidden" else ntk


def infinite_nngp(model: HomotopyMLP, x1, x2=None, s=None, *, batch_size: int | None = None) -> jax.Array:
    """Infinite-width NNGP kernel (the output covariance at initialization), shape (n1, n2)."""
    return _infinite(model, x1, x2, s, batch_size)[1]


def infinite_kernel_path(model: HomotopyMLP, x1, x2=None, *, batch_size: int | None = None) -> KernelPath:
    """K(s) = K0 + s K1 + s^2 K2 at infinite width (two-layer), from three kernels at s = 0, 1, 2.

    The infinite-width two-layer kernel is exactly quadratic in s (sigma_s is affine in s), so the three
    samples determine it; the result is checked against direct evaluation at other s in the tests.
    """
    _require_two_layer(model, "infinite_kernel_path")
    k0, k1, k2 = (infinite_ntk(model, x1, x2, s, batch_size=batch_size) for s in _PATH_NODES)
    # Newton form of the quadratic through s = 0, 1, 2.
    second = (k2 - 2.0 * k1 + k0) / 2.0
    return KernelPath(k0, k1 - k0 - second, second)


# -- closed form --------------------------------------------------------------------------------------------
def closed_form_ntk_relu(x1, x2=None, s=1.0, *, trained: str = "hidden") -> jax.Array:
    """Infinite-width NTK of the two-layer homotopy-ReLU network in closed form (no neural-tangents).

    With G = X1 X2^T, rho = cosine of the angle between inputs and theta = arccos(rho):

        hidden layer:  H(s) = G o [ (1 - s/2)^2 + s^2 / (2 pi) arcsin(rho) ]
        output layer:  E[sigma_s(u) sigma_s(v)] = (1 - s) G + s^2 |x||x'| (sin theta + (pi - theta) rho) / (2 pi)

    for w ~ N(0, I_d), output weights of unit variance and no biases (:func:`ntkhom.models.two_layer`). For
    unit-norm inputs and s = 1 this is Du et al.'s H^inf. ``trained="all"`` adds the output-layer term.
    """
    if trained not in ("hidden", "all"):
        raise ValueError(f"unknown trained={trained!r}; choose 'hidden' or 'all'")
    s = check_s(s)
    x1 = check_inputs(x1, "x1")
    x2 = x1 if x2 is None else check_inputs(x2, "x2")
    if x1.shape[1] != x2.shape[1]:
        raise ValueError(f"x1 has {x1.shape[1]} features but x2 has {x2.shape[1]}")
    norms = jnp.linalg.norm(x1, axis=1)[:, None] * jnp.linalg.norm(x2, axis=1)[None, :]
    if bool(jnp.any(norms == 0)):
        raise ValueError("closed_form_ntk_relu needs nonzero inputs (the angle between them must be defined)")
    gram = x1 @ x2.T
    rho = jnp.clip(gram / norms, -1.0, 1.0)
    hidden = gram * ((1.0 - s / 2.0) ** 2 + s**2 / (2.0 * np.pi) * jnp.arcsin(rho))
    if trained == "hidden":
        return hidden
    theta = jnp.arccos(rho)
    arccos1 = norms * (jnp.sin(theta) + (np.pi - theta) * rho) / (2.0 * np.pi)
    return hidden + (1.0 - s) * gram + s**2 * arccos1
