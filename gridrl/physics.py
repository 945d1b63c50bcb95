"""The environment's physics in one step: DC (or AC) flows after outages, the thermal
relays and the cascade of instant trips (:mod:`gridrl.protection`).

DC flows go through the shared outage engine (:class:`gridphysics.OutageFlows`, one
``system(branch_on)`` per step, shared with the safety filter); grids above
``FAST_DC_MAX_BRANCHES`` branches, and AC, use :func:`gridphysics.solve`.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
from jax.custom_batching import custom_vmap

import gridphysics as gp
from gridphysics import batching

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


def flows(env, params: EnvParams, gen, served, branch_on, rate, system=None, p_from_mw=None):
    """Branch loadings (percent; inf where the flows are undefined) and isolated buses
    (all of them where the flows are undefined: a collapse). ``system``: the
    outage engine's ``system(branch_on)`` when the caller has it; ``p_from_mw``: the
    engine's DC flows of ``gen`` on it, when the caller has them too (the safety
    filter's, see :func:`gridrl.safety.filter_dispatch`; NaN where not exact)."""
    net = params.network
    if env.config.method == "dc" and env._engine and system is not None and p_from_mw is not None:
        ok = system.exact & jnp.all(jnp.isfinite(p_from_mw))
        loading = gp.loading_percent(p_from_mw, rate)
        return jnp.where(ok, loading, jnp.inf), system.isolated | ~ok
    if env.config.method == "dc" and env._engine:
        inj = injection(env, net, served) + jax.ops.segment_sum(
            gen, jnp.asarray(net.topology.gen_bus), env.n_bus
        )
        if system is None:  # used once: a cascade round
            system = params.grid.system(branch_on, reuse=False)
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


def protect(env, params, gen, served, branch_on, heat, repair, rate, system=None, p_from_mw=None):
    """Power flow, the thermal relays, then trips until no line exceeds its instant
    limit (cascade): ``(loading, isolated, trips, branch_on, heat, repair)``.

    The relays heat with the step's loading before the trips (the step ran at it);
    cascade trips follow within seconds. Undefined flows (a collapse, or an AC solve
    that failed) trip nothing: every bus then counts as cut off, and the step ends
    in a blackout."""
    cfg = env.config
    loading, isolated = flows(env, params, gen, served, branch_on, rate, system, p_from_mw)
    heat = env.relay.heat(heat, jnp.where(branch_on > 0, loading, 0.0))
    trip = env.relay.trips(heat, loading, branch_on > 0)
    branch_on, trips, loading, isolated = cascade(
        env, params, gen, served, branch_on, rate, trip, loading, isolated
    )
    repair = jnp.where(trips, cfg.repair_steps, repair)
    loading = jnp.where(branch_on > 0, loading, 0.0)
    return loading, isolated, trips, branch_on, heat, repair


#: Under ``vmap`` the cascade runs on the environments with a trip, gathered into
#: buckets of 1/CASCADE_SHARE of the batch, one after the other (usually one: a few
#: percent of the steps trip a line).
CASCADE_SHARE = batching.BUCKET_SHARE


def _cascade(env, params, gen, served, branch_on, rate, trip, loading, isolated):
    """Trip ``trip``, then whatever exceeds its instant limit on the new flows, until
    nothing does or ``max_cascade`` rounds: ``(branch_on, trips, loading, isolated)``."""
    cfg, relay = env.config, env.relay

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
    return branch_on, trips, loading, isolated


def cascade(env, params, gen, served, branch_on, rate, trip, loading, isolated):
    """:func:`_cascade`; under ``vmap`` a batched ``while_loop`` runs until its slowest
    environment is done, so every environment would pay for the few that cascade. The
    batching rule runs the loop on the environments with a ``trip`` only, gathered into
    buckets of ``1/CASCADE_SHARE`` of the batch
    (:func:`gridphysics.batching.over_flagged_rows`). The results are the same."""
    run = custom_vmap(functools.partial(_cascade, env))

    @run.def_vmap
    def _rule(axis_size, in_batched, *args):
        def full(a):
            return jax.tree.map(
                lambda x, b: x if b else jnp.broadcast_to(x, (axis_size, *x.shape)), a, in_batched
            )

        axes = jax.tree.map(lambda b: 0 if b else None, list(in_batched))
        whole = jax.vmap(functools.partial(_cascade, env), in_axes=axes)
        _, _, _, branch_on, _, trip, loading, isolated = full(list(args))

        def cascaded(take):
            return whole(
                *jax.tree.map(lambda x, b: x[take] if b else x, list(args), list(in_batched))
            )

        idle = (branch_on, jnp.zeros_like(trip), loading, isolated)
        need = jnp.any(trip, axis=-1)
        out = batching.over_flagged_rows(cascaded, need, idle, CASCADE_SHARE)
        return out, (True, True, True, True)

    return run(params, gen, served, branch_on, rate, trip, loading, isolated)
