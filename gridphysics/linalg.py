"""Sparse linear systems with a static pattern: the one place that picks dense or KLU.

Solvers describe a matrix by a static :class:`SparsePattern` (row and column of each
stored entry, coalesced, computed once per topology in numpy) and a vector of traced
``values``. :func:`solve` then solves ``A(values) x = rhs`` with one of two backends:

``"dense"``
    scatter into an ``n x n`` array and LU-factorize. Used on accelerators and for
    small systems. Its batching rule factorizes once when only ``rhs`` is batched
    (one LU, one multi-right-hand-side solve), and once per scenario otherwise. Its
    reverse-mode rule is one adjoint (transposed) solve.
``"klu"``
    KLU sparse LU from the ``klujax`` package: CPU and float64 only, never forms a
    dense matrix; it batches and differentiates natively.

:func:`choose_backend` holds the rule: KLU for systems larger than
:data:`DENSE_MAX_N` unknowns when the default JAX backend is the CPU, float64 mode
is on and klujax imports; dense otherwise.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np
from jax.custom_batching import custom_vmap

from gridphysics.errors import UnsupportedError

Backend = Literal["dense", "klu"]

#: Largest system solved densely on CPU when KLU is available.
DENSE_MAX_N = 600

try:  # klujax is optional: not every platform has a wheel.
    import klujax as _klujax
except ImportError:  # pragma: no cover - exercised only where klujax is missing
    _klujax = None


def klu_available() -> bool:
    """Whether the KLU backend can run here (klujax importable, x64 on, CPU backend)."""
    return (
        _klujax is not None
        and bool(jax.config.jax_enable_x64)
        and jax.default_backend() == "cpu"
    )


def choose_backend(n: int, requested: Backend | None = None) -> Backend:
    """The backend for an ``n``-unknown system: ``requested`` if given, else by size."""
    if requested == "klu" and not klu_available():
        raise UnsupportedError(
            "linear_solver='klu' needs the klujax package, JAX's float64 mode and the CPU "
            "backend; install klujax or use linear_solver='dense'"
        )
    if requested is not None:
        if requested not in ("dense", "klu"):
            raise UnsupportedError(f"linear_solver must be 'dense' or 'klu', got {requested!r}")
        return requested
    return "klu" if n > DENSE_MAX_N and klu_available() else "dense"


@dataclass(frozen=True, eq=False)
class SparsePattern:
    """Static sparsity pattern of an ``n x n`` matrix: unique ``(rows[k], cols[k])``.

    Hashable by identity; build one per topology and cache it.
    """

    n: int
    rows: np.ndarray
    cols: np.ndarray

    @property
    def nnz(self) -> int:
        return len(self.rows)

    @staticmethod
    def coalesce(n: int, rows: np.ndarray, cols: np.ndarray) -> tuple[SparsePattern, np.ndarray]:
        """Pattern of the unique entries, and the slot of each input entry in it.

        Accumulate contributions with ``jax.ops.segment_sum(contrib, slot, pattern.nnz)``.
        """
        keys = np.asarray(rows, np.int64) * n + np.asarray(cols, np.int64)
        uniq, slot = np.unique(keys, return_inverse=True)
        pattern = SparsePattern(
            n=n, rows=(uniq // n).astype(np.int32), cols=(uniq % n).astype(np.int32)
        )
        return pattern, slot.astype(np.int32)

    def to_dense(self, values: jax.Array) -> jax.Array:
        """The dense ``(n, n)`` matrix (for tests and small systems)."""
        return jnp.zeros((self.n, self.n), values.dtype).at[self.rows, self.cols].add(values)


def solve(
    pattern: SparsePattern, values: jax.Array, rhs: jax.Array, backend: Backend
) -> jax.Array:
    """Solve ``A x = rhs`` where ``A`` has ``pattern`` and entries ``values``.

    Args:
        pattern: static pattern, ``pattern.nnz`` entries.
        values: ``(nnz,)`` matrix entries.
        rhs: ``(n,)`` right-hand side.
        backend: ``"dense"`` or ``"klu"`` (see :func:`choose_backend`).

    Works under ``jit``, ``vmap`` (over values, rhs or both) and ``grad``.
    """
    if backend == "klu":
        return _klu_solve(pattern, values, rhs)
    return _dense_solver(pattern)(values, rhs)


def _klu_solve(pattern: SparsePattern, values: jax.Array, rhs: jax.Array) -> jax.Array:
    out_dtype = jnp.result_type(values, rhs)
    x = _klujax.solve(
        jnp.asarray(pattern.rows),
        jnp.asarray(pattern.cols),
        values.astype(jnp.float64),
        rhs.astype(jnp.float64),
    )
    return x.astype(out_dtype)


@functools.lru_cache(maxsize=256)
def _dense_solver(pattern: SparsePattern):
    """A dense solve for ``pattern`` with custom batching and reverse-mode rules."""
    rows, cols = pattern.rows, pattern.cols

    def lu_of(values: jax.Array):
        return jsl.lu_factor(pattern.to_dense(values))

    def make(trans: int):
        @custom_vmap
        def lsolve(values: jax.Array, rhs: jax.Array) -> jax.Array:
            return jsl.lu_solve(lu_of(values), rhs, trans=trans)

        @lsolve.def_vmap
        def _batched(axis_size, in_batched, values, rhs):
            values_batched, rhs_batched = in_batched
            if not values_batched:
                # One factorization shared by the whole batch: rhs (B, n) -> (n, B).
                if not rhs_batched:
                    rhs = jnp.broadcast_to(rhs, (axis_size, *rhs.shape))
                lu = lu_of(values)
                if rhs.ndim == 2:
                    return jsl.lu_solve(lu, rhs.T, trans=trans).T, True
                return jax.vmap(lambda r: jsl.lu_solve(lu, r, trans=trans))(rhs), True
            if not rhs_batched:
                rhs = jnp.broadcast_to(rhs, (axis_size, *rhs.shape))
            return jax.vmap(lambda v, r: jsl.lu_solve(lu_of(v), r, trans=trans))(values, rhs), True

        return lsolve

    forward, adjoint = make(0), make(1)

    @jax.custom_vjp
    def dense_solve(values: jax.Array, rhs: jax.Array) -> jax.Array:
        return forward(values, rhs)

    def fwd(values, rhs):
        x = forward(values, rhs)
        return x, (values, x)

    def bwd(res, x_bar):
        values, x = res
        rhs_bar = adjoint(values, x_bar)
        values_bar = -rhs_bar[rows] * x[cols]
        return values_bar, rhs_bar

    dense_solve.defvjp(fwd, bwd)
    return dense_solve
