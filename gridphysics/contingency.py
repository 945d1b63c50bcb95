"""Contingency screening: N-1 and N-k branch outages, DC (LODF) and AC (batched solves).

``contingencies(network)`` screens every single in-service branch outage. In DC, an
outage that keeps the grid connected is a rank-1 update of the base flows with a
LODF column (``k`` outages at once: a ``k x k`` solve, the Woodbury identity), never a
re-solve. An outage that splits the grid is found by a graph search (bridges for
N-1) and re-solved with the cut-off buses excluded, as the power flow does: its
flows are real numbers, its lost load is reported, and it is flagged. In AC every
contingency is a batched Newton-Raphson solve warm-started from the base case.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import jax
import jax.numpy as jnp
import numpy as np

from gridphysics import dc, islands, outage, sensitivity
from gridphysics.errors import InputTypeError, NetworkError
from gridphysics.network import Network, as_indices, require_network
from gridphysics.ratings import Ratings, fill_missing_ratings
from gridphysics.results import PowerFlowResult, loading_percent, lost_load_mw
from gridphysics.solve import SolveOptions, solve

if TYPE_CHECKING:
    import pandas as pd

Outages = Sequence[int] | Sequence[Sequence[int]] | None


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Scenarios:
    """Injection scenarios screened together: arrays with a leading scenario axis.

    Attributes:
        load_p_mw, load_q_mvar: (n_scenarios, n_load) or None (the network's values).
        gen_p_mw: (n_scenarios, n_gen) or None.
    """

    load_p_mw: np.ndarray | jax.Array | None = None
    load_q_mvar: np.ndarray | jax.Array | None = None
    gen_p_mw: np.ndarray | jax.Array | None = None

    def check(self, network: Network) -> int:
        """The number of scenarios, once every array is ``(n_scenarios, n_elements)``
        for ``network``: a 1-D array of the 11 loads was 11 scenarios of one scalar each
        (hostile rerun 8); one scenario is a row, shape ``(1, n_load)``."""
        width = {"load_p_mw": network.n_load, "load_q_mvar": network.n_load}
        width["gen_p_mw"] = network.n_gen
        for name, n in width.items():
            a = getattr(self, name)
            if a is not None and (np.ndim(a) != 2 or np.shape(a)[1] != n):
                raise NetworkError(
                    f"scenarios.{name} has shape {np.shape(a)}; it must be (n_scenarios, {n}) "
                    "(one scenario is one row)"
                )
        return self.size()

    def size(self) -> int:
        sizes = {
            np.shape(a)[0]
            for a in (self.load_p_mw, self.load_q_mvar, self.gen_p_mw)
            if a is not None
        }
        if len(sizes) != 1:
            raise NetworkError("scenarios need at least one array, all with the same first axis")
        size = sizes.pop()
        if size == 0:  # an empty batch was an IndexError deep in the screening
            raise NetworkError("scenarios hold no scenario (first axis of length 0)")
        return size

    def apply(self, network: Network, i: jax.Array | int) -> Network:
        pick = lambda a: None if a is None else jnp.asarray(a)[i]  # noqa: E731
        net = network.with_loads(p_mw=pick(self.load_p_mw), q_mvar=pick(self.load_q_mvar))
        return net.with_gens(p_mw=pick(self.gen_p_mw))


@dataclass(frozen=True)
class ContingencyReport:
    """What :func:`contingencies` found. Arrays gain a leading scenario axis when
    scenarios were given.

    Attributes:
        method: "dc" or "ac".
        outages: the outage sets, as tuples of branch indices.
        islanding: (n_cont,) True where the outage cuts buses off every reference bus.
        isolated_buses: (n_cont,) how many buses each outage cuts off.
        lost_load_mw: load on the cut-off buses.
        converged: False where an AC contingency did not solve (its flows are NaN).
        base_flow_mw: (n_branch,) from-end flows before any outage.
        flow_mw: (n_cont, n_branch) from-end flows after each outage, or None when
            ``keep_flows=False``.
        max_loading_percent, worst_branch, n_overloaded: per contingency.
        ratings: the ratings screened against and where they come from.
        limit_percent: the loading above which a branch counts as overloaded.
    """

    method: str
    outages: list[tuple[int, ...]]
    islanding: np.ndarray
    isolated_buses: np.ndarray
    lost_load_mw: np.ndarray
    converged: np.ndarray
    base_flow_mw: np.ndarray
    flow_mw: np.ndarray | None
    max_loading_percent: np.ndarray
    worst_branch: np.ndarray
    n_overloaded: np.ndarray
    ratings: Ratings
    limit_percent: float
    branch_names: list[str] = field(repr=False)

    def summary(self) -> dict:
        """Counts and extremes over all contingencies (and scenarios)."""
        loading = self.max_loading_percent
        return {
            "method": self.method,
            "contingencies": len(self.outages),
            "violating": int(np.sum(np.any(np.atleast_2d(self.n_overloaded) > 0, axis=0))),
            "islanding": int(self.islanding.sum()),
            "not_converged": int(np.sum(~np.all(np.atleast_2d(self.converged), axis=0))),
            "worst_loading_percent": float(np.nanmax(loading))
            if np.size(loading)
            else float("nan"),
            "rating_source": self.ratings.source,
        }

    def __str__(self) -> str:
        s = self.summary()
        return (
            f"{s['method'].upper()} screening of {s['contingencies']} contingencies: "
            f"{s['violating']} overload a branch above {self.limit_percent:g} %, "
            f"{s['islanding']} split the grid, {s['not_converged']} did not converge; "
            f"worst loading {s['worst_loading_percent']:.1f} %. Ratings: {s['rating_source']}"
        )

    def to_pandas(self, *, only_critical: bool = True) -> pd.DataFrame:
        """One row per contingency (worst scenario when batched), most loaded first."""
        import pandas as pd

        loading = np.atleast_2d(self.max_loading_percent)
        scen = np.nanargmax(np.where(np.isnan(loading), -np.inf, loading), axis=0)
        cols = np.arange(loading.shape[1])
        worst = np.atleast_2d(self.worst_branch)[scen, cols]
        table = pd.DataFrame(
            {
                "outage": [" + ".join(self.branch_names[k] for k in o) for o in self.outages],
                "branches": self.outages,
                "max_loading_percent": loading[scen, cols],
                "worst_branch": [self.branch_names[k] if k >= 0 else "" for k in worst],
                "n_overloaded": np.atleast_2d(self.n_overloaded)[scen, cols],
                "islanding": self.islanding,
                "isolated_buses": self.isolated_buses,
                "lost_load_mw": np.atleast_2d(self.lost_load_mw)[scen, cols],
                "converged": np.atleast_2d(self.converged).all(axis=0),
            }
        )
        if loading.shape[0] > 1:
            table["worst_scenario"] = scen
        if only_critical:
            table = table[(table.n_overloaded > 0) | table.islanding | ~table.converged]
        return table.sort_values("max_loading_percent", ascending=False, na_position="first")


def _outage_sets(network: Network, outages: Outages) -> list[tuple[int, ...]]:
    n = network.n_branch
    if outages is None:
        return [(int(k),) for k in np.flatnonzero(np.asarray(network.branch.status) > 0)]
    sets = []
    if isinstance(outages, str | bytes) or not isinstance(outages, Iterable):
        raise NetworkError(
            f"outages must be None, a list of branch indices or a list of index tuples, "
            f"got {outages!r:.80}"
        )
    for item in outages:
        if isinstance(item, str | bytes) or item is None:
            raise NetworkError(f"outage branch indices must be integers, got {item!r:.80}")
        members = tuple(sorted(set(as_indices(item, n, "outage branch").tolist())))
        if not members:
            raise NetworkError("an outage set is empty")
        sets.append(members)
    return sets


def _islanding(network: Network, sets: list[tuple[int, ...]]) -> np.ndarray:
    topo = network.topology
    on = np.asarray(network.branch.status) > 0
    base = islands.reachable_numpy(topo, on & islands.candidate_branches(topo))
    bridge = set(sensitivity.bridges(network).tolist())
    flags = np.zeros(len(sets), dtype=bool)
    for i, members in enumerate(sets):
        if len(members) == 1:
            flags[i] = members[0] in bridge
        else:
            active = on.copy()
            active[list(members)] = False
            flags[i] = bool(
                np.any(
                    base & ~islands.reachable_numpy(topo, active & islands.candidate_branches(topo))
                )
            )
    return flags


@jax.jit
def _multi_outage_flows(
    base_flow: jax.Array, h: jax.Array, sets: jax.Array, columns: jax.Array
) -> jax.Array:
    """(..., n_sets, n_branch) flows after simultaneous outages that keep the grid whole,
    by the outage engine's Woodbury step (:func:`gridphysics.outage.woodbury_solve`):
    ``sets`` holds branch indices, ``columns`` their columns in ``h``."""
    tol = outage.pivot_tolerance(h.dtype)

    def per_set(members, cols_of):
        cols = h[:, cols_of]  # (n_branch, k)
        used = jnp.ones(members.shape[0], bool)

        def apply(f):
            z, _, _ = outage.woodbury_solve(cols[members], f[members], used, tol)
            return (f + cols @ z).at[members].set(0.0)  # the outaged branches carry nothing

        return apply(base_flow) if base_flow.ndim == 1 else jax.vmap(apply)(base_flow)

    out = jax.vmap(per_set)(sets, columns)  # (n_sets, [S,] n_branch)
    return jnp.moveaxis(out, 0, -2) if base_flow.ndim > 1 else out


def _statuses(network: Network, sets: list[tuple[int, ...]]) -> jax.Array:
    status = np.tile(np.asarray(network.branch.status), (len(sets), 1))
    for i, members in enumerate(sets):
        status[i, list(members)] = 0.0
    return jnp.asarray(status, network.dtype)


@dataclass(frozen=True, eq=False)
class N1Plan:
    """Static description of single-branch outages for the one-shot DC screen.

    Attributes:
        outages: (n,) outaged branch of each contingency.
        bridge: (n,) the outage cuts buses off (a bridge with no reference bus beyond it).
        main_bus: (n,) for bridges, the end that stays connected to a reference bus.
        main_sign: (n,) +1 if that end is the from end, -1 if the to end.
        dead_rows, dead_cols: (contingency, branch) pairs that carry nothing after the
            outage (the outaged branch itself and every branch of a cut-off island).
    """

    outages: np.ndarray
    bridge: np.ndarray
    main_bus: np.ndarray
    main_sign: np.ndarray
    dead_rows: np.ndarray
    dead_cols: np.ndarray


def n1_plan(network: Network, outages: Sequence[int] | np.ndarray | None = None) -> N1Plan:
    """Plan single outages (outside jit): find bridges and the islands they cut off.

    A bridge whose both sides keep a reference bus is treated like any other outage
    only if it is not a bridge of the reference-connected grid; such outages (rare,
    several reference buses) raise here and are re-solved by :func:`contingencies`.
    """
    topo = network.topology
    on = np.asarray(network.branch.status) > 0
    cand = islands.candidate_branches(topo)
    out = np.flatnonzero(on) if outages is None else as_indices(outages, topo.n_branch, "outage")
    bridge_set = set(sensitivity.bridges(network).tolist())
    base = islands.reachable_numpy(topo, on & cand)
    bridge = np.zeros(len(out), bool)
    main_bus = np.zeros(len(out), np.int64)
    main_sign = np.ones(len(out))
    rows, cols = [np.arange(len(out))], [out]
    for i, k in enumerate(out):
        if int(k) not in bridge_set:
            continue
        active = on & cand
        active[k] = False
        reach = islands.reachable_numpy(topo, active)
        lost = base & ~reach
        if not lost.any():
            ids = topo.bus_ids
            f, t = topo.branch_from[k], topo.branch_to[k]
            if not base[f]:
                raise NetworkError(
                    f"branch {k} ({ids[f]}-{ids[t]}) lies in a part of the grid that no "
                    "reference bus reaches (already cut off): its outage changes nothing; "
                    "leave it out of the outages"
                )
            raise NetworkError(
                f"branch {k} ({ids[f]}-{ids[t]}) is a bridge between two parts that both keep "
                "a reference bus"
            )
        bridge[i] = True
        f, t = topo.branch_from[k], topo.branch_to[k]
        main_bus[i], main_sign[i] = (f, 1.0) if reach[f] else (t, -1.0)
        island_branches = np.flatnonzero(lost[topo.branch_from] | lost[topo.branch_to])
        rows.append(np.full(len(island_branches), i))
        cols.append(island_branches)
    return N1Plan(out, bridge, main_bus, main_sign, np.concatenate(rows), np.concatenate(cols))


@jax.jit
def _n1_flows_core(network: Network, base_mw, outages, bridge, main_bus, main_sign, dead):
    """(..., n, n_branch) flows after each single outage, in one shot: a LODF column
    for outages that keep the grid whole, the PTDF column of the surviving end for a
    bridge (the cut-off island's export disappears and the slack makes it up)."""
    s = dc.dc_structure(network.topology)
    n_free = len(s.free)
    transfer = sensitivity._transfer_vectors(network, outages)
    at_main = jax.nn.one_hot(jnp.asarray(s.theta_map)[main_bus], n_free + 1, dtype=network.dtype)[
        :, :n_free
    ]
    rhs = jnp.where(bridge[:, None], at_main, transfer)
    cols = sensitivity._flows_of_angles(network, sensitivity._solve_many(network, rhs))  # (n, n_br)
    own = cols[jnp.arange(outages.shape[0]), outages]
    f_k = base_mw[..., outages]
    coef = jnp.where(bridge, main_sign * f_k, f_k / jnp.where(bridge, 1.0, 1.0 - own))
    post = base_mw[..., None, :] + coef[..., None] * cols
    return jnp.where(dead, 0.0, post)


def n1_dc_flows(network: Network, plan: N1Plan) -> jax.Array:
    """``(n_outages, n_branch)`` DC flows after each planned single outage (jitted;
    a new network with the same topology and statuses reuses the compiled code)."""
    return _n1_with_base(network, *_plan_arrays(plan, network.n_branch, network.dtype))


@jax.jit
def _n1_with_base(network, outages, bridge, main_bus, main_sign, dead):
    base = dc.solve_dc(network).p_from_mw
    return _n1_flows_core(network, base, outages, bridge, main_bus, main_sign, dead)


def _plan_arrays(plan: N1Plan, n_branch: int, dtype) -> tuple:
    """The plan's arrays on the device, built once per plan."""
    cached = plan.__dict__.get("_device")
    if cached is None:
        dead = np.zeros((len(plan.outages), n_branch), bool)
        dead[plan.dead_rows, plan.dead_cols] = True
        cached = (
            jnp.asarray(plan.outages),
            jnp.asarray(plan.bridge),
            jnp.asarray(plan.main_bus),
            jnp.asarray(plan.main_sign, dtype),
            jnp.asarray(dead),
        )
        object.__setattr__(plan, "_device", cached)
    return cached


def contingencies(
    network: Network,
    outages: Outages = None,
    *,
    method: Literal["dc", "ac"] = "dc",
    scenarios: Scenarios | None = None,
    keep_flows: bool = True,
    limit_percent: float = 100.0,
    rating_rule: str | None = None,
    options: SolveOptions | None = None,
) -> ContingencyReport:
    """Screen branch outages.

    Args:
        network: the network (its in-service branches are the candidates).
        outages: ``None`` for every single in-service branch outage (N-1); a list of
            branch indices (single outages); or a list of index tuples (N-k sets).
        method: ``"dc"`` (LODF updates) or ``"ac"`` (batched Newton-Raphson solves).
        scenarios: injection scenarios screened at once (see :class:`Scenarios`).
        keep_flows: keep every post-contingency flow (``n_cont x n_branch`` per
            scenario); ``False`` keeps only the per-contingency summaries.
        limit_percent: loading above which a branch counts as overloaded.
        rating_rule: version of the rule in ``cases/ratings.toml`` for branches the
            case gives no rating (default: the current one).
        options: AC solver options (the default: Newton-Raphson, 1e-8).

    Returns:
        A :class:`ContingencyReport`.
    """
    require_network(network, "contingencies()")
    if method not in ("dc", "ac"):
        raise NetworkError(f"method must be 'dc' or 'ac', got {method!r}")
    try:  # an int beyond float range (10**400) was a TypeError in np.isfinite
        limit = float(limit_percent) if isinstance(limit_percent, int | float | np.number) else None
    except OverflowError:
        limit = None
    if isinstance(limit_percent, bool) or limit is None or not (np.isfinite(limit) and limit > 0):
        raise NetworkError(f"limit_percent must be a positive number, got {limit_percent!r}")
    if scenarios is not None and not isinstance(scenarios, Scenarios):
        raise InputTypeError(
            f"scenarios must be a gridphysics Scenarios object, got {type(scenarios).__name__}"
        )
    if not isinstance(keep_flows, bool | np.bool_):  # 'no' was taken as True
        raise InputTypeError(f"keep_flows must be True or False, got {keep_flows!r}")
    network, ratings = fill_missing_ratings(network, rating_rule)
    sets = _outage_sets(network, outages)
    islanding = _islanding(network, sets)
    n_scen = None if scenarios is None else scenarios.check(network)
    rate = jnp.asarray(ratings.rate_mva, network.dtype)

    def batched(fn):
        if scenarios is None:
            return fn(network)
        return jax.vmap(lambda i: fn(scenarios.apply(network, i)))(jnp.arange(n_scen))

    if method == "dc":
        base = batched(lambda net: solve(net).p_from_mw)
        isolated, lost = _lost_load(network, sets, islanding, scenarios, n_scen)
        chunks = _dc_chunks(network, sets, islanding, base, scenarios, n_scen)
    else:
        base_result = batched(lambda net: solve(net, "ac", options=options or SolveOptions()))
        base = base_result.p_from_mw
        chunks = _ac_chunks(network, sets, base_result, scenarios, n_scen, options)
        isolated = np.zeros(len(sets), dtype=np.int64)
        lost = np.zeros((len(sets),) if n_scen is None else (n_scen, len(sets)))

    lead = () if n_scen is None else (n_scen,)
    max_loading = np.full((*lead, len(sets)), np.nan)
    worst = np.full((*lead, len(sets)), -1, dtype=np.int64)
    n_over = np.zeros((*lead, len(sets)), dtype=np.int64)
    converged = np.ones((*lead, len(sets)), dtype=bool)
    flows_out = np.empty((*lead, len(sets), network.n_branch)) if keep_flows else None
    for idx, flows, loading, ok, extra in chunks:
        stats = _summarize(flows, loading, rate, limit_percent)
        # a contingency whose flows are not all finite has no worst loading: its
        # out-of-service branches' 0 MW read 0 % in a failed DC scenario (NaN loads),
        # which looked secure (hostile rerun 8)
        max_loading[..., idx] = np.where(np.asarray(ok), np.asarray(stats[0]), np.nan)
        worst[..., idx] = np.where(np.asarray(ok), np.asarray(stats[1]), -1)
        n_over[..., idx] = np.asarray(stats[2])
        converged[..., idx] = np.asarray(ok)
        if flows_out is not None:
            flows_out[..., idx, :] = np.asarray(flows)
        if extra is not None:  # AC: isolated buses and lost load come with the solves
            isolated[idx] = np.asarray(extra[0]).reshape(-1, len(idx)).max(axis=0)
            lost[..., idx] = np.asarray(extra[1])
    t = network.topology
    names = [
        f"{k}:{t.bus_ids[t.branch_from[k]]}-{t.bus_ids[t.branch_to[k]]}" for k in range(t.n_branch)
    ]
    return ContingencyReport(
        method=method,
        outages=sets,
        islanding=islanding,
        isolated_buses=np.asarray(isolated),
        lost_load_mw=np.asarray(lost),
        converged=converged,
        base_flow_mw=np.asarray(base),
        flow_mw=flows_out,
        max_loading_percent=max_loading,
        worst_branch=worst,
        n_overloaded=n_over,
        ratings=ratings,
        limit_percent=float(limit_percent),
        branch_names=names,
    )


@jax.jit
def _summarize(flows, loading, rate, limit):
    """Worst loading, its branch and the number of overloaded branches per contingency."""
    if loading is None:
        loading = loading_percent(flows, rate)
    loading = jnp.where(jnp.isnan(loading), -jnp.inf, loading)
    worst = jnp.argmax(loading, axis=-1)
    peak = jnp.max(loading, axis=-1)
    undefined = jnp.isinf(peak)
    return (
        jnp.where(undefined, jnp.nan, peak),
        jnp.where(undefined, -1, worst),
        jnp.sum(loading > limit, axis=-1),
    )


def _chunk_size(network: Network, n_scen: int | None) -> int:
    """Outages per chunk, so that one chunk's flows stay around 32 MB."""
    per = network.n_branch * (n_scen or 1) * 8
    return int(max(8, min(4096, 32_000_000 // per)))


def _padded_chunks(indices: np.ndarray, size: int):
    """Fixed-size chunks (the last one padded by repeating an index) and their true length,
    so that every chunk reuses one compiled function."""
    for start in range(0, len(indices), size):
        part = indices[start : start + size]
        yield np.concatenate([part, np.repeat(part[-1:], size - len(part))]), len(part)


def _dc_chunks(network, sets, islanding, base, scenarios, n_scen):
    """Yield ``(indices, flows, None, converged, None)`` per chunk of DC contingencies."""
    order = np.arange(len(sets))
    size = _chunk_size(network, n_scen) if len(sets) else 1
    singles = order[[len(s) == 1 for s in sets]]
    plan = n1_plan(network, np.array([sets[i][0] for i in singles], np.int64))
    dead = np.zeros((len(singles), network.n_branch), bool)
    dead[plan.dead_rows, plan.dead_cols] = True
    position = {int(c): j for j, c in enumerate(singles)}
    for chunk, n in _padded_chunks(singles, min(size, max(len(singles), 1))):
        j = np.array([position[int(c)] for c in chunk])
        flows = _n1_flows_core(
            network,
            base,
            jnp.asarray(plan.outages[j]),
            jnp.asarray(plan.bridge[j]),
            jnp.asarray(plan.main_bus[j]),
            jnp.asarray(plan.main_sign[j], network.dtype),
            jnp.asarray(dead[j]),
        )
        yield chunk[:n], flows[..., :n, :], None, jnp.isfinite(flows[..., :n, :]).all(-1), None
    for k in sorted({len(s) for s in sets if len(s) > 1}):
        idx = order[[len(s) == k and not isl for s, isl in zip(sets, islanding, strict=True)]]
        for chunk, n in _padded_chunks(idx, min(size, max(len(idx), 1))):
            members = np.array([sets[i] for i in chunk])
            union = np.unique(members)
            h = sensitivity._transfer_columns(network, jnp.asarray(union))  # (n_branch, n_union)
            columns = np.searchsorted(union, members)
            flows = _multi_outage_flows(base, h, jnp.asarray(members), jnp.asarray(columns))
            yield chunk[:n], flows[..., :n, :], None, jnp.isfinite(flows[..., :n, :]).all(-1), None
    split = order[islanding & np.array([len(s) > 1 for s in sets], bool)]
    for chunk, n in _padded_chunks(split, min(size, max(len(split), 1))):
        status = _statuses(network, [sets[i] for i in chunk])
        flows = _dc_resolve(network, status, scenarios)
        yield chunk[:n], flows[..., :n, :], None, jnp.isfinite(flows[..., :n, :]).all(-1), None


def _resolve_one(network: Network, status: jax.Array) -> jax.Array:
    return jax.vmap(lambda st: solve(network.with_branches(status=st)).p_from_mw)(status)


@jax.jit
def _dc_resolve(network: Network, status: jax.Array, scenarios: Scenarios | None) -> jax.Array:
    """Re-solve outages that split the grid (isolated buses excluded)."""
    if scenarios is None:
        return _resolve_one(network, status)
    n_scen = scenarios.size()
    return jax.vmap(lambda i: _resolve_one(scenarios.apply(network, i), status))(jnp.arange(n_scen))


def _ac_screen_one(
    network: Network, base: PowerFlowResult, status: jax.Array, options: SolveOptions
):
    start = network.with_voltages(
        vm_pu=jnp.nan_to_num(base.vm_pu, nan=1.0), va_rad=jnp.nan_to_num(base.va_rad)
    )
    res = jax.vmap(lambda st: solve(start.with_branches(status=st), "ac", options=options))(status)
    lost = lost_load_mw(network.topology, network.load.p_mw * network.load.status, res.bus_isolated)
    return res.p_from_mw, res.loading_percent, res.converged, res.bus_isolated.sum(-1), lost


@functools.partial(jax.jit, static_argnames="options")
def _ac_screen(network, base, status, scenarios, options):
    """Batched Newton-Raphson solves of outages, warm-started from the base case."""
    if scenarios is None:
        return _ac_screen_one(network, base, status, options)
    return jax.vmap(lambda i, r0: _ac_screen_one(scenarios.apply(network, i), r0, status, options))(
        jnp.arange(scenarios.size()), base
    )


def _ac_chunks(network, sets, base_result, scenarios, n_scen, options):
    """Yield ``(indices, flows, loading, converged, (isolated, lost))`` per chunk of AC
    contingencies."""
    opts = options or SolveOptions()
    warm = SolveOptions(**{**opts.__dict__, "init": "case"})
    size = max(8, min(256, _chunk_size(network, n_scen) // 8))
    for chunk, n in _padded_chunks(np.arange(len(sets)), min(size, max(len(sets), 1))):
        status = _statuses(network, [sets[i] for i in chunk])
        flows, loading, ok, isolated, lost = _ac_screen(
            network, base_result, status, scenarios, warm
        )
        yield (
            chunk[:n],
            flows[..., :n, :],
            loading[..., :n, :],
            ok[..., :n],
            (isolated[..., :n], lost[..., :n]),
        )


def _load_on(network, isolated_mask, scenarios, n_scen) -> np.ndarray:
    """Load (MW) on the isolated buses of each contingency."""

    def lost(net, mask):
        return lost_load_mw(net.topology, net.load.p_mw * net.load.status, mask)

    if n_scen is None:
        return np.asarray(lost(network, isolated_mask))
    mask_axis = 0 if isolated_mask.ndim == 3 else None  # per scenario (AC) or shared (DC)
    per = jax.vmap(lambda i, m: lost(scenarios.apply(network, i), m), in_axes=(0, mask_axis))
    return np.asarray(per(jnp.arange(n_scen), isolated_mask))


def _lost_load(network, sets, islanding, scenarios, n_scen):
    topo = network.topology
    mask = np.zeros((len(sets), topo.n_bus), dtype=bool)
    on = np.asarray(network.branch.status) > 0
    cand = islands.candidate_branches(topo)
    base = islands.reachable_numpy(topo, on & cand)
    for i in np.flatnonzero(islanding):
        active = on.copy()
        active[list(sets[i])] = False
        mask[i] = base & ~islands.reachable_numpy(topo, active & cand)
    isolated = mask.sum(axis=1)
    lost = _load_on(network, jnp.asarray(mask), scenarios, n_scen)
    return isolated, lost
