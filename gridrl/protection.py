"""Line protection with thermal memory: continuous and emergency ratings.

Every rated line has two ratings, as in a control room:

* the **continuous rating** (the case's ``rate_a``, scaled by the curriculum level): the
  loading a line may carry indefinitely, 100 %. ENTSO-E calls it the PATL (permanently
  admissible transmission loading, EU SO GL, Regulation 2017/1485, Art. 25); NERC the
  normal rating (FAC-008);
* the **short-term emergency rating**, ``emergency_percent`` of it (default 120 %) for
  ``emergency_minutes`` (default 15): ENTSO-E's TATL (temporarily admissible
  transmission loading, with its duration), NERC's short-term emergency rating.

The relay is a first-order thermal replica, the model of thermal overload relays (IEC
60255-149): a per-line heat state ``h`` in units of the steady-state heat at the
continuous rating follows ``dh/dt = (L^2 - h) / tau`` with ``L`` the loading per unit
of the continuous rating. Over a step at constant loading,

    h' = L^2 + (h - L^2) exp(-step / tau).

The line trips when ``h'`` reaches ``trip_heat``, set so that a line that has run at its
continuous rating (``h = 1``) trips after exactly ``emergency_minutes`` at its emergency
rating: ``trip_heat = E^2 + (1 - E^2) exp(-emergency_minutes / tau)``. A line that runs
cooler holds an overload longer; alternating overloads add up (unlike a counter that
resets at the first step under 100 %). Above ``instant_trip_percent`` a line trips at
once (its protection, not its heat). ``tau`` defaults to 10 minutes, within the 5-20
minutes of overhead conductors (CIGRE TB 601; IEEE Std 738 transient ratings).

Undefined loadings (unrated lines: NaN; a collapse: inf) neither heat a line nor trip it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp


@dataclass(frozen=True)
class ThermalRelay:
    """The protection settings (static: they size nothing, but they are constants).

    Attributes:
        emergency_percent: short-term emergency rating, % of the continuous rating.
        emergency_minutes: how long a line at its continuous rating may then carry its
            emergency rating before it trips.
        time_constant_minutes: the thermal time constant ``tau`` of a line.
        instant_trip_percent: loading that trips a line at once.
        step_minutes: the environment's step.
    """

    emergency_percent: float = 120.0
    emergency_minutes: float = 15.0
    time_constant_minutes: float = 10.0
    instant_trip_percent: float = 150.0
    step_minutes: float = 15.0

    def __post_init__(self):
        if not 100.0 < self.emergency_percent <= self.instant_trip_percent:
            raise ValueError(
                "emergency_percent must be above 100 and at most instant_trip_percent, got "
                f"{self.emergency_percent} and {self.instant_trip_percent}"
            )
        for name in ("emergency_minutes", "time_constant_minutes", "step_minutes"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")

    @property
    def decay(self) -> float:
        """``exp(-step / tau)``: the share of the heat gap left after one step."""
        return math.exp(-self.step_minutes / self.time_constant_minutes)

    @property
    def trip_heat(self) -> float:
        """The heat at which a line trips (see the module docstring)."""
        e2 = (self.emergency_percent / 100.0) ** 2
        return e2 + (1.0 - e2) * math.exp(-self.emergency_minutes / self.time_constant_minutes)

    def heat(self, heat: jax.Array, loading_percent: jax.Array) -> jax.Array:
        """(n_branch,) the heat after a step at ``loading_percent`` (undefined loadings
        count as 0: the line cools)."""
        load = jnp.where(jnp.isfinite(loading_percent), loading_percent / 100.0, 0.0)
        return load**2 + (heat - load**2) * self.decay

    def trips(self, heat: jax.Array, loading_percent: jax.Array, live: jax.Array) -> jax.Array:
        """(n_branch,) the ``live`` lines that trip after a step that left them at
        ``heat`` with ``loading_percent``."""
        defined = jnp.isfinite(loading_percent)
        return live & (
            (heat >= self.trip_heat) | (defined & (loading_percent > self.instant_trip_percent))
        )

    def instant(self, loading_percent: jax.Array, live: jax.Array) -> jax.Array:
        """(n_branch,) the ``live`` lines above the instant-trip loading (a cascade)."""
        defined = jnp.isfinite(loading_percent)
        return live & defined & (loading_percent > self.instant_trip_percent)


def overloaded(loading_percent: jax.Array, limit_percent: float) -> jax.Array:
    """(n_branch,) lines with a defined loading above ``limit_percent``."""
    return jnp.isfinite(loading_percent) & (loading_percent > limit_percent)
