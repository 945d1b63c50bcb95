"""The agents' decisions in one environment step: from actions to a feasible dispatch.

The strategic agent sets each area's hourly schedule (its generation as a factor of its
base generation; the schedule binds: the area's units move to it in proportion to their
available capacity). Each operational agent moves its area's units around the schedule by
up to a ramp per step and sheds each of its area's loads by up to ``max_shed_share``.
The safety agent may add a residual (when ``learned_safety``). The safety filter
(:mod:`gridrl.safety`) then makes the joint proposal feasible on the grid as it is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

import gridphysics as gp
from gridrl import physics, safety

if TYPE_CHECKING:
    from gridrl.env import EnvParams, EnvState, Exogenous


def decide(
    env,
    state: EnvState,
    actions: dict,
    params: EnvParams,
    x: Exogenous,
    system: gp.OutageSystem | None = None,
    return_flow: bool = False,
):
    """The agents' decisions on the step's conditions ``x``: ``(targets, offset,
    served, gen, interventions)`` (``gen``: the dispatch after the safety filter;
    ``system``: ``params.grid.system(x.branch_on)`` when the caller has it), and with
    ``return_flow`` the filter's DC flows of ``gen`` (``p_from_mw``) last."""
    cfg = env.config
    net = params.network
    t, load, avail, rate = x.t, x.load_mw, x.avail_mw, x.rate_mva
    base = x.base_mw
    # The strategic agent sets each area's schedule (hourly): its generation as a
    # factor of its base generation. The schedule binds: the area's units are moved
    # to it in proportion to their available capacity, and the operational agents
    # adjust around the schedule.
    strategic = jnp.clip(actions["strategic"], -1, 1)
    decide = (t % cfg.strategic_period) == 0
    factor = jnp.where(decide, 1 + cfg.schedule_range * strategic, state.target_factor)
    planned = schedule(env, base, avail, factor)
    delta = jnp.zeros(env.n_gen + 1, env.dtype)
    shed = jnp.zeros(env.n_load + 1, env.dtype)
    for a in range(env.n_areas):
        act = jnp.clip(actions[f"operational_{a}"], -1, 1)
        idx = env.area_gens[a]
        ramp = jnp.append(params.ramp_mw, 0.0)[idx]
        delta = delta.at[idx].add(act[: env.max_gens] * ramp)
        # per-load shedding: each of the area's loads by up to max_shed_share
        share = jnp.clip(act[env.max_gens :], 0, 1) * cfg.max_shed_share
        shed = shed.at[env.area_loads[a]].set(share)
    offset = state.offset_mw + delta[:-1]
    served = load * (1 - shed[:-1])
    proposal = planned + offset
    residual = jnp.clip(actions["safety"], -1, 1) * params.ramp_mw * params.learned_safety
    filtered = safety.filter_dispatch(
        proposal + residual,
        previous=state.gen_mw,
        p_min=jnp.minimum(net.gen.p_min_mw * net.gen.status, avail),
        p_max=avail,
        ramp=params.ramp_mw,
        demand=env._demand(served, params),
        grid=params.grid,
        system=params.grid.system(x.branch_on) if system is None else system,
        injection_bus=physics.injection(env, net, served),
        gen_bus=jnp.asarray(net.topology.gen_bus),
        rate=rate,
        corrective_rounds=cfg.corrective_rounds,
        load_bus=jnp.asarray(net.topology.load_bus),
        # the filter's last-resort shedding and the agents' together stay within
        # max_shed_share of each load
        shed_room=jnp.maximum(load * cfg.max_shed_share - (load - served), 0.0),
        shed_steps=cfg.shed_steps,
    )
    gen, flow, interventions = filtered.p, filtered.p_from_mw, filtered.interventions
    served = served - filtered.shed_mw
    offset = gen - planned  # the operators' redispatch around the schedule, filtered
    if return_flow:
        return factor, offset, served, gen, interventions, flow
    return factor, offset, served, gen, interventions


def schedule(env, base: jax.Array, avail: jax.Array, factor: jax.Array) -> jax.Array:
    """(n_gen,) the base dispatch with each area's generation moved to ``factor``
    (n_areas,) times its base generation, over the area's units in proportion to
    their available capacity ``avail`` (the safety filter then enforces limits,
    ramps and balance)."""
    gen_area = jnp.asarray(env.gen_area)
    area_base = jax.ops.segment_sum(base, gen_area, env.n_areas)
    area_cap = jax.ops.segment_sum(avail, gen_area, env.n_areas)
    share = avail / jnp.maximum(area_cap[gen_area], 1e-6)
    return base + ((factor - 1) * area_base)[gen_area] * share
