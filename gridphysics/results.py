"""Power-flow results: an immutable pytree with named fields and helpers for outside jit."""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import numpy as np
from flax import struct

from gridphysics.network import Topology

if TYPE_CHECKING:
    import pandas as pd


@struct.dataclass
class PowerFlowResult:
    """Result of :func:`gridphysics.solve`. Never written into the input network.

    Sign conventions follow MATPOWER: injections are positive into the grid, branch
    flows are positive from the branch end into the branch.

    Attributes:
        va_rad: (n_bus,) voltage angles, rad; NaN at isolated buses.
        vm_pu: (n_bus,) voltage magnitudes, p.u. (1.0 in DC); NaN at isolated buses.
        p_bus_mw: (n_bus,) net active injection (generation - load - shunt), MW.
            pandapower's ``res_bus.p_mw`` is the negative (load convention).
        p_from_mw, p_to_mw: (n_branch,) active power entering the branch at each end, MW.
        loading_percent: (n_branch,) ``100 * max(|S_from|, |S_to|) / rate_a_mva``; NaN
            where the branch has no rating.
        gen_p_mw: (n_gen,) generator output, MW, slack generators included; NaN for
            generators at isolated buses.
        bus_isolated: (n_bus,) True where a bus has no path to a reference bus.
        converged: () bool; False means every other field is NaN.
        method: "dc" or "ac".
        topology: the network's static topology (ids, element-to-bus maps).
    """

    va_rad: jax.Array
    vm_pu: jax.Array
    p_bus_mw: jax.Array
    p_from_mw: jax.Array
    p_to_mw: jax.Array
    loading_percent: jax.Array
    gen_p_mw: jax.Array
    bus_isolated: jax.Array
    converged: jax.Array
    method: str = struct.field(pytree_node=False)
    topology: Topology = struct.field(pytree_node=False)

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
