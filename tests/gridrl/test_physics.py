"""The environment's DC flows (gridphysics.OutageFlows) equal gridphysics.solve, with and
without outages, islands included; a state beyond the engine's slots is a collapse."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import gridphysics as gp
from gridrl.env import make


def test_env_flows_equal_exact_solves_for_random_outages_single_and_batched():
    env, params = make("ieee118", dtype="float64")
    net = params.network
    k = env.config.max_outages
    rng = np.random.default_rng(0)
    n = 48
    status = np.ones((n, net.n_branch))
    for i in range(n):
        status[i, rng.choice(net.n_branch, rng.integers(0, k), replace=False)] = 0.0
    status[5, 182] = 0.0  # a bridge: bus 116 is cut off
    status[6, [182, 7, 8]] = 0.0
    gen = np.asarray(gp.solve(net).gen_p_mw) * rng.uniform(0.9, 1.1, (n, net.n_gen))
    served = np.asarray(net.load.p_mw) * rng.uniform(0.9, 1.1, (n, net.n_load))
    rate = net.branch.rate_a_mva

    def flows(st, g, s):
        return env._flows(params, g, s, st, rate)

    loading, isolated = jax.jit(jax.vmap(flows))(
        jnp.asarray(status), jnp.asarray(gen), jnp.asarray(served)
    )
    for i in range(n):
        ref = gp.solve(
            net.with_loads(p_mw=served[i]).with_gens(p_mw=gen[i]).with_branches(status=status[i])
        )
        expected = np.abs(np.nan_to_num(np.asarray(ref.p_from_mw))) / np.asarray(rate) * 100
        np.testing.assert_allclose(loading[i], expected, rtol=1e-7, atol=1e-6, err_msg=str(i))
        np.testing.assert_array_equal(isolated[i], np.asarray(ref.bus_isolated))
        if i < 3:
            single = jax.jit(flows)(
                jnp.asarray(status[i]), jnp.asarray(gen[i]), jnp.asarray(served[i])
            )
            np.testing.assert_allclose(single[0], expected, rtol=1e-7, atol=1e-6)
    assert bool(isolated[5].any()) and bool(isolated[6].any())


def test_more_outages_than_the_engine_holds_is_a_collapse():
    env, params = make("ieee14", max_outages=3)
    net = params.network
    gen = jnp.asarray(gp.solve(net).gen_p_mw, env.dtype)
    served = net.load.p_mw
    status = jnp.ones(net.n_branch, env.dtype).at[jnp.array([1, 5, 9, 12])].set(0.0)
    loading, isolated = env._flows(params, gen, served, status, net.branch.rate_a_mva)
    assert bool(jnp.all(jnp.isinf(loading))) and bool(isolated.all())
    # protections trip nothing on undefined flows; the step's lost load is everything
    heat = jnp.zeros(net.n_branch, env.dtype)
    repair = jnp.zeros(net.n_branch, jnp.int32)
    loading, isolated, trips, on, _, _ = env._protect(
        params, gen, served, status, heat, repair, net.branch.rate_a_mva
    )
    assert not bool(trips.any()) and bool(isolated.all())
    np.testing.assert_array_equal(on, status)


def test_cascade_under_vmap_equals_one_environment_at_a_time():
    """The batched cascade runs on the environments that trip, gathered into buckets
    of 1/CASCADE_SHARE of the batch (one bucket, or several one after the other when
    they do not fit): each environment's result equals its own unbatched cascade."""
    from gridrl import physics

    env, params = make("ieee118", dtype="float64")
    net = params.network
    n = 4 * physics.CASCADE_SHARE  # a bucket of 4
    gen = jnp.tile(jnp.asarray(gp.solve(net).gen_p_mw), (n, 1))
    served = jnp.tile(net.load.p_mw, (n, 1))
    branch_on = jnp.ones((n, net.n_branch))
    heat = jnp.zeros((n, net.n_branch))
    repair = jnp.zeros((n, net.n_branch), jnp.int32)
    protect = jax.jit(
        jax.vmap(lambda g, s, b, h, r, rate: physics.protect(env, params, g, s, b, h, r, rate))
    )
    single = jax.jit(lambda g, s, b, h, r, rate: physics.protect(env, params, g, s, b, h, r, rate))
    for stressed in ([3], [0, 5, 9, 30], list(range(0, n, 2))):  # few, a full bucket, many
        scale = np.full(n, 10.0)
        scale[stressed] = 0.2  # heavily loaded lines trip at once, and the grid cascades
        rate = jnp.asarray(scale)[:, None] * net.branch.rate_a_mva
        out = protect(gen, served, branch_on, heat, repair, rate)
        trips = np.asarray(out[2])
        assert trips[stressed].any(axis=1).all() and not np.delete(trips, stressed, 0).any()
        for i in range(n):
            ref = single(gen[i], served[i], branch_on[i], heat[i], repair[i], rate[i])
            for got, want in zip(out, ref, strict=True):  # the same trips; flows to rounding
                np.testing.assert_allclose(np.asarray(got)[i], want, rtol=1e-10, err_msg=str(i))
