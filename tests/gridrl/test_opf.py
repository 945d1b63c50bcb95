"""DC OPF (gridrl.opf) checked against independent references.

References: gridphysics' own DC power flow of the OPF dispatch (flows, slack output),
the quadratic cost written out here, and an economic dispatch by lambda iteration.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np
import pytest

import gridphysics as gp
from gridphysics.network import REF
from gridrl.opf import OPFResult, dc_opf

BALANCE_TOL_MW = 1e-6
FLOW_TOL_MW = 1e-6
LIMIT_RTOL = 1e-7


@functools.lru_cache(maxsize=4)
def _rated(name: str) -> gp.Network:
    return gp.fill_missing_ratings(gp.load_case(name))[0]


def _quadratic_cost(net: gp.Network, p: np.ndarray) -> float:
    g = net.gen
    on = np.asarray(g.status) > 0
    c2, c1, c0 = (np.asarray(a) for a in (g.cost_c2, g.cost_c1, g.cost_c0))
    return float(np.sum((c2 * p**2 + c1 * p + c0)[on]))


def _interpolation_error_bound(net: gp.Network, segments: int) -> float:
    """Largest overestimate of the chord interpolation of c2 p^2 on segments of width w:
    c2 w^2 / 4 per unit (at the middle of a segment)."""
    w = (np.asarray(net.gen.p_max_mw) - np.asarray(net.gen.p_min_mw)) / segments
    return float(np.sum(np.asarray(net.gen.cost_c2) * w**2 / 4))


def _live_shunt_mw(net: gp.Network, isolated: np.ndarray) -> float:
    g = np.asarray(net.shunt.g_mw) * np.asarray(net.shunt.status)
    return float(g[~isolated[net.topology.shunt_bus]].sum())


def _check_dispatch(net: gp.Network, res: OPFResult, rate: np.ndarray | None = None) -> None:
    """Success, bounds, balance, and flows / slack output from an independent solve."""
    assert res.success, res.status
    assert res.status == "optimal"
    load = np.asarray(net.load.p_mw) * np.asarray(net.load.status)
    gen = net.gen
    assert np.all(res.shed_mw >= -1e-9)
    assert np.all(res.shed_mw <= np.maximum(load, 0) + 1e-9)
    assert np.all(res.gen_p_mw >= np.asarray(gen.p_min_mw) * np.asarray(gen.status) - 1e-9)
    assert np.all(res.gen_p_mw <= np.asarray(gen.p_max_mw) * np.asarray(gen.status) + 1e-9)

    # Statuses are all 1 in these tests, so set-points equal injections.
    assert np.all(np.asarray(gen.status) == 1) and np.all(np.asarray(net.load.status) == 1)
    served = np.asarray(net.load.p_mw) - res.shed_mw
    solved = gp.solve(net.with_gens(p_mw=res.gen_p_mw).with_loads(p_mw=served))
    assert bool(solved.converged)
    isolated = np.asarray(solved.bus_isolated)
    balance = res.gen_p_mw.sum() - (load - res.shed_mw).sum() - _live_shunt_mw(net, isolated)
    assert abs(balance) < BALANCE_TOL_MW

    flows = np.asarray(solved.p_from_mw)
    np.testing.assert_allclose(res.flow_mw, flows, rtol=0, atol=FLOW_TOL_MW)
    # The slack units produce exactly the dispatch when the balance holds.
    live_gen = ~isolated[net.topology.gen_bus]
    np.testing.assert_allclose(
        res.gen_p_mw[live_gen], np.asarray(solved.gen_p_mw)[live_gen], rtol=0, atol=FLOW_TOL_MW
    )
    rate = np.asarray(net.branch.rate_a_mva) if rate is None else rate
    limited = np.isfinite(rate) & (np.asarray(net.branch.status) > 0)
    excess = np.abs(flows[limited]) - rate[limited] * (1 + LIMIT_RTOL)
    assert np.all(excess <= FLOW_TOL_MW), excess.max()


@pytest.mark.parametrize("name", ["ieee14", "ieee118"])
def test_dispatch_is_balanced_and_within_ratings(name):
    net = _rated(name)
    res = dc_opf(net)
    _check_dispatch(net, res)
    assert res.gen_p_mw.shape == (net.n_gen,)
    assert res.shed_mw.shape == (net.n_load,)
    assert res.flow_mw.shape == (net.n_branch,)
    assert np.all(res.shed_mw == 0)  # the case's own dispatch shows no shedding is needed
    assert res.cost == pytest.approx(_quadratic_cost(net, res.gen_p_mw), rel=1e-12)


@pytest.mark.parametrize("name", ["ieee14", "ieee118"])
def test_cost_not_above_the_case_dispatch(name):
    net = _rated(name)
    case = gp.solve(net)
    case_p = np.asarray(case.gen_p_mw)
    rate = np.asarray(net.branch.rate_a_mva)
    feasible = (
        np.all(case_p <= np.asarray(net.gen.p_max_mw) + 1e-9)
        and np.all(case_p >= np.asarray(net.gen.p_min_mw) - 1e-9)
        and np.all(np.abs(np.asarray(case.p_from_mw)) <= rate)
    )
    assert feasible  # the catalogue ratings are sized on this dispatch
    segments = 20
    res = dc_opf(net, cost_segments=segments)
    assert res.success
    case_cost = _quadratic_cost(net, case_p)
    assert res.cost <= case_cost + _interpolation_error_bound(net, segments)


@pytest.mark.parametrize("name", ["ieee14", "ieee118"])
def test_tighter_ratings_still_respected_and_cost_more(name):
    net = _rated(name)
    segments = 20
    loose = dc_opf(net, cost_segments=segments)
    rate = 0.7 * np.asarray(net.branch.rate_a_mva)
    tight = dc_opf(net, rate_mva=rate, cost_segments=segments)
    _check_dispatch(net.with_branches(rate_a_mva=rate), tight, rate)
    assert tight.cost >= loose.cost - _interpolation_error_bound(net, segments)
    # Same with the ratings in the network instead of the override.
    again = dc_opf(net.with_branches(rate_a_mva=rate), cost_segments=segments)
    np.testing.assert_allclose(again.gen_p_mw, tight.gen_p_mw, atol=1e-6)


def test_tighter_ratings_bind_on_ieee118():
    net = _rated("ieee118")
    rate = 0.7 * np.asarray(net.branch.rate_a_mva)
    loose = dc_opf(net, cost_segments=20)
    tight = dc_opf(net, rate_mva=rate, cost_segments=20)
    assert np.any(np.abs(loose.flow_mw) > rate)  # the tighter limits do cut the optimum
    assert np.any(np.isclose(np.abs(tight.flow_mw), rate, rtol=1e-6))
    assert tight.cost > loose.cost


def _economic_dispatch(net: gp.Network, demand: float) -> tuple[np.ndarray, float]:
    """Lossless economic dispatch without network limits, by bisection on the price."""
    c2 = np.asarray(net.gen.cost_c2)
    c1 = np.asarray(net.gen.cost_c1)
    lo_p = np.asarray(net.gen.p_min_mw)
    hi_p = np.asarray(net.gen.p_max_mw)
    assert np.all(c2 > 0)

    def output(price: float) -> np.ndarray:
        return np.clip((price - c1) / (2 * c2), lo_p, hi_p)

    lo, hi = 0.0, 1e4
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if output(mid).sum() < demand:
            lo = mid
        else:
            hi = mid
    p = output(0.5 * (lo + hi))
    assert abs(p.sum() - demand) < 1e-8
    return p, _quadratic_cost(net, p)


def test_unlimited_ieee14_matches_economic_dispatch():
    net = gp.load_case("ieee14")
    segments = 50
    res = dc_opf(net, rate_mva=np.full(net.n_branch, np.nan), cost_segments=segments)
    assert res.success
    demand = float(np.asarray(net.load.p_mw).sum() + np.asarray(net.shunt.g_mw).sum())
    p_ed, cost_ed = _economic_dispatch(net, demand)
    assert res.cost >= cost_ed - 1e-6  # the exact optimum is a lower bound
    assert res.cost <= cost_ed * 1.005
    assert res.cost - cost_ed <= _interpolation_error_bound(net, segments) + 1e-6
    width = (np.asarray(net.gen.p_max_mw) - np.asarray(net.gen.p_min_mw)) / segments
    assert np.all(np.abs(res.gen_p_mw - p_ed) <= 2 * width + 1e-6)


def test_islanded_load_is_shed_and_islanded_unit_stops():
    net = _rated("ieee14")
    ids = net.topology.bus_ids
    ends = list(zip(ids[net.topology.branch_from], ids[net.topology.branch_to], strict=True))
    tripped = [ends.index((9, 14)), ends.index((13, 14)), ends.index((7, 8))]
    status = np.ones(net.n_branch)
    status[tripped] = 0.0
    at_8 = ids[net.topology.gen_bus] == 8
    must_run = np.where(at_8, 20.0, np.asarray(net.gen.p_min_mw))  # does not bind a dead unit
    res = dc_opf(net, branch_status=status, gen_p_min_mw=must_run)
    assert res.success
    load_bus = ids[net.topology.load_bus]
    load = np.asarray(net.load.p_mw)
    at_14 = load_bus == 14
    assert load[at_14].sum() > 0
    np.testing.assert_array_equal(res.shed_mw[at_14], load[at_14])
    assert np.all(res.shed_mw[~at_14] == 0)
    assert np.all(res.gen_p_mw[at_8] == 0)
    assert res.cost == pytest.approx(
        _quadratic_cost(net, res.gen_p_mw) + 10_000.0 * load[at_14].sum(), rel=1e-12
    )
    tripped_net = net.with_branches(status=status)
    _check_dispatch(tripped_net, res)
    assert np.all(res.flow_mw[tripped] == 0)


def test_phase_shifter_and_shunt_conductance():
    net = _rated("ieee14")
    ids = net.topology.bus_ids
    ends = list(zip(ids[net.topology.branch_from], ids[net.topology.branch_to], strict=True))
    shift = np.zeros(net.n_branch)
    shift[ends.index((4, 7))] = np.deg2rad(6.0)
    net = net.with_branches(shift_rad=shift)
    net = net.replace(shunt=net.shunt.replace(g_mw=jnp.full_like(net.shunt.g_mw, 7.5)))
    assert abs(float(gp.solve(net.with_loads(p_mw=0.0).with_gens(p_mw=0.0)).p_from_mw[0])) > 1
    rate = np.asarray(net.branch.rate_a_mva) * 0.8
    res = dc_opf(net, rate_mva=rate)
    assert res.shed_mw.sum() > 1  # the served load differs from the case's
    _check_dispatch(net, res, rate)


def test_pegase1354_with_its_phase_shifters():
    net = _rated("pegase1354")
    assert np.any(np.asarray(net.branch.shift_rad) != 0)
    res = dc_opf(net)
    _check_dispatch(net, res)


def test_two_reference_buses_in_one_island():
    net = gp.load_case("ieee14")
    bus_type = net.topology.bus_type.copy()
    second = int(np.flatnonzero(net.topology.bus_ids == 2)[0])
    bus_type[second] = REF
    net = net.replace(topology=net.topology.replace(bus_type=bus_type))
    weights = np.where(net.topology.gen_bus == second, 1.0, np.asarray(net.gen.slack_weight))
    net = net.with_gens(slack_weight=weights)
    assert float(net.bus.va_rad[second]) != 0  # the fixed angles drive a flow of their own
    res = dc_opf(net)
    _check_dispatch(net, res)


def test_overrides():
    net = _rated("ieee14")
    cheapest = int(np.argmin(np.asarray(net.gen.cost_c1)))
    base = dc_opf(net)
    assert base.gen_p_mw[cheapest] > 50
    cap = np.asarray(net.gen.p_max_mw).copy()
    cap[cheapest] = 50.0
    capped = dc_opf(net, gen_p_max_mw=cap)
    assert capped.gen_p_mw[cheapest] <= 50 + 1e-9
    assert capped.cost > base.cost

    loads = np.asarray(net.load.p_mw) * 1.1
    np.testing.assert_allclose(
        dc_opf(net, load_p_mw=loads).gen_p_mw,
        dc_opf(net.with_loads(p_mw=loads)).gen_p_mw,
        atol=1e-9,
    )

    off = net.with_gens(status=jnp.ones(net.n_gen).at[cheapest].set(0.0))
    res = dc_opf(off, gen_p_max_mw=cap)
    assert res.gen_p_mw[cheapest] == 0
    assert res.cost == pytest.approx(_quadratic_cost(off, res.gen_p_mw), rel=1e-12)


def test_load_beyond_capacity_is_shed():
    net = gp.load_case("ieee14")
    res = dc_opf(net, load_p_mw=np.asarray(net.load.p_mw) * 4)
    assert res.success
    capacity = float(np.asarray(net.gen.p_max_mw).sum())
    demand = float(np.asarray(net.load.p_mw).sum()) * 4
    assert res.shed_mw.sum() == pytest.approx(demand - capacity, abs=1e-6)


def test_shedding_cap_per_load():
    """Capacity 10 % short of the load: with each load's shedding capped at 20 % of it the
    shortfall is still shed (within the caps); capped at 5 % it cannot be: infeasible."""
    net = gp.load_case("ieee14")
    load = np.asarray(net.load.p_mw, float)
    p_max = (
        np.asarray(net.gen.p_max_mw, float) * 0.9 * load.sum() / np.asarray(net.gen.p_max_mw).sum()
    )
    res = dc_opf(
        net, gen_p_max_mw=p_max, rate_mva=np.full(net.n_branch, np.inf), shed_max_mw=0.2 * load
    )
    assert res.success
    assert res.shed_mw.sum() == pytest.approx(0.1 * load.sum(), abs=1e-6)
    assert np.all(res.shed_mw <= 0.2 * load + 1e-9)
    tight = dc_opf(
        net, gen_p_max_mw=p_max, rate_mva=np.full(net.n_branch, np.inf), shed_max_mw=0.05 * load
    )
    assert not tight.success
    with pytest.raises(ValueError, match="shed_max_mw"):
        dc_opf(net, shed_max_mw=-load)


def test_must_run_above_load_is_infeasible_not_an_error():
    net = gp.load_case("ieee14")
    p_max = np.asarray(net.gen.p_max_mw)
    res = dc_opf(net, gen_p_min_mw=p_max)
    assert not res.success
    assert res.status == "infeasible"
    assert np.isnan(res.cost)
    assert np.all(np.isnan(res.gen_p_mw)) and res.gen_p_mw.shape == (net.n_gen,)
    assert np.all(np.isnan(res.shed_mw)) and np.all(np.isnan(res.flow_mw))


def test_negative_quadratic_cost_raises():
    net = gp.load_case("ieee14")
    net = net.replace(gen=net.gen.replace(cost_c2=net.gen.cost_c2.at[2].set(-0.01)))
    with pytest.raises(ValueError, match="generator 2 at bus 3"):
        dc_opf(net)


def test_bad_shapes_raise():
    net = gp.load_case("ieee14")
    with pytest.raises(ValueError, match="load_p_mw"):
        dc_opf(net, load_p_mw=np.ones(3))
    with pytest.raises(ValueError, match="cost_segments"):
        dc_opf(net, cost_segments=0)
