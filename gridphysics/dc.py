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

from gridphysics import admittance, islands, linalg
from gridphysics.admittance import SHIFT_MAX_RAD, TAP_MAX, TAP_MIN, Z_MAX_PU, Z_MIN_PU
from gridphysics.network import REF, Network, Topology
from gridphysics.results import PowerFlowResult, loading_percent, slack_share

#: Physical range of an in-service branch's series reactance |x| (p.u.): the AC model's
#: range for |r + jx| (gridphysics.admittance). Below it (1e-300, 0) the branch is a
#: short outside any physical range, above it (1e300, inf) it carries nothing and should
#: be switched out instead: the solve reports converged=False.
X_MIN_PU = Z_MIN_PU
X_MAX_PU = Z_MAX_PU


@dataclass(frozen=True, eq=False)
class DCStructure:
    """Static index structure of one topology's DC problem (numpy, built once).

    Attributes:
        free: (n_free,) bus indices whose angle is unknown (all but reference buses).
        is_ref: (n_bus,) True at reference buses.
        theta_map: (n_bus,) position of each bus in ``free``, ``n_free`` at reference buses.
        ref_index: (n_bus,) position of each reference bus among them, ``n_ref`` elsewhere.
        pattern: sparsity pattern of the reduced ``B[free][:, free]``.
        slots: slot in ``pattern`` of each branch's ff, tt, ft, tf contribution
            (``4 * n_branch``) followed by each free bus's diagonal (``n_free``);
            ``pattern.nnz`` (dropped) where a branch end is a reference bus.
        flow_bus: ``concat([branch_from, branch_to])``.
        ref_branch, ref_sign: (n_ref, k) branches at each reference bus (``n_branch``
            pads) and +1 / -1 for the from / to end.
        gen_peers: (n_gen, m) generators at the same bus (``n_gen`` pads).
    """

    free: np.ndarray
    is_ref: np.ndarray
    theta_map: np.ndarray
    ref_index: np.ndarray
    pattern: linalg.SparsePattern
    slots: np.ndarray
    flow_bus: np.ndarray
    ref_branch: np.ndarray
    ref_sign: np.ndarray
    gen_peers: np.ndarray


def _padded_groups(keys: np.ndarray, n_keys: int, pad: int) -> np.ndarray:
    """(n_keys, max_count) array of the positions holding each key, padded with ``pad``."""
    order = np.argsort(keys, kind="stable")
    counts = np.bincount(keys, minlength=n_keys)
    width = max(1, int(counts.max(initial=0)))
    out = np.full((n_keys, width), pad, dtype=np.int32)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    for k in np.flatnonzero(counts):
        out[k, : counts[k]] = order[starts[k] : starts[k] + counts[k]]
    return out


@functools.lru_cache(maxsize=128)
def dc_structure(topology: Topology) -> DCStructure:
    n_bus, n_branch = topology.n_bus, topology.n_branch
    f, t = topology.branch_from, topology.branch_to
    is_ref = topology.bus_type == REF
    free = np.flatnonzero(~is_ref)
    red = np.full(n_bus, -1, dtype=np.int64)
    red[free] = np.arange(len(free))
    rf, rt = red[f], red[t]
    rows = np.concatenate([rf, rt, rf, rt])
    cols = np.concatenate([rf, rt, rt, rf])
    keep = (rows >= 0) & (cols >= 0)
    diag = np.arange(len(free))
    pattern, slot = linalg.SparsePattern.coalesce(
        len(free), np.concatenate([rows[keep], diag]), np.concatenate([cols[keep], diag])
    )
    branch_slots = np.full(len(rows), pattern.nnz, dtype=np.int32)
    branch_slots[keep] = slot[: keep.sum()]
    refs = np.flatnonzero(is_ref)
    ends = np.concatenate([f, t])
    sign = np.concatenate([np.ones(n_branch), -np.ones(n_branch)])
    at_ref = np.isin(ends, refs)
    ref_pos = np.searchsorted(refs, ends[at_ref])
    groups = _padded_groups(ref_pos, len(refs), pad=-1)
    end_index = np.append(np.flatnonzero(at_ref), 0)  # the pad (-1) reads the last: unused
    ref_branch = np.where(groups >= 0, end_index[groups] % max(n_branch, 1), n_branch)
    ref_sign = np.where(groups >= 0, np.append(sign, 0.0)[end_index[groups]], 0.0)
    theta_map = np.where(is_ref, len(free), red).astype(np.int32)
    ref_index = np.full(n_bus, len(refs), dtype=np.int32)
    ref_index[refs] = np.arange(len(refs))
    return DCStructure(
        free=free,
        is_ref=is_ref,
        theta_map=theta_map,
        ref_index=ref_index,
        pattern=pattern,
        slots=np.concatenate([branch_slots, slot[keep.sum() :]]).astype(np.int32),
        flow_bus=np.concatenate([f, t]),
        ref_branch=ref_branch.astype(np.int32),
        ref_sign=ref_sign,
        gen_peers=_padded_groups(topology.gen_bus, n_bus, pad=topology.n_gen)[topology.gen_bus],
    )


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class SusceptanceSystem:
    """The reduced DC system of a network (traced values; see :func:`susceptance_system`).

    Attributes:
        reach: (n_bus,) buses connected to a reference bus.
        b: (n_branch,) branch susceptances ``status / (x tap)``, 0 for dead branches, p.u.
        values: entries of the reduced ``B[free][:, free]`` on ``dc_structure(...).pattern``;
            isolated buses have identity rows.
    """

    reach: jax.Array
    b: jax.Array
    values: jax.Array


def susceptance_system(network: Network) -> SusceptanceSystem:
    """Branch susceptances and the reduced B matrix, shared by the DC power flow and
    the sensitivities (PTDF, LODF)."""
    topo = network.topology
    s = dc_structure(topo)
    br = network.branch
    f = topo.branch_from
    active = br.status > 0
    reach = islands.reachable(topo, active)
    live = active & reach[f] & jnp.asarray(islands.candidate_branches(topo))
    # A live branch with x = 0 gives b = inf and a non-finite (not converged) solve;
    # dead branches divide by 1 so that gradients stay finite. A live reactance outside
    # the physical range (|x| outside [X_MIN_PU, X_MAX_PU], or NaN), or a phase shift beyond
    # SHIFT_MAX_RAD, makes b inf too: not converged,
    # rather than a silently wrong flow (x = inf would carry nothing, 1e-300 swamp the
    # matrix).
    x = jnp.where(live, br.x_pu, 1.0)
    unphysical = live & ~((jnp.abs(x) >= X_MIN_PU) & (jnp.abs(x) <= X_MAX_PU))
    unphysical = unphysical | (live & ~(jnp.abs(br.shift_rad) <= SHIFT_MAX_RAD))
    # a tap of inf opened the branch silently (b = 0), 0 shorted it; 1e300 and 1e-9 too
    unphysical = unphysical | (live & ~((br.tap >= TAP_MIN) & (br.tap <= TAP_MAX)))
    b = jnp.where(live, br.status / (jnp.where(unphysical, 1.0, x) * br.tap), 0.0)
    b = jnp.where(unphysical, jnp.inf, b)
    free_isolated = ~reach[s.free]
    contrib = jnp.concatenate([b, b, -b, -b, free_isolated.astype(network.dtype)])
    values = linalg.segment_sum(contrib, s.slots, s.pattern.nnz + 1)[:-1]
    return SusceptanceSystem(reach=reach, b=b, values=values)


def solve_dc(network: Network, linear_solver: linalg.Backend | None = None) -> PowerFlowResult:
    """DC power flow of ``network`` (traceable; see :func:`gridphysics.solve`)."""
    topo = network.topology
    s = dc_structure(topo)
    dtype = network.dtype
    base = topo.base_mva
    n_bus = topo.n_bus
    f, t = topo.branch_from, topo.branch_to
    br, gen, load, shunt = network.branch, network.gen, network.load, network.shunt
    is_ref = jnp.asarray(s.is_ref)

    sys = susceptance_system(network)
    reach, isolated, b = sys.reach, ~sys.reach, sys.b

    # Right-hand side in p.u.: scheduled injections, minus what the fixed reference
    # angles and the phase shifters push into the free buses. Kept as two sums so
    # that a batch over injections leaves the branch part unbatched.
    # Angles are solved relative to the first reference bus's (a common offset changes
    # no flow): with a reference angle of 1e17 rad, flows from absolute angles were off
    # by 1,415 MW with converged=True.
    refs = np.flatnonzero(s.is_ref)
    offset = network.bus.va_rad[int(refs[0])] if refs.size else jnp.zeros((), dtype)
    theta_fixed = jnp.where(is_ref, network.bus.va_rad - offset, 0.0)
    fixed_flow = b * (theta_fixed[f] - theta_fixed[t] - br.shift_rad)
    # One sum per element group, so that a batch over loads leaves generators unbatched.
    p_spec_mw = (
        linalg.segment_sum(gen.p_mw * gen.status, topo.gen_bus, n_bus)
        - linalg.segment_sum(load.p_mw * load.status, topo.load_bus, n_bus)
        - linalg.segment_sum(shunt.g_mw * shunt.status, topo.shunt_bus, n_bus)
    )
    rhs_full = p_spec_mw / base - linalg.segment_sum(
        jnp.concatenate([fixed_flow, -fixed_flow]), s.flow_bus, n_bus
    )
    rhs = jnp.where(isolated[s.free], 0.0, rhs_full[s.free])
    theta_free = linalg.solve(s.pattern, sys.values, rhs, linear_solver)

    theta = jnp.where(is_ref, theta_fixed, jnp.append(theta_free, 0.0)[s.theta_map])
    p_from = b * (theta[f] - theta[t] - br.shift_rad) * base
    theta = jnp.where(isolated, 0.0, theta + offset)

    # Injections: scheduled at free buses (the solve balances them), measured from
    # the branch flows at reference buses, whose imbalance the slack units take.
    p_ref = jnp.sum(jnp.append(p_from, 0.0)[s.ref_branch] * jnp.asarray(s.ref_sign, dtype), axis=1)
    p_bus = jnp.where(is_ref, jnp.append(p_ref, 0.0)[s.ref_index], p_spec_mw)
    mismatch = p_bus - p_spec_mw
    weight = gen.slack_weight * gen.status
    share = slack_share(weight, jnp.asarray(s.gen_peers))
    gen_p = gen.p_mw * gen.status + share * mismatch[topo.gen_bus]

    # NaN and inf propagate through sums: one cheap finiteness test per input family
    # (separate sums, so a check on unbatched inputs stays unbatched under vmap).
    converged = jnp.isfinite(
        jnp.sum(theta) + jnp.sum(p_spec_mw) + jnp.sum(b + br.status) + jnp.sum(gen.slack_weight)
    )
    # A reference bus whose imbalance no in-service slack unit takes (its only unit was
    # switched off) would balance power from nowhere: not converged.
    absorbed = linalg.segment_sum(share, topo.gen_bus, n_bus)
    tol = 1e-9 * (1.0 + jnp.sum(jnp.abs(p_spec_mw)))
    unbalanced = is_ref & reach & (absorbed < 0.5) & (jnp.abs(mismatch) > tol)
    converged = converged & ~jnp.any(unbalanced)
    # A branch status is a 0..1 multiplier: anything else is no grid (checked, with the
    # element named, outside jit by Network.with_branches).
    converged = converged & jnp.all((br.status >= 0) & (br.status <= 1))
    converged = converged & ~admittance.invalid_injections(network)
    nan = jnp.asarray(jnp.nan, dtype)

    def ok(x: jax.Array, valid: jax.Array | bool = True) -> jax.Array:
        return jnp.where(converged & valid, x, nan)

    loading = loading_percent(p_from, br.rate_a_mva)
    return PowerFlowResult(
        va_rad=ok(theta, reach),
        p_bus_mw=ok(p_bus, reach),
        p_from_mw=ok(p_from),
        loading_percent=ok(loading),
        gen_p_mw=ok(gen_p, reach[topo.gen_bus]),
        converged=converged,
        method="dc",
        topology=topo,
    )
