"""Which buses are connected to a reference bus, inside ``jit``.

Branch statuses are array leaves, so an outage chosen at run time (or a whole batch
of them under ``vmap``) can split the grid. Buses that lose every path to a
reference bus are *isolated*: like pandapower, the solvers exclude them (their
angles are NaN, their branches carry nothing) instead of failing on a singular
matrix.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import breadth_first_order

from gridphysics.network import NONE, REF, Topology


@functools.lru_cache(maxsize=128)
def candidate_branches(topology: Topology) -> np.ndarray:
    """(n_branch,) True for branches whose two ends are not type-4 (isolated) buses."""
    ok_bus = topology.bus_type != NONE
    return ok_bus[topology.branch_from] & ok_bus[topology.branch_to]


@functools.lru_cache(maxsize=128)
def reachable_all_in_service(topology: Topology) -> np.ndarray:
    """(n_bus,) buses reachable from a reference bus when every candidate branch is on."""
    return reachable_numpy(topology, candidate_branches(topology))


def reachable_numpy(topology: Topology, active: np.ndarray) -> np.ndarray:
    """Reference reachability with scipy (outside jit)."""
    n = topology.n_bus
    f, t = topology.branch_from[active], topology.branch_to[active]
    graph = sp.coo_matrix((np.ones(len(f)), (f, t)), shape=(n, n)).tocsr()
    graph = graph + graph.T
    reach = np.zeros(n, dtype=bool)
    for r in topology.ref_buses:
        if not reach[r]:
            reach[breadth_first_order(graph, r, directed=False, return_predecessors=False)] = True
    reach &= topology.bus_type != NONE
    return reach


def reachable(topology: Topology, active: jax.Array) -> jax.Array:
    """(n_bus,) bool: buses connected to a reference bus through ``active`` branches.

    ``active`` is a traced ``(n_branch,)`` bool mask. When every candidate branch is
    active (the common case), the answer is the precomputed one; otherwise labels
    spread from the reference buses one branch per iteration until nothing changes.
    """
    cand = candidate_branches(topology)
    active = active & jnp.asarray(cand)
    f = jnp.asarray(topology.branch_from)
    t = jnp.asarray(topology.branch_to)
    seed = jnp.asarray((topology.bus_type == REF) & (topology.bus_type != NONE))

    def spread(_):
        def body(state):
            reach, _ = state
            from_f = active & reach[f]
            from_t = active & reach[t]
            new = reach.at[t].max(from_f).at[f].max(from_t)
            return new, jnp.any(new != reach)

        out, _ = jax.lax.while_loop(lambda s: s[1], body, (seed, jnp.array(True)))
        return out

    def precomputed(_):
        return jnp.asarray(reachable_all_in_service(topology))

    if topology.n_branch == 0:
        return seed
    all_on = jnp.all(active == jnp.asarray(cand))
    return jax.lax.cond(all_on, precomputed, spread, None)
