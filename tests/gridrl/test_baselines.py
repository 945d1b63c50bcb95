"""Baselines on the same seeded days: the oracle is cheapest, do-nothing meets overloads."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gridrl.baselines import evaluate_baselines, format_table, main


@pytest.fixture(scope="module")
def level4():
    return evaluate_baselines(
        "ieee118",
        episodes=1,
        seed=0,
        level=4,
        baselines=("do_nothing", "greedy", "random", "dc_opf", "day_ahead"),
    )


def test_dc_opf_oracle_is_best_on_cost_and_do_nothing_overloads(level4):
    costs = {name: m.cost for name, m in level4.items()}
    assert min(costs, key=costs.get) in ("dc_opf", "day_ahead"), costs
    assert level4["do_nothing"].overload_step_share > 0.05
    assert level4["dc_opf"].survival >= level4["do_nothing"].survival
    # the day-ahead reference plans the whole day: nothing overloads, nothing trips
    assert level4["day_ahead"].overload_step_share == 0 and level4["day_ahead"].trips == 0
    assert level4["day_ahead"].cost < level4["do_nothing"].cost
    for m in level4.values():
        assert 0 <= m.overload_step_share <= 1 and 0 < m.survival <= 1
        assert m.energy_not_served_mwh >= 0 and m.trips >= 0 and m.interventions >= 0
        # deliberate and involuntary energy are the two parts of the total
        assert m.deliberate_shed_mwh >= 0 and m.involuntary_ens_mwh >= 0
        assert abs(m.deliberate_shed_mwh + m.involuntary_ens_mwh - m.energy_not_served_mwh) <= (
            1e-3 * max(1.0, m.energy_not_served_mwh)
        )
        assert 0 <= m.emergency_step_share <= m.overload_step_share <= 1
        assert m.blackout_free_days == (m.survival == 1.0)  # one day
    # do-nothing overloads lines: its highest loading is above the continuous rating
    assert level4["do_nothing"].max_loading_percent > 100


def test_table_and_cli(level4, capsys):
    table = format_table(level4)
    for name in ("do_nothing", "greedy", "random", "dc_opf", "day_ahead"):
        assert name in table
    assert (
        main(
            [
                "--case",
                "ieee14",
                "--episodes",
                "1",
                "--level",
                "1",
                "--baselines",
                "do_nothing,greedy",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "ieee14, level 1" in out and "greedy" in out and "dc_opf" not in out
    with pytest.raises(SystemExit):
        main(["--baselines", "magic"])


def test_batched_days_equal_step_by_step_days(name="random"):
    """The vmapped evaluation (all days at once) runs the very days of the step-by-step
    loop: same keys, same stops at a blackout, same trips. In float64: in float32 the
    batched and the single-environment products round differently (about 1e-7), which
    can flip a line sitting at its trip threshold and so change a day."""
    from gridrl.baselines import day_records, make_policy
    from gridrl.env import make

    env, params = make("ieee30", level=4, episode_steps=24, dtype="float64")
    policy = make_policy(name, env)
    fast = day_records(env, params, policy, episodes=3, seed=5, jit=True)
    slow = day_records(env, params, jax.jit(policy), episodes=3, seed=5, jit=False)
    for field in fast:
        np.testing.assert_allclose(fast[field], slow[field], rtol=2e-4, atol=1e-3, err_msg=field)
    assert fast["operated"].sum() > 0


def test_greedy_relieves_a_line_overloaded_by_an_outage():
    """After an outage, greedy works on the post-outage flows: a line that only the
    outage overloads gets relieved (brute-force flows from gp.solve with the line out)."""
    import dataclasses

    import gridphysics as gp
    from gridrl.baselines import greedy_dispatch
    from gridrl.env import make

    env, params = make("ieee14", level=1)
    _, state = env.reset(jax.random.key(3), params)
    net = params.network.astype(jnp.float64)
    bridges = set(np.flatnonzero(~env.can_fail))
    k = next(b for b in range(env.n_branch) if b not in bridges)
    on = np.ones(env.n_branch)
    on[k] = 0.0
    solved = gp.solve(
        net.with_loads(p_mw=state.served_mw)
        .with_gens(p_mw=state.gen_mw)
        .with_branches(status=jnp.asarray(on))
    )
    flow = np.abs(np.asarray(solved.p_from_mw))
    flow[k] = 0.0
    line = int(np.argmax(flow))
    rate = np.asarray(net.branch.rate_a_mva, np.float64).copy()
    rate[:] = np.maximum(rate, 10 * flow.max())  # nothing else binds
    rate[line] = flow[line] / 1.2  # 120 % after the outage
    params = dataclasses.replace(
        params, network=params.network.with_branches(rate_a_mva=jnp.asarray(rate, env.dtype))
    )
    state = dataclasses.replace(state, branch_on=jnp.asarray(on, env.dtype))
    p = np.asarray(greedy_dispatch(env, state, params), np.float64)
    moved = gp.solve(
        net.with_loads(p_mw=state.served_mw).with_gens(p_mw=p).with_branches(status=jnp.asarray(on))
    )
    after = abs(float(np.asarray(moved.p_from_mw)[line]))
    assert after < flow[line] - 0.05 * rate[line], (after, flow[line], rate[line])
    assert abs(p.sum() - float(np.sum(state.gen_mw))) < 1e-3  # power moved, not created


def test_an_empty_baseline_list_and_bad_inputs_are_refused(capsys):
    """--baselines '' printed an empty table and exited 0; evaluation_params(None) was a
    raw AttributeError; load_case('') said '.' is a directory (hostile rerun 9)."""
    import gridphysics as gp
    import gridrl
    from gridrl.baselines import main as baselines_main
    from gridrl.errors import EnvInputError

    for empty in ("", ","):
        with pytest.raises(SystemExit) as exc:
            baselines_main(["--baselines", empty])
        assert exc.value.code == 2
        assert "--baselines: name at least one" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # greedy ran twice for one row (hostile rerun 11)
        baselines_main(["--baselines", "greedy,do_nothing,greedy"])
    assert "--baselines: greedy given more than once" in capsys.readouterr().err
    with pytest.raises(EnvInputError, match="got NoneType"):
        gridrl.evaluation_params(None)
    with pytest.raises(gp.UnknownCaseError, match="needs a case name or a path, got ''"):
        gp.load_case("")


def test_evaluate_case_check_compares_grids_not_file_names(tmp_path):
    """--case case14 was refused for a policy trained on ieee14 (the same grid), and a
    file named ieee14.m holding another grid was accepted (hostile rerun 9)."""
    import shutil

    from gridphysics.cases import cases_dir
    from gridrl.evaluate import _same_case

    shutil.copy(cases_dir() / "matpower/case14.m", tmp_path / "copy.m")
    (tmp_path / "ieee14.m").write_text((cases_dir() / "matpower/case30.m").read_text())
    assert _same_case("case14", "ieee14") and _same_case(str(tmp_path / "copy.m"), "ieee14")
    assert not _same_case(str(tmp_path / "ieee14.m"), "ieee14")
    assert not _same_case("ieee30", "ieee14")
    assert not _same_case("grid2op:l2rpn_case14_sandbox", "ieee14")
