"""Sparse linear systems with a static pattern: the one place that picks dense or KLU.

Solvers describe a matrix by a static :class:`SparsePattern` (row and column of each
stored entry, coalesced, computed once per topology in numpy) and a vector of traced
``values``; :func:`solve` solves ``A(values) x = rhs``. Two backends exist:

``"dense"``
    scatter into an ``n x n`` array and LU-factorize (JAX's LAPACK kernels). Works
    on every JAX backend; the only choice on accelerators and without klujax.
``"klu"``
    KLU sparse LU from the ``klujax`` package: CPU and float64 only (float32 inputs
    are solved in float64 and cast back), never forms a dense matrix.

Which one runs depends on how the call is batched, decided in :func:`plan`:
a single solve or a batch of matrices uses KLU where available; one matrix with
a batch of right-hand sides (the common ``vmap`` over injections) factorizes once
and, for small systems, applies the inverse as one matrix product. Gradients are
one adjoint (transposed) solve, never differentiation through a factorization.
"""

from __future__ import annotations

import functools
import itertools
import os
from dataclasses import dataclass, field
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


@functools.lru_cache(maxsize=1)
def _klujax_module():
    """klujax, imported on first use: importing it switches JAX's float64 mode on, so it
    is only imported once that mode is on anyway (see :mod:`gridphysics.precision`)."""
    try:
        import klujax
    except ImportError:  # pragma: no cover - only where klujax has no wheel
        return None
    return klujax


def klu_available() -> bool:
    """Whether the KLU backend can run here (klujax importable, x64 on, CPU backend)."""
    return (
        bool(jax.config.jax_enable_x64)
        and jax.default_backend() == "cpu"
        and _klujax_module() is not None
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

    @functools.cached_property
    def transpose(self) -> SparsePattern:
        """The pattern of the transposed matrix (same value order)."""
        return SparsePattern(n=self.n, rows=self.cols, cols=self.rows)

    def to_dense(self, values: jax.Array) -> jax.Array:
        """The dense ``(n, n)`` matrix (for tests and small systems)."""
        return jnp.zeros((self.n, self.n), values.dtype).at[self.rows, self.cols].add(values)


def solve(
    pattern: SparsePattern,
    values: jax.Array,
    rhs: jax.Array,
    backend: Backend | None = None,
) -> jax.Array:
    """Solve ``A x = rhs`` where ``A`` has ``pattern`` and entries ``values``.

    Args:
        pattern: static pattern, ``pattern.nnz`` entries.
        values: ``(nnz,)`` matrix entries.
        rhs: ``(n,)`` right-hand side.
        backend: ``"dense"`` or ``"klu"`` to force one; ``None`` lets each call pick
            (see :func:`plan`).

    Works under ``jit``, ``vmap`` (over values, rhs or both) and ``grad`` (one
    adjoint solve with the transposed matrix).
    """
    if pattern.n == 0:  # nothing to solve for (a grid of reference buses only)
        return jnp.zeros_like(rhs)
    return _solver(pattern, backend)(values, rhs)


def plan(n: int, mode: Literal["single", "rhs_batched", "batched"], backend: Backend | None):
    """How a solve of ``n`` unknowns is carried out.

    * ``"single"`` (nothing batched): KLU when available (factorizing a sparse grid
      matrix is cheaper than dense LU at every size), else dense LU.
    * ``"rhs_batched"`` (one matrix, many right-hand sides): for ``n <=
      DENSE_MAX_N`` (or without KLU) the inverse is formed once (by KLU where
      available: multi-threaded BLAS triangular solves slow down badly on a busy
      CPU) and applied as one matrix product; larger systems use one KLU
      factorization and a multi-right-hand-side KLU solve.
    * ``"batched"`` (a matrix per scenario): KLU per scenario when available, else
      batched dense LU.

    Returns ``"klu"``, ``"dense_lu"`` or ``"dense_inverse"``.
    """
    if backend is not None:
        choose_backend(n, backend)  # validates availability
    use_klu = backend == "klu" or (backend is None and klu_available())
    if mode == "rhs_batched":
        if use_klu and (backend == "klu" or n > DENSE_MAX_N):
            return "klu"
        return "dense_inverse"
    return "klu" if use_klu else "dense_lu"


_SYMBOLIC: dict[tuple[int, bytes], object] = {}


def _klu_symbolic(n: int, rows: np.ndarray, cols: np.ndarray):
    """KLU's symbolic analysis (ordering) of a static pattern, computed once and kept
    for the life of the process: compiled code refers to it by handle."""
    key = (n, np.asarray(rows, np.int64).tobytes() + b"|" + np.asarray(cols, np.int64).tobytes())
    if key not in _SYMBOLIC:
        with jax.ensure_compile_time_eval():  # a concrete handle even when called while tracing
            symbolic = _klujax_module().analyze(np.asarray(rows), np.asarray(cols), n)
        _SYMBOLIC[key] = symbolic
    return _SYMBOLIC[key]


def _klu_numeric(rows: np.ndarray, cols: np.ndarray, values, rhs, n: int) -> jax.Array:
    """klujax's ``solve_with_symbol`` with the entries put in (row, column) order by
    numpy, once per pattern. klujax sorts them itself with ``jnp.lexsort`` on the
    pattern, a constant that XLA then folds at every compile, slowly: 14 s of each
    Newton-Raphson compile of pegase9241 here. The primitive gets the same arguments
    as through klujax's own wrapper (shapes standardized as it does); when klujax has
    no such primitive, its public function is called."""
    kl = _klujax_module()
    symbolic = _klu_symbolic(n, rows, cols)
    prim = getattr(kl, "solve_with_symbol_f64", None)
    if prim is None or not hasattr(kl, "_get_symbolic_handle"):  # pragma: no cover
        return kl.solve_with_symbol(jnp.asarray(rows), jnp.asarray(cols), values, rhs, symbolic)
    order = _pattern_order(rows, cols)
    ai = jnp.asarray(np.asarray(rows)[order], jnp.int32)
    aj = jnp.asarray(np.asarray(cols)[order], jnp.int32)
    ax = values[..., order]
    # (n_lhs, nnz) and (n_lhs, n, n_rhs), and the result's shape, as klujax's
    # validate_numeric_solve makes them
    shape = rhs.shape
    if ax.ndim == 1:
        ax = ax[None]
        b = rhs[None, :, None] if rhs.ndim == 1 else (rhs[None] if rhs.ndim == 2 else rhs)
    elif rhs.ndim == 1:
        b = rhs[None, :, None]
        shape = (ax.shape[0], rhs.shape[0])
    elif rhs.ndim == 2:
        b = rhs[:, :, None]
        if b.shape[0] == 1 and ax.shape[0] > 1:
            shape = (ax.shape[0], *shape[1:])
    else:
        b = rhs
    n_lhs = max(ax.shape[0], b.shape[0])
    ax = jnp.broadcast_to(ax, (n_lhs, ax.shape[1]))
    b = jnp.broadcast_to(b, (n_lhs, b.shape[1], b.shape[2]))
    if len(shape) == 3 and shape[0] != n_lhs:
        shape = (n_lhs, shape[1], shape[2])
    handle = jnp.asarray(kl._get_symbolic_handle(symbolic)).astype(jnp.uint64)
    return prim.bind(ai, aj, ax, b, handle).reshape(shape)


@functools.lru_cache(maxsize=256)
def _pattern_order_cached(key: bytes, size: int) -> np.ndarray:
    both = np.frombuffer(key, np.int64).reshape(2, size)
    return np.lexsort((both[1], both[0]))


def _pattern_order(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Positions of the entries in (row, column) order (stable), cached per pattern."""
    both = np.stack([np.asarray(rows, np.int64), np.asarray(cols, np.int64)])
    return _pattern_order_cached(both.tobytes(), both.shape[1])


#: A row or column whose largest entry is at most this share of the matrix's largest
#: entry is treated as zero: the matrix is singular (KLU would stop the whole program).
SINGULAR_RTOL = 1e-13


def singular_rows_or_columns(rows, cols, values, n: int) -> jax.Array:
    """Whether a matrix given by its entries (``values``: ``(..., nnz)``) is certainly
    singular: a non-finite entry, or a row or column that is numerically zero (two
    parallel branches whose reactances cancel leave a bus with an all-zero row)."""
    mag = jnp.abs(jnp.moveaxis(values, -1, 0))
    scale = jnp.max(mag, axis=0)
    row = jax.ops.segment_max(mag, jnp.asarray(rows), n)
    col = jax.ops.segment_max(mag, jnp.asarray(cols), n)
    tiny = SINGULAR_RTOL * scale
    return (
        ~jnp.all(jnp.isfinite(values), axis=-1)
        | jnp.any(row <= tiny, axis=0)
        | jnp.any(col <= tiny, axis=0)  # an all-zero matrix too: tiny is then 0
    )


def _klu(rows, cols, values, rhs):
    """klujax solve in float64 reusing the pattern's symbolic analysis; the result is
    cast back to the inputs' dtype. klujax aborts the program on a singular matrix, so
    a matrix that is certainly singular (:func:`singular_rows_or_columns`) is swapped
    for the identity before the call and its solution comes back NaN: the callers'
    finiteness checks turn that into ``converged=False``."""
    out_dtype = jnp.result_type(values, rhs)
    n = rhs.shape[-2] if rhs.ndim == 3 else rhs.shape[0]
    bad = singular_rows_or_columns(rows, cols, values, n)
    eye = jnp.asarray(np.where(rows == cols, 1.0, 0.0))
    if np.any(np.bincount(rows[rows == cols], minlength=n) == 0):
        eye = None  # no stored diagonal in some row: no identity to fall back on
    safe = values if eye is None else jnp.where(bad[..., None], eye, values)
    x = _klu_numeric(rows, cols, safe.astype(jnp.float64), rhs.astype(jnp.float64), n)
    # bad: () for one matrix, (batch,) for a batch of them; x: (n,), (n, k) or (batch, n[, k])
    flag = bad.reshape(bad.shape + (1,) * (x.ndim - bad.ndim))
    return jnp.where(flag, jnp.nan, x).astype(out_dtype)


def _parallel_pieces(batch: int) -> int:
    """How many independent KLU calls a batch is split into: XLA runs independent calls
    on its CPU thread pool concurrently, and one klujax call uses one thread."""
    return max(1, min(2 * (os.cpu_count() or 1), batch // 16))


def _klu_batched(rows, cols, values, rhs, axis: int):
    """``_klu`` over a batch (axis ``axis`` of ``rhs`` and, if batched, of ``values``),
    split into pieces that run in parallel."""
    batch = rhs.shape[axis]
    pieces = _parallel_pieces(batch)
    if pieces == 1:
        return _klu(rows, cols, values, rhs)
    bounds = np.linspace(0, batch, pieces + 1).astype(int)
    parts = []
    for lo, hi in itertools.pairwise(bounds):
        part_rhs = jax.lax.slice_in_dim(rhs, lo, hi, axis=axis)
        part_values = values[lo:hi] if values.ndim == 2 else values
        parts.append(_klu(rows, cols, part_values, part_rhs))
    return jnp.concatenate(parts, axis=axis)


@functools.lru_cache(maxsize=256)
def _solver(pattern: SparsePattern, backend: Backend | None):
    """A solve for ``pattern`` with custom batching and reverse-mode rules."""
    n = pattern.n
    rows, cols = pattern.rows, pattern.cols

    def make(transpose: bool):
        r, c = (cols, rows) if transpose else (rows, cols)
        trans = 1 if transpose else 0

        def dense(values):
            return pattern.to_dense(values)

        def single(values, rhs):
            if plan(n, "single", backend) == "klu":
                return _klu(r, c, values, rhs)
            return jsl.lu_solve(jsl.lu_factor(dense(values)), rhs, trans=trans)

        @custom_vmap
        def lsolve(values, rhs):
            return single(values, rhs)

        @lsolve.def_vmap
        def _batched(axis_size, in_batched, values, rhs):
            values_batched, rhs_batched = in_batched
            if not (values_batched or rhs_batched):
                return single(values, rhs), False
            if not rhs_batched:
                rhs = jnp.broadcast_to(rhs, (axis_size, *rhs.shape))
            if rhs.ndim != 2:  # nested batching: fall back to the plain rule
                if values_batched:
                    return jax.vmap(single)(values, rhs), True
                return jax.vmap(lambda b: single(values, b))(rhs), True
            if not values_batched:
                how = plan(n, "rhs_batched", backend)
                if how == "klu":
                    return _klu_batched(r, c, values, rhs.T, axis=1).T, True
                eye = jnp.eye(n, dtype=values.dtype)
                if plan(n, "single", backend) == "klu":
                    inverse = _klu(r, c, values, eye)
                else:
                    inverse = jsl.lu_solve(jsl.lu_factor(dense(values)), eye, trans=trans)
                return rhs @ inverse.T, True
            if plan(n, "batched", backend) == "klu":
                return _klu_batched(r, c, values, rhs[:, :, None], axis=0)[:, :, 0], True
            return jax.vmap(lambda v, b: jsl.lu_solve(jsl.lu_factor(dense(v)), b, trans=trans))(
                values, rhs
            ), True

        return lsolve

    forward, adjoint = make(False), make(True)

    def matvec_of(values):
        return lambda y: jax.ops.segment_sum(values * y[cols], jnp.asarray(rows), num_segments=n)

    def sparse_solve(values: jax.Array, rhs: jax.Array) -> jax.Array:
        # custom_linear_solve makes the solve differentiable in both the matrix values
        # (dx = A^-1 (d_rhs - dA x)) and the right-hand side, and transposable, so that
        # reverse mode is one adjoint solve and solves of tangents can be transposed.
        return jax.lax.custom_linear_solve(
            matvec_of(values),
            rhs,
            solve=lambda _, b: forward(values, b),
            transpose_solve=lambda _, b: adjoint(values, b),
        )

    return sparse_solve


def segment_sum(values: jax.Array, segment_ids: np.ndarray, num_segments: int) -> jax.Array:
    """``jax.ops.segment_sum`` over static ``segment_ids`` that batches fast under ``vmap``.

    Under ``vmap`` the plain scatter updates one scalar at a time; here the batch is
    moved to the trailing axis so each update adds a contiguous row of the batch
    (several times faster on CPU). Forward and reverse derivatives are those of
    the plain segment sum.

    Args:
        values: ``(len(segment_ids),)`` values.
        segment_ids: static ``(len(values),)`` integer array.
        num_segments: length of the result.
    """
    ids = np.asarray(segment_ids)
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]

    def plain(v: jax.Array) -> jax.Array:
        return jax.ops.segment_sum(v, jnp.asarray(ids), num_segments=num_segments)

    @custom_vmap
    def fast(v: jax.Array) -> jax.Array:
        return plain(v)

    @fast.def_vmap
    def _batched(axis_size, in_batched, v):
        if not in_batched[0]:
            return plain(v), False
        if v.ndim != 2:
            return jax.vmap(plain)(v), True
        rows = v.T[order]
        out = jax.ops.segment_sum(rows, sorted_ids, num_segments, indices_are_sorted=True)
        return out.T, True

    @jax.custom_jvp
    def summed(v: jax.Array) -> jax.Array:
        return fast(v)

    @summed.defjvp
    def _jvp(primals, tangents):
        (v,), (dv,) = primals, tangents
        return fast(v), plain(dv)

    return summed(values)


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Factorization:
    """A matrix prepared for many solves (see :func:`factorize`).

    For up to :data:`DENSE_MAX_N` unknowns it holds the explicit inverse, so each
    solve is a matrix-vector product (a matrix product under ``vmap``) and nothing is
    refactorized inside an iteration. Larger systems keep the values and solve with
    KLU each time (whose symbolic analysis is shared). Meant for iterations that are
    not differentiated (the solvers' loops run under ``stop_gradient``).
    """

    values: jax.Array
    inverse: jax.Array | None
    pattern: SparsePattern = field(metadata={"static": True})
    backend: str | None = field(metadata={"static": True})

    def solve(self, rhs: jax.Array) -> jax.Array:
        if self.inverse is not None:
            return self.inverse @ rhs
        return solve(self.pattern, self.values, rhs, self.backend)


def factorize(
    pattern: SparsePattern, values: jax.Array, backend: Backend | None = None
) -> Factorization:
    """Prepare ``A(values)`` for repeated solves (explicit inverse for small systems)."""
    n = pattern.n
    if n > DENSE_MAX_N:
        return Factorization(values, None, pattern, backend)
    eye = jnp.eye(n, dtype=values.dtype)
    if plan(n, "single", backend) == "klu":
        inverse = _klu(pattern.rows, pattern.cols, values, eye)
    else:
        inverse = jsl.lu_solve(jsl.lu_factor(pattern.to_dense(values)), eye)
    return Factorization(values, inverse, pattern, backend)
