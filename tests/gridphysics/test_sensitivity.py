"""PTDF / LODF / OTDF against pandapower's makePTDF / makeLODF, and bridges by brute force."""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

import gridphysics as gp
from gridphysics import sensitivity as sn

TOL = 1e-9


@functools.lru_cache(maxsize=8)
def _case(name: str):
    net = gp.load_case(name)
    ppc = gp.to_ppc(net)
    pos = {int(b): i for i, b in enumerate(net.topology.bus_ids)}
    ppc["bus"][:, 0] = np.arange(net.n_bus)
    ppc["branch"][:, 0] = [pos[int(b)] for b in ppc["branch"][:, 0]]
    ppc["branch"][:, 1] = [pos[int(b)] for b in ppc["branch"][:, 1]]
    return net, ppc


def _make_ptdf(ppc, slack, **kwargs):
    from pandapower.pypower.makePTDF import makePTDF

    return makePTDF(ppc["baseMVA"], ppc["bus"], ppc["branch"], slack, **kwargs)


def _brute_force_bridges(net: gp.Network) -> set[int]:
    t = net.topology
    on = np.flatnonzero(np.asarray(net.branch.status) > 0)

    def components(keep):
        g = coo_matrix(
            (np.ones(len(keep)), (t.branch_from[keep], t.branch_to[keep])), (t.n_bus, t.n_bus)
        )
        return connected_components(g, directed=False)[0]

    base = components(on)
    return {int(k) for k in on if components(on[on != k]) > base}


@pytest.mark.parametrize(
    "name", ["ieee14", "ieee30", "ieee57", "ieee118", "ieee300", "pegase1354", "pegase2869"]
)
def test_ptdf_and_lodf_equal_pandapower(name):
    from pandapower.pypower.makeLODF import makeLODF

    net, ppc = _case(name)
    slack = int(net.topology.ref_buses[0])
    ref = _make_ptdf(ppc, slack)
    np.testing.assert_allclose(sn.ptdf(net), ref, rtol=0, atol=TOL)
    lodf = np.asarray(sn.lodf(net))
    ref_lodf = makeLODF(ppc["branch"], ref)
    bridges = set(sn.bridges(net).tolist())
    assert bridges == _brute_force_bridges(net)
    keep = np.array([k not in bridges for k in range(net.n_branch)])
    np.testing.assert_allclose(lodf[:, keep], ref_lodf[:, keep], rtol=0, atol=TOL)
    assert np.isnan(lodf[:, ~keep]).all()  # islanding outages have no factor


def test_ptdf_slack_choices_rows_and_columns():
    net, ppc = _case("ieee118")
    np.testing.assert_allclose(sn.ptdf(net, slack=12), _make_ptdf(ppc, 12), atol=TOL)
    weights = np.random.default_rng(3).random(net.n_bus)
    ref_w = _make_ptdf(ppc, weights)
    np.testing.assert_allclose(sn.ptdf(net, slack=weights), ref_w, atol=TOL)
    rows = [0, 17, 185]
    np.testing.assert_allclose(sn.ptdf(net, slack=weights, branches=rows), ref_w[rows], atol=TOL)
    np.testing.assert_allclose(
        sn.ptdf(net, buses=[3, 70]),
        _make_ptdf(ppc, int(net.topology.ref_buses[0]))[:, [3, 70]],
        atol=TOL,
    )
    with pytest.raises(gp.NetworkError, match="branch index 999"):
        sn.ptdf(net, branches=[999])


def test_otdf_is_the_ptdf_after_the_outage():
    net, _ = _case("ieee30")
    outages = [3, 10]
    otdf = np.asarray(sn.otdf(net, outages))
    for i, k in enumerate(outages):
        after = net.with_branches(status=jnp.ones(net.n_branch).at[k].set(0.0))
        np.testing.assert_allclose(otdf[i], sn.ptdf(after), atol=TOL)


def test_rows_of_the_largest_grids_without_dense_matrices():
    net = gp.load_case("pegase9241")
    rows = [0, 1000, 16000]
    ours = np.asarray(sn.ptdf(net, branches=rows))
    assert ours.shape == (3, net.n_bus)
    _, ppc = _case("pegase9241")
    ref = _make_ptdf(
        ppc, int(net.topology.ref_buses[0]), using_sparse_solver=True, branch_id=rows, reduced=True
    )
    np.testing.assert_allclose(ours, ref, atol=TOL)
    # A 13,659-bus MATPOWER grid: LODF columns, checked against re-solves with the branch out.
    big = gp.load_case("pegase13659")
    outages = [k for k in (5, 500, 20000) if k not in set(sn.bridges(big).tolist())]
    cols = np.asarray(sn.lodf(big, outages=outages))
    assert cols.shape == (big.n_branch, len(outages))
    base = np.asarray(gp.solve(big).p_from_mw)
    for j, k in enumerate(outages):
        after = gp.solve(big.with_branches(status=jnp.ones(big.n_branch).at[k].set(0.0)))
        np.testing.assert_allclose(base + cols[:, j] * base[k], after.p_from_mw, atol=1e-6)
