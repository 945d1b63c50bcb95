"""The physics-based safety filter: from a proposed dispatch to a feasible one.

Jitted and differentiable almost everywhere (clips and selections). In order:

1. generator limits and ramp limits around the previous dispatch (availability wins
   when a renewable unit's capacity drops faster than its ramp);
2. power balance: the mismatch is spread over the units in proportion to their
   remaining room (a distributed slack);
3. overload relief on the grid as it is (outages and splits included): a few greedy
   steps, each moving power between the two units that relieve the most loaded line
   most per MW (within their room). The flows and the sensitivities are the
   post-outage ones of :class:`gridphysics.OutageFlows` (the environment's own
   physics); lines that are out or cut off are skipped, and units on cut-off buses are
   not used. A step is kept only if it raises neither the highest loading nor the total
   overload, so the filter never leaves the flows worse than it found them. Where the
   engine cannot represent the grid (more outages than its slots), no relief is tried.

Each unit moved by more than 1 kW from the proposal counts as one intervention.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

import gridphysics as gp

MARGIN = 0.98  # relieve lines down to 98 % of their rating


def balance(p, lo, hi, demand):
    """Spread ``demand - sum(p)`` over the units in proportion to their room."""
    mismatch = demand - jnp.sum(p)
    up, down = hi - p, p - lo
    room = jnp.where(mismatch > 0, up, down)
    total = jnp.sum(room)
    move = jnp.clip(mismatch, -total, total)
    return jnp.clip(p + room / jnp.maximum(total, 1e-9) * move, lo, hi)


def overload_measures(flow: jax.Array, rate: jax.Array, live: jax.Array):
    """``(highest loading, total overload MW)`` over the ``live`` rated branches (what a
    relief step must not raise)."""
    rated = live & jnp.isfinite(rate) & (rate > 0)
    return _measures(flow, rated, jnp.where(rated, rate, 1.0))


def _measures(flow, rated, safe_rate):
    ratio = jnp.where(rated, jnp.abs(flow) / safe_rate, 0.0)
    over = jnp.where(rated, jnp.maximum(jnp.abs(flow) - safe_rate, 0.0), 0.0)
    return jnp.max(ratio, initial=0.0), jnp.sum(over)


def _relieve(carry, *, lo, hi, grid, system, injection_bus, gen_bus, limit, rated, safe_rate):
    """One greedy step on the most overloaded live line, kept only if it helps.
    ``carry``: the dispatch, its flows and their :func:`overload_measures`."""
    p, flow, worst_before, total_before = carry
    live = ~system.dead
    excess = jnp.where(live, jnp.abs(flow) - limit, -jnp.inf)
    worst = jnp.argmax(jnp.nan_to_num(excess, nan=-jnp.inf))
    need = jnp.maximum(excess[worst], 0.0)
    # flow change on the worst line per MW on each unit (taken at the reference bus)
    sens = grid.sensitivity(system, worst, gen_bus) * jnp.sign(flow[worst])
    usable = ~system.isolated[gen_bus]
    up_ok, down_ok = usable & (hi - p > 1e-6), usable & (p - lo > 1e-6)
    # Raise the unit that lowers the flow most, lower the one that raises it most.
    inc = jnp.argmin(jnp.where(up_ok, sens, jnp.inf))
    dec = jnp.argmax(jnp.where(down_ok, sens, -jnp.inf))
    gain = sens[dec] - sens[inc]
    amount = jnp.where(gain > 1e-6, need / jnp.maximum(gain, 1e-6), 0.0)
    amount = jnp.minimum(amount, jnp.minimum(hi[inc] - p[inc], p[dec] - lo[dec]))
    act = system.exact & up_ok[inc] & down_ok[dec] & (need > 0) & jnp.isfinite(amount)
    amount = jnp.where(act, jnp.maximum(amount, 0.0), 0.0)
    moved = p.at[inc].add(amount).at[dec].add(-amount)  # the total is unchanged
    new_flow = grid.apply(
        system, injection_bus + jax.ops.segment_sum(moved, gen_bus, injection_bus.shape[0])
    ).p_from_mw
    worst_after, total_after = _measures(new_flow, rated, safe_rate)
    keep = (
        act
        & (worst_after <= worst_before * (1 + 1e-6))
        & (total_after <= total_before * (1 + 1e-6) + 1e-6)
    )
    return (
        jnp.where(keep, moved, p),
        jnp.where(keep, new_flow, flow),
        jnp.where(keep, worst_after, worst_before),
        jnp.where(keep, total_after, total_before),
    )


def filter_dispatch(
    proposal: jax.Array,
    *,
    previous: jax.Array,
    p_min: jax.Array,
    p_max: jax.Array,
    ramp: jax.Array,
    demand: jax.Array,
    grid: gp.OutageFlows,
    system: gp.OutageSystem,
    injection_bus: jax.Array,
    gen_bus: jax.Array,
    rate: jax.Array,
    steps: int = 6,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """A feasible dispatch close to ``proposal``, its flows and the number of
    interventions: ``(p, p_from_mw, interventions)``.

    Args:
        proposal: (n_gen,) proposed setpoints, MW.
        previous: (n_gen,) last step's dispatch (ramps are around it).
        p_min, p_max: (n_gen,) limits (p_max already derated by availability).
        ramp: (n_gen,) largest change per step, MW.
        demand: () total consumption to cover, MW.
        grid: the grid's outage-flow engine.
        system: ``grid.system(status)`` of the grid as it is now (outages included).
        injection_bus: (n_bus,) fixed injections (minus loads), MW.
        gen_bus: (n_gen,) bus of each unit.
        rate: (n_branch,) ratings, MVA (NaN: unlimited).
        steps: greedy overload-relief steps.

    ``p_from_mw`` (n_branch,) are the DC flows of ``p`` on that grid (NaN where the
    engine cannot represent it, see :attr:`gridphysics.OutageSystem.exact`).
    """
    hi = jnp.minimum(p_max, previous + ramp)
    lo = jnp.minimum(jnp.maximum(p_min, previous - ramp), hi)
    p = balance(jnp.clip(proposal, lo, hi), lo, hi, demand)
    n_bus = injection_bus.shape[0]
    flow = grid.apply(system, injection_bus + jax.ops.segment_sum(p, gen_bus, n_bus)).p_from_mw

    # what the relief steps share: the live lines, their limits and ratings
    live = ~system.dead
    limit = jnp.where(live & jnp.isfinite(rate), MARGIN * rate, jnp.inf)
    rated = live & jnp.isfinite(rate) & (rate > 0)
    safe_rate = jnp.where(rated, rate, 1.0)

    def body(_, carry):
        return _relieve(
            carry,
            lo=lo,
            hi=hi,
            grid=grid,
            system=system,
            injection_bus=injection_bus,
            gen_bus=gen_bus,
            limit=limit,
            rated=rated,
            safe_rate=safe_rate,
        )

    carry = (p, flow, *_measures(flow, rated, safe_rate))
    p, flow, _, _ = jax.lax.fori_loop(0, steps, body, carry)
    interventions = jnp.sum(jnp.abs(p - proposal) > 1e-3)
    return p, flow, interventions
