"""DC power flow against pandapower's rundcpp on every network of pandapower.networks."""

from __future__ import annotations

import numpy as np
import pytest

import gridphysics as gp
from tests.conftest import build_pandapower_net, pandapower_network_names, run_rundcpp

VA_TOL_RAD = 1e-8
P_TOL_MW = 1e-6

NAMES = pandapower_network_names()


def test_enumeration_finds_the_standard_cases():
    # Guards the enumeration itself: if pandapower renamed things we would test nothing.
    for name in (
        "case14",
        "case118",
        "case300",
        "case1354pegase",
        "case9241pegase",
        "mv_oberrhein",
    ):
        assert name in NAMES
    assert len(NAMES) >= 50


@pytest.mark.parametrize("name", NAMES)
def test_dc_matches_rundcpp(name):
    net = build_pandapower_net(name)
    if net is None:
        pytest.skip(f"pandapower.networks.{name}() does not return a pandapowerNet")
    ref = run_rundcpp(net)
    if isinstance(ref, Exception):
        # pandapower cannot solve it (e.g. the empty network has no slack): we must
        # refuse it with a clear error of our own, not crash or return numbers.
        with pytest.raises(gp.GridPhysicsError):
            gp.solve(gp.from_pandapower(net, model="rundcpp"))
        return

    network = gp.from_pandapower(net, model="rundcpp")
    result = gp.solve(network)
    assert bool(result.converged)

    ppc = ref._ppc
    bus_type = ppc["bus"][:, 1].real
    pp_va = np.deg2rad(ppc["bus"][:, 8].real)
    supplied = bus_type != 4
    va = np.asarray(result.va_rad)
    # Isolated buses: pandapower marks them type 4; we report them isolated with NaN.
    np.testing.assert_array_equal(np.asarray(result.bus_isolated), ~supplied)
    assert np.all(np.isnan(va[~supplied]))
    np.testing.assert_allclose(va[supplied], pp_va[supplied], rtol=0, atol=VA_TOL_RAD)

    np.testing.assert_allclose(result.p_from_mw, ppc["branch"][:, 13].real, rtol=0, atol=P_TOL_MW)
    np.testing.assert_allclose(result.p_to_mw, ppc["branch"][:, 15].real, rtol=0, atol=P_TOL_MW)
    gen_on = ppc["gen"][:, 7].real > 0
    np.testing.assert_allclose(
        np.asarray(result.gen_p_mw)[gen_on], ppc["gen"][gen_on, 1].real, rtol=0, atol=P_TOL_MW
    )

    # The same numbers through pandapower's own result tables.
    lookup = ref._pd2ppc_lookups["bus"]
    for bus, row in ref.res_bus.iterrows():
        i = lookup[bus]
        if supplied[i]:
            assert abs(np.deg2rad(row.va_degree) - va[i]) <= VA_TOL_RAD
    if len(ref.line) and "line" in ref._pd2ppc_lookups.get("branch", {}):
        start, end = ref._pd2ppc_lookups["branch"]["line"]
        on = ref.line.in_service.values
        np.testing.assert_allclose(
            np.asarray(result.p_from_mw)[start:end][on],
            ref.res_line.p_from_mw.values[on],
            rtol=0,
            atol=P_TOL_MW,
        )
