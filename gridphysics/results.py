"""Power-flow results: an immutable pytree with named fields and helpers for outside jit."""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from gridphysics.network import Topology

if TYPE_CHECKING:
    import pandas as pd


def loading_percent(flow: jax.Array, rate_mva: jax.Array) -> jax.Array:
    """``100 * flow / rate_mva`` (flow: |P| in DC, max |S| of both ends in AC; (n_branch,)),
    NaN where the branch has no rating: ``rate_mva`` NaN, 0 (MATPOWER's "unlimited") or
    negative. The one definition of a branch's loading, shared by the solvers, the
    outage engine and gridrl."""
    rate = jnp.asarray(rate_mva)
    unrated = jnp.isnan(rate) | (rate <= 0)
    loading = jnp.abs(flow) / jnp.where(unrated, 1.0, rate) * 100.0
    return jnp.where(unrated, jnp.nan, loading)


def slack_share(weight: jax.Array, gen_peers: jax.Array) -> jax.Array:
    """(n_gen,) each unit's share of its bus's slack imbalance: its slack weight over the
    weights of the units at its bus (``gen_peers``: (n_gen, m) their indices, ``n_gen``
    pads); 0 for units that take none. The one rule for DC and AC."""
    at_bus = jnp.sum(jnp.append(weight, 0.0)[gen_peers], axis=1)
    return jnp.where(at_bus > 0, weight / jnp.where(at_bus > 0, at_bus, 1), 0)


def lost_load_mw(topology: Topology, load_p_mw: jax.Array, bus_isolated: jax.Array) -> jax.Array:
    """() load on the buses cut off (``load_p_mw``: (n_load,) served load, MW;
    ``bus_isolated``: (n_bus,)): what a split grid loses."""
    at_bus = jax.ops.segment_sum(load_p_mw, jnp.asarray(topology.load_bus), topology.n_bus)
    return jnp.sum(jnp.where(bus_isolated, at_bus, 0.0), axis=-1)


@struct.dataclass
class PowerFlowResult:
    """Result of :func:`gridphysics.solve`. Never written into the input network.

    Sign conventions follow MATPOWER: injections are positive into the grid, branch
    flows are positive from the branch end into the branch. Shapes are given for one
    scenario; under ``vmap`` every field gains the batch axis in front.

    Stored fields:
        va_rad: (n_bus,) voltage angles, rad; NaN at isolated buses.
        p_bus_mw: (n_bus,) net active injection (generation - load - shunt), MW.
            pandapower's ``res_bus.p_mw`` is the negative (load convention).
        p_from_mw: (n_branch,) active power entering the branch at its from end, MW.
        loading_percent: (n_branch,) ``100 * max(|S_from|, |S_to|) / rate_a_mva``; NaN
            where the branch has no rating.
        gen_p_mw: (n_gen,) generator output, MW, slack generators included; NaN for
            generators at isolated buses.
        converged: () bool; False means every other field is NaN.
        method: "dc" or "ac".
        topology: the network's static topology (ids, element-to-bus maps).

    AC only (None in DC): ``q_from_mvar``, ``q_to_mvar`` (n_branch,), ``q_bus_mvar``
    (n_bus,), ``gen_q_mvar`` (n_gen,; split between units at a bus as pandapower does),
    ``iterations`` (() summed over every start tried), ``max_mismatch_pu`` (() largest
    power mismatch left, p.u.; kept when the solve fails, to say how far it got),
    ``start`` (() int32 index into ``gridphysics.AC_STARTS`` = ("case", "dc", "flat")
    of the start that converged; -1 when none did).

    Derived: ``vm_pu`` (stored in AC, 1.0 in DC), ``p_to_mw`` (stored in AC,
    ``-p_from_mw`` in DC), ``bus_isolated`` (NaN angle in a converged solve),
    ``p_loss_mw`` and ``total_loss_mw``.
    """

    va_rad: jax.Array
    p_bus_mw: jax.Array
    p_from_mw: jax.Array
    loading_percent: jax.Array
    gen_p_mw: jax.Array
    converged: jax.Array
    method: str = struct.field(pytree_node=False)
    topology: Topology = struct.field(pytree_node=False)
    stored_vm_pu: jax.Array | None = None
    stored_p_to_mw: jax.Array | None = None
    q_from_mvar: jax.Array | None = None
    q_to_mvar: jax.Array | None = None
    q_bus_mvar: jax.Array | None = None
    gen_q_mvar: jax.Array | None = None
    iterations: jax.Array | None = None
    max_mismatch_pu: jax.Array | None = None
    start: jax.Array | None = None

    @property
    def p_loss_mw(self) -> jax.Array:
        """(n_branch,) active losses of each branch, ``p_from + p_to`` (0 in DC), MW."""
        return self.p_from_mw + self.p_to_mw

    @property
    def total_loss_mw(self) -> jax.Array:
        """() total active losses of the branches, MW."""
        return jnp.sum(jnp.nan_to_num(self.p_loss_mw), axis=-1)

    @property
    def vm_pu(self) -> jax.Array:
        """(n_bus,) voltage magnitudes, p.u. (1.0 in DC); NaN at isolated buses."""
        if self.stored_vm_pu is not None:
            return self.stored_vm_pu
        return jnp.where(jnp.isnan(self.va_rad), jnp.nan, jnp.ones_like(self.va_rad))

    @property
    def p_to_mw(self) -> jax.Array:
        """(n_branch,) active power entering the branch at its to end, MW."""
        if self.stored_p_to_mw is not None:
            return self.stored_p_to_mw
        return -self.p_from_mw

    @property
    def bus_isolated(self) -> jax.Array:
        """(n_bus,) True where a bus has no path to a reference bus (its angle is NaN)."""
        return jnp.isnan(self.va_rad) & jnp.expand_dims(self.converged, -1)

    def to_pandas(self) -> dict[str, pd.DataFrame]:
        """Tables ``bus``, ``branch`` and ``gen`` keyed by original bus ids (outside jit).

        For a batched result (leading batch axis), index one scenario first, e.g.
        ``jax.tree.map(lambda a: a[0], result)``.
        """
        import pandas as pd

        if np.ndim(self.converged) != 0:
            raise ValueError(
                "to_pandas() needs a single scenario; this result has batch shape "
                f"{np.shape(self.converged)}: select one with jax.tree.map(lambda a: a[i], result)"
            )
        t = self.topology
        bus = pd.DataFrame(
            {
                "bus_id": t.bus_ids,
                "vm_pu": np.asarray(self.vm_pu),
                "va_degree": np.rad2deg(np.asarray(self.va_rad)),
                "p_mw": np.asarray(self.p_bus_mw),
                "isolated": np.asarray(self.bus_isolated),
            }
        )
        branch = pd.DataFrame(
            {
                "from_bus": t.bus_ids[t.branch_from],
                "to_bus": t.bus_ids[t.branch_to],
                "p_from_mw": np.asarray(self.p_from_mw),
                "p_to_mw": np.asarray(self.p_to_mw),
                "loading_percent": np.asarray(self.loading_percent),
            }
        )
        gen = pd.DataFrame({"bus_id": t.bus_ids[t.gen_bus], "p_mw": np.asarray(self.gen_p_mw)})
        return {"bus": bus, "branch": branch, "gen": gen}
