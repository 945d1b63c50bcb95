"""The planned references: the day-ahead LP against per-step DC-OPFs, its replay through
the environment, and the N-1 criterion against brute-force outage solves."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

import gridphysics as gp
from gridrl.baselines import day_records, scenario_key
from gridrl.env import make
from gridrl.opf import dc_opf
from gridrl.reference import (
    PLAN_MARGIN,
    DayAheadPolicy,
    Planner,
    RollingHorizonPolicy,
    day_horizon,
    n1_secure_flows,
)

STEPS = 6


@pytest.fixture(scope="module")
def day():
    """ieee14 at level 3 (outages on), a short day, its first state and conditions."""
    env, params = make("ieee14", level=3, episode_steps=STEPS)
    key, k_reset = jax.random.split(jax.random.fold_in(jax.random.key(7), 0))
    _, state = env.reset(k_reset, params)
    return env, params, key, k_reset, state, day_horizon(env, params, key, state)


def _pwl_cost(planner, p, lo, hi):
    """The chords of each thermal unit's quadratic cost on ``cost_segments`` equal
    segments of [lo, hi], evaluated at ``p`` (by hand, per unit and segment)."""
    total = 0.0
    k_seg = planner.cost_segments
    for g in range(len(p)):
        if planner.renewable[g]:
            continue
        c = lambda x, g=g: planner.c2[g] * x * x + planner.c1[g] * x  # noqa: E731
        w = (hi[g] - lo[g]) / k_seg
        for k in range(k_seg):
            a = lo[g] + k * w
            used = min(max(p[g] - a, 0.0), w)
            if w > 0:
                total += (c(a + w) - c(a)) / w * used
    return total


def test_plan_without_ramps_is_the_per_step_dc_opf(day):
    """With ramps out of reach and no redispatch price, the day's LP splits into one
    DC-OPF per step: its objective equals the sum of :func:`dc_opf`'s (same chords, same
    shedding price and caps), with line limits that bind."""
    env, params, _, _, state, horizon = day
    horizon = dataclasses.replace(horizon, rate_mva=horizon.rate_mva * 0.55)
    planner = Planner(env, params)
    planner.ramp = np.full_like(planner.ramp, 1e6)
    planner.redispatch_price = 0.0
    prev = np.asarray(state.gen_mw, np.float64)
    plan = planner.solve(horizon, prev, prev)
    assert plan.status == "optimal" and plan.overload_mw == 0.0
    lp_total, opf_total, binding = 0.0, 0.0, 0
    # the environment's renewable units cost nothing
    free = np.where(planner.renewable, 0.0, 1.0)
    net = planner.net
    net = net.replace(
        gen=net.gen.replace(cost_c1=net.gen.cost_c1 * free, cost_c2=net.gen.cost_c2 * free)
    )
    for t in range(horizon.steps):
        lo = np.minimum(planner.p_min, horizon.avail_mw[t])
        hi = horizon.avail_mw[t]
        res = dc_opf(
            net,
            load_p_mw=horizon.load_mw[t],
            gen_p_max_mw=hi,
            gen_p_min_mw=lo,
            rate_mva=PLAN_MARGIN * horizon.rate_mva[t],
            branch_status=horizon.branch_on[t],
            shed_cost_per_mwh=planner.shed_price,
            cost_segments=planner.cost_segments,
            shed_max_mw=env.config.max_shed_share * horizon.load_mw[t],
        )
        assert res.success
        opf_total += (
            _pwl_cost(planner, res.gen_p_mw, lo, hi) + planner.shed_price * res.shed_mw.sum()
        )
        lp_total += (
            _pwl_cost(planner, plan.gen_mw[t], lo, hi) + planner.shed_price * plan.shed_mw[t].sum()
        )
        live = horizon.branch_on[t] > 0
        binding += int(
            np.sum(live & (np.abs(plan.flow_mw[t]) > PLAN_MARGIN * horizon.rate_mva[t] - 1e-6))
        )
    assert binding > 0  # the limits matter on this day
    assert lp_total == pytest.approx(opf_total, rel=1e-7)
    # the LP objective is the same chords times the step's hours (minus their value at lo)
    assert plan.objective <= lp_total * planner.dt


def test_day_ahead_plan_respects_the_env_and_replays_exactly(day):
    """The plan stays within ramps, limits and the shedding cap, balances every step,
    and ``env.step`` carries it out: same dispatch, no overload. (The filter still counts
    an intervention where the plan puts a unit on its ramp band's edge because the base
    dispatch moved by more than two ramps: the action cannot propose that point.)"""
    env, params, key, _, state, horizon = day
    policy = DayAheadPolicy(env)
    policy.start_day(key, state, params)
    plan = policy.plan
    assert plan.status == "optimal" and plan.overload_mw == 0.0
    planner = policy.planner(params)
    demand = horizon.load_mw.sum(1) + planner.shunt_mw
    np.testing.assert_allclose(plan.gen_mw.sum(1) + plan.shed_mw.sum(1), demand, rtol=1e-9)
    assert np.all(plan.shed_mw <= env.config.max_shed_share * horizon.load_mw + 1e-9)
    steps = np.diff(np.vstack([np.asarray(state.gen_mw)[None], plan.gen_mw]), axis=0)
    assert np.all(np.abs(steps) <= planner.ramp + 1e-6)
    assert np.all(plan.gen_mw <= horizon.avail_mw + 1e-9)

    step = jax.jit(env.step)
    s = state
    for i in range(STEPS):
        obs = None
        _, s, _, _, info = step(scenario_key(key, i), s, policy(None, obs, s, params), params)
        if i < STEPS - 1:  # the last step returns the next day's first state
            np.testing.assert_allclose(np.asarray(s.gen_mw), plan.gen_mw[i], atol=2e-3)
        assert int(info["overloaded_lines"]) == 0 and int(info["trips"]) == 0
        assert float(info["max_loading_percent"]) <= 100 * PLAN_MARGIN + 1e-3
    # the jitted replay of day_records gives the same days
    recs = day_records(env, params, DayAheadPolicy(env), episodes=1, seed=7)
    assert recs["overload_steps"][0] == 0 and recs["trips"][0] == 0


def test_rolling_horizon_runs_through_the_env(day):
    env, params, *_ = day
    recs = day_records(
        env, params, RollingHorizonPolicy(env, horizon=3, replan=2), episodes=1, seed=7, jit=False
    )
    assert recs["operated"][0] == STEPS and np.isfinite(recs["cost"][0])
    with pytest.raises(ValueError, match="replan"):
        RollingHorizonPolicy(env, horizon=2, replan=3)


def test_n1_criterion_matches_outage_solves(day):
    """Post-contingency flows from the LODF equal DC solves with the branch out, and the
    N-1 verdict equals the brute-force one for ratings on both sides of the worst case."""
    env, params, *_ = day
    planner = Planner(env, params)
    net = planner.net
    on = np.asarray(net.branch.status, np.float64)
    top = planner.topology(on)
    base = gp.solve(net)
    flow = np.asarray(base.p_from_mw)
    np.testing.assert_allclose(top.h @ _injection(net) + top.f0, flow, atol=1e-8)
    worst = np.zeros(len(flow))
    checked = 0
    for k in range(len(flow)):
        out = gp.solve(net.with_branches(status=np.where(np.arange(len(on)) == k, 0.0, on)))
        if bool(np.asarray(out.bus_isolated).any()):  # a bridge: not a criterion case
            assert np.isnan(top.lodf[:, k]).all()
            continue
        post = np.array(out.p_from_mw)
        others = np.arange(len(flow)) != k  # the criterion looks at every other branch
        np.testing.assert_allclose(
            (flow + top.lodf[:, k] * flow[k])[others], post[others], atol=1e-7, rtol=1e-7
        )
        post[k] = 0.0
        worst = np.maximum(worst, np.abs(post))
        checked += 1
    assert checked > 10
    assert n1_secure_flows(flow, top.lodf, worst * 1.001 + 1e-3, on)
    tight = worst.copy()
    tight[np.argmax(worst)] *= 0.99
    assert not n1_secure_flows(flow, top.lodf, tight, on)


def _injection(net):
    t = net.topology
    inj = np.zeros(t.n_bus)
    np.add.at(inj, np.asarray(t.gen_bus), np.asarray(net.gen.p_mw * net.gen.status))
    np.add.at(inj, np.asarray(t.load_bus), -np.asarray(net.load.p_mw * net.load.status))
    np.add.at(inj, np.asarray(t.shunt_bus), -np.asarray(net.shunt.g_mw * net.shunt.status))
    return inj
