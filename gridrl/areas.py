"""Control areas: split a grid into ``n_areas`` regions, one operational agent per area.

Two sources, chosen by :func:`area_source`:

* ``"case areas"``: the case's own area numbers (MATPOWER ``BUS_AREA``) when they hold
  at least ``n_areas`` distinct values. Exactly ``n_areas`` values map to ``0..n_areas-1``
  in sorted order; more are merged: the area with the smallest generation capacity
  (ties: fewer buses, then lower index) joins the neighbouring area it shares the most
  in-service branches with (ties: lower index), until ``n_areas`` groups remain. Groups
  are unions of case areas and stay contiguous whenever the case's areas are.
* ``"graph partition v1"``: otherwise, a deterministic split of the in-service bus graph
  (its main connected component: the one with the most generation capacity).
  ``n_areas`` generator buses far apart (in hops) seed the areas; the area with the
  least generation capacity so far repeatedly takes its nearest frontier bus until every
  generator bus is taken; the remaining buses then join the smallest adjacent area,
  one ring at a time. This is tried from up to ``_TRIES`` first seeds spread over the
  generator buses; the best capacity balance wins (near-ties: the most even bus counts).
  Finally buses without generation move across area edges to even out bus counts.
  Each area is connected, non-empty and holds generation. Buses outside the main
  component join the area of their nearest bus through any branch (in service or not),
  or area 0 when they have no branch at all.

No randomness: the same network always gives the same areas.
"""

from __future__ import annotations

import heapq

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components, shortest_path

import gridphysics
from gridrl.errors import EnvOptionError

__all__ = ["area_source", "describe_areas", "partition", "tie_lines"]

CASE_AREAS = "case areas"
GRAPH_PARTITION = "graph partition v1"
_TRIES = 24  # first seeds tried by the graph partition (the best balanced result wins)
_SLACK = 1.05  # capacity ratios within 5% of the best count as equally balanced


def _bus_capacity(network: gridphysics.Network) -> np.ndarray:
    """(n_bus,) in-service generation capacity (MW, negative p_max counted as 0) per bus."""
    cap = np.clip(np.asarray(network.gen.p_max_mw, float), 0.0, None)
    cap = cap * (np.asarray(network.gen.status, float) > 0)
    return np.bincount(network.topology.gen_bus, weights=cap, minlength=network.n_bus)


def _adjacency(network: gridphysics.Network, in_service_only: bool = True) -> sp.csr_matrix:
    """Symmetric 0/1 bus adjacency (no self loops) from the branches."""
    t = network.topology
    keep = np.asarray(network.branch.status) > 0 if in_service_only else np.ones(t.n_branch, bool)
    f, to = t.branch_from[keep].astype(np.int64), t.branch_to[keep].astype(np.int64)
    f, to = f[f != to], to[f != to]
    n = network.n_bus
    a = sp.coo_matrix((np.ones(2 * f.size), (np.r_[f, to], np.r_[to, f])), shape=(n, n)).tocsr()
    a.data[:] = 1.0
    a.sort_indices()
    return a


def _check_n_areas(network: gridphysics.Network, n_areas: int) -> None:
    if isinstance(n_areas, bool) or not isinstance(n_areas, int | np.integer):
        raise EnvOptionError(f"n_areas must be an int, got {n_areas!r}")
    if n_areas < 1:
        raise EnvOptionError(f"n_areas must be at least 1, got n_areas={n_areas}")
    if n_areas > network.n_bus:
        raise EnvOptionError(
            f"n_areas={n_areas} is more than the {network.n_bus} buses of {network.name!r}"
        )
    n_gen_bus = int(np.count_nonzero(_bus_capacity(network) > 0))
    if n_areas > n_gen_bus:
        raise EnvOptionError(
            f"n_areas={n_areas} is more than the {n_gen_bus} buses with in-service generation "
            f"in {network.name!r}: every area needs a generator bus"
        )


def _check_areas(network: gridphysics.Network, areas: np.ndarray) -> np.ndarray:
    areas = np.asarray(areas)
    if areas.shape != (network.n_bus,) or not np.issubdtype(areas.dtype, np.integer):
        raise EnvOptionError(
            f"areas must be an integer array of shape ({network.n_bus},), "
            f"got {areas.dtype} {areas.shape}"
        )
    if areas.size and areas.min() < 0:
        raise EnvOptionError("areas must be non-negative area indices")
    return areas.astype(np.int64)


def area_source(network: gridphysics.Network, n_areas: int = 4) -> str:
    """``"case areas"`` if the case's area data has at least ``n_areas`` distinct values,
    else ``"graph partition v1"``. Raises EnvOptionError (a ValueError) for an invalid ``n_areas``."""
    _check_n_areas(network, n_areas)
    if np.unique(network.topology.bus_area).size >= n_areas:
        return CASE_AREAS
    return GRAPH_PARTITION


def partition(network: gridphysics.Network, n_areas: int = 4) -> np.ndarray:
    """(n_bus,) int area index ``0..n_areas-1`` for every bus (see the module docstring).

    Raises:
        EnvOptionError: ``n_areas`` is not an int, is below 1, exceeds the number of buses or
            of generator buses, or the grid cannot be split into ``n_areas`` contiguous
            non-empty areas.
    """
    if area_source(network, n_areas) == CASE_AREAS:
        return _merge_case_areas(network, n_areas)
    return _graph_partition(network, n_areas)


def _merge_case_areas(network: gridphysics.Network, n_areas: int) -> np.ndarray:
    values, labels = np.unique(network.topology.bus_area, return_inverse=True)
    k = values.size
    cap = np.bincount(labels, weights=_bus_capacity(network), minlength=k)
    size = np.bincount(labels, minlength=k).astype(float)
    t = network.topology
    on = np.asarray(network.branch.status) > 0
    lf, lt = labels[t.branch_from[on]], labels[t.branch_to[on]]
    links = np.zeros((k, k))  # in-service branches joining two case areas
    np.add.at(links, (lf, lt), 1.0)
    np.add.at(links, (lt, lf), 1.0)
    np.fill_diagonal(links, 0.0)
    group = np.arange(k)  # each case area's group, named by its lowest member index
    alive = list(range(k))
    while len(alive) > n_areas:
        order = sorted(alive, key=lambda g: (cap[g], size[g], g))
        with_neighbours = [g for g in order if links[g, alive].sum() > 0]
        if with_neighbours:
            src = with_neighbours[0]
            dst = max((g for g in alive if links[src, g] > 0), key=lambda g: (links[src, g], -g))
        else:  # no area touches another: join the two smallest
            src, dst = order[0], order[1]
        keep, gone = min(src, dst), max(src, dst)
        cap[keep] += cap[gone]
        size[keep] += size[gone]
        links[keep, :] += links[gone, :]
        links[:, keep] += links[:, gone]
        links[keep, keep] = 0.0
        links[gone, :] = links[:, gone] = 0.0
        group[group == gone] = keep
        alive.remove(gone)
    rank = {g: i for i, g in enumerate(sorted(alive))}
    return np.array([rank[g] for g in group[labels]], dtype=np.int64)


def _graph_partition(network: gridphysics.Network, n_areas: int) -> np.ndarray:
    n = network.n_bus
    adj = _adjacency(network)
    cap = _bus_capacity(network)
    n_comp, comp = connected_components(adj, directed=False)
    comp_cap = np.bincount(comp, weights=cap, minlength=n_comp)
    comp_size = np.bincount(comp, minlength=n_comp)
    main = min(range(n_comp), key=lambda c: (-comp_cap[c], -comp_size[c], c))
    candidates = np.flatnonzero((comp == main) & (cap > 0))
    if candidates.size < n_areas:
        raise EnvOptionError(
            f"cannot split {network.name!r} into n_areas={n_areas} contiguous areas with "
            f"generation: its main connected part has {candidates.size} generator buses"
        )

    hops = _HopCache(adj)
    peripheral = int(candidates[np.argmax(hops(int(candidates[0]))[candidates])])
    spread = np.unique(np.linspace(0, candidates.size - 1, _TRIES).round().astype(np.int64))
    firsts = [peripheral, *(int(b) for b in candidates[spread] if b != peripheral)]
    tries = []  # (capacity ratio, bus-count ratio, try index, areas)
    for i, first in enumerate(firsts):
        area = _grow(adj, cap, _spread_seeds(hops, candidates, first, n_areas), comp == main)
        sizes = np.bincount(area[area >= 0], minlength=n_areas)
        area_cap = np.bincount(area[area >= 0], weights=cap[area >= 0], minlength=n_areas)
        tries.append((area_cap.max() / area_cap.min(), sizes.max() / sizes.min(), i, area))
    # Best capacity balance; among tries within _SLACK of it, the most even bus counts.
    best_ratio = min(t[0] for t in tries)
    area = min((t for t in tries if t[0] <= best_ratio * _SLACK), key=lambda t: t[1:3])[3]
    _even_out(area, adj, cap)
    # Other parts: nearest area through any branch, else area 0.
    _fill(area, _adjacency(network, in_service_only=False), np.ones(n, bool))
    area[area < 0] = 0

    for a in range(n_areas):
        members = np.flatnonzero((area == a) & (comp == main))
        if members.size == 0 or connected_components(adj[members][:, members])[0] != 1:
            raise EnvOptionError(
                f"cannot split {network.name!r} into n_areas={n_areas} contiguous areas"
            )
    return area


class _HopCache:
    """Hop distances from single buses, computed once each."""

    def __init__(self, adj: sp.csr_matrix) -> None:
        self.adj = adj
        self.done: dict[int, np.ndarray] = {}

    def __call__(self, source: int) -> np.ndarray:
        if source not in self.done:
            self.done[source] = shortest_path(self.adj, unweighted=True, indices=source)
        return self.done[source]


def _spread_seeds(hops: _HopCache, candidates: np.ndarray, first: int, n_areas: int) -> list[int]:
    """``first``, then each candidate farthest (in hops) from all seeds so far (ties:
    lowest index)."""
    seeds = [first]
    nearest = hops(first)[candidates]
    while len(seeds) < n_areas:
        seeds.append(int(candidates[np.argmax(nearest)]))
        nearest = np.minimum(nearest, hops(seeds[-1])[candidates])
    return seeds


def _grow(adj: sp.csr_matrix, cap: np.ndarray, seeds: list[int], allowed: np.ndarray) -> np.ndarray:
    """Areas grown from ``seeds`` over the ``allowed`` (connected) buses; -1 elsewhere.

    Phase 1: the area with the least capacity (ties: lower index) takes its nearest free
    bus (ties: lowest index) until every generator bus is taken; walled-in areas drop out.
    Phase 2: the remaining buses join the adjacent area with the fewest buses.
    """
    n_areas = len(seeds)
    area = np.full(cap.size, -1, dtype=np.int64)
    area_cap = np.zeros(n_areas)
    frontier: list[list[tuple[int, int]]] = [[] for _ in range(n_areas)]
    indptr, indices = adj.indptr, adj.indices

    def take(a: int, bus: int, depth: int) -> None:
        area[bus] = a
        area_cap[a] += cap[bus]
        for nb in indices[indptr[bus] : indptr[bus + 1]]:
            if area[nb] < 0:
                heapq.heappush(frontier[a], (depth + 1, int(nb)))

    for a, s in enumerate(seeds):
        take(a, s, 0)
    left = int(np.count_nonzero((area < 0) & allowed & (cap > 0)))
    while left:
        for h in frontier:
            while h and area[h[0][1]] >= 0:
                heapq.heappop(h)
        a = min((g for g in range(n_areas) if frontier[g]), key=lambda g: (area_cap[g], g))
        depth, bus = heapq.heappop(frontier[a])
        left -= int(cap[bus] > 0)
        take(a, bus, depth)
    _fill(area, adj, allowed)
    return area


def _even_out(area: np.ndarray, adj: sp.csr_matrix, cap: np.ndarray) -> None:
    """Even out bus counts (in place) without touching capacity: a bus with no generation
    on an area's edge moves to a neighbouring area with at least two buses fewer
    (the smallest such, ties: lower index) when its own area stays connected. Every move
    lowers the sum of squared area sizes, so this stops."""
    indptr, indices = adj.indptr, adj.indices
    coo = adj.tocoo()
    n_areas = int(area.max()) + 1
    while True:
        size = np.bincount(area[area >= 0], minlength=n_areas)
        i, j = coo.row, coo.col
        ok = (area[i] >= 0) & (area[j] >= 0) & (cap[i] <= 0)
        ok &= size[np.maximum(area[i], 0)] > size[np.maximum(area[j], 0)] + 1
        moved = False
        for bus in np.unique(i[ok]):
            own = area[bus]
            near = area[indices[indptr[bus] : indptr[bus + 1]]]
            near = [int(g) for g in np.unique(near) if g >= 0 and size[g] + 1 < size[own]]
            if not near:
                continue
            rest = np.flatnonzero(area == own)
            rest = rest[rest != bus]
            if connected_components(adj[rest][:, rest], directed=False)[0] != 1:
                continue
            to = min(near, key=lambda g: (size[g], g))
            area[bus] = to
            size[own] -= 1
            size[to] += 1
            moved = True
        if not moved:
            return


def _fill(area: np.ndarray, adj: sp.csr_matrix, allowed: np.ndarray) -> None:
    """Grow the areas ring by ring over ``allowed`` buses (in place): each free bus next
    to an area joins the neighbouring area with the fewest buses (ties: lower index)."""
    indptr, indices = adj.indptr, adj.indices
    while True:
        size = np.bincount(area[area >= 0], minlength=int(area.max()) + 1)
        ring: list[tuple[int, int]] = []
        for bus in np.flatnonzero((area < 0) & allowed):
            near = area[indices[indptr[bus] : indptr[bus + 1]]]
            near = near[near >= 0]
            if near.size:
                ring.append((int(bus), int(min(near, key=lambda g: (size[g], g)))))
        if not ring:
            return
        for bus, a in ring:
            area[bus] = a


def tie_lines(network: gridphysics.Network, areas: np.ndarray) -> np.ndarray:
    """Indices of the branches (in service or not) whose two ends lie in different areas."""
    areas = _check_areas(network, areas)
    t = network.topology
    return np.flatnonzero(areas[t.branch_from] != areas[t.branch_to]).astype(np.int64)


def describe_areas(network: gridphysics.Network, areas: np.ndarray) -> str:
    """A printable table: per area its buses, generators, generation capacity (MW, sum of
    ``p_max_mw * status``), load (MW, sum of ``p_mw * status``), internal branches and tie
    lines (branches with one end in the area), then a total row."""
    areas = _check_areas(network, areas)
    t = network.topology
    k = int(areas.max()) + 1 if areas.size else 0
    gen_area, load_area = areas[t.gen_bus], areas[t.load_bus]
    p_max = np.asarray(network.gen.p_max_mw, float) * np.asarray(network.gen.status, float)
    load = np.asarray(network.load.p_mw, float) * np.asarray(network.load.status, float)
    af, at = areas[t.branch_from], areas[t.branch_to]
    tie = af != at
    rows = [
        (
            str(a),
            int(np.count_nonzero(areas == a)),
            int(np.count_nonzero(gen_area == a)),
            float(p_max[gen_area == a].sum()),
            float(load[load_area == a].sum()),
            int(np.count_nonzero(~tie & (af == a))),
            int(np.count_nonzero(tie & ((af == a) | (at == a)))),
        )
        for a in range(k)
    ]
    rows.append(
        (
            "total",
            network.n_bus,
            network.n_gen,
            float(p_max.sum()),
            float(load.sum()),
            int(np.count_nonzero(~tie)),
            int(np.count_nonzero(tie)),
        )
    )
    head = ("area", "buses", "gens", "gen cap MW", "load MW", "internal br", "tie lines")
    fmt = "{:>6} {:>6} {:>5} {:>11} {:>10} {:>12} {:>10}"
    lines = [f"{network.name}: {k} areas", fmt.format(*head)]
    for name, nb, ng, cap, ld, inner, ties in rows:
        lines.append(fmt.format(name, nb, ng, f"{cap:.1f}", f"{ld:.1f}", inner, ties))
    return "\n".join(lines)
