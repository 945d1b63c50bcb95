"""The one public entry point: :func:`solve` dispatches to the DC or AC solver."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
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


@partial(jax.jit, static_argnames=("method", "linear_solver"))
def _solve_jit(network: Network, method: Method, linear_solver: linalg.Backend | None):
    return dc.solve_dc(network, linear_solver)


def _is_traced(network: Network) -> bool:
    return any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(network))


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
    result = _solve_jit(network, method, options.linear_solver)
    if options.validate and not _is_traced(network) and not bool(result.converged):
        network.validate()  # raises a NetworkError naming the bad element, if there is one
    return result
