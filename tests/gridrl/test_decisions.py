"""The agents' decisions (gridrl.decisions): schedules that bind, shedding per load."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gridrl import decisions
from gridrl.env import make


@pytest.fixture(scope="module")
def env14():
    env, params = make("ieee14", level=1, n_areas=2)
    _, state = env.reset(jax.random.key(0), params)
    return env, params, state


def test_schedule_moves_each_area_to_its_factor_by_availability(env14):
    env, _, state = env14
    base = np.asarray(state.gen_mw, np.float64)
    avail = np.asarray(state.avail_mw, np.float64)
    factor = np.array([1.1, 0.95])
    out = np.asarray(
        decisions.schedule(env, jnp.asarray(base), jnp.asarray(avail), jnp.asarray(factor))
    )
    for a in range(env.n_areas):
        units = np.flatnonzero(env.gen_area == a)
        # by hand: the area's total becomes factor x its base total ...
        assert out[units].sum() == pytest.approx(factor[a] * base[units].sum(), rel=1e-5)
        # ... and each unit's share of the move is its share of the available capacity
        move = (factor[a] - 1) * base[units].sum()
        expected = base[units] + move * avail[units] / avail[units].sum()
        np.testing.assert_allclose(out[units], expected, rtol=1e-5, atol=1e-4)


def test_full_shedding_action_sheds_max_share_of_each_of_the_areas_loads(env14):
    env, params, state = env14
    x = env.exogenous(jax.random.key(1), state, params)
    actions = {a: jnp.zeros(env.action_space(a).shape, env.dtype) for a in env.agents}
    act = np.zeros(env.action_space("operational_0").shape)
    act[env.max_gens :] = 1.0  # shed every load of area 0 as much as allowed
    actions["operational_0"] = jnp.asarray(act, env.dtype)
    _, _, served, gen, _ = decisions.decide(env, state, actions, params, x)
    load = np.asarray(x.load_mw)
    in_area0 = env.load_area == 0
    share = env.config.max_shed_share
    np.testing.assert_allclose(
        np.asarray(served)[in_area0], load[in_area0] * (1 - share), rtol=1e-5
    )
    np.testing.assert_allclose(np.asarray(served)[~in_area0], load[~in_area0], rtol=1e-6)
    # the filter balances the dispatch to what is served
    demand = float(np.sum(served)) + float(
        np.sum(np.asarray(params.network.shunt.g_mw * params.network.shunt.status))
    )
    assert float(np.sum(gen)) == pytest.approx(demand, rel=1e-5)
