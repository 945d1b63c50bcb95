"""The safety filter (gridrl.safety.filter_dispatch) on the grid as it is.

References: ``gridphysics.solve`` of the network with the outaged branches switched out
(checked against pandapower elsewhere), run on the dispatch the filter returns; the
filter itself computes with the outage engine.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gridphysics as gp
from gridrl import safety


@functools.lru_cache(maxsize=4)
def _case(name: str, dtype: str = "float64"):
    net, _ = gp.fill_missing_ratings(gp.load_case(name), "operation-v1")
    return net, gp.OutageFlows.build(net, 8, dtype), np.asarray(gp.solve(net).gen_p_mw)


@functools.lru_cache(maxsize=8)
def _filter(steps: int, corrective_rounds: int = 0, shed_steps: int = 0):
    def run(grid, status, proposal, previous, ramp, rate, p_min, p_max, injection, buses, demand):
        gen_bus, load_bus, room = buses
        return safety.filter_dispatch(
            proposal,
            previous=previous,
            p_min=p_min,
            p_max=p_max,
            ramp=ramp,
            demand=demand,
            grid=grid,
            system=grid.system(status),
            injection_bus=injection,
            gen_bus=gen_bus,
            rate=rate,
            steps=steps,
            corrective_rounds=corrective_rounds,
            load_bus=load_bus,
            shed_room=room,
            shed_steps=shed_steps,
        )

    return jax.jit(run)


def _run(
    name,
    status,
    proposal,
    rate,
    steps=6,
    corrective_rounds=0,
    dtype="float64",
    previous=None,
    ramp=None,
    shed_steps=0,
    shed_share=0.2,
):
    """The filter on ``name`` computed in ``dtype`` (its engine and every input); ramps
    around ``previous`` (default: the proposal) by ``ramp`` (default: each unit's p_max);
    with ``shed_steps``, each load may be shed by up to ``shed_share``. Returns ``(p,
    flow, interventions)``, or with ``shed_steps`` the whole
    :class:`~gridrl.safety.Filtered` (numpy) and the loads (MW, one per load)."""
    net, grid, _ = _case(name, dtype)
    t = net.topology
    each = np.asarray(net.load.p_mw * net.load.status)
    load = np.bincount(t.load_bus, each, t.n_bus)
    shunt = np.bincount(t.shunt_bus, np.asarray(net.shunt.g_mw * net.shunt.status), t.n_bus)
    p_max = np.asarray(net.gen.p_max_mw * net.gen.status)
    buses = (
        jnp.asarray(t.gen_bus),
        jnp.asarray(t.load_bus),
        jnp.asarray(np.maximum(shed_share * each, 0.0), dtype),
    )
    out = _filter(steps, corrective_rounds, shed_steps)(
        grid,
        jnp.asarray(status, dtype),
        jnp.asarray(proposal, dtype),
        jnp.asarray(proposal if previous is None else previous, dtype),
        jnp.asarray(p_max if ramp is None else ramp, dtype),
        jnp.asarray(rate, dtype),
        jnp.asarray(np.minimum(net.gen.p_min_mw * net.gen.status, p_max), dtype),
        jnp.asarray(p_max, dtype),
        jnp.asarray(-(load + shunt), dtype),
        buses,
        jnp.asarray(load.sum() + shunt.sum(), dtype),
    )
    if shed_steps:
        return jax.tree.map(np.asarray, out), each
    return np.asarray(out.p), np.asarray(out.p_from_mw), int(out.interventions)


def _solve(name, status, gen):
    net = _case(name)[0]
    res = gp.solve(net.with_gens(p_mw=gen).with_branches(status=status))
    return np.nan_to_num(np.asarray(res.p_from_mw)), np.asarray(res.bus_isolated)


def _post_outage_overload(name: str):
    """A (outage, line) pair where the line is fine before the outage and carries much
    more after it (by brute force over non-bridge outages)."""
    net, _, base = _case(name)
    intact = np.abs(_solve(name, np.ones(net.n_branch), base)[0])
    bridges = set(gp.bridges(net).tolist())
    best = None
    for o in range(net.n_branch):
        if o in bridges:
            continue
        status = np.ones(net.n_branch)
        status[o] = 0
        after = np.abs(_solve(name, status, base)[0])
        gain = np.where(intact > 5.0, after / np.maximum(intact, 1e-9), 0.0)
        gain[o] = 0
        line = int(np.argmax(gain))
        if best is None or gain[line] > best[2]:
            best = (o, line, gain[line], intact[line], after[line])
    return best


def test_relieves_a_line_overloaded_only_after_an_outage():
    name = "ieee118"
    net, _, base = _case(name)
    outage, line, gain, before, after = _post_outage_overload(name)
    assert gain > 1.3
    status = np.ones(net.n_branch)
    status[outage] = 0
    rate = np.full(net.n_branch, 1e4)
    rate[line] = after / 1.15  # 115 % after the outage, under 90 % before it
    assert before / rate[line] < 0.9
    # The intact grid shows nothing to relieve: an outage-blind filter would not act.
    _, _, blind = _run(name, np.ones(net.n_branch), base, rate)
    assert blind == 0
    p, flow, interventions = _run(name, status, base, rate)
    assert interventions >= 2
    ref, _ = _solve(name, status, p)
    np.testing.assert_allclose(flow, ref, atol=1e-6)  # the filter's flows are the grid's
    assert abs(ref[line]) / rate[line] <= 1.0
    assert abs(ref[outage]) == 0.0
    np.testing.assert_allclose(p.sum(), base.sum(), atol=1e-6)  # balance kept


def test_skips_lines_that_are_out_and_units_that_are_cut_off():
    name = "ieee118"
    net, _, base = _case(name)
    t = net.topology
    # An out-of-service line with a tiny rating is not a reason to move anything.
    status = np.ones(net.n_branch)
    status[7] = 0
    rate = np.full(net.n_branch, 1e4)
    rate[7] = 1e-3
    p, _, interventions = _run(name, status, base, rate)
    assert interventions == 0
    np.testing.assert_allclose(p, base, atol=1e-9)
    # A bridge whose far side holds a generator: the island's unit is never moved, the
    # line that is left overloaded by the split is relieved from the main grid.
    bridges = gp.bridges(net)
    for b in bridges:
        s = np.ones(net.n_branch)
        s[b] = 0
        _, isolated = _solve(name, s, base)
        island_gens = np.flatnonzero(isolated[t.gen_bus])
        if len(island_gens):
            break
    else:
        pytest.skip("no bridge cuts off a generator in this case")
    flows, _ = _solve(name, s, base)
    line = int(np.argmax(np.where(s > 0, np.abs(flows), 0)))
    rate = np.full(net.n_branch, 1e4)
    rate[line] = abs(flows[line]) / 1.1
    p, flow, interventions = _run(name, s, base, rate)
    ref, _ = _solve(name, s, p)
    np.testing.assert_allclose(flow, ref, atol=1e-6)
    np.testing.assert_allclose(p[island_gens], base[island_gens], atol=1e-9)
    assert abs(ref[line]) / rate[line] < 1.1
    assert interventions >= 1


@pytest.mark.parametrize(
    ("outage", "dtype"), [(False, "float64"), (True, "float64"), (True, "float32")]
)
def test_corrective_redispatch_secures_what_relief_steps_cannot(outage, dtype):
    """The 8 most loaded lines of ieee118 (after a non-bridge outage, or intact) rated at
    1/1.1 of their flow: six greedy relief steps (two units each) leave a line at 110 %;
    two corrective rounds hold every line at the filter's 98 % margin (by gp.solve in
    float64 on the returned dispatch), within the units' limits and with the balance
    kept. Also in float32, the environment's default precision, where the QP once lost
    the moves to rounding (its balance penalty times the total demand)."""
    name = "ieee118"
    tol = 1e-6 if dtype == "float64" else 1e-2  # MW; float32 carries ~7 digits of 4,000 MW
    net, _, base = _case(name)
    status = np.ones(net.n_branch)
    if outage:
        status[_post_outage_overload(name)[0]] = 0
    flows, _ = _solve(name, status, base)
    lines = np.argsort(-np.abs(flows))[:8]
    rate = np.full(net.n_branch, 1e4)
    rate[lines] = np.abs(flows[lines]) / 1.1
    greedy, _, _ = _run(name, status, base, rate, dtype=dtype)
    assert np.max(np.abs(_solve(name, status, greedy)[0]) / rate) > 1.05
    p, flow, interventions = _run(name, status, base, rate, corrective_rounds=2, dtype=dtype)
    p = p.astype(np.float64)
    ref, _ = _solve(name, status, p)
    np.testing.assert_allclose(flow, ref, atol=tol)  # the filter's flows are the grid's
    assert np.max(np.abs(ref) / rate) <= safety.MARGIN + 1e-3
    p_max = np.asarray(net.gen.p_max_mw * net.gen.status)
    assert np.all(p <= p_max + tol) and np.all(p >= np.minimum(net.gen.p_min_mw, p_max) - tol)
    np.testing.assert_allclose(p.sum(), base.sum(), atol=tol)
    assert interventions >= 2


def test_corrective_redispatch_in_float32_moves_the_units_as_in_float64():
    """Stressed states of ieee118 (proposals 30 % off the base dispatch, ramps of 20 % of
    p_max, ratings 0.8-1.3x the base flows): with two corrective rounds the float32
    filter returns the float64 dispatch to within 0.05 MW (float64's is checked against
    gp.solve in the test above). The QP once worked in absolute setpoints, where its
    balance penalty times the total demand (~4e6) left float32 no digits for the moves:
    up to 109 MW apart on these states."""
    name = "ieee118"
    net, _, base = _case(name)
    rng = np.random.default_rng(0)
    p_max = np.asarray(net.gen.p_max_mw * net.gen.status)
    status = np.ones(net.n_branch)
    flows0, _ = _solve(name, status, base)
    for i in range(4):
        rate = np.maximum(np.abs(flows0) * rng.uniform(0.8, 1.3, net.n_branch), 1.0)
        proposal = base * rng.uniform(0.7, 1.3, net.n_gen)
        kw = dict(corrective_rounds=2, previous=base, ramp=0.2 * p_max)
        p32, _, _ = _run(name, status, proposal, rate, dtype="float32", **kw)
        p64, _, _ = _run(name, status, proposal, rate, dtype="float64", **kw)
        assert np.max(np.abs(p32.astype(np.float64) - p64)) < 0.05, i


@pytest.mark.parametrize(("corrective_rounds", "shed_steps"), [(0, 0), (2, 0), (0, 8)])
def test_never_leaves_flows_worse_than_it_found_them(corrective_rounds, shed_steps):
    """Random outage states (bridges included) and tight ratings: the highest loading
    and the total overload of the filtered dispatch (by gp.solve, on the loads less what
    the filter shed) never exceed those of the balanced proposal (the filter without
    relief steps), with and without the corrective redispatch and the last-resort
    shedding, which never sheds a load beyond its room."""
    name = "ieee30"
    net, _, base = _case(name)
    rng = np.random.default_rng(3)
    bridges = gp.bridges(net)
    checked = shed_states = 0
    for i in range(12):
        status = np.ones(net.n_branch)
        status[rng.choice(net.n_branch, rng.integers(0, 4), replace=False)] = 0
        if i % 3 == 0:
            status[rng.choice(bridges)] = 0
        proposal = base * rng.uniform(0.6, 1.4, net.n_gen)
        flows0, _ = _solve(name, status, base)
        rate = np.maximum(np.abs(flows0) * rng.uniform(0.7, 1.3, net.n_branch), 1.0)
        start, _, _ = _run(name, status, proposal, rate, steps=0)
        if shed_steps:
            out, load = _run(name, status, proposal, rate, shed_steps=shed_steps)
            after = _solve_shed(name, status, out.p, load - out.shed_mw)
            assert np.all(out.shed_mw <= 0.2 * np.maximum(load, 0) + 1e-9), i
            shed_states += out.shed_mw.sum() > 0
        else:
            p, _, _ = _run(name, status, proposal, rate, corrective_rounds=corrective_rounds)
            after = _solve(name, status, p)[0]
        live = status > 0
        found = safety.overload_measures(jnp.asarray(_solve(name, status, start)[0]), rate, live)
        left = safety.overload_measures(jnp.asarray(after), rate, live)
        assert float(left[0]) <= float(found[0]) * (1 + 1e-6) + 1e-9, i
        assert float(left[1]) <= float(found[1]) * (1 + 1e-6) + 1e-6, i
        checked += float(found[1]) > 0
    assert checked >= 6  # most states start overloaded
    assert shed_states >= 2 or not shed_steps  # and some need shedding


def _solve_shed(name, status, gen, load):
    net = _case(name)[0]
    res = gp.solve(net.with_gens(p_mw=gen).with_loads(p_mw=load).with_branches(status=status))
    return np.nan_to_num(np.asarray(res.p_from_mw))


def test_last_resort_shedding_relieves_a_line_that_redispatch_cannot():
    """ieee30's bridge to a load bus (its flow is the load's, whatever the dispatch)
    rated at 90 % of its flow: the relief steps leave it at 111 %; with shedding the
    filter sheds load behind it, within 20 % of each load, until gp.solve (on the
    dispatch and the loads less what was shed) finds it at the 98 % margin, balanced
    (generation down by what was shed) and with every other line no worse."""
    name = "ieee30"
    net, _, base = _case(name)
    status = np.ones(net.n_branch)
    flows = _solve(name, status, base)[0]
    t = net.topology
    load = np.asarray(net.load.p_mw * net.load.status)
    at_bus = np.bincount(t.load_bus, load, t.n_bus)
    # a bridge whose flow is set by loads: one end is a leaf bus with load, no unit
    leaf = [
        b
        for b in gp.bridges(net).tolist()
        for end in (t.branch_from[b], t.branch_to[b])
        if at_bus[end] > 1
        and end not in set(t.gen_bus.tolist())
        and np.sum((t.branch_from == end) | (t.branch_to == end)) == 1
    ]
    assert leaf, "ieee30 has a radial load bus"
    line = leaf[0]
    rate = np.full(net.n_branch, 1e4)
    rate[line] = abs(flows[line]) / 1.11
    p_relief, _, _ = _run(name, status, base, rate)
    assert abs(_solve(name, status, p_relief)[0][line]) / rate[line] > 1.1  # redispatch cannot
    out, load = _run(name, status, base, rate, shed_steps=8)
    served = load - out.shed_mw
    ref = _solve_shed(name, status, out.p, served)
    np.testing.assert_allclose(out.p_from_mw, ref, atol=1e-6)  # the filter's flows are the grid's
    assert abs(ref[line]) / rate[line] <= safety.MARGIN + 1e-6
    assert np.all(out.shed_mw >= -1e-9) and np.all(out.shed_mw <= 0.2 * load + 1e-9)
    np.testing.assert_allclose(out.p.sum(), base.sum() - out.shed_mw.sum(), atol=1e-6)
    assert out.shed_mw.sum() > 0 and out.interventions >= 2
    others = np.arange(net.n_branch) != line
    assert np.all(np.abs(ref[others]) <= np.maximum(np.abs(flows[others]), rate[others]) + 1e-6)
