"""Baseline policies, run through the same environment and safety filter as any agent.

* ``do_nothing``: no redispatch, no shedding: the dispatch is the economic dispatch
  scaled with load (the environment's reference), made feasible by the safety filter.
* ``random``: uniform actions.
* ``greedy``: each step, relieve the most loaded line by moving power between the two
  units with the largest opposite PTDF sensitivities to it (jitted).
* ``dc_opf``: an oracle that knows the coming step (loads, availability, outages) and
  solves a DC optimal power flow with line limits (HiGHS through scipy, outside jit;
  evaluation only), then asks the operational agents for that dispatch and shedding,
  in their action space (each load shed by at most ``max_shed_share``). It sees one
  step: it cannot prepare for ramps.
* ``mpc``: the rolling-horizon expert of :mod:`gridrl.reference` (no outage foresight).
* ``day_ahead``: the upper reference of :mod:`gridrl.reference`: the whole day planned
  with perfect foresight in one multi-period DC-OPF, replayed through the environment.

:func:`evaluate_baselines` runs them on the same seeded episodes and reports cost,
overload-step share, energy not served, trips, safety interventions and survival.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

import gridphysics as gp
from gridrl import scenarios
from gridrl.env import EnvConfig, EnvParams, EnvState, GridEnv, evaluation_params, make
from gridrl.errors import GridRLError

Policy = Callable[[jax.Array, dict, EnvState, EnvParams], dict]
BASELINES = ("do_nothing", "greedy", "random", "dc_opf", "mpc", "day_ahead")
#: Baselines that decide outside ``jit``, one step at a time (``day_ahead`` plans its
#: days outside ``jit``, then replays them inside).
PLANNED = ("dc_opf", "mpc")
#: The upper reference: the normalized score's 100.
REFERENCE = "day_ahead"


def do_nothing(env: GridEnv) -> Policy:
    def act(key, obs, state, params):
        return {a: jnp.zeros(env.action_space(a).shape, env.dtype) for a in env.agents}

    return act


def random_policy(env: GridEnv) -> Policy:
    def act(key, obs, state, params):
        keys = jax.random.split(key, len(env.agents))
        return {a: env.action_space(a).sample(k) for a, k in zip(env.agents, keys, strict=True)}

    return act


def actions_for_dispatch(
    env: GridEnv, target_offset: jax.Array, state: EnvState, params: EnvParams, shed=None
) -> dict:
    """Actions that keep every area's schedule at its base (strategic 0) and move the
    accumulated redispatch towards ``target_offset`` (MW per unit, relative to the
    do-nothing dispatch) within one step's ramp; ``shed``: (n_load,) share of each load
    to shed, as a fraction of ``max_shed_share`` (default none)."""
    delta = (target_offset - state.offset_mw) / jnp.maximum(params.ramp_mw, 1e-6)
    shed = jnp.zeros(env.n_load, env.dtype) if shed is None else jnp.asarray(shed, env.dtype)
    actions = {
        "strategic": jnp.zeros(env.n_areas, env.dtype),
        "safety": jnp.zeros(env.n_gen, env.dtype),
    }
    for a in range(env.n_areas):
        gens = jnp.append(delta, 0.0)[jnp.asarray(env.area_gens[a])]
        loads = jnp.append(shed, 0.0)[jnp.asarray(env.area_loads[a])]
        act = jnp.concatenate([jnp.clip(gens, -1, 1), jnp.clip(loads, 0, 1)])
        actions[f"operational_{a}"] = act.astype(env.dtype)
    return actions


def greedy(env: GridEnv, steps: int = 3) -> Policy:
    """PTDF-guided redispatch of the last step's most loaded lines, on the grid as the
    last step left it (post-outage flows and sensitivities of the environment's own
    engine; lines that are out or cut off are skipped)."""

    def act(key, obs, state, params):
        p = greedy_dispatch(env, state, params, steps)
        base = state.gen_mw - state.offset_mw
        return actions_for_dispatch(env, p - base, state, params)

    return act


def greedy_dispatch(env: GridEnv, state: EnvState, params: EnvParams, steps: int = 3):
    """(n_gen,) the dispatch :func:`greedy` aims at from ``state``."""
    from gridrl.safety import balance

    net = params.network
    topo = net.topology
    grid = params.grid
    gen_bus = jnp.asarray(topo.gen_bus)
    system = grid.system(state.branch_on)
    inj = -jax.ops.segment_sum(state.served_mw, jnp.asarray(topo.load_bus), env.n_bus)
    lo = jnp.minimum(net.gen.p_min_mw * net.gen.status, state.avail_mw)
    hi = state.avail_mw
    p = state.gen_mw
    live = ~system.dead
    rate = jnp.where(live, net.branch.rate_a_mva, jnp.nan)
    usable = ~system.isolated[gen_bus]
    for _ in range(steps):
        flow = grid.apply(system, inj + jax.ops.segment_sum(p, gen_bus, env.n_bus)).p_from_mw
        loading = jnp.abs(flow) / rate
        worst = jnp.argmax(jnp.nan_to_num(loading, nan=-1.0))
        need = jnp.maximum(jnp.abs(flow[worst]) - 0.9 * rate[worst], 0.0)
        sens = grid.sensitivity(system, worst, gen_bus) * jnp.sign(flow[worst])
        inc = jnp.argmin(jnp.where(usable & (hi - p > 1e-3), sens, jnp.inf))
        dec = jnp.argmax(jnp.where(usable & (p - lo > 1e-3), sens, -jnp.inf))
        gain = jnp.maximum(sens[dec] - sens[inc], 1e-6)
        amount = jnp.minimum(need / gain, jnp.minimum(hi[inc] - p[inc], p[dec] - lo[dec]))
        ok = jnp.isfinite(amount) & (need > 0) & system.exact
        amount = jnp.where(ok, jnp.maximum(amount, 0.0), 0.0)
        p = balance(p.at[inc].add(amount).at[dec].add(-amount), lo, hi, jnp.sum(p))
    return p


def dc_opf_policy(env: GridEnv) -> Policy:
    """The DC-OPF oracle (outside jit; one HiGHS solve per step)."""
    from gridrl.opf import dc_opf

    exo = jax.jit(env.exogenous)

    def act(key, obs, state, params):
        x = exo(key, state, params)
        net = params.network
        result = dc_opf(
            net.astype(jnp.float64),
            load_p_mw=np.asarray(x.load_mw, np.float64),
            gen_p_max_mw=np.asarray(x.avail_mw, np.float64),
            gen_p_min_mw=np.minimum(
                np.asarray(net.gen.p_min_mw * net.gen.status), np.asarray(x.avail_mw)
            ),
            rate_mva=np.asarray(x.rate_mva, np.float64) * 0.98,
            branch_status=np.asarray(x.branch_on, np.float64),
            # the agents' action space: each load shed by at most max_shed_share
            shed_max_mw=env.config.max_shed_share * np.asarray(x.load_mw, np.float64),
        )
        if not result.success:
            return do_nothing(env)(key, obs, state, params)
        load = np.asarray(x.load_mw, np.float64)
        cap = env.config.max_shed_share * load
        shed = np.where(cap > 0, result.shed_mw / np.maximum(cap, 1e-9), 0.0)
        target = jnp.asarray(result.gen_p_mw, env.dtype) - x.base_mw
        return actions_for_dispatch(env, target, state, params, jnp.asarray(shed, env.dtype))

    act.foresees_step = True  # called with the environment step's own key: perfect knowledge
    return act


def make_policy(name: str, env: GridEnv) -> Policy:
    from gridrl.reference import DayAheadPolicy, RollingHorizonPolicy

    factories = {
        "do_nothing": do_nothing,
        "greedy": greedy,
        "random": random_policy,
        "dc_opf": dc_opf_policy,
        "mpc": RollingHorizonPolicy,
        "day_ahead": DayAheadPolicy,
    }
    if name not in factories:
        raise ValueError(f"unknown baseline {name!r}; baselines are {', '.join(factories)}")
    return factories[name](env)


@dataclass(frozen=True)
class EpisodeMetrics:
    """Per-episode averages over the evaluated episodes (and each day's cost)."""

    cost: float  # total cost per episode ($)
    overload_step_share: float  # share of operated steps with a line above its continuous rating
    energy_not_served_mwh: float  # per episode: deliberate + involuntary
    trips: float  # per episode
    interventions: float  # per episode
    survival: float  # share of the day survived without blackout
    reward: float  # return per episode
    emergency_step_share: float = 0.0  # share of operated steps with a line above emergency
    max_loading_percent: float = 0.0  # highest in-service loading over every evaluated step
    deliberate_shed_mwh: float = 0.0  # per episode, shed on purpose
    involuntary_ens_mwh: float = 0.0  # per episode, cut off (and after a blackout)
    blackout_free_days: float = 0.0  # share of the days without a blackout
    n1_secure_step_share: float = 0.0  # share of operated steps that end N-1 secure
    cost_survived_days: float = float("nan")  # mean cost of the days without a blackout
    day_cost: tuple[float, ...] = ()  # each day's total cost, $ (for paired intervals)

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}


#: What one day adds up (:func:`day_records`), from one step's ``info`` and reward.
DAY_FIELDS = (
    "cost",
    "reward",
    "operated",
    "overload_steps",
    "emergency_steps",
    "ens",
    "shed",
    "involuntary",
    "trips",
    "interventions",
    "max_loading",
    "blackout",
    "n1_secure_steps",
)


def _step_record(info: dict, reward) -> dict:
    """One step's contribution to each of :data:`DAY_FIELDS` (jnp or numpy alike)."""
    return {
        "cost": info["total_cost"],
        "reward": reward,
        "operated": 1.0,
        "overload_steps": info["overloaded_lines"] > 0,
        "emergency_steps": info["emergency_lines"] > 0,
        "ens": info["energy_not_served_mwh"],
        "shed": info["deliberate_shed_mwh"],
        "involuntary": info["involuntary_ens_mwh"],
        "trips": info["trips"],
        "interventions": info["interventions"],
        "max_loading": info["max_loading_percent"],
        "blackout": info["blackout"],
    }


def scenario_key(day_key, i):
    """The key of step ``i`` of the day ``day_key``: the scenario's randomness, the same
    for every policy (the day-ahead reference draws the day with it)."""
    return jax.random.fold_in(day_key, i)


def _keys(policy, key, i):
    k_scen = scenario_key(key, i)
    k_pol = (
        k_scen if getattr(policy, "foresees_step", False) else jax.random.fold_in(k_scen, 1_000_003)
    )
    return k_scen, k_pol


def day_records(
    env: GridEnv, params: EnvParams, policy: Policy, *, episodes: int, seed: int, jit: bool = True
) -> dict[str, np.ndarray]:
    """Run ``episodes`` seeded days with ``policy`` (the same seeds give the same days
    for every policy): ``{field: (episodes,)}`` over :data:`DAY_FIELDS`, summed over
    the operated steps of each day (``max_loading``: the day's highest; ``blackout``:
    whether the day ended in one). A day stops at its blackout.

    ``jit``: all days at once, ``vmap`` over days of a ``scan`` over steps (the policy
    must be traceable); otherwise one jitted step at a time (e.g. the DC-OPF oracle).
    Both give the same days. Recorded (Grid2Op) days are drawn from the held-out ones
    (:func:`gridrl.env.evaluation_params`)."""
    params = evaluation_params(params)
    steps = env.config.episode_steps
    day_keys = [
        jax.random.split(jax.random.fold_in(jax.random.key(seed), d)) for d in range(episodes)
    ]
    if jit:
        planned = hasattr(policy, "plan_days")

        def one_day(key, k_reset, plan):
            obs, state = env.reset(k_reset, params)

            def body(carry, i):
                obs, state, alive = carry
                k_scen, k_pol = _keys(policy, key, i)
                if planned:
                    actions = policy.act_planned(plan, k_pol, obs, state, params)
                else:
                    actions = policy(k_pol, obs, state, params)
                obs, state, reward, done, info = env.step(k_scen, state, actions, params)
                rec = _step_record(info, reward["strategic"])
                rec = {
                    k: jnp.where(alive, jnp.asarray(v, jnp.float32), 0.0) for k, v in rec.items()
                }
                grid = (alive, state.gen_mw, state.served_mw, state.branch_on)
                return (obs, state, alive & ~done["__all__"]), (rec, grid)

            _, (recs, grid) = jax.lax.scan(body, (obs, state, jnp.asarray(True)), jnp.arange(steps))
            out = {k: jnp.sum(v) for k, v in recs.items()}
            out["max_loading"] = jnp.max(recs["max_loading"])
            return out, grid

        keys = jnp.stack([k[0] for k in day_keys])
        resets = jnp.stack([k[1] for k in day_keys])
        plans = None
        if planned:  # plan every day first (outside jit), from its first state
            _, first = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))(resets, params)
            plans = policy.plan_days([k[0] for k in day_keys], first, params)
        days, grid = jax.jit(jax.vmap(one_day))(keys, resets, plans)
        out = {k: np.asarray(v, np.float64) for k, v in days.items()}
        out["n1_secure_steps"] = n1_secure_steps(env, params, *(np.asarray(g) for g in grid))
        return out

    step = jax.jit(env.step)
    out = {k: np.zeros(episodes) for k in DAY_FIELDS}
    n_gen, n_load, n_branch = env.n_gen, env.n_load, env.n_branch
    alive = np.zeros((episodes, steps), bool)
    grid = (
        np.zeros((episodes, steps, n_gen)),
        np.zeros((episodes, steps, n_load)),
        np.zeros((episodes, steps, n_branch)),
    )
    for d, (key, k_reset) in enumerate(day_keys):
        obs, state = env.reset(k_reset, params)
        if hasattr(policy, "start_day"):  # planners see the day's key (the reference)
            policy.start_day(key, state, params)
        for i in range(steps):
            k_scen, k_pol = _keys(policy, key, i)
            obs, state, reward, done, info = step(
                k_scen, state, policy(k_pol, obs, state, params), params
            )
            for k, v in _step_record(info, reward["strategic"]).items():
                v = float(v)
                out[k][d] = max(out[k][d], v) if k == "max_loading" else out[k][d] + v
            alive[d, i] = True
            for arr, value in zip(
                grid, (state.gen_mw, state.served_mw, state.branch_on), strict=True
            ):
                arr[d, i] = np.asarray(value)
            if bool(done["__all__"]):
                break
    out["n1_secure_steps"] = n1_secure_steps(env, params, alive, *grid)
    return out


def n1_secure_steps(env, params, alive, gen_mw, served_mw, branch_on) -> np.ndarray:
    """(days,) how many of each day's operated steps (``alive``, (days, steps)) end
    N-1 secure: the loss of any in-service branch that splits nothing leaves every
    other rated branch within its emergency rating (DC flows of the step's dispatch
    ``gen_mw``, consumption ``served_mw`` and statuses ``branch_on`` after its trips;
    :func:`gridrl.reference.n1_secure_flows`)."""
    from gridrl.reference import n1_secure_flows, planner_for

    planner = planner_for(env, params)
    topo = planner.topo
    settings = params.levels.at(params.level)
    emergency = (
        np.asarray(params.network.branch.rate_a_mva * settings.rating_scale, np.float64)
        * env.config.emergency_percent
        / 100.0
    )
    fixed = np.zeros(env.n_bus)
    fixed -= planner.shunt_bus_mw
    count = np.zeros(alive.shape[0])
    gen_bus, load_bus = np.asarray(topo.gen_bus), np.asarray(topo.load_bus)
    for d, i in zip(*np.nonzero(alive), strict=True):
        top = planner.topology(branch_on[d, i])
        inj = fixed.copy()
        np.add.at(inj, gen_bus, gen_mw[d, i])
        np.add.at(inj, load_bus, -served_mw[d, i])
        flow = top.h @ inj + top.f0
        count[d] += n1_secure_flows(flow, top.lodf, emergency, branch_on[d, i] > 0)
    return count


def summarize(days: dict[str, np.ndarray], steps: int) -> EpisodeMetrics:
    """The :class:`EpisodeMetrics` of :func:`day_records`' days of ``steps`` steps."""
    n = float(len(days["cost"]))
    operated = max(float(days["operated"].sum()), 1.0)
    survived = np.where(days["blackout"] > 0, days["operated"], steps) / steps
    return EpisodeMetrics(
        cost=float(days["cost"].mean()),
        overload_step_share=float(days["overload_steps"].sum()) / operated,
        energy_not_served_mwh=float(days["ens"].mean()),
        trips=float(days["trips"].mean()),
        interventions=float(days["interventions"].mean()),
        survival=float(survived.mean()),
        reward=float(days["reward"].mean()),
        emergency_step_share=float(days["emergency_steps"].sum()) / operated,
        max_loading_percent=float(days["max_loading"].max()) if n else 0.0,
        deliberate_shed_mwh=float(days["shed"].mean()),
        involuntary_ens_mwh=float(days["involuntary"].mean()),
        blackout_free_days=float(np.mean(days["blackout"] == 0)),
        n1_secure_step_share=float(days["n1_secure_steps"].sum()) / operated,
        cost_survived_days=float(days["cost"][days["blackout"] == 0].mean())
        if np.any(days["blackout"] == 0)
        else float("nan"),
        day_cost=tuple(float(c) for c in days["cost"]),
    )


def run_episodes(
    env: GridEnv, params: EnvParams, policy: Policy, *, episodes: int, seed: int, jit: bool = True
) -> EpisodeMetrics:
    """Run ``episodes`` seeded days with ``policy`` (see :func:`day_records`) and
    average the metrics."""
    days = day_records(env, params, policy, episodes=episodes, seed=seed, jit=jit)
    return summarize(days, env.config.episode_steps)


def evaluate_baselines(
    case: str = "ieee118",
    *,
    episodes: int = 2,
    seed: int = 0,
    level: int = scenarios.TOP_LEVEL,
    baselines: tuple[str, ...] = BASELINES,
    **options,
) -> dict[str, EpisodeMetrics]:
    """Every baseline on the same held-out episodes of ``case`` at curriculum ``level``."""
    env, params = make(case, level=level, **options)
    return {
        name: run_baseline(env, params, name, episodes=episodes, seed=seed) for name in baselines
    }


def run_baseline(
    env: GridEnv, params: EnvParams, name: str, *, episodes: int, seed: int
) -> EpisodeMetrics:
    """The baseline ``name`` on ``episodes`` seeded days (inside ``jit`` unless it
    decides outside it, :data:`PLANNED`)."""
    return run_episodes(
        env, params, make_policy(name, env), episodes=episodes, seed=seed, jit=name not in PLANNED
    )


def format_table(results: dict[str, EpisodeMetrics]) -> str:
    """A plain-text table of :func:`evaluate_baselines`' results."""
    head = (
        f"{'policy':12s} {'cost $':>14s} {'overload steps':>15s} {'max load %':>11s} "
        f"{'shed MWh':>9s} {'lost MWh':>9s} {'trips':>7s} {'interventions':>14s} {'survival':>9s}"
    )
    rows = [head, "-" * len(head)]
    for name, m in results.items():
        rows.append(
            f"{name:12s} {m.cost:14,.0f} {m.overload_step_share:15.1%} "
            f"{m.max_loading_percent:11.0f} {m.deliberate_shed_mwh:9.1f} "
            f"{m.involuntary_ens_mwh:9.1f} {m.trips:7.1f} {m.interventions:14.1f} {m.survival:9.1%}"
        )
    return "\n".join(rows)


def add_day_flags(parser, *, episodes: int, seed: int, baselines=BASELINES) -> None:
    """``--episodes``, ``--seed``, ``--level`` and ``--baselines`` (the evaluated days and
    the baselines run on them), shared by the baselines and evaluation commands."""
    parser.add_argument(
        "--episodes", type=int, default=episodes, help=f"days per policy (default: {episodes})"
    )
    parser.add_argument(
        "--seed", type=int, default=seed, help=f"seed of the evaluated days (default: {seed})"
    )
    parser.add_argument(
        "--level",
        type=int,
        default=scenarios.TOP_LEVEL,
        choices=range(scenarios.N_LEVELS),
        help=f"curriculum level (default: {scenarios.TOP_LEVEL})",
    )
    parser.add_argument(
        "--baselines",
        default=",".join(baselines),
        help=f"comma-separated subset of {', '.join(BASELINES)} (default: {','.join(baselines)}; "
        "dc_opf and mpc plan every step outside jit, several seconds per day)",
    )


#: The most held-out days one command evaluates (each is a full day per policy; 10,000
#: days of the five baselines take hours on a CPU already).
MAX_EPISODES = 100_000


def check_day_flags(parser, args) -> tuple[str, ...]:
    """Validate :func:`add_day_flags`' values; the baseline names (a parser error names
    unknown ones)."""
    if not 1 <= args.episodes <= MAX_EPISODES:  # 10**12 ran for ever without a word
        parser.error(f"--episodes must be in 1..{MAX_EPISODES:,}, got {args.episodes}")
    if not 0 <= args.seed < 2**32:  # a JAX key takes an unsigned 32-bit seed
        parser.error(f"--seed must be an integer in 0..{2**32 - 1}, got {args.seed}")
    names = tuple(n.strip() for n in args.baselines.split(",") if n.strip())
    if not names and parser.prog.endswith("gridrl.baselines"):  # an empty table, exit 0
        parser.error(f"--baselines: name at least one of {', '.join(BASELINES)}")
    bad = [n for n in names if n not in BASELINES]
    if bad:
        parser.error(f"--baselines: unknown {bad}; choose from {', '.join(BASELINES)}")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:  # 'greedy,greedy' ran greedy twice for one row
        parser.error(f"--baselines: {', '.join(twice)} given more than once")
    return names


def main(argv: list[str] | None = None) -> int:
    """``python -m gridrl.baselines``: evaluate the baselines and print the table."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m gridrl.baselines",
        description="Run every baseline (do-nothing, greedy, random, DC-OPF oracle) on the same seeded "
        "days and print cost, overload-step share, energy not served, trips, interventions and survival.",
    )
    parser.add_argument(
        "--case",
        default="ieee118",
        help="case name, MATPOWER .m path or grid2op:<environment> (default: ieee118)",
    )
    parser.add_argument(
        "--n-areas",
        type=int,
        default=EnvConfig.n_areas,
        help=f"operational areas, one agent each (default: {EnvConfig.n_areas}; a grid with "
        "fewer generator buses needs fewer)",
    )
    parser.add_argument(
        "--method", choices=("dc", "ac"), default="dc", help="physics (default: dc)"
    )
    add_day_flags(parser, episodes=2, seed=0)
    args = parser.parse_args(argv)
    names = check_day_flags(parser, args)
    try:
        results = evaluate_baselines(
            args.case,
            episodes=args.episodes,
            seed=args.seed,
            level=args.level,
            baselines=names,
            n_areas=args.n_areas,
            method=args.method,
        )
    except (GridRLError, gp.GridPhysicsError) as exc:  # a raw traceback before (rerun 7)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{args.case}, level {args.level}, {args.episodes} episode(s), seed {args.seed}")
    print(format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
