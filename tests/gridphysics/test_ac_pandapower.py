"""AC power flow against pandapower's runpp on every network of pandapower.networks."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest

import gridphysics as gp
from tests.conftest import build_pandapower_net, pandapower_network_names

VM_TOL_PU = 1e-6
VA_TOL_DEG = 1e-5
PQ_TOL = 1e-4  # MW / Mvar

NAMES = pandapower_network_names()


def run_runpp(net, **kwargs):
    import pandapower as pp

    net = copy.deepcopy(net)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            pp.runpp(net, **kwargs)
        except Exception as exc:  # pandapower raises several types; the caller inspects
            return exc
    return net


def compare(result: gp.PowerFlowResult, ref) -> None:
    ppc = ref._ppc
    supplied = ppc["bus"][:, 1].real != 4
    assert bool(result.converged)
    np.testing.assert_array_equal(np.asarray(result.bus_isolated), ~supplied)
    vm, va = np.asarray(result.vm_pu), np.rad2deg(np.asarray(result.va_rad))
    np.testing.assert_allclose(vm[supplied], ppc["bus"][supplied, 7].real, rtol=0, atol=VM_TOL_PU)
    np.testing.assert_allclose(va[supplied], ppc["bus"][supplied, 8].real, rtol=0, atol=VA_TOL_DEG)
    for field, col in (("p_from_mw", 13), ("q_from_mvar", 14), ("p_to_mw", 15), ("q_to_mvar", 16)):
        np.testing.assert_allclose(
            getattr(result, field), ppc["branch"][:, col].real, rtol=0, atol=PQ_TOL, err_msg=field
        )
    on = ppc["gen"][:, 7].real > 0
    np.testing.assert_allclose(
        np.asarray(result.gen_p_mw)[on], ppc["gen"][on, 1].real, rtol=0, atol=PQ_TOL
    )


@pytest.mark.parametrize("name", NAMES)
def test_ac_matches_runpp(name):
    net = build_pandapower_net(name)
    if net is None:
        pytest.skip(f"pandapower.networks.{name}() does not return a pandapowerNet")
    ref = run_runpp(net)
    if isinstance(ref, Exception):
        pytest.skip(f"pandapower's runpp does not solve {name}: {type(ref).__name__}")
    result = gp.solve(gp.from_pandapower(net), "ac")
    compare(result, ref)
