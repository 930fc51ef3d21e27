"""The homotopy activation as a neural-tangents ``stax`` layer, for architectures users compose themselves.

    from ntkhom.nt import stax
    from ntkhom.stax import Homotopy

    init_fn, apply_fn, kernel_fn = stax.serial(stax.Dense(512), Homotopy(1.5), stax.Dense(512),
                                               Homotopy(0.5, phi="erf"), stax.Dense(1))

gives the finite network (``init_fn``, ``apply_fn``) and its exact infinite-width kernels (``kernel_fn``)
from one description. Importing this module does not import neural-tangents; :func:`Homotopy` loads it.
"""

from __future__ import annotations

from ntkhom.activations import Phi, as_phi, check_s, homotopy

__all__ = ["Homotopy"]


def Homotopy(s, phi: str | Phi = "relu"):  # noqa: N802 (stax layers are capitalised)
    """The stax layer of sigma_s(x) = (1 - s) x + s phi(x): ``(init_fn, apply_fn, kernel_fn)``.

    Infinite-width kernel: exact for the ReLU family (sigma_s is again piecewise linear, neural-tangents'
    ``ABRelu`` with slopes (1 - s) + s a and (1 - s) + s b), erf and GELU (closed forms, :mod:`ntkhom.dual`);
    tanh by :mod:`ntkhom.dual`'s quadrature (relative error about 1e-10).

    Args:
      s: homotopy parameter, a real number or a traced scalar (the kernel is differentiable in s).
      phi: base activation, a name in :data:`ntkhom.activations.PHI_NAMES` or a :class:`Phi`.

    Returns:
      The layer triple, composable with ``stax.serial``, ``stax.parallel`` and the rest of stax.
    """
    from ntkhom.nt import stax

    if isinstance(s, bool):
        raise TypeError("Homotopy: s must be a real number, got bool")
    phi = as_phi(phi)
    s = check_s(s)  # a float, or a tracer left as it is (the kernel is differentiable in s)
    if phi.slopes is not None:
        a, b = phi.slopes
        return stax.ABRelu((1.0 - s) + s * a, (1.0 - s) + s * b)

    from ntkhom.dual import dual_activation

    def fn(x):
        return homotopy(x, s, phi)

    try:
        dual = dual_activation(phi)
    except ValueError as error:  # a user's own phi: the finite network works, its kernel is refused clearly
        message = str(error)

        def nngp_fn(cov12, var1, var2):
            raise ValueError(message + "; estimate it with ntkhom.nt.monte_carlo_kernel_fn")

        d_nngp_fn = nngp_fn
    else:

        def nngp_fn(cov12, var1, var2):
            return dual.nngp(cov12, var1, var2, s)

        def d_nngp_fn(cov12, var1, var2):
            return dual.d_nngp(cov12, var1, var2, s)

    fn.__name__ = nngp_fn.__name__ = f"Homotopy({phi.name})"
    return stax.Elementwise(fn, nngp_fn, d_nngp_fn)
