"""gridphysics.batching.over_flagged_rows against a row-by-row loop in numpy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gridphysics.batching import over_flagged_rows


@pytest.mark.parametrize("n", [1, 5, 8, 40])
@pytest.mark.parametrize("share", [1, 4, 8])
def test_only_flagged_rows_change_and_each_by_its_own_result(n, share):
    rng = np.random.default_rng(n * 10 + share)
    x = rng.standard_normal((n, 3))
    base = (np.zeros((n, 3)), np.full(n, -1, np.int32))

    @jax.jit
    def run(todo):
        def fn(take):  # each row's own result: depends on the row, not on the bucket
            return jnp.asarray(x)[take] * 2.0 + 1.0, take.astype(jnp.int32)

        return over_flagged_rows(fn, todo, jax.tree.map(jnp.asarray, base), share)

    for todo in (np.zeros(n, bool), np.ones(n, bool), rng.random(n) < 0.3):
        got = run(jnp.asarray(todo))
        want_x, want_i = base[0].copy(), base[1].copy()
        for i in np.flatnonzero(todo):  # the reference: one row at a time
            want_x[i] = x[i] * 2.0 + 1.0
            want_i[i] = i
        np.testing.assert_array_equal(got[0], want_x)
        np.testing.assert_array_equal(got[1], want_i)
