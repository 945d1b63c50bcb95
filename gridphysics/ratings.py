"""Branch ratings where a case has none: the versioned rule of ``cases/ratings.toml``.

Many IEEE cases ship without thermal ratings (MATPOWER ``rateA = 0``), so screening
them against limits needs a documented substitute. The rule sizes each unrated
branch from the case's own base-case DC flow with a margin and a floor, so that the
base case is secure and contingencies can overload branches. Rated branches keep
the case's rating.
"""

from __future__ import annotations

import functools
import tomllib
import warnings
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from gridphysics.cases import cases_dir
from gridphysics.errors import ConvergenceWarning, UnknownCaseError
from gridphysics.network import Network


@dataclass(frozen=True)
class RatingRule:
    version: str
    description: str
    factor: float
    floor_share: float
    step_mva: float


@functools.lru_cache(maxsize=1)
def _rules() -> tuple[str, dict]:
    with open(cases_dir() / "ratings.toml", "rb") as fh:
        data = tomllib.load(fh)
    return data["default"], data["rules"]


def rating_rule(version: str | None = None) -> RatingRule:
    """The rating rule ``version`` (default: the catalogue's current one)."""
    default, rules = _rules()
    version = version or default
    if version not in rules:
        raise UnknownCaseError(
            f"no rating rule {version!r} in cases/ratings.toml (have {sorted(rules)})"
        )
    r = rules[version]
    return RatingRule(
        version, r["description"], float(r["factor"]), float(r["floor_share"]), float(r["step_mva"])
    )


@dataclass(frozen=True)
class Ratings:
    """Ratings used for screening.

    Attributes:
        rate_mva: (n_branch,) the rating of every branch.
        from_case: (n_branch,) True where the case gave the rating.
        source: one line saying where the ratings come from.
    """

    rate_mva: np.ndarray
    from_case: np.ndarray
    source: str


def fill_missing_ratings(network: Network, version: str | None = None) -> tuple[Network, Ratings]:
    """``network`` with every unrated branch given a rating by the catalogue rule (outside jit)."""
    from gridphysics.solve import solve

    rule = rating_rule(version)
    rate = np.asarray(network.branch.rate_a_mva, dtype=np.float64)
    from_case = np.isfinite(rate) & (rate > 0)
    if from_case.all():
        return network, Ratings(rate, from_case, "the case's own ratings (rate_a)")
    flow = np.abs(np.nan_to_num(np.asarray(solve(network).p_from_mw)))
    with warnings.catch_warnings():  # an AC base case that does not solve just adds nothing
        warnings.simplefilter("ignore", ConvergenceWarning)
        ac = solve(network, "ac")
    if bool(ac.converged):
        s_from = np.hypot(np.asarray(ac.p_from_mw), np.asarray(ac.q_from_mvar))
        s_to = np.hypot(np.asarray(ac.p_to_mw), np.asarray(ac.q_to_mvar))
        flow = np.maximum(flow, np.nan_to_num(np.maximum(s_from, s_to)))
    live = flow[np.asarray(network.branch.status) > 0]
    floor = rule.floor_share * float(np.median(live)) if live.size else 0.0
    sized = np.maximum(rule.factor * flow, max(floor, rule.step_mva))
    sized = np.ceil(sized / rule.step_mva) * rule.step_mva
    rate = np.where(from_case, rate, sized)
    n_rule = int((~from_case).sum())
    if from_case.any():
        source = (
            f"the case's ratings for {int(from_case.sum())} branches; rule {rule.version} of "
            f"cases/ratings.toml for the other {n_rule} ({rule.description})"
        )
    else:
        source = f"rule {rule.version} of cases/ratings.toml for all {n_rule} branches ({rule.description})"
    filled = network.with_branches(rate_a_mva=jnp.asarray(rate, network.dtype))
    return filled, Ratings(rate, from_case, source)
