"""The environment's physics in one step: DC (or AC) flows after outages, the thermal
relays and the cascade of instant trips (:mod:`gridrl.protection`).

DC flows go through the shared outage engine (:class:`gridphysics.OutageFlows`, one
``system(branch_on)`` per step, shared with the safety filter); grids above
``FAST_DC_MAX_BRANCHES`` branches, and AC, use :func:`gridphysics.solve`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

import gridphysics as gp

if TYPE_CHECKING:
    from gridrl.env import EnvParams


def injection(env, net, served) -> jax.Array:
    """(n_bus,) injections without generation (minus loads and shunt conductance)."""
    topo = net.topology
    return -(
        jax.ops.segment_sum(served, jnp.asarray(topo.load_bus), env.n_bus)
        + jax.ops.segment_sum(
            net.shunt.g_mw * net.shunt.status, jnp.asarray(topo.shunt_bus), env.n_bus
        )
    )


def flows(env, params: EnvParams, gen, served, branch_on, rate, system=None):
    """Branch loadings (percent; inf where the flows are undefined) and isolated buses
    (all of them where the flows are undefined: a collapse). ``system``: the
    outage engine's ``system(branch_on)`` when the caller has it."""
    net = params.network
    if env.config.method == "dc" and env._engine:
        inj = injection(env, net, served) + jax.ops.segment_sum(
            gen, jnp.asarray(net.topology.gen_bus), env.n_bus
        )
        if system is None:
            system = params.grid.system(branch_on)
        res = params.grid.apply(system, inj)
        loading, ok, isolated = (
            gp.loading_percent(res.p_from_mw, rate),
            res.exact,
            res.bus_isolated,
        )
    else:
        net = net.with_loads(p_mw=served).with_gens(p_mw=gen)
        net = net.with_branches(status=branch_on, rate_a_mva=rate)
        res = gp.solve(net, env.config.method, options=gp.SolveOptions(validate=False))
        loading, ok, isolated = res.loading_percent, res.converged, res.bus_isolated
    return jnp.where(ok, loading, jnp.inf), isolated | ~ok


def protect(env, params, gen, served, branch_on, heat, repair, rate, system=None):
    """Power flow, the thermal relays, then trips until no line exceeds its instant
    limit (cascade): ``(loading, isolated, trips, branch_on, heat, repair)``.

    The relays heat with the step's loading before the trips (the step ran at it);
    cascade trips follow within seconds. Undefined flows (a collapse, or an AC solve
    that failed) trip nothing: every bus then counts as cut off, and the step ends
    in a blackout."""
    cfg = env.config
    relay = env.relay
    loading, isolated = flows(env, params, gen, served, branch_on, rate, system)
    heat = relay.heat(heat, jnp.where(branch_on > 0, loading, 0.0))
    trip = relay.trips(heat, loading, branch_on > 0)

    def cond(carry):
        i, trip, *_ = carry
        return (i < cfg.max_cascade) & jnp.any(trip)

    def body(carry):
        i, trip, branch_on, all_trips, _, _ = carry
        branch_on = jnp.where(trip, 0.0, branch_on)
        loading, isolated = flows(env, params, gen, served, branch_on, rate)
        new = relay.instant(loading, branch_on > 0)
        return i + 1, new, branch_on, all_trips | trip, loading, isolated

    init = (jnp.int32(0), trip, branch_on, jnp.zeros_like(trip), loading, isolated)
    _, _, branch_on, trips, loading, isolated = jax.lax.while_loop(cond, body, init)
    repair = jnp.where(trips, cfg.repair_steps, repair)
    loading = jnp.where(branch_on > 0, loading, 0.0)
    return loading, isolated, trips, branch_on, heat, repair
