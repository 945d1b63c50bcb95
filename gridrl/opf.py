"""DC optimal power flow with HiGHS: the per-step "oracle" redispatch of the environment.

:func:`dc_opf` finds the cheapest generator dispatch (and, when nothing else works,
load shedding) that balances the grid and keeps every rated branch within its
rating, in the same DC model as :func:`gridphysics.solve`. It runs outside ``jit``
(numpy, scipy) and is meant as a baseline with perfect knowledge of one step.

Model (powers in MW):

* Injection at each bus = generation - (load - shed) - shunt conductance (consumed at
  1 p.u., as in gridphysics' DC model).
* Branch flows ``f = H @ injection + f0``: ``H`` is gridphysics' PTDF of the network
  with the chosen branch statuses, ``f0`` the flows of that network with every load,
  generator and shunt at zero (phase shifters, and reference-bus angles when an island
  holds several reference buses).
* Balance, one row per energized reference bus: its injection equals the net flow
  leaving it through its branches. With one reference bus per island this is the
  island's power balance; with several it is also the split among them that
  gridphysics' power flow imposes, so that the dispatch reproduces in ``solve``.
* Buses cut off from every reference bus (``bus_isolated``) are dead: their loads are
  shed in full, their generators produce nothing, their shunts consume nothing.
* Quadratic generator costs ``c2 p^2 + c1 p + c0`` are replaced in the LP by their
  piecewise-linear interpolation on ``cost_segments`` equal-width segments between
  ``p_min`` and ``p_max``; the reported cost uses the exact quadratic. The
  interpolation overestimates a unit's cost by at most ``c2 w^2 / 4`` (``w`` its
  segment width). So the reported cost can exceed the true optimum by at most the sum
  of these, and a tighter problem can report a slightly lower exact cost than a
  looser one (its LP objective is never lower).
* Line limits are added lazily: the LP is solved with only the rated branches that
  earlier solutions overloaded, repeating until no rated branch is overloaded. The
  last LP relaxes the full one, and its solution meets every limit, so it is an
  optimum of the full LP.

Typical times once gridphysics' functions are compiled for a grid (the first call
per topology compiles them, about 0.5 s): ieee118 under 10 ms, pegase1354 (about 150
binding lines with the catalogue ratings) under 1 s.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linprog

import gridphysics as gp
from gridphysics.network import REF, Network
from gridphysics.outage import zero_injection_solve

# A branch outside the LP counts as overloaded above rate * (1 + RTOL) + ATOL.
_RATE_RTOL = 1e-9
_RATE_ATOL_MW = 1e-7

_LINPROG_STATUS = {
    0: "optimal",
    1: "iteration limit",
    2: "infeasible",
    3: "unbounded",
    4: "numerical difficulties",
}


@dataclass(frozen=True)
class OPFResult:
    """Outcome of :func:`dc_opf`. On failure every array is NaN and ``cost`` is NaN.

    Attributes:
        gen_p_mw: (n_gen,) generator output (the injection, status already applied).
        shed_mw: (n_load,) load shed, ``0 <= shed <= load``; the whole load at dead buses.
        cost: exact quadratic generation cost plus ``shed_cost_per_mwh * sum(shed)``, $/h.
        flow_mw: (n_branch,) from-end DC flows of the dispatch.
        status: "optimal", or why not ("infeasible", "unbounded", "iteration limit",
            "numerical difficulties", "power flow failed").
        success: True when ``status == "optimal"``.
        message: the solver's own message (or ours), for logs.
    """

    gen_p_mw: np.ndarray
    shed_mw: np.ndarray
    cost: float
    flow_mw: np.ndarray
    status: str
    success: bool
    message: str = ""


def _vector(value, default: np.ndarray, name: str, *, finite: bool = True) -> np.ndarray:
    """``value`` (or ``default`` when None) as a float64 array of ``default``'s shape."""
    if value is None:
        return np.asarray(default, dtype=np.float64)
    arr = np.asarray(value, dtype=np.float64)
    try:
        arr = np.broadcast_to(arr, default.shape).copy()
    except ValueError:
        raise ValueError(f"{name} must have shape {default.shape}, got {arr.shape}") from None
    if finite and not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite")
    return arr


def _failure(n_gen: int, n_load: int, n_branch: int, status: str, message: str) -> OPFResult:
    return OPFResult(
        gen_p_mw=np.full(n_gen, np.nan),
        shed_mw=np.full(n_load, np.nan),
        cost=float("nan"),
        flow_mw=np.full(n_branch, np.nan),
        status=status,
        success=False,
        message=message,
    )


def zero_injection_flows(net: Network) -> tuple[np.ndarray, np.ndarray, bool]:
    """DC flows with every load, generator and shunt at zero (only phase shifters drive
    them), the dead buses, and whether that solve converged."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gp.ConvergenceWarning)
        result = zero_injection_solve(net)
    converged = bool(result.converged)
    return np.asarray(result.p_from_mw), np.asarray(result.bus_isolated), converged


def _injection_columns(rows: np.ndarray, inj_bus: np.ndarray, n_p: int, n_s: int) -> np.ndarray:
    """Per-bus row coefficients ``(m, n_bus)`` as columns of the LP variables
    ``[p | segments | shed]`` (segments do not inject: their columns are zero)."""
    cols = rows[:, inj_bus]
    return np.hstack([cols[:, :n_p], np.zeros((len(rows), n_s)), cols[:, n_p:]])


def _solve_lp(
    h, f0, fixed, inj_bus, n_p, n_s, objective, bounds, base_rows, base_rhs, rate, monitored
):
    """The LP with flow variables and rows for the ``monitored`` branches:
    ``f_l - H_l @ (variable injections) = H_l @ fixed + f0_l``, ``|f_l| <= rate_l``."""
    n_m = len(monitored)
    h_mon = h[monitored]
    flow_rows = sp.hstack(
        [sp.csr_matrix(-_injection_columns(h_mon, inj_bus, n_p, n_s)), sp.identity(n_m)]
    )
    a_eq = sp.vstack(
        [sp.hstack([base_rows, sp.csr_matrix((base_rows.shape[0], n_m))]), flow_rows],
        format="csr",
    )
    b_eq = np.concatenate([base_rhs, h_mon @ fixed + f0[monitored]])
    c = np.concatenate([objective, np.zeros(n_m)])
    all_bounds = np.vstack([bounds, np.column_stack([-rate[monitored], rate[monitored]])])
    return linprog(c, A_eq=a_eq, b_eq=b_eq, bounds=all_bounds, method="highs")


def dc_opf(
    network: Network,
    *,
    load_p_mw=None,
    gen_p_max_mw=None,
    gen_p_min_mw=None,
    rate_mva=None,
    branch_status=None,
    shed_cost_per_mwh: float = 10_000.0,
    cost_segments: int = 4,
    shed_max_mw=None,
) -> OPFResult:
    """Cheapest dispatch of ``network`` within generator limits and branch ratings.

    Overrides replace the network's own fields, and statuses multiply them as they do
    in gridphysics: ``dc_opf(net, load_p_mw=x)`` is ``dc_opf(net.with_loads(p_mw=x))``.

    Args:
        network: the grid (costs ``gen.cost_c2/c1/c0``, statuses, ratings).
        load_p_mw: (n_load,) load ``p_mw`` (default the network's); consumption is
            ``p_mw * load.status``.
        gen_p_max_mw, gen_p_min_mw: (n_gen,) output limits (default the network's,
            e.g. renewable availability as ``gen_p_max_mw``); the unit's range is
            ``[p_min, p_max] * gen.status``, and a ``p_min`` above ``p_max`` is lowered to it.
        rate_mva: (n_branch,) ratings (default ``branch.rate_a_mva``); NaN or inf means
            unlimited. A rating applies to branches with ``status > 0``.
        branch_status: (n_branch,) statuses (default ``branch.status``), 0 = tripped.
        shed_cost_per_mwh: price of each MW of shed load, $/MWh.
        cost_segments: linear segments per quadratic cost curve.
        shed_max_mw: (n_load,) most each load may be shed (default: all of it; loads at
            cut-off buses are shed in full regardless).

    Returns:
        An :class:`OPFResult`. An infeasible or unbounded LP gives ``success=False`` and
        NaN arrays; it does not raise.

    Raises:
        ValueError: a generator with ``cost_c2 < 0`` (non-convex cost), arrays of the
            wrong shape, non-finite limits or loads, negative ratings.
    """
    topo = network.topology
    n_bus, n_gen, n_load, n_branch = topo.n_bus, topo.n_gen, topo.n_load, topo.n_branch
    if int(cost_segments) != cost_segments or cost_segments < 1:
        raise ValueError(f"cost_segments must be a positive integer, got {cost_segments!r}")
    cost_segments = int(cost_segments)
    if not np.isfinite(shed_cost_per_mwh) or shed_cost_per_mwh < 0:
        raise ValueError(f"shed_cost_per_mwh must be finite and >= 0, got {shed_cost_per_mwh!r}")

    gen, load, branch = network.gen, network.load, network.branch
    shed_cap = np.full(n_load, np.inf) if shed_max_mw is None else np.asarray(shed_max_mw, float)
    if shed_cap.shape != (n_load,) or np.any(np.isnan(shed_cap)) or np.any(shed_cap < 0):
        raise ValueError(f"shed_max_mw must be ({n_load},) values >= 0, got {shed_max_mw!r}")
    c2 = np.asarray(gen.cost_c2, dtype=np.float64)
    c1 = np.asarray(gen.cost_c1, dtype=np.float64)
    c0 = np.asarray(gen.cost_c0, dtype=np.float64)
    bad = np.flatnonzero(c2 < 0)
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"generator {i} at bus {topo.bus_ids[topo.gen_bus[i]]} has cost_c2 = {c2[i]:g} < 0: "
            "a non-convex cost cannot be dispatched by this LP"
            + (f" ({bad.size - 1} more such generators)" if bad.size > 1 else "")
        )

    status = _vector(branch_status, np.asarray(branch.status), "branch_status")
    rate = _vector(rate_mva, np.asarray(branch.rate_a_mva), "rate_mva", finite=False)
    if np.any(rate < 0):
        raise ValueError("rate_mva must be >= 0 (NaN for unlimited)")
    gen_status = np.asarray(gen.status, dtype=np.float64)
    p_max = _vector(gen_p_max_mw, np.asarray(gen.p_max_mw), "gen_p_max_mw") * gen_status
    p_min = _vector(gen_p_min_mw, np.asarray(gen.p_min_mw), "gen_p_min_mw") * gen_status
    p_min = np.minimum(p_min, p_max)
    demand = _vector(load_p_mw, np.asarray(load.p_mw), "load_p_mw") * np.asarray(load.status)
    shunt_g = np.asarray(network.shunt.g_mw) * np.asarray(network.shunt.status)

    net = network if branch_status is None else network.with_branches(status=status)
    f0, isolated, converged = zero_injection_flows(net)
    if not converged:
        return _failure(
            n_gen, n_load, n_branch, "power flow failed", "the DC power flow of the grid failed"
        )
    # (n_branch, n_bus); cut-off buses' columns are NaN: no transfer (masked by live_bus)
    h = np.nan_to_num(np.asarray(gp.ptdf(net), dtype=np.float64))
    live_bus = ~isolated

    # Fixed injections at energized buses: loads (before shedding) and shunts.
    live_load = live_bus[topo.load_bus]
    live_shunt = live_bus[topo.shunt_bus]
    fixed = np.zeros(n_bus)
    np.add.at(fixed, topo.load_bus[live_load], -demand[live_load])
    np.add.at(fixed, topo.shunt_bus[live_shunt], -shunt_g[live_shunt])

    # LP variables: [p of live units | cost segments | shed of live positive loads], then
    # one flow variable per monitored branch (see the loop below).
    gens = np.flatnonzero(live_bus[topo.gen_bus])
    sheds = np.flatnonzero(live_load & (demand > 0))
    width = (p_max[gens] - p_min[gens]) / cost_segments
    seg_owner = np.repeat(np.flatnonzero(width > 0), cost_segments)  # positions in ``gens``
    seg_k = np.tile(np.arange(cost_segments), int((width > 0).sum()))
    seg_gen = gens[seg_owner]
    lo = p_min[seg_gen] + seg_k * width[seg_owner]
    hi = lo + width[seg_owner]
    seg_slope = c1[seg_gen] + c2[seg_gen] * (lo + hi)  # chord slope of the quadratic
    rated = np.flatnonzero(np.isfinite(rate) & (status > 0) & live_bus[topo.branch_from])
    n_p, n_s, n_d = len(gens), len(seg_gen), len(sheds)
    # Injection columns: each unit's output and each shed enter their bus with +1.
    inj_bus = np.concatenate([topo.gen_bus[gens], topo.load_bus[sheds]])
    # Balance rows, per energized reference bus r: injection_r = C_r @ flows, where C_r
    # is +1 on branches leaving r at their from end and -1 at their to end.
    refs = np.flatnonzero((topo.bus_type == REF) & live_bus)
    incidence = np.zeros((len(refs), n_branch))
    for row, r in enumerate(refs):
        incidence[row, topo.branch_from == r] += 1.0
        incidence[row, topo.branch_to == r] -= 1.0
    balance = -(incidence @ h)  # minus the net flow leaving r per MW injected at each bus
    balance[np.arange(len(refs)), refs] += 1.0
    balance_rhs = incidence @ f0 - balance @ fixed
    # Segment rows: p_g - sum_k s_gk = p_min_g.
    link = sp.hstack(
        [
            sp.identity(n_p, format="csr"),
            sp.csr_matrix((-np.ones(n_s), (seg_owner, np.arange(n_s))), shape=(n_p, n_s)),
            sp.csr_matrix((n_p, n_d)),
        ]
    )
    base_rows = sp.vstack(
        [sp.csr_matrix(_injection_columns(balance, inj_bus, n_p, n_s)), link], format="csr"
    )
    base_rhs = np.concatenate([balance_rhs, p_min[gens]])
    objective = np.concatenate([np.zeros(n_p), seg_slope, np.full(n_d, float(shed_cost_per_mwh))])
    bounds = np.vstack(
        [
            np.column_stack([p_min[gens], p_max[gens]]),
            np.column_stack([np.zeros(n_s), width[seg_owner]]),
            np.column_stack([np.zeros(n_d), np.minimum(demand, shed_cap)[sheds]]),
        ]
    )
    var_inj = np.r_[0:n_p, n_p + n_s : n_p + n_s + n_d]  # variables that are injections

    # Constraint generation: monitor only the rated branches that a solution overloads,
    # re-solving until none does (few binding lines in practice, so small LPs). Each
    # round adds at least one branch, so this ends; its optimum is the full LP's.
    monitored = np.zeros(0, dtype=np.int64)
    while True:
        lp = _solve_lp(
            h, f0, fixed, inj_bus, n_p, n_s, objective, bounds, base_rows, base_rhs, rate, monitored
        )
        if lp.status != 0 or lp.x is None:
            reason = _LINPROG_STATUS.get(lp.status, f"solver status {lp.status}")
            return _failure(n_gen, n_load, n_branch, reason, str(lp.message))
        injection = fixed.copy()
        np.add.at(injection, inj_bus, lp.x[var_inj])
        flow = h @ injection + f0
        over = rated[np.abs(flow[rated]) > rate[rated] * (1 + _RATE_RTOL) + _RATE_ATOL_MW]
        over = np.setdiff1d(over, monitored)
        if not over.size:
            break
        monitored = np.union1d(monitored, over)

    gen_p = np.zeros(n_gen)
    gen_p[gens] = lp.x[:n_p] + 0.0  # no -0.0 from the solver
    shed = np.where(live_load, 0.0, np.maximum(demand, 0.0))
    shed[sheds] = lp.x[n_p + n_s : n_p + n_s + n_d]
    on = gen_status > 0
    generation_cost = float(np.sum((c2 * gen_p**2 + c1 * gen_p + c0)[on]))
    return OPFResult(
        gen_p_mw=gen_p,
        shed_mw=shed,
        cost=generation_cost + float(shed_cost_per_mwh) * float(shed.sum()),
        flow_mw=flow,
        status="optimal",
        success=True,
        message=str(lp.message),
    )
