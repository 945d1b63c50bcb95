"""DC sensitivities: PTDF, LODF and OTDF, dense or by rows / columns for large grids.

All three come from the reduced DC system of :mod:`gridphysics.dc` (same susceptances,
same reference handling) and its shared linear algebra: a batch of unit injections
is one multi-right-hand-side solve. Nothing here forms an ``n x n`` inverse unless a
full matrix is asked for.

Conventions (pandapower's ``makePTDF`` / ``makeLODF``):

* ``PTDF[l, k]``: MW change of the from-end flow of branch ``l`` per MW injected at bus
  ``k`` and withdrawn at the slack (the reference bus by default, a given bus, or
  spread over buses by weights).
* ``LODF[l, k]``: change of the flow on ``l`` per MW that flowed on ``k`` before ``k``
  was switched out; ``LODF[k, k] = -1``. Outages that split the grid (bridges) have
  no such factor: their columns are NaN, and :func:`bridges` lists them.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gridphysics import dc, islands, linalg
from gridphysics.errors import NetworkError
from gridphysics.network import Network, as_indices, require_network


def _indices(values: Sequence[int] | np.ndarray | None, size: int, what: str) -> np.ndarray:
    if values is None:
        return np.arange(size)
    return as_indices(values, size, what)


def _solve_many(network: Network, rhs_free: jax.Array) -> jax.Array:
    """Solve the reduced DC system for a batch of right-hand sides ``(m, n_free)``."""
    s = dc.dc_structure(network.topology)
    system = dc.susceptance_system(network)
    return jax.vmap(lambda r: linalg.solve(s.pattern, system.values, r))(rhs_free)


def _flows_of_angles(network: Network, theta_free: jax.Array) -> jax.Array:
    """From-end flows (p.u.) of angle vectors on the free buses: ``(m, n_free) -> (m, n_branch)``."""
    topo = network.topology
    s = dc.dc_structure(topo)
    b = dc.susceptance_system(network).b
    theta = jnp.concatenate([theta_free, jnp.zeros((theta_free.shape[0], 1), theta_free.dtype)], 1)
    theta = theta[:, s.theta_map]
    return b * (theta[:, topo.branch_from] - theta[:, topo.branch_to])


def _unit_injections(network: Network, buses: np.ndarray) -> jax.Array:
    s = dc.dc_structure(network.topology)
    n_free = len(s.free)
    pos = jnp.asarray(s.theta_map)[buses]  # n_free for reference buses: an all-zero row
    return jax.nn.one_hot(pos, n_free + 1, dtype=network.dtype)[:, :n_free]


def _transfer_vectors(network: Network, branches: jax.Array) -> jax.Array:
    """(m, n_free): +1 at each branch's from bus, -1 at its to bus (free buses only)."""
    topo = network.topology
    s = dc.dc_structure(topo)
    n_free = len(s.free)
    theta_map = jnp.asarray(s.theta_map)
    f = theta_map[jnp.asarray(topo.branch_from)[branches]]
    t = theta_map[jnp.asarray(topo.branch_to)[branches]]
    e = jax.nn.one_hot(f, n_free + 1, dtype=network.dtype) - jax.nn.one_hot(
        t, n_free + 1, dtype=network.dtype
    )
    return e[:, :n_free]


@jax.jit
def _ptdf_columns(network: Network, buses: jax.Array) -> jax.Array:
    """(n_branch, len(buses)) PTDF columns with the reference bus as slack."""
    return _flows_of_angles(network, _solve_many(network, _unit_injections(network, buses))).T


@jax.jit
def _ptdf_rows(network: Network, branches: jax.Array) -> jax.Array:
    """(len(branches), n_bus) PTDF rows with the reference bus as slack (adjoint solves:
    B is symmetric, so row ``l`` is ``b_l (e_f - e_t)^T B^-1``)."""
    topo = network.topology
    s = dc.dc_structure(topo)
    b = dc.susceptance_system(network).b
    e = _transfer_vectors(network, branches)
    rhs = e * b[branches][:, None]
    y = _solve_many(network, rhs)
    return jnp.concatenate([y, jnp.zeros((len(branches), 1), y.dtype)], 1)[:, s.theta_map]


def ptdf(
    network: Network,
    *,
    slack: int | Sequence[float] | np.ndarray | None = None,
    branches: Sequence[int] | np.ndarray | None = None,
    buses: Sequence[int] | np.ndarray | None = None,
) -> jax.Array:
    """Power transfer distribution factors, MW per MW.

    Args:
        network: the network (its branch statuses are taken into account).
        slack: ``None`` (the reference bus), a bus index, or ``(n_bus,)`` weights by
            which the withdrawal is spread (normalized to sum 1).
        branches: rows to compute (default all). With ``buses`` unset, rows are
            computed directly by adjoint solves: for a large grid, ask for the rows
            you need instead of the full matrix.
        buses: columns to compute (default all), by one solve per column.

    Returns:
        ``(len(branches), len(buses))`` array. Columns of buses that the branches in
        service do not connect to the reference bus are NaN (an injection there has
        nowhere to go); a slack bus, or slack weight, on such a bus is a NetworkError.
    """
    require_network(network, "ptdf()")
    topo = network.topology
    rows = _indices(branches, topo.n_branch, "branch")
    cols = _indices(buses, topo.n_bus, "bus")
    status = network.branch.status
    cut = None  # (n_bus,) buses cut off from the reference (concrete statuses only)
    if not isinstance(status, jax.core.Tracer):
        cut = ~islands.reachable_numpy(topo, np.asarray(status) > 0)
    weights = None
    slack_bus = None
    if slack is not None:
        arr = np.asarray(slack)
        if arr.ndim == 0:
            slack_bus = int(_indices(arr, topo.n_bus, "slack bus")[0])
            if cut is not None and cut[slack_bus]:  # it was silently the reference bus
                raise NetworkError(
                    f"slack bus {slack_bus} is cut off from the reference bus by the branches "
                    "out of service"
                )
        else:
            rule = (
                f"slack weights must be {topo.n_bus} finite real numbers with a finite non-zero sum"
            )
            if arr.dtype.kind not in "biuf":  # strings raised a bare TypeError in isfinite
                raise NetworkError(f"{rule}, got values of type {arr.dtype}")
            arr = arr.astype(np.float64)
            with np.errstate(over="ignore"):
                total = arr.sum()
            # a sum that overflows (1e308 each) made every weight 0: the reference-bus PTDF
            if arr.shape != (topo.n_bus,) or not np.isfinite(arr).all() or not np.isfinite(total):
                raise NetworkError(rule)
            if total == 0:
                raise NetworkError(rule)
            if cut is not None and (arr[cut] != 0).any():
                raise NetworkError(
                    f"slack weights on bus(es) {np.flatnonzero(cut & (arr != 0))[:5].tolist()}, "
                    "which the branches out of service cut off from the reference bus"
                )
            weights = jnp.asarray(arr / total, network.dtype)
    if branches is not None and buses is None:
        full_rows = _ptdf_rows(network, jnp.asarray(rows))
        h = full_rows[:, cols]
        if slack_bus is not None:
            h = h - full_rows[:, [slack_bus]]
        if weights is not None:
            h = h - (full_rows @ weights)[:, None]
        return _nan_cut(h, cut, cols)
    extra = [slack_bus] if slack_bus is not None else []
    h = _ptdf_columns(network, jnp.asarray(np.concatenate([cols, np.asarray(extra, np.int64)])))[
        rows
    ]
    if slack_bus is not None:
        h = h[:, :-1] - h[:, -1:]
    if weights is not None:
        h = h - _weighted_flows(network, weights)[rows][:, None]
    return _nan_cut(h, cut, cols)


def _nan_cut(h: jax.Array, cut: np.ndarray | None, cols: np.ndarray) -> jax.Array:
    """``h`` with the columns of cut-off buses NaN (they read 0: a transfer that cannot
    happen looked like one that loads nothing; hostile rerun 7)."""
    if cut is None or not cut[cols].any():
        return h
    return jnp.where(jnp.asarray(cut[cols])[None, :], jnp.nan, h)


@jax.jit
def _weighted_flows(network: Network, weights: jax.Array) -> jax.Array:
    """(n_branch,) flows of injections ``weights`` balanced at the reference bus."""
    s = dc.dc_structure(network.topology)
    w_free = weights[s.free] * dc.susceptance_system(network).reach[s.free]
    return _flows_of_angles(network, _solve_many(network, w_free[None, :]))[0]


@jax.jit
def _transfer_columns(network: Network, outages: jax.Array) -> jax.Array:
    """(n_branch, len(outages)): flow change on every branch per unit transferred from
    the from bus to the to bus of each outaged branch (``PTDF @ (e_f - e_t)``)."""
    return _flows_of_angles(network, _solve_many(network, _transfer_vectors(network, outages))).T


def lodf(
    network: Network,
    *,
    outages: Sequence[int] | np.ndarray | None = None,
    monitored: Sequence[int] | np.ndarray | None = None,
) -> jax.Array:
    """Line outage distribution factors, ``(len(monitored), len(outages))``.

    Column ``k`` needs one solve, so ask for the outages you need on a large grid.
    Columns of outages that split the grid are NaN; branches already out of service
    have zero columns (switching them out changes nothing).
    """
    require_network(network, "lodf()")
    topo = network.topology
    out = _indices(outages, topo.n_branch, "outage branch")
    mon = _indices(monitored, topo.n_branch, "monitored branch")
    return _lodf(network, jnp.asarray(out), jnp.asarray(mon))


@jax.jit
def _lodf(network: Network, out: jax.Array, mon: jax.Array) -> jax.Array:
    h = _transfer_columns(network, out)
    own = h[out, jnp.arange(out.shape[0])]
    live = dc.susceptance_system(network).b[out] != 0
    # 1 - H[k, k] vanishes exactly for a bridge: no path remains to carry the flow.
    denominator = 1.0 - own
    splits = jnp.abs(denominator) < 1e-9
    factor = h[mon] / jnp.where(splits, 1.0, denominator)
    factor = jnp.where(mon[:, None] == out[None, :], -1.0, factor)
    factor = jnp.where(splits & live, jnp.nan, factor)
    return jnp.where(live, factor, 0.0)


def otdf(
    network: Network,
    outages: Sequence[int] | np.ndarray,
    *,
    monitored: Sequence[int] | np.ndarray | None = None,
    slack: int | Sequence[float] | np.ndarray | None = None,
) -> jax.Array:
    """Outage transfer distribution factors, ``(len(outages), len(monitored), n_bus)``:
    the PTDF of the grid after each single outage, ``PTDF + LODF[:, k] PTDF[k, :]``."""
    topo = network.topology
    out = _indices(outages, topo.n_branch, "outage branch")
    mon = _indices(monitored, topo.n_branch, "monitored branch")
    rows = np.unique(np.concatenate([mon, out]))
    h = ptdf(network, slack=slack, branches=rows)
    where = {int(r): i for i, r in enumerate(rows)}
    # int64 also when a list is empty (an empty float array is no index)
    h_mon = h[np.array([where[int(m)] for m in mon], dtype=np.int64)]
    h_out = h[np.array([where[int(k)] for k in out], dtype=np.int64)]
    factors = lodf(network, outages=out, monitored=mon)  # (n_mon, n_out)
    return h_mon[None, :, :] + factors.T[:, :, None] * h_out[:, None, :]


def bridges(network: Network) -> np.ndarray:
    """Indices of in-service branches whose outage splits the in-service grid (outside jit).

    Tarjan's bridge search on the multigraph of in-service branches: a branch with
    a parallel twin is never a bridge.
    """
    require_network(network, "bridges()")
    topo = network.topology
    status = np.asarray(network.branch.status)
    on = np.flatnonzero(status > 0)
    n = topo.n_bus
    adjacency: list[list[tuple[int, int]]] = [[] for _ in range(n)]
    for k in on:
        f, t = int(topo.branch_from[k]), int(topo.branch_to[k])
        if f == t:
            continue
        adjacency[f].append((t, int(k)))
        adjacency[t].append((f, int(k)))
    order = np.full(n, -1, dtype=np.int64)
    low = np.zeros(n, dtype=np.int64)
    found: list[int] = []
    counter = 0
    for root in range(n):
        if order[root] >= 0:
            continue
        order[root] = low[root] = counter
        counter += 1
        stack = [(root, -1, 0)]  # (bus, branch used to enter, next neighbour position)
        while stack:
            bus, via, pos = stack[-1]
            if pos < len(adjacency[bus]):
                stack[-1] = (bus, via, pos + 1)
                nxt, edge = adjacency[bus][pos]
                if edge == via:
                    continue
                if order[nxt] < 0:
                    order[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append((nxt, edge, 0))
                else:
                    low[bus] = min(low[bus], order[nxt])
            else:
                stack.pop()
                if stack:
                    parent = stack[-1][0]
                    low[parent] = min(low[parent], low[bus])
                    if low[bus] > order[parent]:
                        found.append(via)
    return np.array(sorted(found), dtype=np.int64)
