"""The outage engine (gridphysics.OutageFlows) against brute-force re-solves.

Reference: ``gridphysics.solve`` of the network with the outaged branches' status set
to 0 (itself checked against pandapower's rundcpp in test_dc_pandapower.py), one solve
per state. Random outage sets include bridges, so many states split the grid.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gridphysics as gp


def _injections(net: gp.Network, gen: np.ndarray, load: np.ndarray) -> np.ndarray:
    """(n, n_bus) generation minus load minus shunt conductance, MW."""
    t = net.topology
    shunt = np.bincount(t.shunt_bus, np.asarray(net.shunt.g_mw * net.shunt.status), t.n_bus).astype(
        float
    )
    return np.stack(
        [
            np.bincount(t.gen_bus, g * np.asarray(net.gen.status), t.n_bus)
            - np.bincount(t.load_bus, ld * np.asarray(net.load.status), t.n_bus)
            - shunt
            for g, ld in zip(gen, load, strict=True)
        ]
    )


def _random_states(net: gp.Network, n: int, max_out: int, seed: int):
    rng = np.random.default_rng(seed)
    status = np.ones((n, net.n_branch))
    bridges = gp.bridges(net)
    for i in range(n):
        status[i, rng.choice(net.n_branch, rng.integers(0, max_out + 1), replace=False)] = 0.0
        if i % 3 == 0 and len(bridges) and (status[i] == 0).sum() < max_out:
            status[i, rng.choice(bridges)] = 0.0  # a bridge: the grid splits
    gen = np.nan_to_num(np.asarray(gp.solve(net).gen_p_mw)) * rng.uniform(0.8, 1.2, (n, net.n_gen))
    load = np.asarray(net.load.p_mw) * rng.uniform(0.8, 1.2, (n, net.n_load))
    return status, gen, load


@functools.lru_cache(maxsize=8)
def _engine(case: str, max_outages: int, dtype: str = "float64"):
    net, _ = gp.fill_missing_ratings(gp.load_case(case))
    return net, gp.OutageFlows.build(net, max_outages, dtype)


@functools.lru_cache(maxsize=8)
def _batched(engine_key, reuse=False):
    """``flows`` (reuse=False: one use of the system, triangular sweeps) or ``apply`` of
    a system built for reuse (its solve stored as a matrix)."""
    if reuse:
        return jax.jit(jax.vmap(lambda e, p, s: e.apply(e.system(s), p), in_axes=(None, 0, 0)))
    return jax.jit(jax.vmap(lambda e, p, s: e.flows(p, s), in_axes=(None, 0, 0)))


def _check_against_solve(net, engine, status, gen, load, atol, reuse=False):
    res = _batched(engine.max_outages, reuse)(
        engine, jnp.asarray(_injections(net, gen, load)), jnp.asarray(status)
    )
    islands = 0
    for i in range(len(status)):
        ref = gp.solve(
            net.with_loads(p_mw=load[i]).with_gens(p_mw=gen[i]).with_branches(status=status[i])
        )
        assert bool(res.exact[i])
        np.testing.assert_allclose(
            res.p_from_mw[i], np.nan_to_num(np.asarray(ref.p_from_mw)), atol=atol, err_msg=str(i)
        )
        np.testing.assert_array_equal(res.bus_isolated[i], ref.bus_isolated, err_msg=str(i))
        islands += bool(np.asarray(ref.bus_isolated).any())
    return islands


@pytest.mark.parametrize(
    ("case", "max_out", "reuse"),
    [("ieee14", 14, False), ("ieee30", 16, False), ("ieee118", 16, False), ("ieee30", 16, True)],
)
def test_flows_equal_resolves_for_random_outages_with_islands(case, max_out, reuse):
    net, engine = _engine(case, max_out)
    status, gen, load = _random_states(net, 60, max_out, seed=1)
    islands = _check_against_solve(net, engine, status, gen, load, atol=1e-8, reuse=reuse)
    assert islands >= 10  # the island path really ran


def test_phase_shifters_and_out_of_service_branches_in_the_intact_grid():
    net, _ = gp.fill_missing_ratings(gp.load_case("ieee30"))
    shift = np.zeros(net.n_branch)
    shift[[3, 10, 25]] = [0.05, -0.08, 0.1]
    status = np.ones(net.n_branch)
    status[7] = 0.0  # out in the "intact" grid already
    net = net.with_branches(shift_rad=shift, status=status)
    engine = gp.OutageFlows.build(net, 12)
    states, gen, load = _random_states(net, 30, 12, seed=2)
    states[:, 7] = 0.0
    _check_against_solve(net, engine, states, gen, load, atol=1e-8)


def test_more_outages_than_slots_is_flagged_not_wrong():
    net, engine = _engine("ieee14", 4)
    status = np.ones((2, net.n_branch))
    status[0, [1, 5, 9, 12]] = 0.0  # 4: represented
    status[1, [1, 5, 9, 12, 15]] = 0.0  # 5: not
    _, gen, load = _random_states(net, 2, 0, seed=3)
    res = _batched(4)(engine, jnp.asarray(_injections(net, gen, load)), jnp.asarray(status))
    assert bool(res.exact[0]) and not bool(res.exact[1])
    assert np.isnan(res.p_from_mw[1]).all() and np.isfinite(res.p_from_mw[0]).all()


def test_nan_injection_is_not_exact():
    net, engine = _engine("ieee14", 14)
    p = np.zeros(net.n_bus)
    p[3] = np.nan
    res = engine.flows(jnp.asarray(p), jnp.ones(net.n_branch))
    assert not bool(res.exact) and np.isnan(res.p_from_mw).all()


def test_float32_engine_within_float32_rounding():
    net, engine = _engine("ieee118", 16, "float32")
    status, gen, load = _random_states(net, 20, 16, seed=4)
    # |flows| reach a few hundred MW: float32 keeps ~7 digits through a 16x16 elimination
    _check_against_solve(net, engine, status, gen, load, atol=5e-3)


def test_fixed_cost_no_data_dependent_control_flow_under_vmap():
    """A batched call is straight-line code: no while loop or branch whose work depends
    on how many environments have outages or islands."""
    net, engine = _engine("ieee14", 8)
    p = jnp.zeros((4, net.n_bus))
    s = jnp.ones((4, net.n_branch))
    text = str(jax.make_jaxpr(jax.vmap(engine.flows))(p, s))
    assert "while" not in text and "cond" not in text


def test_single_call_equals_batched_call():
    net, engine = _engine("ieee30", 16)
    status, gen, load = _random_states(net, 3, 10, seed=5)
    inj = jnp.asarray(_injections(net, gen, load))
    batched = _batched(16)(engine, inj, jnp.asarray(status))
    for i in range(3):
        single = jax.jit(engine.flows)(inj[i], jnp.asarray(status[i]))
        np.testing.assert_allclose(single.p_from_mw, batched.p_from_mw[i], atol=1e-9)
        np.testing.assert_array_equal(single.bus_isolated, batched.bus_isolated[i])


def test_zero_slots_engine_handles_the_intact_grid_only():
    net, _ = gp.fill_missing_ratings(gp.load_case("ieee14"))
    engine = gp.OutageFlows.build(net, 0)
    assert engine.transfer.shape == (net.n_branch, 0)
    _, gen, load = _random_states(net, 1, 0, seed=6)
    inj = jnp.asarray(_injections(net, gen, load)[0])
    res = engine.flows(inj, jnp.ones(net.n_branch))
    ref = gp.solve(net.with_loads(p_mw=load[0]).with_gens(p_mw=gen[0]))
    np.testing.assert_allclose(res.p_from_mw, ref.p_from_mw, atol=1e-9)
    out = jnp.ones(net.n_branch).at[3].set(0.0)
    assert not bool(engine.flows(inj, out).exact)
    with pytest.raises(gp.NetworkError, match="max_outages"):
        gp.OutageFlows.build(net, -1)


def test_loading_and_lost_load_helpers_by_hand():
    loading = gp.loading_percent(jnp.array([-50.0, 30.0, 10.0]), jnp.array([100.0, 20.0, np.nan]))
    np.testing.assert_allclose(loading[:2], [50.0, 150.0])
    assert np.isnan(loading[2])
    net = gp.load_case("ieee14")
    iso = np.zeros(net.n_bus, bool)
    iso[[net.topology.load_bus[0], net.topology.load_bus[2]]] = True
    served = np.arange(1.0, net.n_load + 1)
    expected = served[np.isin(net.topology.load_bus, np.flatnonzero(iso))].sum()
    assert float(gp.lost_load_mw(net.topology, jnp.asarray(served), jnp.asarray(iso))) == expected


def test_gradient_in_the_injections_equals_finite_differences():
    """Flows are linear in the injections for a given outage set, islands included:
    central differences are exact up to rounding."""
    net, engine = _engine("ieee14", 14)
    rng = np.random.default_rng(7)
    p = jnp.asarray(rng.normal(size=net.n_bus) * 10)
    weights = jnp.asarray(rng.normal(size=net.n_branch))

    def f(p, status):
        return jnp.sum(weights * engine.flows(p, status).p_from_mw)

    grad_f = jax.jit(jax.grad(f))
    f_all = jax.jit(jax.vmap(f, in_axes=(0, None)))  # all 2 n_bus perturbations at once
    step = 1e-3
    shifts = step * jnp.eye(net.n_bus)
    for out in ([2], [2, 6, 13], [13, 15]):  # the last two cut buses off
        status = jnp.ones(net.n_branch).at[jnp.array(out)].set(0.0)
        fd = (f_all(p + shifts, status) - f_all(p - shifts, status)) / (2 * step)
        np.testing.assert_allclose(grad_f(p, status), fd, atol=1e-8)
    batched = jax.vmap(grad_f, in_axes=(0, None))(jnp.stack([p, 2 * p]), status)
    np.testing.assert_allclose(batched[0], batched[1], atol=1e-9)  # linear: same gradient


def test_a_bus_cut_off_in_the_intact_grid_stays_cut_off():
    net, _ = gp.fill_missing_ratings(gp.load_case("ieee14"))
    status = np.ones(net.n_branch)
    status[13] = 0.0  # bus 8's only branch (7-8): bus 8 has no path to the reference
    net = net.with_branches(status=status)
    engine = gp.OutageFlows.build(net, 8)
    assert bool(engine.unreached.any())
    states, gen, load = _random_states(net, 12, 8, seed=8)
    states[:, 13] = 0.0
    _check_against_solve(net, engine, states, gen, load, atol=1e-8)


def test_sensitivity_rows_equal_brute_force_resolves_after_outages_and_splits():
    """Post-outage PTDF rows (what the safety filter uses) against one gp.solve per
    perturbed generator: the flow change per MW moved from the reference unit."""
    net, engine = _engine("ieee118", 16)
    status, gen, load = _random_states(net, 4, 6, seed=7)  # states 0 and 3 split the grid
    gen_bus = net.topology.gen_bus
    slack = np.flatnonzero(np.asarray(net.gen.slack_weight) > 0)
    movable = [g for g in range(net.n_gen) if g not in slack]
    rows = jax.jit(
        jax.vmap(lambda s, b: engine.sensitivity(engine.system(s), b), in_axes=(None, 0))
    )
    split = 0
    for i in range(len(status)):
        base = net.with_loads(p_mw=load[i]).with_branches(status=status[i])
        ref0 = np.nan_to_num(np.asarray(gp.solve(base.with_gens(p_mw=gen[i])).p_from_mw))
        monitored = np.flatnonzero(status[i] > 0)[::9]
        got = np.asarray(rows(jnp.asarray(status[i]), jnp.asarray(monitored)))
        for g in movable[::3]:
            moved = gen[i].copy()
            moved[g] += 1.0
            ref = np.nan_to_num(np.asarray(gp.solve(base.with_gens(p_mw=moved)).p_from_mw))
            np.testing.assert_allclose(
                got[:, gen_bus[g]], (ref - ref0)[monitored], atol=1e-8, err_msg=f"{i} {g}"
            )
        split += bool(np.asarray(gp.solve(base.with_gens(p_mw=gen[i])).bus_isolated).any())
    assert split >= 1
    # a branch that is out has no sensitivity at all
    out = int(np.flatnonzero(status[0] == 0)[0])
    assert not np.any(np.asarray(rows(jnp.asarray(status[0]), jnp.asarray([out]))))


def test_transfer_flows_equal_the_difference_of_two_resolves():
    """``transfer_flows(system, a, b)``: the flow change per MW moved from bus b to bus a
    after outages (islands included) equals the difference of two re-solves with one
    unit 1 MW up and another 1 MW down; 0 where either bus is cut off."""
    net, engine = _engine("ieee30", 16)
    status, gen, load = _random_states(net, 24, 16, seed=7)
    gen_bus = np.asarray(net.topology.gen_bus)
    rng = np.random.default_rng(8)
    pairs = np.array([rng.choice(net.n_gen, 2, replace=False) for _ in range(len(status))])
    moved = jax.jit(
        jax.vmap(lambda s, a, b: engine.transfer_flows(engine.system(s), a, b), in_axes=(0, 0, 0))
    )(jnp.asarray(status), jnp.asarray(gen_bus[pairs[:, 0]]), jnp.asarray(gen_bus[pairs[:, 1]]))
    cut = 0
    for i, (up, down) in enumerate(pairs):
        base = net.with_loads(p_mw=load[i]).with_branches(status=status[i])
        shifted = gen[i].copy()
        shifted[up] += 1.0
        shifted[down] -= 1.0
        ref = np.asarray(gp.solve(base.with_gens(p_mw=shifted)).p_from_mw) - np.asarray(
            gp.solve(base.with_gens(p_mw=gen[i])).p_from_mw
        )
        np.testing.assert_allclose(moved[i], np.nan_to_num(ref), atol=1e-9, err_msg=str(i))
        isolated = np.asarray(gp.solve(base).bus_isolated)
        cut += bool(isolated[gen_bus[up]] or isolated[gen_bus[down]])
    assert cut >= 1  # a unit on a cut-off bus was among them
