"""Conversion between PYPOWER / MATPOWER case dicts and :class:`~gridphysics.Network`.

A case dict has ``baseMVA``, ``bus``, ``gen``, ``branch`` and optionally ``gencost``
and ``areas``, with MATPOWER's column layout. Bus numbers may be arbitrary; they are
kept as ``topology.bus_ids`` and elements refer to buses by index internally.

Conventions, as in MATPOWER / PYPOWER (and pandapower's ``from_ppc``):

* a zero tap ratio means 1.0 (a line); the shift is in degrees in the file;
* ``RATE_A == 0`` means "no rating" and becomes NaN;
* ``BR_STATUS`` is 1 (in service) or 0 (out); anything else is refused;
* one load per bus with non-zero ``PD``/``QD``, one shunt per bus with non-zero
  ``GS``/``BS``;
* the slack generator of each reference bus is its first in-service generator
  (it takes the bus's balancing power, ``slack_weight = 1``).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from gridphysics.errors import (
    CaseFormatError,
    DuplicateBusError,
    InvalidValueError,
    NoSlackError,
    ReferenceMovedWarning,
    UnknownBusError,
)
from gridphysics.network import NONE, PQ, PV, REF, Network, Topology, make_group

# MATPOWER column indices.
BUS_I, BUS_TYPE, PD, QD, GS, BS, BUS_AREA, VM, VA, BASE_KV, ZONE, VMAX, VMIN = range(13)
F_BUS, T_BUS, BR_R, BR_X, BR_B, RATE_A, RATE_B, RATE_C, TAP, SHIFT, BR_STATUS = range(11)
BR_G_PANDAPOWER = 23  # pandapower's extra column: total line-charging conductance
GEN_BUS, PG, QG, QMAX, QMIN, VG, MBASE, GEN_STATUS, PMAX, PMIN = range(10)
RAMP_AGC = 16
MIN_COLS = {"bus": 13, "gen": 10, "branch": 11}


#: Largest system base accepted (MVA): real cases use 100; 1e300 overflows every flow.
MAX_BASE_MVA = 1e6
#: Smallest system base accepted (MVA), 1 VA: pandapower's low-voltage nets use 1 MVA, and
#: a base of 1e-9 MVA turns every real line into a reactance below the physical range.
MIN_BASE_MVA = 1e-6
#: Largest load, generation or shunt power accepted (MW / MVAr): ten terawatts is more
#: than the world's installed capacity, so a larger number is corrupt (1e300 MW of load
#: "converged" with 1e300 MW on the slack).
MAX_POWER_MW = 1e7


def _move_reference(
    bus_type: np.ndarray, bus_ids: np.ndarray, live_gen_bus: np.ndarray, name: str
) -> np.ndarray:
    """MATPOWER's and PYPOWER's rule (``bustypes``): when no reference bus has an
    in-service generator, the first PV bus that has one becomes the reference (the old
    reference buses become PQ), with a warning; nothing balances power from nowhere."""
    has_gen = np.zeros(len(bus_type), bool)
    has_gen[live_gen_bus] = True
    refs = np.flatnonzero(bus_type == REF)
    if has_gen[refs].any():
        return bus_type
    candidates = np.flatnonzero((bus_type == PV) & has_gen)
    if not candidates.size:
        raise NoSlackError(
            f"{name}: no reference bus has an in-service generator and no PV bus has one "
            "to take its place"
        )
    new = int(candidates[0])
    bus_type = bus_type.copy()
    bus_type[refs] = PQ
    bus_type[new] = REF
    warnings.warn(
        f"{name}: reference bus {', '.join(str(int(bus_ids[r])) for r in refs)} has no "
        f"in-service generator; bus {int(bus_ids[new])} (the first PV bus with one) is the "
        "reference instead, as MATPOWER and PYPOWER do",
        ReferenceMovedWarning,
        stacklevel=3,
    )
    return bus_type


def _table(case: Mapping[str, Any], key: str) -> np.ndarray:
    if key not in case:
        raise CaseFormatError(f"case has no {key!r} table (needed: baseMVA, bus, gen, branch)")
    try:
        arr = np.asarray(case[key])
        if np.iscomplexobj(arr):
            if np.any(arr.imag != 0):
                raise CaseFormatError(f"case[{key!r}] has complex values; tables are real")
            arr = arr.real
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"its values are of type {arr.dtype}")
        arr = np.array(arr, dtype=np.float64, ndmin=2)
    except (TypeError, ValueError) as exc:
        raise CaseFormatError(f"case[{key!r}] is not a numeric table: {exc}") from None
    if arr.ndim != 2:
        raise CaseFormatError(f"case[{key!r}] must be 2-D, got shape {arr.shape}")
    if arr.size == 0:
        arr = arr.reshape(0, max(arr.shape[1], MIN_COLS.get(key, 0)))
    if arr.shape[1] < MIN_COLS.get(key, 0):
        raise CaseFormatError(
            f"case[{key!r}] has {arr.shape[1]} columns; MATPOWER needs at least {MIN_COLS[key]}"
        )
    return arr


def _check_finite(arr: np.ndarray, table: str, cols: dict[str, int]) -> None:
    for name, col in cols.items():
        bad = np.flatnonzero(~np.isfinite(arr[:, col]))
        if bad.size:
            raise CaseFormatError(
                f"{table} row {bad[0] + 1} has a non-finite {name} ({arr[bad[0], col]})"
            )


def to_degrees(rad: np.ndarray) -> np.ndarray:
    """``rad`` in degrees, each the float within a few ulps of ``np.rad2deg`` that
    ``np.deg2rad`` (how cases are read) turns back into exactly ``rad`` where there is
    one: a network saved and read again then has the same angles bit for bit (they
    were 1 ulp off on most buses of ieee14 to pegase13659; hostile rerun 10)."""
    rad = np.asarray(rad, np.float64)
    with np.errstate(over="ignore"):  # beyond 1.8e306 rad: inf degrees, refused on reading
        deg = np.rad2deg(rad)
    exact = np.deg2rad(deg) == rad
    up, down = deg.copy(), deg.copy()
    for _ in range(4):
        up, down = np.nextafter(up, np.inf), np.nextafter(down, -np.inf)
        for candidate in (up, down):
            hit = ~exact & (np.deg2rad(candidate) == rad)
            deg[hit] = candidate[hit]
            exact |= hit
    return deg


def _check_power(arr: np.ndarray, table: str, cols: dict[str, int]) -> None:
    """Powers (MW, MVAr) beyond :data:`MAX_POWER_MW` are corrupt; NaN is left to the
    finiteness checks. Columns the table does not have are skipped."""
    for name, col in cols.items():
        if col >= arr.shape[1]:
            continue
        bad = np.flatnonzero(np.abs(np.nan_to_num(arr[:, col])) > MAX_POWER_MW)
        if bad.size:
            raise CaseFormatError(
                f"{table} row {bad[0] + 1} has {name} = {arr[bad[0], col]:g}, beyond "
                f"{MAX_POWER_MW:g} MW / MVAr in magnitude"
            )


def _check_range(arr: np.ndarray, table: str, cols: dict[str, tuple[int, str]]) -> None:
    """Each named column (index, rule): "finite", "upper" (not NaN, not -inf: a maximum),
    "lower" (not NaN, not +inf: a minimum), "ramp" (finite, >= 0) or "rating" (not NaN,
    >= 0; 0 or inf means unlimited). Columns the table does not have are skipped."""
    for name, (col, rule) in cols.items():
        if col >= arr.shape[1]:
            continue
        x = arr[:, col]
        if rule == "finite":
            ok, want = np.isfinite(x), "a finite number"
        elif rule == "upper":
            ok, want = ~np.isnan(x) & (x > -np.inf), "a number or Inf (an upper limit)"
        elif rule == "lower":
            ok, want = ~np.isnan(x) & (x < np.inf), "a number or -Inf (a lower limit)"
        elif rule == "ramp":
            ok, want = np.isfinite(x) & (x >= 0), "a finite number >= 0 (0: not given)"
        else:
            ok, want = ~np.isnan(x) & (x >= 0), "a number >= 0 (0 or Inf: unlimited)"
        bad = np.flatnonzero(~ok)
        if bad.size:
            raise CaseFormatError(
                f"{table} row {bad[0] + 1} has {name} = {x[bad[0]]}; it must be {want}"
            )


def _bus_index(bus_ids: np.ndarray, refs: np.ndarray, table: str, col_name: str) -> np.ndarray:
    order = np.argsort(bus_ids, kind="stable")
    sorted_ids = bus_ids[order]
    pos = np.searchsorted(sorted_ids, refs)
    pos_clipped = np.minimum(pos, len(sorted_ids) - 1) if len(sorted_ids) else pos
    ok = (pos < len(sorted_ids)) & (sorted_ids[pos_clipped] == refs) if len(sorted_ids) else pos < 0
    bad = np.flatnonzero(~ok)
    if bad.size:
        raise UnknownBusError(
            f"{table} row {bad[0] + 1} refers to {col_name} {refs[bad[0]]:g}, which is not in the "
            "bus table"
        )
    return order[pos].astype(np.int32)


def _costs(gencost: np.ndarray | None, n_gen: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Quadratic cost coefficients (c2, c1, c0) per generator from a gencost table.

    Polynomial rows (model 2) of degree <= 2 are exact. Higher-degree polynomials
    keep their three lowest-order terms. Piecewise-linear rows (model 1) are fitted
    by least squares with a quadratic through their breakpoints.
    """
    c = np.zeros((n_gen, 3))
    if gencost is None:
        return c[:, 0], c[:, 1], c[:, 2]
    if gencost.shape[0] not in (n_gen, 2 * n_gen):  # the parser's rule, MATPOWER's
        raise CaseFormatError(
            f"gencost has {gencost.shape[0]} rows for {n_gen} generators; it needs one row "
            "per generator (or two: active, then reactive costs)"
        )
    if n_gen and gencost.shape[1] < 4:
        raise CaseFormatError(
            f"gencost has {gencost.shape[1]} columns; MATPOWER needs at least 4 "
            "(MODEL, STARTUP, SHUTDOWN, NCOST)"
        )
    for g in range(n_gen):
        row = gencost[g]
        if not np.isfinite(row[[0, 3]]).all() or row[0] not in (1, 2) or row[3] != int(row[3]):
            raise CaseFormatError(
                f"gencost row {g + 1}: MODEL must be 1 or 2 and NCOST a whole number, got "
                f"{row[0]:g} and {row[3]:g}"
            )
        model, n = int(row[0]), int(row[3])
        width = 4 + (2 * n if model == 1 else n)
        if n < 0 or width > len(row) or not np.isfinite(row[4:width]).all():
            raise CaseFormatError(
                f"gencost row {g + 1}: its {n} cost {'points' if model == 1 else 'coefficients'} "
                "must be finite numbers within the row"
            )
        if model == 2 and n > 0:
            low = row[4 : 4 + n][::-1]  # c0, c1, c2, ... (the file lists highest order first)
            c[g] = [low[2] if n > 2 else 0.0, low[1] if n > 1 else 0.0, low[0]]
        elif model == 1 and n > 0:
            pts = row[4 : 4 + 2 * n].reshape(n, 2)
            deg = min(2, n - 1)
            try:
                if not (np.abs(pts) < 1e15).all():  # LAPACK prints errors for 1e300
                    raise ValueError("breakpoints beyond 1e15")
                with np.errstate(all="ignore"), warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # RankWarning: the fit is checked below
                    fit = np.polyfit(pts[:, 0], pts[:, 1], deg) if n > 1 else pts[:1, 1]
            except (np.linalg.LinAlgError, ValueError):  # x of 1e300: SVD did not converge
                fit = np.array([np.nan])
            if not np.isfinite(fit).all():
                raise CaseFormatError(
                    f"gencost row {g + 1}: its piecewise-linear points cannot be fitted by a "
                    "quadratic cost (breakpoints out of any physical range?)"
                )
            c[g, 3 - len(fit) :] = fit
    return c[:, 0], c[:, 1], c[:, 2]


def from_ppc(
    case: Mapping[str, Any],
    *,
    name: str = "case",
    slack_gens: np.ndarray | None = None,
) -> Network:
    """Build a :class:`Network` from a PYPOWER / MATPOWER case dict.

    Args:
        case: dict with ``baseMVA``, ``bus``, ``gen``, ``branch`` (MATPOWER columns)
            and optionally ``gencost``. Columns past MATPOWER's are ignored, except
            pandapower's branch column 23 (``BR_G``, the line-charging conductance in
            p.u.), which pandapower's internal case and :func:`to_ppc` (so also
            ``save_matpower``) write for branches that have one.
        name: case name used in messages and when saving.
        slack_gens: indices of the generators that share the balancing power of
            their reference bus (equally). Default: the first in-service generator
            at each reference bus, as MATPOWER and PYPOWER do.

    Raises:
        CaseFormatError: a table is missing, not numeric or too narrow.
        DuplicateBusError: two buses share a number.
        UnknownBusError: a branch or generator refers to a bus that does not exist.
        NoSlackError: no bus has type 3.
    """
    if not isinstance(case, Mapping):
        raise CaseFormatError(
            f"from_ppc expects a case dict (baseMVA, bus, gen, branch), got {type(case).__name__}"
        )
    try:
        if (
            isinstance(case["baseMVA"], str | bytes | bool | np.bool_)
            or np.asarray(case["baseMVA"]).dtype.kind not in "iufc"
        ):
            raise TypeError("not a number")  # '100', True, np.array(True) are no base power
        if np.iscomplexobj(case["baseMVA"]) and np.imag(case["baseMVA"]) != 0:
            raise ValueError("complex")
        base_mva = float(np.real(case["baseMVA"]))
    except KeyError:
        raise CaseFormatError("case has no 'baseMVA'") from None
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int beyond float
        raise CaseFormatError(f"case['baseMVA'] is not a number: {case['baseMVA']!r}") from None
    if not np.isfinite(base_mva) or not MIN_BASE_MVA <= base_mva <= MAX_BASE_MVA:
        raise CaseFormatError(
            f"case['baseMVA'] must be a number from {MIN_BASE_MVA:g} to {MAX_BASE_MVA:g} MVA, "
            f"got {base_mva}"
        )
    bus, gen, branch = _table(case, "bus"), _table(case, "gen"), _table(case, "branch")
    gencost = _table(case, "gencost") if case.get("gencost") is not None else None
    if gencost is not None and gencost.size == 0:
        gencost = None

    _check_finite(
        bus, "bus", {"BUS_I": BUS_I, "BUS_TYPE": BUS_TYPE, "PD": PD, "QD": QD, "GS": GS, "BS": BS}
    )
    bus_ids = bus[:, BUS_I]
    if np.any(bus_ids != np.round(bus_ids)):
        row = int(np.flatnonzero(bus_ids != np.round(bus_ids))[0])
        raise CaseFormatError(
            f"bus row {row + 1}: bus numbers (BUS_I) must be integers, got {bus_ids[row]!r}"
        )
    too_big = np.flatnonzero(np.abs(bus_ids) >= 2**53)
    if too_big.size:
        raise CaseFormatError(
            f"bus row {too_big[0] + 1}: bus number {bus_ids[too_big[0]]:g} is out of range "
            "(|BUS_I| < 2^53)"
        )
    odd = np.flatnonzero(bus[:, BUS_TYPE] != np.round(bus[:, BUS_TYPE]))
    if odd.size:
        raise CaseFormatError(
            f"bus {int(bus_ids[odd[0]])} has type {bus[odd[0], BUS_TYPE]:g}; types are the "
            "integers 1 (PQ), 2 (PV), 3 (reference) and 4 (isolated)"
        )
    bus_ids = bus_ids.astype(np.int64)
    uniq, counts = np.unique(bus_ids, return_counts=True)
    if np.any(counts > 1):
        dup = uniq[counts > 1]
        rows = np.flatnonzero(bus_ids == dup[0]) + 1
        raise DuplicateBusError(
            f"bus id {dup[0]} appears {counts[counts > 1][0]} times (bus rows {list(rows)})"
            + (f"; {len(dup) - 1} more duplicated ids" if len(dup) > 1 else "")
        )
    bus_type = bus[:, BUS_TYPE].astype(np.int64)
    bad = np.flatnonzero((bus_type < PQ) | (bus_type > NONE))
    if bad.size:
        raise CaseFormatError(
            f"bus {bus_ids[bad[0]]} has type {bus[bad[0], BUS_TYPE]:g}; types are 1 (PQ), 2 (PV), "
            "3 (reference) and 4 (isolated)"
        )
    if not np.any(bus_type == REF):
        raise NoSlackError(
            "the case has no reference bus (no bus of type 3): set BUS_TYPE = 3 on the bus whose "
            "generator should balance the system"
        )
    if branch.shape[0] == 0 and bus.shape[0] > 1:
        raise CaseFormatError(
            f"the case has no branches: its {bus.shape[0]} buses are not connected"
        )
    _check_finite(
        branch,
        "branch",
        {
            "F_BUS": F_BUS,
            "T_BUS": T_BUS,
            "BR_R": BR_R,
            "BR_X": BR_X,
            "BR_B": BR_B,
            "TAP": TAP,
            "SHIFT": SHIFT,
            "BR_STATUS": BR_STATUS,
        },
    )
    negative = np.flatnonzero(branch[:, TAP] < 0)
    if negative.size:  # 0 means a line; below 0 is no transformer (flows changed 23 %)
        i = int(negative[0])
        raise CaseFormatError(
            f"branch row {i + 1} has TAP = {branch[i, TAP]:g}; it must be >= 0 (0: a line)"
        )
    _check_finite(gen, "gen", {"GEN_BUS": GEN_BUS, "PG": PG, "GEN_STATUS": GEN_STATUS})
    _check_power(bus, "bus", {"PD": PD, "QD": QD, "GS": GS, "BS": BS})
    _check_power(gen, "gen", {"PG": PG, "QG": QG})
    if gen.shape[1] > VG:  # an in-service unit's voltage setpoint (-1.0 converged in AC)
        low = np.flatnonzero((gen[:, GEN_STATUS] > 0) & ~(gen[:, VG] > 0))
        if low.size:
            i = int(low[0])
            raise CaseFormatError(
                f"gen row {i + 1} is in service with VG = {gen[i, VG]:g}; a voltage "
                "setpoint is > 0 p.u."
            )
    low = np.flatnonzero(bus[:, VM] < 0) if bus.shape[1] > VM else []
    if len(low):  # an AC start from it "converged" to a 180-degree-turned phasor
        i = int(low[0])
        raise CaseFormatError(
            f"bus {bus_ids[i]} has VM = {bus[i, VM]:g}; a voltage magnitude is >= 0 p.u."
        )
    _check_range(
        bus,
        "bus",
        {
            "VM": (VM, "finite"),
            "VA": (VA, "finite"),
            "BASE_KV": (BASE_KV, "finite"),
            "VMAX": (VMAX, "upper"),
            "VMIN": (VMIN, "lower"),
        },
    )
    _check_range(
        gen,
        "gen",
        {
            "QG": (QG, "finite"),
            "VG": (VG, "finite"),
            "QMAX": (QMAX, "upper"),
            "QMIN": (QMIN, "lower"),
            "PMAX": (PMAX, "upper"),
            "PMIN": (PMIN, "lower"),
            "RAMP_AGC": (RAMP_AGC, "ramp"),
        },
    )
    _check_range(
        branch,
        "branch",
        {"RATE_A": (RATE_A, "rating"), "RATE_B": (RATE_B, "rating"), "RATE_C": (RATE_C, "rating")},
    )
    odd = np.flatnonzero((branch[:, BR_STATUS] != 0) & (branch[:, BR_STATUS] != 1))
    if odd.size:
        raise CaseFormatError(
            f"branch row {odd[0] + 1} has BR_STATUS = {branch[odd[0], BR_STATUS]:g}; MATPOWER's "
            "status is 1 (in service) or 0 (out) (a fractional multiplier can be set with "
            "Network.with_branches(status=...))"
        )
    f = _bus_index(bus_ids, branch[:, F_BUS], "branch", "from bus")
    t = _bus_index(bus_ids, branch[:, T_BUS], "branch", "to bus")
    gbus = _bus_index(bus_ids, gen[:, GEN_BUS], "gen", "bus")

    n_gen = gen.shape[0]
    gen_on = gen[:, GEN_STATUS] > 0
    bus_type = _move_reference(bus_type, bus_ids, gbus[gen_on], name)
    weight = np.zeros(n_gen)
    if slack_gens is None:
        for r in np.flatnonzero(bus_type == REF):
            at_ref = np.flatnonzero((gbus == r) & gen_on)
            if at_ref.size:
                weight[at_ref[0]] = 1.0
    else:
        given = np.asarray(slack_gens)
        if given.ndim != 1 or given.size == 0 or not np.issubdtype(given.dtype, np.integer):
            raise CaseFormatError(
                f"slack_gens must be a non-empty list of generator indices, got {slack_gens!r}"
            )
        out = np.flatnonzero((given < 0) | (given >= n_gen))
        if out.size:
            raise CaseFormatError(
                f"slack_gens[{out[0]}] = {int(given[out[0]])} is not a generator index "
                f"(0..{n_gen - 1})"
            )
        slack_gens = given.astype(np.int64)
        per_bus = np.bincount(gbus[slack_gens], minlength=len(bus_ids))
        weight[slack_gens] = 1.0 / per_bus[gbus[slack_gens]]

    load_rows = np.flatnonzero((bus[:, PD] != 0) | (bus[:, QD] != 0))
    shunt_rows = np.flatnonzero((bus[:, GS] != 0) | (bus[:, BS] != 0))
    tap = branch[:, TAP].copy()
    is_trafo = (tap != 0) | (branch[:, SHIFT] != 0)
    tap[tap == 0] = 1.0
    rates = branch[:, [RATE_A, RATE_B, RATE_C]].copy()
    rates[rates == 0] = np.nan
    g_pu = branch[:, BR_G_PANDAPOWER] if branch.shape[1] > BR_G_PANDAPOWER else np.zeros(len(f))
    ramp = gen[:, RAMP_AGC] if gen.shape[1] > RAMP_AGC else np.zeros(n_gen)
    c2, c1, c0 = _costs(gencost, n_gen)

    topology = Topology(
        base_mva=base_mva,
        bus_ids=bus_ids,
        bus_type=bus_type,
        bus_area=np.nan_to_num(bus[:, BUS_AREA], nan=0, posinf=0, neginf=0),
        bus_zone=np.nan_to_num(bus[:, ZONE], nan=0, posinf=0, neginf=0),
        branch_from=f,
        branch_to=t,
        branch_is_transformer=is_trafo,
        gen_bus=gbus,
        load_bus=load_rows,
        shunt_bus=shunt_rows,
        name=name,
        gencost=gencost,
    )
    return Network(
        bus=make_group(
            "bus",
            vm_pu=bus[:, VM],
            va_rad=np.deg2rad(bus[:, VA]),
            base_kv=bus[:, BASE_KV],
            vmin_pu=bus[:, VMIN],
            vmax_pu=bus[:, VMAX],
        ),
        branch=make_group(
            "branch",
            r_pu=branch[:, BR_R],
            x_pu=branch[:, BR_X],
            b_pu=branch[:, BR_B],
            g_pu=g_pu,
            tap=tap,
            shift_rad=np.deg2rad(branch[:, SHIFT]),
            status=branch[:, BR_STATUS],
            rate_a_mva=rates[:, 0],
            rate_b_mva=rates[:, 1],
            rate_c_mva=rates[:, 2],
        ),
        gen=make_group(
            "gen",
            p_mw=gen[:, PG],
            q_mvar=gen[:, QG],
            vm_pu=gen[:, VG],
            p_min_mw=gen[:, PMIN],
            p_max_mw=gen[:, PMAX],
            q_min_mvar=gen[:, QMIN],
            q_max_mvar=gen[:, QMAX],
            status=gen_on.astype(float),
            slack_weight=weight,
            ramp_mw_per_min=ramp,
            cost_c2=c2,
            cost_c1=c1,
            cost_c0=c0,
        ),
        load=make_group(
            "load",
            p_mw=bus[load_rows, PD],
            q_mvar=bus[load_rows, QD],
            status=np.ones(len(load_rows)),
        ),
        shunt=make_group(
            "shunt",
            g_mw=bus[shunt_rows, GS],
            b_mvar=bus[shunt_rows, BS],
            status=np.ones(len(shunt_rows)),
        ),
        topology=topology,
    )


def to_ppc(network: Network) -> dict[str, Any]:
    """A PYPOWER / MATPOWER case dict (version 2 columns) describing ``network``.

    Loads and shunts are summed per bus into ``PD``/``QD``/``GS``/``BS`` (times their
    status). A generator or branch status between 0 and 1 has no MATPOWER form and is
    an :class:`InvalidValueError` (it was written as 1: flows 20 MW off after a round
    trip). An infinite or missing rating is written as 0, MATPOWER's "unlimited".
    """
    t = network.topology
    n = lambda a: np.asarray(a, dtype=np.float64)  # noqa: E731
    for group in ("gen", "branch"):
        status = n(getattr(network, group).status)
        odd = np.flatnonzero((status != 0) & (status != 1))
        if odd.size:
            i = int(odd[0])
            raise InvalidValueError(
                f"{network.element_name(group, i)} has status {status[i]:g}; MATPOWER's "
                f"{group} status is 0 or 1, so it cannot be written (set it first with "
                f"{ {'gen': 'with_gens', 'branch': 'with_branches'}[group] }(status=...))"
            )
    bus = np.zeros((t.n_bus, 13))
    bus[:, BUS_I] = t.bus_ids
    bus[:, BUS_TYPE] = t.bus_type
    load_scale = n(network.load.status)
    np.add.at(bus[:, PD], t.load_bus, n(network.load.p_mw) * load_scale)
    np.add.at(bus[:, QD], t.load_bus, n(network.load.q_mvar) * load_scale)
    shunt_scale = n(network.shunt.status)
    np.add.at(bus[:, GS], t.shunt_bus, n(network.shunt.g_mw) * shunt_scale)
    np.add.at(bus[:, BS], t.shunt_bus, n(network.shunt.b_mvar) * shunt_scale)
    bus[:, BUS_AREA] = t.bus_area
    bus[:, VM] = n(network.bus.vm_pu)
    bus[:, VA] = to_degrees(n(network.bus.va_rad))
    bus[:, BASE_KV] = n(network.bus.base_kv)
    bus[:, ZONE] = t.bus_zone
    bus[:, VMAX] = n(network.bus.vmax_pu)
    bus[:, VMIN] = n(network.bus.vmin_pu)

    g = network.gen
    gen = np.zeros((t.n_gen, 21))
    gen[:, GEN_BUS] = t.bus_ids[t.gen_bus]
    gen[:, PG] = n(g.p_mw)
    gen[:, QG] = n(g.q_mvar)
    gen[:, QMAX] = n(g.q_max_mvar)
    gen[:, QMIN] = n(g.q_min_mvar)
    gen[:, VG] = n(g.vm_pu)
    gen[:, MBASE] = t.base_mva
    gen[:, GEN_STATUS] = (n(g.status) > 0).astype(float)
    gen[:, PMAX] = n(g.p_max_mw)
    gen[:, PMIN] = n(g.p_min_mw)
    gen[:, RAMP_AGC] = n(g.ramp_mw_per_min)

    b = network.branch
    branch = np.zeros((t.n_branch, 13))
    branch[:, F_BUS] = t.bus_ids[t.branch_from]
    branch[:, T_BUS] = t.bus_ids[t.branch_to]
    branch[:, BR_R] = n(b.r_pu)
    branch[:, BR_X] = n(b.x_pu)
    branch[:, BR_B] = n(b.b_pu)
    for col, arr in ((RATE_A, b.rate_a_mva), (RATE_B, b.rate_b_mva), (RATE_C, b.rate_c_mva)):
        branch[:, col] = np.nan_to_num(n(arr), nan=0.0, posinf=0.0)
    tap = n(b.tap)
    branch[:, TAP] = np.where(t.branch_is_transformer, tap, np.where(tap == 1.0, 0.0, tap))
    branch[:, SHIFT] = to_degrees(n(b.shift_rad))
    branch[:, BR_STATUS] = (n(b.status) > 0).astype(float)
    branch[:, 11] = -360.0
    branch[:, 12] = 360.0
    if np.any(n(b.g_pu) != 0):
        wide = np.zeros((t.n_branch, BR_G_PANDAPOWER + 1))
        wide[:, :13] = branch
        wide[:, BR_G_PANDAPOWER] = n(b.g_pu)
        branch = wide

    case: dict[str, Any] = {
        "version": "2",
        "baseMVA": t.base_mva,
        "bus": bus,
        "gen": gen,
        "branch": branch,
    }
    if t.gencost is not None:
        case["gencost"] = np.array(t.gencost)
    else:
        gencost = np.zeros((t.n_gen, 7))
        gencost[:, 0] = 2
        gencost[:, 3] = 3
        gencost[:, 4] = n(g.cost_c2)
        gencost[:, 5] = n(g.cost_c1)
        gencost[:, 6] = n(g.cost_c0)
        case["gencost"] = gencost
    return case
