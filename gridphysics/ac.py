"""AC power flow: Newton-Raphson and fast-decoupled (XB/BX), batched and differentiable.

Formulation. Every bus has two unknowns, the angle and the magnitude of its voltage,
and two equations. Which equations apply is a *role* decided at run time from
arrays (so it can differ per scenario of a batch, change with generator status and
change when reactive limits are enforced) while the sparsity pattern stays static:

* a PQ bus balances active and reactive power;
* a PV bus balances active power and holds its generator's voltage setpoint;
* a reference bus holds its angle and voltage;
* an isolated bus (no path to a reference bus) is pinned at 1 p.u., 0 rad and
  reported as NaN.

Fixed quantities are equations ``x - x_set = 0``, i.e. identity rows of the Jacobian.

Newton-Raphson factorizes the Jacobian every iteration (KLU on CPU). The
fast-decoupled variants solve with ``B'`` and ``B''`` (MATPOWER's ``makeB``), whose
factorizations are shared by every iteration and, under ``vmap`` over injections,
by every scenario of the batch.

Gradients. The converged state ``x*`` satisfies ``F(x*, p) = 0``; its derivative is
``dx = -J^-1 dF/dp dp`` (implicit function theorem), one linear solve with the
Jacobian at the solution, never a derivative through the iterations. Non-converged
scenarios give NaN values and zero gradients.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_batching import custom_vmap

from gridphysics import admittance, batching, dc, islands, linalg
from gridphysics.network import PV, REF, Network, Topology
from gridphysics.results import PowerFlowResult, loading_percent, slack_share

Algorithm = Literal["nr", "fdxb", "fdbx"]
Init = Literal["auto", "case", "dc", "flat"]

_EPS = float(np.finfo(np.float64).eps)


@dataclass(frozen=True)
class ACSettings:
    """AC solver settings (see :class:`gridphysics.SolveOptions`, which carries them)."""

    algorithm: Algorithm = "nr"
    tolerance: float | None = None
    max_iterations: int | None = None
    init: Init = "auto"
    fallback: bool = True
    enforce_q_lims: bool = False
    linear_solver: linalg.Backend | None = None

    def tolerance_for(self, dtype) -> float:
        """The mismatch tolerance: as given, else 1e-8 p.u. in float64 (MATPOWER's and
        pandapower's default) and 1e-4 p.u. in float32, whose rounding alone leaves
        mismatches of a few 1e-5 p.u. on a 100-bus grid."""
        if self.tolerance is not None:
            return self.tolerance
        return 1e-8 if jnp.dtype(dtype) == jnp.float64 else 1e-4

    @property
    def iterations(self) -> int:
        """Iteration limit of one attempt (one start)."""
        if self.max_iterations is not None:
            return self.max_iterations
        return 10 if self.algorithm == "nr" else 30


@dataclass(frozen=True, eq=False)
class ACStructure:
    """Static index structure of one topology's AC problem (numpy, built once)."""

    ybus: admittance.YbusStructure
    y_rows: np.ndarray  # (nnz_y,) row (bus) of each Ybus entry
    y_cols: np.ndarray  # (nnz_y,) column (bus) of each Ybus entry
    y_is_diag: np.ndarray  # (nnz_y,) bool
    jacobian: linalg.SparsePattern  # (2n, 2n): blocks [P-theta, P-vm; Q-theta, Q-vm]
    is_ref: np.ndarray  # (n_bus,)
    is_pv_type: np.ndarray  # (n_bus,)
    bus_gens: np.ndarray  # (n_bus, m) generators at each bus, n_gen pads
    gen_peers: np.ndarray  # (n_gen, m) generators at each generator's bus, n_gen pads


@functools.lru_cache(maxsize=128)
def ac_structure(topology: Topology) -> ACStructure:
    ys = admittance.ybus_structure(topology)
    n = topology.n_bus
    r, c = ys.pattern.rows.astype(np.int64), ys.pattern.cols.astype(np.int64)
    jac = linalg.SparsePattern(
        n=2 * n,
        rows=np.concatenate([r, r, r + n, r + n]).astype(np.int32),
        cols=np.concatenate([c, c + n, c, c + n]).astype(np.int32),
    )
    bus_gens = dc._padded_groups(topology.gen_bus, n, pad=topology.n_gen)
    return ACStructure(
        ybus=ys,
        y_rows=r,
        y_cols=c,
        y_is_diag=r == c,
        jacobian=jac,
        is_ref=topology.bus_type == REF,
        is_pv_type=topology.bus_type == PV,
        bus_gens=bus_gens,
        gen_peers=bus_gens[topology.gen_bus],
    )


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Roles:
    """Which equations hold at each bus, and which branches carry power (no gradients).

    Attributes:
        live: (n_branch,) branch in service and connected to a reference bus.
        reach: (n_bus,) bus connected to a reference bus.
        p_active: (n_bus,) the active-power balance applies (not reference, not isolated).
        q_active: (n_bus,) the reactive-power balance applies (PQ buses).
        at_q_max, at_q_min: (n_gen,) generators held at a reactive limit.
    """

    live: jax.Array
    reach: jax.Array
    p_active: jax.Array
    q_active: jax.Array
    at_q_max: jax.Array
    at_q_min: jax.Array


def _gathered(values: jax.Array, index: np.ndarray, fill: float | bool = 0) -> jax.Array:
    """``values[index]`` where ``index == len(values)`` reads ``fill`` (padded groups)."""
    return jnp.append(values, jnp.asarray(fill, values.dtype))[index]


def initial_roles(network: Network, s: ACStructure) -> Roles:
    topo = network.topology
    br = network.branch
    active = br.status > 0
    reach = islands.reachable(topo, active)
    live = active & reach[topo.branch_from] & jnp.asarray(islands.candidate_branches(topo))
    no = jnp.zeros(topo.n_gen, bool)
    return _roles(network, s, live, reach, no, no, jnp.zeros(topo.n_bus, bool))


def _roles(network, s, live, reach, at_max, at_min, forced_pq) -> Roles:
    gen_on = (network.gen.status > 0) & ~at_max & ~at_min
    has_gen = jnp.any(_gathered(gen_on, s.bus_gens, False), axis=1)
    is_ref = jnp.asarray(s.is_ref)
    pv = jnp.asarray(s.is_pv_type) & has_gen & reach & ~forced_pq
    return Roles(
        live=live,
        reach=reach,
        p_active=reach & ~is_ref,
        q_active=reach & ~is_ref & ~pv,
        at_q_max=at_max,
        at_q_min=at_min,
    )


def _setpoints(network: Network, s: ACStructure, roles: Roles) -> tuple[jax.Array, jax.Array]:
    """Angle and magnitude each fixed equation holds (reference: case angle and
    generator voltage; PV: generator voltage; isolated: 0 rad, 1 p.u.)."""
    gen = network.gen
    on = (gen.status > 0) & ~roles.at_q_max & ~roles.at_q_min
    on_at_bus = _gathered(on, s.bus_gens, False)
    first = jnp.argmax(on_at_bus, axis=1)
    first_gen = jnp.take_along_axis(jnp.asarray(s.bus_gens), first[:, None], axis=1)[:, 0]
    vm_gen = _gathered(gen.vm_pu, first_gen, 1.0)
    vm_set = jnp.where(jnp.any(on_at_bus, axis=1), vm_gen, network.bus.vm_pu)
    vm_set = jnp.where(roles.reach, vm_set, 1.0)
    va_set = jnp.where(jnp.asarray(s.is_ref) & roles.reach, network.bus.va_rad, 0.0)
    return va_set, vm_set


def _specified(network: Network, roles: Roles) -> jax.Array:
    """(n_bus,) scheduled complex injection, p.u.: generators minus loads, with
    generators held at a reactive limit injecting that limit."""
    topo = network.topology
    gen, load = network.gen, network.load
    limited = roles.at_q_max | roles.at_q_min
    q_gen = jnp.where(
        roles.at_q_max, gen.q_max_mvar, jnp.where(roles.at_q_min, gen.q_min_mvar, gen.q_mvar)
    )
    q_gen = jnp.where(limited, q_gen, q_gen * gen.status)
    s_gen = gen.p_mw * gen.status + 1j * q_gen
    s_load = (load.p_mw + 1j * load.q_mvar) * load.status
    n = topo.n_bus
    s_bus = jax.ops.segment_sum(s_gen, jnp.asarray(topo.gen_bus), n) - jax.ops.segment_sum(
        s_load, jnp.asarray(topo.load_bus), n
    )
    return s_bus / topo.base_mva


def _voltage(x: jax.Array, n: int) -> jax.Array:
    return x[n:] * jnp.exp(1j * x[:n])


def _physical(x: jax.Array, n: int, reach: jax.Array) -> jax.Array:
    """A state the iterations may stop at: finite, and a positive voltage magnitude on
    every energized bus. A negative magnitude also solves the power-flow equations (it
    is the same phasor turned by 180 degrees) but is no operating point: a case
    stored with VM = -1.036 "converged" to it, 140 MW off (hostile rerun 8), so such an
    attempt gives way to the next start."""
    return jnp.all(jnp.isfinite(x)) & jnp.all(jnp.where(reach, x[n:] > 0, True))


class _Model:
    """Everything the iterations need that does not change between them."""

    def __init__(self, network: Network, roles: Roles):
        self.network = network
        self.roles = roles
        self.s = ac_structure(network.topology)
        self.n = network.n_bus
        self.y = admittance.branch_admittance(network, roles.live)
        self.y_shunt = admittance.shunt_admittance(network) * roles.reach
        self.y_values = admittance.ybus_values(network, self.y, self.y_shunt)
        self.s_spec = _specified(network, roles)
        self.va_set, self.vm_set = _setpoints(network, self.s, roles)

    def current(self, v: jax.Array) -> jax.Array:
        s = self.s
        # The coalesced pattern is sorted by row: a sorted segment sum is much faster.
        return jax.ops.segment_sum(
            self.y_values * v[s.y_cols], jnp.asarray(s.y_rows), self.n, indices_are_sorted=True
        )

    def mismatch(self, v: jax.Array) -> jax.Array:
        """(n_bus,) complex ``S_calc - S_spec`` (p.u.)."""
        return v * jnp.conj(self.current(v)) - self.s_spec

    def residual(self, x: jax.Array) -> jax.Array:
        """F(x): (2 n_bus,) mismatches of the active equations, setpoint errors elsewhere."""
        n, r = self.n, self.roles
        mis = self.mismatch(_voltage(x, n))
        return jnp.concatenate(
            [
                jnp.where(r.p_active, mis.real, x[:n] - self.va_set),
                jnp.where(r.q_active, mis.imag, x[n:] - self.vm_set),
            ]
        )

    def error(self, x: jax.Array) -> jax.Array:
        """Largest power mismatch over the active equations (p.u.)."""
        n, r = self.n, self.roles
        mis = self.mismatch(_voltage(x, n))
        worst = jnp.maximum(
            jnp.max(jnp.where(r.p_active, jnp.abs(mis.real), 0.0)),
            jnp.max(jnp.where(r.q_active, jnp.abs(mis.imag), 0.0)),
        )
        return jnp.where(jnp.all(jnp.isfinite(x)), worst, jnp.inf)

    def jacobian(self, x: jax.Array) -> jax.Array:
        """Values of dF/dx on :attr:`ACStructure.jacobian`'s pattern."""
        s, n, r = self.s, self.n, self.roles
        vm = x[n:]
        v = _voltage(x, n)
        current = self.current(v)
        vi, yv_k = v[s.y_rows], self.y_values * v[s.y_cols]
        diag = jnp.asarray(s.y_is_diag)
        d_theta = -1j * vi * jnp.conj(yv_k)
        d_vm = vi * jnp.conj(yv_k / vm[s.y_cols])
        own = jnp.conj(current)[s.y_rows]
        d_theta = d_theta + jnp.where(diag, 1j * vi * own, 0.0)
        d_vm = d_vm + jnp.where(diag, own * vi / vm[s.y_rows], 0.0)
        p_on = r.p_active[s.y_rows]
        q_on = r.q_active[s.y_rows]
        one = jnp.ones_like(vm[s.y_rows])
        return jnp.concatenate(
            [
                jnp.where(p_on, d_theta.real, jnp.where(diag, one, 0.0)),
                jnp.where(p_on, d_vm.real, 0.0),
                jnp.where(q_on, d_theta.imag, 0.0),
                jnp.where(q_on, d_vm.imag, jnp.where(diag, one, 0.0)),
            ]
        )

    def fast_decoupled_matrices(self, algorithm: Algorithm) -> tuple[jax.Array, jax.Array]:
        """Values of B' and B'' (MATPOWER's makeB) on the Ybus pattern, with identity
        rows where the angle (B') or the magnitude (B'') is fixed."""
        net, r, s = self.network, self.roles, self.s
        br = net.branch
        zero = jnp.zeros_like(br.r_pu)
        # B': no charging, no shunts, nominal taps (and no resistance for XB).
        b_prime = br.replace(
            b_pu=zero,
            g_pu=zero,
            tap=jnp.ones_like(br.tap),
            r_pu=zero if algorithm == "fdxb" else br.r_pu,
        )
        y1 = admittance.branch_admittance(net.replace(branch=b_prime), r.live)
        bp = -admittance.ybus_values(net, y1, jnp.zeros_like(self.y_shunt)).imag
        # B'': no phase shifters (and no resistance for BX).
        b_second = br.replace(shift_rad=zero, r_pu=zero if algorithm == "fdbx" else br.r_pu)
        y2 = admittance.branch_admittance(net.replace(branch=b_second), r.live)
        bpp = -admittance.ybus_values(net, y2, self.y_shunt).imag
        diag = jnp.asarray(s.y_is_diag)
        p_on, q_on = r.p_active[s.y_rows], r.q_active[s.y_rows]
        bp = jnp.where(p_on, bp, jnp.where(diag, 1.0, 0.0))
        bpp = jnp.where(q_on, bpp, jnp.where(diag, 1.0, 0.0))
        return bp, bpp


#: The AC starts, in the order an automatic start tries them; a result's ``start`` is
#: an index into this tuple (-1: none converged).
STARTS = ("case", "dc", "flat")
_CASE, _DC, _FLAT = range(len(STARTS))


def attempt_order(settings: ACSettings) -> tuple[int, ...]:
    """Indices into :data:`STARTS`, first attempt first: ``init="auto"`` and ``"case"``
    try case, DC, flat (``"auto"`` skips the case unless it has a voltage profile of
    its own, :func:`has_stored_voltages`); ``"dc"`` tries DC, case, flat; ``"flat"``
    flat, DC, case. With ``fallback=False`` only the first start is tried (for
    ``"auto"``: the case's or DC)."""
    if settings.init == "auto":
        return (_CASE, _DC, _FLAT) if settings.fallback else (_CASE, _DC)
    order = {
        "case": (_CASE, _DC, _FLAT),
        "dc": (_DC, _CASE, _FLAT),
        "flat": (_FLAT, _DC, _CASE),
    }[settings.init]
    return order if settings.fallback else order[:1]


def has_stored_voltages(network: Network, roles: Roles) -> jax.Array:
    """() bool: the case carries a solved voltage profile of its own, as MATPOWER case
    files do: finite voltages and a non-zero angle at some bus whose angle is free.
    Magnitudes alone do not count: pandapower's internal case, for one, keeps stored
    magnitudes with flat angles, a poor start on large grids (flat angles are the flat
    start's)."""
    bus = network.bus
    finite = jnp.all(jnp.isfinite(bus.va_rad)) & jnp.all(jnp.isfinite(bus.vm_pu))
    return finite & jnp.any(roles.p_active & (bus.va_rad != 0))


def _initial_state(network: Network, model: _Model, init: int) -> jax.Array:
    n, r = model.n, model.roles
    if init == _DC:
        va = jnp.nan_to_num(dc.solve_dc(network).va_rad)
        vm = jnp.ones(n, network.dtype)
    elif init == _FLAT:
        va = jnp.zeros(n, network.dtype)
        vm = jnp.ones(n, network.dtype)
    else:
        va, vm = network.bus.va_rad, network.bus.vm_pu
    va = jnp.where(r.p_active, va, model.va_set)
    vm = jnp.where(r.q_active, vm, model.vm_set)
    return jnp.concatenate([va, vm])


def _usable(network: Network, roles: Roles, settings: ACSettings) -> jax.Array:
    """(k,) bool: which of the attempts of :func:`attempt_order` may run."""
    order = attempt_order(settings)
    stored = has_stored_voltages(network, roles)
    usable = []
    for k, i in enumerate(order):
        if k == 0:
            # "auto" starts from the case only when it has a profile of its own
            ok = stored if settings.init == "auto" else jnp.asarray(True)
        elif settings.init == "auto" and not settings.fallback:
            ok = ~stored  # DC, the one start when the case has no profile
        else:
            # a fallback to the case's voltages is worth it only with a profile (a flat
            # one is the flat start again)
            ok = stored if i == _CASE else jnp.asarray(True)
        usable.append(ok)
    return jnp.stack(usable)


def _iterate(model: _Model, settings: ACSettings, first, step, usable, start_at):
    """Iterations from the first usable start; an attempt that reaches the iteration
    limit or a non-finite state gives way to the next usable start.

    ``first(x) -> (aux, err)`` prepares an attempt, ``step(x, aux) -> (x, aux, err)``
    is one iteration (``err``: largest mismatch, inf when not finite). ``usable``: (k,)
    bool per attempt; ``start_at(j)``: the initial state of attempt j (traced j).
    Returns ``(x, iterations, converged, attempt)``: iterations summed over the
    attempts, the index of the attempt that converged (k if none). With one attempt
    the loop has no switching at all."""
    tol = settings.tolerance_for(model.network.dtype)
    k = usable.shape[0]
    index = jnp.arange(k)
    first_raw, step_raw = first, step

    def stop_only_if_physical(x, err):
        # a solution with a negative magnitude is no solution: that attempt fails at
        # once (an iterate may pass through one on its way, so only the stop is checked)
        return jnp.where((err < tol) & ~_physical(x, model.n, model.roles.reach), jnp.inf, err)

    def first(x):
        aux, err = first_raw(x)
        return aux, stop_only_if_physical(x, err)

    def step(x, aux):
        x, aux, err = step_raw(x, aux)
        return x, aux, stop_only_if_physical(x, err)

    def next_usable(i):
        return jnp.min(jnp.where(usable & (index > i), index, k))

    i0 = next_usable(-1) if k > 1 else jnp.where(usable[0], 0, 1)
    x0 = start_at(jnp.minimum(i0, k - 1))
    aux0, err0 = first(x0)

    def cond(state):
        _, _, err, it_attempt, _, i = state
        more = (i < k) & ~(err < tol)
        return more if k > 1 else more & (it_attempt < settings.iterations) & jnp.isfinite(err)

    def body(state):
        x, aux, _, it_attempt, it_total, i = state
        x, aux, err = step(x, aux)
        it_attempt = it_attempt + 1
        if k == 1:
            return x, aux, err, it_attempt, it_total + 1, i
        failed = ~(err < tol) & ((it_attempt >= settings.iterations) | ~jnp.isfinite(err))

        def switch(_):
            j = next_usable(i)
            x_new = start_at(jnp.minimum(j, k - 1))
            aux_new, err_new = first(x_new)
            # when no start is left, keep the last attempt's state (how far it got)
            last = j >= k
            pick = lambda a, b: jax.tree.map(lambda p, q: jnp.where(last, p, q), a, b)  # noqa: E731
            x_new, aux_new = pick((x, aux), (x_new, aux_new))
            err_new = jnp.where(last, jnp.inf, err_new)
            return x_new, aux_new, err_new, jnp.int32(0), j

        def stay(_):
            return x, aux, err, it_attempt, i

        x, aux, err, it_attempt, i = jax.lax.cond(failed, switch, stay, None)
        return x, aux, err, it_attempt, it_total + 1, i

    state = (x0, aux0, err0, jnp.int32(0), jnp.int32(0), i0)
    x, _, err, _, it, i = jax.lax.while_loop(cond, body, state)
    ok = (err < tol) & (i < k)
    return x, it, ok, jnp.where(ok, i, k)


def _newton(model: _Model, settings: ACSettings, usable, start_at):
    pattern = model.s.jacobian

    def first(x):
        return (), model.error(x)

    def step(x, aux):
        dx = linalg.solve(pattern, model.jacobian(x), -model.residual(x), settings.linear_solver)
        x = x + dx
        return x, aux, model.error(x)

    return _iterate(model, settings, first, step, usable, start_at)


def _fast_decoupled(model: _Model, settings: ACSettings, usable, start_at):
    pattern = model.s.ybus.pattern
    n, r = model.n, model.roles
    bp, bpp = model.fast_decoupled_matrices(settings.algorithm)
    # Factorized once, reused by every iteration (and, under vmap over injections, by
    # every scenario: the matrices depend only on the branches and the bus roles).
    b_prime = linalg.factorize(pattern, bp, settings.linear_solver)
    b_second = linalg.factorize(pattern, bpp, settings.linear_solver)

    def mismatch(x):
        return model.mismatch(_voltage(x, n))

    def worst(x, mis):
        err = jnp.maximum(
            jnp.max(jnp.where(r.p_active, jnp.abs(mis.real), 0.0)),
            jnp.max(jnp.where(r.q_active, jnp.abs(mis.imag), 0.0)),
        )
        return jnp.where(jnp.all(jnp.isfinite(x)), err, jnp.inf)

    def first(x):
        mis = mismatch(x)
        return mis, worst(x, mis)

    def step(x, mis):
        # One mismatch evaluation per half iteration; the second one also decides
        # convergence and starts the next iteration.
        p_rhs = jnp.where(r.p_active, mis.real / x[n:], 0.0)
        x = x.at[:n].add(b_prime.solve(-p_rhs))
        mis = mismatch(x)
        q_rhs = jnp.where(r.q_active, mis.imag / x[n:], 0.0)
        x = x.at[n:].add(b_second.solve(-q_rhs))
        mis = mismatch(x)
        return x, mis, worst(x, mis)

    return _iterate(model, settings, first, step, usable, start_at)


def _inner(model: _Model, settings: ACSettings, usable, start_at):
    if settings.algorithm == "nr":
        return _newton(model, settings, usable, start_at)
    return _fast_decoupled(model, settings, usable, start_at)


def _warm(network: Network, roles: Roles, x: jax.Array, settings: ACSettings):
    """One attempt from ``x``: ``(x, iterations, converged)``."""
    x, it, ok, _ = _inner(_Model(network, roles), settings, jnp.ones(1, bool), lambda _: x)
    return x, it, ok


#: Under ``vmap`` every scenario first runs its first start alone (the other starts
#: are not even computed); the ones that fail retry the others gathered into buckets
#: of 1/RETRY_SHARE of the batch, one bucket after the other. A converged scenario is
#: never touched again.
RETRY_SHARE = batching.BUCKET_SHARE


def _attempts(network: Network, roles: Roles, settings: ACSettings):
    """Every start of :func:`attempt_order` in turn until one converges:
    ``(x, iterations, converged, start)``, start an index into :data:`STARTS` (-1 if
    none converged). A start is computed only when its attempt begins (a DC power
    flow is not solved when the case's voltages converge); under ``vmap`` only the
    scenarios whose first start failed pay for the others (:data:`RETRY_SHARE`).
    The results are the same as scenario by scenario."""
    order = attempt_order(settings)
    codes = np.asarray(order, np.int32)
    k = len(order)

    def lazy(net, rl):
        """start_at(j) computing only the start asked for (a real branch outside vmap)."""
        model = _Model(net, rl)
        branches = [functools.partial(_initial_state, net, model, c) for c in order]
        return model, lambda j: jax.lax.switch(j, branches)

    def code_of(attempt, ok):
        return jnp.where(ok, jnp.asarray(codes)[jnp.minimum(attempt, k - 1)], -1)

    def plain(net, rl):
        model, start_at = lazy(net, rl)
        x, it, ok, attempt = _inner(model, settings, _usable(net, rl, settings), start_at)
        return x, it, ok, code_of(attempt, ok)

    if k == 1:
        return plain(network, roles)

    run = custom_vmap(plain)

    @run.def_vmap
    def _rule(axis_size, in_batched, net, rl):
        axes = jax.tree.map(lambda b: 0 if b else None, list(in_batched))
        usable = jax.vmap(functools.partial(_usable, settings=settings), in_axes=axes)(net, rl)
        usable = jnp.broadcast_to(usable, (axis_size, k))
        first = jnp.argmax(usable, axis=1)
        has_first = jnp.any(usable, axis=1)
        rest = usable & (jnp.arange(k) > first[:, None])

        def first_states(which):
            # the first start of every scenario, computing only the starts in use
            def one(n, r, j):
                model = _Model(n, r)
                if len(which) == 1:
                    return _initial_state(n, model, order[which[0]])
                states = jnp.stack([_initial_state(n, model, order[w]) for w in which])
                return states[jnp.argmax(jnp.asarray(which) == j)]

            return jax.vmap(one, in_axes=(*axes, 0))(net, rl, first)

        if settings.init != "auto":
            x0 = first_states((0,))  # every scenario starts with attempt 0
        else:
            # case where there is a voltage profile, DC elsewhere: usually all the same
            mixed = jnp.any(first != first[0])
            x0 = jax.lax.switch(
                jnp.where(mixed, 2, first[0]),
                [
                    functools.partial(first_states, (0,)),
                    functools.partial(first_states, (1,)),
                    functools.partial(first_states, (0, 1)),
                ],
            )

        def single(n, r, x_start, go):
            x, it, ok = _warm(n, r, x_start, settings)
            return x, it, ok & go

        x, it, ok = jax.vmap(single, in_axes=(*axes, 0, 0))(net, rl, x0, has_first)
        start = jnp.where(ok, jnp.asarray(codes)[first], -1)
        retry = ~ok & jnp.any(rest, axis=1)

        def others(n, r, us):
            model = _Model(n, r)
            states = jnp.stack([_initial_state(n, model, c) for c in order])
            xr, itr, okr, attempt = _inner(model, settings, us, lambda j: states[j])
            return xr, itr, okr, code_of(attempt, okr)

        def retried(take):
            # a bucket of the scenarios still to retry, gathered and retried; the
            # iterations of the first attempt are added to the retries'
            sub = [
                jax.tree.map(lambda a, b: a[take] if b else a, arg, flag)
                for arg, flag in zip((net, rl), in_batched, strict=True)
            ]
            x2, it2, ok2, start2 = jax.vmap(others, in_axes=(*axes, 0))(*sub, rest[take])
            return x2, it[take] + it2, ok2, start2

        out = batching.over_flagged_rows(retried, retry, (x, it, ok, start), RETRY_SHARE)
        return out, (True, True, True, True)

    return run(network, roles)


def _gen_q(network: Network, s: ACStructure, roles: Roles, q_bus_mvar: jax.Array) -> jax.Array:
    """Generator reactive output, split as PYPOWER's ``pfsoln`` (and pandapower) do:
    the bus total equally, then in proportion to each unit's reactive range."""
    topo, gen = network.topology, network.gen
    limited = roles.at_q_max | roles.at_q_min
    on = (gen.status > 0) & ~limited
    q_limited = jnp.where(roles.at_q_max, gen.q_max_mvar, gen.q_min_mvar)
    q_load = jax.ops.segment_sum(
        network.load.q_mvar * network.load.status, jnp.asarray(topo.load_bus), topo.n_bus
    )
    q_fixed = jax.ops.segment_sum(
        jnp.where(limited, q_limited, 0.0), jnp.asarray(topo.gen_bus), topo.n_bus
    )
    q_total = (q_bus_mvar + q_load - q_fixed)[topo.gen_bus]
    count = jnp.sum(_gathered(on, s.gen_peers, False), axis=1)
    q_equal = q_total / jnp.maximum(count, 1)
    qmin_sum = jnp.sum(_gathered(jnp.where(on, gen.q_min_mvar, 0.0), s.gen_peers), axis=1)
    qmax_sum = jnp.sum(_gathered(jnp.where(on, gen.q_max_mvar, 0.0), s.gen_peers), axis=1)
    proportional = gen.q_min_mvar + (q_total - qmin_sum) / (qmax_sum - qmin_sum + _EPS) * (
        gen.q_max_mvar - gen.q_min_mvar
    )
    split = jnp.where(qmin_sum == qmax_sum, q_equal, proportional)
    q = jnp.where(on, split if topo.n_gen > 1 else q_equal, 0.0)
    return jnp.where(limited, q_limited, q)


def _solve_state(network: Network, settings: ACSettings):
    """Iterate to the solution (no gradients): returns x, roles, iterations, converged."""
    s = ac_structure(network.topology)
    roles = initial_roles(network, s)
    x, it, ok, start = _attempts(network, roles, settings)
    if not settings.enforce_q_lims:
        return x, roles, it, ok, start

    topo = network.topology
    not_slack = network.gen.slack_weight <= 0
    bus_is_ref = jnp.asarray(s.is_ref)

    def violations(x, roles):
        v = _voltage(x, topo.n_bus)
        model = _Model(network, roles)
        q_bus = (v * jnp.conj(model.current(v))).imag * topo.base_mva
        q = _gen_q(network, s, roles, q_bus)
        free = (network.gen.status > 0) & ~roles.at_q_max & ~roles.at_q_min & not_slack
        return free & (q > network.gen.q_max_mvar), free & (q < network.gen.q_min_mvar)

    def cond(state):
        *_, ok, more, rounds = state
        return more & ok & (rounds <= topo.n_gen)

    def body(state):
        x, roles, it, ok, _, rounds = state
        over, under = violations(x, roles)
        at_max = roles.at_q_max | over
        at_min = roles.at_q_min | under
        # A bus with a unit held at a limit becomes PQ (reference buses excepted).
        held = jax.ops.segment_max(
            (at_max | at_min).astype(jnp.int32), jnp.asarray(topo.gen_bus), topo.n_bus
        )
        forced = (held > 0) & ~bus_is_ref
        new_roles = _roles(network, s, roles.live, roles.reach, at_max, at_min, forced)
        # warm from the last solution; the start reported stays the first solve's
        x_new, it_new, ok_new = _warm(network, new_roles, x, settings)
        more = jnp.any(over | under)
        x = jnp.where(more, x_new, x)
        roles = jax.tree.map(lambda a, b: jnp.where(more, a, b), new_roles, roles)
        return (
            x,
            roles,
            it + jnp.where(more, it_new, 0),
            jnp.where(more, ok_new, ok),
            more,
            rounds + 1,
        )

    state = (x, roles, it, ok, jnp.array(True), jnp.int32(0))
    x, roles, it, ok, _, _ = jax.lax.while_loop(cond, body, state)
    return x, roles, it, ok, jnp.where(ok, start, -1)


@jax.custom_jvp
def _attach_gradient(network: Network, roles: Roles, x_star: jax.Array, ok: jax.Array) -> jax.Array:
    """Identity on the solution; its derivative comes from the implicit function theorem."""
    return x_star


@_attach_gradient.defjvp
def _attach_gradient_jvp(primals, tangents):
    network, roles, x_star, ok = primals
    d_network = tangents[0]
    model = _Model(network, roles)
    n = model.n
    flat = jnp.concatenate([jnp.zeros(n, x_star.dtype), jnp.ones(n, x_star.dtype)])
    x_safe = jnp.where(ok, x_star, flat)
    _, d_residual = jax.jvp(
        lambda net: _Model(net, roles).residual(x_safe), (network,), (d_network,)
    )
    d_residual = jnp.where(ok, d_residual, 0.0)
    dx = linalg.solve(model.s.jacobian, model.jacobian(x_safe), -d_residual)
    return x_star, jnp.where(ok, dx, 0.0)


def solve_ac(network: Network, settings: ACSettings) -> PowerFlowResult:
    """AC power flow of ``network`` (traceable; see :func:`gridphysics.solve`)."""
    topo = network.topology
    s = ac_structure(topo)
    base = topo.base_mva
    n = topo.n_bus
    x_star, roles, iterations, ok, start = _solve_state(jax.lax.stop_gradient(network), settings)
    roles = jax.tree.map(jax.lax.stop_gradient, roles)
    x = _attach_gradient(network, roles, jax.lax.stop_gradient(x_star), ok)

    model = _Model(network, roles)
    v = _voltage(x, n)
    s_from, s_to = admittance.branch_powers(topo, model.y, v)
    s_from, s_to = s_from * base, s_to * base
    s_bus = v * jnp.conj(model.current(v)) * base
    p_spec = model.s_spec.real * base

    mismatch_p = jnp.where(jnp.asarray(s.is_ref), s_bus.real - p_spec, 0.0)
    gen = network.gen
    weight = gen.slack_weight * gen.status
    share = slack_share(weight, jnp.asarray(s.gen_peers))
    gen_p = gen.p_mw * gen.status + share * mismatch_p[topo.gen_bus]
    gen_q = _gen_q(network, s, roles, s_bus.imag)

    converged = ok & _physical(x, n, roles.reach)
    converged = converged & ~jnp.any(admittance.unphysical_branches(network))
    converged = converged & ~admittance.invalid_injections(network)
    # A reference bus whose imbalance no in-service slack unit takes (its only unit was
    # switched off) balanced power from nowhere with converged=True: not converged, as
    # in DC (MATPOWER moves the reference when it loads such a case; see from_ppc).
    is_ref = jnp.asarray(s.is_ref)
    absorbed = linalg.segment_sum(share, topo.gen_bus, n)
    tol = 1e-6 * (1.0 + jnp.sum(jnp.abs(p_spec)))
    unbalanced = is_ref & roles.reach & (absorbed < 0.5) & (jnp.abs(mismatch_p) > tol)
    converged = converged & ~jnp.any(unbalanced)
    max_mismatch = _Model(jax.lax.stop_gradient(network), roles).error(
        jax.lax.stop_gradient(x_star)
    )
    dtype = network.dtype
    nan = jnp.asarray(jnp.nan, dtype)
    reach = roles.reach

    def keep(a: jax.Array, valid: jax.Array | bool = True) -> jax.Array:
        return jnp.where(converged & valid, a, nan)

    loading = loading_percent(
        jnp.maximum(jnp.abs(s_from), jnp.abs(s_to)), network.branch.rate_a_mva
    )
    gen_ok = reach[topo.gen_bus]
    return PowerFlowResult(
        va_rad=keep(jnp.angle(v), reach),  # wrapped to (-pi, pi] like angle(V) in MATPOWER
        p_bus_mw=keep(s_bus.real, reach),
        p_from_mw=keep(s_from.real),
        loading_percent=keep(loading),
        gen_p_mw=keep(gen_p, gen_ok),
        converged=converged,
        method="ac",
        topology=topo,
        stored_vm_pu=keep(x[n:], reach),
        stored_p_to_mw=keep(s_to.real),
        q_from_mvar=keep(s_from.imag),
        q_to_mvar=keep(s_to.imag),
        q_bus_mvar=keep(s_bus.imag, reach),
        gen_q_mvar=keep(gen_q, gen_ok),
        iterations=iterations,
        max_mismatch_pu=max_mismatch,
        start=jnp.where(converged, start, -1),
    )
