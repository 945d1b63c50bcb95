"""AC power flow: PYPOWER and pandapower references, algorithms, limits, batching, gradients."""

from __future__ import annotations

import copy
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gridphysics as gp
from gridphysics.cases import cases_dir, catalogue
from gridphysics.matpower import load_matpower_dict
from tests.gridphysics.test_ac_pandapower import compare, run_runpp

NR = gp.SolveOptions()


def _pypower_ac(case: dict) -> dict:
    from pypower.api import ppoption, runpf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result, success = runpf(copy.deepcopy(case), ppoption(VERBOSE=0, OUT_ALL=0, PF_TOL=1e-8))
    assert success
    return result


@pytest.mark.parametrize("name", ["ieee14", "ieee30", "ieee57", "ieee118", "ieee300", "pegase1354"])
def test_named_cases_match_pypower_runpf(name):
    case = load_matpower_dict(cases_dir() / catalogue()[name]["file"])
    ref = _pypower_ac(case)
    r = gp.solve(gp.load_case(name), "ac")
    assert bool(r.converged)
    # Like runpf, the default starts from the voltages stored in the file when it has
    # an angle profile (ieee30's file is flat: DC then)
    stored = np.any(case["bus"][case["bus"][:, 1] != 3, 8] != 0)
    assert gp.AC_STARTS[int(r.start)] == ("case" if stored else "dc")
    np.testing.assert_allclose(r.vm_pu, ref["bus"][:, 7], atol=1e-6)
    np.testing.assert_allclose(np.rad2deg(np.asarray(r.va_rad)), ref["bus"][:, 8], atol=1e-5)
    for field, col in (("p_from_mw", 13), ("q_from_mvar", 14), ("p_to_mw", 15), ("q_to_mvar", 16)):
        np.testing.assert_allclose(
            getattr(r, field), ref["branch"][:, col], atol=1e-4, err_msg=field
        )
    on = ref["gen"][:, 7] > 0
    np.testing.assert_allclose(np.asarray(r.gen_p_mw)[on], ref["gen"][on, 1], atol=1e-4)
    np.testing.assert_allclose(np.asarray(r.gen_q_mvar)[on], ref["gen"][on, 2], atol=1e-4)
    # Losses are what the branches absorb; the balance closes.
    shunt_p = float(
        jnp.sum(
            gp.load_case(name).shunt.g_mw
            * jnp.asarray(r.vm_pu)[gp.load_case(name).topology.shunt_bus] ** 2
        )
    )
    balance = float(jnp.sum(r.gen_p_mw)) - float(jnp.sum(gp.load_case(name).load.p_mw)) - shunt_p
    assert abs(balance - float(r.total_loss_mw)) < 1e-6


@pytest.mark.parametrize("algorithm", ["fdxb", "fdbx"])
def test_fast_decoupled_agrees_with_newton(ieee118, algorithm):
    nr = gp.solve(ieee118, "ac")
    fd = gp.solve(ieee118, "ac", options=gp.SolveOptions(algorithm=algorithm))
    assert bool(fd.converged) and int(fd.iterations) > int(nr.iterations)
    np.testing.assert_allclose(fd.vm_pu, nr.vm_pu, atol=1e-7)
    np.testing.assert_allclose(fd.p_from_mw, nr.p_from_mw, atol=1e-4)


def test_starts_flat_dc_and_warm(ieee118):
    ref = gp.solve(ieee118, "ac")
    flat = gp.solve(ieee118, "ac", options=gp.SolveOptions(init="flat"))
    assert gp.AC_STARTS[int(flat.start)] == "flat"
    np.testing.assert_allclose(flat.vm_pu, ref.vm_pu, atol=1e-8)
    warm_net = ieee118.with_voltages(vm_pu=ref.vm_pu, va_rad=ref.va_rad)
    warm = gp.solve(warm_net, "ac", options=gp.SolveOptions(init="case"))
    assert int(warm.iterations) <= 1 < int(ref.iterations)
    np.testing.assert_allclose(warm.vm_pu, ref.vm_pu, atol=1e-9)


def _pypower_case_with_voltages(name: str, vm: np.ndarray, va_rad: np.ndarray) -> dict:
    case = copy.deepcopy(load_matpower_dict(cases_dir() / catalogue()[name]["file"]))
    case["bus"][:, 7] = vm
    case["bus"][:, 8] = np.rad2deg(va_rad)
    return case


def test_a_start_that_fails_gives_way_to_the_next_one(ieee14):
    """A case file whose stored voltages are far off (magnitudes of 0.5 p.u., angles
    anywhere): PYPOWER's runpf, which starts there, fails; the default start tries them,
    then DC, and converges to the case's own solution."""
    rng = np.random.default_rng(0)
    vm = np.full(ieee14.n_bus, 0.5)
    va = rng.uniform(-np.pi, np.pi, ieee14.n_bus)
    from pypower.api import ppoption, runpf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, success = runpf(
            _pypower_case_with_voltages("ieee14", vm, va), ppoption(VERBOSE=0, OUT_ALL=0)
        )
    assert not success
    bad = ieee14.with_voltages(vm_pu=vm, va_rad=va)
    with pytest.warns(gp.ConvergenceWarning, match=r"any start tried \(case\)"):
        only = gp.solve(bad, "ac", options=gp.SolveOptions(init="case", fallback=False))
    assert not bool(only.converged) and int(only.start) == -1
    assert int(only.iterations) == 10

    r = gp.solve(bad, "ac")
    assert bool(r.converged) and gp.AC_STARTS[int(r.start)] == "dc"
    dc_start = gp.solve(ieee14, "ac", options=gp.SolveOptions(init="dc", fallback=False))
    # 10 iterations from the case's voltages, then DC's own
    assert int(r.iterations) == 10 + int(dc_start.iterations)
    np.testing.assert_allclose(
        r.vm_pu,
        _pypower_ac(load_matpower_dict(cases_dir() / catalogue()["ieee14"]["file"]))["bus"][:, 7],
        atol=1e-6,
    )
    # fast-decoupled falls back the same way
    fd = gp.solve(bad, "ac", options=gp.SolveOptions(algorithm="fdxb"))
    assert bool(fd.converged) and gp.AC_STARTS[int(fd.start)] == "dc"
    np.testing.assert_allclose(fd.vm_pu, r.vm_pu, atol=1e-6)


def test_batched_solves_move_on_only_where_the_start_failed(ieee14):
    """Rows with a good profile converge from it, untouched by the rows whose profile
    fails (those converge from DC); each row equals its own unbatched solve."""
    rng = np.random.default_rng(1)
    good = gp.solve(ieee14, "ac")
    bad_va = rng.uniform(-np.pi, np.pi, (2, ieee14.n_bus))
    vms = jnp.stack([good.vm_pu, jnp.full(ieee14.n_bus, 0.5), good.vm_pu, jnp.full(14, 0.5)])
    vas = jnp.stack([good.va_rad, bad_va[0], good.va_rad * 0.9, bad_va[1]])

    def one(vm, va):
        return gp.solve(ieee14.with_voltages(vm_pu=vm, va_rad=va), "ac")

    batch = jax.jit(jax.vmap(one))(vms, vas)
    assert [gp.AC_STARTS[i] for i in np.asarray(batch.start)] == ["case", "dc", "case", "dc"]
    for i in range(4):
        single = one(vms[i], vas[i])
        assert int(batch.iterations[i]) == int(single.iterations)
        np.testing.assert_allclose(batch.vm_pu[i], single.vm_pu, atol=1e-12)
    assert int(batch.iterations[0]) <= 1


def test_without_a_stored_angle_profile_the_default_starts_from_dc():
    """pandapower's internal case keeps magnitudes but flat angles: the default start
    is then DC (a flat-angle profile is no solved state), as pandapower's own."""
    import pandapower.networks as pn

    net = gp.from_pandapower(pn.case14())
    assert not np.any(np.asarray(net.bus.va_rad)[np.asarray(net.topology.bus_type) != 3])
    r = gp.solve(net, "ac")
    assert bool(r.converged) and gp.AC_STARTS[int(r.start)] == "dc"
    only = gp.solve(net, "ac", options=gp.SolveOptions(fallback=False))
    assert gp.AC_STARTS[int(only.start)] == "dc" and int(only.iterations) == int(r.iterations)


def test_bad_start_options_are_refused(ieee14):
    with pytest.raises(gp.UnsupportedError, match="init must be 'auto'"):
        gp.solve(ieee14, "ac", options=gp.SolveOptions(init="warm"))
    with pytest.raises(gp.UnsupportedError, match="fallback must be True or False"):
        gp.solve(ieee14, "ac", options=gp.SolveOptions(fallback="yes"))


@pytest.mark.parametrize("name", ["case14", "case57", "case118", "case39", "case24_ieee_rts"])
def test_enforce_q_lims_matches_pandapower(name):
    import pandapower.networks as pn

    net = getattr(pn, name)()
    ref = run_runpp(net, enforce_q_lims=True)
    r = gp.solve(gp.from_pandapower(net), "ac", options=gp.SolveOptions(enforce_q_lims=True))
    compare(r, ref)
    # Every unit that is not a slack ends within its limits.
    g = gp.from_pandapower(net).gen
    free = np.asarray((g.status > 0) & (g.slack_weight == 0))
    q = np.asarray(r.gen_q_mvar)
    assert np.all(q[free] <= np.asarray(g.q_max_mvar)[free] + 1e-6)
    assert np.all(q[free] >= np.asarray(g.q_min_mvar)[free] - 1e-6)


def test_q_limits_bind_on_ieee118(ieee118):
    free = gp.solve(ieee118, "ac")
    held = gp.solve(ieee118, "ac", options=gp.SolveOptions(enforce_q_lims=True))
    g = ieee118.gen
    over = np.asarray(
        (free.gen_q_mvar > g.q_max_mvar + 1e-6) | (free.gen_q_mvar < g.q_min_mvar - 1e-6)
    )
    assert over.any()  # the case does violate limits, so the option is exercised
    assert not np.allclose(held.vm_pu, free.vm_pu)


# -- failure ---------------------------------------------------------------------------


def test_unsolvable_load_reports_not_converged_single_and_batched(ieee14):
    import pandapower as pp
    import pandapower.networks as pn

    heavy = ieee14.with_loads(p_mw=ieee14.load.p_mw * 6, q_mvar=ieee14.load.q_mvar * 6)
    # The reference agrees there is no solution: pandapower fails even with 100 iterations.
    net = pn.case14()
    net.load[["p_mw", "q_mvar"]] *= 6
    with pytest.raises(pp.LoadflowNotConverged), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pp.runpp(net, max_iteration=100)

    with pytest.warns(gp.ConvergenceWarning, match="did not converge.*mismatch"):
        r = gp.solve(heavy, "ac")
    assert not bool(r.converged)
    assert bool(jnp.all(jnp.isnan(r.vm_pu))) and bool(jnp.all(jnp.isnan(r.p_from_mw)))

    scales = jnp.array([1.0, 6.0, 1.2, 8.0])
    batch = jax.jit(
        jax.vmap(
            lambda k: gp.solve(
                ieee14.with_loads(p_mw=ieee14.load.p_mw * k, q_mvar=ieee14.load.q_mvar * k), "ac"
            )
        )
    )(scales)
    assert np.asarray(batch.converged).tolist() == [True, False, True, False]
    single = gp.solve(
        ieee14.with_loads(p_mw=ieee14.load.p_mw * 1.2, q_mvar=ieee14.load.q_mvar * 1.2), "ac"
    )
    np.testing.assert_allclose(batch.vm_pu[2], single.vm_pu, atol=1e-12)
    assert bool(jnp.all(jnp.isnan(batch.vm_pu[1])))
    # The diverging rows stop at the iteration cap; the good ones stop when converged.
    assert np.asarray(batch.iterations).tolist()[0] == int(gp.solve(ieee14, "ac").iterations)


def test_islanding_outage_in_ac_matches_pandapower():
    import pandapower as pp
    import pandapower.networks as pn

    net = pn.case14()
    network = gp.from_pandapower(net)
    base = copy.deepcopy(net)
    pp.runpp(base)
    start, _ = base._pd2ppc_lookups["branch"]["trafo"]
    # Which branch feeds bus 8 (index 7) alone? The transformer 7-8 in pandapower's case14.
    k = next(
        i
        for i in range(network.n_branch)
        if 7 in (network.topology.branch_from[i], network.topology.branch_to[i])
    )
    r = gp.solve(network.with_branches(status=jnp.ones(network.n_branch).at[k].set(0.0)), "ac")
    out = copy.deepcopy(net)
    out.trafo.loc[out.trafo.index[k - start], "in_service"] = False
    pp.runpp(out)
    ours = base._pd2ppc_lookups["bus"][net.bus.index]
    theirs = out._pd2ppc_lookups["bus"][net.bus.index]
    supplied = out._ppc["bus"][theirs, 1].real != 4
    np.testing.assert_array_equal(np.asarray(r.bus_isolated)[ours], ~supplied)
    np.testing.assert_allclose(
        np.asarray(r.vm_pu)[ours][supplied], out._ppc["bus"][theirs, 7].real[supplied], atol=1e-6
    )
    np.testing.assert_allclose(r.q_from_mvar, out._ppc["branch"][:, 14].real, atol=1e-4)


# -- gradients ---------------------------------------------------------------------------


def _objective(field_weights):
    def f(result):
        return sum(
            jnp.sum(w * jnp.nan_to_num(getattr(result, name))) for name, w in field_weights.items()
        )

    return f


FAMILIES = {
    "load p": (lambda net, v: net.with_loads(p_mw=v), lambda net: net.load.p_mw, [0, 5, 40]),
    "load q": (lambda net, v: net.with_loads(q_mvar=v), lambda net: net.load.q_mvar, [1, 7, 30]),
    "gen p": (lambda net, v: net.with_gens(p_mw=v), lambda net: net.gen.p_mw, [1, 10, 40]),
    "gen vm": (lambda net, v: net.with_gens(vm_pu=v), lambda net: net.gen.vm_pu, [0, 4, 29]),
    "branch r": (
        lambda net, v: net.with_branches(r_pu=v),
        lambda net: net.branch.r_pu,
        [0, 50, 120],
    ),
    "branch x": (
        lambda net, v: net.with_branches(x_pu=v),
        lambda net: net.branch.x_pu,
        [3, 60, 180],
    ),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_gradients_match_central_differences(ieee118, family):
    setter, getter, indices = FAMILIES[family]
    rng = np.random.default_rng(1)
    weights = {
        "vm_pu": jnp.asarray(rng.standard_normal(ieee118.n_bus)),
        "va_rad": jnp.asarray(rng.standard_normal(ieee118.n_bus)),
        "p_from_mw": jnp.asarray(rng.standard_normal(ieee118.n_branch)) * 1e-2,
        "q_to_mvar": jnp.asarray(rng.standard_normal(ieee118.n_branch)) * 1e-2,
        "gen_q_mvar": jnp.asarray(rng.standard_normal(ieee118.n_gen)) * 1e-2,
    }
    objective = _objective(weights)

    # Solve tightly so that finite differences are not swamped by the solver tolerance.
    tight = gp.SolveOptions(tolerance=1e-12, max_iterations=20)

    def f(values):
        return objective(gp.solve(setter(ieee118, values), "ac", options=tight))

    v0 = getter(ieee118)
    grad = jax.jit(jax.grad(f))(v0)
    f_jit = jax.jit(f)
    typical = float(jnp.mean(jnp.abs(v0)))
    for k in indices:
        h = 1e-4 * max(abs(float(v0[k])), typical)
        e = jnp.zeros_like(v0).at[k].set(h)
        fd = float((f_jit(v0 + e) - f_jit(v0 - e)) / (2 * h))
        assert abs(float(grad[k]) - fd) <= 1e-5 * max(
            abs(fd), 1e-3 * float(jnp.max(jnp.abs(grad)))
        ), (
            family,
            k,
            float(grad[k]),
            fd,
        )


def test_jit_vmap_grad_compose_and_failed_rows_have_zero_gradient(ieee14):
    def loss(scale):
        net = ieee14.with_loads(p_mw=ieee14.load.p_mw * scale, q_mvar=ieee14.load.q_mvar * scale)
        r = gp.solve(net, "ac")
        return jnp.nansum(r.vm_pu) + jnp.where(r.converged, 0.0, 0.0)

    scales = jnp.array([1.0, 1.3, 6.0])
    grads = jax.jit(jax.vmap(jax.grad(loss)))(scales)
    for i in (0, 1):
        np.testing.assert_allclose(grads[i], jax.grad(loss)(scales[i]), rtol=1e-9)
    assert float(grads[2]) == 0.0
    assert float(grads[0]) < 0  # more load, lower voltages


def test_float32_solves_with_its_own_tolerance(ieee118):
    r64 = gp.solve(ieee118, "ac")
    r32 = gp.solve(ieee118.astype(jnp.float32), "ac")
    assert bool(r32.converged) and r32.vm_pu.dtype == jnp.float32
    assert float(jnp.max(jnp.abs(r32.vm_pu - r64.vm_pu))) < 1e-5
