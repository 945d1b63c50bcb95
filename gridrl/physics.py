"""Fast DC flows for the environment: intact-grid PTDF plus a Woodbury update for outages.

Most environments in a batch run with all branches in service or a few out. Their DC
flows are exactly ``PTDF @ injections + f0`` of the intact grid, corrected for the
out-of-service set ``K`` by ``H_K (I - H_KK)^-1 f_K`` (``H``: flow change per unit
transferred across each branch). That is a matrix product shared by the whole batch
instead of one sparse factorization per environment.

Where the update does not apply — more than ``max_outages`` branches out, or an
outage set that splits the grid (``I - H_KK`` singular) — the exact power flow of
:func:`gridphysics.solve` is used. Under ``vmap`` the exact solve runs only when some
environment of the batch needs it (a custom batching rule), so the common case costs
a few matrix products. The result equals ``gridphysics.solve`` either way.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.custom_batching import custom_vmap

import gridphysics as gp

EXACT_CHUNK = 8  # environments per exact fallback solve (a loop covers the rest)


def transfer_matrix(network: gp.Network) -> jax.Array:
    """(n_branch, n_branch) ``H[:, k]``: flow change on every branch per MW moved from
    branch ``k``'s from bus to its to bus, in the intact grid (``PTDF @ (e_f - e_t)``)."""
    h = gp.ptdf(network)
    t = network.topology
    return h[:, t.branch_from] - h[:, t.branch_to]


def _woodbury(flow0, h, out, max_outages):
    """Flows after the outages ``out`` (bool, (n_branch,)), and whether the update is exact."""
    weight, idx = jax.lax.top_k(out.astype(flow0.dtype), max_outages)
    valid = weight > 0
    cols = jnp.where(valid[None, :], h[:, idx], 0.0)
    eye = jnp.eye(max_outages, dtype=flow0.dtype)
    m = jnp.where(valid[:, None] & valid[None, :], eye - cols[idx], eye)
    sign, logdet = jnp.linalg.slogdet(m)
    y = jnp.linalg.solve(m, jnp.where(valid, flow0[idx], 0.0))
    post = flow0 + cols @ y
    post = jnp.where(out, 0.0, post)
    ok = (jnp.sum(out) <= max_outages) & (sign != 0) & (logdet > jnp.log(1e-7))
    return post, ok


def dc_flows(exact, params, injection_bus, branch_on, gen, served, max_outages: int = 8):
    """``(p_from_mw, bus_isolated)`` of one environment (see the module docstring).

    Args:
        exact: ``exact(params, branch_on, gen, served) -> (p_from_mw, bus_isolated)``,
            the exact fallback (a function of its arguments only).
        params: a pytree with ``network`` (intact statuses), ``ptdf``, ``transfer``
            (:func:`transfer_matrix`) and ``flow_shift`` (flows at zero injection).
        injection_bus: (n_bus,) net injections, MW.
        branch_on: (n_branch,) 0/1 statuses.
        gen, served: (n_gen,), (n_load,) dispatch and served load (for the fallback).
    """
    n_bus = params.network.n_bus

    def fast_one(params, inj, on):
        flow0 = params.ptdf @ inj + params.flow_shift
        out = (params.network.branch.status > 0) & (on <= 0)
        return _woodbury(flow0, params.transfer, out, max_outages)

    @custom_vmap
    def flows(params, inj, on, gen, served):
        post, ok = fast_one(params, inj, on)
        return jax.lax.cond(
            ok, lambda: (post, jnp.zeros(n_bus, bool)), lambda: exact(params, on, gen, served)
        )

    @flows.def_vmap
    def _batched(axis_size, in_batched, params, inj, on, gen, served):
        if any(jax.tree.leaves(in_batched[0])):  # batched parameters: no shared structure
            return jax.vmap(
                lambda p, i, o, g, s: flows(p, i, o, g, s),
                in_axes=(
                    jax.tree.map(lambda b: 0 if b else None, in_batched[0]),
                    *(0 if b else None for b in in_batched[1:]),
                ),
            )(params, inj, on, gen, served), (True, True)

        def full(x, batched):
            return x if batched else jnp.broadcast_to(x, (axis_size, *x.shape))

        inj, on, gen, served = (
            full(x, b) for x, b in zip((inj, on, gen, served), in_batched[1:], strict=True)
        )
        post, ok = jax.vmap(lambda i, o: fast_one(params, i, o))(inj, on)
        none = jnp.zeros((axis_size, n_bus), bool)

        chunk = min(axis_size, EXACT_CHUNK)

        def with_exact():
            # exact solves for the environments that need one only, `chunk` at a time
            def body(carry):
                remaining, flow, iso = carry
                weight, idx = jax.lax.top_k(remaining.astype(jnp.int32), chunk)
                take = weight > 0
                f, i = jax.vmap(lambda o, g, s: exact(params, o, g, s))(
                    on[idx], gen[idx], served[idx]
                )
                flow = flow.at[idx].set(jnp.where(take[:, None], f, flow[idx]))
                iso = iso.at[idx].set(jnp.where(take[:, None], i, iso[idx]))
                return remaining.at[idx].set(remaining[idx] & ~take), flow, iso

            _, flow, iso = jax.lax.while_loop(
                lambda carry: jnp.any(carry[0]), body, (~ok, post, none)
            )
            return flow, iso

        return jax.lax.cond(jnp.all(ok), lambda: (post, none), with_exact), (True, True)

    return flows(params, injection_bus, branch_on, gen, served)
