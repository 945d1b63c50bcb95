"""Upper references planned with a multi-period DC-OPF, run through the environment.

* :func:`plan` solves one linear program over a horizon of steps (HiGHS through
  ``highspy``, sparse): the cheapest dispatch and shedding in the agents' own action
  space that respects everything the environment enforces, with preventive N-1
  security where it can be had.
* ``day_ahead`` (:func:`day_ahead_policy`): the upper reference. It knows the whole
  day before it starts (loads, renewable output, outages: the environment's own draws
  for the evaluated day), plans the day in one LP and replays the plan through
  ``env.step``. The normalized score's 100 is this policy.
* ``mpc`` (:func:`mpc_policy`): a realistic expert. Every ``replan`` steps it plans
  the next ``horizon`` steps on a forecast: the day's load and solar profile is known,
  the current load and wind deviations are assumed to persist, and the grid is assumed
  to stay as it is now (no foresight of outages).

The LP, per planned step ``t`` (powers in MW, energies MW x the step's hours):

===================== ==========================================================
variables             ``p`` per unit, its cost segments, ``shed`` per load,
                      ``r >= |p - base|`` per unit (the redispatch volume)
objective             generation cost (each quadratic cost curve replaced by its
                      chords on ``cost_segments`` equal segments, as in
                      :func:`gridrl.opf.dc_opf`) + redispatch, shedding, overload
                      and N-1 prices (:class:`gridrl.reward.Prices`)
balance               ``sum p = sum (load - shed) + shunt consumption``, as the
                      safety filter balances
limits                ``min(p_min, avail) <= p <= avail``;
                      ``0 <= shed <= max_shed_share x load``
ramps                 ``|p_t - p_(t-1)| <= ramp`` (the filter's band) and
                      ``|(p_t - base_t) - (p_(t-1) - base_(t-1))| <= ramp`` (the
                      operational action moves the redispatch by at most one ramp)
flows                 ``|H_t inj_t + f0_t| <= MARGIN x rate``: ``H_t`` the PTDF of
                      the step's topology (outages included), ``MARGIN`` the safety
                      filter's own target, so that the filter leaves the plan alone
N-1 (preventive)      for every in-service branch ``k`` whose loss splits nothing:
                      ``|f_l + LODF_lk f_k| <= emergency rating`` of every other
                      rated branch ``l`` (the post-contingency criterion of
                      :func:`n1_secure`)
===================== ==========================================================

Flow and N-1 limits are soft: each violated row gets a slack variable, priced at
``10 x`` the overload price (flows) and at ``n1_share x`` the shedding price (N-1), so
the LP always has a solution and reports the violations it could not avoid. N-1 is
cheaper than shedding on purpose: an operator does not shed load preventively for a
contingency that has not happened. Both kinds of rows are generated lazily: solve,
add the rows the solution violates, re-solve (HiGHS warm-starts from the last basis)
until none is violated. The last LP relaxes the full one and meets all its rows, so it
is the full LP's optimum.

Not modelled: a unit's fixed cost ``c0`` when it runs (it would need binaries); the
reported costs are the environment's, which include it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

import gridphysics as gp
from gridrl import safety
from gridrl.env import DT_HOURS
from gridrl.opf import zero_injection_flows

_FLOW_TOL_MW = 1e-6  # a row is violated above its limit by more than this
_BRIDGE_TOL = 1e-6  # 1 - PTDF_kk below this: the loss of k splits the grid
#: The flow rows use the filter's own target (with a hair of room for float32 replay).
PLAN_MARGIN = safety.MARGIN * (1 - 1e-5)


@dataclass(frozen=True)
class Horizon:
    """The conditions of the planned steps (float64; leading axis: the steps)."""

    load_mw: np.ndarray  # (T, n_load) demand
    avail_mw: np.ndarray  # (T, n_gen) available capacity
    base_mw: np.ndarray  # (T, n_gen) the do-nothing dispatch
    branch_on: np.ndarray  # (T, n_branch) 0/1, after the step's outages
    rate_mva: np.ndarray  # (T, n_branch) continuous ratings

    @property
    def steps(self) -> int:
        return self.load_mw.shape[0]


@dataclass(frozen=True)
class Plan:
    """The outcome of :func:`plan` (arrays over the planned steps)."""

    gen_mw: np.ndarray  # (T, n_gen)
    shed_mw: np.ndarray  # (T, n_load)
    flow_mw: np.ndarray  # (T, n_branch) DC flows of the plan
    objective: float  # LP objective, $ (without the units' fixed costs)
    overload_mw: (
        float  # largest flow above PLAN_MARGIN x rating the LP could not avoid (0 within 1e-6 MW)
    )
    n1_secure: np.ndarray  # (T,) bool: every N-1 case within emergency ratings
    rows: int  # flow and N-1 rows the LP needed
    rounds: int  # LP solves
    seconds: float
    status: str = "optimal"


@dataclass
class _Topology:
    """PTDF, zero-injection flows and LODF of one set of branch statuses."""

    h: np.ndarray  # (n_branch, n_bus)
    f0: np.ndarray  # (n_branch,)
    lodf: (
        np.ndarray
    )  # (n_branch, n_branch): column k = flow change per MW on k, NaN if k cannot be lost
    isolated: np.ndarray  # (n_bus,)


@dataclass
class Planner:
    """The LP of one environment (see the module doc); topologies are cached.

    Args:
        env, params: the environment and its parameters (ratings scale, prices, ramps).
        cost_segments: chords per quadratic cost curve.
        n1: a second stage with preventive N-1 rows, on top of the N-0 optimum and
            without shedding more than it.
        n1_price_per_mwh: price of post-contingency MW above the emergency rating.
        n1_rounds: most rounds of N-1 rows (each adds, per step and line, the worst
            contingency still violated); what remains is reported in ``n1_secure``.
    """

    env: object
    params: object
    cost_segments: int = 4
    n1: bool = False
    n1_price_per_mwh: float = 1_000.0
    n1_rounds: int = 4
    _topologies: dict = field(default_factory=dict)

    def __post_init__(self):
        env, params = self.env, self.params
        net = params.network.astype(jnp.float64)
        self.net = net
        topo = net.topology
        self.topo = topo
        self.n_gen, self.n_load, self.n_bus = topo.n_gen, topo.n_load, topo.n_bus
        self.n_branch = topo.n_branch
        self.dt = DT_HOURS
        gen = net.gen
        self.renewable = np.asarray(env.renewable, bool)
        self.c1 = np.asarray(gen.cost_c1, np.float64)
        self.c2 = np.asarray(gen.cost_c2, np.float64)
        self.p_min = np.asarray(gen.p_min_mw * gen.status, np.float64)
        self.ramp = np.asarray(params.ramp_mw, np.float64)
        prices = params.reward
        self.redispatch_price = float(prices.redispatch_per_mwh)
        self.shed_price = float(prices.shed_per_mwh)
        self.overload_price = 10.0 * float(prices.overload_per_mwh)
        self.n1_price = float(self.n1_price_per_mwh)
        self.emergency = env.config.emergency_percent / 100.0
        self.max_shed = env.config.max_shed_share
        self.shunt_mw = float(np.sum(np.asarray(net.shunt.g_mw * net.shunt.status)))
        self.gen_bus = np.asarray(topo.gen_bus)
        self.load_bus = np.asarray(topo.load_bus)
        shunt = np.zeros(self.n_bus)
        np.add.at(shunt, np.asarray(topo.shunt_bus), np.asarray(net.shunt.g_mw * net.shunt.status))
        self.shunt_bus_mw = shunt

    # -- topology -----------------------------------------------------------------
    def topology(self, branch_on: np.ndarray) -> _Topology:
        key = np.asarray(branch_on > 0).tobytes()
        if key not in self._topologies:
            net = self.net.with_branches(status=jnp.asarray(branch_on > 0, jnp.float64))
            f0, isolated, _ = zero_injection_flows(net)
            # cut-off buses' columns are NaN; they carry no transfer (masked by isolated)
            h = np.nan_to_num(np.asarray(gp.ptdf(net), np.float64))
            t = self.topo
            f, to = np.asarray(t.branch_from), np.asarray(t.branch_to)
            phi = h[:, f] - h[:, to]  # flow on l per MW sent from k's from end to its to end
            denom = 1.0 - np.diag(phi)
            live = (branch_on > 0) & ~isolated[f]
            ok = live & (np.abs(denom) > _BRIDGE_TOL)
            lodf = np.where(ok[None, :], phi / np.where(ok, denom, 1.0)[None, :], np.nan)
            self._topologies[key] = _Topology(h, np.nan_to_num(f0), lodf, isolated)
        return self._topologies[key]

    # -- the LP -------------------------------------------------------------------
    def solve(self, horizon: Horizon, previous_gen: np.ndarray, previous_base: np.ndarray) -> Plan:
        """Plan ``horizon`` from a last dispatch ``previous_gen`` whose do-nothing
        dispatch was ``previous_base``."""
        import highspy

        start = time.perf_counter()
        T, G, D = horizon.steps, self.n_gen, self.n_load
        load = np.asarray(horizon.load_mw, np.float64)
        avail = np.asarray(horizon.avail_mw, np.float64)
        base = np.asarray(horizon.base_mw, np.float64)
        lo = np.minimum(self.p_min[None, :], avail)
        hi = avail
        K = self.cost_segments
        thermal = ~self.renewable
        # Variable layout per step: p (G) | seg (G*K, zero width for renewables) |
        # shed (D) | r (G). Step t's block starts at t * V.
        V = G + G * K + D + G
        o_seg, o_shed, o_r = G, G + G * K, G + G * K + D
        n_col = T * V
        cost = np.zeros(n_col)
        lower = np.zeros(n_col)
        upper = np.zeros(n_col)
        width = (hi - lo) / K  # (T, G)
        for t in range(T):
            s = t * V
            lower[s : s + G] = lo[t]
            upper[s : s + G] = hi[t]
            k = np.arange(K)
            seg_lo = lo[t][:, None] + k[None, :] * width[t][:, None]  # (G, K)
            slope = np.where(
                thermal[:, None],
                self.c1[:, None] + self.c2[:, None] * (2 * seg_lo + width[t][:, None]),
                0.0,
            )
            cost[s + o_seg : s + o_shed] = slope.ravel() * self.dt
            upper[s + o_seg : s + o_shed] = np.repeat(width[t], K)
            upper[s + o_shed : s + o_r] = self.max_shed * np.maximum(load[t], 0.0)
            cost[s + o_shed : s + o_r] = self.shed_price * self.dt
            upper[s + o_r : s + V] = np.inf
            cost[s + o_r : s + V] = self.redispatch_price * self.dt

        rows, cols, vals, rlo, rhi = [], [], [], [], []
        n_row = 0
        gi = np.arange(G)
        # Vectorised blocks (one row per unit and step).
        t_idx = np.repeat(np.arange(T), G)
        g_idx = np.tile(gi, T)
        p_col = t_idx * V + g_idx
        seg_cols = (t_idx * V + o_seg + g_idx * K)[:, None] + np.arange(K)
        r_col = t_idx * V + o_r + g_idx
        flat_base = base.ravel()
        lo_flat = lo.ravel()
        block_rows, block_cols, block_vals, block_lo, block_hi = [], [], [], [], []

        def add_block(cols_2d, vals_2d, low, high):
            nonlocal n_row
            m = cols_2d.shape[0]
            block_rows.append(np.repeat(np.arange(n_row, n_row + m), cols_2d.shape[1]))
            block_cols.append(cols_2d.ravel())
            block_vals.append(vals_2d.ravel())
            block_lo.append(np.broadcast_to(low, (m,)))
            block_hi.append(np.broadcast_to(high, (m,)))
            n_row += m

        # balance, one row per step: sum p + sum shed = demand (as the filter balances)
        steps_v = np.arange(T)[:, None] * V
        demand = load.sum(axis=1) + self.shunt_mw
        add_block(
            np.hstack([steps_v + gi, steps_v + o_shed + np.arange(D)]),
            np.ones((T, G + D)),
            demand,
            demand,
        )
        # segments: p - sum seg = lo
        add_block(
            np.column_stack([p_col, seg_cols]),
            np.column_stack([np.ones(T * G), -np.ones((T * G, K))]),
            lo_flat,
            lo_flat,
        )
        # redispatch volume: r - p >= -base, r + p >= base
        two = np.column_stack([r_col, p_col])
        add_block(two, np.column_stack([np.ones(T * G), -np.ones(T * G)]), -flat_base, np.inf)
        add_block(two, np.ones((T * G, 2)), flat_base, np.inf)
        # ramps on p and on the redispatch p - base, one ranged row per unit and step
        prev_base = np.vstack([previous_base[None, :], base[:-1]])
        d_base = (base - prev_base).ravel()
        ramp = np.tile(self.ramp, T)
        # Availability wins over the ramp down (as in the safety filter): where a unit's
        # capacity falls by more than a ramp, it may fall with it.
        prev_avail = np.vstack([np.maximum(previous_gen, avail[0])[None, :], avail[:-1]])
        drop = np.maximum(prev_avail - self.ramp[None, :] - avail, 0.0).ravel()
        # The operational action moves the proposal by at most a ramp around the last
        # redispatch; the filter then clips it into the ramp band. Where the two ranges
        # do not meet (the base moved by more than two ramps), the unit ends on the
        # band's edge nearest to the proposal: that edge is then the only choice.
        r_lo = np.minimum(np.maximum(-ramp, d_base - ramp), ramp) - drop
        r_hi = np.maximum(np.minimum(ramp, d_base + ramp), -ramp)
        first = t_idx == 0
        # t = 0: the previous dispatch is a constant
        add_block(
            p_col[first][:, None],
            np.ones((G, 1)),
            r_lo[first] + previous_gen,
            r_hi[first] + previous_gen,
        )
        later = ~first
        add_block(
            np.column_stack([p_col[later], p_col[later] - V]),
            np.column_stack([np.ones(later.sum()), -np.ones(later.sum())]),
            r_lo[later],
            r_hi[later],
        )
        rows.extend(block_rows)
        cols.extend(block_cols)
        vals.extend(block_vals)
        rlo.extend(block_lo)
        rhi.extend(block_hi)
        a = sp.csc_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
            shape=(n_row, n_col),
        )
        row_lo = np.concatenate([np.atleast_1d(np.asarray(x, np.float64)) for x in rlo])
        row_hi = np.concatenate([np.atleast_1d(np.asarray(x, np.float64)) for x in rhi])

        h = highspy.Highs()
        h.setOptionValue("output_flag", False)
        lp = highspy.HighsLp()
        lp.num_col_, lp.num_row_ = n_col, n_row
        lp.col_cost_ = cost
        lp.col_lower_ = lower
        lp.col_upper_ = np.where(np.isinf(upper), highspy.kHighsInf, upper)
        lp.row_lower_ = np.where(np.isinf(row_lo), -highspy.kHighsInf, row_lo)
        lp.row_upper_ = np.where(np.isinf(row_hi), highspy.kHighsInf, row_hi)
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_ = a.indptr.astype(np.int32)
        lp.a_matrix_.index_ = a.indices.astype(np.int32)
        lp.a_matrix_.value_ = a.data
        h.passModel(lp)

        # Flow and N-1 rows, generated lazily.
        tops = [self.topology(horizon.branch_on[t]) for t in range(T)]
        rate = np.asarray(horizon.rate_mva, np.float64)
        fixed = np.zeros((T, self.n_bus))
        for t in range(T):
            np.add.at(fixed[t], self.load_bus, -load[t])
        fixed -= self.shunt_bus_mw[None, :]
        rows = _LazyRows(self, h, tops, fixed, V, o_shed)
        rounds, secure_stage, n1_rounds = 0, False, 0
        while True:
            rounds += 1
            h.run()
            status = h.modelStatusToString(h.getModelStatus())
            if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
                return self._failed(horizon, status, rounds, rows.count, start)
            x = np.asarray(h.getSolution().col_value)
            p = x[: T * V].reshape(T, V)[:, :G]
            shed = x[: T * V].reshape(T, V)[:, o_shed:o_r]
            inj = fixed.copy()
            for t in range(T):
                np.add.at(inj[t], self.gen_bus, p[t])
                np.add.at(inj[t], self.load_bus, shed[t])
            added = 0
            flows = np.zeros((T, self.n_branch))
            f_from = np.asarray(self.topo.branch_from)
            for t in range(T):
                top = tops[t]
                f = top.h @ inj[t] + top.f0
                flows[t] = f
                on = (horizon.branch_on[t] > 0) & ~top.isolated[f_from]
                rated = on & np.isfinite(rate[t]) & (rate[t] > 0)
                limit = PLAN_MARGIN * rate[t]
                for br in np.flatnonzero(rated & (np.abs(f) > limit + _FLOW_TOL_MW)):
                    added += rows.limit(t, br, limit[br])
                if secure_stage and n1_rounds <= self.n1_rounds:
                    # per line, the worst contingency not yet in the LP
                    post = np.abs(f[:, None] + top.lodf * f[None, :])  # (l, k)
                    emerg = self.emergency * rate[t]
                    excess = np.where(np.isfinite(post), post - emerg[:, None], -np.inf)
                    excess[~rated] = -np.inf
                    np.fill_diagonal(excess, -np.inf)
                    for br, k in rows.known_n1(t):
                        excess[br, k] = -np.inf
                    k_worst = np.argmax(excess, axis=1)
                    for br in np.flatnonzero(excess[np.arange(len(f)), k_worst] > _FLOW_TOL_MW):
                        added += rows.n1(t, br, int(k_worst[br]), emerg[br])
            if not added:
                if not self.n1 or secure_stage:
                    break
                # Second stage: N-1 on top of the N-0 optimum, without shedding more than
                # it (no preventive shedding for a contingency that has not happened).
                secure_stage = True
                cols = np.flatnonzero(
                    np.tile(np.arange(V) >= o_shed, T) & np.tile(np.arange(V) < o_r, T)
                )
                h.changeColsBounds(
                    len(cols), cols.astype(np.int32), np.zeros(len(cols)), x[cols] + 1e-9
                )
                continue
            if secure_stage:
                n1_rounds += 1
            rows.flush()

        gen_mw = p + 0.0
        secure = np.ones(T, bool)
        worst = 0.0
        for t in range(T):
            secure[t] = n1_secure_flows(
                flows[t], tops[t].lodf, rate[t] * self.emergency, horizon.branch_on[t] > 0
            )
            on = horizon.branch_on[t] > 0
            excess = np.abs(flows[t]) - PLAN_MARGIN * rate[t]
            worst = max(worst, float(np.max(np.where(on & np.isfinite(excess), excess, 0.0))))
        return Plan(
            gen_mw=gen_mw,
            shed_mw=shed + 0.0,
            flow_mw=flows,
            objective=float(h.getInfo().objective_function_value),
            overload_mw=worst if worst > _FLOW_TOL_MW else 0.0,
            n1_secure=secure,
            rows=rows.count,
            rounds=rounds,
            seconds=time.perf_counter() - start,
            status=status.lower(),
        )

    def _failed(self, horizon, status, rounds, rows, start) -> Plan:
        T = horizon.steps
        return Plan(
            gen_mw=np.full((T, self.n_gen), np.nan),
            shed_mw=np.full((T, self.n_load), np.nan),
            flow_mw=np.full((T, self.n_branch), np.nan),
            objective=float("nan"),
            overload_mw=float("nan"),
            n1_secure=np.zeros(T, bool),
            rows=rows,
            rounds=rounds,
            seconds=time.perf_counter() - start,
            status=status.lower(),
        )


class _LazyRows:
    """The rows :meth:`Planner.solve` adds as solutions violate them.

    Each monitored (step, branch) gets a flow variable ``f`` and one dense row
    ``f - H_l inj = const``; its limit and its N-1 rows are then sparse:
    ``|f_l| <= limit + u`` and ``|f_l + LODF_lk f_k| <= emergency + v`` with priced
    slacks ``u, v >= 0``."""

    def __init__(self, planner, h, tops, fixed, V, o_shed):
        self.p, self.h, self.tops, self.fixed, self.V, self.o_shed = (
            planner,
            h,
            tops,
            fixed,
            V,
            o_shed,
        )
        self.flow_col: dict = {}
        self.n1_pairs: dict = {}
        self.count = 0
        self._cols = []  # (cost, lower, upper)
        self._rows = []  # (cols, vals, low, high)

    def _new_col(self, cost, lower, upper) -> int:
        col = self.h.getNumCol() + len(self._cols)
        self._cols.append((cost, lower, upper))
        return col

    def flow(self, t, br) -> int:
        """The flow variable of branch ``br`` at step ``t`` (its defining row once)."""
        import highspy

        if (t, br) not in self.flow_col:
            top, pl, V = self.tops[t], self.p, self.V
            coef = top.h[br]
            const = top.f0[br] + coef @ self.fixed[t]
            var = np.r_[t * V + np.arange(pl.n_gen), t * V + self.o_shed + np.arange(pl.n_load)]
            val = np.r_[coef[pl.gen_bus], coef[pl.load_bus]]
            keep = val != 0
            col = self._new_col(0.0, -highspy.kHighsInf, highspy.kHighsInf)
            self._rows.append((np.r_[col, var[keep]], np.r_[1.0, -val[keep]], const, const))
            self.flow_col[(t, br)] = col
        return self.flow_col[(t, br)]

    def _soft(self, cols, vals, limit, price) -> None:
        import highspy

        slack = self._new_col(price * self.p.dt, 0.0, highspy.kHighsInf)
        inf = highspy.kHighsInf
        self._rows.append((np.r_[cols, slack], np.r_[vals, -1.0], -inf, limit))
        self._rows.append((np.r_[cols, slack], np.r_[vals, 1.0], -limit, inf))
        self.count += 1

    def limit(self, t, br, limit) -> int:
        key = (t, br, -1)
        if key in self.n1_pairs:
            return 0
        self.n1_pairs[key] = True
        self._soft([self.flow(t, br)], [1.0], limit, self.p.overload_price)
        return 1

    def known_n1(self, t):
        return [(br, k) for (tt, br, k) in self.n1_pairs if tt == t and k >= 0]

    def n1(self, t, br, k, limit) -> int:
        key = (t, br, k)
        if key in self.n1_pairs:
            return 0
        self.n1_pairs[key] = True
        lodf = float(self.tops[t].lodf[br, k])
        self._soft([self.flow(t, br), self.flow(t, k)], [1.0, lodf], limit, self.p.n1_price)
        return 1

    def flush(self) -> None:
        """Pass the new columns and rows to HiGHS (its basis is kept: a warm start)."""
        if self._cols:
            cost, lower, upper = (np.asarray(v, np.float64) for v in zip(*self._cols, strict=True))
            n0 = self.h.getNumCol()
            m = len(cost)
            self.h.addVars(m, lower, upper)
            self.h.changeColsCost(m, np.arange(n0, n0 + m, dtype=np.int32), cost)
        if self._rows:
            starts = np.cumsum([0] + [len(r[0]) for r in self._rows[:-1]]).astype(np.int32)
            index = np.concatenate([r[0] for r in self._rows]).astype(np.int32)
            value = np.concatenate([r[1] for r in self._rows]).astype(np.float64)
            low = np.array([r[2] for r in self._rows], np.float64)
            high = np.array([r[3] for r in self._rows], np.float64)
            self.h.addRows(len(self._rows), low, high, len(index), starts, index, value)
        self._cols, self._rows = [], []


def n1_secure_flows(flow, lodf, emergency_mva, branch_on) -> bool:
    """Whether the loss of any in-service branch that splits nothing leaves every other
    rated in-service branch within ``emergency_mva`` (post-contingency DC flows
    ``f_l + LODF_lk f_k``; ``lodf`` columns of branches that cannot be lost are NaN)."""
    flow = np.asarray(flow)
    post = flow[:, None] + lodf * flow[None, :]
    rated = (np.asarray(branch_on) > 0) & np.isfinite(emergency_mva)
    bad = (
        rated[:, None] & np.isfinite(post) & (np.abs(post) > emergency_mva[:, None] + _FLOW_TOL_MW)
    )
    np.fill_diagonal(bad, False)
    return not bad.any()


_PLANNERS: dict = {}


def planner_for(env, params) -> Planner:
    """A :class:`Planner` of ``(env, params)`` with the default options, kept (with its
    topology cache) while both live."""
    key = (id(env), id(params))
    held = _PLANNERS.get(key)
    if held is None or held.env is not env or held.params is not params:
        if len(_PLANNERS) > 8:
            _PLANNERS.clear()
        held = _PLANNERS[key] = Planner(env, params)
    return held


# -- horizons -----------------------------------------------------------------------
def _advance(state, x):
    """The exogenous part of the next state (the grid as the draws leave it)."""
    import dataclasses

    return dataclasses.replace(
        state, t=x.t, noise=x.noise, wind=x.wind, branch_on=x.branch_on, repair=x.repair
    )


def _as_horizon(xs) -> Horizon:
    f = lambda a: np.asarray(a, np.float64)  # noqa: E731
    return Horizon(
        load_mw=f(xs.load_mw),
        avail_mw=f(xs.avail_mw),
        base_mw=f(xs.base_mw),
        branch_on=f(xs.branch_on),
        rate_mva=f(xs.rate_mva),
    )


def day_horizon(env, params, day_key, state, steps: int | None = None) -> Horizon:
    """The conditions of the day that starts at ``state``, as the environment draws
    them with the scenario keys of :func:`gridrl.baselines.scenario_key` (the days of
    :func:`gridrl.baselines.day_records`), assuming no line is tripped by protection."""

    steps = env.config.episode_steps if steps is None else steps
    fn = _day_fn(env, steps)
    return _as_horizon(fn(day_key, state, params))


_DAY_FNS: dict = {}


def _day_fn(env, steps):
    from gridrl.baselines import scenario_key

    key = (id(env), steps)
    if key not in _DAY_FNS:

        def run(day_key, state, params):
            def body(state, i):
                x = env.exogenous(scenario_key(day_key, i), state, params)
                return _advance(state, x), x

            return jax.lax.scan(body, state, jnp.arange(steps))[1]

        _DAY_FNS[key] = (env, jax.jit(run))
    return _DAY_FNS[key][1]


def forecast_horizon(env, params, state, steps: int) -> Horizon:
    """A forecast of the next ``steps`` steps made at ``state``, without foresight: the
    day's load and solar profiles are known, the current load and wind deviations
    persist, and the grid stays as it is now (no outage or repair foreseen)."""
    key = (id(env), "forecast", steps)
    if key not in _DAY_FNS:

        def run(state, params):
            settings = params.levels.at(params.level)
            net = params.network

            def one(h):
                t = state.t + h
                load = env.demand(t, state.day, state.draw, state.noise, settings, params)
                avail = env._available(t, state.draw, state.wind, settings, params, state.day)
                return (
                    load,
                    avail,
                    env._base_dispatch(load, avail, params, env.planned(t, state.day, params)),
                    state.branch_on,
                    net.branch.rate_a_mva * settings.rating_scale,
                )

            return jax.vmap(one)(jnp.arange(1, steps + 1))

        _DAY_FNS[key] = (env, jax.jit(run))
    load, avail, base, on, rate = _DAY_FNS[key][1](state, params)
    f = lambda a: np.asarray(a, np.float64)  # noqa: E731
    return Horizon(f(load), f(avail), f(base), f(on), f(rate))


# -- policies -----------------------------------------------------------------------
def _follow(env, plan: Plan, horizon: Horizon, j: int, state, params):
    """The actions that carry out step ``j`` of ``plan``."""
    from gridrl.baselines import actions_for_dispatch

    target = plan.gen_mw[j] - horizon.base_mw[j]
    cap = env.config.max_shed_share * horizon.load_mw[j]
    shed = np.where(cap > 0, plan.shed_mw[j] / np.maximum(cap, 1e-12), 0.0)
    return actions_for_dispatch(
        env,
        jnp.asarray(target, env.dtype),
        state,
        params,
        jnp.asarray(np.clip(shed, 0.0, 1.0), env.dtype),
    )


def _follow_jnp(env, gen_mw, shed_mw, load_mw, base_mw, j, state, params):
    """:func:`_follow`, traceable: the actions that carry out step ``j`` of a plan
    given as arrays over its steps."""
    from gridrl.baselines import actions_for_dispatch

    j = jnp.clip(j, 0, gen_mw.shape[0] - 1)
    cap = env.config.max_shed_share * load_mw[j]
    shed = jnp.where(cap > 0, shed_mw[j] / jnp.maximum(cap, 1e-12), 0.0)
    return actions_for_dispatch(
        env, gen_mw[j] - base_mw[j], state, params, jnp.clip(shed, 0.0, 1.0)
    )


class DayAheadPolicy:
    """The upper reference: the whole day planned at its start with perfect foresight
    (:func:`day_horizon`), then replayed step by step.

    Two ways to run it, with the same days: :meth:`start_day` then calls per step
    (outside ``jit``), or :meth:`plan_days` for all days first and :meth:`act_planned`
    inside :func:`gridrl.baselines.day_records`' jitted ``vmap`` over days. A day whose
    LP fails (it should not: its rows are soft) is replayed as do-nothing."""

    def __init__(self, env, **planner_options):
        self.env = env
        self.options = planner_options
        self._planner = None
        self.plans: list[Plan] = []

    def planner(self, params) -> Planner:
        if self._planner is None or self._planner.params is not params:
            self._planner = Planner(self.env, params, **self.options)
        return self._planner

    def _plan(self, day_key, state, params) -> tuple[Horizon, Plan]:
        horizon = day_horizon(self.env, params, day_key, state)
        prev = np.asarray(state.gen_mw, np.float64)
        plan = self.planner(params).solve(
            horizon, prev, prev - np.asarray(state.offset_mw, np.float64)
        )
        self.plans.append(plan)
        return horizon, plan

    def start_day(self, day_key, state, params) -> None:
        self.horizon, self.plan = self._plan(day_key, state, params)

    def __call__(self, key, obs, state, params):
        from gridrl.baselines import do_nothing

        j = int(state.t)
        if self.plan.status != "optimal" or j >= self.horizon.steps:
            return do_nothing(self.env)(key, obs, state, params)
        return _follow(self.env, self.plan, self.horizon, j, state, params)

    def plan_days(self, day_keys, states, params):
        """Plan every day (``states``: the days' first states, a leading days axis):
        arrays ``(gen, shed, load, base)`` of shape (days, steps, ...) for
        :meth:`act_planned`; a failed day plans the do-nothing dispatch."""
        out = []
        for d, key in enumerate(day_keys):
            state = jax.tree.map(lambda a, d=d: a[d], states)
            horizon, plan = self._plan(key, state, params)
            gen = plan.gen_mw if plan.status == "optimal" else horizon.base_mw
            shed = plan.shed_mw if plan.status == "optimal" else 0 * horizon.load_mw
            out.append((gen, shed, horizon.load_mw, horizon.base_mw))
        dtype = self.env.dtype
        return tuple(jnp.asarray(np.stack(a), dtype) for a in zip(*out, strict=True))

    def act_planned(self, plan, key, obs, state, params):
        """The actions of step ``state.t`` of one day's :meth:`plan_days` arrays."""
        gen, shed, load, base = plan
        return _follow_jnp(self.env, gen, shed, load, base, state.t, state, params)


class RollingHorizonPolicy:
    """The MPC expert: every ``replan`` steps, plan the next ``horizon`` steps on
    :func:`forecast_horizon` and carry out the first ones (outside ``jit``)."""

    def __init__(self, env, horizon: int = 8, replan: int = 2, **planner_options):
        if not 1 <= replan <= horizon:
            raise ValueError(f"need 1 <= replan <= horizon, got replan={replan}, horizon={horizon}")
        self.env, self.steps, self.replan = env, int(horizon), int(replan)
        self.options = planner_options
        self._planner = None
        self.plan = None

    def start_day(self, day_key, state, params) -> None:
        self.plan = None

    def __call__(self, key, obs, state, params):
        from gridrl.baselines import do_nothing

        if self._planner is None or self._planner.params is not params:
            self._planner = Planner(self.env, params, **self.options)
        i = int(state.t)
        if self.plan is None or i - self.start >= self.replan:
            self.forecast = forecast_horizon(self.env, params, state, self.steps)
            prev = np.asarray(state.gen_mw, np.float64)
            self.plan = self._planner.solve(
                self.forecast, prev, prev - np.asarray(state.offset_mw, np.float64)
            )
            self.start = i
        if self.plan.status != "optimal":
            return do_nothing(self.env)(key, obs, state, params)
        return _follow(self.env, self.plan, self.forecast, i - self.start, state, params)
