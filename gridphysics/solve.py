"""The one public entry point: :func:`solve` dispatches to the DC or AC solver."""

from __future__ import annotations

import functools
import math
import numbers
import warnings
from dataclasses import dataclass
from typing import Literal

import jax
import numpy as np

from gridphysics import ac, dc, linalg
from gridphysics.errors import ConvergenceWarning, InputTypeError, UnsupportedError
from gridphysics.network import Network, check_leaf_shapes, require_network
from gridphysics.results import PowerFlowResult

Method = Literal["dc", "ac"]


@dataclass(frozen=True)
class SolveOptions:
    """Options of :func:`solve`, with their defaults in one place.

    Attributes:
        linear_solver: ``"dense"`` or ``"klu"``; ``None`` lets
            :func:`gridphysics.linalg.plan` pick per call (KLU on CPU in float64 for
            single solves and batches of matrices, a shared dense inverse for small
            systems batched over right-hand sides, dense LU elsewhere).
        validate: when a solve outside ``jit`` does not converge, look for bad input
            and raise a :class:`~gridphysics.errors.NetworkError` naming the element
            (NaN injections, zero-reactance branches). Under ``jit`` / ``vmap`` bad
            inputs give ``converged=False`` and NaN results instead.
        algorithm: AC only. ``"nr"`` Newton-Raphson, ``"fdxb"`` / ``"fdbx"``
            fast-decoupled (MATPOWER's XB and BX variants).
        tolerance: AC only. Largest active/reactive power mismatch accepted, p.u.
            (finite, in (0, MAX_TOLERANCE_PU], and at least RESOLVABLE_EPS machine
            epsilons of the network's dtype). ``None``: 1e-8 in float64 (MATPOWER's
            ``pf.tol``, pandapower's ``tolerance_mva``) and 1e-4 in float32.
        max_iterations: AC only. ``None``: 10 for Newton-Raphson, 30 for fast-decoupled
            (MATPOWER's defaults); at most MAX_ITERATIONS.
        init: AC only. The first start: ``"auto"`` (default) the network's own
            ``bus.vm_pu`` / ``bus.va_rad`` when it carries a voltage profile (a solved
            MATPOWER case does; MATPOWER's ``runpf`` starts there), else a DC power
            flow; ``"case"`` the network's voltages (a warm start after
            ``network.with_voltages(...)``); ``"dc"`` a DC power flow (pandapower's
            ``init="dc"``); ``"flat"`` 1 p.u. and 0 rad.
        fallback: AC only. When the first start does not converge, try the others
            (case, DC, flat; see :func:`gridphysics.ac.attempt_order`), each with
            ``max_iterations``. Under ``vmap`` only the scenarios that failed move on.
            ``result.start`` says which start converged.
        enforce_q_lims: AC only. Hold generators that exceed a reactive limit at that
            limit and turn their bus into a PQ bus, repeating until none does
            (pandapower's ``enforce_q_lims``; reference units are exempt).
    """

    linear_solver: linalg.Backend | None = None
    validate: bool = True
    algorithm: ac.Algorithm = "nr"
    tolerance: float | None = None
    max_iterations: int | None = None
    init: ac.Init = "auto"
    fallback: bool = True
    enforce_q_lims: bool = False

    def ac_settings(self) -> ac.ACSettings:
        return ac.ACSettings(
            algorithm=self.algorithm,
            tolerance=self.tolerance,
            max_iterations=self.max_iterations,
            init=self.init,
            fallback=self.fallback,
            enforce_q_lims=self.enforce_q_lims,
            linear_solver=self.linear_solver,
        )


@functools.cache
def _compiled(method: Method, options: SolveOptions):
    """One jitted solver per (method, options). Options are bound here rather than
    passed as static arguments: a jitted call with only array arguments takes JAX's
    fast dispatch path (about half the latency of a call with static arguments).
    """
    if method == "dc":
        run = functools.partial(dc.solve_dc, linear_solver=options.linear_solver)
    else:
        run = functools.partial(ac.solve_ac, settings=options.ac_settings())

    def checked(network: Network):
        # when it traces (a new structure, shape or dtype), not on every call: the
        # check's Python cost was 5-13 % of an ieee118 DC solve's latency
        check_leaf_shapes(network, "solve()")
        return run(network)

    return jax.jit(checked)


#: The loosest AC mismatch tolerance accepted (p.u.): beyond it a start would be reported
#: as converged without being solved (tolerance=inf "converged" at the flat start).
MAX_TOLERANCE_PU = 1e-2
#: The tightest AC tolerance accepted, in machine epsilons of the network's dtype
#: (1.1e-14 p.u. in float64, 6e-6 in float32): rounding alone leaves mismatches of
#: that order (8.4e-15 p.u. on case14 in float64).
RESOLVABLE_EPS = 50.0
#: The most AC iterations one solve may be asked for (a bound on a solve's time).
MAX_ITERATIONS = 10_000


def _check_options(options: SolveOptions) -> None:
    if not isinstance(options, SolveOptions):
        raise InputTypeError(
            f"options must be a gridphysics.SolveOptions, got {type(options).__name__}"
        )
    for name in ("fallback", "enforce_q_lims", "validate"):
        if not isinstance(getattr(options, name), bool):
            raise UnsupportedError(f"{name} must be True or False, got {getattr(options, name)!r}")
    tol = options.tolerance
    if tol is not None and (
        isinstance(tol, bool)
        # float or int only: a Fraction is a Real that no traced comparison accepts
        or not isinstance(tol, int | float | np.integer | np.floating)
        or not (math.isfinite(tol) and 0 < tol <= MAX_TOLERANCE_PU)
    ):
        raise UnsupportedError(
            f"tolerance must be a number in (0, {MAX_TOLERANCE_PU:g}] p.u., got {tol!r}"
        )
    it = options.max_iterations
    if it is not None and (
        isinstance(it, bool)
        or not isinstance(it, numbers.Integral)
        or not 1 <= it <= MAX_ITERATIONS
    ):
        raise UnsupportedError(f"max_iterations must be an integer 1..{MAX_ITERATIONS}, got {it!r}")
    if options.algorithm not in ("nr", "fdxb", "fdbx"):
        raise UnsupportedError(
            f"algorithm must be 'nr', 'fdxb' or 'fdbx', got {options.algorithm!r}"
        )
    if options.init not in ("auto", "case", "dc", "flat"):
        raise UnsupportedError(f"init must be 'auto', 'case', 'dc' or 'flat', got {options.init!r}")
    if not isinstance(options.fallback, bool):
        raise UnsupportedError(f"fallback must be True or False, got {options.fallback!r}")
    if options.linear_solver not in (None, "dense", "klu"):
        raise UnsupportedError(
            f"linear_solver must be 'dense', 'klu' or None, got {options.linear_solver!r}"
        )


def solve(
    network: Network, method: Method = "dc", *, options: SolveOptions | None = None
) -> PowerFlowResult:
    """Solve the power flow of ``network``.

    Args:
        network: a :class:`~gridphysics.Network` (e.g. from :func:`gridphysics.load_case`).
        method: ``"dc"`` (default) or ``"ac"``.
        options: :class:`SolveOptions`; defaults when omitted.

    Returns:
        A :class:`~gridphysics.PowerFlowResult`. Check ``result.converged``: a failed
        solve has NaN in every field rather than a wrong number.

    Compiled once per network structure (and method/options); new values reuse the
    compiled code. Composable with ``jax.jit``, ``jax.vmap`` and ``jax.grad``.

    Example:
        >>> import gridphysics as gp
        >>> result = gp.solve(gp.load_case("ieee14"))
        >>> bool(result.converged)
        True
    """
    options = SolveOptions() if options is None else options
    if method not in ("dc", "ac"):
        raise UnsupportedError(f"method must be 'dc' or 'ac', got {method!r}")
    _check_options(options)
    require_network(network, "solve()", leaves=False)  # checked when the solve traces
    if method == "ac" and options.tolerance is not None:
        floor = RESOLVABLE_EPS * float(np.finfo(network.dtype).eps)
        if options.tolerance < floor:  # 1e-300 failed, blamed on the load (rerun 8)
            raise UnsupportedError(
                f"tolerance {options.tolerance:g} p.u. is below what {network.dtype} "
                f"arithmetic resolves ({RESOLVABLE_EPS:g} x its machine epsilon = {floor:.2g} "
                "p.u.): no solve could reach it"
            )
    try:
        result = _compiled(method, options)(network)
    except (TypeError, ValueError):  # leaves JAX cannot take (object arrays): say which
        check_leaf_shapes(network, "solve()")
        raise
    if isinstance(result.converged, jax.core.Tracer) or bool(result.converged):
        return result
    if options.validate:
        network.validate()  # raises a NetworkError naming the bad element, if there is one
    warnings.warn(
        _failure_message(network, method, options, result), ConvergenceWarning, stacklevel=2
    )
    return result


def _failure_message(network: Network, method: Method, options: SolveOptions, result) -> str:
    if method == "dc":
        return (
            f"DC power flow of {network.name} failed (singular or non-finite system, or a "
            "reference bus with no in-service slack unit); every result is NaN"
        )
    settings = options.ac_settings()
    mismatch = float(result.max_mismatch_pu)
    tried = ", ".join(ac.STARTS[i] for i in ac.attempt_order(settings))
    return (
        f"AC power flow of {network.name} did not converge from any start tried ({tried}): "
        f"{int(result.iterations)} {settings.algorithm} iterations in all (limit "
        f"{settings.iterations} per start) left a power mismatch of {mismatch:.3g} p.u. "
        f"(tolerance {settings.tolerance_for(network.dtype):g}). The operating point may have "
        "no solution (too much load), or try more iterations or another algorithm. Every "
        "result is NaN."
    )
