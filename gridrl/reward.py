"""The team reward: priced cost terms, in one table.

``reward = -total_cost / normalizer`` per 15-minute step, with ``total_cost`` the sum of
these terms ($ per step; energies are MW x the step's hours):

=================== ==================================== ================ =================
term                what is priced                       price            why
=================== ==================================== ================ =================
generation_cost     thermal units' fuel (the case's      case ``gencost`` the case's data
                    polynomial costs)
redispatch_cost     MWh moved away from the base         5 $/MWh          a typical
                    dispatch                                              redispatch premium
shedding_cost       load shed on purpose (deliberate)    VOLL             customers lose
                                                                          supply
ens_cost            load cut off by trips or splits      2 x VOLL         uncontrolled:
                    (involuntary); after a blackout,                      who and how long
                    the rest of the day                                   is not chosen
overload_penalty    MWh above each line's continuous     VOLL, and VOLL   at least the
                    rating; above its emergency rating   again above      value of the load
                    again                                emergency        it puts at risk
trip_penalty        each line tripped by protection      2,000 $          switching and
                                                                          restoration
=================== ==================================== ================ =================

VOLL (the value of lost load) is 9,000 $/MWh: the value ERCOT's market used for its
system-wide offer cap from 2015 (PUCT; Great Britain's reliability standard uses
£17,000/MWh, London Economics for Ofgem/DECC, 2013). The factor 2 on involuntary loss
and the trip price are modelling choices: an operator who sheds 1 MWh on purpose must
come out ahead of one who lets protection cut 1 MWh. ``normalizer`` is the cost of one
step of the case's own dispatch, so a reward of -1 is one step's fuel bill.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

VOLL_PER_MWH = 9_000.0
REDISPATCH_PER_MWH = 5.0
INVOLUNTARY_FACTOR = 2.0
TRIP_COST = 2_000.0
#: The energy price that scales the reward of a case with no fuel costs (no gencost, or
#: all zero), $/MWh: a typical wholesale price. Without it the scale fell to $1 a step
#: and shedding 2.5 MWh scored -22,512 (hostile rerun 9).
REFERENCE_ENERGY_PER_MWH = 50.0

#: The terms of ``total_cost``, in the order of the table above.
TERMS: tuple[str, ...] = (
    "generation_cost",
    "redispatch_cost",
    "shedding_cost",
    "ens_cost",
    "overload_penalty",
    "trip_penalty",
)


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Prices:
    """The prices of the reward terms (array leaves: part of ``EnvParams``)."""

    redispatch_per_mwh: jax.Array
    shed_per_mwh: jax.Array  # deliberate shedding
    ens_per_mwh: jax.Array  # involuntary loss
    overload_per_mwh: jax.Array  # per MWh above the continuous rating
    emergency_per_mwh: jax.Array  # per MWh above the emergency rating (on top)
    trip: jax.Array
    normalizer: jax.Array  # $ per step of the case's own dispatch

    @staticmethod
    def default(normalizer: float, dtype=jnp.float32) -> Prices:
        """The prices of the module table."""
        values = Prices(
            redispatch_per_mwh=REDISPATCH_PER_MWH,
            shed_per_mwh=VOLL_PER_MWH,
            ens_per_mwh=INVOLUNTARY_FACTOR * VOLL_PER_MWH,
            overload_per_mwh=VOLL_PER_MWH,
            emergency_per_mwh=VOLL_PER_MWH,
            trip=TRIP_COST,
            normalizer=normalizer,
        )
        return jax.tree.map(lambda v: jnp.asarray(v, dtype), values)


def overload_mw(
    loading_percent: jax.Array, rate_mva: jax.Array, live: jax.Array, percent: float
) -> jax.Array:
    """() total MW above ``percent`` of the rating over the ``live`` rated lines whose
    loadings are defined (a collapse or an unrated line is priced elsewhere)."""
    ok = live & jnp.isfinite(loading_percent) & jnp.isfinite(rate_mva)
    excess = jnp.maximum(jnp.where(ok, loading_percent, 0.0) - percent, 0.0) / 100.0
    return jnp.sum(jnp.where(ok, excess * rate_mva, 0.0))


def costs(
    prices: Prices,
    *,
    generation_cost: jax.Array,
    redispatch_mwh: jax.Array,
    shed_mwh: jax.Array,
    involuntary_mwh: jax.Array,
    overload_mwh: jax.Array,
    emergency_mwh: jax.Array,
    trips: jax.Array,
) -> dict[str, jax.Array]:
    """The priced terms of :data:`TERMS` ($ per step) and their sum, ``total_cost``."""
    out = {
        "generation_cost": generation_cost,
        "redispatch_cost": redispatch_mwh * prices.redispatch_per_mwh,
        "shedding_cost": shed_mwh * prices.shed_per_mwh,
        "ens_cost": involuntary_mwh * prices.ens_per_mwh,
        "overload_penalty": overload_mwh * prices.overload_per_mwh
        + emergency_mwh * prices.emergency_per_mwh,
        "trip_penalty": trips * prices.trip,
    }
    out["total_cost"] = sum(out[t] for t in TERMS)
    return out
