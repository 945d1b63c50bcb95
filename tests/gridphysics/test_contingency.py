"""Contingency screening against brute force (re-solves) and pandapower."""

from __future__ import annotations

import copy
import warnings

import jax.numpy as jnp
import numpy as np
import pytest

import gridphysics as gp
from gridphysics import sensitivity
from gridphysics.contingency import (
    ContingencyReport,
    Scenarios,
    contingencies,
    n1_dc_flows,
    n1_plan,
)
from gridphysics.ratings import fill_missing_ratings, rating_rule
from tests.gridphysics.test_ac_pandapower import PQ_TOL


def _outaged(net: gp.Network, members) -> gp.Network:
    return net.with_branches(status=jnp.ones(net.n_branch).at[np.asarray(members)].set(0.0))


def _pandapower_outage(net, lookups, k):
    for element, (start, end) in lookups.items():
        if start <= k < end:
            net[element].loc[net[element].index[k - start], "in_service"] = False
            return net
    raise AssertionError(k)


@pytest.mark.parametrize("name", ["case14", "case118"])
def test_n1_dc_equals_pandapower_rundcpp_with_the_branch_out(name):
    import pandapower as pp
    import pandapower.networks as pn

    net = getattr(pn, name)()
    network = gp.from_pandapower(net, model="rundcpp")
    report = contingencies(network)
    base = copy.deepcopy(net)
    pp.rundcpp(base)
    lookups = base._pd2ppc_lookups["branch"]
    assert len(report.outages) == network.n_branch
    for i, (k,) in enumerate(report.outages):
        out = _pandapower_outage(copy.deepcopy(net), lookups, k)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pp.rundcpp(out)
        np.testing.assert_allclose(
            report.flow_mw[i], out._ppc["branch"][:, 13].real, atol=1e-6, err_msg=str(k)
        )


@pytest.mark.parametrize("name", ["ieee300", "pegase1354"])
def test_n1_dc_equals_brute_force_resolves_and_flags_bridges(name):
    net = gp.load_case(name)
    report = contingencies(net)
    bridges = set(sensitivity.bridges(net).tolist())
    assert [o[0] in bridges for o in report.outages] == report.islanding.tolist()
    step = 1 if net.n_branch < 500 else 23
    for i in range(0, len(report.outages), step):
        after = gp.solve(_outaged(net, report.outages[i]))
        np.testing.assert_allclose(report.flow_mw[i], after.p_from_mw, atol=1e-6)
        isolated = np.asarray(after.bus_isolated)
        assert report.isolated_buses[i] == isolated.sum()
        load = np.zeros(net.n_bus)
        np.add.at(load, net.topology.load_bus, np.asarray(net.load.p_mw))
        assert report.lost_load_mw[i] == pytest.approx(load[isolated].sum(), abs=1e-9)
    assert report.lost_load_mw.max() > 0  # some bridge in these cases does cut off load


def test_n_k_and_mixed_lists_equal_resolves(ieee118):
    sets = [(0, 5), (3, 7, 9), 12, (6, 8), (100, 101)]
    report = contingencies(ieee118, sets)
    assert report.outages == [(0, 5), (3, 7, 9), (12,), (6, 8), (100, 101)]
    for i, members in enumerate(report.outages):
        np.testing.assert_allclose(
            report.flow_mw[i], gp.solve(_outaged(ieee118, members)).p_from_mw, atol=1e-6
        )
    assert report.islanding.tolist() == [False, False, False, True, False]
    with pytest.raises(gp.NetworkError, match="out of range"):
        contingencies(ieee118, [(1, 500)])


def test_scenarios_are_screened_together(ieee118):
    scales = np.array([[1.0], [1.15], [0.8]])
    scen = Scenarios(load_p_mw=np.asarray(ieee118.load.p_mw)[None, :] * scales)
    batch = contingencies(ieee118, [3, 8, (1, 2)], scenarios=scen)
    assert batch.flow_mw.shape == (3, 3, ieee118.n_branch)
    for s in range(3):
        alone = contingencies(
            ieee118.with_loads(p_mw=ieee118.load.p_mw * scales[s, 0]), [3, 8, (1, 2)]
        )
        np.testing.assert_allclose(batch.flow_mw[s], alone.flow_mw, atol=1e-8)


def test_ac_n1_equals_pandapower_runpp_with_the_branch_out():
    import pandapower as pp
    import pandapower.networks as pn

    from tests.gridphysics.test_ac_pandapower import run_runpp

    net = pn.case14()
    network = gp.from_pandapower(net)
    report = contingencies(network, method="ac")
    base = copy.deepcopy(net)
    pp.runpp(base)
    lookups = base._pd2ppc_lookups["branch"]
    ours = base._pd2ppc_lookups["bus"][net.bus.index]
    assert report.converged.all()
    for i, (k,) in enumerate(report.outages):
        ref = run_runpp(_pandapower_outage(copy.deepcopy(net), lookups, k))
        np.testing.assert_allclose(report.flow_mw[i], ref._ppc["branch"][:, 13].real, atol=PQ_TOL)
        theirs = ref._pd2ppc_lookups["bus"][net.bus.index]
        assert report.isolated_buses[i] == int((ref._ppc["bus"][theirs, 1].real == 4).sum())
    del ours


def test_report_tables_and_summary(ieee118):
    report = contingencies(ieee118)
    assert isinstance(report, ContingencyReport)
    summary = report.summary()
    assert summary["contingencies"] == ieee118.n_branch
    assert summary["violating"] == int((report.n_overloaded > 0).sum())
    assert summary["islanding"] == 9
    table = report.to_pandas()
    assert len(table) == int(((report.n_overloaded > 0) | report.islanding).sum())
    assert table.max_loading_percent.is_monotonic_decreasing
    first = table.iloc[0]
    i = int(np.nanargmax(report.max_loading_percent))
    assert first.branches == report.outages[i]
    loading = np.abs(report.flow_mw[i]) / report.ratings.rate_mva * 100
    assert first.max_loading_percent == pytest.approx(np.nanmax(loading))
    assert first.n_overloaded == int((loading > 100).sum())
    assert (
        "rule v1" in str(report) and len(report.to_pandas(only_critical=False)) == ieee118.n_branch
    )


def test_ratings_rule_and_case_ratings():
    rated = gp.load_case("ieee30")
    _, kept = fill_missing_ratings(rated)
    assert kept.from_case.all() and "own ratings" in kept.source
    net = gp.load_case("ieee118")
    filled, ratings = fill_missing_ratings(net)
    rule = rating_rule()
    assert rule.version == "v1" and not ratings.from_case.any()
    dc = np.abs(np.asarray(gp.solve(net).p_from_mw))
    assert np.all(ratings.rate_mva >= rule.factor * dc - 1e-9)
    assert np.all(np.mod(ratings.rate_mva, rule.step_mva) == 0)
    np.testing.assert_array_equal(filled.branch.rate_a_mva, ratings.rate_mva)
    with pytest.raises(gp.GridPhysicsError, match="no rating rule"):
        rating_rule("v0")


def test_one_shot_n1_screen_reuses_its_plan(ieee118):
    plan = n1_plan(ieee118)
    flows = np.asarray(n1_dc_flows(ieee118, plan))
    again = np.asarray(n1_dc_flows(ieee118.with_loads(p_mw=ieee118.load.p_mw * 1.05), plan))
    assert flows.shape == again.shape == (len(plan.outages), ieee118.n_branch)
    report = contingencies(ieee118)
    np.testing.assert_allclose(flows, report.flow_mw, atol=1e-9)
    assert not np.allclose(flows, again)


def test_largest_grids_screen_a_subset():
    net = gp.load_case("pegase13659")
    outages = list(range(0, net.n_branch, 997))
    report = contingencies(net, outages, keep_flows=False)
    assert report.flow_mw is None and len(report.outages) == len(outages)
    assert np.isfinite(report.max_loading_percent).all()
    k = 3
    after = gp.solve(_outaged(net, report.outages[k]))
    loading = np.abs(np.asarray(after.p_from_mw)) / report.ratings.rate_mva * 100
    assert report.max_loading_percent[k] == pytest.approx(np.nanmax(loading), rel=1e-9)


def test_outage_inside_a_cut_off_part_is_named_as_such(ieee14):
    """Buses 7 and 8 cut off (4-7 and 7-9 out): the outage of 7-8 in that dead part is
    refused with a message that says so, not 'both keep a reference bus'."""
    t = ieee14.topology
    ids = np.asarray(t.bus_ids)
    pairs = [
        tuple(sorted((int(ids[f]), int(ids[b]))))
        for f, b in zip(t.branch_from, t.branch_to, strict=True)
    ]
    status = np.ones(ieee14.n_branch)
    status[pairs.index((4, 7))] = 0.0
    status[pairs.index((7, 9))] = 0.0
    net = ieee14.with_branches(status=status)
    with pytest.raises(gp.NetworkError, match="no reference bus reaches"):
        gp.n1_plan(net, [pairs.index((7, 8))])
