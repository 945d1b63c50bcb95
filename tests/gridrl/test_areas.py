"""Tests for gridrl.areas: control-area partitions of a grid."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

import gridphysics as gp
import gridphysics.cases
from gridphysics.matpower import load_matpower_dict
from gridrl.areas import area_source, describe_areas, partition, tie_lines

CASES = ["ieee14", "ieee30", "ieee57", "ieee118", "ieee300"]
PARTITIONS = [(c, 4) for c in CASES] + [("ieee118", 2), ("ieee118", 3)]
BUS_AREA = 6  # MATPOWER bus column


def case14_dict() -> dict:
    return copy.deepcopy(load_matpower_dict(gridphysics.cases.cases_dir() / "matpower/case14.m"))


def with_areas(area_by_bus_id: dict[int, int]) -> gp.Network:
    """ieee14 with BUS_AREA set from {bus number: area number}."""
    case = case14_dict()
    for row in case["bus"]:
        row[BUS_AREA] = area_by_bus_id[int(row[0])]
    return gp.from_ppc(case, name="case14_areas")


def in_service_adjacency(net: gp.Network) -> sp.csr_matrix:
    t = net.topology
    on = np.asarray(net.branch.status) > 0
    f, to = t.branch_from[on], t.branch_to[on]
    n = net.n_bus
    return sp.coo_matrix((np.ones(f.size), (f, to)), shape=(n, n)).tocsr()


def is_connected(net: gp.Network, buses: np.ndarray) -> bool:
    sub = in_service_adjacency(net)[buses][:, buses]
    return connected_components(sub, directed=False)[0] == 1


def capacity_by_area(net: gp.Network, areas: np.ndarray, n_areas: int) -> np.ndarray:
    cap = np.asarray(net.gen.p_max_mw) * np.asarray(net.gen.status)
    return np.bincount(areas[net.topology.gen_bus], weights=cap, minlength=n_areas)


@pytest.fixture(scope="module")
def parts() -> dict[tuple[str, int], np.ndarray]:
    return {(c, k): partition(gp.load_case(c), k) for c, k in PARTITIONS}


@pytest.mark.parametrize(("case", "n_areas"), PARTITIONS)
def test_partition_is_complete_and_contiguous(parts, case, n_areas):
    net = gp.load_case(case)
    areas = parts[case, n_areas]
    assert area_source(net, n_areas) == "graph partition v1"
    assert areas.shape == (net.n_bus,)
    assert np.issubdtype(areas.dtype, np.integer)
    assert set(areas.tolist()) == set(range(n_areas))
    for a in range(n_areas):
        assert is_connected(net, np.flatnonzero(areas == a)), f"area {a} is not connected"
    assert np.all(capacity_by_area(net, areas, n_areas) > 0), "an area has no generation"


@pytest.mark.parametrize(("case", "n_areas"), PARTITIONS)
def test_partition_is_deterministic(parts, case, n_areas):
    net = gp.load_case(case)
    np.testing.assert_array_equal(partition(net, n_areas), parts[case, n_areas])
    np.testing.assert_array_equal(partition(net, n_areas), partition(net, n_areas))


def test_partition_ignores_branch_order_and_direction():
    case = case14_dict()
    net = gp.from_ppc(case)
    flipped = copy.deepcopy(case)
    flipped["branch"] = flipped["branch"][::-1].copy()
    flipped["branch"][:, [0, 1]] = flipped["branch"][:, [1, 0]]
    np.testing.assert_array_equal(partition(gp.from_ppc(flipped)), partition(net))


@pytest.mark.parametrize("n_areas", [2, 3, 4])
def test_ieee118_capacity_balance(parts, n_areas):
    net = gp.load_case("ieee118")
    cap = capacity_by_area(net, parts["ieee118", n_areas], n_areas)
    assert cap.max() / cap.min() <= 2.5, cap


@pytest.mark.parametrize(("case", "n_areas"), PARTITIONS)
def test_tie_lines_brute_force(parts, case, n_areas):
    net = gp.load_case(case)
    areas = parts[case, n_areas]
    t = net.topology
    expected = [i for i in range(net.n_branch) if areas[t.branch_from[i]] != areas[t.branch_to[i]]]
    got = tie_lines(net, areas)
    assert got.tolist() == expected
    assert len(expected) > 0


@pytest.mark.parametrize(("case", "n_areas"), PARTITIONS)
def test_describe_areas_totals(parts, case, n_areas):
    net = gp.load_case(case)
    areas = parts[case, n_areas]
    text = describe_areas(net, areas)
    rows = {}
    for line in text.splitlines():
        cells = line.split()
        if cells and (cells[0].isdigit() or cells[0] == "total"):
            rows[cells[0]] = [float(c) for c in cells[1:]]
    assert set(rows) == {str(a) for a in range(n_areas)} | {"total"}
    per_area = np.array([rows[str(a)] for a in range(n_areas)])
    total = np.array(rows["total"])
    cap = float(np.sum(np.asarray(net.gen.p_max_mw) * np.asarray(net.gen.status)))
    load = float(np.sum(np.asarray(net.load.p_mw) * np.asarray(net.load.status)))
    n_tie = len(tie_lines(net, areas))
    expected = [net.n_bus, net.n_gen, cap, load, net.n_branch - n_tie, n_tie]
    np.testing.assert_allclose(total, expected, atol=0.05)
    # Buses, gens, capacity, load and internal branches add up; each tie line has two ends.
    np.testing.assert_allclose(per_area[:, :5].sum(axis=0), expected[:5], atol=0.05 * n_areas)
    assert per_area[:, 5].sum() == 2 * n_tie
    np.testing.assert_array_equal(per_area[:, 0], np.bincount(areas, minlength=n_areas))


# -- case area data --------------------------------------------------------------------

# Contiguous groups of ieee14 buses: {1,2,5}, {3,4,7,8}, {9,10,14}, {6,11,12,13}.
FOUR = {1: 7, 2: 7, 5: 7, 3: 3, 4: 3, 7: 3, 8: 3, 9: 9, 10: 9, 14: 9, 6: 5, 11: 5, 12: 5, 13: 5}
# The same split further: {1,2} {5} {3,4} {7,8} {9,10,14} {6,11,12,13}.
SIX = {1: 1, 2: 1, 5: 2, 3: 3, 4: 3, 7: 4, 8: 4, 9: 5, 10: 5, 14: 5, 6: 6, 11: 6, 12: 6, 13: 6}


def test_case_areas_are_used_in_sorted_order():
    net = with_areas(FOUR)
    assert area_source(net, 4) == "case areas"
    rank = {3: 0, 5: 1, 7: 2, 9: 3}
    expected = [rank[FOUR[int(b)]] for b in net.topology.bus_ids]
    assert partition(net, 4).tolist() == expected


def test_case_areas_merged_to_four():
    net = with_areas(SIX)
    assert area_source(net, 4) == "case areas"
    areas = partition(net, 4)
    original = np.array([SIX[int(b)] for b in net.topology.bus_ids])
    assert set(areas.tolist()) == {0, 1, 2, 3}
    for a in range(4):
        members = np.flatnonzero(areas == a)
        assert is_connected(net, members)
        # a merged group is a union of whole case areas
        for o in np.unique(original[members]):
            assert np.all(areas[original == o] == a)
    # Hand-worked: {5} (0 MW) joins {1,2} (2 branches); then {9,10,14} (0 MW) joins
    # {6,11,12,13} (2 branches); groups are numbered by their lowest case area.
    groups = [sorted(net.topology.bus_ids[areas == a].tolist()) for a in range(4)]
    assert groups == [[1, 2, 5], [3, 4], [7, 8], [6, 9, 10, 11, 12, 13, 14]]


def test_case_areas_merged_to_two_stay_contiguous():
    net = with_areas(SIX)
    areas = partition(net, 2)
    for a in range(2):
        assert is_connected(net, np.flatnonzero(areas == a))


def test_ieee30_case_areas_then_graph_partition():
    net = gp.load_case("ieee30")
    assert area_source(net, 3) == "case areas"
    values = np.unique(net.topology.bus_area)
    np.testing.assert_array_equal(partition(net, 3), np.searchsorted(values, net.topology.bus_area))
    assert area_source(net, 4) == "graph partition v1"


def test_single_area():
    net = gp.load_case("ieee57")
    assert partition(net, 1).tolist() == [0] * net.n_bus


# -- awkward grids ---------------------------------------------------------------------


def test_isolated_bus_and_open_branch():
    case = case14_dict()
    new = case["bus"][-1].copy()
    new[0], new[1] = 99, 4  # bus 99, type isolated, no branches
    case["bus"] = np.vstack([case["bus"], new])
    br = case["branch"]
    open_row = np.flatnonzero((br[:, 0] == 7) & (br[:, 1] == 8))[0]
    br[open_row, 10] = 0  # bus 8 (a generator) is now cut off
    net = gp.from_ppc(case)
    areas = partition(net, 3)
    assert areas.shape == (net.n_bus,)
    assert set(areas.tolist()) == {0, 1, 2}
    ids = net.topology.bus_ids.tolist()
    assert areas[ids.index(99)] == 0
    assert areas[ids.index(8)] == areas[ids.index(7)]  # joins its neighbour over the open branch
    main = np.array([i for i, b in enumerate(ids) if b not in (8, 99)])
    for a in range(3):
        assert is_connected(net, np.intersect1d(main, np.flatnonzero(areas == a)))
    np.testing.assert_array_equal(partition(net, 3), areas)


# -- bad n_areas -----------------------------------------------------------------------


@pytest.mark.parametrize("n_areas", [0, -1, 15, 200, 6, 2.0, True, "4"])
def test_bad_n_areas(ieee14, n_areas):
    # ieee14 has 14 buses, 5 of them with generators
    with pytest.raises(ValueError, match="n_areas"):
        partition(ieee14, n_areas)
    with pytest.raises(ValueError, match="n_areas"):
        area_source(ieee14, n_areas)


def test_bad_areas_array(ieee14):
    with pytest.raises(ValueError, match="areas"):
        tie_lines(ieee14, np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match="areas"):
        describe_areas(ieee14, np.zeros(ieee14.n_bus))
