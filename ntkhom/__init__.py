"""ntkhom: neural tangent kernels, spectra and solvers for homotopy (linear-to-ReLU) networks, in JAX.

Networks use sigma_s(x) = (1 - s) x + s phi(x): linear at s = 0, ReLU at s = 1, |x| at s = 2.

Modules, in import order (each uses only those above it):

- ``ntkhom.data``: datasets, validation, normalization; ``enable_float64``.
- ``ntkhom.activations``: sigma_s and the base activations phi.
- ``ntkhom.dual``: dual activations, the infinite-width layer maps of sigma_s.
- ``ntkhom.models``: ``HomotopyMLP``, ``two_layer``, ``mlp``.
- ``ntkhom.networks``: any network (HomotopyMLP, stax, Flax, a function) as a ``Network``.
- ``ntkhom.nt``: the one door to neural-tangents.
- ``ntkhom.stax``: ``Homotopy``, a neural-tangents stax layer of sigma_s with its exact kernel.
- ``ntkhom.kernels``: empirical and infinite-width NTKs, the kernel path K(s) = K0 + s K1 + s^2 K2.
- ``ntkhom.native``: opt-in numba products with bit-packed 0/1 matrices (host CPU; the ``native`` extra).
- ``ntkhom.operators``: kernel operators: products K V without forming K (structured, Jacobian, infinite width).
- ``ntkhom.spectrum``: float64 spectra, each eigenvalue with its numerical floor (matrices or operators).
- ``ntkhom.eigensolvers``: certified iterative extreme eigenvalues of operators (Lanczos, LOBPCG), SLQ density.
- ``ntkhom.krylov``: linearized loss curves from kernel products (Lanczos quadrature).
- ``ntkhom.eigenpath``: certified lambda_min along any matrix path A(s).
- ``ntkhom.theory``: linearized predictions, Du et al.'s bound, rates, step-size limit.
- ``ntkhom.pathcond``: path-lifting tools, PathCond and ENorm rescaling.
- ``ntkhom.losses``: the losses the solvers minimize.
- ``ntkhom.solvers``: the solver protocol, the driver, GD/optax, HRTA, analytic AM, TIAM.
- ``ntkhom.memory``: memory estimates and allocation failures as one line.
- ``ntkhom.distributed``: joining several processes (``jax.distributed``) from flags, environment or SLURM.
- ``ntkhom.sharding``: one device mesh; kernels, operators and run grids split by rows over devices.
- ``ntkhom.experiments``: one module per command; ``verdicts`` holds the verdict vocabulary.
- ``ntkhom.plots``, ``ntkhom.report``, ``ntkhom.cli``: figures, run folders, the ``ntkhom`` command line.

The API reference (``mkdocs build``) documents each; ``ntkhom --help`` lists the commands.
"""

__version__ = "0.1.0"

from ntkhom.data import enable_float64

__all__ = ["enable_float64", "__version__"]
