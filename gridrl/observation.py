"""What each agent observes (its sizes follow from this function: ``GridEnv.bind_shapes``
evaluates it with ``jax.eval_shape``; nothing here is hand-counted).

* strategic: system load now and in an hour (from the day's profile), per-area load,
  generation and balance, the worst loading per area and on tie lines, the share of
  lines out, the time of day, the current schedules;
* operational (one per area, padded to the largest area): its loads, its units' output,
  limits, availability and marginal cost, a unit mask, the loading of its lines and a
  line mask, its schedule, the time of day, its area id;
* safety: every line's loading and thermal heat, every unit's output and availability,
  every load, the line statuses, the time of day.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

if TYPE_CHECKING:
    from gridrl.env import EnvParams, EnvState


def observe(env, state: EnvState, params: EnvParams) -> dict:
    net = params.network
    topo = net.topology
    ref = jnp.sum(net.load.p_mw * net.load.status)
    A = env.n_areas
    area_of_gen = jnp.asarray(env.gen_area)
    area_load = jax.ops.segment_sum(state.load_mw, jnp.asarray(env.load_area), A)
    area_gen = jax.ops.segment_sum(state.gen_mw, area_of_gen, A)
    loading = jnp.nan_to_num(state.loading, posinf=999.0)
    lines = jnp.asarray(env.area_lines)
    padded_loading = jnp.append(loading, 0.0)[lines]
    area_worst = jnp.max(padded_loading, axis=1)
    tie = jnp.max(loading[env.tie_lines]) if len(env.tie_lines) else jnp.zeros((), env.dtype)
    phase = 2 * jnp.pi * state.t / env.config.episode_steps
    clock = jnp.stack([jnp.sin(phase), jnp.cos(phase)])
    next_hour = env.next_hour_ratio(state, params)
    n_out = jnp.sum(1 - state.branch_on) / env.n_branch
    obs = {
        "strategic": jnp.concatenate(
            [
                jnp.stack([jnp.sum(state.load_mw) / ref, jnp.sum(state.load_mw) * next_hour / ref]),
                area_load / ref,
                area_gen / ref,
                (area_gen - area_load) / ref,
                area_worst / 100.0,
                jnp.stack([tie / 100.0, n_out]),
                clock,
                state.target_factor - 1,
            ]
        )
    }
    p_max = jnp.maximum(net.gen.p_max_mw, 1e-6)
    # every area's units and loads in one gather each (index n_gen / n_load: padding)
    unit = jnp.stack(
        [
            state.gen_mw / p_max,
            net.gen.p_min_mw / p_max,
            state.avail_mw / p_max,
            net.gen.cost_c1 / 100.0,
        ]
    )
    unit = jnp.pad(unit, ((0, 0), (0, 1)))[:, jnp.asarray(env.area_gens)]  # (4, A, max_gens)
    area_loads = jnp.append(state.load_mw, 0.0)[jnp.asarray(env.area_loads)] / ref
    unit_mask = jnp.asarray(env.area_gens < env.n_gen, env.dtype)
    line_mask = jnp.asarray(env.area_lines < env.n_branch, env.dtype)
    for a in range(A):
        obs[f"operational_{a}"] = jnp.concatenate(
            [
                area_loads[a],
                unit[0, a],
                unit[1, a],
                unit[2, a],
                unit[3, a],
                unit_mask[a],
                padded_loading[a] / 100.0,
                line_mask[a],
                jnp.stack([state.target_factor[a] - 1, area_gen[a] / ref]),
                clock,
                jax.nn.one_hot(a, A, dtype=env.dtype),
            ]
        )
    obs["safety"] = jnp.concatenate(
        [
            loading / 100.0,
            state.heat / env.relay.trip_heat,
            state.gen_mw / p_max,
            state.avail_mw / p_max,
            state.load_mw / ref * topo.n_load,
            state.branch_on,
            clock,
        ]
    )
    return {k: v.astype(env.dtype) for k, v in obs.items()}
