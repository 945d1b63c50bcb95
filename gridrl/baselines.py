"""Baseline policies, run through the same environment and safety filter as any agent.

* ``do_nothing``: no redispatch, no shedding: the dispatch is the economic dispatch
  scaled with load (the environment's reference), made feasible by the safety filter.
* ``random``: uniform actions.
* ``greedy``: each step, relieve the most loaded line by moving power between the two
  units with the largest opposite PTDF sensitivities to it (jitted).
* ``dc_opf``: an oracle that knows the coming step (loads, availability, outages) and
  solves a DC optimal power flow with line limits (HiGHS through scipy, outside jit;
  evaluation only), then asks the operational agents for that dispatch.

:func:`evaluate_baselines` runs them on the same seeded episodes and reports cost,
overload-step share, energy not served, trips, safety interventions and survival.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from gridrl.env import EnvParams, EnvState, GridEnv, make

Policy = Callable[[jax.Array, dict, EnvState, EnvParams], dict]
BASELINES = ("do_nothing", "greedy", "random", "dc_opf")


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
    env: GridEnv, target_offset: jax.Array, state: EnvState, params: EnvParams, shed_share=None
) -> dict:
    """Operational actions that move the accumulated redispatch towards ``target_offset``
    (MW per unit, relative to the do-nothing dispatch), within one step's ramp."""
    delta = (target_offset - state.offset_mw) / jnp.maximum(params.ramp_mw, 1e-6)
    actions = {
        "strategic": jnp.zeros(env.n_areas, env.dtype),
        "safety": jnp.zeros(env.n_gen, env.dtype),
    }
    for a in range(env.n_areas):
        idx = jnp.asarray(env.area_gens[a])
        gens = jnp.append(delta, 0.0)[idx]
        shed = jnp.zeros(()) if shed_share is None else shed_share[a]
        actions[f"operational_{a}"] = jnp.clip(jnp.append(gens, shed), -1, 1).astype(env.dtype)
    return actions


def greedy(env: GridEnv, steps: int = 3) -> Policy:
    """PTDF-guided redispatch of the last step's most loaded lines."""
    from gridrl.safety import balance

    def act(key, obs, state, params):
        net = params.network
        topo = net.topology
        inj = -jax.ops.segment_sum(state.served_mw, jnp.asarray(topo.load_bus), env.n_bus)
        lo = jnp.minimum(net.gen.p_min_mw * net.gen.status, state.avail_mw)
        hi = state.avail_mw
        p = state.gen_mw
        rate = jnp.where(state.branch_on > 0, net.branch.rate_a_mva, jnp.nan)
        for _ in range(steps):
            flow = params.grid.ptdf @ (
                inj + jax.ops.segment_sum(p, jnp.asarray(topo.gen_bus), env.n_bus)
            )
            loading = jnp.abs(flow) / rate
            worst = jnp.argmax(jnp.nan_to_num(loading, nan=-1.0))
            need = jnp.maximum(jnp.abs(flow[worst]) - 0.9 * rate[worst], 0.0)
            sens = params.grid.ptdf[worst, topo.gen_bus] * jnp.sign(flow[worst])
            inc = jnp.argmin(jnp.where(hi - p > 1e-3, sens, jnp.inf))
            dec = jnp.argmax(jnp.where(p - lo > 1e-3, sens, -jnp.inf))
            gain = jnp.maximum(sens[dec] - sens[inc], 1e-6)
            amount = jnp.minimum(need / gain, jnp.minimum(hi[inc] - p[inc], p[dec] - lo[dec]))
            amount = jnp.where(jnp.isfinite(amount) & (need > 0), jnp.maximum(amount, 0.0), 0.0)
            p = balance(p.at[inc].add(amount).at[dec].add(-amount), lo, hi, jnp.sum(p))
        base = state.gen_mw - state.offset_mw
        return actions_for_dispatch(env, p - base, state, params)

    return act


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
        )
        if not result.success:
            return do_nothing(env)(key, obs, state, params)
        load = np.asarray(x.load_mw)
        shed = np.zeros(env.n_areas)
        for a in range(env.n_areas):
            mask = env.load_area == a
            total = load[mask].sum()
            shed[a] = (
                result.shed_mw[mask].sum() / total / env.config.max_shed_share if total > 0 else 0.0
            )
        target = jnp.asarray(result.gen_p_mw, env.dtype) - x.base_mw
        return actions_for_dispatch(env, target, state, params, jnp.asarray(shed, env.dtype))

    act.foresees_step = True  # called with the environment step's own key: perfect knowledge
    return act


def make_policy(name: str, env: GridEnv) -> Policy:
    factories = {
        "do_nothing": do_nothing,
        "greedy": greedy,
        "random": random_policy,
        "dc_opf": dc_opf_policy,
    }
    if name not in factories:
        raise ValueError(f"unknown baseline {name!r}; baselines are {', '.join(factories)}")
    return factories[name](env)


@dataclass(frozen=True)
class EpisodeMetrics:
    """Per-episode averages over the evaluated episodes."""

    cost: float  # total cost per episode ($)
    overload_step_share: float  # share of steps with an overloaded line
    energy_not_served_mwh: float  # per episode
    trips: float  # per episode
    interventions: float  # per episode
    survival: float  # share of the day survived without blackout
    reward: float  # return per episode

    def as_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


def run_episodes(
    env: GridEnv, params: EnvParams, policy: Policy, *, episodes: int, seed: int, jit: bool = True
) -> EpisodeMetrics:
    """Run ``episodes`` seeded days with ``policy`` (the same seeds give the same days
    for every policy) and average the metrics."""
    steps = env.config.episode_steps
    step = jax.jit(env.step)
    act = jax.jit(policy) if jit else policy
    totals = {
        "cost": 0.0,
        "over": 0.0,
        "ens": 0.0,
        "trips": 0.0,
        "interventions": 0.0,
        "survived": 0.0,
        "reward": 0.0,
    }
    for episode in range(episodes):
        key = jax.random.fold_in(jax.random.key(seed), episode)
        key, k_reset = jax.random.split(key)
        obs, state = env.reset(k_reset, params)
        survived = steps
        for i in range(steps):
            k_scen = jax.random.fold_in(key, i)  # scenario randomness: the same for every policy
            k_pol = (
                k_scen
                if getattr(policy, "foresees_step", False)
                else jax.random.fold_in(k_scen, 1_000_003)
            )
            actions = act(k_pol, obs, state, params)
            obs, state, reward, done, info = step(k_scen, state, actions, params)
            totals["cost"] += float(info["total_cost"])
            totals["over"] += float(info["overloaded_lines"] > 0)
            totals["ens"] += float(info["energy_not_served_mwh"])
            totals["trips"] += float(info["trips"])
            totals["interventions"] += float(info["interventions"])
            totals["reward"] += float(reward["strategic"])
            if bool(done["__all__"]):
                survived = i + 1 if bool(info["blackout"]) else steps
                break
        totals["survived"] += survived / steps
    n = float(episodes)
    return EpisodeMetrics(
        cost=totals["cost"] / n,
        overload_step_share=totals["over"] / (n * steps),
        energy_not_served_mwh=totals["ens"] / n,
        trips=totals["trips"] / n,
        interventions=totals["interventions"] / n,
        survival=totals["survived"] / n,
        reward=totals["reward"] / n,
    )


def evaluate_baselines(
    case: str = "ieee118",
    *,
    episodes: int = 2,
    seed: int = 0,
    level: int = 4,
    baselines: tuple[str, ...] = BASELINES,
    **options,
) -> dict[str, EpisodeMetrics]:
    """Every baseline on the same held-out episodes of ``case`` at curriculum ``level``."""
    env, params = make(case, level=level, **options)
    return {
        name: run_episodes(
            env, params, make_policy(name, env), episodes=episodes, seed=seed, jit=name != "dc_opf"
        )
        for name in baselines
    }


def format_table(results: dict[str, EpisodeMetrics]) -> str:
    """A plain-text table of :func:`evaluate_baselines`' results."""
    head = f"{'policy':12s} {'cost $':>14s} {'overload steps':>15s} {'ENS MWh':>9s} {'trips':>7s} {'interventions':>14s} {'survival':>9s}"
    rows = [head, "-" * len(head)]
    for name, m in results.items():
        rows.append(
            f"{name:12s} {m.cost:14,.0f} {m.overload_step_share:15.1%} {m.energy_not_served_mwh:9.1f} "
            f"{m.trips:7.1f} {m.interventions:14.1f} {m.survival:9.1%}"
        )
    return "\n".join(rows)


def add_day_flags(parser, *, episodes: int, seed: int) -> None:
    """``--episodes``, ``--seed``, ``--level`` and ``--baselines`` (the evaluated days and
    the baselines run on them), shared by the baselines and evaluation commands."""
    parser.add_argument(
        "--episodes", type=int, default=episodes, help=f"days per policy (default: {episodes})"
    )
    parser.add_argument(
        "--seed", type=int, default=seed, help=f"seed of the evaluated days (default: {seed})"
    )
    parser.add_argument(
        "--level", type=int, default=4, choices=range(5), help="curriculum level (default: 4)"
    )
    parser.add_argument(
        "--baselines",
        default=",".join(BASELINES),
        help=f"comma-separated subset of {', '.join(BASELINES)}",
    )


def check_day_flags(parser, args) -> tuple[str, ...]:
    """Validate :func:`add_day_flags`' values; the baseline names (a parser error names
    unknown ones)."""
    if args.episodes < 1:
        parser.error("--episodes must be >= 1")
    names = tuple(n.strip() for n in args.baselines.split(",") if n.strip())
    bad = [n for n in names if n not in BASELINES]
    if bad:
        parser.error(f"--baselines: unknown {bad}; choose from {', '.join(BASELINES)}")
    return names


def main(argv: list[str] | None = None) -> int:
    """``python -m gridrl.baselines``: evaluate the baselines and print the table."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m gridrl.baselines",
        description="Run every baseline (do-nothing, greedy, random, DC-OPF oracle) on the same seeded "
        "days and print cost, overload-step share, energy not served, trips, interventions and survival.",
    )
    parser.add_argument("--case", default="ieee118", help="case name (default: ieee118)")
    add_day_flags(parser, episodes=2, seed=0)
    args = parser.parse_args(argv)
    names = check_day_flags(parser, args)
    results = evaluate_baselines(
        args.case, episodes=args.episodes, seed=args.seed, level=args.level, baselines=names
    )
    print(f"{args.case}, level {args.level}, {args.episodes} episode(s), seed {args.seed}")
    print(format_table(results))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
