"""The physics-based safety filter: from a proposed dispatch to a feasible one.

Jitted and differentiable almost everywhere (clips and selections). In order:

1. generator limits and ramp limits around the previous dispatch (availability wins
   when a renewable unit's capacity drops faster than its ramp);
2. power balance: the mismatch is spread over the units in proportion to their
   remaining room (a distributed slack);
3. optionally (``corrective_rounds`` > 0, :attr:`gridrl.env.EnvConfig.corrective_rounds`),
   a corrective redispatch: the dispatch closest to the proposal (least squares) within
   the limits, ramps and balance that holds the ``QP_LINES`` most loaded live lines at
   ``MARGIN`` of their rating, solved by ADMM at a fixed cost and kept only when it
   leaves the flows better (see :func:`corrective`);
4. overload relief on the grid as it is (outages and splits included): a few greedy
   steps, each moving power between the two units that relieve the most loaded line
   most per MW (within their room). The flows and the sensitivities are the
   post-outage ones of :class:`gridphysics.OutageFlows` (the environment's own
   physics); lines that are out or cut off are skipped, and units on cut-off buses are
   not used. A step is kept only if it raises neither the highest loading nor the total
   overload, so the filter never leaves the flows worse than it found them. Where the
   engine cannot represent the grid (more outages than its slots), no relief is tried;
5. optionally (``shed_steps`` > 0, :attr:`gridrl.env.EnvConfig.shed_steps`), load
   shedding as the last resort, where redispatch within the ramps cannot relieve a
   line (at level 4 of ieee118 that is most of what it leaves: an exact LP over the
   same ramps removed the overload in 7 % of those states): greedy steps like the
   relief steps, each shedding the load that relieves the most overloaded line most
   per MW and taking the same power off the unit that relieves it most, within what
   each load may still shed (``shed_room``), kept by the same rule. What it sheds is
   deliberate shedding, as the operational agents' is.

Each unit moved by more than 1 kW from the proposal, and each load the filter sheds by
more than 1 kW, counts as one intervention.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

import gridphysics as gp

MARGIN = 0.98  # relieve lines down to 98 % of their rating

#: The corrective redispatch: the most loaded lines it constrains per round (each round
#: re-linearizes at the last one's dispatch and picks the lines most loaded then) and its
#: ADMM iterations per round.
QP_LINES = 16
QP_ITERATIONS = 60
# ADMM penalties as in OSQP (sigma regularizes x, rho weighs the constraint rows; the
# balance row, an equality, gets a much larger rho) and its over-relaxation.
_RHO, _RHO_EQ, _SIGMA, _ALPHA = 1.0, 1e3, 1e-6, 1.6


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


def corrective(p, flow, *, lo, hi, grid, system, injection_bus, gen_bus, limit, rated):
    """One round of the corrective redispatch: ``(p, flow)`` of the dispatch closest to
    ``p`` (least squares, MW) within ``[lo, hi]``, with ``p``'s total, that holds the
    ``QP_LINES`` most loaded live rated lines within ``limit``. Their flows are linear in
    the dispatch on a fixed topology (DC), with the post-outage sensitivities of
    ``grid.sensitivity``; the returned ``flow`` is the engine's exact DC flow of the
    returned ``p``. ``QP_ITERATIONS`` ADMM iterations (OSQP's), so the line limits hold
    only approximately: the caller checks the exact flows."""
    n, dtype = p.shape[0], p.dtype
    k = min(QP_LINES, flow.shape[0])
    ratio = jnp.where(rated, jnp.abs(flow) / jnp.where(rated, limit, 1.0), -1.0)
    _, lines = jax.lax.top_k(jnp.nan_to_num(ratio, nan=-1.0), k)
    s = jnp.nan_to_num(jax.vmap(lambda b: grid.sensitivity(system, b, gen_bus))(lines))
    lim = jnp.where(rated[lines], limit[lines], jnp.inf)
    total = jnp.sum(p)
    # The QP in the move d = x - p from the proposal: min |d|^2 / 2 with the constrained
    # flows flow + s d within +-lim, lo - p <= d <= hi - p and sum(d) = 0. (In x itself
    # the balance row's penalty times the total, ~1e3 x 4,000 MW, swamped float32: the
    # moves it returned were off by tens of MW against float64.)
    row_lo, row_hi = -lim - flow[lines], lim - flow[lines]
    d_lo, d_hi = lo - p, hi - p
    rho = jnp.where(jnp.isfinite(lim), _RHO, 1e-6).astype(dtype)
    # The d-update solves (c I + U^T R U) d = rhs, U: the k line rows and the balance row,
    # R: their rhos; by Woodbury through the (k+1) x (k+1) core (c R^-1 + U U^T)^-1.
    c = 1 + _SIGMA + _RHO
    u = jnp.concatenate([s, jnp.ones((1, n), dtype)])
    r_inv = jnp.concatenate([1 / rho, jnp.full(1, 1 / _RHO_EQ, dtype)])
    core = jnp.linalg.inv(c * jnp.diag(r_inv) + u @ u.T)

    def iterate(_, carry):
        d, z_l, z_b, y_l, y_e, y_b = carry
        rhs = _SIGMA * d + s.T @ (rho * z_l - y_l) - y_e + _RHO * z_b - y_b
        dt = (rhs - u.T @ (core @ (u @ rhs))) / c
        r_l = _ALPHA * (s @ dt) + (1 - _ALPHA) * z_l
        r_e = _ALPHA * jnp.sum(dt)
        r_b = _ALPHA * dt + (1 - _ALPHA) * z_b
        z_l = jnp.clip(r_l + y_l / rho, row_lo, row_hi)
        z_b = jnp.clip(r_b + y_b / _RHO, d_lo, d_hi)
        return (
            _ALPHA * dt + (1 - _ALPHA) * d,
            z_l,
            z_b,
            y_l + rho * (r_l - z_l),
            y_e + _RHO_EQ * r_e,
            y_b + _RHO * (r_b - z_b),
        )

    zero = jnp.zeros_like(p)
    init = (zero, jnp.clip(jnp.zeros(k, dtype), row_lo, row_hi), zero, jnp.zeros(k, dtype))
    init = (*init, jnp.zeros((), dtype), zero)
    x = p + jax.lax.fori_loop(0, QP_ITERATIONS, iterate, init)[0]
    x = balance(jnp.clip(x, lo, hi), lo, hi, total)
    new_flow = grid.apply(
        system, injection_bus + jax.ops.segment_sum(x, gen_bus, injection_bus.shape[0])
    ).p_from_mw
    return x, new_flow


def _no_worse(after, before) -> jax.Array:
    """Whether a candidate's :func:`overload_measures` ``after`` raise neither the highest
    loading nor the total overload of ``before`` (the filter's rule for keeping a move)."""
    return (after[0] <= before[0] * (1 + 1e-6)) & (after[1] <= before[1] * (1 + 1e-6) + 1e-6)


def _worst_line(flow, limit, system):
    """``(line, MW above its limit)`` of the most overloaded live line (0 MW: none)."""
    excess = jnp.where(~system.dead, jnp.abs(flow) - limit, -jnp.inf)
    worst = jnp.argmax(jnp.nan_to_num(excess, nan=-jnp.inf))
    return worst, jnp.maximum(excess[worst], 0.0)


def _relieve(carry, *, lo, hi, grid, system, injection_bus, gen_bus, limit, rated, safe_rate):
    """One greedy step on the most overloaded live line, kept only if it helps.
    ``carry``: the dispatch, its flows and their :func:`overload_measures`."""
    p, flow, worst_before, total_before = carry
    worst, need = _worst_line(flow, limit, system)
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
    # the flows move along the post-outage PTDF columns of the two units' buses
    # (NaN where the engine cannot represent the grid; no move is made there)
    new_flow = flow + amount * jnp.nan_to_num(
        grid.transfer_flows(system, gen_bus[inc], gen_bus[dec])
    )
    worst_after, total_after = _measures(new_flow, rated, safe_rate)
    keep = act & _no_worse((worst_after, total_after), (worst_before, total_before))
    return (
        jnp.where(keep, moved, p),
        jnp.where(keep, new_flow, flow),
        jnp.where(keep, worst_after, worst_before),
        jnp.where(keep, total_after, total_before),
    )


def _shed(carry, *, lo, grid, system, gen_bus, load_bus, limit, rated, safe_rate):
    """One last-resort shedding step on the most overloaded live line, kept only if it
    helps. ``carry``: the dispatch, the load shed so far and what each load may still
    shed (MW), the flows and their :func:`overload_measures`."""
    p, shed, room, flow, worst_before, total_before = carry
    worst, need = _worst_line(flow, limit, system)
    # flow change on the worst line per MW injected at each bus (0 where cut off)
    row = grid.sensitivity(system, worst) * jnp.sign(flow[worst])
    # shedding a load injects at its bus; the unit that balances it injects less
    sens_load, sens_gen = row[load_bus], row[gen_bus]
    shed_ok = ~system.isolated[load_bus] & (room > 1e-6)
    down_ok = ~system.isolated[gen_bus] & (p - lo > 1e-6)
    j = jnp.argmin(jnp.where(shed_ok, sens_load, jnp.inf))
    g = jnp.argmax(jnp.where(down_ok, sens_gen, -jnp.inf))
    gain = sens_gen[g] - sens_load[j]
    amount = jnp.where(gain > 1e-6, need / jnp.maximum(gain, 1e-6), 0.0)
    amount = jnp.minimum(amount, jnp.minimum(room[j], p[g] - lo[g]))
    act = system.exact & shed_ok[j] & down_ok[g] & (need > 0) & jnp.isfinite(amount)
    amount = jnp.where(act, jnp.maximum(amount, 0.0), 0.0)
    new_flow = flow + amount * jnp.nan_to_num(grid.transfer_flows(system, load_bus[j], gen_bus[g]))
    worst_after, total_after = _measures(new_flow, rated, safe_rate)
    keep = act & _no_worse((worst_after, total_after), (worst_before, total_before))
    amount = jnp.where(keep, amount, 0.0)
    return (
        p.at[g].add(-amount),
        shed.at[j].add(amount),
        room.at[j].add(-amount),
        jnp.where(keep, new_flow, flow),
        jnp.where(keep, worst_after, worst_before),
        jnp.where(keep, total_after, total_before),
    )


class Filtered(NamedTuple):
    """What :func:`filter_dispatch` returns.

    Attributes:
        p: (n_gen,) the feasible dispatch, MW.
        p_from_mw: (n_branch,) its DC flows on the grid as it is (with ``shed_mw``
            taken off the loads; NaN where the engine cannot represent the grid).
        interventions: () units moved by more than 1 kW from the proposal, plus loads
            the filter shed by more than 1 kW.
        shed_mw: (n_load,) load the filter shed as the last resort (0 without
            ``shed_steps``; (0,) without ``load_bus``).
    """

    p: jax.Array
    p_from_mw: jax.Array
    interventions: jax.Array
    shed_mw: jax.Array


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
    corrective_rounds: int = 0,
    load_bus: jax.Array | None = None,
    shed_room: jax.Array | None = None,
    shed_steps: int = 0,
) -> Filtered:
    """A feasible dispatch close to ``proposal``, its flows, the number of
    interventions and the load shed as the last resort (a :class:`Filtered`).

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
        corrective_rounds: rounds of :func:`corrective` before them (0: none). Each
            round costs about 20 relief steps; it moves every unit at once, where a
            relief step moves two.
        load_bus: (n_load,) bus of each load (needed for ``shed_steps``).
        shed_room: (n_load,) MW each load may still be shed (needed for ``shed_steps``;
            ``injection_bus`` holds the loads before it).
        shed_steps: last-resort shedding steps after the relief steps (0: none).

    ``p_from_mw`` (n_branch,) are the DC flows of ``p`` on that grid, with ``shed_mw``
    taken off the loads (NaN where the engine cannot represent it, see
    :attr:`gridphysics.OutageSystem.exact`).
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

    # what the corrective rounds and the relief steps share
    shared = dict(
        grid=grid,
        system=system,
        injection_bus=injection_bus,
        gen_bus=gen_bus,
        limit=limit,
        rated=rated,
    )

    def body(_, carry):
        return _relieve(carry, lo=lo, hi=hi, safe_rate=safe_rate, **shared)

    measures = _measures(flow, rated, safe_rate)
    if corrective_rounds:
        usable = ~system.isolated[gen_bus]  # units cut off stay where they are
        q_lo, q_hi = jnp.where(usable, lo, p), jnp.where(usable, hi, p)
        need = system.exact & jnp.any(live & (jnp.abs(flow) > limit))
        for _ in range(corrective_rounds):
            cand, cand_flow = corrective(p, flow, lo=q_lo, hi=q_hi, **shared)
            after = _measures(cand_flow, rated, safe_rate)
            keep = need & jnp.all(jnp.isfinite(cand)) & _no_worse(after, measures)
            p = jnp.where(keep, cand, p)
            flow = jnp.where(keep, cand_flow, flow)
            measures = tuple(jnp.where(keep, a, b) for a, b in zip(after, measures, strict=True))
    carry = (p, flow, *measures)
    p, flow, *measures = jax.lax.fori_loop(0, steps, body, carry)
    n_load = 0 if load_bus is None else load_bus.shape[0]
    shed = jnp.zeros(n_load, p.dtype)
    if shed_steps:
        if load_bus is None or shed_room is None:
            raise ValueError("shed_steps needs load_bus and shed_room")

        def shed_body(_, carry):
            return _shed(
                carry,
                lo=lo,
                grid=grid,
                system=system,
                gen_bus=gen_bus,
                load_bus=load_bus,
                limit=limit,
                rated=rated,
                safe_rate=safe_rate,
            )

        carry = (p, shed, jnp.maximum(shed_room, 0.0), flow, *measures)
        p, shed, _, flow, _, _ = jax.lax.fori_loop(0, shed_steps, shed_body, carry)
    interventions = jnp.sum(jnp.abs(p - proposal) > 1e-3) + jnp.sum(shed > 1e-3)
    return Filtered(p, flow, interventions, shed)
