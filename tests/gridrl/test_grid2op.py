"""Grid2Op environments as gridrl cases (issue 13): the recorded days and the physics
agree with Grid2Op's own reader and backend; only environments shipped inside the
``grid2op`` package are used (nothing is downloaded)."""

from __future__ import annotations

import shutil
import warnings
from functools import cache

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gridphysics as gp
from gridrl import scenarios
from gridrl.env import evaluation_params, make
from gridrl.errors import EnvOptionError
from gridrl.evaluate import _recorded_note
from gridrl.grid2op_data import find_env, load_case

grid2op = pytest.importorskip("grid2op")

SMALL = "l2rpn_case14_sandbox"  # 14 buses, 3 chronics
LARGE = "l2rpn_wcci_2022_dev"  # 118 buses with storage units, 1 chronic


@cache
def _case(name):
    return load_case(f"grid2op:{name}")


def _grid2op_env(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return grid2op.make(name, test=True)


@cache
def _small_env():
    return make(f"grid2op:{SMALL}", n_areas=2, level=2)


def _aggregate(case, per_load):
    out = np.zeros(case.network.n_load)
    np.add.at(out, case.load_map, per_load)
    return out


@pytest.mark.parametrize("name", [SMALL, LARGE])
def test_ac_flows_equal_grid2op_s_backend_step_by_step(name):
    """Grid2Op's injections at three do-nothing steps, solved by gridphysics AC: the
    origin flows equal Grid2Op's observation (float32) on every line and transformer."""
    case = _case(name)
    env = _grid2op_env(name)
    env.reset()
    net = case.network
    kv = np.asarray(net.bus.base_kv)[np.asarray(net.topology.gen_bus)]
    for _ in range(2):
        obs, _, done, _ = env.step(env.action_space({}))
        assert not done
        grid = net.with_loads(
            p_mw=_aggregate(case, obs.load_p), q_mvar=_aggregate(case, obs.load_q)
        ).with_gens(p_mw=obs.gen_p, vm_pu=obs.gen_v / kv)
        res = gp.solve(grid, "ac")
        assert bool(res.converged)
        np.testing.assert_allclose(np.asarray(res.p_from_mw), obs.p_or, atol=1e-4)
        slack = np.asarray(net.gen.slack_weight) > 0
        np.testing.assert_allclose(np.asarray(res.gen_p_mw)[slack], obs.gen_p[slack], atol=1e-4)


def test_recorded_days_are_grid2op_s_chronics_averaged_to_the_env_step():
    """Day d, step j is the mean of the three 5-minute rows from midnight + 15 j min, as
    Grid2Op's own reader gives them (its observations at 00:00, 00:05, 00:10, ...)."""
    case = _case(SMALL)
    env = _grid2op_env(SMALL)
    chronic = case.day_chronic[0]
    day = case.day_chronic.index(chronic)
    obs = env.reset(options={"time serie id": chronic})
    assert (obs.hour_of_day, obs.minute_of_hour) == (0, 0)
    rows = [obs]
    for _ in range(5):
        rows.append(env.step(env.action_space({}))[0])
    for j in range(2):
        load = np.mean([_aggregate(case, o.load_p) for o in rows[3 * j : 3 * j + 3]], axis=0)
        gen = np.mean([o.gen_p for o in rows[3 * j : 3 * j + 3]], axis=0)
        np.testing.assert_allclose(case.load_mw[day, j], load, atol=1e-3)
        renewable = case.renewable  # their recorded output is not redispatched by Grid2Op
        np.testing.assert_allclose(case.gen_mw[day, j][renewable], gen[renewable], atol=1e-3)
    assert case.load_mw.shape == (case.n_days, scenarios.STEPS_PER_DAY, case.network.n_load)


def test_characteristics_come_from_the_environment_and_assumptions_are_said():
    case = _case(LARGE)
    env = _grid2op_env(LARGE)
    net = case.network
    np.testing.assert_allclose(np.asarray(net.gen.p_max_mw), env.gen_pmax)
    np.testing.assert_allclose(np.asarray(net.gen.cost_c1), env.gen_cost_per_MW)
    ramped = env.gen_max_ramp_up > 0
    np.testing.assert_allclose(  # Grid2Op: MW per 5-minute step
        np.asarray(net.gen.ramp_mw_per_min)[ramped], env.gen_max_ramp_up[ramped] / 5
    )
    assert case.renewable.tolist() == list(env.gen_renewable)
    # ratings: Grid2Op's thermal limits (A) at the origin bus's nominal voltage
    kv = np.asarray(net.bus.base_kv)[np.asarray(net.topology.branch_from)]
    np.testing.assert_allclose(
        np.asarray(net.branch.rate_a_mva),
        np.sqrt(3) * kv * env.get_thermal_limit() / 1000,
        rtol=1e-6,
    )
    assert "config.py" in case.rating_source
    assert any("storage" in a for a in case.assumed)


def test_make_replays_training_days_and_evaluation_draws_the_held_out_ones():
    env, params = _small_env()
    case = env.recorded
    assert case.eval_days.sum() >= 1 and (~case.eval_days).sum() >= 1
    keys = jax.random.split(jax.random.key(0), 64)
    reset = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))
    train_days = np.asarray(reset(keys, params)[1].day)
    eval_days = np.asarray(reset(keys, evaluation_params(params))[1].day)
    assert not case.eval_days[train_days].any() and case.eval_days[eval_days].all()
    # chronics, not days, are split: no chronic is in both sets
    assert not {case.day_chronic[d] for d in train_days} & {case.day_chronic[d] for d in eval_days}
    _, state = env.reset(jax.random.key(1), params)
    day = int(state.day)
    np.testing.assert_allclose(np.asarray(state.load_mw), case.load_mw[day, 0], rtol=1e-5)
    zero = {a: jnp.zeros(env.action_space(a).shape, env.dtype) for a in env.agents}
    _, state, _, _, info = jax.jit(env.step)(jax.random.key(2), state, zero, params)
    np.testing.assert_allclose(np.asarray(state.load_mw), case.load_mw[day, 1], rtol=1e-5)
    assert int(state.day) == day and float(info["involuntary_ens_mwh"]) == 0.0
    held = case.day_chronic[int(np.flatnonzero(case.eval_days)[0])]
    note = _recorded_note(env)  # the report says which recorded days it evaluated on
    assert f"chronic(s) {held}" in note and case.day_chronic[train_days[0]] not in note


def test_bad_specs_are_clear_errors_and_config_py_is_never_run(tmp_path):
    with pytest.raises(EnvOptionError, match=r"no Grid2Op environment 'no_such_env'.*l2rpn_case14"):
        find_env("grid2op:no_such_env")
    with pytest.raises(EnvOptionError, match=r"no grid\.json"):
        find_env(f"grid2op:{tmp_path}")
    with pytest.raises(EnvOptionError, match="grid2op:<"):
        make("grid2op:")
    copy = tmp_path / "copied"
    shutil.copytree(find_env(SMALL), copy, ignore=shutil.ignore_patterns("__pycache__"))
    marker = tmp_path / "config_ran"
    limits = [100.0 + i for i in range(20)]
    (copy / "config.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\nlimits = {limits}\n"
        "config = {'thermal_limits': limits}\n"
    )
    case = load_case(f"grid2op:{copy}")
    assert not marker.exists()
    kv = np.asarray(case.network.bus.base_kv)[np.asarray(case.network.topology.branch_from)]
    np.testing.assert_allclose(
        np.asarray(case.network.branch.rate_a_mva), np.sqrt(3) * kv * np.array(limits) / 1000
    )
    (copy / "chronics" / "0000" / "load_p.csv.bz2").write_bytes(b"BZh9 not bz2")
    with pytest.raises(EnvOptionError, match=r"load_p\.csv\.bz2"):
        load_case(f"grid2op:{copy}")


def _play(g2o_env, agent, steps, chronic=0):
    """(steps survived, illegal, ambiguous, steps that redispatched, steps that
    curtailed) of ``agent`` on one chronic of Grid2Op."""
    obs = g2o_env.reset(options={"time serie id": chronic})
    agent.reset(obs)
    n = illegal = ambiguous = moved = curtailed = 0
    done, reward = False, 0.0
    while not done and n < steps:
        action = agent.act(obs, reward, done)
        moved += bool(np.any(action.redispatch != 0))
        curtailed += bool(np.any((action.curtail >= 0) & (action.curtail < 1)))
        obs, reward, done, info = g2o_env.step(action)
        n += 1
        illegal += bool(info["is_illegal"])
        ambiguous += bool(info["is_ambiguous"])
    return n, illegal, ambiguous, moved, curtailed


@pytest.mark.parametrize("name,steps", [(SMALL, 60), (LARGE, 20)])
def test_a_gridrl_policy_acts_legally_inside_grid2op(name, steps):
    """Random gridrl actions through Grid2OpAgent: redispatch and curtailment at almost
    every step, all of which Grid2Op accepts (0 illegal, 0 ambiguous); the greedy policy
    survives as long as Grid2Op's DoNothingAgent on the same chronic."""
    from grid2op.Agent import DoNothingAgent

    from gridrl.baselines import make_policy
    from gridrl.grid2op import Grid2OpAgent

    g2o = _grid2op_env(name)
    env, params = _small_env() if name == SMALL else make(f"grid2op:{name}", n_areas=2)
    agent = Grid2OpAgent(  # every action is sent: their legality is what is tested
        make_policy("random", env), g2o.action_space, env, params, simulate=False
    )
    assert agent.can_redispatch and agent.can_curtail
    survived, illegal, ambiguous, moved, curtailed = _play(g2o, agent, steps)
    assert (illegal, ambiguous) == (0, 0)
    assert moved >= 0.9 * survived and curtailed >= 0.5 * survived  # the actions act
    reference = _play(g2o, DoNothingAgent(g2o.action_space), steps)[0]
    greedy = Grid2OpAgent(make_policy("greedy", env), g2o.action_space, env, params)
    survived, illegal, ambiguous, _, _ = _play(g2o, greedy, steps)
    assert (illegal, ambiguous) == (0, 0) and survived >= reference
    with pytest.raises(EnvOptionError, match="not the same grid"):
        other = _grid2op_env(LARGE if name == SMALL else SMALL)
        Grid2OpAgent(make_policy("greedy", env), other.action_space, env, params)


def test_grid2op_eval_runs_grid2op_s_runner_and_counts_refused_actions(tmp_path):
    """The CLI with Grid2Op's Runner: gridrl's greedy policy and Grid2Op's do-nothing
    on the held-out chronic; an agent whose redispatch exceeds the ramps is counted as
    ambiguous at every step (the counter reads Grid2Op's own verdicts)."""
    import json

    from grid2op.Agent import BaseAgent

    from gridrl.grid2op_eval import l2rpn_score, main, run_agents

    assert (
        main(["--env", SMALL, "--max-steps", "8", "--baselines", "greedy", "--out", str(tmp_path)])
        == 0
    )
    out = json.loads((tmp_path / "grid2op_eval.json").read_text())
    held = {_case(SMALL).day_chronic[d] for d in np.flatnonzero(_case(SMALL).eval_days)}
    for name in ("grid2op DoNothingAgent", "gridrl greedy"):
        (record,) = out["results"][name]["chronics"]
        assert record["chronic"] in held and record["steps_survived"] == 8
        assert (record["illegal_actions"], record["ambiguous_actions"]) == (0, 0)
    assert "| gridrl greedy |" in (tmp_path / "report.md").read_text()
    # Grid2Op's own L2RPN score on the same chronic: do-nothing is its zero by definition,
    # and its reference runs went to a copy, not into the installed environment
    assert out["score"]["name"] == "L2RPN 2020 score"
    scores = out["score"]["per_agent"]
    assert set(scores) == {"grid2op DoNothingAgent", "gridrl greedy"}
    assert scores["grid2op DoNothingAgent"] == {record["chronic"]: 0.0}
    assert set(scores["gridrl greedy"]) == {record["chronic"]}
    assert -100 <= scores["gridrl greedy"][record["chronic"]] <= 100
    assert not list(find_env(SMALL).glob("_statistics_*"))
    assert "L2RPN 2020 score" in (tmp_path / "report.md").read_text()

    class DropsALoad(BaseAgent):  # a load cut off is a game over at the first step
        def act(self, obs, reward, done=False):
            return self.action_space({"set_bus": {"loads_id": [(0, -1)]}})

    label, cut = l2rpn_score(
        find_env(SMALL), [record["chronic"]], lambda space: {"cut": DropsALoad(space)}, 4
    )
    # Grid2Op counts the failing step as played: the load of the other 3 of 4 steps (about
    # equal over 15 minutes) is lost at the highest marginal cost, 3/4 of the way from
    # do-nothing's cost (0, small next to it) to the whole load's (-100)
    assert label == "L2RPN 2020 score"
    assert cut["cut"][record["chronic"]] == pytest.approx(-75, abs=2)

    class TooFast(BaseAgent):
        def act(self, obs, reward, done=False):
            return self.action_space({"redispatch": [(0, 1000.0)]})

    g2o = _grid2op_env(SMALL)
    res = run_agents(g2o, {"bad": TooFast(g2o.action_space)}, [0], 4)
    assert res["bad"]["chronics"][0]["ambiguous_actions"] == 4
    with pytest.raises(SystemExit):
        main(["--env", SMALL, "--max-steps", "0"])


def test_a_grid_json_naming_a_module_runs_nothing_and_bad_chronics_are_typed(tmp_path, monkeypatch):
    """Hostile rerun 4: grid.json made pandapower import a module of the environment's
    own directory (its code ran); a non-number in a chronic was a bare ValueError; the
    decompressed size of a bz2 chronic was not bounded (8 KB grew to 2.5 GB)."""
    import bz2
    import json

    from gridrl import grid2op_data

    copy = tmp_path / "env"
    shutil.copytree(find_env(SMALL), copy, ignore=shutil.ignore_patterns("__pycache__"))
    marker = tmp_path / "ran"
    (copy / "evil_grid_module.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    monkeypatch.syspath_prepend(str(copy))
    grid = json.loads((copy / "grid.json").read_text())
    grid["_object"]["zzz"] = {"_module": "evil_grid_module", "_class": "X", "_object": "1"}
    (copy / "grid.json").write_text(json.dumps(grid))
    with pytest.raises(EnvOptionError, match="evil_grid_module"):
        load_case(f"grid2op:{copy}")
    assert not marker.exists()
    shutil.copy(find_env(SMALL) / "grid.json", copy / "grid.json")
    chronic = copy / "chronics" / "0000" / "load_p.csv.bz2"
    text = bz2.decompress(chronic.read_bytes()).decode()
    lines = text.splitlines()
    lines[5] = "abc" + lines[5][lines[5].index(";") :]
    chronic.write_bytes(bz2.compress(("\n".join(lines) + "\n").encode()))
    with pytest.raises(EnvOptionError, match="not a number"):
        load_case(f"grid2op:{copy}")
    chronic.write_bytes(bz2.compress(text.encode()))
    monkeypatch.setattr(grid2op_data, "MAX_CHRONIC_CHARS", 1000)
    with pytest.raises(EnvOptionError, match="once decompressed"):
        load_case(f"grid2op:{copy}")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A copy of the small environment that the hostile tests below alter one file at
    a time (each restores what it altered)."""
    copy = tmp_path_factory.mktemp("grid2op") / "env"
    shutil.copytree(find_env(SMALL), copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def _altered(root, relative, content):
    """Write ``content`` (str or bytes) to ``root / relative``; return a function that
    puts the original back."""
    path = root / relative
    before = path.read_bytes() if path.exists() else None
    path.write_bytes(content.encode() if isinstance(content, str) else content)

    def restore():
        if before is None:
            path.unlink()
        else:
            path.write_bytes(before)

    return restore


def _ratings_with_config(root, text):
    """The ratings and assumptions of the environment at ``root`` with ``config.py``
    replaced by ``text`` (put back afterwards)."""
    restore = _altered(root, "config.py", text)
    try:
        case = load_case(f"grid2op:{root}")
    finally:
        restore()
    return np.asarray(case.network.branch.rate_a_mva), case.assumed


def test_prods_charac_and_config_py_faults_are_typed_and_values_checked(pristine):
    """Hostile rerun 4: prods_charac.csv with a missing column, another separator, a
    duplicate row or a non-number raised KeyError/ValueError; NaN Pmax became 1e9 MW;
    an infinite cost gave NaN rewards; a 400-digit limit raised OverflowError; limits of
    0 or below passed; config.py was read by its last binding, not as Python runs it."""
    spec = f"grid2op:{pristine}"
    charac = (pristine / "prods_charac.csv").read_text()
    header, *rows = charac.strip().splitlines()
    cols = header.split(",")

    def with_cell(row, column, value):
        cells = rows[row].split(",")
        cells[cols.index(column)] = value
        return "\n".join([header, *rows[:row], ",".join(cells), *rows[row + 1 :]]) + "\n"

    bad_charac = {
        "no column": (charac.replace("Pmax", "P_max", 1), r"no column \['Pmax'\]"),
        "semicolons": (charac.replace(",", ";"), "comma-separated"),
        "twice": (charac + rows[0] + "\n", "occur twice"),
        "not a number": (with_cell(1, "Pmax", "abc"), "Pmax of 'gen_2_1' is 'abc'"),
        "NaN Pmax": (with_cell(0, "Pmax", "nan"), "gen_1_0.*Pmax nan"),
        "Pmin above Pmax": (with_cell(0, "Pmin", "500"), "Pmin <= Pmax"),
        "infinite cost": (with_cell(0, "marginal_cost", "inf"), "marginal_cost of 'gen_1_0'"),
        "huge cost": (with_cell(0, "marginal_cost", "1e300"), "within"),
        "negative ramp": (with_cell(0, "max_ramp_up", "-5"), "is -5.0, not a ramp"),
        "unknown type": (with_cell(0, "type", "fusion"), "fusion"),
        "empty": ("", "comma-separated"),
    }
    for text, message in bad_charac.values():
        restore = _altered(pristine, "prods_charac.csv", text)
        with pytest.raises(EnvOptionError, match=message):
            load_case(spec)
        restore()
    # as Grid2Op reads them: " Wind " is refused there too (rerun 5: it was accepted)
    more = {
        "type with spaces": (with_cell(2, "type", " Wind "), "lower case"),
        "another generator": (charac + rows[0].replace("gen_1_0", "gen_99_9") + "\n", "lacks"),
        "huge ramp": (with_cell(0, "max_ramp_up", "1e308"), "max_ramp_up of 'gen_1_0'"),
    }
    for text, message in more.values():
        restore = _altered(pristine, "prods_charac.csv", text)
        with pytest.raises(EnvOptionError, match=message):
            load_case(spec)
        restore()
    no_ramp = "\n".join(
        ",".join(c for j, c in enumerate(line.split(",")) if j != cols.index("max_ramp_up"))
        for line in [header, *rows]
    )
    restore = _altered(pristine, "prods_charac.csv", no_ramp + "\n")
    assert any("no max_ramp_up column" in a for a in load_case(spec).assumed)  # a KeyError
    restore()

    reference = _case(SMALL)
    kv = np.asarray(reference.network.bus.base_kv)[
        np.asarray(reference.network.topology.branch_from)
    ]
    n = reference.network.n_branch
    amps = [100.0 + i for i in range(n)]
    bad_config = {
        "a 400-digit limit": (f"config = {{'thermal_limits': [{'9' * 400}] + {amps[1:]}}}", ""),
        "too few": ("config = {'thermal_limits': " + str(amps[1:]) + "}", f"{n - 1} thermal"),
        "not UTF-8": (b"config = {'thermal_limits': [1.0]} # \xff\xfe", "UTF-8"),
        # was blamed on the CSV: "columns ['load_2_1'] occur twice" (hostile rerun 8)
        "two columns, one load": (
            "config = {'names_chronics_to_grid': {'loads': {'a': 'load_2_1', 'b': 'load_2_1'}}}",
            r"names_chronics_to_grid\['loads'\] maps \['a', 'b'\] to one element",
        ),
    }
    for what, (text, message) in bad_config.items():
        restore = _altered(pristine, "config.py", text)
        if what == "a 400-digit limit":  # a list expression, not a literal: unreadable
            assert any("only running" in a for a in load_case(spec).assumed)
        else:
            with pytest.raises(EnvOptionError, match=message):
                load_case(spec)
        restore()

    def ratings(text):
        return _ratings_with_config(pristine, text)

    expected = np.sqrt(3) * kv * np.array(amps) / 1000
    other = [a + 50 for a in amps]
    # Python binds the name when config is built: a later rebinding changes nothing
    rate, _ = ratings(f"lim = {amps}\nconfig = {{'thermal_limits': lim}}\nlim = {other}\n")
    np.testing.assert_allclose(rate, expected)
    # the last assignment to config wins, and config["thermal_limits"] = ... binds
    rate, _ = ratings(
        f"config = {{'thermal_limits': {other}}}\nconfig = {{'thermal_limits': {amps}}}\n"
    )
    np.testing.assert_allclose(rate, expected)
    rate, _ = ratings(f"config = {{'thermal_limits': None}}\nconfig['thermal_limits'] = {amps}\n")
    np.testing.assert_allclose(rate, expected)
    # by line name, in any order
    names = reference.names["lines"]
    by_name = dict(reversed(list(zip(names, amps, strict=True))))
    rate, _ = ratings(f"config = {{'thermal_limits': {by_name!r}}}\n")
    np.testing.assert_allclose(rate, expected)
    # changed in a way only running it would show: said, and the grid's limits used
    _, assumed = ratings(f"config = {{'thermal_limits': {amps}}}\nconfig.update(x=1)\n")
    assert any("only running" in a for a in assumed)
    _, assumed = ratings("config = {'thermal_limits': " + "[" * 500 + "]" * 500 + "}\n")
    assert any("config.py" in a for a in assumed)  # nested too deep for the parser
    # rerun 5: mutations after config was built changed what Grid2Op reads, unseen
    for later in (
        "config['thermal_limits'][0] = 1.0",
        "c2 = config\nc2['thermal_limits'] = [1.0] * 20",
        "lim[0] = 1.0",
        "lim.sort()",
        "lim += [1.0]",
    ):
        _, assumed = ratings(f"lim = {amps}\nconfig = {{'thermal_limits': lim}}\n{later}\n")
        assert any("only running" in a for a in assumed), later
    _, assumed = ratings(f"globals()['config'] = {{'thermal_limits': {other}}}\n")
    assert any("only running" in a for a in assumed)
    rate, _ = ratings(f'"doc"\nimport os\nconfig = {{"thermal_limits": {amps}}}\nx = 3\n')
    np.testing.assert_allclose(rate, expected)  # harmless statements keep it readable
    for tiny in (1e-300, 0.0, -5.0):  # passed make, then a NaN loading blamed the state
        restore = _altered(
            pristine, "config.py", "config = {'thermal_limits': " + str([tiny, *amps[1:]]) + "}"
        )
        with pytest.raises(EnvOptionError, match="not a finite rating of at least"):
            load_case(spec)
        restore()


def test_chronic_and_grid_faults_are_typed_and_maintenance_is_matched_by_name(pristine):
    """Hostile rerun 4: a start date of 9999-12-31 raised OverflowError, non-UTF-8 info
    files UnicodeDecodeError, a chronics file NotADirectoryError, an over-long name
    OSError, a load out of service KeyError, a load of 1e300 MW KeyError; time
    intervals such as '+0:05' or '0:05:30' were accepted; maintenance columns were
    matched by position, not by line name."""
    import bz2
    import json

    spec = f"grid2op:{pristine}"
    folder = "chronics/0000"
    for relative, content, message in (
        (f"{folder}/start_datetime.info", "9999-12-31 23:55", "last date"),
        (f"{folder}/start_datetime.info", b"\xff\xfe2019", "UTF-8"),
        (f"{folder}/time_interval.info", "+0:05", "HH:MM"),
        (f"{folder}/time_interval.info", "00:05:30", "HH:MM"),
        (f"{folder}/time_interval.info", "0_0:5", "HH:MM"),
        (f"{folder}/time_interval.info", "00:00", "no time"),  # was "does not divide"
    ):
        restore = _altered(pristine, relative, content)
        with pytest.raises(EnvOptionError, match=message):
            load_case(spec)
        restore()
    with pytest.raises(EnvOptionError, match="no Grid2Op environment"):
        load_case("grid2op:" + "x" * 5000)

    grid = (pristine / "grid.json").read_text()
    data = json.loads(grid)
    load = json.loads(data["_object"]["load"]["_object"])
    load["data"][0][load["columns"].index("in_service")] = False
    data["_object"]["load"]["_object"] = json.dumps(load)
    restore = _altered(pristine, "grid.json", json.dumps(data))
    with pytest.raises(EnvOptionError, match="out of service"):
        load_case(spec)
    restore()

    chronic = pristine / folder / "load_p.csv.bz2"
    text = bz2.decompress(chronic.read_bytes()).decode()
    lines = text.splitlines()
    lines[3] = "1e300" + lines[3][lines[3].index(";") :]
    restore = _altered(
        pristine, f"{folder}/load_p.csv.bz2", bz2.compress("\n".join(lines).encode())
    )
    with pytest.raises(EnvOptionError, match=r"row 3.*within"):
        load_case(spec)
    restore()
    lines[3] = "-1e6" + lines[3][lines[3].index(";") :]  # passed make, then stepped on
    restore = _altered(
        pristine, f"{folder}/load_p.csv.bz2", bz2.compress("\n".join(lines).encode())
    )
    with pytest.raises(EnvOptionError, match=r"beyond the .* MW of all the grid's generators"):
        load_case(spec)
    restore()

    # maintenance by line name: the same file with its columns reversed gives the same
    # outages; a file naming a line the grid lacks is refused
    names = list(_case(SMALL).names["lines"])
    steps = len(lines) - 1
    rows = np.zeros((steps, len(names)))
    rows[30:60, 2] = 1.0  # line 2 out from row 30 to 59

    def table(columns, values):
        body = "\n".join(";".join(f"{v:g}" for v in row) for row in values)
        return bz2.compress((";".join(columns) + "\n" + body + "\n").encode())

    restore = _altered(pristine, f"{folder}/maintenance.csv.bz2", table(names[::-1], rows[:, ::-1]))
    out = load_case(spec).line_out
    restore()
    first_day = out[0]
    assert first_day[:, 2].any() and not np.delete(first_day, 2, axis=1).any()
    renamed = ["no_such_line", *names[1:]]
    restore = _altered(pristine, f"{folder}/maintenance.csv.bz2", table(renamed, rows))
    with pytest.raises(EnvOptionError, match=r"no_such_line|no column"):
        load_case(spec)
    restore()

    shutil.move(pristine / "chronics", pristine / "chronics_dir")
    (pristine / "chronics").write_text("not a folder")
    try:
        with pytest.raises(EnvOptionError, match="not a directory"):
            load_case(spec)
    finally:
        (pristine / "chronics").unlink()
        shutil.move(pristine / "chronics_dir", pristine / "chronics")


def test_grid2op_agent_refuses_an_action_space_of_other_elements_with_the_same_counts():
    from dataclasses import replace

    from gridrl.baselines import make_policy
    from gridrl.grid2op import Grid2OpAgent

    env, params = make(f"grid2op:{SMALL}", n_areas=2)
    names = dict(env.recorded.names)
    names["prods"] = names["prods"][::-1]  # same generators, another order
    env.recorded = replace(env.recorded, names=names)
    g2o = _grid2op_env(SMALL)
    with pytest.raises(EnvOptionError, match=r"prods are not.*not the same grid"):
        Grid2OpAgent(make_policy("greedy", env), g2o.action_space, env, params)


def test_replay_noise_is_an_option_for_training_days_and_never_in_evaluation():
    """Issue 13: noise on the recorded days only as an option. With replay_noise=1 at
    level 2 the loads a step later are the record times 1 + the env's AR(1) noise
    (hand-computed from the state's noise), and evaluation replays the record."""
    from gridrl.config import ConfigError, TrainConfig

    env, params = make(f"grid2op:{SMALL}", n_areas=2, level=2, replay_noise=1.0)
    case = env.recorded
    zero = {a: jnp.zeros(env.action_space(a).shape, env.dtype) for a in env.agents}
    step = jax.jit(env.step)
    for p, noisy in ((params, True), (evaluation_params(params), False)):
        _, state = env.reset(jax.random.key(3), p)
        day = int(state.day)
        for k in range(3):
            _, state, _, _, _ = step(jax.random.key(10 + k), state, zero, p)
        record = case.load_mw[day, 3]
        noise = np.asarray(state.noise, np.float64)
        assert np.abs(noise).max() > 1e-3  # level 2: the AR(1) noise moves
        expected = record * np.maximum(1 + noise, 0) if noisy else record
        np.testing.assert_allclose(np.asarray(state.load_mw), expected, rtol=1e-5, atol=1e-4)
        assert noisy == (np.abs(np.asarray(state.load_mw) - record).max() > 1e-2)
    with pytest.raises(EnvOptionError, match="replay_noise applies to recorded days"):
        make("ieee14", replay_noise=1.0)
    with pytest.raises(EnvOptionError, match="replay_noise"):
        make(f"grid2op:{SMALL}", replay_noise=float("nan"))
    with pytest.raises(ConfigError, match="--replay-noise"):
        TrainConfig(case="ieee14", replay_noise=0.5).validate()


def test_grid2op_agent_observes_the_recorded_day_grid2op_is_replaying():
    """The next-hour demand feature read recorded day 0 whatever chronic Grid2Op played;
    the agent now finds the day by its demand: the chronic Grid2Op reports."""
    from pathlib import Path

    from gridrl.baselines import make_policy
    from gridrl.grid2op import Grid2OpAgent

    env, params = _small_env()
    g2o = _grid2op_env(SMALL)
    agent = Grid2OpAgent(make_policy("greedy", env), g2o.action_space, env, params)
    case = env.recorded
    seen = set()
    for chronic in range(3):
        obs = g2o.reset(options={"time serie id": chronic})
        for _ in range(4):
            obs, *_ = g2o.step(g2o.action_space({}))
        state = agent.gridrl_inputs(obs)[0]
        name = Path(g2o.chronics_handler.get_name()).name
        assert case.day_chronic[int(state.day)] == name
        seen.add(name)
    assert len(seen) == 3


def test_rerun_5_chronic_faults_grid2op_reads_otherwise_are_typed(pristine, monkeypatch):
    """Hostile rerun 5: files of one chronic with different row counts were accepted
    (every later day got the next day's schedule); prod_p of 9e6 MW for a 140 MW unit
    shrank the reward by five orders; a line of zero impedance passed make and ended
    every episode at once; load_p.csv.bz2 was read where Grid2Op reads load_p.csv; a
    negative maintenance value was no outage; 19 million rows grew to 6.5 GB."""
    import bz2

    from gridrl import grid2op_data

    spec = f"grid2op:{pristine}"
    folder = pristine / "chronics" / "0000"

    def table(stem):
        return bz2.decompress((folder / f"{stem}.csv.bz2").read_bytes()).decode().splitlines()

    prod = table("prod_p")
    short = bz2.compress(("\n".join(prod[:300]) + "\n").encode())
    restore = _altered(pristine, "chronics/0000/prod_p.csv.bz2", short)
    with pytest.raises(EnvOptionError, match="299 rows where the chronic's load_p has"):
        load_case(spec)
    restore()

    def with_gen0(value, rows=None):
        out = [prod[0]] + [
            (f"{value}" + r[r.index(";") :]) if rows is None or k in rows else r
            for k, r in enumerate(prod[1:])
        ]
        return bz2.compress(("\n".join(out) + "\n").encode())

    first = prod[0].split(";")[0]  # the file's first column
    unit = list(_case(SMALL).names["prods"]).index(first)
    restore = _altered(pristine, "chronics/0000/prod_p.csv.bz2", with_gen0(9e6))
    with pytest.raises(EnvOptionError, match=rf"prod_p of '{first}' reaches 9e\+06 MW"):
        load_case(spec)
    restore()
    p_max = float(np.asarray(_case(SMALL).network.gen.p_max_mw)[unit])
    restore = _altered(
        pristine, "chronics/0000/prod_p.csv.bz2", with_gen0(p_max + 6, rows=range(0, 12))
    )
    case = load_case(spec)  # a little above Pmax: said, and held at Pmax
    restore()
    assert any("prod_p leaves [0, Pmax]" in a and first in a for a in case.assumed)
    assert case.gen_mw[0, :4, unit].max() == pytest.approx(p_max)

    # Grid2Op's order: the plain .csv first
    loads = table("load_p")
    doubled = [loads[0]] + [";".join(str(2 * float(v)) for v in r.split(";")) for r in loads[1:]]
    restore = _altered(pristine, "chronics/0000/load_p.csv", "\n".join(doubled) + "\n")
    case = load_case(spec)
    restore()
    np.testing.assert_allclose(case.load_mw[0], 2 * _case(SMALL).load_mw[0], rtol=1e-9)

    # a negative maintenance value is an outage, as Grid2Op reads it
    names = list(_case(SMALL).names["lines"])
    flags = np.zeros((len(loads) - 1, len(names)))
    flags[3:6, 4] = -1.0
    text = ";".join(names) + "\n" + "\n".join(";".join(f"{v:g}" for v in r) for r in flags)
    restore = _altered(pristine, "chronics/0000/maintenance.csv.bz2", bz2.compress(text.encode()))
    out = load_case(spec).line_out
    restore()
    assert out[0, 1, 4] and out.sum() == 1  # rows 3-5: the second 15-minute step

    monkeypatch.setattr(grid2op_data, "MAX_CHRONIC_ROWS", 100)
    with pytest.raises(EnvOptionError, match="more than 100 rows"):
        load_case(spec)
    monkeypatch.undo()

    grid = (pristine / "grid.json").read_text()
    import json

    data = json.loads(grid)
    line = json.loads(data["_object"]["line"]["_object"])
    for column in ("r_ohm_per_km", "x_ohm_per_km"):
        line["data"][2][line["columns"].index(column)] = 0.0
    data["_object"]["line"]["_object"] = json.dumps(line)
    restore = _altered(pristine, "grid.json", json.dumps(data))
    with pytest.raises(EnvOptionError, match="cannot be solved"):
        load_case(spec)
    restore()


def test_negative_marginal_costs_keep_the_reward_s_scale_and_sign():
    """Rerun 5: all marginal costs at -10 $/MWh clamped the normalizer to $1 (reward
    +605 per step); it is the size of the dispatch's cost whatever its sign."""
    from gridrl.env import DT_HOURS

    env, params = _small_env()
    base = np.asarray(params.base_gen_mw, np.float64)
    cost = np.asarray(params.network.gen.cost_c1, np.float64)
    thermal = ~env.renewable
    expected = max(np.sum(np.abs(cost * base)[thermal]) * DT_HOURS, 1.0)  # by hand
    assert float(params.reward.normalizer) == pytest.approx(expected, rel=1e-5)


def test_rerun_5_agent_and_grid2op_eval_misuse_is_typed(pristine, tmp_path, capsys):
    """Hostile rerun 5: Grid2OpAgent took a string as action space, a bad seed, a
    non-callable policy or another grid's params and failed later with AttributeError
    or TypeError; act() on another grid's observation raised a broadcast ValueError;
    grid2op_eval printed Grid2Op's own tracebacks and wrote --out only after the run."""
    from gridrl.baselines import make_policy
    from gridrl.errors import EnvInputError
    from gridrl.grid2op import Grid2OpAgent
    from gridrl.grid2op_eval import main

    env, params = _small_env()
    g2o = _grid2op_env(SMALL)
    greedy = make_policy("greedy", env)
    other_params = make("ieee14", n_areas=2)[1]
    for args, kwargs, message in (
        ((greedy, "x", env, params), {}, "action_space must be"),
        ((greedy, g2o.action_space, env, params), {"seed": "abc"}, "seed must be"),
        ((None, g2o.action_space, env, params), {}, "policy must be"),
        ((greedy, g2o.action_space, env, other_params), {}, "params must be"),
    ):
        with pytest.raises(EnvOptionError, match=message):
            Grid2OpAgent(*args, **kwargs)
    agent = Grid2OpAgent(greedy, g2o.action_space, env, params, simulate=False)
    for obs in (None, "obs", _grid2op_env("rte_case5_example").reset()):
        with pytest.raises(EnvInputError, match="a Grid2Op observation of this grid"):
            agent.act(obs, 0.0, False)
    odd = g2o.reset()
    odd.hour_of_day = float("nan")  # a bare ValueError (hostile rerun 11)
    with pytest.raises(EnvInputError, match="hour_of_day must be a whole number, got nan"):
        agent.act(odd, 0.0, False)

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(SystemExit):
        main(["--env", SMALL, "--out", str(blocker)])
    assert "--out" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # ran chronic 0 twice (hostile rerun 9)
        main(["--env", SMALL, "--chronics", "1,0,1", "--out", str(tmp_path / "twice")])
    assert "[1] given more than once" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # ran the baseline twice for one row (hostile rerun 11)
        main(["--env", SMALL, "--baselines", "greedy,do_nothing,greedy", "--out", str(tmp_path)])
    assert "--baselines: greedy given more than once" in capsys.readouterr().err
    restore = _altered(pristine, "config.py", "config = {\n")  # Grid2Op's SyntaxError
    try:
        assert main(["--env", str(pristine), "--out", str(tmp_path / "o")]) == 1
    finally:
        restore()
    assert "error: Grid2Op cannot load" in capsys.readouterr().err


def test_rerun_6_grid2op_faults_are_typed_or_read_as_grid2op_reads(pristine, tmp_path):
    """Hostile rerun 6: loads that sum to below zero gave +332 reward per step; config
    bound by an annotated assignment, inside an if, or with a call in another entry lost
    its limits and was said to have none; extra chronic columns, a negative Pmin, a
    start time with seconds and an sgen were accepted though Grid2Op refuses or keeps
    them; a corrupt gzip raised zlib.error and ~nosuchuser RuntimeError."""
    import bz2
    import gzip
    import json

    spec = f"grid2op:{pristine}"
    folder = pristine / "chronics" / "0000"
    loads = bz2.decompress((folder / "load_p.csv.bz2").read_bytes()).decode().splitlines()

    def write(stem, lines):
        return _altered(
            pristine,
            f"chronics/0000/{stem}.csv.bz2",
            bz2.compress(("\n".join(lines) + "\n").encode()),
        )

    negative = [loads[0]] + [";".join(str(-float(v)) for v in r.split(";")) for r in loads[1:]]
    restore = write("load_p", negative)
    with pytest.raises(EnvOptionError, match="the loads sum to -"):
        load_case(spec)
    restore()
    extra = [loads[0] + ";not_a_load"] + [r + ";1.0" for r in loads[1:]]
    restore = write("load_p", extra)
    with pytest.raises(EnvOptionError, match=r"elements the grid lacks.*not_a_load"):
        load_case(spec)
    restore()
    restore = _altered(pristine, "chronics/0000/start_datetime.info", "2019-01-05 23:55:30")
    with pytest.raises(EnvOptionError, match="YYYY-MM-DD HH:MM"):
        load_case(spec)
    restore()
    # the right format but no such day was reported as the wrong format (hostile rerun 8)
    restore = _altered(pristine, "chronics/0000/start_datetime.info", "2019-02-29 00:00")
    with pytest.raises(EnvOptionError, match=r"'2019-02-29 00:00' is no date .*out of range"):
        load_case(spec)
    restore()
    # a corrupt gzip chronic (read when there is no .csv or .csv.bz2)
    (folder / "load_p.csv.bz2").rename(tmp_path / "load_p.csv.bz2")
    corrupt = bytearray(gzip.compress(("\n".join(loads) + "\n").encode()))
    corrupt[20:60] = bytes(b ^ 0xFF for b in corrupt[20:60])
    (folder / "load_p.csv.gzip").write_bytes(bytes(corrupt))
    try:
        with pytest.raises(EnvOptionError, match=r"load_p\.csv\.gzip"):
            load_case(spec)
    finally:
        (folder / "load_p.csv.gzip").unlink()
        (tmp_path / "load_p.csv.bz2").rename(folder / "load_p.csv.bz2")
    with pytest.raises(EnvOptionError, match="no Grid2Op environment"):
        load_case("grid2op:~nosuchuser_zz/env")

    charac = (pristine / "prods_charac.csv").read_text()
    header, *rows = charac.strip().splitlines()
    cells = rows[0].split(",")
    cells[header.split(",").index("Pmin")] = "-5"
    restore = _altered(
        pristine, "prods_charac.csv", "\n".join([header, ",".join(cells), *rows[1:]])
    )
    with pytest.raises(EnvOptionError, match="refuses a negative Pmin"):
        load_case(spec)
    restore()

    reference = _case(SMALL)
    kv = np.asarray(reference.network.bus.base_kv)[
        np.asarray(reference.network.topology.branch_from)
    ]
    amps = [100.0 + i for i in range(reference.network.n_branch)]
    expected = np.sqrt(3) * kv * np.array(amps) / 1000

    def read(text):
        return _ratings_with_config(pristine, text)

    for text in (
        f"config: dict = {{'thermal_limits': {amps}}}\n",
        f"config = {{'kwargs': dict(a=1), 'thermal_limits': {amps}}}\n",
    ):
        rate, _ = read(text)
        np.testing.assert_allclose(rate, expected)
    for text in (
        f"if True:\n    config = {{'thermal_limits': {amps}}}\n",
        f"(config := {{'thermal_limits': {amps}}})\n",
        f"config, x = {{'thermal_limits': {amps}}}, 1\n",
        f"config = {{'thermal_limits': set({amps})}}\n",
    ):
        _, assumed = read(text)
        assert any("only running" in a for a in assumed), text

    data = json.loads((pristine / "grid.json").read_text())
    import pandapower as pp

    net = pp.from_json_string(json.dumps(data))
    pp.create_sgen(net, 3, p_mw=50.0)
    restore = _altered(pristine, "grid.json", pp.to_json(net))
    with pytest.raises(EnvOptionError, match="1 sgen element"):
        load_case(spec)
    restore()


def test_rerun_6_agent_checks_actions_as_step_does_and_probes_keep_user_files(tmp_path):
    """Hostile rerun 6: a policy returning scalars raised a bare IndexError in act(),
    NaN actions made unserved_requests_mw NaN; the output-path probe overwrote and
    removed a user's .write-test, and a dangling symlink passed the --json check."""
    import os

    from gridrl.errors import ActionError, OutputPathError, writable_dir, writable_file
    from gridrl.grid2op import Grid2OpAgent

    env, params = _small_env()
    g2o = _grid2op_env(SMALL)
    obs = g2o.reset(options={"time serie id": 0})

    def scalars(key, o, state, p):
        return {a: jnp.asarray(0.5, env.dtype) for a in env.agents}

    with pytest.raises(ActionError, match="has shape"):
        Grid2OpAgent(scalars, g2o.action_space, env, params, simulate=False).act(obs)

    def nans(key, o, state, p):
        return {a: jnp.full(env.action_space(a).shape, jnp.nan, env.dtype) for a in env.agents}

    agent = Grid2OpAgent(nans, g2o.action_space, env, params, simulate=False)
    agent.act(obs)
    assert agent.invalid_actions == len(env.agents) and np.isfinite(agent.unserved_requests_mw)

    precious = tmp_path / ".write-test"
    precious.write_text("PRECIOUS")
    writable_dir(tmp_path, "--out")
    assert precious.read_text() == "PRECIOUS" and sorted(p.name for p in tmp_path.iterdir()) == [
        ".write-test"
    ]
    os.symlink(tmp_path / "nowhere" / "x", tmp_path / "dangling.json")
    with pytest.raises(OutputPathError, match="symbolic link to nothing"):
        writable_file(tmp_path / "dangling.json", "--json")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(OutputPathError, match="not a regular file"):
        writable_file(tmp_path / "fifo", "--json")


def test_rerun_7_make_and_cli_refuse_what_would_run_wrong(pristine, tmp_path, capsys):
    """Hostile rerun 7: a float32 AC env on a 1 MVA grid blacked out at every step
    without a word; a case whose loads sum to <= 0 gave NaN observations; a 1e9 MVAr
    shunt passed load_case; python -m gridrl.baselines printed tracebacks and could not
    run a grid with fewer than 4 generator buses."""
    import json

    import pandapower as pp

    from gridrl.baselines import main as baselines_main

    with pytest.raises(EnvOptionError, match="does not converge in float32"):
        make("grid2op:rte_case5_example", n_areas=1, method="ac")
    zero = tmp_path / "zero.m"
    zero.write_text(
        "function mpc = zero\nmpc.baseMVA = 100;\n"
        "mpc.bus = [1 3 0 0 0 0 1 1 0 135 1 1.1 0.9; 2 1 0 0 0 0 1 1 0 135 1 1.1 0.9];\n"
        "mpc.gen = [1 0 0 300 -300 1 100 1 250 10];\n"
        "mpc.branch = [1 2 0.01 0.1 0 100 100 100 0 0 1 -360 360];\n"
    )
    with pytest.raises(EnvOptionError, match="loads sum to 0 MW"):
        make(str(zero), n_areas=1)
    assert any("load_q is read" in a for a in _case(SMALL).assumed)

    net = pp.from_json_string((pristine / "grid.json").read_text())
    pp.create_shunt(net, 3, p_mw=1e9, q_mvar=1e9)
    restore = _altered(pristine, "grid.json", pp.to_json(net))
    with pytest.raises(EnvOptionError, match=r"shunt \d+ has p_mw = 1e\+09"):
        load_case(f"grid2op:{pristine}")
    restore()
    json.loads((pristine / "grid.json").read_text())  # put back intact

    assert baselines_main(["--case", "nosuchcase"]) == 1
    assert capsys.readouterr().err.startswith("error: unknown case")
    argv = ["--case", "grid2op:rte_case5_example", "--n-areas", "1", "--episodes", "1"]
    assert baselines_main([*argv, "--baselines", "do_nothing"]) == 0
    assert "do_nothing" in capsys.readouterr().out


def test_grid2op_eval_says_when_a_held_out_chronic_holds_training_days(tmp_path):
    """With one chronic gridrl holds out its last days, but Grid2Op replays the chronic
    from its start: the report said '(held-out)' (hostile rerun 9). It now names the
    training days the run replays first."""
    import json

    from gridrl.grid2op_eval import main

    one = tmp_path / "one"
    shutil.copytree(
        find_env(SMALL), one, ignore=shutil.ignore_patterns("__pycache__", "0001", "0002")
    )
    rec = load_case(f"grid2op:{one}")
    training = int((~rec.eval_days).sum())
    assert set(rec.day_chronic) == {"0000"} and training >= 1
    args = ["--env", str(one), "--max-steps", "2", "--baselines", "", "--no-score"]
    assert main([*args, "--out", str(tmp_path / "out")]) == 0
    out = json.loads((tmp_path / "out" / "grid2op_eval.json").read_text())
    assert out["training_days_in_chronics"] == {"0000": training}
    report = (tmp_path / "out" / "report.md").read_text()
    assert f"chronic 0000 also holds {training} training day(s)" in report
