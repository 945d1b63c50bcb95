"""Named cases, MATPOWER files and round trips."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import gridphysics as gp
from gridphysics.cases import cases_dir, catalogue
from gridphysics.matpower import write_matpower

# Sizes as pandapower.networks reports them for the same MATPOWER cases.
PANDAPOWER_NAMES = {
    "ieee14": "case14",
    "ieee30": "case30",
    "ieee57": "case57",
    "ieee118": "case118",
    "ieee300": "case300",
    "pegase1354": "case1354pegase",
    "pegase2869": "case2869pegase",
    "pegase9241": "case9241pegase",
}


@pytest.mark.parametrize("name", sorted(PANDAPOWER_NAMES))
def test_named_case_sizes_match_pandapower(name):
    import pandapower.networks as pn

    net = gp.load_case(name)
    ref = getattr(pn, PANDAPOWER_NAMES[name])()
    assert net.n_bus == len(ref.bus)
    assert net.n_branch == len(ref.line) + len(ref.trafo)
    assert net.n_gen == len(ref.poly_cost)  # one cost row per MATPOWER generator
    assert net.name == name
    assert catalogue()[name]["source"]


def test_aliases_paths_and_unknown_names(tmp_path):
    assert gp.load_case("case118").topology == gp.load_case("ieee118").topology
    assert gp.load_case(" IEEE14 ").n_bus == 14
    path = cases_dir() / "matpower" / "case30.m"
    assert gp.load_case(path).n_bus == 30
    assert gp.load_case(str(path)).name == "case30"
    with pytest.raises(gp.UnknownCaseError) as err:
        gp.load_case("ieee9999")
    assert "ieee118" in str(err.value) and "pegase9241" in str(err.value)
    assert isinstance(err.value, KeyError)


def _leaves_equal(a: gp.Network, b: gp.Network) -> None:
    assert a.topology.n_bus == b.topology.n_bus
    for key in (
        "bus_ids",
        "bus_type",
        "branch_from",
        "branch_to",
        "gen_bus",
        "load_bus",
        "shunt_bus",
    ):
        np.testing.assert_array_equal(getattr(a.topology, key), getattr(b.topology, key))
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        # Exact, except angles, which the file stores in degrees (one rounding each way).
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-15, atol=0)


@pytest.mark.parametrize("pypower_case", ["case14", "case30", "case118", "case300"])
def test_round_trip_pypower_dict_to_m_file_equals_direct_import(tmp_path, pypower_case):
    import pypower.api

    case = getattr(pypower.api, pypower_case)()
    path = tmp_path / f"{pypower_case}.m"
    write_matpower(case, path)
    _leaves_equal(gp.load_matpower(path), gp.from_ppc(case))


@pytest.mark.parametrize("name", ["ieee118", "pegase1354"])
def test_save_matpower_round_trip(tmp_path, name):
    net = gp.load_case(name)
    path = tmp_path / "out.m"
    gp.save_matpower(net, path)
    again = gp.load_matpower(path, name=name)
    _leaves_equal(again, net)
    np.testing.assert_allclose(gp.solve(again).p_from_mw, gp.solve(net).p_from_mw, atol=1e-9)


def test_malformed_file_error_names_the_line(tmp_path):
    text = (cases_dir() / "matpower" / "case14.m").read_text().splitlines()
    row = next(i for i, line in enumerate(text) if line.strip().startswith("mpc.branch"))
    text[row + 3] = text[row + 3].replace(
        "\t", "\t1.2.3\t", 1
    )  # a bad number in the 3rd branch row
    path = tmp_path / "bad.m"
    path.write_text("\n".join(text))
    with pytest.raises(gp.MatpowerParseError, match=rf"bad.m:line {row + 4}:"):
        gp.load_case(path)
