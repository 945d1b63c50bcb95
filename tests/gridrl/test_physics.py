"""The environment's fast DC flows equal gridphysics.solve, with and without outages."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import gridphysics as gp
from gridrl.env import make


def test_fast_flows_equal_exact_solves_for_random_outages_single_and_batched():
    env, params = make("ieee118", dtype="float64")
    net = params.network
    rng = np.random.default_rng(0)
    n = 64
    status = np.ones((n, net.n_branch))
    for i in range(n):
        k = rng.integers(0, 12)  # up to 11 outages: some beyond the Woodbury size
        status[i, rng.choice(net.n_branch, k, replace=False)] = 0.0
    status[5, 182] = 0.0  # a bridge: bus 116 is cut off
    gen = np.asarray(gp.solve(net).gen_p_mw) * rng.uniform(0.9, 1.1, (n, net.n_gen))
    served = np.asarray(net.load.p_mw) * rng.uniform(0.9, 1.1, (n, net.n_load))
    rate = net.branch.rate_a_mva

    def fast(st, g, s):
        return env._flows(params, g, s, st, rate)

    batched = jax.jit(jax.vmap(fast))(jnp.asarray(status), jnp.asarray(gen), jnp.asarray(served))
    for i in range(n):
        ref = gp.solve(
            net.with_loads(p_mw=served[i]).with_gens(p_mw=gen[i]).with_branches(status=status[i])
        )
        expected = np.abs(np.asarray(ref.p_from_mw)) / np.asarray(rate) * 100
        np.testing.assert_allclose(batched[0][i], expected, rtol=1e-7, atol=1e-6, err_msg=str(i))
        np.testing.assert_array_equal(batched[1][i], np.asarray(ref.bus_isolated))
        if i < 4:
            single = jax.jit(fast)(
                jnp.asarray(status[i]), jnp.asarray(gen[i]), jnp.asarray(served[i])
            )
            np.testing.assert_allclose(single[0], expected, rtol=1e-7, atol=1e-6)
    assert bool(batched[1][5].any())  # the bridge outage isolated a bus (the exact path ran)
