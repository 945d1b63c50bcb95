"""The network model: an immutable JAX pytree of per-element arrays.

A :class:`Network` holds five element groups (:class:`BusData`, :class:`BranchData`,
:class:`GenData`, :class:`LoadData`, :class:`ShuntData`) whose fields are JAX arrays,
plus a static :class:`Topology` (counts, which bus each element sits on, bus types,
original ids). Because the topology is static metadata, ``jax.jit`` specializes on
the structure of the grid and not on its values: changing a load, a reactance or a
branch status never recompiles.

Units are in the names. Powers are in MW / MVAr (``p_mw``, ``q_mvar``, ``rate_a_mva``),
impedances in per unit on ``base_mva`` (``x_pu``), angles in radians (``va_rad``).
Branch ``status`` is a 0..1 multiplier on the branch admittance, so it can be batched
with ``vmap`` and differentiated.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from gridphysics.errors import (
    InputTypeError,
    InvalidValueError,
    NetworkError,
    ZeroImpedanceError,
)

Array = jax.Array

# MATPOWER bus types.
PQ, PV, REF, NONE = 1, 2, 3, 4


class Topology:
    """Static structure of a network: sizes, connectivity, bus types and ids.

    Instances are hashable and compared by content, so they can sit in the static
    part of a pytree: two networks with equal topology share compiled functions.

    Attributes (all numpy arrays, read-only):
        base_mva: system base power (MVA).
        bus_ids: (n_bus,) original bus numbers from the case.
        bus_type: (n_bus,) MATPOWER bus types (1 PQ, 2 PV, 3 reference, 4 isolated).
        bus_area, bus_zone: (n_bus,) area and zone numbers from the case.
        branch_from, branch_to: (n_branch,) bus *indices* (0-based) of each branch end.
        branch_is_transformer: (n_branch,) True where the case gave a tap ratio or shift.
        gen_bus, load_bus, shunt_bus: bus indices of each element.
        name: case name (for messages and file output).
        gencost: raw MATPOWER gencost table, kept for round trips (or None).
    """

    _array_fields = (
        "bus_ids",
        "bus_type",
        "bus_area",
        "bus_zone",
        "branch_from",
        "branch_to",
        "branch_is_transformer",
        "gen_bus",
        "load_bus",
        "shunt_bus",
    )

    def __init__(
        self,
        *,
        base_mva: float,
        bus_ids: np.ndarray,
        bus_type: np.ndarray,
        branch_from: np.ndarray,
        branch_to: np.ndarray,
        gen_bus: np.ndarray,
        load_bus: np.ndarray,
        shunt_bus: np.ndarray,
        bus_area: np.ndarray | None = None,
        bus_zone: np.ndarray | None = None,
        branch_is_transformer: np.ndarray | None = None,
        name: str = "case",
        gencost: np.ndarray | None = None,
    ) -> None:
        n_bus = len(bus_ids)
        n_branch = len(branch_from)
        ones = np.ones(n_bus, dtype=np.int64)
        values: dict[str, np.ndarray] = {
            "bus_ids": np.asarray(bus_ids, dtype=np.int64),
            "bus_type": np.asarray(bus_type, dtype=np.int8),
            "bus_area": np.asarray(ones if bus_area is None else bus_area, dtype=np.int64),
            "bus_zone": np.asarray(ones if bus_zone is None else bus_zone, dtype=np.int64),
            "branch_from": np.asarray(branch_from, dtype=np.int32),
            "branch_to": np.asarray(branch_to, dtype=np.int32),
            "branch_is_transformer": np.asarray(
                np.zeros(n_branch, bool)
                if branch_is_transformer is None
                else branch_is_transformer,
                dtype=bool,
            ),
            "gen_bus": np.asarray(gen_bus, dtype=np.int32),
            "load_bus": np.asarray(load_bus, dtype=np.int32),
            "shunt_bus": np.asarray(shunt_bus, dtype=np.int32),
        }
        for key, arr in values.items():
            arr = np.ascontiguousarray(arr)
            arr.flags.writeable = False
            object.__setattr__(self, key, arr)
        object.__setattr__(self, "base_mva", float(base_mva))
        object.__setattr__(self, "name", str(name))
        if gencost is not None:
            gencost = np.array(gencost, dtype=np.float64)
            gencost.flags.writeable = False
        object.__setattr__(self, "gencost", gencost)
        for key in ("branch_from", "branch_to", "gen_bus", "load_bus", "shunt_bus"):
            idx = values[key]
            if idx.size and (idx.min() < 0 or idx.max() >= n_bus):
                raise NetworkError(f"Topology.{key} holds a bus index outside 0..{n_bus - 1}")
        digest = hashlib.sha1(repr((self.base_mva, self.name)).encode())
        for key in self._array_fields:
            arr = getattr(self, key)
            digest.update(key.encode() + str(arr.shape).encode() + arr.tobytes())
        if gencost is not None:
            digest.update(b"gencost" + str(gencost.shape).encode() + gencost.tobytes())
        object.__setattr__(self, "_digest", digest.digest())
        object.__setattr__(self, "_hash", hash(self._digest))

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError("Topology is immutable")

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Topology) and self._digest == other._digest

    def __repr__(self) -> str:
        return (
            f"Topology({self.name!r}: {self.n_bus} buses, {self.n_branch} branches, "
            f"{self.n_gen} gens, {self.n_load} loads, {self.n_shunt} shunts, "
            f"base {self.base_mva:g} MVA)"
        )

    @property
    def n_bus(self) -> int:
        return len(self.bus_ids)

    @property
    def n_branch(self) -> int:
        return len(self.branch_from)

    @property
    def n_gen(self) -> int:
        return len(self.gen_bus)

    @property
    def n_load(self) -> int:
        return len(self.load_bus)

    @property
    def n_shunt(self) -> int:
        return len(self.shunt_bus)

    @property
    def ref_buses(self) -> np.ndarray:
        """Indices of the reference (slack) buses, type 3."""
        return np.flatnonzero(self.bus_type == REF)

    def replace(self, **changes: Any) -> Topology:
        """A copy with some attributes replaced (arrays are copied, not shared)."""
        kwargs = {key: getattr(self, key) for key in self._array_fields}
        kwargs.update(base_mva=self.base_mva, name=self.name, gencost=self.gencost)
        kwargs.update(changes)
        return Topology(**kwargs)


@struct.dataclass
class BusData:
    """Per-bus data. Shapes ``(n_bus,)``.

    Attributes:
        vm_pu: voltage magnitude (initial value / setpoint), p.u.
        va_rad: voltage angle (initial value; fixed at reference buses), rad.
        base_kv: nominal voltage, kV.
        vmin_pu, vmax_pu: voltage limits, p.u.
    """

    vm_pu: Array
    va_rad: Array
    base_kv: Array
    vmin_pu: Array
    vmax_pu: Array


@struct.dataclass
class BranchData:
    """Per-branch data (lines and transformers, pi model). Shapes ``(n_branch,)``.

    Attributes:
        r_pu, x_pu: series resistance and reactance, p.u.
        b_pu: total line-charging susceptance, p.u.
        g_pu: total line-charging conductance, p.u. (pandapower extension; 0 in MATPOWER).
        tap: off-nominal turns ratio at the from end (1.0 for lines).
        shift_rad: phase shift at the from end, rad.
        status: 0..1 multiplier on the branch admittance (1 in service, 0 out).
        rate_a_mva, rate_b_mva, rate_c_mva: ratings, MVA; NaN where the case has none.
    """

    r_pu: Array
    x_pu: Array
    b_pu: Array
    g_pu: Array
    tap: Array
    shift_rad: Array
    status: Array
    rate_a_mva: Array
    rate_b_mva: Array
    rate_c_mva: Array


@struct.dataclass
class GenData:
    """Per-generator data. Shapes ``(n_gen,)``.

    Attributes:
        p_mw, q_mvar: active / reactive setpoints (the slack generator's ``p_mw`` is
            its scheduled output; the solved output is in the result).
        vm_pu: voltage setpoint, p.u.
        p_min_mw, p_max_mw, q_min_mvar, q_max_mvar: limits.
        status: 0..1 multiplier on the injection (1 in service).
        slack_weight: share of its reference bus's balancing power this unit takes
            (0 for non-slack units).
        ramp_mw_per_min: ramp rate (MATPOWER RAMP_AGC), 0 where unknown.
        cost_c2, cost_c1, cost_c0: quadratic cost ``c2 p^2 + c1 p + c0`` ($/h, p in MW).
    """

    p_mw: Array
    q_mvar: Array
    vm_pu: Array
    p_min_mw: Array
    p_max_mw: Array
    q_min_mvar: Array
    q_max_mvar: Array
    status: Array
    slack_weight: Array
    ramp_mw_per_min: Array
    cost_c2: Array
    cost_c1: Array
    cost_c0: Array


@struct.dataclass
class LoadData:
    """Per-load data (constant power). Shapes ``(n_load,)``.

    Attributes:
        p_mw, q_mvar: consumption.
        status: 0..1 multiplier on the consumption.
    """

    p_mw: Array
    q_mvar: Array
    status: Array


@struct.dataclass
class ShuntData:
    """Per-shunt data. Shapes ``(n_shunt,)``.

    Attributes:
        g_mw: active power consumed at 1 p.u. voltage, MW.
        b_mvar: reactive power injected at 1 p.u. voltage, MVAr.
        status: 0..1 multiplier.
    """

    g_mw: Array
    b_mvar: Array
    status: Array


_GROUPS = {
    "bus": BusData,
    "branch": BranchData,
    "gen": GenData,
    "load": LoadData,
    "shunt": ShuntData,
}


@struct.dataclass
class Network:
    """An electrical network as an immutable JAX pytree.

    Every numeric field is an array leaf, so ``jax.vmap`` and ``jax.grad`` reach
    loads, generation, impedances and branch statuses. The :class:`Topology`
    (sizes, connectivity, bus types, original ids) is static.

    Build one with :func:`gridphysics.load_case`, :func:`gridphysics.from_ppc`,
    :func:`gridphysics.load_matpower` or :func:`gridphysics.from_pandapower`, and
    derive scenarios with :meth:`with_loads`, :meth:`with_gens`, :meth:`with_branches`.
    """

    bus: BusData
    branch: BranchData
    gen: GenData
    load: LoadData
    shunt: ShuntData
    topology: Topology = struct.field(pytree_node=False)

    # -- sizes ---------------------------------------------------------------------
    @property
    def n_bus(self) -> int:
        return self.topology.n_bus

    @property
    def n_branch(self) -> int:
        return self.topology.n_branch

    @property
    def n_gen(self) -> int:
        return self.topology.n_gen

    @property
    def n_load(self) -> int:
        return self.topology.n_load

    @property
    def n_shunt(self) -> int:
        return self.topology.n_shunt

    @property
    def base_mva(self) -> float:
        return self.topology.base_mva

    @property
    def name(self) -> str:
        return self.topology.name

    @property
    def dtype(self) -> jnp.dtype:
        """Floating-point dtype of the network's arrays."""
        return self.branch.x_pu.dtype

    def __repr__(self) -> str:
        t = self.topology
        return (
            f"Network({t.name!r}: {t.n_bus} buses, {t.n_branch} branches, {t.n_gen} gens, "
            f"{t.n_load} loads, {t.n_shunt} shunts, base {t.base_mva:g} MVA, {self.dtype})"
        )

    # -- updaters ------------------------------------------------------------------
    def _with(self, group: str, changes: Mapping[str, Any]) -> Network:
        data = getattr(self, group)
        updates = {}
        for key, value in changes.items():
            if value is None:
                continue
            if not hasattr(data, key):
                raise NetworkError(f"{group} has no field {key!r}")
            old = getattr(data, key)
            if isinstance(value, jax.core.Tracer) and value.dtype.kind not in "biuf":
                # a dtype is static: refused under jit too (complex was cast to real)
                raise InvalidValueError(f"{group}.{key} must be real numbers, got {value.dtype}")
            if not isinstance(value, jax.core.Tracer):
                try:
                    probe = np.asarray(value)
                    if probe.dtype.kind not in "biuf":
                        raise TypeError(f"values of type {probe.dtype}")
                except (TypeError, ValueError, OverflowError) as exc:
                    raise InvalidValueError(
                        f"{group}.{key} must be real numbers, got {value!r:.80} ({exc})"
                    ) from None
            new = jnp.asarray(value, dtype=old.dtype)
            if new.shape != old.shape:
                try:
                    new = jnp.broadcast_to(new, old.shape)
                except ValueError:
                    raise NetworkError(
                        f"{group}.{key} must have shape {old.shape}, got {jnp.shape(value)}"
                    ) from None
            self._check_concrete(group, key, new)
            updates[key] = new
        return self.replace(**{group: data.replace(**updates)})

    def _check_concrete(self, group: str, key: str, new: jax.Array) -> None:
        """Refuse a concrete (not traced) new value that no solve could use: a non-finite
        number where :meth:`validate` needs a finite one, or a status outside [0, 1],
        naming the element, the field and the value. Traced values (inside ``jit`` or
        ``vmap``) are left to the solve, which reports ``converged=False``."""
        if isinstance(new, jax.core.Tracer):
            return
        arr = np.asarray(new, dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(arr)) if key in _FINITE_FIELDS.get(group, ()) else []
        rule = "must be a finite number"
        if key == "status" and not len(bad):
            bad = np.flatnonzero((arr < 0) | (arr > 1))
            rule = "a status is 0 (out), 1 (in service) or a fraction in between"
        if group == "branch" and key == "tap" and not len(bad):
            from gridphysics.admittance import TAP_MAX, TAP_MIN

            bad = (
                np.flatnonzero(arr <= 0)
                if (arr <= 0).any()
                else np.flatnonzero((arr < TAP_MIN) | (arr > TAP_MAX))
            )
            rule = f"a ratio is > 0 (1.0 for a nominal ratio), within {TAP_MIN:g}..{TAP_MAX:g}"
        if group == "gen" and key == "vm_pu" and not len(bad):
            bad = np.flatnonzero(arr <= 0)
            rule = "a voltage setpoint is > 0 p.u."
        if group == "gen" and key == "slack_weight" and not len(bad):
            arr = np.broadcast_to(arr, (self.n_gen,))
            bad = np.flatnonzero(arr < 0) if (arr < 0).any() else []
            rule = "a slack weight is >= 0, and some unit's > 0 (the one that balances)"
            if not len(bad) and not (arr > 0).any():
                bad = [0]  # a DC solve failed as 'singular' (hostile rerun 8)
        if group == "bus" and key == "vm_pu" and not len(bad):
            bad = np.flatnonzero(arr < 0)
            rule = "a voltage magnitude is >= 0 p.u."
        if key in _POWER_FIELDS.get(group, ()) and not len(bad):
            from gridphysics.ppc import MAX_POWER_MW

            bad = np.flatnonzero(np.abs(arr) > MAX_POWER_MW)
            rule = f"a power is within {MAX_POWER_MW:g} MW / MVAr in magnitude"
        if key.startswith("rate_") and not len(bad):
            bad = np.flatnonzero(arr < 0)
            rule = "a rating is a number >= 0 (0 means unlimited, as in MATPOWER) or NaN for none"
        if len(bad):
            i = int(bad[0])
            more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
            raise InvalidValueError(
                f"{self.element_name(group, i)}: {group}.{key} = {arr[i]}{more}; {rule}"
            )

    def with_loads(
        self, *, p_mw: Any = None, q_mvar: Any = None, status: Any = None, **unknown: Any
    ) -> Network:
        """A copy with load values replaced (arrays of shape ``(n_load,)`` or scalars)."""
        changes = {"p_mw": p_mw, "q_mvar": q_mvar, "status": status}
        return self._with("load", _known("with_loads", changes, unknown))

    def with_gens(
        self,
        *,
        p_mw: Any = None,
        q_mvar: Any = None,
        vm_pu: Any = None,
        status: Any = None,
        slack_weight: Any = None,
        **unknown: Any,
    ) -> Network:
        """A copy with generator values replaced (shape ``(n_gen,)`` or scalars)."""
        changes = {
            "p_mw": p_mw,
            "q_mvar": q_mvar,
            "vm_pu": vm_pu,
            "status": status,
            "slack_weight": slack_weight,
        }
        return self._with("gen", _known("with_gens", changes, unknown))

    def with_branches(
        self,
        *,
        status: Any = None,
        x_pu: Any = None,
        r_pu: Any = None,
        b_pu: Any = None,
        tap: Any = None,
        shift_rad: Any = None,
        rate_a_mva: Any = None,
        **unknown: Any,
    ) -> Network:
        """A copy with branch values replaced (shape ``(n_branch,)`` or scalars)."""
        changes = {
            "status": status,
            "x_pu": x_pu,
            "r_pu": r_pu,
            "b_pu": b_pu,
            "tap": tap,
            "shift_rad": shift_rad,
            "rate_a_mva": rate_a_mva,
        }
        return self._with("branch", _known("with_branches", changes, unknown))

    def with_voltages(self, *, vm_pu: Any = None, va_rad: Any = None, **unknown: Any) -> Network:
        """A copy with bus voltages replaced (shape ``(n_bus,)``): the starting point
        of an AC solve with ``SolveOptions(init="case")`` (a warm start), e.g. from a
        previous result's ``vm_pu`` / ``va_rad``. Reference-bus angles are also the
        angles the solvers hold fixed."""
        return self._with(
            "bus", _known("with_voltages", {"vm_pu": vm_pu, "va_rad": va_rad}, unknown)
        )

    def astype(self, dtype: Any) -> Network:
        """A copy with every floating-point array cast to ``dtype`` (e.g. ``jnp.float32``)."""
        try:
            dtype = jnp.dtype(dtype)
        except TypeError:
            raise InvalidValueError(f"astype needs a floating dtype, got {dtype!r}") from None
        if not jnp.issubdtype(dtype, jnp.floating) or dtype.itemsize < 4:
            why = (
                "half precision cannot resolve power flows"
                if jnp.issubdtype(dtype, jnp.floating)
                else "values and results are real numbers"
            )
            raise InvalidValueError(
                f"astype needs a floating dtype of 32 or 64 bits, got {dtype} ({why})"
            )
        if dtype == jnp.float64 and not jax.config.jax_enable_x64:
            from gridphysics.precision import require_x64

            require_x64()
        return jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype=dtype), self)

    def element_name(self, group: str, i: int) -> str:
        """How errors name element ``i`` of ``group`` ("load 3 at bus 5", "branch 2 (2-3)")."""
        t = self.topology
        if group == "load":
            return f"load {i} at bus {t.bus_ids[t.load_bus[i]]}"
        if group == "gen":
            return f"generator {i} at bus {t.bus_ids[t.gen_bus[i]]}"
        if group == "shunt":
            return f"shunt {i} at bus {t.bus_ids[t.shunt_bus[i]]}"
        if group == "branch":
            return f"branch {i} ({t.bus_ids[t.branch_from[i]]}-{t.bus_ids[t.branch_to[i]]})"
        return f"bus {t.bus_ids[i]} (index {i})"

    def validate(self) -> Network:
        """Check concrete values; raise a :class:`~gridphysics.errors.NetworkError` naming the element.

        Checks: finite injections, impedances and setpoints; no in-service branch with
        zero reactance. Returns ``self`` so it can be chained. Skipped (returns self) when
        called on traced values inside ``jit``.
        """
        leaves = jax.tree_util.tree_leaves(self)
        if any(isinstance(leaf, jax.core.Tracer) for leaf in leaves):
            return self
        id_of = {group: functools.partial(self.element_name, group) for group in _FINITE_FIELDS}
        for group, fields in _FINITE_FIELDS.items():
            data = getattr(self, group)
            for key in fields:
                arr = np.asarray(getattr(data, key))
                bad = np.flatnonzero(~np.isfinite(arr))
                if bad.size:
                    i = int(bad[0])
                    more = f" (and {bad.size - 1} more)" if bad.size > 1 else ""
                    raise InvalidValueError(
                        f"{id_of[group](i)} has {group}.{key} = {arr[i]}{more}; "
                        "injections, impedances and statuses must be finite numbers"
                    )
        weight = np.asarray(self.gen.slack_weight)
        if self.n_gen and ((weight < 0).any() or not (weight > 0).any()):
            i = int(np.argmin(weight))
            raise InvalidValueError(
                f"{id_of['gen'](i)} has gen.slack_weight = {weight[i]:g}; slack weights are "
                ">= 0 and some unit's is > 0 (no unit would balance the system)"
            )
        topo = self.topology
        gen_bus = np.asarray(topo.gen_bus)
        for r in np.flatnonzero(np.asarray(topo.bus_type) == REF):
            units = np.flatnonzero(gen_bus == r)
            if units.size and not (weight[units] > 0).any():
                raise InvalidValueError(
                    f"reference bus {topo.bus_ids[r]}: none of its units has a slack weight "
                    f"> 0 (generators {units.tolist()}); a reference bus's imbalance goes to "
                    "its own units, in proportion to gen.slack_weight"
                )
        x = np.asarray(self.branch.x_pu)
        status = np.asarray(self.branch.status)
        tap = np.asarray(self.branch.tap)
        bad = np.flatnonzero((status > 0) & (x == 0))
        if bad.size:
            i = int(bad[0])
            raise ZeroImpedanceError(
                f"{id_of['branch'](i)} is in service with zero series reactance (x_pu = 0); "
                "the DC model needs x != 0: merge its two buses or give it a small reactance"
                + (f" ({bad.size - 1} more such branches)" if bad.size > 1 else "")
            )
        from gridphysics.dc import X_MAX_PU, X_MIN_PU

        bad = np.flatnonzero(
            (status > 0) & (x != 0) & ((np.abs(x) < X_MIN_PU) | (np.abs(x) > X_MAX_PU))
        )
        if bad.size:
            i = int(bad[0])
            raise InvalidValueError(
                f"{id_of['branch'](i)} has series reactance x_pu = {x[i]:g}, outside the physical "
                f"range ({X_MIN_PU:g} <= |x| <= {X_MAX_PU:g} p.u.)"
            )
        bad = np.flatnonzero((status > 0) & (tap <= 0))
        if bad.size:  # a negative ratio is no transformer (DC flows changed by 23 %)
            i = int(bad[0])
            raise InvalidValueError(
                f"{id_of['branch'](i)} has tap ratio {tap[i]:g}; a ratio is > 0 (1.0 for "
                "a nominal ratio)"
            )
        from gridphysics.admittance import SHIFT_MAX_RAD

        shift = np.asarray(self.branch.shift_rad)
        bad = np.flatnonzero((status > 0) & (np.abs(shift) > SHIFT_MAX_RAD))
        if bad.size:
            i = int(bad[0])
            raise InvalidValueError(
                f"{id_of['branch'](i)} has phase shift {np.degrees(shift[i]):g} degrees, outside "
                "the physical range (|shift| <= 360 degrees)"
            )
        return self


def _known(method: str, changes: dict[str, Any], unknown: dict[str, Any]) -> dict[str, Any]:
    """``changes``, after refusing keywords that name no field of ``method``."""
    if unknown:
        raise InputTypeError(
            f"{method}() has no field {', '.join(map(repr, sorted(unknown)))}; its fields are "
            f"{', '.join(changes)}"
        )
    return changes


def require_network(network: Any, where: str, leaves: bool = True) -> None:
    """An :class:`~gridphysics.errors.InputTypeError` unless ``network`` is a Network
    whose leaves pass :func:`check_leaf_shapes` (``leaves=False``: the caller checks
    them where it costs nothing, e.g. when a solve traces)."""
    if not isinstance(network, Network):
        raise InputTypeError(
            f"{where} needs a gridphysics.Network, got {type(network).__name__}; build one "
            "with gridphysics.load_case(), from_ppc() or from_pandapower()"
        )
    if leaves:
        check_leaf_shapes(network, where)


def check_leaf_shapes(network: Network, where: str) -> None:
    """Every numeric field of ``network`` an array of one value per element of its table
    (``(n_load,)`` for the loads, ...), else an :class:`~gridphysics.errors.InputTypeError`
    (not an array) or a :class:`~gridphysics.errors.NetworkError` (another shape) naming
    the field. ``Network.replace`` builds any pytree; a (3,) load vector of an 11-load
    grid reached the solve as a raw broadcasting TypeError. Shapes are static, so this
    holds under ``jit`` and inside ``vmap`` (which sees one scenario's shapes)."""
    sizes = {
        "bus": network.n_bus,
        "branch": network.n_branch,
        "gen": network.n_gen,
        "load": network.n_load,
        "shunt": network.topology.n_shunt,
    }
    for group, n in sizes.items():
        table = getattr(network, group)
        for field in dataclasses.fields(table):
            value = getattr(table, field.name)
            if not (hasattr(value, "shape") and hasattr(value, "dtype")):
                raise InputTypeError(
                    f"{where}: {group}.{field.name} must be an array, got {type(value).__name__}"
                )
            if tuple(value.shape) != (n,):
                raise NetworkError(
                    f"{where}: {group}.{field.name} has shape {tuple(value.shape)}, the grid has "
                    f"{n} {group} element(s): ({n},) expected (batch scenarios with jax.vmap)"
                )
            if np.dtype(value.dtype).kind not in "fiub":  # complex DC dropped the imaginary
                raise InputTypeError(  # part; object leaves crashed inside JAX
                    f"{where}: {group}.{field.name} must be real numbers, got {value.dtype}"
                )
    if np.dtype(network.dtype).kind != "f":  # integer reactances: NaN cast to int crashed
        raise InputTypeError(
            f"{where}: branch.x_pu sets the network's dtype and must be floating-point, got "
            f"{network.dtype} (Network.astype converts a network)"
        )


def as_indices(values: Any, size: int, what: str) -> np.ndarray:
    """``values`` as a 1-D int64 array of indices into ``size`` elements, or a
    :class:`~gridphysics.errors.NetworkError` naming the first bad one: not a number,
    a boolean, a fraction (2.5 is not read as 2), or outside ``0..size - 1`` (-1 does
    not wrap to the last)."""
    try:
        arr = np.asarray(values)
    except (TypeError, ValueError) as exc:
        raise NetworkError(f"{what} indices must be integers, got {values!r:.80} ({exc})") from None
    arr = arr.reshape(-1)
    if arr.dtype.kind == "O":  # Python integers beyond int64 (2**70): out of range
        huge = [v for v in arr if isinstance(v, int) and not isinstance(v, bool)]
        if huge and len(huge) == arr.size:
            raise NetworkError(f"{what} index {max(huge, key=abs)} is out of range 0..{size - 1}")
    if arr.dtype.kind == "b" or arr.dtype.kind not in "iuf":
        raise NetworkError(f"{what} indices must be integers, got {values!r:.80}")
    if arr.dtype.kind == "f":
        odd = np.flatnonzero(~np.isfinite(arr) | (arr != np.round(arr)))
        if odd.size:
            raise NetworkError(f"{what} index {arr[odd[0]]!r} is not an integer")
        far = np.flatnonzero(np.abs(arr) >= 2**63)  # would wrap when cast to int64
        if far.size:
            raise NetworkError(f"{what} index {arr[far[0]]:g} is out of range 0..{size - 1}")
    if arr.dtype.kind == "u" and arr.size and arr.max() >= 2**63:
        raise NetworkError(f"{what} index {arr.max()} is out of range 0..{size - 1}")
    idx = arr.astype(np.int64)
    bad = np.flatnonzero((idx < 0) | (idx >= size))
    if bad.size:
        raise NetworkError(f"{what} index {idx[bad[0]]} is out of range 0..{size - 1}")
    return idx


_FINITE_FIELDS = {
    "load": ("p_mw", "q_mvar", "status"),
    "gen": ("p_mw", "q_mvar", "vm_pu", "status", "slack_weight"),
    "shunt": ("g_mw", "b_mvar", "status"),
    "branch": ("r_pu", "x_pu", "b_pu", "g_pu", "tap", "shift_rad", "status"),
    "bus": ("vm_pu", "va_rad"),
}

#: Fields that are powers (MW / MVAr), bounded by ``gridphysics.ppc.MAX_POWER_MW``.
_POWER_FIELDS = {
    "load": ("p_mw", "q_mvar"),
    "gen": ("p_mw", "q_mvar"),
    "shunt": ("g_mw", "b_mvar"),
}


def make_group(group: str, dtype: Any = None, **fields: Any) -> Any:
    """Build an element group from array-likes, converting each to a JAX array."""
    cls = _GROUPS[group]
    if dtype is None:
        from gridphysics.precision import default_float_dtype

        dtype = default_float_dtype()
    kwargs = {
        k: jnp.asarray(np.asarray(v, dtype=np.float64), dtype=dtype) for k, v in fields.items()
    }
    return cls(**kwargs)
