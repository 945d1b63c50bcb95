"""Batching rules that spend work only on the scenarios that need it.

Under ``vmap`` a data-dependent loop (a Newton retry, a cascade of line trips) runs
until its slowest scenario is done, so every scenario pays for the few that loop.
:func:`over_flagged_rows` runs such work on the flagged rows only, gathered into
buckets of a fixed share of the batch, one compiled bucket after the other. It is the
one implementation that :mod:`gridphysics.ac` (AC retries from other starts) and
:mod:`gridrl.physics` (cascading trips) use inside their ``custom_vmap`` rules.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["BUCKET_SHARE", "over_flagged_rows"]

#: A bucket holds 1/BUCKET_SHARE of the batch (at least one row): the flagged rows are
#: usually a few percent of a batch, so one bucket is usually all the extra work.
BUCKET_SHARE = 8


def over_flagged_rows(
    fn: Callable[[jax.Array], Any], todo: jax.Array, outputs: Any, share: int = BUCKET_SHARE
) -> Any:
    """``outputs`` (a pytree of arrays with the batch on axis 0) with the rows flagged
    in ``todo`` (bool, one per row) replaced by ``fn(take)``.

    ``fn`` gets the indices of one bucket of ``max(len(todo) // share, 1)`` rows and
    returns their new outputs (the same pytree, the bucket on axis 0). Buckets run one
    after the other in a ``while_loop`` while flagged rows are left: none costs
    nothing, and all cost ``share`` buckets (the work of the whole batch). A bucket not
    filled by flagged rows is padded with the last row, whose result is dropped."""
    axis_size = todo.shape[0]
    bucket = max(axis_size // share, 1)

    def chunk(carry):
        outs, left = carry
        rows = jnp.nonzero(left, size=bucket, fill_value=axis_size)[0]
        new = fn(jnp.minimum(rows, axis_size - 1))
        outs = jax.tree.map(lambda base, o: base.at[rows].set(o, mode="drop"), outs, new)
        return outs, left.at[rows].set(False, mode="drop")

    return jax.lax.while_loop(lambda c: jnp.any(c[1]), chunk, (outputs, todo))[0]
