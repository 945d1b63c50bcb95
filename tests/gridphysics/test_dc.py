"""DC power flow: references (PYPOWER, pandapower, brute force), transformations, errors."""

from __future__ import annotations

import copy
import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gridphysics as gp
from gridphysics import linalg
from gridphysics.cases import cases_dir, catalogue
from gridphysics.matpower import load_matpower_dict
from gridphysics.solve import _compiled
from tests.conftest import quiet_pandapower


def _pypower_dc(case: dict) -> dict:
    from pypower.api import ppoption, rundcpf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result, success = rundcpf(copy.deepcopy(case), ppoption(VERBOSE=0, OUT_ALL=0))
    assert success
    return result


def _case_dict(name: str) -> dict:
    return load_matpower_dict(cases_dir() / catalogue()[name]["file"])


@pytest.mark.parametrize("name", ["ieee14", "ieee30", "ieee57", "ieee118", "ieee300", "pegase1354"])
def test_named_cases_match_pypower_rundcpf(name):
    case = _case_dict(name)
    ref = _pypower_dc(case)
    result = gp.solve(gp.load_case(name))
    assert bool(result.converged)
    np.testing.assert_allclose(result.va_rad, np.deg2rad(ref["bus"][:, 8]), rtol=0, atol=1e-8)
    np.testing.assert_allclose(result.p_from_mw, ref["branch"][:, 13], rtol=0, atol=1e-6)
    on = ref["gen"][:, 7] > 0
    np.testing.assert_allclose(
        np.asarray(result.gen_p_mw)[on], ref["gen"][on, 1], rtol=0, atol=1e-6
    )


def test_result_fields_are_consistent(ieee118):
    r = gp.solve(ieee118)
    t = ieee118.topology
    # Net injection equals the flows leaving each bus (shunts are inside p_bus).
    out = np.zeros(t.n_bus)
    np.add.at(out, t.branch_from, np.asarray(r.p_from_mw))
    np.add.at(out, t.branch_to, np.asarray(r.p_to_mw))
    np.testing.assert_allclose(r.p_bus_mw, out, atol=1e-8)
    # Balance: generation = load + shunt consumption (DC is lossless).
    load = float(jnp.sum(ieee118.load.p_mw)) + float(jnp.sum(ieee118.shunt.g_mw))
    assert abs(float(jnp.sum(r.gen_p_mw)) - load) < 1e-8
    np.testing.assert_allclose(r.p_to_mw, -np.asarray(r.p_from_mw))
    assert np.all(np.isnan(r.loading_percent))  # case118 ships no ratings
    assert np.all(np.asarray(r.vm_pu) == 1.0)
    tables = r.to_pandas()
    assert list(tables["bus"].bus_id) == list(t.bus_ids)
    np.testing.assert_allclose(tables["branch"].p_from_mw, r.p_from_mw)


def test_loading_uses_rate_a():
    net = gp.load_case("ieee30")  # case30 has ratings
    r = gp.solve(net)
    rate = np.asarray(net.branch.rate_a_mva)
    expected = np.abs(np.asarray(r.p_from_mw)) / rate * 100
    np.testing.assert_allclose(r.loading_percent, expected)
    unrated = net.with_branches(
        rate_a_mva=jnp.where(jnp.arange(net.n_branch) == 3, jnp.nan, net.branch.rate_a_mva)
    )
    r2 = gp.solve(unrated)
    assert np.isnan(np.asarray(r2.loading_percent)[3])
    assert np.isfinite(np.asarray(r2.loading_percent)[4])


# -- batching ---------------------------------------------------------------------------


def test_vmap_over_1000_load_scenarios_matches_single_and_pypower(ieee118):
    key = jax.random.key(0)
    scale = 1.0 + 0.2 * jax.random.uniform(key, (1000, ieee118.n_load), minval=-1, maxval=1)
    loads = ieee118.load.p_mw * scale

    @jax.jit
    def batch(p):
        return jax.vmap(lambda q: gp.solve(ieee118.with_loads(p_mw=q)))(p)

    res = batch(loads)
    assert res.p_from_mw.shape == (1000, ieee118.n_branch)
    assert bool(jnp.all(res.converged))
    case = _case_dict("ieee118")
    t = ieee118.topology
    for i in (0, 517, 999):
        single = gp.solve(ieee118.with_loads(p_mw=loads[i]))
        np.testing.assert_allclose(res.p_from_mw[i], single.p_from_mw, rtol=0, atol=1e-9)
        scen = copy.deepcopy(case)
        scen["bus"][t.load_bus, 2] = np.asarray(loads[i])
        ref = _pypower_dc(scen)
        np.testing.assert_allclose(res.va_rad[i], np.deg2rad(ref["bus"][:, 8]), atol=1e-8)
        np.testing.assert_allclose(res.p_from_mw[i], ref["branch"][:, 13], atol=1e-6)


def test_vmap_over_branch_status_matches_pandapower_outages():
    import pandapower as pp
    import pandapower.networks as pn

    quiet_pandapower()
    net = pn.case14()
    network = gp.from_pandapower(net)
    n_br = network.n_branch
    statuses = 1.0 - jnp.eye(n_br)  # every single-branch outage
    res = jax.jit(jax.vmap(lambda s: gp.solve(network.with_branches(status=s))))(statuses)
    assert bool(jnp.all(res.converged))
    base = copy.deepcopy(net)
    pp.rundcpp(base)
    ours = base._pd2ppc_lookups["bus"][net.bus.index]  # our bus index of each pandapower bus
    n_isolating = 0
    for k in range(n_br):
        out = copy.deepcopy(net)
        for element, (start, end) in base._pd2ppc_lookups["branch"].items():
            if start <= k < end:
                out[element].loc[out[element].index[k - start], "in_service"] = False
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pp.rundcpp(out)
        # pandapower moves isolated buses to the end of its internal case: map by bus.
        theirs = out._pd2ppc_lookups["bus"][net.bus.index]
        ppc = out._ppc
        supplied = ppc["bus"][theirs, 1].real != 4
        n_isolating += int((~supplied).any())
        np.testing.assert_array_equal(np.asarray(res.bus_isolated[k])[ours], ~supplied)
        np.testing.assert_allclose(
            np.asarray(res.va_rad[k])[ours][supplied],
            np.deg2rad(ppc["bus"][theirs, 8].real)[supplied],
            atol=1e-8,
        )
        np.testing.assert_allclose(res.p_from_mw[k], ppc["branch"][:, 13].real, atol=1e-6)
    assert n_isolating == 1  # the outage of the branch feeding bus 8 islands it


def test_bridge_outage_isolates_exactly_the_cut_off_buses(ieee14):
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    t = ieee14.topology
    for k in range(t.n_branch):
        keep = np.arange(t.n_branch) != k
        graph = coo_matrix(
            (np.ones(keep.sum()), (t.branch_from[keep], t.branch_to[keep])), (t.n_bus, t.n_bus)
        )
        _, label = connected_components(graph, directed=False)
        expected = label != label[t.ref_buses[0]]
        res = gp.solve(ieee14.with_branches(status=jnp.asarray(keep, float)))
        assert bool(res.converged)
        np.testing.assert_array_equal(np.asarray(res.bus_isolated), expected)
        assert np.all(np.isnan(np.asarray(res.va_rad)[expected]))
        assert np.all(np.isfinite(np.asarray(res.va_rad)[~expected]))
    # ieee14's bus 8 hangs on branch 7-8 alone (index 13): it is the one bridge.
    res = gp.solve(ieee14.with_branches(status=jnp.ones(t.n_branch).at[13].set(0.0)))
    assert list(t.bus_ids[np.asarray(res.bus_isolated)]) == [8]


def test_island_without_slack_in_a_case_file_is_flagged():
    case = _case_dict("ieee14")
    # Add a two-bus island with a load and no generator.
    bus = np.vstack([case["bus"], case["bus"][-1:], case["bus"][-1:]])
    bus[-2:, 0] = [101, 102]
    bus[-2:, 1] = 1
    line = case["branch"][:1].copy()
    line[0, :2] = [101, 102]
    case = dict(case, bus=bus, branch=np.vstack([case["branch"], line]))
    res = gp.solve(gp.from_ppc(case))
    assert bool(res.converged)
    ids = res.topology.bus_ids
    assert set(ids[np.asarray(res.bus_isolated)]) == {101, 102}
    np.testing.assert_allclose(
        np.asarray(res.va_rad)[:14], np.asarray(gp.solve(gp.load_case("ieee14")).va_rad), atol=1e-12
    )


# -- gradients --------------------------------------------------------------------------


def _ptdf_reference(network: gp.Network) -> np.ndarray:
    from pandapower.pypower.makePTDF import makePTDF

    ppc = gp.to_ppc(network)
    ppc["bus"][:, 0] -= 1  # case118 numbers buses 1..118: make them 0-based
    ppc["branch"][:, :2] -= 1
    slack = int(network.topology.ref_buses[0])
    return makePTDF(ppc["baseMVA"], ppc["bus"], ppc["branch"], slack)


def test_flow_sensitivity_to_injections_equals_makeptdf(ieee118):
    ptdf = _ptdf_reference(ieee118)
    t = ieee118.topology

    def flows_of_loads(p):
        return gp.solve(ieee118.with_loads(p_mw=p)).p_from_mw

    def flows_of_gens(p):
        return gp.solve(ieee118.with_gens(p_mw=p)).p_from_mw

    jac_load = jax.jacobian(flows_of_loads)(ieee118.load.p_mw)
    np.testing.assert_allclose(jac_load, -ptdf[:, t.load_bus], rtol=0, atol=1e-9)
    jac_gen = jax.jit(jax.jacrev(flows_of_gens))(ieee118.gen.p_mw)
    not_slack = np.asarray(ieee118.gen.slack_weight) == 0
    np.testing.assert_allclose(
        np.asarray(jac_gen)[:, not_slack], ptdf[:, t.gen_bus[not_slack]], rtol=0, atol=1e-9
    )
    # The slack unit's setpoint moves no flow: the reference bus absorbs it.
    np.testing.assert_allclose(np.asarray(jac_gen)[:, ~not_slack], 0.0, atol=1e-12)


@pytest.mark.parametrize("solver", ["dense", "klu"])
def test_gradient_wrt_reactance_matches_central_differences(ieee118, solver):
    options = gp.SolveOptions(linear_solver=solver)
    weights = jnp.linspace(-1.0, 1.0, ieee118.n_branch)

    def objective(x):
        r = gp.solve(ieee118.with_branches(x_pu=x), options=options)
        return jnp.sum(weights * r.p_from_mw) + jnp.sum(r.va_rad**2)

    x0 = ieee118.branch.x_pu
    grad = jax.jit(jax.grad(objective))(x0)
    f = jax.jit(objective)
    for k in (0, 7, 50, 120, 185):
        h = 1e-4 * float(x0[k])  # central differences: O(h^2) truncation, small roundoff
        e = jnp.zeros_like(x0).at[k].set(h)
        fd = (f(x0 + e) - f(x0 - e)) / (2 * h)
        assert abs(float(grad[k]) - float(fd)) <= 1e-6 * max(1.0, abs(float(fd))), k


def test_vmap_of_grad_over_branch_status(ieee14):
    def total_abs_flow(status):
        return jnp.sum(gp.solve(ieee14.with_branches(status=status)).p_from_mw ** 2)

    statuses = jnp.ones((4, ieee14.n_branch)).at[1, 2].set(0.5).at[2, 5].set(0.9)
    grads = jax.jit(jax.vmap(jax.grad(total_abs_flow)))(statuses)
    for i in range(4):
        single = jax.grad(total_abs_flow)(statuses[i])
        np.testing.assert_allclose(grads[i], single, rtol=1e-9, atol=1e-9)


# -- compilation, precision, scale --------------------------------------------------------


def test_new_values_do_not_recompile(ieee118):
    gp.solve(ieee118)
    before = _compiled("dc", gp.SolveOptions())._cache_size()
    for scale in (0.9, 1.1, 1.3):
        gp.solve(
            ieee118.with_loads(p_mw=ieee118.load.p_mw * scale).with_branches(
                x_pu=ieee118.branch.x_pu * scale
            )
        )
    assert _compiled("dc", gp.SolveOptions())._cache_size() == before

    traces = []

    @jax.jit
    def flows(net):
        traces.append(1)
        return gp.solve(net).p_from_mw

    flows(ieee118)
    flows(ieee118.with_loads(p_mw=ieee118.load.p_mw * 1.2))
    flows(
        gp.load_case("ieee118").with_gens(p_mw=ieee118.gen.p_mw * 0.9)
    )  # a fresh load, same structure
    assert len(traces) == 1


@pytest.mark.parametrize("name", ["ieee118", "pegase1354"])
def test_dense_and_klu_agree(name):
    net = gp.load_case(name)
    dense = gp.solve(net, options=gp.SolveOptions(linear_solver="dense"))
    klu = gp.solve(net, options=gp.SolveOptions(linear_solver="klu"))
    np.testing.assert_allclose(dense.va_rad, klu.va_rad, rtol=0, atol=1e-10)
    np.testing.assert_allclose(dense.p_from_mw, klu.p_from_mw, rtol=0, atol=1e-8)


def test_klu_call_in_sorted_order_equals_klujax_public_solve():
    """linalg sorts the pattern with numpy and calls klujax's primitive directly (its
    public wrapper sorts a constant in jnp, which XLA folds slowly at every compile):
    bit for bit klujax's own solve_with_symbol, for every shape combination it takes;
    and no sort is left in the compiled program."""
    klujax = pytest.importorskip("klujax")
    rng = np.random.default_rng(0)
    n = 30
    pairs = np.unique(
        np.concatenate([np.stack([np.arange(n)] * 2, 1), rng.integers(0, n, (80, 2))]),
        axis=0,
    )
    pairs = pairs[rng.permutation(len(pairs))]  # entries out of order, as patterns may be
    rows, cols = pairs[:, 0].astype(np.int32), pairs[:, 1].astype(np.int32)
    symbolic = linalg._klu_symbolic(n, rows, cols)
    shapes = [((), (n,)), ((), (n, 3)), ((), (5, n, 3)), ((5,), (n,)), ((5,), (5, n))]
    shapes += [((5,), (5, n, 2)), ((1,), (4, n))]
    for lead, rhs_shape in shapes:
        values = np.where(rows == cols, 20.0, rng.normal(size=(*lead, len(rows))))
        values, rhs = jnp.asarray(values), jnp.asarray(rng.normal(size=rhs_shape))
        ref = klujax.solve_with_symbol(jnp.asarray(rows), jnp.asarray(cols), values, rhs, symbolic)
        ours = jax.jit(lambda v, b: linalg._klu_numeric(rows, cols, v, b, n))
        got = ours(values, rhs)
        assert got.shape == ref.shape and bool(jnp.array_equal(got, ref)), (lead, rhs_shape)
    assert "stablehlo.sort" not in ours.lower(values, rhs).as_text()


def test_pegase9241_uses_sparse_path_without_dense_matrices():
    net = gp.load_case("pegase9241")
    n = net.n_bus - len(net.topology.ref_buses)
    assert linalg.plan(n, "single", None) == "klu"
    hlo = _compiled("dc", gp.SolveOptions()).lower(net).compile().as_text()
    shapes = re.findall(r"f64\[(\d+),(\d+)\]", hlo)
    assert not [s for s in shapes if int(s[0]) > 1000 and int(s[1]) > 1000]
    res = gp.solve(net)
    assert bool(res.converged)
    ref = _pypower_dc(_case_dict("pegase9241"))
    np.testing.assert_allclose(res.p_from_mw, ref["branch"][:, 13], atol=1e-6)


@pytest.mark.parametrize("name", ["ieee14", "ieee118", "ieee300"])
def test_float32_tolerance(name):
    """float32: angles within 2e-5 rad and flows within 2e-5 x the largest flow of float64."""
    net = gp.load_case(name)
    r64 = gp.solve(net)
    r32 = gp.solve(net.astype(jnp.float32))
    assert r32.va_rad.dtype == jnp.float32 and r32.p_from_mw.dtype == jnp.float32
    assert bool(r32.converged)
    scale = float(jnp.max(jnp.abs(r64.p_from_mw)))
    assert float(jnp.max(jnp.abs(r32.va_rad - r64.va_rad))) <= 2e-5
    assert float(jnp.max(jnp.abs(r32.p_from_mw - r64.p_from_mw))) <= 2e-5 * scale


def test_fresh_interpreter_gets_float64_and_opt_out_is_actionable(tmp_path):
    import subprocess
    import sys

    code = "import gridphysics as gp; r = gp.solve(gp.load_case('ieee14')); print(r.va_rad.dtype)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "float64"
    env = {**__import__("os").environ, "GRIDPHYSICS_ENABLE_X64": "0"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert out.returncode != 0
    assert "PrecisionError" in out.stderr and "jax_enable_x64" in out.stderr


# -- bad input -----------------------------------------------------------------------------


def test_bad_method_and_options_are_refused_clearly(ieee14):
    with pytest.raises(gp.UnsupportedError, match="algorithm must be"):
        gp.solve(ieee14, "ac", options=gp.SolveOptions(algorithm="gs"))
    with pytest.raises(gp.UnsupportedError, match="max_iterations"):
        gp.solve(ieee14, "ac", options=gp.SolveOptions(max_iterations=0))
    with pytest.raises(gp.UnsupportedError, match="'dc' or 'ac'"):
        gp.solve(ieee14, "acdc")
    with pytest.raises(TypeError, match="Network"):
        gp.solve({"bus": []})


def test_nan_injection_raises_naming_the_load_and_is_nan_under_jit(ieee14):
    p_mw = ieee14.load.p_mw.at[3].set(jnp.nan)
    bus = ieee14.topology.bus_ids[ieee14.topology.load_bus[3]]
    with pytest.raises(gp.InvalidValueError, match=rf"load 3 at bus {bus}.*p_mw"):
        ieee14.with_loads(p_mw=p_mw)  # refused where it is set
    bad = ieee14.replace(load=ieee14.load.replace(p_mw=p_mw))  # built around the check
    with pytest.raises(gp.InvalidValueError, match=rf"load 3 at bus {bus}.*p_mw"):
        gp.solve(bad)
    res = jax.jit(gp.solve)(bad)
    assert not bool(res.converged)
    assert bool(jnp.all(jnp.isnan(res.p_from_mw))) and bool(jnp.all(jnp.isnan(res.va_rad)))
    with pytest.raises(gp.InvalidValueError, match="generator 1"):
        ieee14.with_gens(p_mw=ieee14.gen.p_mw.at[1].set(jnp.inf))


def test_batched_bad_scenario_does_not_spoil_the_others(ieee14):
    loads = jnp.stack(
        [ieee14.load.p_mw, ieee14.load.p_mw.at[0].set(jnp.nan), ieee14.load.p_mw * 1.1]
    )
    res = jax.vmap(lambda p: gp.solve(ieee14.with_loads(p_mw=p)))(loads)
    assert np.asarray(res.converged).tolist() == [True, False, True]
    np.testing.assert_allclose(res.p_from_mw[0], gp.solve(ieee14).p_from_mw, atol=1e-12)


def test_zero_reactance_branch_raises(ieee14):
    bad = ieee14.with_branches(x_pu=ieee14.branch.x_pu.at[4].set(0.0))
    with pytest.raises(gp.ZeroImpedanceError, match="branch 4"):
        gp.solve(bad)
    # Out of service, a zero reactance is harmless.
    ok = bad.with_branches(status=jnp.ones(ieee14.n_branch).at[4].set(0.0))
    assert bool(gp.solve(ok).converged)
