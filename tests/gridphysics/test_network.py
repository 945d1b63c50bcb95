"""Network construction, validation and updaters; fuzzing of the constructor."""

from __future__ import annotations

import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import gridphysics as gp
from gridphysics.cases import cases_dir, catalogue
from gridphysics.matpower import load_matpower_dict
from tests.conftest import fuzz_examples


def _case14() -> dict:
    return load_matpower_dict(cases_dir() / catalogue()["ieee14"]["file"])


def test_sizes_and_static_topology(ieee118):
    t = ieee118.topology
    assert (ieee118.n_bus, ieee118.n_branch, ieee118.n_gen) == (118, 186, 54)
    bus = load_matpower_dict(cases_dir() / "matpower/case118.m")["bus"]
    assert ieee118.n_load == np.count_nonzero((bus[:, 2] != 0) | (bus[:, 3] != 0))
    leaves, treedef = jax.tree_util.tree_flatten(ieee118)
    assert all(isinstance(leaf, jax.Array) for leaf in leaves)
    rebuilt = jax.tree_util.tree_unflatten(treedef, leaves)
    assert rebuilt.topology == t and hash(rebuilt.topology) == hash(t)
    assert list(t.ref_buses) == [68]  # bus 69 is case118's reference
    with pytest.raises(AttributeError):
        t.base_mva = 1.0


def test_loads_and_shunts_come_from_bus_columns():
    case = _case14()
    net = gp.from_ppc(case)
    has_load = (case["bus"][:, 2] != 0) | (case["bus"][:, 3] != 0)
    np.testing.assert_array_equal(net.topology.load_bus, np.flatnonzero(has_load))
    np.testing.assert_array_equal(net.load.p_mw, case["bus"][has_load, 2])
    has_shunt = (case["bus"][:, 4] != 0) | (case["bus"][:, 5] != 0)
    np.testing.assert_array_equal(net.shunt.b_mvar, case["bus"][has_shunt, 5])
    # Branch conventions: tap 0 means 1.0, shift in degrees becomes radians, rate 0 is NaN.
    assert float(net.branch.tap[0]) == 1.0
    assert np.isnan(float(net.branch.rate_a_mva[0]))


def test_slack_generator_is_the_first_in_service_unit_at_the_reference_bus():
    case = _case14()
    gen = np.vstack([case["gen"][:1], case["gen"]])  # two units at the reference bus
    gen[0, 7] = 0  # the first one out of service
    net = gp.from_ppc(dict(case, gen=gen, gencost=None))
    np.testing.assert_array_equal(net.gen.slack_weight, [0, 1, 0, 0, 0, 0])


def test_updaters_check_shapes_and_broadcast(ieee14):
    n = ieee14.with_loads(p_mw=2.0)
    assert n.load.p_mw.shape == (ieee14.n_load,) and float(n.load.p_mw[0]) == 2.0
    with pytest.raises(gp.NetworkError, match=r"load.p_mw must have shape \(11,\)"):
        ieee14.with_loads(p_mw=jnp.ones(3))
    assert ieee14.load.p_mw is not n.load.p_mw  # the original is untouched
    n32 = ieee14.astype(jnp.float32)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(n32))
    with pytest.raises(gp.NetworkError, match="floating"):
        ieee14.astype(jnp.int32)


@pytest.mark.parametrize(
    ("mutate", "error", "match"),
    [
        (
            lambda c: c["bus"].__setitem__((3, 0), c["bus"][2, 0]),
            gp.DuplicateBusError,
            "bus id 3 appears 2 times",
        ),
        (
            lambda c: c["branch"].__setitem__((5, 1), 99),
            gp.UnknownBusError,
            "branch row 6 refers to to bus 99",
        ),
        (
            lambda c: c["gen"].__setitem__((2, 0), 77),
            gp.UnknownBusError,
            "gen row 3 refers to bus 77",
        ),
        (lambda c: c["bus"].__setitem__((0, 1), 2), gp.NoSlackError, "no reference bus"),
        (lambda c: c["bus"].__setitem__((4, 1), 7), gp.CaseFormatError, "bus 5 has type 7"),
        (lambda c: c.pop("branch"), gp.CaseFormatError, "no 'branch' table"),
        (lambda c: c.__setitem__("gen", c["gen"][:, :5]), gp.CaseFormatError, "needs at least 10"),
        (
            lambda c: c.__setitem__("baseMVA", -1),
            gp.CaseFormatError,
            "baseMVA.*from 1e-06 to 1e\\+06 MVA",
        ),
        (lambda c: c["bus"].__setitem__((2, 0), np.nan), gp.CaseFormatError, "non-finite BUS_I"),
        # hostile values that were accepted or reinterpreted before (issue 14)
        (lambda c: c["bus"].__setitem__((4, 1), 2.5), gp.CaseFormatError, "bus 5 has type 2.5"),
        (lambda c: c["bus"].__setitem__((2, 0), 1e20), gp.CaseFormatError, "out of range"),
        (lambda c: c["bus"].__setitem__((2, 2), np.nan), gp.CaseFormatError, "non-finite PD"),
        (
            lambda c: c["branch"].__setitem__((3, 10), np.nan),
            gp.CaseFormatError,
            "branch row 4 has a non-finite BR_STATUS",
        ),
        (
            lambda c: c["branch"].__setitem__((0, 3), np.inf),
            gp.CaseFormatError,
            "branch row 1 has a non-finite BR_X",
        ),
        (
            lambda c: c["branch"].__setitem__((7, 8), np.inf),
            gp.CaseFormatError,
            "non-finite TAP",
        ),
        (
            lambda c: c["gen"].__setitem__((1, 7), np.nan),
            gp.CaseFormatError,
            "gen row 2 has a non-finite GEN_STATUS",
        ),
        (
            lambda c: c.__setitem__("branch", np.zeros((0, 13))),
            gp.CaseFormatError,
            "no branches",
        ),
        (
            lambda c: c["gencost"].__setitem__((1, 4), np.nan),
            gp.CaseFormatError,
            "gencost row 2",
        ),
        (
            lambda c: c["gencost"].__setitem__((0, 0), 7),
            gp.CaseFormatError,
            "MODEL must be 1 or 2",
        ),
    ],
)
def test_bad_case_dicts_raise_named_errors(mutate, error, match):
    case = _case14()
    mutate(case)
    with pytest.raises(error, match=match):
        gp.from_ppc(case)


def test_validate_names_the_element(ieee14):
    bad = ieee14.replace(branch=ieee14.branch.replace(x_pu=ieee14.branch.x_pu.at[2].set(jnp.inf)))
    with pytest.raises(gp.InvalidValueError, match=r"branch 2 \(2-3\) has branch.x_pu = inf"):
        bad.validate()
    assert ieee14.validate() is ieee14


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (
            lambda n: n.with_branches(x_pu=n.branch.x_pu.at[2].set(jnp.inf)),
            r"branch 2 \(2-3\).*x_pu = inf",
        ),
        (
            lambda n: n.with_branches(status=jnp.nan),
            r"branch 0 \(1-2\).*status = nan \(and 19 more\)",
        ),
        (
            lambda n: n.with_branches(status=n.branch.status.at[4].set(2.0)),
            r"branch 4 .*status = 2.0; a status",
        ),
        (
            lambda n: n.with_loads(p_mw=n.load.p_mw.at[3].set(jnp.nan)),
            r"load 3 at bus \d+: load.p_mw = nan",
        ),
        (lambda n: n.with_gens(status=-1.0), r"generator 0 .*gen.status = -1.0"),
    ],
)
def test_with_refuses_concrete_values_no_solve_can_use(ieee14, change, match):
    """with_branches(status=NaN) converged with the branch out, x_pu=inf was accepted:
    outside jit the updaters now name the element, the field and the value."""
    with pytest.raises(gp.InvalidValueError, match=match):
        change(ieee14)


def test_with_leaves_traced_values_to_the_solve(ieee14):
    status = jnp.full(ieee14.n_branch, jnp.nan)
    result = jax.jit(lambda s: gp.solve(ieee14.with_branches(status=s)))(status)
    assert not bool(result.converged)


# -- fuzzing -------------------------------------------------------------------------------

finite = st.floats(-1e3, 1e3, allow_nan=False)
anything = st.one_of(finite, st.just(np.nan), st.just(np.inf), st.integers(-3, 30).map(float))


@st.composite
def random_cases(draw):
    n_bus = draw(st.integers(1, 8))
    n_br = draw(st.integers(0, 10))
    n_gen = draw(st.integers(0, 4))
    bus = draw(arrays(np.float64, (n_bus, 13), elements=anything))
    if draw(st.booleans()):  # mostly well-formed ids and types, sometimes not
        bus[:, 0] = draw(st.permutations(range(1, n_bus + 1)))
        bus[:, 1] = draw(arrays(np.float64, n_bus, elements=st.sampled_from([1.0, 2.0, 3.0, 4.0])))
    branch = draw(arrays(np.float64, (n_br, draw(st.integers(9, 14))), elements=anything))
    if draw(st.booleans()) and n_br:
        branch[:, :2] = draw(
            arrays(np.float64, (n_br, 2), elements=st.integers(1, n_bus).map(float))
        )
    gen = draw(arrays(np.float64, (n_gen, draw(st.integers(8, 21))), elements=anything))
    if draw(st.booleans()) and n_gen:
        gen[:, 0] = draw(arrays(np.float64, n_gen, elements=st.integers(1, n_bus).map(float)))
    base = draw(st.one_of(st.just(100.0), anything))
    return {"baseMVA": base, "bus": bus, "branch": branch, "gen": gen}


@settings(
    max_examples=fuzz_examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(random_cases())
def test_constructor_fuzz_builds_or_raises_gridphysics_error(case):
    try:
        net = gp.from_ppc(case)
    except gp.GridPhysicsError:
        return
    assert net.n_bus == case["bus"].shape[0]
    assert net.n_branch == case["branch"].shape[0]
    # A network that was built either validates or names its bad element.
    try:
        net.validate()
    except gp.NetworkError as exc:
        assert str(exc)


@pytest.mark.parametrize("case", [None, [1, 2], "case14", 3.0])
def test_from_ppc_of_a_non_dict_is_a_case_format_error(case):
    with pytest.raises(gp.CaseFormatError, match="expects a case dict"):
        gp.from_ppc(case)


@pytest.mark.parametrize(
    ("slack", "match"),
    [
        ([-1], r"slack_gens\[0\] = -1"),
        ([0, 99], r"slack_gens\[1\] = 99"),
        ([], "non-empty"),
        ([0.5], "indices"),
    ],
)
def test_slack_gens_out_of_range_are_refused_not_wrapped(slack, match):
    with pytest.raises(gp.CaseFormatError, match=match):
        gp.from_ppc(_case14(), slack_gens=slack)


@pytest.mark.parametrize("x", [np.inf, 1e-300, 0.0, 1e300])
def test_unphysical_reactance_is_not_converged_and_named(x):
    """x = inf carried no flow and 1e-300 gave -231 MW of generation with converged=True;
    now the solve is flagged (under jit) and the element named (outside)."""
    net = gp.from_ppc(_case14())
    xs = np.asarray(net.branch.x_pu).copy()
    xs[0] = x
    bad = net.replace(branch=net.branch.replace(x_pu=jnp.asarray(xs)))  # with_ refuses inf
    result = jax.jit(gp.solve)(bad)
    assert not bool(result.converged) and np.isnan(np.asarray(result.p_from_mw)).all()
    with pytest.raises(gp.NetworkError, match="branch 0"):
        gp.solve(bad)


@pytest.mark.parametrize(
    ("r", "x"), [(0.01, np.inf), (0.01, 1e300), (0.0, 1e-300), (np.inf, 0.05), (1e7, 0.05)]
)
def test_unphysical_impedance_is_not_converged_in_ac(r, x):
    """AC accepted x = inf (a branch in service that carried nothing) and a series
    impedance of 1e-300 (a short) with converged=True."""
    net = gp.from_ppc(_case14())
    rs, xs = np.asarray(net.branch.r_pu).copy(), np.asarray(net.branch.x_pu).copy()
    rs[0], xs[0] = r, x
    bad = net.replace(branch=net.branch.replace(r_pu=jnp.asarray(rs), x_pu=jnp.asarray(xs)))
    result = jax.jit(lambda n: gp.solve(n, "ac"))(bad)
    assert not bool(result.converged) and np.isnan(np.asarray(result.p_from_mw)).all()


@pytest.mark.parametrize("method", ["dc", "ac"])
def test_a_phase_shift_beyond_360_degrees_is_not_converged_and_named(method):
    """A SHIFT of 1e20 degrees gave 483,368 MW of generation for 259 MW of load with
    converged=True (hostile rerun); 360 degrees is the physical range's edge (still
    solved, as the same branch without a shift: the flows are periodic in the angle)."""
    case = _case14()
    case["branch"][7, 9] = 1e20
    bad = gp.from_ppc(case)
    result = jax.jit(lambda n: gp.solve(n, method))(bad)
    assert not bool(result.converged) and np.isnan(np.asarray(result.p_from_mw)).all()
    with pytest.raises(gp.NetworkError, match="phase shift"):
        gp.solve(bad, method)
    case["branch"][7, 9] = 360.0
    edge = gp.solve(gp.from_ppc(case), "ac")
    case["branch"][7, 9] = 0.0
    plain = gp.solve(gp.from_ppc(case), "ac")
    assert bool(edge.converged)
    np.testing.assert_allclose(edge.p_from_mw, plain.p_from_mw, atol=1e-6)


def test_a_purely_resistive_branch_still_solves_in_ac():
    """The AC range is on |r + jx|: x = 0 with r > 0 is physical and converges."""
    net = gp.from_ppc(_case14())
    xs = np.asarray(net.branch.x_pu).copy()
    xs[3] = 0.0  # branch 2-4, r = 0.058 p.u.
    result = gp.solve(net.with_branches(x_pu=xs), "ac", options=gp.SolveOptions(validate=False))
    assert bool(result.converged)


@pytest.mark.parametrize("method", ["dc", "ac"])
def test_a_numerically_singular_grid_is_not_converged_not_a_solver_crash(method):
    """A second 7-8 branch with the opposite reactance cancels the first: bus 8's rows of
    B and of the Jacobian are zero. KLU raised a raw JaxRuntimeError ("singular
    matrix?"); now the solve, jitted or not, says converged=False."""
    case = _case14()
    twin = np.array(case["branch"][13], float)
    twin[3] = -twin[3]  # x of branch 7-8, negated
    case["branch"] = np.vstack([case["branch"], twin])
    net = gp.from_ppc(case)
    result = gp.solve(net, method, options=gp.SolveOptions(validate=False))
    assert not bool(result.converged) and np.isnan(np.asarray(result.p_from_mw)).all()
    assert not bool(jax.jit(lambda n: gp.solve(n, method))(net).converged)
    assert not bool(gp.solve(net, method).converged)  # validate finds no single bad value


def test_singular_matrix_test_catches_zero_rows_and_columns_only():
    from gridphysics.linalg import singular_rows_or_columns

    rows, cols = np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])
    values = jnp.array(
        [
            [2.0, -1.0, -1.0, 2.0],  # regular
            [0.0, 0.0, 0.0, 0.0],  # all zero
            [1.0, 1.0, 0.0, 0.0],  # row 1 zero
            [1.0, 0.0, 1.0, 0.0],  # column 1 zero
            [1.0, 2.0, 3.0, np.nan],  # not finite
            [0.0, 1.0, 1.0, 0.0],  # zero diagonal but regular (a permutation)
        ]
    )
    got = np.asarray(singular_rows_or_columns(rows, cols, values, 2)).tolist()
    assert got == [False, True, True, True, True, False]


@pytest.mark.parametrize("base", [1e300, 1e-300, 1e-9])
def test_base_mva_out_of_range_is_refused(base):
    """1e-300 and 1e-9 MVA were accepted (hostile rerun 7); at 1e-9 every line of case14
    fell below the reactance range and the error blamed branch 0."""
    case = _case14()
    case["baseMVA"] = base
    with pytest.raises(gp.CaseFormatError, match="baseMVA"):
        gp.from_ppc(case)


@pytest.mark.parametrize(("table", "col"), [("bus", 2), ("bus", 3), ("bus", 4), ("gen", 1)])
def test_powers_beyond_ten_terawatts_are_refused(table, col):
    """Pd = 1e300 MW 'converged' with 1e300 MW on the slack (hostile rerun 7)."""
    case = _case14()
    case[table] = case[table].copy()
    case[table][1, col] = 1e300
    with pytest.raises(gp.CaseFormatError, match=f"{table} row 2 has .* = 1e\\+300"):
        gp.from_ppc(case)
    net = gp.from_ppc(_case14())
    with pytest.raises(gp.InvalidValueError, match="within 1e\\+07 MW"):
        net.with_loads(p_mw=np.full(len(net.load.p_mw), -1e8))


def test_reference_without_a_live_unit_moves_as_pypower_does():
    """With the reference bus's only unit out in the case file, the reference moves to
    the first PV bus with a unit (PYPOWER's bustypes), and the DC solve equals PYPOWER's
    rundcpf; switching the slack unit off at run time is converged=False, not 40 MW of
    generation for 259 MW of load."""
    import copy

    from pypower.api import ppoption, rundcpf

    case = _case14()
    case["gen"][0, 7] = 0  # GEN_STATUS of the unit at reference bus 1
    with pytest.warns(gp.ReferenceMovedWarning, match="bus 2"):
        net = gp.from_ppc(case)
    ours = gp.solve(net)
    ref, ok = rundcpf(copy.deepcopy(case), ppoption(VERBOSE=0, OUT_ALL=0))
    assert ok and bool(ours.converged)
    np.testing.assert_allclose(np.asarray(ours.p_from_mw), ref["branch"][:, 13], atol=1e-9)
    np.testing.assert_allclose(np.asarray(ours.gen_p_mw), ref["gen"][:, 1], atol=1e-9)

    net = gp.from_ppc(_case14())
    status = np.asarray(net.gen.status).copy()
    status[0] = 0.0
    off = jax.jit(gp.solve)(net.with_gens(status=status))
    assert not bool(off.converged)


@pytest.mark.parametrize(
    ("method", "change"),
    [
        ("dc", lambda n: n.with_loads(status=_at(n.load.status, 0, 2.0))),  # a doubled load
        ("ac", lambda n: n.with_loads(status=_at(n.load.status, 0, -1.0))),  # a generator
        ("dc", lambda n: n.with_gens(status=_at(n.gen.status, 1, 2.0))),
        ("ac", lambda n: n.with_gens(status=_at(n.gen.status, 1, -1.0))),
        ("ac", lambda n: n.with_branches(status=_at(n.branch.status, 0, np.nan))),  # was "out"
        ("ac", lambda n: n.with_gens(slack_weight=_at(n.gen.slack_weight, 0, np.nan))),
        ("dc", lambda n: n.with_branches(tap=_at(n.branch.tap, 0, np.inf))),  # was "open"
    ],
)
def test_values_no_grid_has_are_not_converged_under_jit(method, change):
    """Statuses outside [0, 1] or NaN, a NaN slack weight and an infinite tap came back
    converged=True under jit (hostile rerun); outside jit they are named errors."""
    net = gp.from_ppc(_case14())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bad = jax.jit(change)(net)  # under jit, where with_* cannot check values
        result = jax.jit(lambda n: gp.solve(n, method))(bad)
    assert not bool(result.converged) and np.isnan(np.asarray(result.p_from_mw)).all()


def _at(values, i, value):
    return jnp.asarray(values).at[i].set(value)


@pytest.mark.parametrize("method", ["dc", "ac"])
def test_a_reference_bus_whose_units_are_all_off_is_not_converged(method):
    """ieee14 with the reference bus's only unit switched off: AC balanced 232 MW at that
    bus from nowhere with converged=True (DC already said not converged; PYPOWER's runpf
    moves the reference when it loads such a case, as from_ppc does)."""
    net = gp.from_ppc(_case14())
    off = net.with_gens(status=_at(net.gen.status, 0, 0.0))
    assert int(net.topology.gen_bus[0]) in set(net.topology.ref_buses.tolist())
    assert not bool(gp.solve(off, method).converged)
    assert bool(gp.solve(net, method).converged)


@pytest.mark.parametrize("bad", [[2**70], [-(2**70)], [1e30], [3, 2**64]])
def test_indices_beyond_int64_are_out_of_range_with_the_number_given(bad):
    """Hostile rerun 4: 2**70 was 'not an integer' and 1e30 wrapped to a negative
    index in the message; the user's own number is named."""
    from gridphysics.network import as_indices

    shown = f"{max(bad, key=abs):g}" if isinstance(bad[0], float) else str(max(bad, key=abs))
    with pytest.raises(gp.NetworkError, match=re.escape(f"index {shown} is out of range 0..19")):
        as_indices(bad, 20, "outage branch")
