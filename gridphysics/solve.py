"""The one public entry point: :func:`solve` dispatches to the DC or AC solver."""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from typing import Literal

import jax

from gridphysics import ac, dc, linalg
from gridphysics.errors import ConvergenceWarning, UnsupportedError
from gridphysics.network import Network
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
            ``None``: 1e-8 in float64 (MATPOWER's ``pf.tol``, pandapower's
            ``tolerance_mva``) and 1e-4 in float32, which cannot resolve less.
        max_iterations: AC only. ``None``: 10 for Newton-Raphson, 30 for fast-decoupled
            (MATPOWER's defaults).
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
        return jax.jit(functools.partial(dc.solve_dc, linear_solver=options.linear_solver))
    return jax.jit(functools.partial(ac.solve_ac, settings=options.ac_settings()))


def _check_options(options: SolveOptions) -> None:
    if options.algorithm not in ("nr", "fdxb", "fdbx"):
        raise UnsupportedError(
            f"algorithm must be 'nr', 'fdxb' or 'fdbx', got {options.algorithm!r}"
        )
    if options.init not in ("auto", "case", "dc", "flat"):
        raise UnsupportedError(f"init must be 'auto', 'case', 'dc' or 'flat', got {options.init!r}")
    if not isinstance(options.fallback, bool):
        raise UnsupportedError(f"fallback must be True or False, got {options.fallback!r}")
    if options.tolerance is not None and not options.tolerance > 0:
        raise UnsupportedError(f"tolerance must be positive, got {options.tolerance!r}")
    if options.max_iterations is not None and options.max_iterations < 1:
        raise UnsupportedError(f"max_iterations must be >= 1, got {options.max_iterations!r}")
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
    options = options or SolveOptions()
    if method not in ("dc", "ac"):
        raise UnsupportedError(f"method must be 'dc' or 'ac', got {method!r}")
    _check_options(options)
    if not isinstance(network, Network):
        raise TypeError(
            f"solve() needs a gridphysics.Network, got {type(network).__name__}; build one with "
            "gridphysics.load_case(), from_ppc() or from_pandapower()"
        )
    result = _compiled(method, options)(network)
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
            f"DC power flow of {network.name} failed (singular or non-finite system); "
            "every result is NaN"
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
