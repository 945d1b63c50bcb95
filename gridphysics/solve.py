"""The one public entry point: :func:`solve` dispatches to the DC or AC solver."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import jax

from gridphysics import dc, linalg
from gridphysics.errors import UnsupportedError
from gridphysics.network import Network
from gridphysics.results import PowerFlowResult

Method = Literal["dc", "ac"]


@dataclass(frozen=True)
class SolveOptions:
    """Options of :func:`solve`, with their defaults in one place.

    Attributes:
        linear_solver: ``"dense"`` or ``"klu"``; ``None`` picks by size and backend
            as documented in :func:`gridphysics.linalg.choose_backend` (KLU for more
            than ``linalg.DENSE_MAX_N`` unknowns on CPU in float64, dense otherwise).
        validate: when a solve outside ``jit`` does not converge, look for bad input
            and raise a :class:`~gridphysics.errors.NetworkError` naming the element
            (NaN injections, zero-reactance branches). Under ``jit`` / ``vmap`` bad
            inputs give ``converged=False`` and NaN results instead.
    """

    linear_solver: linalg.Backend | None = None
    validate: bool = True


@functools.cache
def _compiled(method: Method, linear_solver: linalg.Backend | None):
    """One jitted solver per (method, linear solver). Options are bound here rather
    than passed as static arguments: a jitted call with only array arguments takes
    JAX's fast dispatch path (about half the latency of a call with static arguments).
    """
    return jax.jit(functools.partial(dc.solve_dc, linear_solver=linear_solver))


def solve(
    network: Network, method: Method = "dc", *, options: SolveOptions | None = None
) -> PowerFlowResult:
    """Solve the power flow of ``network``.

    Args:
        network: a :class:`~gridphysics.Network` (e.g. from :func:`gridphysics.load_case`).
        method: ``"dc"`` (default). ``"ac"`` is not available yet.
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
    if method == "ac":
        raise UnsupportedError(
            "method='ac' (AC power flow) is not implemented yet; use method='dc' for now"
        )
    if method != "dc":
        raise UnsupportedError(f"method must be 'dc' or 'ac', got {method!r}")
    if not isinstance(network, Network):
        raise TypeError(
            f"solve() needs a gridphysics.Network, got {type(network).__name__}; build one with "
            "gridphysics.load_case(), from_ppc() or from_pandapower()"
        )
    result = _compiled(method, options.linear_solver)(network)
    traced = isinstance(result.converged, jax.core.Tracer)
    if options.validate and not traced and not bool(result.converged):
        network.validate()  # raises a NetworkError naming the bad element, if there is one
    return result
