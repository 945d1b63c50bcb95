"""The physics-based safety filter: from a proposed dispatch to a feasible one.

Jitted and differentiable almost everywhere (clips and selections). In order:

1. generator limits and ramp limits around the previous dispatch (availability wins
   when a renewable unit's capacity drops faster than its ramp);
2. power balance: the mismatch is spread over the units in proportion to their
   remaining room (a distributed slack);
3. overload relief: a few greedy PTDF steps, each moving power between the two units
   that relieve the most loaded line most per MW (within their room), then balance.

Each unit moved by more than 1 kW from the proposal counts as one intervention.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

MARGIN = 0.98  # relieve lines down to 98 % of their rating


def balance(p, lo, hi, demand):
    """Spread ``demand - sum(p)`` over the units in proportion to their room."""
    mismatch = demand - jnp.sum(p)
    up, down = hi - p, p - lo
    room = jnp.where(mismatch > 0, up, down)
    total = jnp.sum(room)
    move = jnp.clip(mismatch, -total, total)
    return jnp.clip(p + room / jnp.maximum(total, 1e-9) * move, lo, hi)


def _relieve(p, lo, hi, ptdf, injection_bus, gen_bus, rate, demand):
    """One greedy step on the most overloaded line (no-op when nothing is overloaded)."""
    inj = injection_bus + jax.ops.segment_sum(p, gen_bus, injection_bus.shape[0])
    flow = ptdf @ inj
    limit = jnp.where(jnp.isnan(rate), jnp.inf, MARGIN * rate)
    excess = jnp.abs(flow) - limit
    worst = jnp.argmax(jnp.nan_to_num(excess, nan=-jnp.inf))
    need = jnp.maximum(excess[worst], 0.0)
    sens = ptdf[worst, gen_bus] * jnp.sign(flow[worst])  # flow change per MW on each unit
    # Raise the unit that lowers the flow most, lower the one that raises it most.
    up_ok, down_ok = hi - p > 1e-6, p - lo > 1e-6
    inc = jnp.argmin(jnp.where(up_ok, sens, jnp.inf))
    dec = jnp.argmax(jnp.where(down_ok, sens, -jnp.inf))
    gain = sens[dec] - sens[inc]
    amount = jnp.where(gain > 1e-6, need / jnp.maximum(gain, 1e-6), 0.0)
    amount = jnp.minimum(amount, jnp.minimum(hi[inc] - p[inc], p[dec] - lo[dec]))
    amount = jnp.where(up_ok[inc] & down_ok[dec] & (need > 0), jnp.maximum(amount, 0.0), 0.0)
    p = p.at[inc].add(amount).at[dec].add(-amount)
    return balance(p, lo, hi, demand)


def filter_dispatch(
    proposal: jax.Array,
    *,
    previous: jax.Array,
    p_min: jax.Array,
    p_max: jax.Array,
    ramp: jax.Array,
    demand: jax.Array,
    ptdf: jax.Array,
    injection_bus: jax.Array,
    gen_bus: jax.Array,
    rate: jax.Array,
    steps: int = 6,
) -> tuple[jax.Array, jax.Array]:
    """A feasible dispatch close to ``proposal`` and the number of interventions.

    Args:
        proposal: (n_gen,) proposed setpoints, MW.
        previous: (n_gen,) last step's dispatch (ramps are around it).
        p_min, p_max: (n_gen,) limits (p_max already derated by availability).
        ramp: (n_gen,) largest change per step, MW.
        demand: () total consumption to cover, MW.
        ptdf: (n_branch, n_bus) flow sensitivities (MW per MW, reference-bus slack).
        injection_bus: (n_bus,) fixed injections (minus loads), MW.
        gen_bus: (n_gen,) bus of each unit.
        rate: (n_branch,) ratings, MVA (NaN: unlimited).
        steps: greedy overload-relief steps.
    """
    hi = jnp.minimum(p_max, previous + ramp)
    lo = jnp.minimum(jnp.maximum(p_min, previous - ramp), hi)
    p = balance(jnp.clip(proposal, lo, hi), lo, hi, demand)
    p = jax.lax.fori_loop(
        0, steps, lambda _, q: _relieve(q, lo, hi, ptdf, injection_bus, gen_bus, rate, demand), p
    )
    interventions = jnp.sum(jnp.abs(p - proposal) > 1e-3)
    return p, interventions
