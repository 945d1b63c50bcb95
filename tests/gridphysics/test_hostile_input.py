"""Hostile input to gridphysics (issue 14, second round): each class of input that an
independent hostile test found crashing, hanging or silently accepted gets a typed error,
an explicit ``converged=False`` / ``exact=False``, or, for valid but odd input, the
answer PYPOWER gives."""

from __future__ import annotations

import copy
import os
import warnings
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gridphysics as gp
from gridphysics.cases import cases_dir
from gridphysics.matpower import load_matpower_dict

BUS_VM, BUS_VMAX, BUS_VMIN = 7, 11, 12
GEN_QMAX, GEN_PMAX, GEN_PMIN, GEN_RAMP = 3, 8, 9, 16
BR_RATE_A, BR_STATUS = 5, 10


@pytest.fixture(scope="module")
def case14():
    return load_matpower_dict(cases_dir() / "matpower/case14.m")


def test_a_one_bus_case_solves_as_pypower_does(case14):
    """A single bus with its unit and a load, no branches: was an IndexError (DC) and a
    zero-size reduction (the empty reduced system)."""
    from pypower.api import ppoption, rundcpf, runpf

    bus = case14["bus"][:1].copy()
    bus[0, 2], bus[0, 3] = 50.0, 12.0
    case = {"baseMVA": 100.0, "bus": bus, "gen": case14["gen"][:1], "branch": np.zeros((0, 13))}
    net = gp.from_ppc(case)
    opt = ppoption(VERBOSE=0, OUT_ALL=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref_dc, ok_dc = rundcpf(copy.deepcopy(case), opt)
        ref_ac, ok_ac = runpf(copy.deepcopy(case), opt)
    assert ok_dc and ok_ac
    dc, ac = gp.solve(net), gp.solve(net, "ac")
    assert bool(dc.converged) and bool(ac.converged)
    np.testing.assert_allclose(dc.gen_p_mw, ref_dc["gen"][:, 1], atol=1e-9)
    np.testing.assert_allclose(ac.gen_p_mw, ref_ac["gen"][:, 1], atol=1e-8)
    np.testing.assert_allclose(ac.gen_q_mvar, ref_ac["gen"][:, 2], atol=1e-8)


@pytest.mark.parametrize(
    ("table", "col", "value", "match"),
    [
        ("bus", BUS_VM, np.nan, "VM = nan"),
        ("bus", BUS_VMAX, -np.inf, "VMAX = -inf"),
        ("bus", BUS_VMIN, np.nan, "VMIN = nan"),
        ("gen", GEN_QMAX, np.nan, "QMAX = nan"),
        ("gen", GEN_PMAX, np.nan, "PMAX = nan"),  # crashed gridrl.make
        ("gen", GEN_PMIN, np.inf, "PMIN = inf"),
        ("gen", GEN_RAMP, np.nan, "RAMP_AGC = nan"),
        ("gen", GEN_RAMP, np.inf, "RAMP_AGC = inf"),
        ("branch", BR_RATE_A, -np.inf, "RATE_A = -inf"),
        ("branch", BR_RATE_A, -5.0, "RATE_A = -5"),
        ("branch", BR_STATUS, 0.5, "BR_STATUS = 0.5"),  # was read as in service
        ("branch", BR_STATUS, -1.0, "BR_STATUS = -1"),
    ],
)
def test_from_ppc_refuses_limits_ratings_and_statuses_no_solve_can_use(
    case14, table, col, value, match
):
    case = copy.deepcopy(case14)
    if case[table].shape[1] <= col:
        pad = np.zeros((case[table].shape[0], col + 1 - case[table].shape[1]))
        case[table] = np.hstack([case[table], pad])
    case[table][1, col] = value
    with pytest.raises(gp.CaseFormatError, match=rf"{table} row 2 has {match}"):
        gp.from_ppc(case)


def test_from_ppc_keeps_an_unlimited_pmax_and_refuses_short_gencost_and_complex_values(case14):
    case = copy.deepcopy(case14)
    case["gen"][1, GEN_PMAX] = np.inf  # an upper limit may be unlimited
    assert float(gp.from_ppc(case).gen.p_max_mw[1]) == np.inf
    short = copy.deepcopy(case14)
    short["gencost"] = short["gencost"][0]  # one row for five units: costs were all 0
    with pytest.raises(gp.CaseFormatError, match="gencost has 1 rows for 5 generators"):
        gp.from_ppc(short)
    cplx = copy.deepcopy(case14)
    cplx["bus"] = cplx["bus"] + 1j  # the imaginary part was dropped
    with pytest.raises(gp.CaseFormatError, match="complex"):
        gp.from_ppc(cplx)
    cplx = dict(case14, baseMVA=100 + 5j)
    with pytest.raises(gp.CaseFormatError, match="baseMVA"):
        gp.from_ppc(cplx)


def test_statuses_outside_0_1_are_not_converged_under_vmap(ieee14):
    """Traced statuses reach no concrete check: 2 and -1 converged before (DC and AC)."""
    statuses = jnp.stack([2 * jnp.ones(20), -jnp.ones(20), jnp.ones(20)])
    for method in ("dc", "ac"):
        ok = jax.vmap(lambda s, m=method: gp.solve(ieee14.with_branches(status=s), m).converged)(
            statuses
        )
        assert np.asarray(ok).tolist() == [False, False, True], method
    engine = gp.OutageFlows.build(ieee14, max_outages=4)
    injection = jnp.zeros(ieee14.n_bus)
    for value in (jnp.nan, 0.5, 2.0):  # the engine switches; a derating is no state of it
        status = jnp.ones(ieee14.n_branch).at[3].set(value)
        assert not bool(engine.flows(injection, status).exact), value
    assert bool(engine.flows(injection, jnp.ones(ieee14.n_branch).at[3].set(0.0)).exact)
    with pytest.raises(gp.NetworkError, match="status must have shape"):
        engine.flows(injection, jnp.ones(ieee14.n_branch + 3))
    with pytest.raises(gp.NetworkError, match="injection_mw must have shape"):
        engine.flows(jnp.zeros(ieee14.n_bus + 1), jnp.ones(ieee14.n_branch))


def test_a_negative_rating_is_refused_and_never_a_negative_loading(ieee14):
    with pytest.raises(gp.InvalidValueError, match="rate_a_mva = -5"):
        ieee14.with_branches(rate_a_mva=-5.0)
    loading = jax.jit(lambda r: gp.solve(ieee14.with_branches(rate_a_mva=r)).loading_percent)(
        jnp.full(ieee14.n_branch, -5.0)
    )
    assert np.isnan(np.asarray(loading)).all()  # was -2957 %


@pytest.mark.parametrize("method", ["dc", "ac"])
def test_a_zero_rating_means_unlimited_as_in_matpower(ieee14, method):
    # MATPOWER: RATE_A = 0 is "unlimited"; it gave loading = inf with converged=True
    rate = jnp.full(ieee14.n_branch, 100.0).at[2].set(0.0)
    res = gp.solve(ieee14.with_branches(rate_a_mva=rate), method)
    loading = np.asarray(res.loading_percent)
    assert bool(res.converged) and np.isnan(loading[2])
    flow = np.abs(np.asarray(res.p_from_mw))
    if method == "dc":  # the others are |P| / 100 MVA (by hand)
        np.testing.assert_allclose(np.delete(loading, 2), np.delete(flow, 2), rtol=1e-12)


@pytest.mark.parametrize(
    "call",
    [
        lambda n: gp.ptdf(n, branches=[1.5]),  # was row 1
        lambda n: gp.ptdf(n, branches=[True]),  # was row 1
        lambda n: gp.ptdf(n, slack=2.7),  # was bus 2
        lambda n: gp.ptdf(n, branches=["a"]),
        lambda n: gp.lodf(n, outages=[2.5]),
        lambda n: gp.contingencies(n, [1.5]),
        lambda n: gp.contingencies(n, "abc"),
        lambda n: gp.contingencies(n, [None]),
        lambda n: gp.contingencies(n, [0], limit_percent=float("nan")),
        lambda n: gp.contingencies(n, [0], limit_percent=-5),
        lambda n: gp.OutageFlows.build(n, max_outages=2.5),
        lambda n: gp.OutageFlows.build(n, max_outages=True),
    ],
)
def test_fractional_boolean_and_non_numeric_indices_are_refused(ieee14, call):
    with pytest.raises(gp.NetworkError):
        call(ieee14)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        (gp.SolveOptions(tolerance=float("inf")), "tolerance"),  # "converged" at the start
        (gp.SolveOptions(tolerance=1e300), "tolerance"),
        (gp.SolveOptions(tolerance="1e-8"), "tolerance"),
        (gp.SolveOptions(max_iterations="5"), "max_iterations"),
        (gp.SolveOptions(max_iterations=2.5), "max_iterations"),
        (gp.SolveOptions(max_iterations=10**7), "max_iterations"),
        (gp.SolveOptions(enforce_q_lims="yes"), "enforce_q_lims"),
        # below rounding: 8.4e-15 p.u. was left and the warning blamed the load (rerun 8)
        (gp.SolveOptions(tolerance=1e-300), "below what float64 arithmetic resolves"),
        (gp.SolveOptions(tolerance=1e-15), "below what float64 arithmetic resolves"),
    ],
)
def test_solve_options_out_of_range_are_refused(ieee14, options, match):
    with pytest.raises(gp.UnsupportedError, match=match):
        gp.solve(ieee14, "ac", options=options)


def test_a_tolerance_float32_cannot_resolve_is_refused_a_reachable_one_converges(ieee14):
    with pytest.raises(gp.UnsupportedError, match=r"float32 arithmetic resolves .*6e-06"):
        gp.solve(ieee14.astype(jnp.float32), "ac", options=gp.SolveOptions(tolerance=1e-9))
    res = gp.solve(ieee14, "ac", options=gp.SolveOptions(tolerance=2e-14))
    assert bool(res.converged) and float(res.max_mismatch_pu) < 2e-14


def test_arguments_of_the_wrong_kind_raise_typed_errors(ieee14, tmp_path):
    fifo = tmp_path / "pipe.m"
    os.mkfifo(fifo)
    case14 = gp.to_ppc(ieee14)
    c64 = jnp.ones(ieee14.n_load, jnp.complex64)
    engine, on = gp.OutageFlows.build(ieee14, max_outages=2), jnp.ones(ieee14.n_branch)
    cases = [
        (lambda: gp.load_matpower(tmp_path), gp.CaseFileError),  # a directory
        (lambda: gp.load_matpower(tmp_path / "missing.m"), gp.CaseFileError),
        # not a regular file: /dev/zero was read until memory ran out, a FIFO blocked in
        # open() for ever (hostile rerun)
        (lambda: gp.load_matpower("/dev/zero"), gp.CaseFileError),
        (lambda: gp.load_matpower(fifo), gp.CaseFileError),
        (lambda: gp.load_case(fifo), gp.CaseFileError),
        (lambda: gp.load_matpower("case\x00.m"), gp.CaseFileError),  # was a ValueError
        (lambda: gp.load_case("x" * 100_000), gp.UnknownCaseError),  # was an OSError
        (lambda: gp.from_ppc({**case14, "baseMVA": 10**400}), gp.CaseFormatError),
        (lambda: gp.from_ppc({**case14, "baseMVA": "100"}), gp.CaseFormatError),
        (lambda: gp.from_ppc({**case14, "baseMVA": True}), gp.CaseFormatError),
        (lambda: gp.contingencies(ieee14, limit_percent=10**400), gp.NetworkError),  # TypeError
        (lambda: gp.contingencies(ieee14, scenarios=5), gp.InputTypeError),  # AttributeError
        (lambda: gp.OutageFlows.build(ieee14, dtype="foo"), gp.NetworkError),  # TypeError
        (lambda: gp.OutageFlows.build(ieee14, dtype="int8"), gp.NetworkError),  # zero flows
        (lambda: gp.load_matpower(None), gp.InputTypeError),
        (lambda: gp.load_case(None), gp.InputTypeError),
        (lambda: gp.matpower.parse_matpower(b"function mpc = c"), gp.InputTypeError),
        (lambda: gp.solve(None), gp.InputTypeError),
        (lambda: gp.solve(ieee14, options={"tolerance": 1}), gp.InputTypeError),
        (lambda: gp.bridges(None), gp.InputTypeError),
        (lambda: ieee14.with_loads(p_mw="abc"), gp.InvalidValueError),
        (lambda: ieee14.with_loads(p_mw={}), gp.InvalidValueError),
        (lambda: ieee14.with_loads(p_mw=10**400), gp.InvalidValueError),
        (lambda: ieee14.with_loads(p_mw=ieee14.load.p_mw + 1j), gp.InvalidValueError),
        (lambda: ieee14.astype("float16"), gp.InvalidValueError),
        (lambda: ieee14.astype("nonsense"), gp.InvalidValueError),
        (lambda: ieee14.with_branches(foo=1), gp.InputTypeError),  # names no field
        (lambda: ieee14.with_loads(pmw=1), gp.InputTypeError),
        (lambda: ieee14.with_gens(p=1), gp.InputTypeError),
        (lambda: ieee14.with_voltages(vm=1), gp.InputTypeError),
        # hostile rerun 3: complex under jit was cast to real (a dtype is static)
        (lambda: jax.jit(lambda v: gp.solve(ieee14.with_loads(p_mw=v)))(c64), gp.InvalidValueError),
        (lambda: engine.flows(jnp.zeros(ieee14.n_bus) + 1j, on), gp.NetworkError),
        (lambda: gp.ptdf(ieee14, slack=np.full(ieee14.n_bus, 1e308)), gp.NetworkError),  # sum inf
        (lambda: gp.ptdf(ieee14, slack=["a"] * ieee14.n_bus), gp.NetworkError),  # TypeError
        (
            lambda: gp.solve(ieee14, "ac", options=gp.SolveOptions(tolerance=Fraction(1, 10**6))),
            gp.UnsupportedError,
        ),  # TypeError inside the traced solve
        (
            lambda: gp.contingencies(ieee14, scenarios=gp.Scenarios(load_p_mw=np.ones((0, 11)))),
            gp.NetworkError,
        ),  # IndexError
    ]
    for call, error in cases:
        with pytest.raises(error) as info:
            call()
        assert isinstance(info.value, gp.GridPhysicsError)


@pytest.mark.parametrize("angle", [1e14, 1e17])
def test_dc_flows_do_not_depend_on_the_reference_angle(case14, angle):
    """A common angle shifts no flow (by hand); flows from absolute angles were off by
    1.4 MW at 1e14 rad and 1,415 MW at 1e17 rad with converged=True (hostile rerun 3)."""
    ref = gp.solve(gp.from_ppc(case14))
    shifted = {**case14, "bus": case14["bus"].copy()}
    shifted["bus"][:, 8] += angle  # every bus, so the case's own start differs too
    res = gp.solve(gp.from_ppc(shifted))
    assert bool(res.converged)
    np.testing.assert_allclose(np.asarray(res.p_from_mw), np.asarray(ref.p_from_mw), atol=1e-9)


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("baseMVA", np.array(True), "baseMVA"),  # was read as 1 MVA
        ("baseMVA", np.array("100"), "baseMVA"),  # was read as 100
        ("gencost", np.ones((5, 1)), "at least 4"),  # IndexError
        ("gencost", "pwl 1e300", "piecewise-linear"),  # LinAlgError: SVD did not converge
        ("gencost", "7 rows", "7 rows for 5 generators"),  # accepted; the parser refuses it
    ],
)
def test_from_ppc_refuses_what_the_hostile_rerun_slipped_through(case14, key, value, match):
    case = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in case14.items()}
    if isinstance(value, str) and value.startswith("pwl"):
        value = np.array([[1, 0, 0, 3, 1e300, 5, -1e300, 6, 1e-300, 7]] * 5, float)
    elif isinstance(value, str) and value == "7 rows":
        value = np.vstack([case["gencost"], case["gencost"][:2]])
    case[key] = value
    with pytest.raises(gp.CaseFormatError, match=match):
        gp.from_ppc(case)


def test_a_pandapower_in_service_of_nan_is_a_case_format_error():
    """pandapower raised a KeyError deep in its options (hostile rerun 3)."""
    import pandapower.networks as pn

    net = pn.case14()
    net.gen["in_service"] = np.nan
    with pytest.raises(gp.CaseFormatError, match="gen 0: in_service"):
        gp.from_pandapower(net)


@pytest.mark.parametrize("sn_mva", [0.0, np.nan, 1e-9, "1"])
def test_a_pandapower_base_power_out_of_range_is_a_case_format_error(sn_mva):
    """pandapower's conversion raised a bare FloatingPointError for 0 and NaN (hostile
    rerun 5); 1e-9 MVA was blamed on branch 0's reactance (rerun 7). A small but real
    base (1 kVA) still gives case14's 259 MW."""
    import pandapower.networks as pn

    net = pn.case14()
    net.sn_mva = sn_mva
    with pytest.raises(gp.CaseFormatError, match=f"sn_mva is {sn_mva!r}"):
        gp.from_pandapower(net)
    net.sn_mva = 1e-3
    assert abs(float(gp.solve(gp.from_pandapower(net)).gen_p_mw.sum()) - 259.0) < 1e-6


@pytest.mark.parametrize("tap", [-0.978, -1.0])
def test_a_negative_tap_ratio_is_refused(case14, tap):
    """A negative ratio changed DC flows by 23 % without a word (hostile rerun 5); 0
    was refused already."""
    branch = np.array(case14["branch"], float)
    branch[7, 8] = tap  # case14's branch 7 is a transformer (4-7, ratio 0.978)
    with pytest.raises(gp.CaseFormatError, match=f"row 8 has TAP = {tap:g}; it must be >= 0"):
        gp.from_ppc(case14 | {"branch": branch})
    net = gp.from_ppc(case14)
    with pytest.raises(gp.InvalidValueError, match=f"branch.tap = {tap}; a ratio is > 0"):
        net.with_branches(tap=np.where(np.arange(net.n_branch) == 7, tap, 1.0))


@pytest.mark.parametrize("tap", [1e300, 1e-9])
def test_a_tap_ratio_beyond_100_to_1_is_not_a_transformer(case14, tap):
    """A ratio of 1e300 opened branch 0 silently (147.8 MW to 0 MW, converged=True;
    hostile rerun 6): from a case file it is not converged, through with_branches an
    InvalidValueError."""
    branch = np.array(case14["branch"], float)
    branch[0, 8] = tap
    net = gp.from_ppc(case14 | {"branch": branch})
    for method in ("dc", "ac"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert not bool(gp.solve(net, method).converged)
    base = gp.from_ppc(case14)
    with pytest.raises(gp.InvalidValueError, match=r"within 0\.01\.\.100"):
        base.with_branches(tap=np.where(np.arange(base.n_branch) == 0, tap, 1.0))


def test_a_voltage_setpoint_of_zero_or_below_is_refused(case14):
    """VG = -1 on the slack unit converged in AC with vm = -1 (hostile rerun 6)."""
    gen = np.array(case14["gen"], float)
    gen[0, 5] = -1.0
    with pytest.raises(gp.CaseFormatError, match="gen row 1 is in service with VG = -1"):
        gp.from_ppc(case14 | {"gen": gen})
    with pytest.raises(gp.InvalidValueError, match="a voltage setpoint is > 0"):
        gp.from_ppc(case14).with_gens(vm_pu=-1.0)


def test_an_in_service_dcline_is_unsupported_not_silently_misread():
    """pandapower's DC line became two plain generators: flows 15 MW off pandapower's,
    no warning (hostile rerun 7)."""
    import pandapower as pp
    import pandapower.networks as pn

    net = pn.case14()
    pp.create_dcline(net, 9, 13, p_mw=20, loss_percent=1, loss_mw=0.5, vm_from_pu=1, vm_to_pu=1)
    with pytest.raises(gp.UnsupportedError, match="dcline"):
        gp.from_pandapower(net)
    net.dcline["in_service"] = False  # out of service: nothing to model
    assert gp.from_pandapower(net).n_bus == 14


def test_ptdf_columns_of_cut_off_buses_are_nan_and_a_cut_off_slack_is_refused(ieee14):
    """With branch 13 out, bus 7 (0-based) hangs on nothing: its column read 0 and
    slack=7 silently gave the reference-bus PTDF (hostile rerun 7). By hand: an
    injection there cannot reach the reference, so its column is undefined."""
    status = np.ones(ieee14.n_branch)
    status[13] = 0
    cut = ieee14.with_branches(status=status)
    h = np.asarray(gp.ptdf(cut))
    assert np.isnan(h[:, 7]).all() and np.isfinite(np.delete(h, 7, axis=1)).all()
    with pytest.raises(gp.NetworkError, match="slack bus 7 is cut off"):
        gp.ptdf(cut, slack=7)
    weights = np.ones(ieee14.n_bus)
    with pytest.raises(gp.NetworkError, match=r"slack weights on bus\(es\) \[7\]"):
        gp.ptdf(cut, slack=weights)
    np.testing.assert_allclose(  # the other columns are the ones of the grid as it is
        np.delete(h, 7, axis=1), np.delete(np.asarray(gp.ptdf(cut, branches=range(20))), 7, 1)
    )


# -- hostile rerun 8 ----------------------------------------------------------------------
def test_a_negative_voltage_magnitude_is_refused_or_retried(case14):
    """A stored VM of -1.036 'converged' in AC to the 180-degree-turned phasor (0.94,
    0.81, -0.04 p.u. on the last buses, flows 140 MW off). The case file and
    with_voltages refuse it; under jit (no check possible) that attempt fails and the
    next start converges to PYPOWER's runpf answer."""
    from pypower.api import ppoption, runpf

    bad = copy.deepcopy(case14)
    bad["bus"][13, BUS_VM] = -1.036
    with pytest.raises(gp.CaseFormatError, match=r"bus 14 has VM = -1\.036"):
        gp.from_ppc(bad)
    net = gp.from_ppc(case14)
    vm = np.asarray(net.bus.vm_pu).copy()
    vm[13] = -1.036
    with pytest.raises(gp.InvalidValueError, match=r"bus 14 .*vm_pu = -1.036"):
        net.with_voltages(vm_pu=vm)
    solve = jax.jit(
        lambda v: gp.solve(net.with_voltages(vm_pu=v), "ac", options=gp.SolveOptions(init="case"))
    )
    res = solve(jnp.asarray(vm))
    ref, ok = runpf(copy.deepcopy(case14), ppoption(VERBOSE=0, OUT_ALL=0))
    assert ok and bool(res.converged) and int(res.start) != 0
    np.testing.assert_allclose(np.asarray(res.vm_pu), ref["bus"][:, BUS_VM], atol=1e-8)
    np.testing.assert_allclose(np.asarray(res.p_from_mw), ref["branch"][:, 13], atol=1e-6)


def test_otdf_with_no_outage_or_no_monitored_branch_is_empty():
    """gp.otdf(net, []) raised a raw JAX TypeError (an empty float index)."""
    net = gp.load_case("case14")
    assert gp.otdf(net, []).shape == (0, net.n_branch, net.n_bus)
    assert gp.otdf(net, [3], monitored=[]).shape == (1, 0, net.n_bus)


def test_a_failed_dc_scenario_has_no_worst_loading():
    """A DC scenario whose solve failed (a NaN load) reported a worst loading of 0.0 %
    (the 0 MW of its outaged branch), which reads as secure; the others keep theirs."""
    net = gp.load_case("case14")
    p = np.tile(np.asarray(net.load.p_mw), (2, 1))
    p[1, 0] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        both = gp.contingencies(net, scenarios=gp.Scenarios(load_p_mw=p))
        alone = gp.contingencies(net)
    assert not both.converged[1].any() and np.isnan(both.max_loading_percent[1]).all()
    assert (both.worst_branch[1] == -1).all()
    np.testing.assert_allclose(both.max_loading_percent[0], alone.max_loading_percent)


def test_scenarios_must_be_rows_of_the_network_s_elements():
    """A 1-D array of the 11 loads became 11 scenarios of one scalar each."""
    net = gp.load_case("case14")
    p = np.asarray(net.load.p_mw)
    for bad in (p, p[None, :5], np.zeros((2, net.n_gen + 1))):
        field = "gen_p_mw" if bad.shape[-1] == net.n_gen + 1 else "load_p_mw"
        with pytest.raises(gp.NetworkError, match=rf"scenarios.{field} has shape"):
            gp.contingencies(net, scenarios=gp.Scenarios(**{field: bad}))


def test_slack_weights_that_balance_nothing_are_refused_by_name():
    """with_gens(slack_weight=0) (or -1) was accepted and the DC solve failed as
    'singular'; a weight only on a unit away from the reference bus too."""
    net = gp.load_case("case14")
    for weight in (0.0, -1.0):
        with pytest.raises(gp.InvalidValueError, match="slack_weight"):
            net.with_gens(slack_weight=weight)
    away = np.zeros(net.n_gen)
    away[1] = 1.0  # the unit at bus 2; the reference bus is bus 1
    with pytest.raises(gp.InvalidValueError, match="reference bus 1: none of its units"):
        gp.solve(net.with_gens(slack_weight=away))
    both = away.copy()
    both[0] = 1.0  # with the reference unit too, it solves: 259 MW of load is met
    assert abs(float(gp.solve(net.with_gens(slack_weight=both)).gen_p_mw.sum()) - 259.0) < 1e-9


def test_keep_flows_must_be_a_bool():
    with pytest.raises(gp.InputTypeError, match="keep_flows"):
        gp.contingencies(gp.load_case("case14"), keep_flows="no")


@pytest.mark.parametrize(
    ("dtype", "why"),
    [(jnp.float16, "half precision"), (jnp.int32, "real numbers"), ("complex64", "real numbers")],
)
def test_astype_refuses_what_no_solve_can_use_and_says_why(dtype, why):
    """int32 was refused with a message about half precision (hostile rerun 8)."""
    with pytest.raises(gp.InvalidValueError, match=why):
        gp.load_case("case14").astype(dtype)


# -- hostile rerun 9 ----------------------------------------------------------------------
def test_outage_flow_indices_out_of_range_are_refused():
    """sensitivity(s, 20) on a 20-branch grid returned a clamped, finite row;
    transfer_flows(s, 99, 0) equalled transfer_flows(s, 13, 0); 2.5 was a raw TypeError."""
    net = gp.load_case("case14")
    engine = gp.OutageFlows.build(net, max_outages=2)
    system = engine.system(jnp.ones(net.n_branch))
    for call, match in (
        (lambda: engine.sensitivity(system, 20), "branch index 20 is out of range 0..19"),
        (lambda: engine.sensitivity(system, 2.5), "not an integer"),
        (lambda: engine.sensitivity(system, 3, buses=[0, 14]), "bus index 14"),
        (lambda: engine.transfer_flows(system, 99, 0), "to_bus index 99"),
    ):
        with pytest.raises(gp.NetworkError, match=match):
            call()
    # in range, it is the PTDF row: a hand check against ptdf()
    np.testing.assert_allclose(engine.sensitivity(system, 3), gp.ptdf(net)[3], atol=1e-12)


def test_to_ppc_refuses_fractional_statuses_and_writes_unlimited_as_0(tmp_path):
    """A status of 0.5 was written as 1 (flows 20 MW off after the round trip) and an
    infinite rating as 1.797e308, read back as a finite rating."""
    net = gp.load_case("case14")
    with pytest.raises(gp.InvalidValueError, match=r"generator 1 at bus 2 has status 0\.5"):
        gp.to_ppc(net.with_gens(status=jnp.ones(net.n_gen).at[1].set(0.5)))
    with pytest.raises(gp.InvalidValueError, match=r"branch 3 .* status 0.5.*with_branches"):
        gp.save_matpower(
            net.with_branches(status=jnp.ones(net.n_branch).at[3].set(0.5)), tmp_path / "x.m"
        )
    gp.save_matpower(
        net.with_branches(rate_a_mva=jnp.full(net.n_branch, jnp.inf)), tmp_path / "u.m"
    )
    assert (
        gp.to_ppc(gp.load_matpower(tmp_path / "u.m"))["branch"][:, BR_RATE_A].tolist() == [0.0] * 20
    )
    assert np.isnan(np.asarray(gp.load_matpower(tmp_path / "u.m").branch.rate_a_mva)).all()


def test_a_network_with_leaves_of_another_shape_is_refused_by_solve():
    """Hostile rerun 10: Network.replace builds any pytree; a load vector of the wrong
    length, a batch of loads outside vmap, a list or None reached the solve as raw
    TypeError/ValueError from broadcasting. Inside vmap the one-scenario shapes pass."""
    import jax
    import jax.numpy as jnp

    import gridphysics as gp
    from gridphysics.errors import InputTypeError, NetworkError

    net = gp.load_case("ieee14")
    for value, error, message in (
        (jnp.ones(3), NetworkError, r"load.p_mw has shape \(3,\).*\(11,\) expected"),
        (jnp.ones((2, 11)), NetworkError, r"load.p_mw has shape \(2, 11\)"),
        ([1.0] * 11, InputTypeError, "load.p_mw must be an array, got list"),
        (None, InputTypeError, "load.p_mw must be an array, got NoneType"),
    ):
        bad = net.replace(load=net.load.replace(p_mw=value))
        for method in ("dc", "ac"):
            with pytest.raises(error, match=message):
                gp.solve(bad, method)
    short = net.replace(branch=net.branch.replace(x_pu=net.branch.x_pu[:-1]))
    with pytest.raises(NetworkError, match=r"branch.x_pu has shape \(19,\)"):
        jax.jit(gp.solve)(short)
    batch = jnp.stack([net.load.p_mw, 2 * net.load.p_mw])
    flows = jax.vmap(lambda p: gp.solve(net.with_loads(p_mw=p)).p_from_mw)(batch)
    np.testing.assert_allclose(
        flows[1],
        2 * flows[0] - gp.solve(net.with_loads(p_mw=0.0 * net.load.p_mw)).p_from_mw,
        atol=1e-9,
    )


def test_leaves_that_are_not_real_numbers_are_refused_everywhere_a_network_goes_in():
    """Hostile rerun 11: complex loads gave a 'converged' DC solve with the imaginary
    part dropped and a complex PTDF; object leaves and integer reactances crashed inside
    JAX. Bool or integer leaves of the right shape stay accepted."""
    import gridphysics as gp
    from gridphysics.errors import InputTypeError

    net = gp.load_case("ieee14")
    x = np.asarray(net.branch.x_pu)
    complex_x = net.replace(branch=net.branch.replace(x_pu=x.astype(complex)))
    complex_load = net.replace(load=net.load.replace(p_mw=np.asarray(net.load.p_mw) + 1j))
    object_load = net.replace(load=net.load.replace(p_mw=np.asarray(net.load.p_mw, object)))
    int_x = net.replace(branch=net.branch.replace(x_pu=np.ones(net.n_branch, np.uint8)))
    for bad, message in (
        (complex_load, "load.p_mw must be real numbers, got complex128"),
        (object_load, "load.p_mw must be real numbers, got object"),
        (complex_x, "branch.x_pu must be real numbers"),
        (int_x, "branch.x_pu sets the network's dtype and must be floating-point, got uint8"),
    ):
        for call in (
            lambda n: gp.solve(n, "dc"),
            lambda n: gp.solve(n, "ac"),
            gp.ptdf,
            lambda n: gp.OutageFlows.build(n),
        ):
            with pytest.raises(InputTypeError, match=message):
                call(bad)
    on = net.replace(load=net.load.replace(status=np.ones(net.n_load, bool)))
    np.testing.assert_allclose(gp.solve(on).p_from_mw, gp.solve(net).p_from_mw, atol=1e-12)
