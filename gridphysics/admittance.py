"""Branch admittances, the bus admittance matrix and complex power injections.

The AC model is pandapower's ``makeYbus`` (MATPOWER's, plus pandapower's line-charging
conductance ``g_pu``): per branch, with ``ys = status / (r + jx)``,
``yc = status * (g + jb)`` and ``T = tap * exp(j shift)``::

    Yff = (ys + yc/2) / |T|^2    Yft = -ys / conj(T)
    Ytf = -ys / T                Ytt = ys + yc/2

and a bus shunt ``(g_mw + j b_mvar) / base_mva``. Everything here is traceable and
differentiable; index structures are static and built once per topology.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from gridphysics import linalg
from gridphysics.network import Network, Topology

#: Physical range of an in-service branch's series impedance ``|r + jx|`` (p.u.) in the
#: AC model; the DC model holds its reactance to the same range (gridphysics.dc).
Z_MIN_PU = 1e-12
Z_MAX_PU = 1e6
#: Physical range of an in-service branch's phase shift: |shift| <= 360 degrees. Beyond
#: it the angle carries no meaning a shifter has, and at 1e20 degrees the solve lost
#: every digit (483,368 MW of generation for 259 MW of load, converged=True).
SHIFT_MAX_RAD = 2 * math.pi
#: Physical range of an in-service branch's off-nominal tap ratio. Real transformers sit
#: within a few tens of percent of 1 (0.79 to 1.58 across the MATPOWER cases shipped
#: here); beyond 100:1 either way the ratio is a data error (1e300 silently opened the
#: branch, 147.8 MW to 0 MW with converged=True).
TAP_MIN = 1e-2
TAP_MAX = 1e2


@dataclass(frozen=True, eq=False)
class YbusStructure:
    """Static pattern of ``Ybus`` for one topology.

    Attributes:
        pattern: coalesced ``(n_bus, n_bus)`` pattern: every diagonal plus both
            off-diagonal positions of every branch.
        slots: slot of each contribution, in the order ``ff, tt, ft, tf`` per branch
            (``4 * n_branch``) then the bus shunts (``n_bus``).
        diag: (n_bus,) slot of each diagonal entry.
    """

    pattern: linalg.SparsePattern
    slots: np.ndarray
    diag: np.ndarray


@functools.lru_cache(maxsize=128)
def ybus_structure(topology: Topology) -> YbusStructure:
    n = topology.n_bus
    f, t = topology.branch_from, topology.branch_to
    buses = np.arange(n)
    rows = np.concatenate([f, t, f, t, buses])
    cols = np.concatenate([f, t, t, f, buses])
    pattern, slot = linalg.SparsePattern.coalesce(n, rows, cols)
    return YbusStructure(pattern=pattern, slots=slot, diag=slot[-n:])


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class BranchAdmittance:
    """The four complex admittances of every branch, each ``(n_branch,)``."""

    ff: jax.Array
    ft: jax.Array
    tf: jax.Array
    tt: jax.Array


def unphysical_branches(network: Network) -> jax.Array:
    """(n_branch,) bool: in-service branches whose values no AC model accepts: a
    non-finite r, x, g, b, tap or shift, a tap of 0, a phase shift beyond
    ``SHIFT_MAX_RAD`` (360 degrees), or a series impedance ``|r + jx|``
    outside the physical range ``[Z_MIN_PU, Z_MAX_PU]`` (1e-300 would act as a short
    that swamps the Jacobian, 1e300 as an open branch that is still counted in service);
    also any branch whose status is outside [0, 1]. A solve with any such branch reports
    ``converged=False``."""
    br = network.branch
    finite = (
        jnp.isfinite(br.r_pu)
        & jnp.isfinite(br.x_pu)
        & jnp.isfinite(br.g_pu)
        & jnp.isfinite(br.b_pu)
        & jnp.isfinite(br.tap)
        & jnp.isfinite(br.shift_rad)
    )
    z = jnp.hypot(jnp.where(finite, br.r_pu, 1.0), jnp.where(finite, br.x_pu, 1.0))
    ok = finite & (br.tap >= TAP_MIN) & (br.tap <= TAP_MAX) & (z >= Z_MIN_PU) & (z <= Z_MAX_PU)
    ok = ok & (jnp.abs(jnp.where(finite, br.shift_rad, 0.0)) <= SHIFT_MAX_RAD)
    return ((br.status > 0) & ~ok) | ~((br.status >= 0) & (br.status <= 1))  # NaN too


def invalid_injections(network: Network) -> jax.Array:
    """() bool: a load, generator or shunt status outside [0, 1] (NaN included) or a
    non-finite slack weight: values no grid has. Outside jit ``Network`` names the
    element; under jit a solve with any reports ``converged=False`` (a status of 2
    doubled a load, -1 turned it into a generator, with converged=True)."""

    def outside(status):
        return jnp.any(~((status >= 0) & (status <= 1)))

    return (
        outside(network.load.status)
        | outside(network.gen.status)
        | outside(network.shunt.status)
        | jnp.any(~jnp.isfinite(network.gen.slack_weight))
    )


def branch_admittance(network: Network, live: jax.Array | None = None) -> BranchAdmittance:
    """Branch admittances; ``live`` (bool, ``(n_branch,)``) zeroes dead branches safely."""
    br = network.branch
    on = br.status > 0 if live is None else live
    z = jnp.where(on, br.r_pu + 1j * br.x_pu, 1.0)
    ys = jnp.where(on, br.status / z, 0.0)
    yc = jnp.where(on, br.status * (br.g_pu + 1j * br.b_pu), 0.0)
    tap = br.tap * jnp.exp(1j * br.shift_rad)
    ytt = ys + yc / 2
    return BranchAdmittance(
        ff=ytt / (br.tap * br.tap),
        ft=-ys / jnp.conj(tap),
        tf=-ys / tap,
        tt=ytt,
    )


def shunt_admittance(network: Network) -> jax.Array:
    """(n_bus,) complex shunt admittance at each bus, p.u."""
    sh = network.shunt
    y = (sh.g_mw + 1j * sh.b_mvar) * sh.status / network.base_mva
    return jax.ops.segment_sum(y, jnp.asarray(network.topology.shunt_bus), network.n_bus)


def ybus_values(network: Network, y: BranchAdmittance, y_shunt: jax.Array) -> jax.Array:
    """Values of ``Ybus`` on :func:`ybus_structure`'s pattern."""
    s = ybus_structure(network.topology)
    contrib = jnp.concatenate([y.ff, y.tt, y.ft, y.tf, y_shunt])
    return jax.ops.segment_sum(contrib, jnp.asarray(s.slots), s.pattern.nnz)


def branch_currents(
    topology: Topology, y: BranchAdmittance, v: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Currents entering each branch at its from and to end (p.u.)."""
    vf, vt = v[topology.branch_from], v[topology.branch_to]
    return y.ff * vf + y.ft * vt, y.tf * vf + y.tt * vt


def branch_powers(
    topology: Topology, y: BranchAdmittance, v: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Complex power entering each branch at its from and to end (p.u.)."""
    i_f, i_t = branch_currents(topology, y, v)
    return v[topology.branch_from] * jnp.conj(i_f), v[topology.branch_to] * jnp.conj(i_t)
