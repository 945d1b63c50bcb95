"""The grid-operation environment: sizes, physics, protections, determinism, robustness."""

from __future__ import annotations

import functools
from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gridphysics as gp
from gridrl.areas import partition
from gridrl.env import make
from gridrl.errors import ActionError, EnvInputError, EnvOptionError, UnknownAgentError


@functools.lru_cache(maxsize=8)
def _env(case: str, **options):
    return make(case, **options)


def _zero_actions(env, batch=None):
    def shape(a):
        return env.action_space(a).shape if batch is None else (batch, *env.action_space(a).shape)

    return {a: jnp.zeros(shape(a), env.dtype) for a in env.agents}


@pytest.mark.parametrize("case", ["ieee14", "ieee30", "ieee57", "ieee118", "ieee300"])
def test_sizes_come_from_the_network(case):
    env, params = _env(case)
    net, _ = gp.fill_missing_ratings(gp.load_case(case), "operation-v1")
    areas = partition(net, 4)
    t = net.topology
    gens_per_area = np.bincount(areas[t.gen_bus], minlength=4)
    loads_per_area = np.bincount(areas[t.load_bus], minlength=4)
    lines_per_area = [
        int(np.sum((areas[t.branch_from] == a) | (areas[t.branch_to] == a))) for a in range(4)
    ]
    g, n_l, b = gens_per_area.max(), loads_per_area.max(), max(lines_per_area)
    expected_obs = {
        "strategic": 2 + 5 * 4 + 4,
        "safety": 3 * net.n_branch + 2 * net.n_gen + net.n_load + 2,
    }
    for a in range(4):
        expected_obs[f"operational_{a}"] = n_l + 5 * g + 2 * b + 4 + 4
    obs, _ = env.reset(jax.random.key(0), params)
    assert (
        set(obs)
        == set(env.agents)
        == {"strategic", "safety", *[f"operational_{a}" for a in range(4)]}
    )
    for agent, size in expected_obs.items():
        assert env.observation_space(agent).shape == (size,) == obs[agent].shape, agent
    assert env.action_space("strategic").shape == (4,)
    assert env.action_space("safety").shape == (net.n_gen,)
    for a in range(4):
        assert env.action_space(f"operational_{a}").shape == (g + n_l,)
        assert env.action_mask(f"operational_{a}").sum() == gens_per_area[a] + loads_per_area[a]


def test_physics_agrees_with_gridphysics():
    env, params = _env("ieee118")
    _obs, state = env.reset(jax.random.key(1), params)
    _, state, _, done, info = jax.jit(env.step)(
        jax.random.key(2), state, _zero_actions(env), params
    )
    assert not bool(done["__all__"]) and int(info["trips"]) == 0
    net = params.network.with_loads(p_mw=state.served_mw).with_gens(p_mw=state.gen_mw)
    ref = gp.solve(net.with_branches(status=state.branch_on))
    np.testing.assert_allclose(state.loading, ref.loading_percent, rtol=2e-4, atol=1e-2)
    # The safety filter balanced the system: the slack unit keeps its setpoint.
    slack = np.asarray(params.network.gen.slack_weight) > 0
    np.testing.assert_allclose(
        np.asarray(ref.gen_p_mw)[slack], np.asarray(state.gen_mw)[slack], atol=0.5
    )


def test_protections_trip_on_heat_at_once_and_in_cascade():
    env, params = _env("ieee14")
    net = params.network
    served = net.load.p_mw
    gen = np.asarray(gp.solve(gp.load_case("ieee14")).gen_p_mw, np.float32)
    flows = np.abs(np.asarray(gp.solve(net.with_gens(p_mw=gen)).p_from_mw))
    on = jnp.ones(net.n_branch, env.dtype)
    zeros = jnp.zeros(net.n_branch, jnp.int32)
    cold = jnp.zeros(net.n_branch, env.dtype)
    a, b = 0, 1  # branches 1-2 and 1-5: losing one pushes the other up
    rate = np.maximum(flows * 3, 10.0)
    # 1. 130 % on branch b from cold (defaults: tau 10 min, 15-min steps, trip heat
    # 1.44 - 0.44 exp(-1.5) = 1.3418): heat 1.69 (1 - exp(-1.5)) = 1.313 after one step,
    # no trip; 1.69 - (1.69 - 1.313) exp(-1.5) = 1.606 after two: it trips.
    rate_b = rate.copy()
    rate_b[b] = flows[b] / 1.3
    heat = cold
    for step in (1, 2):
        loading, _, trips, status, heat, repair = env._protect(
            params, jnp.asarray(gen), served, on, heat, zeros, jnp.asarray(rate_b)
        )
        assert float(loading[b]) == pytest.approx(130.0 if step == 1 else 0.0, rel=1e-4)
        np.testing.assert_allclose(
            float(heat[b]), 1.69 * (1 - np.exp(-1.5)) if step == 1 else 1.6059, rtol=1e-3
        )
        assert bool(trips[b]) == (step == 2)
    assert float(status[b]) == 0.0 and int(repair[b]) == env.config.repair_steps
    # 2. 200 % on branch a trips at once; its flow moves to b, which then exceeds 150 %.
    rate_c = rate.copy()
    rate_c[a] = flows[a] / 2.0
    after = np.abs(
        np.asarray(
            gp.solve(net.with_gens(p_mw=gen).with_branches(status=on.at[a].set(0.0))).p_from_mw
        )
    )
    rate_c[b] = after[b] / 1.6
    assert flows[b] / rate_c[b] < 1.0  # b is fine before a trips
    loading, _, trips, status, _, _ = env._protect(
        params, jnp.asarray(gen), served, on, cold, zeros, jnp.asarray(rate_c)
    )
    assert bool(trips[a]) and bool(trips[b])
    assert float(loading[a]) == 0.0 and float(loading[b]) == 0.0


def test_same_seed_same_trajectory_and_auto_reset():
    env, params = make("ieee14", episode_steps=6, level=3)
    step = jax.jit(env.step)

    def roll(seed):
        key = jax.random.key(seed)
        obs, state = env.reset(key, params)
        out = []
        for _i in range(9):
            key, k_act, k_step = jax.random.split(key, 3)
            acts = {
                a: env.action_space(a).sample(k)
                for a, k in zip(env.agents, jax.random.split(k_act, len(env.agents)), strict=True)
            }
            obs, state, rew, done, _ = step(k_step, state, acts, params)
            out.append(
                (
                    np.asarray(obs["strategic"]),
                    float(rew["safety"]),
                    bool(done["__all__"]),
                    int(state.t),
                )
            )
        return out

    first, again, other = roll(7), roll(7), roll(8)
    assert all(
        np.array_equal(x[0], y[0]) and x[1:] == y[1:] for x, y in zip(first, again, strict=True)
    )
    assert any(not np.array_equal(x[0], y[0]) for x, y in zip(first, other, strict=True))
    ts = [x[3] for x in first]
    assert ts[5] == 0 and first[5][2]  # the 6th step ends the day, and the state restarts
    assert ts[6] == 1


def test_no_nan_over_10000_random_steps_at_every_level_without_recompiling():
    env, params = _env("ieee118")
    n_env, n_steps = 500, 20
    traces = []

    def random_actions(key):
        keys = jax.random.split(key, len(env.agents))
        return {a: env.action_space(a).sample(k) for a, k in zip(env.agents, keys, strict=True)}

    @jax.jit
    def run(params, key):
        traces.append(1)
        _, state = jax.vmap(env.reset, (0, None))(jax.random.split(key, n_env), params)

        def body(state, k):
            k_act, k_step = jax.random.split(k)
            acts = jax.vmap(random_actions)(jax.random.split(k_act, n_env))
            obs, state, rew, _done, info = jax.vmap(env.step, (0, 0, 0, None))(
                jax.random.split(k_step, n_env), state, acts, params
            )
            bad = sum(jnp.sum(~jnp.isfinite(o)) for o in obs.values()) + jnp.sum(
                ~jnp.isfinite(rew["strategic"])
            )
            bad = bad + sum(
                jnp.sum(~jnp.isfinite(v))
                for v in info.values()
                if jnp.issubdtype(v.dtype, jnp.floating)
            )
            return state, (bad, info["overloaded_lines"])

        return jax.lax.scan(body, state, jax.random.split(key, n_steps))[1]

    for level in range(5):
        bad, _overloaded = run(
            params.__class__(**{**params.__dict__, "level": jnp.int32(level)}),
            jax.random.key(level),
        )
        assert int(bad.sum()) == 0, level
    assert len(traces) == 1  # the level is data: switching it does not recompile


def test_ac_physics_option_and_bad_options():
    env, params = make("ieee14", method="ac", level=2)
    obs, state = env.reset(jax.random.key(0), params)
    step = jax.jit(env.step)
    for i in range(5):
        obs, state, rew, _done, _info = step(jax.random.key(i), state, _zero_actions(env), params)
    assert all(bool(jnp.isfinite(v).all()) for v in obs.values()) and bool(
        jnp.isfinite(rew["strategic"])
    )
    net = params.network.with_loads(p_mw=state.served_mw).with_gens(p_mw=state.gen_mw)
    ref = gp.solve(net.with_branches(status=state.branch_on), "ac")
    np.testing.assert_allclose(state.loading, ref.loading_percent, rtol=1e-3, atol=0.05)
    with pytest.raises(EnvOptionError, match="n_area"):
        make("ieee14", n_area=3)
    with pytest.raises(ValueError, match="level"):
        make("ieee14", level=7)
    with pytest.raises(ActionError, match="safety"):
        env.step(
            jax.random.key(0),
            state,
            {a: v for a, v in _zero_actions(env).items() if a != "safety"},
            params,
        )
    with pytest.raises(ActionError, match=r"unknown agent.*'saftey'"):  # a misspelt agent
        env.step(jax.random.key(0), state, _zero_actions(env) | {"saftey": 1.0}, params)


def test_describe_cli(capsys):
    from gridrl.describe import main

    assert main(["--case", "ieee14"]) == 0
    out = capsys.readouterr().out
    env, _ = _env("ieee14")
    for agent in env.agents:
        assert agent in out
    assert "ratings:" in out and "areas (" in out
    assert main(["--case", "nope"]) == 2


def test_a_tripped_bridge_cuts_off_its_load_and_counts_it_as_not_served():
    env, params = _env("ieee118")
    net = params.network
    bridge = 182  # ieee118's branch 68-116: bus 116 hangs on it alone, with load
    assert bridge in set(gp.bridges(net).tolist())
    _obs, state = env.reset(jax.random.key(0), params)
    # Make the bridge trip at once: its rating far below its flow.
    low = net.branch.rate_a_mva.at[bridge].set(1e-3)
    tight = params.__class__(**{**params.__dict__, "network": net.with_branches(rate_a_mva=low)})
    _, state, _, _, info = jax.jit(env.step)(jax.random.key(1), state, _zero_actions(env), tight)
    assert float(state.branch_on[bridge]) == 0.0 and int(info["trips"]) >= 1
    cut = np.flatnonzero(
        np.asarray(net.topology.load_bus) == int(np.flatnonzero(net.topology.bus_ids == 116)[0])
    )
    lost = float(np.asarray(state.served_mw)[cut].sum()) * 0.25
    assert float(info["energy_not_served_mwh"]) >= lost - 1e-3 > 0


def test_strategic_schedule_binds_and_shedding_is_per_load():
    env, params = _env("ieee30", episode_steps=12)
    _, state = env.reset(jax.random.key(4), params)
    state = replace(state, t=jnp.int32(env.config.strategic_period - 1))  # next step decides
    key = jax.random.key(5)
    x = env.exogenous(key, state, params)
    # The schedule: each area's generation at factor x its base, split by availability.
    factor = jnp.asarray([1.1, 0.9, 1.0, 1.05], env.dtype)
    sched = np.asarray(env.schedule(x.base_mw, x.avail_mw, factor))
    area_base = np.bincount(env.gen_area, np.asarray(x.base_mw), env.n_areas)
    np.testing.assert_allclose(
        np.bincount(env.gen_area, sched, env.n_areas), np.asarray(factor) * area_base, rtol=1e-5
    )
    # It binds: the strategic agent's +1 on the area with the most room raises that
    # area's generation after the safety filter, and the factor holds until the next
    # decision.
    room = np.bincount(env.gen_area, np.asarray(x.avail_mw - x.base_mw), env.n_areas)
    area = int(np.argmax(room))
    zero = _zero_actions(env)
    up = zero | {"strategic": jnp.asarray(np.eye(env.n_areas)[area], env.dtype)}
    gen = {}
    for name, acts in (("zero", zero), ("up", up)):
        factor_out, _, _, g, _ = env._decide(state, acts, params, x)
        gen[name] = np.bincount(env.gen_area, np.asarray(g), env.n_areas)
        if name == "up":
            np.testing.assert_allclose(
                factor_out, 1 + env.config.schedule_range * np.eye(env.n_areas)[area]
            )
    assert gen["up"][area] > gen["zero"][area] + 1.0
    others = np.arange(env.n_areas) != area
    assert gen["up"][others].sum() < gen["zero"][others].sum()
    _, state_up, _, _, _ = env.step(key, state, up, params)
    # the step after a decision does not decide: the schedule holds
    factor_next, *_ = env._decide(state_up, zero, params, env.exogenous(key, state_up, params))
    np.testing.assert_allclose(factor_next, state_up.target_factor)
    # Shedding is per load: one entry of area 1's action sheds that load only.
    a = 1
    loads = env.area_loads[a][env.area_loads[a] < env.n_load]
    pick = int(loads[-1])
    act = np.zeros(env.action_space(f"operational_{a}").shape, np.float32)
    act[env.max_gens + len(loads) - 1] = 1.0
    shed = zero | {f"operational_{a}": jnp.asarray(act)}
    _, _, served, _, _ = env._decide(state, shed, params, x)
    expected = np.asarray(x.load_mw).copy()
    expected[pick] *= 1 - env.config.max_shed_share
    np.testing.assert_allclose(served, expected, rtol=1e-6)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"level": "x"}, "level"),
        ({"level": 2.7}, "level"),
        ({"level": True}, "level"),
        ({"n_areas": 0}, "n_areas"),
        ({"n_areas": "3"}, "n_areas"),
        ({"max_shed_share": float("nan")}, "max_shed_share"),
        ({"emergency_percent": 90.0}, "emergency_percent"),
        ({"instant_trip_percent": 110.0}, "instant_trip_percent"),
        ({"method": "dcx"}, "method"),
        ({"dtype": "int8"}, "dtype"),
        ({"corrective_rounds": -1}, "corrective_rounds"),
        ({"corrective_rounds": 1.5}, "corrective_rounds"),
        ({"corrective_rounds": 10**6}, "corrective_rounds"),  # was a hang (unrolled rounds)
        ({"shed_steps": -1}, "shed_steps"),
        ({"strategic_period": 10**30}, "strategic_period"),  # an OverflowError in step
        ({"repair_steps": 10**30}, "repair_steps"),
        ({"emergency_percent": 10**400}, "emergency_percent"),  # was a TypeError
        ({"emergency_percent": np.complex128(130)}, "emergency_percent"),
        ({"shed_steps": True}, "shed_steps"),
        ({"shed_steps": 10**9}, "shed_steps"),
        ({"n_areas": 15}, "n_areas"),  # was a raw ValueError
        ({"episode_steps": 10**6}, "episode_steps"),  # a million-step constant to compile
        # 100 % and 0 min passed the check and raised a bare ValueError in protection.py
        ({"emergency_percent": 100.0}, r"emergency_percent must be finite, in \(100, inf\)"),
        ({"emergency_minutes": 0}, r"emergency_minutes must be finite, in \(0, inf\)"),
    ],
)
def test_bad_make_options_raise_a_typed_error_naming_the_option(options, match):
    with pytest.raises(EnvOptionError, match=match):
        make("ieee14", **options)


def test_a_case_with_an_unlimited_unit_is_refused_by_make(tmp_path):
    """Pmax = Inf is a valid case (gridphysics keeps it) but no dispatch range: the state
    and reward became NaN without a flag; make names the unit instead."""
    text = (gp.cases.cases_dir() / "matpower/case14.m").read_text()
    head = text.index("mpc.gen = [")
    row = text.index("\n", text.index("\n", head) + 1) + 1  # the second unit
    cells = text[row : text.index("\n", row)].split("\t")
    cells[9] = "Inf"  # PMAX (after the leading tab)
    path = tmp_path / "unlimited.m"
    path.write_text(text[:row] + "\t".join(cells) + text[text.index("\n", row) :])
    with pytest.raises(EnvOptionError, match=r"generator 1 at bus 2 has .*p_max_mw = inf"):
        make(str(path), n_areas=2)


def test_unknown_agents_keys_and_actions_of_the_wrong_kind_raise_typed_errors():
    env, params = make("ieee14", n_areas=2)
    for query in (env.action_space, env.observation_space, env.action_mask):
        with pytest.raises(UnknownAgentError, match="nobody"):
            query("nobody")  # action_space returned an operational Box
    with pytest.raises(EnvInputError, match="PRNG key"):
        env.reset(0, params)
    _, state = env.reset(jax.random.key(0), params)
    with pytest.raises(EnvInputError, match="PRNG key"):
        env.step(None, state, _zero_actions(env), params)
    for actions in ([1, 2], None):
        with pytest.raises(EnvInputError, match="dict"):
            env.step(jax.random.key(1), state, actions, params)
    # a state changed by hand: NaN never enters the step (outside jit it is named)
    damaged = replace(state, heat=state.heat.at[0].set(jnp.nan))
    with pytest.raises(EnvInputError, match="NaN or Inf in heat"):
        env.step(jax.random.key(1), damaged, _zero_actions(env), params)
    hot = replace(state, heat=state.heat.at[0].set(jnp.inf))  # passed unflagged before
    with pytest.raises(EnvInputError, match="NaN or Inf in heat"):
        env.step(jax.random.key(1), hot, _zero_actions(env), params)
    assert (
        int(
            jax.jit(env.step)(jax.random.key(1), hot, _zero_actions(env), params)[4][
                "invalid_state"
            ]
        )
        == 1
    )
    # one key per call (a batch goes through vmap), and a state and params of this grid
    for key in (jax.random.split(jax.random.key(1), 4), jax.random.split(jax.random.PRNGKey(1), 4)):
        with pytest.raises(EnvInputError, match="single PRNG key"):
            env.step(key, state, _zero_actions(env), params)
        with pytest.raises(EnvInputError, match="single PRNG key"):
            env.reset(key, params)
    other_env, other_params = make("ieee30", n_areas=2)
    other_state = other_env.reset(jax.random.key(0), other_params)[1]
    with pytest.raises(EnvInputError, match="state of another grid"):
        jax.jit(env.step)(jax.random.key(1), other_state, _zero_actions(env), params)
    with pytest.raises(EnvInputError, match="params of another grid"):
        env.step(jax.random.key(1), state, _zero_actions(env), other_params)
    # values a hand edit can leave (index clamping made level 99 silently level 4)
    for level in (99, -3):
        with pytest.raises(EnvInputError, match=r"params\.level"):
            env.step(
                jax.random.key(1),
                state,
                _zero_actions(env),
                replace(params, level=jnp.int32(level)),
            )
    half = replace(state, branch_on=state.branch_on.at[0].set(2.0))
    with pytest.raises(EnvInputError, match="branch_on"):
        env.step(jax.random.key(1), half, _zero_actions(env), params)
    listed = {a: [0.0] * env.action_space(a).shape[0] for a in env.agents}  # lists are fine
    assert int(env.step(jax.random.key(1), state, listed, params)[4]["invalid_actions"]) == 0
    words = {a: np.full(env.action_space(a).shape, "x") for a in env.agents}
    with pytest.raises(ActionError, match="real numbers"):
        env.step(jax.random.key(1), state, words, params)
    for odd in (None, "abc", {"x": 1}):  # were reported as a wrong shape (hostile rerun 8)
        with pytest.raises(ActionError, match=f"real numbers, got {type(odd).__name__}"):
            env.step(jax.random.key(1), state, {**_zero_actions(env), "safety": odd}, params)
    with pytest.raises(EnvInputError, match="EnvState"):
        env.step(jax.random.key(1), {"t": 0}, _zero_actions(env), params)
    # under jit it cannot be refused: the step starts from a fresh day, flagged
    step = jax.jit(env.step)
    obs, after, reward, _, info = step(jax.random.key(1), damaged, _zero_actions(env), params)
    assert int(info["invalid_state"]) == 1
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves((obs, after, reward)))
    fresh = env.reset(jax.random.split(jax.random.key(1))[1], params)[1]
    _, ref, ref_reward, _, ref_info = step(jax.random.key(1), fresh, _zero_actions(env), params)
    assert int(ref_info["invalid_state"]) == 0
    np.testing.assert_array_equal(np.asarray(after.gen_mw), np.asarray(ref.gen_mw))
    assert float(reward["strategic"]) == float(ref_reward["strategic"])
    # hostile rerun 3: a float step counter was a TypeError deep in the step, t = -5 and
    # NaN capacities were accepted, params.level 99 under jit was silently level 4
    with pytest.raises(EnvInputError, match="another grid or configuration"):
        env.step(jax.random.key(1), replace(fresh, t=jnp.float32(3.0)), _zero_actions(env), params)
    with pytest.raises(EnvInputError, match=r"state\.t must be a step"):
        env.step(jax.random.key(1), replace(fresh, t=jnp.int32(-5)), _zero_actions(env), params)
    nan_params = replace(params, capacity_mw=params.capacity_mw * jnp.nan)
    with pytest.raises(EnvInputError, match="capacity_mw"):
        env.step(jax.random.key(1), fresh, _zero_actions(env), nan_params)
    # a concrete state closed over by an outer jit: the checks run in numpy, not traced
    closed = jax.jit(lambda k: env.step(k, fresh, _zero_actions(env), params)[2]["strategic"])
    assert np.isfinite(float(closed(jax.random.key(1))))
    info = step(jax.random.key(1), replace(fresh, t=jnp.int32(-5)), _zero_actions(env), params)[4]
    assert int(info["invalid_state"]) == 1
    info = step(jax.random.key(1), fresh, _zero_actions(env), replace(params, level=jnp.int32(99)))[
        4
    ]
    assert int(info["invalid_params"]) == 1 and int(ref_info["invalid_params"]) == 0
    # hostile rerun 10: a negative level wrapped (-1 read level 4, -3 level 2) where
    # invalid_params says the nearest level is read
    from gridrl.scenarios import TOP_LEVEL, LevelSettings

    levels = LevelSettings.default()
    for outside, nearest in ((-1, 0), (-3, 0), (99, TOP_LEVEL), (2**30, TOP_LEVEL)):
        got, want = levels.at(jnp.int32(outside)), levels.at(nearest)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # hostile rerun 8: finite but absurd values overflowed inside the step (a NaN reward
    # with invalid_state = 0, a reward of -inf); the result never enters the state, the
    # day ends, reward 0, flagged. Params are checked too (a zero demand: NaN obs).
    for absurd in (
        replace(fresh, noise=jnp.full_like(fresh.noise, 3e38)),
        replace(fresh, gen_mw=jnp.full_like(fresh.gen_mw, -1e30)),
    ):
        obs, after, reward, done, info = step(jax.random.key(1), absurd, _zero_actions(env), params)
        assert int(info["invalid_state"]) == 1 and bool(done["__all__"])
        assert float(reward["strategic"]) == 0.0
        assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves((obs, after)))
    with pytest.raises(EnvInputError, match="ramp_mw holds a negative"):
        env.step(
            jax.random.key(1),
            fresh,
            _zero_actions(env),
            replace(params, ramp_mw=-params.ramp_mw - 1),
        )
    no_load = params.network.with_loads(p_mw=jnp.zeros_like(params.network.load.p_mw))
    with pytest.raises(EnvInputError, match="loads sum to 0 MW"):
        env.step(jax.random.key(1), fresh, _zero_actions(env), replace(params, network=no_load))


def test_bad_actions_wrong_shape_raises_non_finite_is_flagged_and_replaced():
    env, params = make("ieee14", level=1, n_areas=2)
    _, state = env.reset(jax.random.key(0), params)
    step = jax.jit(env.step)
    zeros = _zero_actions(env)
    wrong = dict(zeros, operational_0=jnp.zeros(env.action_space("operational_0").shape[0] + 1))
    with pytest.raises(ActionError, match="operational_0"):
        step(jax.random.key(1), state, wrong, params)
    nan = dict(zeros, operational_1=jnp.full(env.action_space("operational_1").shape, jnp.nan))
    nan["strategic"] = jnp.full(env.action_space("strategic").shape, jnp.inf)
    _, s_nan, r_nan, _, info = step(jax.random.key(1), state, nan, params)
    _, s_zero, r_zero, _, info_zero = step(jax.random.key(1), state, zeros, params)
    assert int(info["invalid_actions"]) == 2 and int(info_zero["invalid_actions"]) == 0
    # the fallback is the zero action (no change): the same step as do-nothing
    for a, b in zip(jax.tree.leaves(s_nan), jax.tree.leaves(s_zero), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert float(r_nan["strategic"]) == float(r_zero["strategic"])


def test_a_case_without_fuel_costs_scales_its_reward_by_a_reference_price(tmp_path):
    """Without gencost the reward's scale fell to $1 a step (shedding 2.5 MWh scored
    -22,512; hostile rerun 9): it is the dispatch's energy at the reference price, by
    hand 259 MW x 0.25 h x 50 $/MWh for case14."""
    from gridrl.reward import REFERENCE_ENERGY_PER_MWH

    text = (gp.cases.cases_dir() / "matpower/case14.m").read_text()
    (tmp_path / "nocost.m").write_text(text[: text.index("mpc.gencost")])
    _, params = make(str(tmp_path / "nocost.m"))
    assert REFERENCE_ENERGY_PER_MWH == 50.0
    assert float(params.reward.normalizer) == pytest.approx(259.0 * 0.25 * 50.0, rel=1e-6)


def test_a_network_edited_without_its_outage_engine_is_refused():
    """Hostile rerun 10: the DC flows come from params.grid (built by make()), so a
    reactance or status edited in params.network was ignored without a word (line 0
    out of service still carried 46 %). Such params are refused outside jit; rebuilt
    with the network, the flows are the edited grid's, equal to gridphysics.solve."""
    env, params = _env("ieee14")
    _, state = jax.jit(env.reset)(jax.random.key(0), params)  # eager: 10 s of dispatch
    acts = _zero_actions(env)
    status = np.ones(params.network.n_branch)
    status[0] = 0.0
    x = np.asarray(params.network.branch.x_pu).copy()
    x[0] *= 20
    for net in (
        params.network.with_branches(status=status),
        params.network.with_branches(x_pu=x),
    ):
        with pytest.raises(EnvInputError, match=r"differ from those params\.grid was built from"):
            env.step(jax.random.key(1), state, acts, replace(params, network=net))
    # a shift of -0.0 is the same model (it was refused: hostile rerun 11)
    signed_zero = params.network.with_branches(shift_rad=-0.0 * params.network.branch.shift_rad)
    assert params.grid.built_from(signed_zero)
    # ratings are read from params.network: no engine to rebuild for them
    rated = params.network.with_branches(rate_a_mva=2 * params.network.branch.rate_a_mva)
    env._check_params(replace(params, network=rated))

    net = params.network.with_branches(x_pu=x)
    grid = gp.OutageFlows.build(net, params.grid.max_outages, env.dtype)
    rebuilt = replace(params, network=net, grid=grid)
    env._check_params(rebuilt)
    _, after, _, _, _ = jax.jit(env.step)(jax.random.key(1), state, acts, rebuilt)
    alive = np.asarray(after.branch_on) > 0
    solved = gp.solve(
        net.with_loads(p_mw=after.served_mw)
        .with_gens(p_mw=after.gen_mw)
        .with_branches(status=after.branch_on)
    )
    np.testing.assert_allclose(
        np.asarray(after.loading)[alive],
        np.asarray(solved.loading_percent)[alive],
        rtol=1e-3,
        atol=1e-2,
    )
