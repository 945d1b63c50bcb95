"""DC power flow, the same model as pandapower's ``rundcpp`` and MATPOWER's ``rundcpf``.

Model: branch susceptance ``b = status / (x * tap)``; flows
``P_from = b (theta_f - theta_t - shift)``, ``P_to = -P_from``; bus injections are
generation minus load minus shunt conductance (at 1 p.u.) minus the phase-shifter
injections; reference-bus angles are fixed at their case values, and each
reference bus's imbalance goes to its slack generators in proportion to
``gen.slack_weight``. Buses with no path to a reference bus are excluded (NaN).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from gridphysics import islands, linalg
from gridphysics.network import REF, Network, Topology
from gridphysics.results import PowerFlowResult


@dataclass(frozen=True, eq=False)
class DCStructure:
    """Static index structure of the reduced B matrix of one topology.

    Attributes:
        free: (n_free,) bus indices whose angle is unknown (all but reference buses).
        is_ref: (n_bus,) True at reference buses.
        pattern: sparsity pattern of the reduced ``B[free][:, free]``.
        slots: (4 * n_branch,) slot in ``pattern`` of each branch's ff, tt, ft and tf
            contribution; ``pattern.nnz`` (a dropped slot) where an end is a reference bus.
        diag_slots: (n_free,) slot of each diagonal entry.
    """

    free: np.ndarray
    is_ref: np.ndarray
    pattern: linalg.SparsePattern
    slots: np.ndarray
    diag_slots: np.ndarray


@functools.lru_cache(maxsize=128)
def dc_structure(topology: Topology) -> DCStructure:
    n_bus = topology.n_bus
    is_ref = topology.bus_type == REF
    free = np.flatnonzero(~is_ref)
    red = np.full(n_bus, -1, dtype=np.int64)
    red[free] = np.arange(len(free))
    rf, rt = red[topology.branch_from], red[topology.branch_to]
    rows = np.concatenate([rf, rt, rf, rt])
    cols = np.concatenate([rf, rt, rt, rf])
    keep = (rows >= 0) & (cols >= 0)
    diag = np.arange(len(free))
    pattern, slot = linalg.SparsePattern.coalesce(
        len(free), np.concatenate([rows[keep], diag]), np.concatenate([cols[keep], diag])
    )
    slots = np.full(len(rows), pattern.nnz, dtype=np.int32)
    slots[keep] = slot[: keep.sum()]
    return DCStructure(
        free=free,
        is_ref=is_ref,
        pattern=pattern,
        slots=slots,
        diag_slots=slot[keep.sum() :].astype(np.int32),
    )


def _bus_sum(values: jax.Array, bus: np.ndarray, n_bus: int) -> jax.Array:
    return jax.ops.segment_sum(values, jnp.asarray(bus), num_segments=n_bus)


def residual_tolerance(dtype: jnp.dtype) -> float:
    """Relative power-mismatch tolerance of a converged DC solve in ``dtype``.

    A correct solve leaves a mismatch of about cond(B) * eps * |P|; this bound
    (``1e3 * sqrt(eps)``: 1.5e-5 in float64, 0.35 in float32) only rejects
    solutions of singular or corrupted systems.
    """
    return float(1e3 * np.sqrt(np.finfo(dtype).eps))


def solve_dc(network: Network, linear_solver: linalg.Backend | None = None) -> PowerFlowResult:
    """DC power flow of ``network`` (traceable; see :func:`gridphysics.solve`)."""
    topo = network.topology
    s = dc_structure(topo)
    dtype = network.dtype
    base = topo.base_mva
    n_bus = topo.n_bus
    f, t = topo.branch_from, topo.branch_to
    br, gen, load, shunt = network.branch, network.gen, network.load, network.shunt

    active = br.status > 0
    reach = islands.reachable(topo, active)
    isolated = ~reach
    live = active & reach[f] & jnp.asarray(islands.candidate_branches(topo))
    safe_x = jnp.where(br.x_pu == 0, 1.0, br.x_pu)
    b = jnp.where(live, br.status / (safe_x * br.tap), 0.0)

    p_spec_mw = (
        _bus_sum(gen.p_mw * gen.status, topo.gen_bus, n_bus)
        - _bus_sum(load.p_mw * load.status, topo.load_bus, n_bus)
        - _bus_sum(shunt.g_mw * shunt.status, topo.shunt_bus, n_bus)
    )

    def injections(flow_from: jax.Array) -> jax.Array:
        return _bus_sum(flow_from, f, n_bus) - _bus_sum(flow_from, t, n_bus)

    theta_fixed = jnp.where(jnp.asarray(s.is_ref), network.bus.va_rad, 0.0)
    fixed_flow = b * (theta_fixed[f] - theta_fixed[t] - br.shift_rad)
    rhs_full = p_spec_mw / base - injections(fixed_flow)
    free_isolated = isolated[s.free]
    rhs = jnp.where(free_isolated, 0.0, rhs_full[s.free])

    contrib = jnp.concatenate([b, b, -b, -b])
    values = jax.ops.segment_sum(contrib, jnp.asarray(s.slots), num_segments=s.pattern.nnz + 1)
    values = values[:-1].at[s.diag_slots].add(free_isolated.astype(dtype))
    backend = linalg.choose_backend(s.pattern.n, linear_solver)
    theta_free = linalg.solve(s.pattern, values, rhs, backend)

    theta = theta_fixed.at[s.free].set(theta_free)
    theta = jnp.where(isolated, 0.0, theta)
    p_from = b * (theta[f] - theta[t] - br.shift_rad) * base
    p_bus = injections(p_from)
    mismatch = p_bus - p_spec_mw

    weight = gen.slack_weight * gen.status
    weight_at_bus = _bus_sum(weight, topo.gen_bus, n_bus)[topo.gen_bus]
    share = jnp.where(weight_at_bus > 0, weight / jnp.where(weight_at_bus > 0, weight_at_bus, 1), 0)
    gen_p = gen.p_mw * gen.status + share * mismatch[topo.gen_bus]

    scale = 1.0 + jnp.max(jnp.abs(p_spec_mw))
    unknown = ~jnp.asarray(s.is_ref) & reach
    residual = jnp.max(jnp.where(unknown, jnp.abs(mismatch), 0.0))
    converged = (residual <= residual_tolerance(dtype) * scale) & jnp.all(jnp.isfinite(theta))
    converged &= jnp.all(jnp.isfinite(p_spec_mw))

    nan = jnp.asarray(jnp.nan, dtype)

    def ok(x: jax.Array, valid: jax.Array | bool = True) -> jax.Array:
        return jnp.where(converged & valid, x, nan)

    rate = br.rate_a_mva
    loading = jnp.abs(p_from) / jnp.where(jnp.isnan(rate), 1.0, rate) * 100.0
    return PowerFlowResult(
        va_rad=ok(theta, reach),
        vm_pu=ok(jnp.ones(n_bus, dtype), reach),
        p_bus_mw=ok(p_bus, reach),
        p_from_mw=ok(p_from),
        p_to_mw=ok(-p_from),
        loading_percent=ok(loading, ~jnp.isnan(rate)),
        gen_p_mw=ok(gen_p, reach[topo.gen_bus]),
        bus_isolated=isolated,
        converged=converged,
        method="dc",
        topology=topo,
    )
